"""IPT-V2 for super-resolution: focal context (FCSA) and global grid (GGSA) self-attention.

Tu et al., "IPT-V2: Efficient Image Processing Transformer using Hierarchical Attentions"
(arXiv 2404.00633, 2024). No official code was found (huawei-noah/Pretrained-IPT holds IPT
V1 only), so this follows the paper's description and the references it builds on:

  * FCSA (local): channel self-attention computed inside (shifted) windows. Per window and
    head, Restormer's MDTA (swz30/Restormer `basicsr/models/archs/restormer_arch.py`,
    `Attention`): q, k, v from a 1×1 projection + depthwise 3×3 conv, q and k
    L2-normalized over the window's tokens, a learned per-head temperature τ, and the
    d×d attention softmax(τ·q̂ᵀk̂) applied to v (d = C / heads). Windows as SwinIR
    (`window_partition`); every other FCSA layer rolls the map by −window/2 first and by
    +window/2 after (Swin's shifted windows).
  * GGSA (global): MaxViT's grid attention (Tu et al., ECCV 2022): the map is split into a
    G×G grid of cells of (H/G)×(W/G) pixels, and the G² tokens at the same position of
    every cell (spaced H/G rows and W/G columns apart) attend to each other with
    multi-head dot-product attention and a relative position bias in grid coordinates
    (SwinIR's `WindowAttention` on the regrouped tokens).
  * Rep-LeFFN: U-DiT's re-parameterized FFN (`effcomp.models.dit.udit.FeedForward`,
    kind 'rep': 1×1 pairs and parallel depthwise 5×5 + 3×3 + 1×1 + identity branches),
    folded by `reparameterize` into the inference FFN (kind 'dwconv': 1×1, GELU,
    depthwise 5×5, 1×1), a locally-enhanced FFN (Uformer's LeFF) with one conv.

Network (SwinIR's lightweight-SR layout, `swinir.py`):

  x ─reflect-pad H, W to multiples of lcm(window, grid)─ (x − mean)·img_range ─
    conv_first ─┬─ len(depths) × ResidualGroup ─ LN ─ conv_after_body ─⊕─ upsampler ─
                └────────────────────────────────────────────────────┘
    ÷img_range + mean ─ crop to [H·scale, W·scale]

  ResidualGroup: x + conv3×3(layers(x)); layer j is FCSA when j is even (shifted when
  j // 2 is odd) and GGSA when j is odd. Layer: x += Attn(LN(x)); x += FFN(LN(x)).

Assumptions (the paper gives no SR configuration or code):
  * The paper's restoration network is a U-shaped encoder-decoder (denoise, deblur,
    derain); for SR the FCSA/GGSA layers are placed in SwinIR's residual groups.
  * Shifted FCSA windows are not masked: channel attention has no token-pair logits to
    mask, so the windows that the cyclic roll wraps mix pixels from opposite borders into
    one channel-attention matrix.
  * The FCSA depthwise 3×3 (MDTA's `qkv_dwconv`) runs on the whole map before the roll
    and window partition, so it never convolves across the roll's seam.
  * GGSA fixes the grid size G (MaxViT), not the cell size, so its cost stays linear in
    H·W; G = window size = 8 by default.
  * Biases on all projections (SwinIR's qkv_bias); no stochastic depth.
  * Default size (`IPTV2_SIZES['IPT-V2-light']`): embed_dim 60, depths (6, 6, 6, 6),
    6 heads, window 8, grid 8, mlp_ratio 1.5, one-step upsampler; chosen so that the
    inference model is the size of SwinIR-light: 884,544 / 892,659 / 904,020 parameters
    at ×2 / ×3 / ×4 with ffn='dwconv' (SwinIR-light: 910,152 / 918,267 / 929,628); the
    training form (ffn='rep') has 977,424 / 985,539 / 996,900. mlp_ratio 2 would give
    0.99 M / 1.01 M (×2 / ×4) merged.
"""

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.dit.udit import FFN_TYPES, FeedForward
from effcomp.models.dit.udit import reparameterize as _reparameterize_rep_ffn
from effcomp.models.sr.common import (Upsampler, UpsampleOneStep, check_groups, check_image,
                                      check_scale, conv, denormalize, normalize)
from effcomp.models.sr.swinir import (NUM_FEAT, UPSAMPLERS, WindowAttention, dense, layer_norm,
                                      pad_to_multiple, window_partition, window_reverse)
from effcomp.nn.depthwise_conv import DepthwiseConv
from effcomp.registry import MODELS

NORMALIZE_EPS = 1e-12  # torch F.normalize (Restormer MDTA's q, k normalization).
_LIGHT = dict(embed_dim=60, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6), window_size=8,
              grid_size=8, mlp_ratio=1.5, upsampler="pixelshuffledirect")
IPTV2_SIZES = {
    "IPT-V2-light": _LIGHT,  # The defaults: SwinIR-light's size (module docstring).
    # SwinIR-classical's width and depth (`SWINIR_CLASSICAL`) with IPT-V2 layers.
    "IPT-V2-classical": dict(_LIGHT, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6,
                             mlp_ratio=2.0, upsampler="pixelshuffle"),
}


def channel_attention(q: jax.Array, k: jax.Array, v: jax.Array, temperature: jax.Array,
                      num_heads: int) -> jax.Array:
  """Transposed (channel) attention within each group: q, k, v [G, N, C] → [G, N, C].

  Per group g and head h (channels h·d … h·d + d − 1, d = C / heads): q̂, k̂ = q, k
  L2-normalized over the N tokens, A = softmax_j(τ_h · q̂ᵀk̂) [d, d], out = (A vᵀ)ᵀ
  (Restormer MDTA). temperature: [heads]. The logits and softmax run in float32.
  """
  g, n, c = q.shape
  d = c // num_heads
  q, k, v = (t.reshape(g, n, num_heads, d) for t in (q, k, v))

  def l2_normalize(t):
    norm = jnp.sqrt(jnp.sum(jnp.square(t.astype(jnp.float32)), axis=1, keepdims=True))
    return t / jnp.maximum(norm, NORMALIZE_EPS).astype(t.dtype)
  logits = jnp.einsum("gnhi,gnhj->ghij", l2_normalize(q), l2_normalize(k))
  logits = logits.astype(jnp.float32) * temperature[:, None, None]
  attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("ghij,gnhj->gnhi", attn, v).reshape(g, n, c)


def grid_partition(x: jax.Array, grid_size: int) -> jax.Array:
  """[B, H, W, C] → [B·(H/G)·(W/G), G, G, C]: group (b, i, j) holds x[b, i + r·H/G,
  j + c·W/G] at grid position (r, c), the pixels at offset (i, j) of every one of the G×G
  cells (MaxViT's grid partition). Groups are ordered b, i, j."""
  b, h, w, c = x.shape
  g = grid_size
  x = x.reshape(b, g, h // g, g, w // g, c).transpose(0, 2, 4, 1, 3, 5)
  return x.reshape(-1, g, g, c)


def grid_reverse(groups: jax.Array, grid_size: int, height: int, width: int) -> jax.Array:
  """[B·(H/G)·(W/G), G, G, C] → [B, H, W, C], the inverse of `grid_partition`."""
  g, c = grid_size, groups.shape[-1]
  x = groups.reshape(-1, height // g, width // g, g, g, c).transpose(0, 3, 1, 4, 2, 5)
  return x.reshape(-1, height, width, c)


class FocalContextAttention(nn.Module):
  """FCSA on x: [B, H, W, C] (H, W multiples of window_size) → [B, H, W, C].

  qkv = dwconv3×3(Linear C → 3C) laid out [3, heads, d]; roll by −shift_size; channel
  attention inside each window (`channel_attention`); roll back; Linear C → C.
  """
  num_heads: int
  window_size: int
  shift_size: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, height, width, c = x.shape
    ws, s = self.window_size, self.shift_size
    qkv = dense(3 * c, ("embed", "heads"), self.dtype, "qkv")(x)
    qkv = DepthwiseConv(
        3, dtype=self.dtype, name="qkv_dwconv",
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
            ("height", "width", None, "heads")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("heads",)))(qkv)
    if s:
      qkv = jnp.roll(qkv, (-s, -s), axis=(1, 2))
    windows = window_partition(qkv, ws).reshape(-1, ws * ws, 3 * c)
    temperature = self.param("temperature", nn.with_logical_partitioning(
        nn.initializers.ones, ("heads",)), (self.num_heads,), jnp.float32)
    q, k, v = jnp.split(windows, 3, axis=-1)
    out = channel_attention(q, k, v, temperature, self.num_heads)
    out = window_reverse(out.reshape(-1, ws, ws, c), ws, height, width)
    if s:
      out = jnp.roll(out, (s, s), axis=(1, 2))
    return dense(c, ("heads", "embed"), self.dtype, "proj")(out)


class GlobalGridAttention(nn.Module):
  """GGSA on x: [B, H, W, C] (H, W multiples of grid_size) → [B, H, W, C]: multi-head
  attention with relative position bias among the G² tokens of each `grid_partition`
  group (SwinIR's `WindowAttention` with window = grid_size, as submodule 'attn')."""
  num_heads: int
  grid_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, height, width, c = x.shape
    g = self.grid_size
    groups = grid_partition(x, g).reshape(-1, g * g, c)
    out = WindowAttention(self.num_heads, g, dtype=self.dtype, name="attn")(groups)
    return grid_reverse(out.reshape(-1, g, g, c), g, height, width)


def layer_schedule(depth: int, window_size: int) -> Tuple[Tuple[str, int], ...]:
  """(kind, shift_size) of each layer of a residual group: FCSA and GGSA alternate,
  starting with FCSA, and every other FCSA layer is shifted by window_size // 2."""
  return tuple(("fcsa", window_size // 2 if (j // 2) % 2 else 0) if j % 2 == 0 else
               ("ggsa", 0) for j in range(depth))


class IPTV2Layer(nn.Module):
  """x += Attn(LN(x)); x += FFN(LN(x)) on [B, H, W, C]; Attn is FCSA or GGSA (`kind`)."""
  kind: str
  num_heads: int
  window_size: int
  grid_size: int
  shift_size: int = 0
  mlp_ratio: float = 1.5
  ffn: str = "rep"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = layer_norm(self.dtype, "norm1")(x)
    if self.kind == "fcsa":
      h = FocalContextAttention(self.num_heads, self.window_size, self.shift_size,
                                self.dtype, name="fcsa")(h)
    elif self.kind == "ggsa":
      h = GlobalGridAttention(self.num_heads, self.grid_size, self.dtype, name="ggsa")(h)
    else:
      raise ValueError(f"kind={self.kind!r}: expected 'fcsa' or 'ggsa'")
    x = x + h
    ffn = FeedForward(int(x.shape[-1] * self.mlp_ratio), self.ffn, self.dtype, name="ffn")
    return x + ffn(layer_norm(self.dtype, "norm2")(x))


class ResidualGroup(nn.Module):
  """x + conv3×3(layers(x)) on [B, H, W, C], the layers as `layer_schedule`."""
  depth: int
  num_heads: int
  window_size: int
  grid_size: int
  mlp_ratio: float = 1.5
  ffn: str = "rep"
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    layer_cls = nn.remat(IPTV2Layer) if self.remat else IPTV2Layer
    h = x
    for j, (kind, shift) in enumerate(layer_schedule(self.depth, self.window_size)):
      h = layer_cls(kind, self.num_heads, self.window_size, self.grid_size, shift,
                    self.mlp_ratio, self.ffn, self.dtype, name=f"layers_{j}")(h)
    return conv(h, x.shape[-1], self.dtype, "conv") + x


def reparameterize(params: Any) -> Any:
  """Params of an IPTV2 with ffn='rep' → params of the same model with ffn='dwconv'.

  Every Rep-LeFFN's 1×1 pairs fold into one 1×1 each and its depthwise 5×5 + 3×3 + 1×1 +
  identity branches into one depthwise 5×5 (`udit.reparameterize`); all other parameters
  are kept. Exact up to float rounding. Takes (possibly boxed) params, returns unboxed.
  """
  return _reparameterize_rep_ffn(params)


@MODELS.register("iptv2")
class IPTV2(nn.Module):
  """IPT-V2 for SR: x [B, H, W, 3] in [0, 1] → [B, H·scale, W·scale, 3] (float32, not
  clipped). Any H, W: the input is reflect-padded to multiples of lcm(window_size,
  grid_size) and the output cropped.

  Attributes (defaults = `IPTV2_SIZES['IPT-V2-light']`):
    scale: upscaling factor, 2, 3 or 4.
    embed_dim: feature width C; depths: layers per residual group (alternating FCSA,
      GGSA); num_heads: heads per group (FCSA splits channels, GGSA the width, by heads).
    window_size: FCSA window (shifted by half in every other FCSA layer).
    grid_size: GGSA grid G (G² tokens attend together, spaced H/G and W/G apart).
    mlp_ratio: FFN hidden width / embed_dim.
    ffn: 'rep' (training form, Rep-LeFFN), 'dwconv' (its inference form, see
      `reparameterize`) or 'mlp' (plain FFN, for ablations).
    img_range: the network sees (x − mean)·img_range.
    upsampler: 'pixelshuffledirect' (lightweight) or 'pixelshuffle' (classical).
    remat: recompute each layer in the backward pass.
    dtype: compute dtype name; parameters stay float32, softmaxes run in float32.
  """
  scale: int = 2
  embed_dim: int = 60
  depths: Tuple[int, ...] = (6, 6, 6, 6)
  num_heads: Tuple[int, ...] = (6, 6, 6, 6)
  window_size: int = 8
  grid_size: int = 8
  mlp_ratio: float = 1.5
  ffn: str = "rep"
  img_range: float = 1.0
  upsampler: str = "pixelshuffledirect"
  remat: bool = False
  dtype: str = "float32"

  def check(self, x: Optional[jax.Array] = None) -> None:
    """ValueError naming the field when the configuration (or x) cannot work."""
    check_scale(self.scale)
    if self.upsampler not in UPSAMPLERS:
      raise ValueError(f"upsampler={self.upsampler!r}: expected one of {UPSAMPLERS}")
    if self.ffn not in FFN_TYPES:
      raise ValueError(f"ffn={self.ffn!r}: expected one of {FFN_TYPES}")
    check_groups(self.embed_dim, self.depths, self.num_heads)
    for field in ("window_size", "grid_size"):
      if getattr(self, field) < 1:
        raise ValueError(f"{field}={getattr(self, field)}: expected a positive integer")
    if self.ffn == "rep" and int(self.embed_dim * self.mlp_ratio) % 2:
      raise ValueError(f"mlp_ratio={self.mlp_ratio}: ffn='rep' needs an even hidden width "
                       f"(embed_dim·mlp_ratio = {self.embed_dim * self.mlp_ratio})")
    if x is not None:
      check_image(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Super-resolves x: [B, H, W, 3] RGB in [0, 1]. `train` is accepted for the common SR
    interface; IPT-V2 has no dropout or batch norm, so it changes nothing."""
    del train
    self.check(x)
    dt, height, width = self.dtype, x.shape[1], x.shape[2]
    multiple = math.lcm(self.window_size, self.grid_size)
    x = normalize(pad_to_multiple(x.astype(jnp.float32), multiple), self.img_range)
    x = conv(x.astype(dt), self.embed_dim, dt, "conv_first")
    h = x
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      h = ResidualGroup(depth, heads, self.window_size, self.grid_size, self.mlp_ratio,
                        self.ffn, self.remat, dt, name=f"groups_{i}")(h)
    x = conv(layer_norm(dt, "norm")(h), self.embed_dim, dt, "conv_after_body") + x
    if self.upsampler == "pixelshuffle":
      x = nn.leaky_relu(conv(x, NUM_FEAT, dt, "conv_before_upsample"), 0.01)
      x = conv(Upsampler(self.scale, dt, name="upsample")(x), 3, dt, "conv_last")
    else:
      x = UpsampleOneStep(self.scale, 3, dt, name="upsample")(x)
    x = denormalize(x.astype(jnp.float32), self.img_range)
    return x[:, :height * self.scale, :width * self.scale]
