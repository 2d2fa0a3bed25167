"""A small degradation estimator: an upsampled LR image → severities in [0, 1].

MoR (He, Tu, Cheng et al., AAAI 2026) routes its LoRA-rank experts by a degradation score
that a frozen CLIP computes from positive/negative text prompts ("sharp"/"blurry",
"clean"/"noisy", …); without CLIP weights, effcomp uses this network instead, trained by
regression on what its own Real-ESRGAN pipeline drew and did to each LR
(`effcomp.data.degradations.degradation_severity`: blur, noise, JPEG, the LR's distortion):
beforehand and then frozen, as CLIP is (`effcomp.tasks.degradation`,
`configs/degradation_estimator.py`), or beside the MoR student. It reads y, the LR
bicubic-upsampled to the HR size in [−1, 1] (what the one-step student is given), through a
4×4-patch stem, so it costs what the LR would.

Layout: patchify conv 4×4 / 4 → GELU → conv 3×3 / 2 → GELU → conv 3×3 / 2 → GELU →
[spatial mean, spatial std] (noise and JPEG show in the spread of local responses) → Dense →
sigmoid.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.registry import MODELS


@MODELS.register("degradation_estimator")
class DegradationEstimator(nn.Module):
  """y [B, H, W, 3] in [−1, 1] → severities [B, outputs] in [0, 1]."""
  width: int = 32
  outputs: int = 4

  @nn.compact
  def __call__(self, y: jax.Array) -> jax.Array:
    x = nn.gelu(nn.Conv(self.width, (4, 4), strides=(4, 4), padding="VALID", name="stem")(y))
    x = nn.gelu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2), padding=1, name="conv_0")(x))
    x = nn.gelu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2), padding=1, name="conv_1")(x))
    mean = jnp.mean(x, axis=(1, 2))
    std = jnp.sqrt(jnp.var(x, axis=(1, 2)) + 1e-6)  # jnp.std's gradient is NaN at 0 spread
    pooled = jnp.concatenate([mean, std], axis=-1)
    return jax.nn.sigmoid(nn.Dense(self.outputs, name="head")(pooled))
