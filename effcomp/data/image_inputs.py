"""Images as classifiers and regressors take them: the pipeline's uint8 batches to floats.

Batches cross the host link as uint8 (a quarter of float32's bytes) and are normalized
on the device, inside the jitted step (docs/architecture.md, "Task").
"""

from typing import Sequence

import jax
import jax.numpy as jnp


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] → float32 [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def model_inputs(images: jax.Array, resize: int = 0, mean: Sequence[float] = (),
                 std: Sequence[float] = ()) -> jax.Array:
  """uint8 → float [0, 1] → bilinear resize to resize×resize (0 keeps the size) → (x −
  mean) / std per channel when given (torchvision's `Normalize`, which reference codes
  apply to [0, 1] images). images: [N, H, W, C]."""
  images = images_to_float(images)
  if resize:
    n, _, _, ch = images.shape
    images = jax.image.resize(images, (n, resize, resize, ch), "bilinear")
  if mean or std:
    images = (images - jnp.asarray(mean or 0.0, jnp.float32)) / jnp.asarray(std or 1.0, jnp.float32)
  return images
