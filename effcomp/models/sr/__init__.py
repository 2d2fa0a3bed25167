"""Super-resolution networks: EDSR (convolutional baseline), SwinIR (shifted windows),
IPT-V2 (focal context + global grid attention) and LIPT (latency-aware).

Importing this package registers "edsr", "swinir", "iptv2" and "lipt" in
`effcomp.registry.MODELS`.
"""

from effcomp.models.sr.common import (DIV2K_RGB_MEAN, SCALES, Upsampler,  # noqa: F401
                                      UpsampleOneStep, denormalize, normalize, pixel_shuffle)
from effcomp.models.sr.edsr import EDSR  # noqa: F401  (registers "edsr")
from effcomp.models.sr.swinir import SWINIR_CLASSICAL, SwinIR  # noqa: F401  ("swinir")
from effcomp.models.sr.iptv2 import IPTV2, IPTV2_SIZES  # noqa: F401  ("iptv2")
from effcomp.models.sr.lipt import LIPT, LIPT_SIZES  # noqa: F401  ("lipt")
