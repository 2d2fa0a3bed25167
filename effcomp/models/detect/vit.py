"""DeiT: a plain ViT classifier (Touvron et al. 2021), one of GenImage's detectors (DeiT-S).

Follows timm's `VisionTransformer` as DeiT's official code builds it (facebookresearch/deit
`models.py` `deit_small_patch16_224` = timm `vit_small_patch16_224` without a distillation
token): a p×p/p patch conv with bias → tokens, a learned class token prepended, learned
position embeddings added; `depth` pre-LN blocks x + attn(LN(x)), x + MLP(LN(x)) (GELU,
erf form, hidden `mlp_ratio`·embed; LayerNorm eps 1e-6); a final LayerNorm; a Dense head
on the class token. The blocks are effcomp's `CLIPEncoderLayer` (the same pre-LN layer:
q/k/v/out projections with bias) with a `gelu` config: parameters differ from timm's only
in layout (timm's fused `qkv` is q, k, v side by side). transformers' `ViTForImageClassification`
computes the same function (`tests/test_detect_vit_swin.py` checks it on shared weights).

Deviations: no stochastic depth (DeiT trains with drop-path 0.1; effcomp's encoder layer
has none) and effcomp's initializers (lecun-normal projections, N(0, 0.02²) positions and
class token) where timm uses truncated normals; neither changes the function class.

x: [B, H, W, 3] normalized (ImageNet mean/std, as timm), square, H divisible by
`patch_size` → logits [B, num_classes] float32. The position table is sized from the input
at initialization: a model runs at the image size it was built for.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from effcomp.models.clip import CLIPEncoder, CLIPVisionConfig, layer_norm
from effcomp.nn.dense import dense
from effcomp.registry import MODELS

LAYER_NORM_EPS = 1e-6  # timm's `partial(nn.LayerNorm, eps=1e-6)` in DeiT's models.py


def patch_conv(features: int, patch: int, dtype, name: str = "patch_embed") -> nn.Conv:
  """The p×p/p patch embedding with bias (timm's `PatchEmbed.proj`), kernel [p, p, in,
  features] with logical axis names."""
  return nn.Conv(features, (patch, patch), strides=(patch, patch), padding="VALID",
                 dtype=dtype, name=name,
                 kernel_init=nn.with_logical_partitioning(
                     nn.initializers.lecun_normal(), ("height", "width", "conv_in", "embed")),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


@MODELS.register("deit")
class DeiT(nn.Module):
  """ViT/DeiT classifier (see the module docstring)."""
  num_classes: int = 2
  patch_size: int = 16
  embed_dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout, no batch statistics
    b, height, width, _ = x.shape
    p = self.patch_size
    if height != width or height % p or self.embed_dim % self.num_heads:
      raise ValueError(f"DeiT: images {height}×{width}, patch_size={p}, embed_dim="
                       f"{self.embed_dim}, num_heads={self.num_heads}; expected square images "
                       "with a side divisible by patch_size and embed_dim divisible by num_heads")
    tokens = patch_conv(self.embed_dim, p, self.dtype)(x.astype(self.dtype))
    tokens = tokens.reshape(b, -1, self.embed_dim)
    normal = nn.initializers.normal(0.02)
    cls = self.param("cls_token", nn.with_logical_partitioning(normal, ("embed",)),
                     (self.embed_dim,))
    tokens = jnp.concatenate(
        [jnp.broadcast_to(cls.astype(tokens.dtype), (b, 1, self.embed_dim)), tokens], axis=1)
    pos = self.param("pos_embed", nn.with_logical_partitioning(normal, (None, "embed")),
                     tokens.shape[1:])
    config = CLIPVisionConfig(
        hidden_size=self.embed_dim, intermediate_size=int(self.embed_dim * self.mlp_ratio),
        num_layers=self.depth, num_heads=self.num_heads, image_size=height, patch_size=p,
        hidden_act="gelu", layer_norm_eps=LAYER_NORM_EPS)
    h = CLIPEncoder(config, self.dtype, name="blocks")(tokens + pos.astype(tokens.dtype))[-1]
    pooled = layer_norm(LAYER_NORM_EPS, self.dtype, "norm")(h[:, 0])
    return dense(self.num_classes, "embed", "classes", self.dtype, name="head")(
        pooled).astype(jnp.float32)


# DeiT-S (deit_small_patch16_224): 21.7 M parameters with a 1000-way head.
DEIT_S = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
# CPU size for 16×16 mini-GenImage images: 4×4 patches → 16 tokens, 4 layers of width 96.
DEIT_LITE = dict(patch_size=4, embed_dim=96, depth=4, num_heads=3)
