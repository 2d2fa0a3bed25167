"""A small degradation estimator: an upsampled LR image → severities in [0, 1].

MoR (He, Tu, Cheng et al., AAAI 2026) routes its LoRA-rank experts by a degradation score
that CLIP computes from positive/negative text prompts ("sharp"/"blurry", "clean"/"noisy",
…); without CLIP weights, effcomp trains this network instead, on what its own Real-ESRGAN
pipeline drew for each LR (`effcomp.data.degradations.degradation_severity`: blur, noise,
JPEG), by regression. It reads y, the LR bicubic-upsampled to the HR size in [−1, 1] (what
the one-step student is given), through a 4×4-patch stem, so it costs what the LR would.

Layout: patchify conv 4×4 / 4 → GELU → conv 3×3 / 2 → GELU → conv 3×3 / 2 → GELU →
[spatial mean, spatial std] (noise and JPEG show in the spread of local responses) → Dense →
sigmoid.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class DegradationEstimator(nn.Module):
  """y [B, H, W, 3] in [−1, 1] → severities [B, outputs] in [0, 1]."""
  width: int = 32
  outputs: int = 3

  @nn.compact
  def __call__(self, y: jax.Array) -> jax.Array:
    x = nn.gelu(nn.Conv(self.width, (4, 4), strides=(4, 4), padding="VALID", name="stem")(y))
    x = nn.gelu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2), padding=1, name="conv_0")(x))
    x = nn.gelu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2), padding=1, name="conv_1")(x))
    pooled = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.std(x, axis=(1, 2))], axis=-1)
    return jax.nn.sigmoid(nn.Dense(self.outputs, name="head")(pooled))
