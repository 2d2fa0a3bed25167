"""Super-resolution networks: EDSR (convolutional baseline), SwinIR (shifted windows),
IPT-V2 (focal context + global grid attention) and LIPT (latency-aware); the diffusion
SR denoisers DiT-SR (AdaFM, isotropic U-shape) and ResShift's U-Net; the degradation
estimator MoR routes by.

Importing this package registers "edsr", "swinir", "iptv2", "lipt", "dit_sr",
"resshift_unet" and "degradation_estimator" in `effcomp.registry.MODELS`.
"""

from effcomp.models.sr.common import (DIV2K_RGB_MEAN, SCALES, Upsampler,  # noqa: F401
                                      UpsampleOneStep, denormalize, normalize, pixel_shuffle)
from effcomp.models.sr.edsr import EDSR  # noqa: F401  (registers "edsr")
from effcomp.models.sr.swinir import SWINIR_CLASSICAL, SwinIR  # noqa: F401  ("swinir")
from effcomp.models.sr.iptv2 import IPTV2, IPTV2_SIZES  # noqa: F401  ("iptv2")
from effcomp.models.sr.lipt import LIPT, LIPT_SIZES  # noqa: F401  ("lipt")
from effcomp.models.sr.dit_sr import DiTSR  # noqa: F401  ("dit_sr")
from effcomp.models.sr.resshift_unet import ResShiftUNet  # noqa: F401  ("resshift_unet")
from effcomp.models.sr.degradation_estimator import DegradationEstimator  # noqa: F401  (its name)
