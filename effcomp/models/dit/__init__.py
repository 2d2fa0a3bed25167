"""Diffusion transformers: DiT (isotropic, adaLN-Zero), U-DiT (U-shaped, downsampled tokens)
and ElasticDiT (one DiT at several depths and compression ratios)."""

from effcomp.models.dit.dit import DIT_SIZES, DiT  # noqa: F401  (registers "dit")
from effcomp.models.dit.udit import UDIT_SIZES, UDiT, reparameterize  # noqa: F401  ("udit")
from effcomp.models.dit.elastic import ElasticDiT  # noqa: F401  ("elastic_dit")
