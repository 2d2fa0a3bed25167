"""The orthonormal 2-D Haar wavelet transform of NHWC images.

  ll, (lh, hl, hh) = haar_dwt(x)        # one level: each [B, H/2, W/2, C]
  x == haar_idwt(ll, (lh, hl, hh))
  ll_L, details = haar_wavedec(x, L)    # L levels, each splitting the previous ll
  y = haar_packets(x, L)                # [B, H/2^L, W/2^L, 4^L·C]: every band split
  x == inverse_haar_packets(y, L)

For a 2×2 block [[a, b], [c, d]]: ll = (a + b + c + d)/2, lh = (a + b − c − d)/2 (rows
differ: horizontal edges), hl = (a − b + c − d)/2 (columns differ: vertical edges), hh =
(a − b − c + d)/2: pywt's `dwt2(x, 'haar')` (cA, (cH, cV, cD)) on each channel. The
frequency split of `effcomp.losses.high_frequency` and `effcomp.losses.wavelet`; the
packets are the lossless stem and head of the tiny autoencoder (`effcomp.models.vae.tiny`).
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


def haar_wavedec(x: jax.Array, levels: int) -> Tuple[jax.Array, Tuple[Details, ...]]:
  """The `levels`-level Haar decomposition of x [B, H, W, C] (pywt's `wavedec2(x, 'haar',
  level=levels)` on each channel, finest level first here): (ll_L, (details_1, …,
  details_L)), details_l = (lh, hl, hh) of level l, each [B, H/2^l, W/2^l, C]. Level l + 1
  splits level l's ll; H and W must be divisible by 2^levels."""
  if levels < 1:
    raise ValueError(f"levels={levels}: expected ≥ 1")
  details = []
  for _ in range(levels):
    x, level_details = haar_dwt(x)
    details.append(level_details)
  return x, tuple(details)


def haar_packets(x: jax.Array, levels: int) -> jax.Array:
  """`levels` levels of the Haar wavelet packet transform as a space-to-depth:
  [B, H, W, C] → [B, H/2^L, W/2^L, 4^L·C].

  Each level takes `haar_dwt` of every channel and concatenates (ll, lh, hl, hh) on the
  channel axis, so level l + 1 also splits the detail bands of level l. Orthonormal (the
  sum of squares is kept) and inverted exactly by `inverse_haar_packets`; 0 levels is x."""
  if levels < 0:
    raise ValueError(f"levels={levels}: expected ≥ 0")
  for _ in range(levels):
    ll, details = haar_dwt(x)
    x = jnp.concatenate([ll, *details], axis=-1)
  return x


def inverse_haar_packets(y: jax.Array, levels: int) -> jax.Array:
  """The inverse of `haar_packets`: [B, h, w, 4^L·C] → [B, h·2^L, w·2^L, C]."""
  if levels < 0:
    raise ValueError(f"levels={levels}: expected ≥ 0")
  if y.ndim != 4 or y.shape[-1] % 4 ** levels:
    raise ValueError(f"y shape {y.shape}: expected [B, h, w, C] with C divisible by "
                     f"4^levels = {4 ** levels}")
  for _ in range(levels):
    ll, lh, hl, hh = jnp.split(y, 4, axis=-1)
    y = haar_idwt(ll, (lh, hl, hh))
  return y
