"""Diffusion transformers: DiT (isotropic, adaLN-Zero) and U-DiT (U-shaped, downsampled tokens)."""

from effcomp.models.dit.dit import DIT_SIZES, DiT  # noqa: F401  (registers "dit")
from effcomp.models.dit.udit import UDIT_SIZES, UDiT, reparameterize  # noqa: F401  ("udit")
