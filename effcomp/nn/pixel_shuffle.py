"""Sub-pixel rearrangements on NHWC maps with torch's channel order (PixelShuffle /
PixelUnshuffle), so weights ported from PyTorch upsamplers and U-DiT's down/up-sampling
keep their meaning."""

import jax


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """[B, H, W, C·r²] → [B, H·r, W·r, C]: output pixel (h·r + i, w·r + j) of channel c reads
  input channel c·r² + i·r + j (torch `PixelShuffle`)."""
  b, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"pixel_shuffle: {c} channels are not divisible by r²={r * r}")
  x = x.reshape(b, h, w, c // (r * r), r, r).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * r, w * r, c // (r * r))


def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
  """[B, H, W, C] → [B, H/r, W/r, C·r²], the inverse of `pixel_shuffle` (torch
  `PixelUnshuffle`)."""
  b, h, w, c = x.shape
  if h % r or w % r:
    raise ValueError(f"pixel_unshuffle: the map {h}×{w} is not divisible by r={r}")
  x = x.reshape(b, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // r, w // r, c * r * r)
