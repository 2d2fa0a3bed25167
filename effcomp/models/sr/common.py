"""Pieces shared by the super-resolution networks: RGB mean shift, pixel shuffle, upsamplers.

References:
  * EDSR-PyTorch `src/model/common.py` (sanghyun-son/EDSR-PyTorch): `MeanShift`,
    `default_conv`, `Upsampler`;
  * BasicSR `basicsr/archs/arch_util.py` (XPixelGroup/BasicSR): `Upsample`;
  * SwinIR `models/network_swinir.py` (JingyunLiang/SwinIR): `Upsample`, `UpsampleOneStep`,
    the `(x - mean) * img_range` input normalisation.

Images are NHWC float arrays [B, H, W, 3] with values in [0, 1]; the references are NCHW.
A torch conv weight [O, I, kh, kw] ports as `weight.permute(2, 3, 1, 0)` ([kh, kw, I, O]).
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.nn.pixel_shuffle import pixel_shuffle  # noqa: F401  (re-exported)

# RGB mean of the DIV2K training set (EDSR `MeanShift`, SwinIR `rgb_mean`, BasicSR EDSR).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
SCALES = (2, 3, 4)  # The upscaling factors the SR models accept.
CONV_AXES = ("height", "width", "conv_in", "conv_out")


def check_scale(scale: int) -> None:
  """ValueError unless `scale` is one of `SCALES`."""
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r}: expected one of {SCALES}")


def check_groups(embed_dim: int, depths, num_heads) -> None:
  """ValueError unless `depths` and `num_heads` give one positive depth and one head count
  dividing `embed_dim` per residual group (SwinIR's and IPT-V2's layouts)."""
  if not depths or len(depths) != len(num_heads) or min(depths) < 1:
    raise ValueError(f"depths={depths}, num_heads={num_heads}: expected one positive depth "
                     "and one head count per residual group")
  for heads in num_heads:
    if heads < 1 or embed_dim % heads:
      raise ValueError(f"num_heads={num_heads}: each must divide embed_dim={embed_dim}")


def check_image(x: jax.Array) -> None:
  """ValueError unless x is an RGB batch [B, H, W, 3]."""
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"x has shape {tuple(x.shape)}; expected [batch, height, width, 3] "
                     "(NHWC RGB in [0, 1])")


def normalize(x: jax.Array, img_range: float,
              mean: Sequence[float] = DIV2K_RGB_MEAN) -> jax.Array:
  """(x − mean)·img_range on [..., 3]: the references' input shift.

  With img_range = 255 this is EDSR-PyTorch's `sub_mean` (MeanShift, sign −1, rgb_std 1)
  applied to the image in [0, 255]; with img_range = 1 it is SwinIR's `(x - mean) *
  img_range`.
  """
  return (x - jnp.asarray(mean, x.dtype)) * img_range


def denormalize(y: jax.Array, img_range: float,
                mean: Sequence[float] = DIV2K_RGB_MEAN) -> jax.Array:
  """y / img_range + mean: the inverse of `normalize` (EDSR `add_mean` followed by ÷255)."""
  return y / img_range + jnp.asarray(mean, y.dtype)


def conv(x: jax.Array, features: int, dtype: Any, name: str, kernel: int = 3) -> jax.Array:
  """A stride-1 'same' k×k conv with bias (EDSR `default_conv`, padding k // 2) applied to x.

  Initialized as torch `nn.Conv2d` (what EDSR and SwinIR train from): kernel and bias
  uniform in ±1/√fan_in, fan_in = k·k·C_in (kaiming_uniform with a = √5). Call it inside a
  compact module: the conv becomes that module's submodule `name`.
  """
  bound = 1.0 / math.sqrt(kernel * kernel * x.shape[-1])

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return nn.Conv(
      features, (kernel, kernel), padding="SAME", dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"), CONV_AXES),
      bias_init=nn.with_logical_partitioning(bias_init, (CONV_AXES[-1],)))(x)


def upsampler_factors(scale: int) -> tuple:
  """The pixel-shuffle factors of `Upsampler`: (2,)·log2(scale) for powers of 2, (3,) for 3."""
  if scale >= 2 and scale & (scale - 1) == 0:
    return (2,) * int(math.log2(scale))
  if scale == 3:
    return (3,)
  raise ValueError(f"scale={scale!r}: the upsampler supports powers of 2 and 3")


class Upsampler(nn.Module):
  """Sub-pixel upsampler [B, H, W, C] → [B, H·scale, W·scale, C] (EDSR `Upsampler`, BasicSR
  and SwinIR `Upsample`): per factor r, conv 3×3 C → r²·C then `pixel_shuffle(r)`, i.e.
  log2(scale) × (conv 4C, shuffle 2) for powers of 2 and (conv 9C, shuffle 3) for 3.
  No activation or BN (EDSR uses act=False, bn=False). Conv i ↔ torch `upsample.{2i}`
  (BasicSR/SwinIR) or `tail.0.{2i}` (EDSR-PyTorch).
  """
  scale: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    for i, r in enumerate(upsampler_factors(self.scale)):
      x = pixel_shuffle(conv(x, r * r * c, self.dtype, f"conv_{i}"), r)
    return x


class UpsampleOneStep(nn.Module):
  """SwinIR's lightweight `UpsampleOneStep`: one conv 3×3 C → scale²·out_channels, then
  `pixel_shuffle(scale)`: [B, H, W, C] → [B, H·scale, W·scale, out_channels]. Conv ↔ torch
  `upsample.0`."""
  scale: int
  out_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.scale < 1:
      raise ValueError(f"scale={self.scale!r}: expected a positive integer")
    y = conv(x, self.scale ** 2 * self.out_channels, self.dtype, "conv")
    return pixel_shuffle(y, self.scale)
