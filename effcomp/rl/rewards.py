"""Model-free rewards for `effcomp.registry.REWARDS` (images [B, H, W, C] in [−1, 1],
labels int [B] → [B] float32): cheap, known-direction rewards for tests and smoke runs.

  'brightness'  the mean intensity in [0, 1]: (x + 1)/2 averaged over pixels and channels
                (the reference's 'jpeg_compressibility'-style scalar image property at CPU
                scale; it ignores the prompt).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from effcomp.registry import REWARDS

RewardFn = Callable[[jax.Array, jax.Array], jax.Array]


def brightness(images: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean of (images + 1)/2 per image: [B]."""
  del labels
  x = (images.astype(jnp.float32) + 1.0) / 2.0
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


@REWARDS.register("brightness")
def load_brightness(arg: str = "") -> RewardFn:
  if arg:
    raise ValueError(f"reward 'brightness:{arg}': brightness takes no argument")
  return brightness
