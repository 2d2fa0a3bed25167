"""ResShift's denoiser: a U-Net of time-conditioned ResBlocks with Swin stages, the
baseline DiT-SR replaces.

Follows zsyOAOA/ResShift `models/unet.py` `UNetModelSwin` and `ResBlock`
(use_scale_shift_norm=True, resblock_updown=False, conv resampling) with the Swin stages of
`models/swin_transformer.py` `BasicLayer` (no timestep input: the time enters through the
ResBlocks only). Recipe (configs/realsr_swinunet_realesrgan256_journal.yaml):
model_channels 160, channel_mult (1, 2, 2, 4), num_res_blocks 2 per level, attention at
every level, swin_depth 2, swin_embed_dim 192, head width 32, window 8, mlp_ratio 4.

  [x_t ‖ lq] ─conv3×3─ per level: num_res_blocks × (ResBlock [+ Stage on the first]) [─ down]
  ─ middle: ResBlock ─ Stage ─ ResBlock
  ─ per level, deepest first: (num_res_blocks + 1) × (concat skip ─ ResBlock [+ Stage on
    the first]) [─ up after the last] ─ GroupNorm ─ SiLU ─ conv3×3

  ResBlock: h = conv3×3(SiLU(GN(x))); h = GN(h)·(1 + scale) + shift (scale, shift from
  SiLU → Linear of the time embedding); h = conv3×3(dropout(SiLU(h))) (zero-initialized);
  out = skip(x) + h, skip a 1×1 conv when the width changes.

Stages, resampling, the time embedding and the input check are DiT-SR's
(`effcomp.models.sr.dit_sr`) with conditioning 'none', so the two backbones differ only in
what the paper changes; so are the deviations from the reference's Swin blocks and their
compatibility fields (`image_size`: windows and shifts fixed at construction;
`window_mask='reference'`: the reference's shifted-window mask). `effcomp.convert.resshift`
reads the released checkpoints.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.sr.common import CONV_AXES, conv
from effcomp.models.sr.dit_sr import (Stage, TimeEmbedding, check_unet_input, check_widths,
                                      conv1x1, downsample, group_norm, has_stage, level_side,
                                      upsample)
from effcomp.models.sr.swinir import dense
from effcomp.nn.dropout import Dropout
from effcomp.registry import MODELS


class ResBlock(nn.Module):
  """ADM ResBlock with scale-shift norm: x [B, H, W, C], emb [B, E] → [B, H, W, features]."""
  features: int
  dropout: float = 0.0
  norm_groups: int = 32
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
    dt = self.dtype
    h = conv(nn.silu(group_norm(self.norm_groups, dt, "in_norm")(x)).astype(dt), self.features,
             dt, "in_conv")
    mod = dense(2 * self.features, ("embed", "mlp"), jnp.float32, "emb")(nn.silu(emb))
    scale, shift = jnp.split(mod[:, None, None, :], 2, axis=-1)
    h = group_norm(self.norm_groups, dt, "out_norm")(h) * (1 + scale) + shift
    h = Dropout(self.dropout, deterministic=not train)(nn.silu(h)).astype(dt)
    h = nn.Conv(self.features, (3, 3), padding="SAME", dtype=dt, name="out_conv",
                kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, CONV_AXES))(h)
    skip = x if x.shape[-1] == self.features else conv1x1(x, self.features, dt, "skip")
    return skip + h


@MODELS.register("resshift_unet")
class ResShiftUNet(nn.Module):
  """ResShift's UNetModelSwin: (x_t, t, lq) → [B, H, W, out_channels] (module docstring).

  Attributes as `DiTSR`'s (image_size and window_mask included: the compatibility fields
  for the reference's windows and shifted-window mask), plus num_res_blocks (per level);
  the Stages are unconditioned.
  """
  scale: int = 4
  in_channels: int = 3
  out_channels: int = 3
  lq_channels: int = 3
  model_channels: int = 160
  channel_mult: Tuple[int, ...] = (1, 2, 2, 4)
  num_res_blocks: int = 2
  swin_embed_dim: int = 192
  swin_depth: int = 2
  num_head_channels: int = 32
  window_size: int = 8
  mlp_ratio: float = 4.0
  attention_levels: Optional[Tuple[int, ...]] = None
  dropout: float = 0.0
  norm_groups: int = 32
  image_size: Optional[int] = None
  window_mask: str = "swin"
  dtype: str = "float32"

  def stage(self, name: str, level: int):
    return Stage(self.swin_embed_dim, self.swin_depth,
                 self.swin_embed_dim // self.num_head_channels, self.window_size,
                 self.mlp_ratio, "none", dropout=self.dropout, norm_groups=self.norm_groups,
                 dtype=self.dtype, resolution=level_side(self, level),
                 window_mask=self.window_mask, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, lq: jax.Array, train: bool = False
               ) -> jax.Array:
    if self.num_res_blocks < 1:
      raise ValueError(f"num_res_blocks={self.num_res_blocks}: expected ≥ 1")
    check_widths(self)
    levels = len(self.channel_mult)
    check_unet_input(x, lq, levels, self.in_channels)
    dt, mc = self.dtype, self.model_channels
    res = lambda f, name: ResBlock(f, self.dropout, self.norm_groups, dt, name=name)
    emb = TimeEmbedding(mc, name="time_embed")(t)
    h = conv(jnp.concatenate([x, lq], -1).astype(dt), mc * self.channel_mult[0], dt, "conv_in")
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for j in range(self.num_res_blocks):
        h = res(mc * mult, f"down_{level}_{j}_res")(h, emb, train)
        if j == 0 and has_stage(self, level):
          h = self.stage(f"down_{level}_{j}_stage", level)(h, emb, train)
        skips.append(h)
      if level < levels - 1:
        h = downsample(h, h.shape[-1], dt, f"down_{level}_downsample")
        skips.append(h)
    h = res(h.shape[-1], "middle_res_0")(h, emb, train)
    h = self.stage("middle_stage", levels - 1)(h, emb, train)
    h = res(h.shape[-1], "middle_res_1")(h, emb, train)
    for level in reversed(range(levels)):
      ch = mc * self.channel_mult[level]
      for i in range(self.num_res_blocks + 1):
        h = res(ch, f"up_{level}_{i}_res")(jnp.concatenate([h, skips.pop()], -1), emb, train)
        if i == 0 and has_stage(self, level):
          h = self.stage(f"up_{level}_{i}_stage", level)(h, emb, train)
      if level > 0:
        h = upsample(h, ch, dt, f"up_{level}_upsample")
    h = nn.silu(group_norm(self.norm_groups, dt, "out_norm")(h))
    return conv(h.astype(dt), self.out_channels, dt, "conv_out").astype(jnp.float32)
