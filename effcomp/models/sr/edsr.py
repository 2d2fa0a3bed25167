"""EDSR: enhanced deep residual network for single-image super-resolution.

Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution" (CVPRW
2017). Follows sanghyun-son/EDSR-PyTorch `src/model/edsr.py` + `src/model/common.py`
(the same network as BasicSR `basicsr/archs/edsr_arch.py`, whose parameter names are used):

  x ─MeanShift→ conv_first (3→F) ─┬─ n_resblocks × ResBlock ─ conv_after_body ─⊕─
                                  └──────────────────────────────────────────┘
    ─ Upsampler(scale) ─ conv_last (F→3) ─MeanShift⁻¹→ y

  ResBlock: x + res_scale · conv(ReLU(conv(x))), 3×3 convs with bias, no batch norm.
  MeanShift: EDSR-PyTorch feeds images in [0, rgb_range = 255] and subtracts
  rgb_range·mean; here x is in [0, 1], so the network sees (x − mean)·rgb_range and the
  output is divided by rgb_range before the mean is added back (`common.normalize`), which
  is the same function, so EDSR-PyTorch weights port unchanged.

EDSR-baseline (the defaults): 16 blocks, 64 features, res_scale 1: 1.37 M / 1.55 M /
1.52 M parameters at ×2 / ×3 / ×4 (EDSR-PyTorch README). EDSR (full): n_resblocks=32,
n_feats=256, res_scale=0.1.

Parameter names ↔ EDSR-PyTorch state dict: conv_first ↔ head.0; body_i/conv1, conv2 ↔
body.i.body.0, body.i.body.2; conv_after_body ↔ body.{n_resblocks}; upsample/conv_j ↔
tail.0.{2j}; conv_last ↔ tail.1 (sub_mean/add_mean are fixed, not parameters here).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.sr.common import (Upsampler, check_image, check_scale, conv, denormalize,
                                      normalize)
from effcomp.registry import MODELS


class ResBlock(nn.Module):
  """x + res_scale · conv3×3(ReLU(conv3×3(x))) on [B, H, W, F] (EDSR `ResBlock`, bn=False)."""
  res_scale: float = 1.0
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f = x.shape[-1]
    h = nn.relu(conv(x, f, self.dtype, "conv1"))
    return x + conv(h, f, self.dtype, "conv2") * self.res_scale


@MODELS.register("edsr")
class EDSR(nn.Module):
  """EDSR: x [B, H, W, 3] in [0, 1] → [B, H·scale, W·scale, 3] (float32, not clipped).

  Attributes (EDSR-PyTorch `args` names):
    scale: upscaling factor, 2, 3 or 4.
    n_resblocks: residual blocks in the body (16 = EDSR-baseline, 32 = EDSR).
    n_feats: feature width (64 = baseline, 256 = EDSR).
    res_scale: residual scaling inside each block (1 = baseline, 0.1 = EDSR).
    rgb_range: the range the network's convolutions see the image in (255 as trained by
      EDSR-PyTorch; BasicSR's `img_range`).
    remat: recompute each residual block in the backward pass.
    dtype: compute dtype name ('float32', 'bfloat16'); parameters stay float32.
  """
  scale: int = 2
  n_resblocks: int = 16
  n_feats: int = 64
  res_scale: float = 1.0
  rgb_range: float = 255.0
  remat: bool = False
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Super-resolves x: [B, H, W, 3] RGB in [0, 1]. `train` is accepted for the common SR
    interface; EDSR has no batch norm or dropout, so it changes nothing."""
    del train
    check_scale(self.scale)
    check_image(x)
    if self.n_resblocks < 0 or self.n_feats < 1:
      raise ValueError(f"n_resblocks={self.n_resblocks}, n_feats={self.n_feats}: expected "
                       "n_resblocks ≥ 0 and n_feats ≥ 1")
    dt = self.dtype
    x = normalize(x.astype(jnp.float32), self.rgb_range).astype(dt)
    x = conv(x, self.n_feats, dt, "conv_first")
    block_cls = nn.remat(ResBlock) if self.remat else ResBlock
    res = x
    for i in range(self.n_resblocks):
      res = block_cls(self.res_scale, dt, name=f"body_{i}")(res)
    res = conv(res, self.n_feats, dt, "conv_after_body") + x
    y = conv(Upsampler(self.scale, dt, name="upsample")(res), 3, dt, "conv_last")
    return denormalize(y.astype(jnp.float32), self.rgb_range)
