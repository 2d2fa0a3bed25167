"""The orthonormal 2-D Haar wavelet transform of NHWC images, one level per call.

  ll, (lh, hl, hh) = haar_dwt(x)        # each [B, H/2, W/2, C]
  x == haar_idwt(ll, (lh, hl, hh))

For a 2×2 block [[a, b], [c, d]]: ll = (a + b + c + d)/2, lh = (a + b − c − d)/2 (rows
differ: horizontal edges), hl = (a − b + c − d)/2 (columns differ: vertical edges), hh =
(a − b − c + d)/2: pywt's `dwt2(x, 'haar')` (cA, (cH, cV, cD)) on each channel. The
frequency split of `effcomp.losses.high_frequency`.
"""

from typing import Tuple

import jax
import jax.numpy as jnp

Details = Tuple[jax.Array, jax.Array, jax.Array]


def haar_dwt(x: jax.Array) -> Tuple[jax.Array, Details]:
  """(ll, (lh, hl, hh)) of x [B, H, W, C] (H, W even)."""
  if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"x shape {x.shape}: expected [B, H, W, C] with even H and W")
  a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
  c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
  return (a + b + c + d) / 2, ((a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2)


def haar_idwt(ll: jax.Array, details: Details) -> jax.Array:
  """The inverse of `haar_dwt`."""
  lh, hl, hh = details
  a, b = (ll + lh + hl + hh) / 2, (ll + lh - hl - hh) / 2
  c, d = (ll - lh + hl - hh) / 2, (ll - lh - hl + hh) / 2
  top = jnp.stack([a, b], axis=3).reshape(a.shape[0], a.shape[1], -1, a.shape[3])
  bottom = jnp.stack([c, d], axis=3).reshape(a.shape[0], a.shape[1], -1, a.shape[3])
  return jnp.stack([top, bottom], axis=2).reshape(a.shape[0], -1, top.shape[2], a.shape[3])
