"""Swin Transformer classifier (Liu et al. 2021), one of GenImage's detectors (Swin-T).

Follows the official microsoft/Swin-Transformer `models/swin_transformer.py`
(`SwinTransformer`, `BasicLayer`, `PatchMerging`, `PatchEmbed`):

  x ─ p×p/p patch conv (bias) ─ LayerNorm ─ stage 1 ─ PatchMerging ─ … ─ stage N ─ LayerNorm
    ─ mean over tokens ─ Dense head

  stage i: depths[i] Swin layers of num_heads[i] heads on a [B, H_i, W_i, C·2^i] map, the
  odd ones shifted by window/2; where the map is no larger than the window the layers use
  one window of the map's size and no shift (`SwinTransformerBlock.__init__`'s rule);
  PatchMerging: [x(0::2, 0::2), x(1::2, 0::2), x(0::2, 1::2), x(1::2, 1::2)] concatenated
  → LayerNorm(4C) → bias-free Linear 4C → 2C.

The Swin layers are SwinIR's (`effcomp.models.sr.swinir.SwinTransformerBlock`: the same
W-MSA with relative position bias and shifted-window mask, LayerNorm eps 1e-5, GELU MLP),
with `mlp_ratio` 4 and stochastic depth rising linearly from 0 to `drop_path` over all
layers (the official `dpr`). transformers' `SwinForImageClassification` computes the same
function (`tests/test_detect_vit_swin.py` checks it on shared weights).

x: [B, H, W, 3] normalized (ImageNet mean/std), H and W divisible by patch_size·2^(N−1)
and each stage's map by its window → logits [B, num_classes] float32.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.models.detect.vit import patch_conv
from effcomp.models.sr.swinir import SwinTransformerBlock, dense, layer_norm
from effcomp.registry import MODELS


def patch_merge(x: jax.Array) -> jax.Array:
  """[B, H, W, C] → [B, H/2, W/2, 4C] in the official channel order (x0, x1, x2, x3)."""
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"patch_merge: map of shape {x.shape}; expected even height and width")
  return jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                          x[:, 1::2, 1::2]], axis=-1)


@MODELS.register("swin")
class Swin(nn.Module):
  """Swin Transformer classifier (see the module docstring)."""
  num_classes: int = 2
  patch_size: int = 4
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: int = 7
  mlp_ratio: float = 4.0
  drop_path: float = 0.2
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    p = self.patch_size
    if len(self.depths) != len(self.num_heads):
      raise ValueError(f"Swin: depths={tuple(self.depths)} and num_heads="
                       f"{tuple(self.num_heads)}: expected one head count per stage")
    side = p * 2 ** (len(self.depths) - 1)
    if x.shape[1] % side or x.shape[2] % side:
      raise ValueError(f"Swin: images {x.shape[1]}×{x.shape[2]}; expected sides divisible by "
                       f"patch_size·2^(stages−1) = {side}")
    h = layer_norm(self.dtype, "patch_norm")(patch_conv(self.embed_dim, p, self.dtype)(
        x.astype(self.dtype)))
    rates = np.linspace(0.0, self.drop_path, sum(self.depths))
    layer = 0
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      res = min(h.shape[1:3])
      window = min(self.window_size, res)
      shift = window // 2 if res > self.window_size else 0
      for j in range(depth):
        h = SwinTransformerBlock(heads, window, shift if j % 2 else 0, self.mlp_ratio,
                                 float(rates[layer]), self.dtype,
                                 name=f"stage{i}_block{j}")(h, train)
        layer += 1
      if i < len(self.depths) - 1:
        h = layer_norm(self.dtype, f"stage{i}_merge_norm")(patch_merge(h))
        h = dense(2 * h.shape[-1] // 4, ("mlp", "embed"), self.dtype, f"stage{i}_merge",
                  use_bias=False)(h)
    pooled = jnp.mean(layer_norm(self.dtype, "norm")(h), axis=(1, 2))
    return dense(self.num_classes, ("embed", "classes"), self.dtype, "head")(
        pooled).astype(jnp.float32)


# Swin-T (swin_tiny_patch4_window7_224): 28.3 M parameters with a 1000-way head.
SWIN_T = dict(patch_size=4, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
              window_size=7, drop_path=0.2)
# CPU size for 16×16 mini-GenImage images: 2×2 patches → an 8×8 map (windows of 4, shifted
# by 2), merged to 4×4 (one window, no shift).
SWIN_LITE = dict(patch_size=2, embed_dim=48, depths=(2, 2), num_heads=(3, 6), window_size=4,
                 drop_path=0.1)
