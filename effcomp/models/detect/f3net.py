"""F3-Net (Qian et al., ECCV 2020, "Thinking in Frequency: Face Forgery Detection by
Mining Frequency-aware Clues"): CNN streams on two frequency views of the image.

Follows the official code, yyk-wew/F3Net `models.py` (commit 01942ca, "Fixed bugs of
losing dc component"):
* `dct_matrix` = `DCT_mat` (L228–230): the orthonormal DCT-II matrix, D[k, n] =
  c_k cos((n + ½)πk / N), c_0 = √(1/N), else √(2/N); a map's DCT is D X Dᵀ.
* `band_mask` = `generate_filter` (L232–233): 1 where start ≤ i + j ≤ end (both ends
  included, so neighbouring bands share their boundary diagonal); `norm_sigma`
  (L235–236): 2σ(x) − 1. A filter is base mask + norm_sigma(learnable) (`Filter`,
  L10–37; learnable ~ N(0, 0.1²)), divided by the base's count with `norm=True`.
* FAD (`FAD_Head`, L41–69): the whole image's DCT per channel, four filters with edges
  (`fad_band_edges`, L51–54) low [0, N // 2.82], middle [N // 2.82, N // 2], high
  [N // 2, 2N], all [0, 2N] (Python float floor division: N = 299 gives 106.0 and 149),
  each inverse-DCT'd; outputs concatenated band-major → 12 channels.
* LFS (`LFS_Head`, L72–122): gray = 0.299R + 0.587G + 0.114B, rescaled (g + 1)·122.5
  (sic, L94), 10×10 windows at stride 2 with 4 zero pixels of padding (`nn.Unfold`, L83;
  ⌊(N − 2) / 2⌋ + 1 windows a side, 149 for 299, reshaped row-major to that grid and not
  resized, L119), each window's DCT, log10(|·| + 1e-15), M = 6 filters with edges
  (10·2 / M)·m … (10·2 / M)·(m + 1) (L86; `norm=True`, so a mean over the band when
  the learnable part is zero), summed per window → M channels.
* Classifier: the official streams are ImageNet Xceptions whose first conv takes the 12
  FAD channels at stride 2 (L163) or the M LFS channels at stride 1 (L178, the LFS map
  being already at stride 2); each stream's features → ReLU → global average pool
  (`_norm_fea`, L221–225), concatenated for 'Both' (L208–215), dropout 0.2 → fc (L148–150,
  L217–218). Here each stream is a small CNN (`widths` × conv3×3 → BN → ReLU, the first
  strided like the official first conv, the rest stride 2) — not the Xception. 'Mix'
  (train.py's mode list; `models.py` defines `MixBlock`, L316–358, but does not wire it
  in: "Haven't added into the whole network yet") inserts the official MixBlock between
  the two streams after the middle stage and the last, where the official helpers
  `fea_0_7` / `fea_8_12` (L283–314) split the Xception for it.

Input: x [B, H, W, 3] in [−1, 1] (the official loader, utils.py L55: img·2 − 1; here the
classification task with mean = std = 0.5), square; 'Mix' needs an even side (the two
streams' maps must match). Official heads have one logit (BCE); here `num_classes`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.models.cnn import batch_norm, conv
from effcomp.nn.dense import dense
from effcomp.nn.dropout import Dropout
from effcomp.registry import MODELS

MODES = ("Original", "FAD", "LFS", "Both", "Mix")
HIGHEST = jax.lax.Precision.HIGHEST
GRAY = (0.299, 0.587, 0.114)  # models.py L90
LFS_STRIDE, LFS_PADDING = 2, 4  # nn.Unfold(stride=2, padding=4), L83 (fixed there too)
LOG_EPS = 1e-15  # L116


def dct_matrix(n: int) -> np.ndarray:
  """`DCT_mat(n)`: [n, n] float64, row k = frequency, column = position; orthonormal."""
  k, pos = np.arange(n)[:, None], np.arange(n)[None, :]
  scale = np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
  return scale * np.cos((pos + 0.5) * np.pi * k / n)


def band_mask(start: float, end: float, size: int) -> np.ndarray:
  """`generate_filter`: [size, size] float32, 1 where start ≤ i + j ≤ end, else 0."""
  diag = np.add.outer(np.arange(size), np.arange(size))
  return ((diag >= start) & (diag <= end)).astype(np.float32)


def norm_sigma(x: jax.Array) -> jax.Array:
  return 2.0 * jax.nn.sigmoid(x) - 1.0


def fad_band_edges(size: int):
  """(start, end) of FAD's low, middle, high and all filters (models.py L51–54)."""
  return ((0, size // 2.82), (size // 2.82, size // 2), (size // 2, size * 2), (0, size * 2))


def lfs_band_edges(window: int, m: int):
  """(start, end) of LFS's M filters (models.py L86)."""
  return tuple((window * 2. / m * i, window * 2. / m * (i + 1)) for i in range(m))


def fad_bands(x: jax.Array, learnable: jax.Array | None = None) -> jax.Array:
  """FAD: x [B, N, N, C] → [B, N, N, 4C], band-major (low, middle, high, all), each
  Dᵀ (DCT(x) ⊙ filter) D; filter = base band mask (+ norm_sigma(learnable[k]) with
  learnable [4, N, N], row = vertical frequency)."""
  b, h, w, c = x.shape
  if h != w:
    raise ValueError(f"fad_bands: the image is {h}×{w}; FAD needs a square image")
  d = jnp.asarray(dct_matrix(h), jnp.float32)
  masks = jnp.asarray(np.stack([band_mask(s, e, h) for s, e in fad_band_edges(h)]))
  if learnable is not None:
    masks = masks + norm_sigma(learnable.astype(jnp.float32))
  freq = jnp.einsum("ih,bhwc,jw->bijc", d, x.astype(jnp.float32), d, precision=HIGHEST)
  bands = jnp.einsum("ih,bkijc,jw->bhwkc", d, freq[:, None] * masks[None, :, :, :, None], d,
                     precision=HIGHEST)
  return bands.reshape(b, h, w, 4 * c)


def lfs(x: jax.Array, learnable: jax.Array | None = None, window: int = 10,
        m: int = 6) -> jax.Array:
  """LFS: x [B, H, W, 3] in [−1, 1] → [B, H', W', M], H' = ⌊(H + 8 − window) / 2⌋ + 1:
  per 10×10 window of the (g + 1)·122.5 gray image (stride 2, zero padding 4), the
  filtered mean of log10(|DCT| + 1e-15) over each band; learnable [M, window, window]."""
  gray = jnp.tensordot(x.astype(jnp.float32), jnp.asarray(GRAY, jnp.float32), axes=[[-1], [0]])
  gray = (gray[..., None] + 1.0) * 122.5
  d = dct_matrix(window)
  # Window DCT coefficient (i, j) = Σ_uv D[i, u] D[j, v] patch[u, v]: a strided conv.
  kernels = np.einsum("iu,jv->uvij", d, d).reshape(window, window, 1, window * window)
  coeffs = jax.lax.conv_general_dilated(
      gray, jnp.asarray(kernels, jnp.float32), (LFS_STRIDE, LFS_STRIDE),
      ((LFS_PADDING, LFS_PADDING),) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=HIGHEST)
  logs = jnp.log10(jnp.abs(coeffs) + LOG_EPS)
  base = np.stack([band_mask(s, e, window) for s, e in lfs_band_edges(window, m)])
  filters = jnp.asarray(base)
  if learnable is not None:
    filters = filters + norm_sigma(learnable.astype(jnp.float32))
  filters = filters / jnp.asarray(base.sum(axis=(1, 2)))[:, None, None]  # `norm=True`
  return jnp.einsum("bhwq,mq->bhwm", logs, filters.reshape(m, -1), precision=HIGHEST)


def _conv1x1(features: int, dtype, name: str, groups: int = 1) -> nn.Conv:
  """PyTorch's `nn.Conv2d(c, c, 1, groups=…)` with its default kernel init (bias at 0)."""
  return nn.Conv(
      features, (1, 1), feature_group_count=groups, use_bias=True, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
          ("height", "width", "conv_in", "conv_out")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))


class MixBlock(nn.Module):
  """The official `MixBlock` (models.py L316–358): per channel, attention over rows from
  both streams' 1×1 queries/keys, energy[h, g] = Σ_w q_F[h, w] k_F[g, w] + q_L[h, w]
  k_L[g, w], softmax over g; each stream adds BN(depthwise 1×1(other · attention ·
  norm_sigma(γ))) with γ = 0 at init (the identity). The attention multiplies the other
  stream elementwise ([h, g] against [h, w]), as the official code does, so maps must be
  square. x_fad, x_lfs: [B, N, N, C] → the same."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_fad, x_lfs, train: bool = False):
    b, h, w, c = x_fad.shape
    if x_lfs.shape != x_fad.shape or h != w:
      raise ValueError(f"MixBlock: FAD map {x_fad.shape} and LFS map {x_lfs.shape}; "
                       "expected equal square maps (an even image side)")
    energy = (jnp.einsum("bhwc,bgwc->bhgc", _conv1x1(c, self.dtype, "fad_query")(x_fad),
                         _conv1x1(c, self.dtype, "fad_key")(x_fad))
              + jnp.einsum("bhwc,bgwc->bhgc", _conv1x1(c, self.dtype, "lfs_query")(x_lfs),
                           _conv1x1(c, self.dtype, "lfs_key")(x_lfs)))
    attention = jax.nn.softmax(energy, axis=2)
    gamma = lambda name: norm_sigma(self.param(
        name, nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (1,)))
    att_lfs = x_lfs * attention * gamma("lfs_gamma")
    y_fad = x_fad + batch_norm(train, self.dtype, "fad_bn")(
        _conv1x1(c, self.dtype, "fad_conv", c)(att_lfs))
    att_fad = x_fad * attention * gamma("fad_gamma")
    y_lfs = x_lfs + batch_norm(train, self.dtype, "lfs_bn")(
        _conv1x1(c, self.dtype, "lfs_conv", c)(att_fad))
    return y_fad, y_lfs


@MODELS.register("f3net")
class F3Net(nn.Module):
  """x: [B, N, N, 3] in [−1, 1] → logits [B, num_classes] float32 (module docstring).

  mode: 'Original' (a stream on RGB), 'FAD', 'LFS', 'Both' (both streams, pooled
  features concatenated), 'Mix' ('Both' with MixBlocks). widths: each stream's conv
  stages. lfs_window / lfs_m: LFS's window side and band count (official 10 and 6)."""
  num_classes: int = 2
  mode: str = "Both"
  widths: Sequence[int] = (32, 64)
  lfs_window: int = 10
  lfs_m: int = 6
  dropout: float = 0.2  # models.py L150
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.mode not in MODES:
      raise ValueError(f"f3net mode={self.mode!r}: expected one of {', '.join(MODES)}")
    x = x.astype(jnp.float32)
    size = x.shape[1]
    streams, first_stride = {}, {}
    if self.mode == "Original":
      streams["rgb"], first_stride["rgb"] = x, 2
    if self.mode in ("FAD", "Both", "Mix"):
      learnable = self.param("fad_filters", nn.with_logical_partitioning(
          nn.initializers.normal(0.1), (None, "height", "width")), (4, size, size))
      streams["fad"], first_stride["fad"] = fad_bands(x, learnable), 2
    if self.mode in ("LFS", "Both", "Mix"):
      s = self.lfs_window
      learnable = self.param("lfs_filters", nn.with_logical_partitioning(
          nn.initializers.normal(0.1), (None, "height", "width")), (self.lfs_m, s, s))
      streams["lfs"], first_stride["lfs"] = lfs(x, learnable, s, self.lfs_m), 1
    n = len(self.widths)
    mix_after = {max(n // 2 - 1, 0), n - 1} if self.mode == "Mix" else set()
    feats = {k: v.astype(self.dtype) for k, v in streams.items()}
    for stage, width in enumerate(self.widths):
      for k in feats:
        stride = first_stride[k] if stage == 0 else 2
        y = conv(width, self.dtype, f"{k}_conv_{stage}", strides=(stride, stride))(feats[k])
        feats[k] = nn.relu(batch_norm(train, self.dtype, f"{k}_bn_{stage}")(y))
      if stage in mix_after:
        feats["fad"], feats["lfs"] = MixBlock(self.dtype, name=f"mix_{stage}")(
            feats["fad"], feats["lfs"], train)
    pooled = jnp.concatenate([jnp.mean(nn.relu(f), axis=(1, 2)) for f in feats.values()], -1)
    pooled = Dropout(self.dropout, deterministic=not train)(pooled)
    return dense(self.num_classes, "embed", "classes", self.dtype, name="head")(pooled).astype(
        jnp.float32)
