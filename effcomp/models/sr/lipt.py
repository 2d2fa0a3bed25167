"""LIPT: latency-aware image processing transformer for super-resolution.

Qiao, Li, Xie et al., "LIPT: Latency-aware Image Processing Transformer" (arXiv 2404.06075;
IEEE TIP 2025). Follows the official Lucien66/LIPT code: `models/lipt_network.py` (`LIPT`),
`models/lipt_block.py` (`LIPTB`, `NVSM_SA`, `MASK`, `HRM`, `MeanShift`),
`models/diversebranchblock.py` + `models/dbb_transforms.py` (the re-parameterizable conv with
its Sobel branches, `RepSRB`) and `config/{tiny,light,base}x2.yml`. An ELAN-style network:

  x ─reflect-pad H, W to multiples of window_size─ (x − mean)·rgb_range ─ head conv3×3 ─┬─
    blocks ─⊕───────────────────────────────────────────────────────────────────────────┘
    ─ tail: conv3×3 → 3·scale², pixel shuffle ─ ÷rgb_range + mean ─ crop

  LIPT block (`LIPTB`): 1 + shared_depth layers, each
    x += HRM_a(x); x += HRM_c(x); x += NVSM-SA(x); x += HRM_b(x)
  (no LayerNorm, no MLP: the memory-bound operators are replaced by 3×3 convolutions);
  only the first layer computes attention maps, the others reuse them on their own values.
  HRM: RepConv3×3 (C → C·expand_ratio) → ReLU → RepConv3×3 (→ C).
  NVSM-SA: 1×1 conv (+BN) C → 2C, split into two halves of C channels = [q | v] (C/2 each);
    half 0 attends densely inside p×p windows (the paper's DLWA), half 1 inside the sparse
    2p×2p windows below (SLWA);
    attention is softmax(q·qᵀ)·v (one shared query/key projection, no scaling, no position
    bias, as ELAN); halves concatenated, 1×1 conv C → C. Blocks with odd index roll the map
    by −p/2 before and +p/2 after (cyclic, no mask).

Non-volatile sparse mask (`MASK('sparse')`): the large window of the p×p window at
(i·p, j·p) is the 2p×2p square starting there (the map wraps around: the reference pads by
copying the first p rows and columns to the end). Along each axis a fixed mask keeps the
even offsets of its first half and the odd offsets of its second half (`sparse_window_mask`;
p = 8: 1010101001010101), p² of the (2p)² tokens: the same attention cost as the dense
window with twice its reach. Over all windows each pixel is sampled exactly once, so the
sampling is a fixed row and column permutation of the map (`sparse_permutation`): gather,
window attention, scatter back.

HRM RepConv (`DiverseBranchBlock`): during training the sum of conv3×3+BN; conv1×1+BN;
conv1×1 → BN (padded with its zero-input value) → 3×3 average → BN; identity-initialized
conv1×1 → BN (padded) → conv3×3 (valid) → BN; and two isotropic Sobel branches (Sobel-x,
Sobel-y with √2 centre weights): conv1×1 → depthwise (per-channel scale × fixed mask) + bias.
All are linear with BN's running statistics, so `fuse` folds them into one conv3×3 with bias
(reference `switch_to_deploy`), and each NVSM-SA's conv1×1+BN into a conv1×1.

Sizes (`LIPT_SIZES`; parameters counted in the fused, inference form, as the paper):
  'small' = `lightx2.yml` (64 channels, depth 10 = 5 blocks of 2 layers, window 8), the
    default: 2,328,396 at ×2, the paper's LIPT-Small (2.33 M, Table 2; training form
    5,828,556).
  'small_x34': the paper lists LIPT-Small at 2.80 / 2.81 M for ×3 / ×4; no config is
    released, and one more block (depth 12) gives exactly 2,800,987 / 2,813,104.
  'tiny' = `tinyx2.yml` (24 channels, depth 8): 265,260 at ×2, *not* the paper's 0.36 M
    for LIPT-Tiny (28 channels would give 360,092); kept as released.
  'base' = `basex2.yml` (144 channels, 22 unshared layers, window 16): 26.05 M at ×2.

Deviations from the reference code, all deliberate:
  * The sparse half's outputs are scattered back to the pixels they were sampled from. The
    reference leaves them in sampled order (window (i, j) receives the outputs of its large
    window's tokens, so a pixel's output comes from a query up to p rows and p columns away)
    and its attention-sharing layers apply the sparse maps to *unsampled* values.
    reference_order=True reproduces both.
  * `RepSRB`'s 1×1 bias b0 is dropped: the border is padded with b0 and the Sobel masks sum to
    zero, so b0 cancels exactly (zero gradient in the reference).
  * BatchNorm running variance is updated with the biased batch variance (flax) where torch
    uses the unbiased one; momentum 0.9 = torch's 0.1.
  * Reflect padding to multiples of p as the reference (`check_image_size`); the large windows
    overlap with stride p and wrap around, so they need no larger multiple.

Parameter names ↔ the reference state dict: head ↔ head.0; body_i ↔ body.i;
hrm_{a,b,c}_j ↔ modules_hrm_{a,b,c}.lcs_{a,b,c}_j; nvsm_sa_j ↔ modules_nvsm_sa.smmsa_j;
inside a RepConv '.' → '_' (dbb_avg.bn.bn ↔ dbb_avg_bn, dbb_sobelx.k0 ↔ dbb_sobelx_conv0,
fused dbb_reparam ↔ dbb_reparam); project_inp.0/.1 ↔ project_inp_conv/_bn (fused:
project_inp); tail.0 ↔ tail/conv. Torch conv weights [O, I, kh, kw] port as
`permute(2, 3, 1, 0)`.
"""

import math
from typing import Any, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.models.sr.common import (CONV_AXES, UpsampleOneStep, check_image, check_scale,
                                      conv, denormalize, normalize)
from effcomp.models.sr.swinir import pad_to_multiple, window_partition, window_reverse
from effcomp.nn.depthwise_conv import depthwise_conv2d
from effcomp.registry import MODELS

LIPT_SIZES = {
    "tiny": dict(channels=24, depth=8),
    "small": dict(channels=64, depth=10),
    "small_x34": dict(channels=64, depth=12),
    "base": dict(channels=144, depth=22, shared_depth=0, window_size=16),
}
BN_EPS = 1e-5  # torch BatchNorm2d default.
SOBEL_INIT_STD = 1e-3  # Reference `RepSRB`: scale and bias ~ N(0, 1e-3²).
_R2 = math.sqrt(2.0)
# Reference `RepSRB` masks ('sx', 'sy'): isotropic Sobel, [row, column].
SOBEL_X = np.array([[1, 0, -1], [_R2, 0, -_R2], [1, 0, -1]], np.float32)
SOBEL_Y = SOBEL_X.T.copy()


def sparse_window_mask(window_size: int) -> np.ndarray:
  """[2p] bool: the offsets a large window keeps along one axis (reference `MASK('sparse')`):
  even offsets in [0, p), odd offsets in [p, 2p); p of 2p, spanning the whole 2p."""
  p = window_size
  if p < 2 or p % 2:
    raise ValueError(f"window_size={p!r}: expected an even integer ≥ 2")
  offsets = np.arange(2 * p)
  return np.where(offsets < p, offsets % 2 == 0, offsets % 2 == 1)


def sparse_permutation(size: int, window_size: int) -> np.ndarray:
  """[size] int: row (or column) k·p + r of the sparse map is row (k·p + o_r) mod size of
  the map, o = the kept offsets of `sparse_window_mask`. A permutation: window k's even rows
  come from large window k, its odd rows from large window k − 1."""
  if size % window_size:
    raise ValueError(f"size={size}: expected a multiple of window_size={window_size}")
  offsets = np.flatnonzero(sparse_window_mask(window_size))
  starts = np.arange(0, size, window_size)
  return ((starts[:, None] + offsets[None, :]) % size).reshape(-1)


def _sparse_axis(x: jax.Array, axis: int, p: int, inverse: bool = False) -> jax.Array:
  """`sparse_permutation` (or its inverse) along `axis` by slices, a roll and a concat
  instead of a gather: with the axis as [window k, pair m, parity], sparse window k is
  [even rows of window k | odd rows of window k + 1]."""
  shape, n = x.shape, x.shape[axis] // p
  if not inverse:
    y = x.reshape(shape[:axis] + (n, p // 2, 2) + shape[axis + 1:])
    even = jax.lax.index_in_dim(y, 0, axis + 2, keepdims=False)
    odd = jnp.roll(jax.lax.index_in_dim(y, 1, axis + 2, keepdims=False), -1, axis=axis)
    return jnp.concatenate([even, odd], axis=axis + 1).reshape(shape)
  y = x.reshape(shape[:axis] + (n, 2, p // 2) + shape[axis + 1:])
  even = jax.lax.index_in_dim(y, 0, axis + 1, keepdims=False)
  odd = jnp.roll(jax.lax.index_in_dim(y, 1, axis + 1, keepdims=False), 1, axis=axis)
  return jnp.stack([even, odd], axis=axis + 2).reshape(shape)


def to_sparse(x: jax.Array, window_size: int) -> jax.Array:
  """[B, H, W, C] (H, W multiples of p) → the same tokens permuted so that p×p window
  (i, j) holds the sampled tokens of the large window at (i·p, j·p): x[:, π_H][:, :, π_W],
  π = `sparse_permutation`."""
  return _sparse_axis(_sparse_axis(x, 1, window_size), 2, window_size)


def from_sparse(x: jax.Array, window_size: int) -> jax.Array:
  """The inverse of `to_sparse`: each token back to the pixel it was sampled from."""
  return _sparse_axis(_sparse_axis(x, 1, window_size, True), 2, window_size, True)


def window_attention(q: jax.Array, v: jax.Array, window_size: int,
                     attn: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
  """softmax(q·qᵀ)·v inside p×p windows (reference `NVSM_SA.forward`, ELAN's shared q/k).

  q: [B, H, W, d] (unused when attn is given), v: [B, H, W, e]; attn: None or precomputed
  [B·nW, p², p²]. Returns (y [B, H, W, e], attn)."""
  p, (b, h, w, e) = window_size, v.shape
  if attn is None:
    qw = window_partition(q, p).reshape(-1, p * p, q.shape[-1])
    logits = jnp.einsum("nqd,nkd->nqk", qw, qw).astype(jnp.float32)
    attn = jax.nn.softmax(logits, axis=-1)
  vw = window_partition(v, p).reshape(-1, p * p, e)
  y = jnp.einsum("nqk,nke->nqe", attn.astype(v.dtype), vw)
  return window_reverse(y.reshape(-1, p, p, e), p, h, w), attn


def nvsm_attention(q: Optional[jax.Array], v: jax.Array, window_size: int, sparse: bool,
                   shift: int = 0, attn: Optional[jax.Array] = None,
                   reference_order: bool = False) -> Tuple[jax.Array, jax.Array]:
  """One NVSM-SA half on [B, H, W, ·] maps (H, W multiples of p): roll by −shift, (sparse)
  gather, window attention, scatter back, roll by +shift. reference_order: the reference's
  layout (no scatter; with attn given, no gather either). Returns (y, attn)."""
  p = window_size
  maps = [t for t in (q, v) if t is not None]
  if shift:
    maps = [jnp.roll(t, (-shift, -shift), axis=(1, 2)) for t in maps]
  if sparse and not (reference_order and attn is not None):
    maps = [to_sparse(t, p) for t in maps]
  y, attn = window_attention(maps[0], maps[-1], p, attn)
  if sparse and not reference_order:
    y = from_sparse(y, p)
  if shift:
    y = jnp.roll(y, (shift, shift), axis=(1, 2))
  return y, attn


def _conv(x: jax.Array, features: int, kernel: int, dtype: Any, name: str,
          padding: str = "SAME", kernel_init=None) -> jax.Array:
  """A bias-free k×k conv (the DBB branches), torch `nn.Conv2d` kernel init as `common.conv`."""
  init = kernel_init or nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
  return nn.Conv(features, (kernel, kernel), padding=padding, use_bias=False, dtype=dtype,
                 name=name, kernel_init=nn.with_logical_partitioning(init, CONV_AXES))(x)


def _batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=BN_EPS, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


def _bn_and_pad(x: jax.Array, train: bool, dtype: Any, name: str) -> jax.Array:
  """BN, then a 1-pixel border of BN's running-statistics value at 0 (reference
  `BNAndPadLayer`, scale and bias detached there): equals BN of the zero-padded input."""
  bn = _batch_norm(train, dtype, name)
  y = bn(x)
  params, stats = nn.unbox(bn.variables["params"]), bn.variables["batch_stats"]
  t = jax.lax.stop_gradient(params["scale"]) / jnp.sqrt(stats["var"] + BN_EPS)
  border = (jax.lax.stop_gradient(params["bias"]) - stats["mean"] * t).astype(y.dtype)
  return jnp.pad(y - border, ((0, 0), (1, 1), (1, 1), (0, 0))) + border


class RepConv(nn.Module):
  """HRM's re-parameterizable conv3×3 (reference `DiverseBranchBlock` with `RepSRB`
  Sobel branches) [B, H, W, I] → [B, H, W, features]; fused: the single conv3×3 + bias."""
  features: int
  fused: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.fused:
      return conv(x, self.features, self.dtype, "dbb_reparam")
    f, dt = self.features, self.dtype
    bn = lambda h, name: _batch_norm(train, dt, name)(h)  # noqa: E731
    out = bn(_conv(x, f, 3, dt, "dbb_origin_conv"), "dbb_origin_bn")
    out += bn(_conv(x, f, 1, dt, "dbb_1x1_conv"), "dbb_1x1_bn")
    h = _bn_and_pad(_conv(x, f, 1, dt, "dbb_avg_conv"), train, dt, "dbb_avg_bn")
    out += bn(nn.avg_pool(h, (3, 3), padding="VALID"), "dbb_avg_avgbn")
    # IdentityBasedConv1x1: (W + I)·x with W zero-initialized.
    h = _conv(x, x.shape[-1], 1, dt, "dbb_1x1_kxk_idconv1",
              kernel_init=nn.initializers.zeros) + x
    h = _bn_and_pad(h, train, dt, "dbb_1x1_kxk_bn1")
    out += bn(_conv(h, f, 3, dt, "dbb_1x1_kxk_conv2", padding="VALID"), "dbb_1x1_kxk_bn2")
    for name, mask in (("dbb_sobelx", SOBEL_X), ("dbb_sobely", SOBEL_Y)):
      init = nn.with_logical_partitioning(nn.initializers.normal(SOBEL_INIT_STD), ("conv_out",))
      scale = self.param(f"{name}_scale", init, (f,), jnp.float32)
      bias = self.param(f"{name}_bias", init, (f,), jnp.float32)
      kernel = (jnp.asarray(mask)[:, :, None, None] * scale).astype(dt)
      out += depthwise_conv2d(_conv(x, f, 1, dt, f"{name}_conv0"), kernel) + bias.astype(dt)
    return out


class HRM(nn.Module):
  """RepConv (C → C·expand_ratio) → ReLU → RepConv (→ C) on [B, H, W, C] (reference `HRM`)."""
  expand_ratio: int = 1
  fused: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    h = nn.relu(RepConv(c * self.expand_ratio, self.fused, self.dtype, name="conv0")(x, train))
    return RepConv(c, self.fused, self.dtype, name="conv1")(h, train)


class NVSMSA(nn.Module):
  """NVSM-SA on x [B, H, W, C] (reference `NVSM_SA`). With attn=None it computes both halves'
  attention maps (projection C → 2C: q and v); given the maps of an earlier layer it only
  projects values (C → C). Returns (y [B, H, W, C], (attn_dense, attn_sparse))."""
  window_size: int = 8
  shift: int = 0
  fused: bool = False
  reference_order: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, attn: Optional[Tuple[jax.Array, jax.Array]] = None,
               train: bool = False) -> Tuple[jax.Array, Tuple[jax.Array, jax.Array]]:
    c, dt = x.shape[-1], self.dtype
    width = c if attn is None else c // 2  # Per half: [q | v] or v alone.
    if self.fused:
      h = conv(x, 2 * width, dt, "project_inp", kernel=1)
    else:
      h = _batch_norm(train, dt, "project_inp_bn")(
          conv(x, 2 * width, dt, "project_inp_conv", kernel=1))
    ys, maps = [], []
    for idx in range(2):
      part = h[..., idx * width:(idx + 1) * width]
      q, v = (part[..., :c // 2], part[..., c // 2:]) if attn is None else (None, part)
      y, a = nvsm_attention(q, v, self.window_size, sparse=idx == 1, shift=self.shift,
                            attn=None if attn is None else attn[idx],
                            reference_order=self.reference_order)
      ys.append(y)
      maps.append(a)
    return conv(jnp.concatenate(ys, axis=-1), c, dt, "project_out", kernel=1), tuple(maps)


class LIPTBlock(nn.Module):
  """A LIPT block on [B, H, W, C]: 1 + shared_depth layers of HRM, HRM, NVSM-SA, HRM with
  residuals; layers after the first reuse its attention maps (reference `LIPTB`)."""
  shared_depth: int = 1
  window_size: int = 8
  shift: int = 0
  expand_ratio: int = 1
  fused: bool = False
  reference_order: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    hrm = lambda name: HRM(self.expand_ratio, self.fused, self.dtype, name=name)  # noqa: E731
    attn = None
    for j in range(1 + self.shared_depth):
      x = hrm(f"hrm_a_{j}")(x, train) + x
      x = hrm(f"hrm_c_{j}")(x, train) + x
      y, attn = NVSMSA(self.window_size, self.shift, self.fused, self.reference_order,
                       self.dtype, name=f"nvsm_sa_{j}")(x, attn, train)
      x = y + x
      x = hrm(f"hrm_b_{j}")(x, train) + x
    return x


@MODELS.register("lipt")
class LIPT(nn.Module):
  """LIPT: x [B, H, W, 3] in [0, 1] → [B, H·scale, W·scale, 3] (float32, not clipped).

  Any H, W: the input is reflect-padded to multiples of window_size and the output cropped.
  With fused=False and train=True BatchNorm uses batch statistics: apply with
  mutable=['batch_stats']. `fuse` maps (params, batch_stats) to the fused=True model.

  Attributes (reference `args` in brackets; defaults = LIPT-Small, `lightx2.yml`):
    scale: upscaling factor, 2, 3 or 4.
    channels: feature width [c_elan].
    depth: layers in all [m_elan]; blocks = depth / (1 + shared_depth).
    shared_depth: layers per block that reuse the first layer's attention [n_share].
    expand_ratio: HRM hidden width / channels [r_expand].
    window_size: dense window p; the sparse window spans 2p [window_sizes].
    rgb_range: the network sees (x − mean)·rgb_range (reference MeanShift).
    fused: inference form (every RepConv and conv+BN folded), parameters from `fuse`.
    reference_order: keep the reference's sampled-order sparse outputs (module docstring).
    remat: recompute each block in the backward pass.
    dtype: compute dtype name; parameters stay float32, softmax runs in float32.
  """
  scale: int = 2
  channels: int = 64
  depth: int = 10
  shared_depth: int = 1
  expand_ratio: int = 1
  window_size: int = 8
  rgb_range: float = 255.0
  fused: bool = False
  reference_order: bool = False
  remat: bool = False
  dtype: str = "float32"

  def check(self, x: Optional[jax.Array] = None) -> None:
    """ValueError naming the field when the configuration (or x) cannot work."""
    check_scale(self.scale)
    sparse_window_mask(self.window_size)
    if self.channels < 2 or self.channels % 2:
      raise ValueError(f"channels={self.channels!r}: expected an even integer ≥ 2 "
                       "(each attention half splits into q and v)")
    if self.shared_depth < 0 or self.depth < 1 or self.depth % (1 + self.shared_depth):
      raise ValueError(f"depth={self.depth!r}, shared_depth={self.shared_depth!r}: expected "
                       "depth a positive multiple of 1 + shared_depth")
    if self.expand_ratio < 1:
      raise ValueError(f"expand_ratio={self.expand_ratio!r}: expected a positive integer")
    if x is not None:
      check_image(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Super-resolves x: [B, H, W, 3] RGB in [0, 1]; train: BN on batch statistics."""
    self.check(x)
    dt, height, width = self.dtype, x.shape[1], x.shape[2]
    x = normalize(pad_to_multiple(x.astype(jnp.float32), self.window_size), self.rgb_range)
    x = conv(x.astype(dt), self.channels, dt, "head")
    # Argument 2 of the block's __call__ (self = 0) is the Python bool `train`.
    block_cls = nn.remat(LIPTBlock, static_argnums=(2,)) if self.remat else LIPTBlock
    h = x
    for i in range(self.depth // (1 + self.shared_depth)):
      h = block_cls(self.shared_depth, self.window_size, (i % 2) * (self.window_size // 2),
                    self.expand_ratio, self.fused, self.reference_order, dt,
                    name=f"body_{i}")(h, train)
    x = UpsampleOneStep(self.scale, 3, dt, name="tail")(h + x)
    x = denormalize(x.astype(jnp.float32), self.rgb_range)
    return x[:, :height * self.scale, :width * self.scale]


def _fold_bn(params, stats) -> Tuple[jax.Array, jax.Array]:
  """(t, c) with BN(h) = t·h + c under the running statistics (reference `transI_fusebn`)."""
  t = params["scale"] / jnp.sqrt(stats["var"] + BN_EPS)
  return t, params["bias"] - stats["mean"] * t


def fuse_rep_conv(params, stats) -> dict:
  """The `RepConv` branches (params, batch_stats) → {'dbb_reparam': {kernel [3, 3, I, O],
  bias [O]}} computing the same function (reference `get_equivalent_kernel_bias`)."""
  t, c = _fold_bn(params["dbb_origin_bn"], stats["dbb_origin_bn"])
  kernel, bias = params["dbb_origin_conv"]["kernel"] * t, c
  t, c = _fold_bn(params["dbb_1x1_bn"], stats["dbb_1x1_bn"])
  kernel += jnp.pad(params["dbb_1x1_conv"]["kernel"] * t, ((1, 1), (1, 1), (0, 0), (0, 0)))
  bias += c
  # 1×1 → BN (padded with its value at 0) → 3×3 mean → BN: a 3×3 kernel of equal taps.
  t1, c1 = _fold_bn(params["dbb_avg_bn"], stats["dbb_avg_bn"])
  t2, c2 = _fold_bn(params["dbb_avg_avgbn"], stats["dbb_avg_avgbn"])
  kernel += params["dbb_avg_conv"]["kernel"] * (t1 * t2 / 9.0)
  bias += t2 * c1 + c2
  # (W + I) → BN (padded) → 3×3 valid → BN (reference transIII_1x1_kxk).
  w1 = params["dbb_1x1_kxk_idconv1"]["kernel"][0, 0]
  w1 = w1 + jnp.eye(w1.shape[0], dtype=w1.dtype)
  t1, c1 = _fold_bn(params["dbb_1x1_kxk_bn1"], stats["dbb_1x1_kxk_bn1"])
  t2, c2 = _fold_bn(params["dbb_1x1_kxk_bn2"], stats["dbb_1x1_kxk_bn2"])
  k2 = params["dbb_1x1_kxk_conv2"]["kernel"]
  kernel += jnp.einsum("im,m,hwmo->hwio", w1, t1, k2) * t2
  bias += t2 * jnp.einsum("m,hwmo->o", c1, k2) + c2
  # 1×1 → depthwise scale·mask + bias (reference transVII_mask).
  for name, mask in (("dbb_sobelx", SOBEL_X), ("dbb_sobely", SOBEL_Y)):
    w0 = params[f"{name}_conv0"]["kernel"][0, 0]
    kernel += jnp.asarray(mask)[:, :, None, None] * w0 * params[f"{name}_scale"]
    bias += params[f"{name}_bias"]
  return {"dbb_reparam": {"kernel": kernel, "bias": bias}}


def fuse_conv_bn(conv_params, bn_params, bn_stats) -> dict:
  """conv (kernel, bias) followed by BN → one conv {kernel, bias}."""
  t, c = _fold_bn(bn_params, bn_stats)
  return {"kernel": conv_params["kernel"] * t, "bias": conv_params["bias"] * t + c}


def fuse(params, batch_stats) -> dict:
  """Training-form LIPT (params, batch_stats) → params of the same model with fused=True:
  every RepConv becomes its `dbb_reparam` conv and every NVSM-SA conv+BN one conv, computing
  the same function as the training form in inference mode (train=False). Boxed or unboxed
  trees; returns plain unboxed dicts."""
  def walk(p, s):
    if "dbb_origin_conv" in p:
      return fuse_rep_conv(p, s)
    out = {}
    for k, v in p.items():
      if k == "project_inp_conv":
        out["project_inp"] = fuse_conv_bn(v, p["project_inp_bn"], s["project_inp_bn"])
      elif k != "project_inp_bn":
        out[k] = walk(v, s.get(k, {})) if isinstance(v, dict) else v
    return out
  return walk(flax.core.unfreeze(nn.unbox(params)), flax.core.unfreeze(batch_stats))
