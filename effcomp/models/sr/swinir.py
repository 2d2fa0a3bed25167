"""SwinIR: image super-resolution with residual groups of shifted-window transformer layers.

Liang et al., "SwinIR: Image Restoration Using Swin Transformer" (ICCVW 2021). Follows the
official JingyunLiang/SwinIR `models/network_swinir.py` (`window_partition`,
`window_reverse`, `WindowAttention`, `SwinTransformerBlock.calculate_mask`, `RSTB`,
`PatchEmbed`/`PatchUnEmbed`, `SwinIR.check_image_size` and `forward`):

  x ─reflect-pad H, W to multiples of window_size─ (x − mean)·img_range ─ conv_first ─┬─
    LN (patch embed) ─ len(depths) × RSTB ─ LN ─ conv_after_body ─⊕──────────────────┘
    ─ upsampler ─ ÷img_range + mean ─ crop to [H·scale, W·scale]

  RSTB: x + conv3×3(depth × SwinTransformerBlock(x)) (resi_connection '1conv');
  SwinTransformerBlock (STL): x += W-MSA(LN(x)), x += MLP(LN(x)) (GELU, mlp_ratio); odd
  blocks shift the map by −window_size/2 (cyclic roll) before window attention and by
  +window_size/2 after, with the attention mask computed for the actual (padded) size;
  W-MSA: multi-head attention inside each window plus a learned relative position bias
  B[h, i, j] = table[index[i, j], h], table [(2w−1)², heads].

With patch_size 1 (all SR configurations) PatchEmbed is a flatten + LayerNorm and
PatchUnEmbed a reshape; tokens stay an NHWC map [B, H, W, C] here, so both are just the
LayerNorm. upsampler 'pixelshuffledirect' (lightweight SR) is `UpsampleOneStep`;
'pixelshuffle' (classical SR) is conv → 64 + LeakyReLU(0.01), `Upsampler`, conv → 3.

Defaults = SwinIR-light (`main_test_swinir.py --task lightweight_sr`): embed_dim 60,
depths (6, 6, 6, 6), num_heads (6, 6, 6, 6), window_size 8, mlp_ratio 2, img_range 1:
910,152 / 918,267 / 929,628 parameters at ×2 / ×3 / ×4 (910 K / 930 K in later papers'
tables, e.g. MambaIRv2's; the SwinIR paper's Table 3 lists 878 K / 886 K / 897 K, which
leaves out the 24 relative position bias tables, 24·225·6 = 32,400 values).
Classical SwinIR: `SWINIR_CLASSICAL` (11.9 M at ×4, SwinIR README).

Deviations: the reference shrinks window_size to min(img_size) and disables shifting when
the *construction-time* img_size ≤ window_size; no SR configuration does that and the
window is fixed here. Reflect padding also works for pads larger than the image (numpy
'reflect' semantics), where torch raises. Parameter names follow the reference state
dict (`layers.i.residual_group.blocks.j.attn.qkv` ↔ layers_i/blocks_j/attn/qkv).
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.models.sr.common import (Upsampler, UpsampleOneStep, check_groups, check_image,
                                      check_scale, conv, denormalize, normalize)
from effcomp.nn import lean_backward
from effcomp.nn.dropout import Dropout
from effcomp.registry import MODELS

UPSAMPLERS = ("pixelshuffledirect", "pixelshuffle")
NUM_FEAT = 64  # Reference `num_feat`: the width of the classical 'pixelshuffle' head.
MASK_VALUE = -100.0  # Reference `calculate_mask`: added to logits of cross-region pairs.
INIT_STD = 0.02  # Reference `_init_weights`: Linear and bias-table init (timm trunc_normal_).
SWINIR_CLASSICAL = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8,
                        mlp_ratio=2.0, upsampler="pixelshuffle")


def window_partition(x: jax.Array, window_size: int) -> jax.Array:
  """[B, H, W, C] → [B·nW, w, w, C], windows row-major within each image (reference)."""
  b, h, w, c = x.shape
  ws = window_size
  x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, ws, ws, c)


def window_reverse(windows: jax.Array, window_size: int, height: int, width: int) -> jax.Array:
  """[B·nW, w, w, C] → [B, H, W, C], the inverse of `window_partition`."""
  ws, c = window_size, windows.shape[-1]
  x = windows.reshape(-1, height // ws, width // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, height, width, c)


def relative_position_index(window_size: int) -> np.ndarray:
  """[w², w²] index into the bias table: for tokens i = (r_i, c_i), j = (r_j, c_j) of a
  row-major w×w window, (r_i − r_j + w − 1)·(2w − 1) + (c_i − c_j + w − 1)."""
  ws = window_size
  rows, cols = np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")
  rows, cols = rows.reshape(-1), cols.reshape(-1)
  d_row = rows[:, None] - rows[None, :] + ws - 1
  d_col = cols[:, None] - cols[None, :] + ws - 1
  return d_row * (2 * ws - 1) + d_col


def shifted_window_mask(height: int, width: int, window_size: int, shift: int) -> np.ndarray:
  """[nW, w², w²] additive mask for windows of the map rolled by −shift (reference
  `calculate_mask`): the rolled map is split into regions [0, −w), [−w, −shift),
  [−shift, end) along each axis; pairs from different regions get `MASK_VALUE`, else 0.
  The last region holds the rows/columns that the cyclic roll wrapped around."""
  ws = window_size
  regions = np.zeros((1, height, width, 1), np.float32)
  cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
  for i, hs in enumerate(cuts):
    for j, wsl in enumerate(cuts):
      regions[:, hs, wsl, :] = 3 * i + j
  ids = window_partition(regions, ws).reshape(-1, ws * ws)
  return np.where(ids[:, None, :] != ids[:, :, None], MASK_VALUE, 0.0).astype(np.float32)


def pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
  """Reflect-pads [B, H, W, C] at the bottom and right to multiples of `multiple`
  (reference `check_image_size`, F.pad(..., 'reflect'))."""
  h, w = x.shape[1:3]
  pad_h, pad_w = (-h) % multiple, (-w) % multiple
  if not (pad_h or pad_w):
    return x
  return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")


def dense(features: int, axes: Tuple[Optional[str], Optional[str]], dtype: Any, name: str,
          use_bias: bool = True) -> nn.Dense:
  """Linear with kernel [in, out] named `axes`, N(0, 0.02²) kernel, zero bias (reference
  `_init_weights`; timm's trunc_normal_ cuts at ±2 absolute, i.e. 100σ: a plain normal)."""
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
  """torch `nn.LayerNorm` (eps 1e-5, affine, scale 1 and bias 0 at init)."""
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class WindowAttention(nn.Module):
  """W-MSA with relative position bias on windows x: [B·nW, w², C] → [B·nW, w², C].

  mask: None or [nW, w², w²] (added to the logits of each image's nW windows). qkv is one
  Linear C → 3C laid out [3, heads, head_dim] as the reference; scale head_dim^−½.
  """
  num_heads: int
  window_size: int
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    bw, n, c = x.shape
    h, ws = self.num_heads, self.window_size
    if c % h or n != ws * ws:
      raise ValueError(f"WindowAttention: {n} tokens of width {c}; expected {ws}² tokens and "
                       f"a width divisible by num_heads={h}")
    d = c // h
    qkv = dense(3 * c, ("embed", "heads"), self.dtype, "qkv", self.qkv_bias)(x)
    qkv = qkv.reshape(bw, n, 3, h, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B·nW, N, heads, d]
    table = self.param("relative_position_bias_table", nn.with_logical_partitioning(
        nn.initializers.normal(INIT_STD), (None, "heads")), ((2 * ws - 1) ** 2, h), jnp.float32)
    bias = table[relative_position_index(ws).reshape(-1)].reshape(n, n, h).transpose(2, 0, 1)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * d ** -0.5, k).astype(jnp.float32) + bias
    if mask is not None:
      nw = mask.shape[0]
      logits = logits.reshape(bw // nw, nw, h, n, n) + mask[None, :, None]
      logits = logits.reshape(bw, h, n, n)
    attn = lean_backward.softmax(logits).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(bw, n, c)
    return dense(c, ("heads", "embed"), self.dtype, "proj")(out)


def shifted_window_attention(h: jax.Array, num_heads: int, window_size: int, shift: int,
                             dtype: Any) -> jax.Array:
  """W-MSA (shift 0) or SW-MSA on h [B, H, W, C] (H, W multiples of window_size): roll the
  map by −shift, attend inside each window with the shifted-window mask, roll back. Call it
  inside a compact module: the attention becomes that module's submodule 'attn'."""
  _, height, width, c = h.shape
  ws = window_size
  if shift:
    h = jnp.roll(h, (-shift, -shift), axis=(1, 2))
  mask = jnp.asarray(shifted_window_mask(height, width, ws, shift)) if shift else None
  h = WindowAttention(num_heads, ws, dtype=dtype, name="attn")(
      window_partition(h, ws).reshape(-1, ws * ws, c), mask)
  h = window_reverse(h.reshape(-1, ws, ws, c), ws, height, width)
  return jnp.roll(h, (shift, shift), axis=(1, 2)) if shift else h


class SwinTransformerBlock(nn.Module):
  """One Swin layer on x: [B, H, W, C] (H, W multiples of window_size) → same shape.

  drop_path: stochastic-depth rate, applied (per sample, rng 'dropout') only with train.
  """
  num_heads: int
  window_size: int
  shift_size: int = 0
  mlp_ratio: float = 2.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b, height, width, c = x.shape
    ws, s = self.window_size, self.shift_size
    if height % ws or width % ws or not 0 <= s < ws:
      raise ValueError(f"SwinTransformerBlock: map {height}×{width}, window_size={ws}, "
                       f"shift_size={s}; expected multiples of the window and 0 ≤ shift < window")
    drop = Dropout(self.drop_path, broadcast_dims=(1, 2, 3), deterministic=not train)
    h = shifted_window_attention(layer_norm(self.dtype, "norm1")(x), self.num_heads, ws, s,
                                 self.dtype)
    x = x + drop(h)
    h = layer_norm(self.dtype, "norm2")(x)
    h = lean_backward.gelu(dense(int(c * self.mlp_ratio), ("embed", "mlp"), self.dtype,
                                 "fc1")(h), approximate=False)
    h = dense(c, ("mlp", "embed"), self.dtype, "fc2")(h)
    return x + drop(h)


class RSTB(nn.Module):
  """Residual Swin Transformer Block: x + conv3×3(blocks(x)) on [B, H, W, C]; block j is
  shifted by window_size // 2 when j is odd. drop_path: one rate per block."""
  depth: int
  num_heads: int
  window_size: int
  mlp_ratio: float = 2.0
  drop_path: Tuple[float, ...] = ()
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    # Argument 2 of the block's __call__ (self = 0) is the Python bool `train`.
    block_cls = nn.remat(SwinTransformerBlock, static_argnums=(2,)) if self.remat else \
        SwinTransformerBlock
    rates = self.drop_path or (0.0,) * self.depth
    h = x
    for j in range(self.depth):
      h = block_cls(self.num_heads, self.window_size, 0 if j % 2 == 0 else self.window_size // 2,
                    self.mlp_ratio, float(rates[j]), self.dtype, name=f"blocks_{j}")(h, train)
    return conv(h, x.shape[-1], self.dtype, "conv") + x


@MODELS.register("swinir")
class SwinIR(nn.Module):
  """SwinIR: x [B, H, W, 3] in [0, 1] → [B, H·scale, W·scale, 3] (float32, not clipped).

  Any H, W: the input is reflect-padded to multiples of window_size and the output cropped.

  Attributes (reference `SwinIR.__init__` names; defaults = SwinIR-light):
    scale: upscaling factor (reference `upscale`), 2, 3 or 4.
    embed_dim: token width; depths: layers per RSTB; num_heads: heads per RSTB.
    window_size: attention window (and padding multiple); mlp_ratio: MLP width / embed_dim.
    drop_path_rate: stochastic depth, rising linearly from 0 over all layers to this
      value (reference default 0.1); used only with train=True (rng 'dropout').
    patch_norm: LayerNorm after the patch embedding.
    img_range: the network sees (x − mean)·img_range.
    upsampler: 'pixelshuffledirect' (lightweight) or 'pixelshuffle' (classical).
    remat: recompute each Swin layer in the backward pass (reference use_checkpoint).
    dtype: compute dtype name; parameters stay float32, softmax runs in float32.
  """
  scale: int = 2
  embed_dim: int = 60
  depths: Tuple[int, ...] = (6, 6, 6, 6)
  num_heads: Tuple[int, ...] = (6, 6, 6, 6)
  window_size: int = 8
  mlp_ratio: float = 2.0
  drop_path_rate: float = 0.1
  patch_norm: bool = True
  img_range: float = 1.0
  upsampler: str = "pixelshuffledirect"
  remat: bool = False
  dtype: str = "float32"

  def check(self, x: Optional[jax.Array] = None) -> None:
    """ValueError naming the field when the configuration (or x) cannot work."""
    check_scale(self.scale)
    if self.upsampler not in UPSAMPLERS:
      raise ValueError(f"upsampler={self.upsampler!r}: expected one of {UPSAMPLERS}")
    check_groups(self.embed_dim, self.depths, self.num_heads)
    if self.window_size < 1:
      raise ValueError(f"window_size={self.window_size}: expected a positive integer")
    if x is not None:
      check_image(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Super-resolves x: [B, H, W, 3] RGB in [0, 1]; train enables stochastic depth."""
    self.check(x)
    dt, height, width = self.dtype, x.shape[1], x.shape[2]
    x = normalize(pad_to_multiple(x.astype(jnp.float32), self.window_size), self.img_range)
    x = conv(x.astype(dt), self.embed_dim, dt, "conv_first")
    h = layer_norm(dt, "patch_embed_norm")(x) if self.patch_norm else x
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    start = 0
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      h = RSTB(depth, heads, self.window_size, self.mlp_ratio,
               tuple(float(r) for r in rates[start:start + depth]), self.remat, dt,
               name=f"layers_{i}")(h, train)
      start += depth
    h = layer_norm(dt, "norm")(h)
    x = conv(h, self.embed_dim, dt, "conv_after_body") + x
    if self.upsampler == "pixelshuffle":
      x = nn.leaky_relu(conv(x, NUM_FEAT, dt, "conv_before_upsample"), 0.01)
      x = conv(Upsampler(self.scale, dt, name="upsample")(x), 3, dt, "conv_last")
    else:
      x = UpsampleOneStep(self.scale, 3, dt, name="upsample")(x)
    x = denormalize(x.astype(jnp.float32), self.img_range)
    return x[:, :height * self.scale, :width * self.scale]
