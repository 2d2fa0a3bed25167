"""DiT-SR: a U-shaped diffusion transformer with isotropic stages and frequency-adaptive
timestep conditioning (AdaFM), the denoiser of residual-shifting diffusion SR.

Cheng, Yu, Tu et al., "Effective Diffusion Transformer Architecture for Image
Super-Resolution" (AAAI 2025). The official repository (kunncheng/DiT-SR) holds only its
README in our snapshot; the code followed is its published form as carried by a public
fork (MateoBodon/DiT-SR `models/unet.py` `DiTSRModel`, `models/swin_transformer.py`
`SwinTransformerBlock_AdaFM`, `BasicLayer`; the fork's own 'FIX' edits — bilinear resizing
of the LR condition, adaptive windows — are not followed except where noted), built on
ResShift's `UNetModelSwin` (zsyOAOA/ResShift `models/unet.py`). Recipe:
configs/realsr_DiT.yaml (model_channels 160, channel_mult (1, 2, 2, 4), attention at every
level, swin_depth 6, swin_embed_dim 192, head width 32, window 8, mlp_ratio 4, dropout 0.1).

  [x_t ‖ lq] ─conv3×3─┬─ level 0: Stage ─ down ─ level 1: Stage ─ down … ─ middle Stage
                      └─ skips ────────────────────────────────────────────────┐
  per level, deepest first, twice: concat skip ─ conv3×3 ─ Stage (depth, then 1) [─ up]
  ─ GroupNorm ─ SiLU ─ conv3×3 → out_channels

  Stage ('isotropic'): conv1×1 ch → swin_embed_dim (the same width at every level, the
  paper's isotropic design), swin_depth blocks, conv1×1 back to ch (reference BasicLayer
  with patch_size 1 and no patch norm). Block (reference SwinTransformerBlock_AdaFM):
    h = AdaFM(GroupNorm(x), s_msa); x += W-MSA / SW-MSA(h)  (odd blocks shifted by w/2)
    h = AdaFM(GroupNorm(x), s_mlp); x += MLP(h)              (1×1 convs, GELU)
  AdaFM (`adafm`): the map is cut into p×p patches (p = fft_patch_size, 8), each patch's
  2-D real DFT is multiplied by a timestep-dependent per-frequency scale s [p, p//2+1]
  (shared by channels and patches), and transformed back. s = SiLU → Linear of the time
  embedding, one Linear per AdaFM (`adafm_msa`, `adafm_mlp`: reference `adaLN_scale_msa`,
  `adaLN_scale_mlp`).

Deviations:
  * s = 1 + Linear(·) with the Linear zero-initialized, so every AdaFM starts as the
    identity (irfft2(rfft2(x)) = x); the reference uses the raw output of a default
    torch Linear, which starts near 0 and suppresses every frequency at initialization.
    Both span the same functions (the bias absorbs the 1: `effcomp.convert.ditsr` reads
    an official bias b as b − 1).
  * conditioning='adaln' is the paper's ablation baseline: the same block with
    GroupNorm(x)·(1 + scale) + shift per channel (scale, shift from a zero-initialized
    Linear, as DiT's adaLN without its gate); 'none' is ResShift's unconditioned Swin
    block. The reference's AdaLN block class is not in the published code.
  * Windows and the FFT patch shrink to the map's side where it is smaller (reference
    SwinTransformerBlock: window = min(resolution) and no shift when resolution ≤ window).
    The reference decides this once, for the side its level has at the construction-time
    `image_size` (the training crop), and keeps it for larger inputs (ResShift's and
    DiT-SR's inference scripts chop at 512² latents, by default, for a model built for
    64²: the deepest level, 8² at 64², never shifts); effcomp decides it from the input's side
    unless `image_size` is set (a compatibility field; converted checkpoints set it), with
    which a level's side counts as at most image_size / 2^level.
  * The shifted windows' mask is Swin's (`window_mask='swin'`): tokens that the cyclic
    shift brought together from opposite borders, along rows or columns, do not attend to
    each other. The reference's `calculate_mask` (ResShift's, kept by DiT-SR; Swin's
    ported to NCHW) fills `img_mask[:, h, w, :]` of a [1, 1, H, W] tensor, so only the last
    row slice lands and the column slices split the rows, and it flattens each window
    column-major (`permute(0, 2, 3, 1)`) where the attention flattens row-major: token
    (r, c) of window (i, j) gets the region of row i·w + c. In effect only the bottom row
    of windows is masked, between its first w − shift and last shift columns. The released
    checkpoints were trained with that mask; `window_mask='reference'`
    (`reference_window_mask`) computes it (a compatibility field).
  * The LR condition must have x's height and width (lq_size = image_size, the recipe's
    case); the reference's strided feature extractor for larger LR is not implemented.
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.models.dit.dit import timestep_embedding
from effcomp.models.sr import swinir
from effcomp.models.sr.common import conv
from effcomp.models.sr.swinir import dense, shifted_window_attention
from effcomp.nn import layer_scan, lean_backward
from effcomp.nn.dropout import Dropout
from effcomp.registry import MODELS

CONDITIONINGS = ("adafm", "adaln", "none")
WINDOW_MASKS = ("swin", "reference")


def _dft_matrices(p: int):
  """Complex DFT matrices for an rfft2 / irfft2 pair on p×p patches (numpy's conventions):
  forward rows exp(−2πi·k·a/p) [p, p] and exp(−2πi·l·b/p) [p//2+1, p]; inverse columns
  exp(+2πi·k·a/p)/p [p, p] and w_l·exp(+2πi·l·b/p)/p [p//2+1, p], w = 1 at l = 0 and at
  l = p/2 (p even), else 2 (the Hermitian half counted twice; taking the real part drops
  the imaginary parts of those two bins, as irfft does)."""
  k, a = np.arange(p), np.arange(p)
  lh = np.arange(p // 2 + 1)
  fwd_h = np.exp(-2j * np.pi * np.outer(k, a) / p)
  fwd_w = np.exp(-2j * np.pi * np.outer(lh, a) / p)
  weights = np.where((lh == 0) | (2 * lh == p), 1.0, 2.0)[:, None]
  inv_h = np.exp(2j * np.pi * np.outer(k, a) / p) / p
  inv_w = weights * np.exp(2j * np.pi * np.outer(lh, a) / p) / p
  return tuple(jnp.asarray(m, jnp.complex64) for m in (fwd_h, fwd_w, inv_h, inv_w))


def adafm(x: jax.Array, scale: jax.Array, patch: int) -> jax.Array:
  """x [B, H, W, C] with each p×p patch's rfft2 multiplied by scale [B, p, p//2+1]:
  irfft2(rfft2(patch) ⊙ scale), written as products with DFT matrices (exact to float32
  rounding; XLA's CPU FFT rejects the layouts a sharded program gives it, and p = 8 is
  small enough that the matrices are also faster)."""
  b, h, w, c = x.shape
  p = patch
  if h % p or w % p or scale.shape[1:] != (p, p // 2 + 1):
    raise ValueError(f"adafm: map {h}×{w}, scale {scale.shape}, patch={p}; expected sides "
                     f"divisible by the patch and scale [batch, {p}, {p // 2 + 1}]")
  fwd_h, fwd_w, inv_h, inv_w = _dft_matrices(p)
  xp = x.astype(jnp.float32).reshape(b, h // p, p, w // p, p, c).astype(jnp.complex64)
  hi = jax.lax.Precision.HIGHEST
  f = jnp.einsum("ka,lb,nyaxbc->nyxckl", fwd_h, fwd_w, xp, precision=hi)
  f = f * scale[:, None, None, None].astype(jnp.complex64)
  out = jnp.einsum("ka,lb,nyxckl->nyaxbc", inv_h, inv_w, f, precision=hi)
  return jnp.real(out).reshape(b, h, w, c).astype(x.dtype)


def reference_window_mask(height: int, width: int, window_size: int, shift: int
                          ) -> np.ndarray:
  """[nW, w², w²] additive mask of the reference code's shifted windows (module docstring):
  rows [0, H − w), [H − w, H − shift), [H − shift, H) are regions 0, 1, 2; token (r, c) of
  window (i, j) (row-major, as `swinir.window_partition`) is in the region of row i·w + c;
  pairs from different regions get `swinir.MASK_VALUE`, else 0."""
  ws = window_size
  region = np.zeros(height, np.int32)
  region[height - ws:height - shift] = 1
  region[height - shift:] = 2
  rows = np.arange(height // ws)[:, None] * ws + np.arange(ws)[None, :]  # [nH, w]: i·w + c
  ids = np.broadcast_to(region[rows][:, None, None, :], (height // ws, width // ws, ws, ws))
  ids = ids.reshape(-1, ws * ws)
  return np.where(ids[:, None, :] != ids[:, :, None], swinir.MASK_VALUE, 0.0).astype(np.float32)


def window_attention(h: jax.Array, num_heads: int, window_size: int, shift: int,
                     window_mask: str, dtype: Any) -> jax.Array:
  """`swinir.shifted_window_attention` on h [B, H, W, C] with the shifted windows masked
  as `window_mask` says ('swin' or 'reference'); the attention is the caller's submodule
  'attn'."""
  if window_mask not in WINDOW_MASKS:
    raise ValueError(f"window_mask={window_mask!r}: expected one of {WINDOW_MASKS}")
  if window_mask == "swin" or not shift:
    return shifted_window_attention(h, num_heads, window_size, shift, dtype)
  _, height, width, c = h.shape
  ws = window_size
  h = jnp.roll(h, (-shift, -shift), axis=(1, 2))
  mask = jnp.asarray(reference_window_mask(height, width, ws, shift))
  h = swinir.WindowAttention(num_heads, ws, dtype=dtype, name="attn")(
      swinir.window_partition(h, ws).reshape(-1, ws * ws, c), mask)
  h = swinir.window_reverse(h.reshape(-1, ws, ws, c), ws, height, width)
  return jnp.roll(h, (shift, shift), axis=(1, 2))


def group_norm(groups: int, dtype: Any, name: str) -> lean_backward.GroupNorm:
  """The reference `normalization` (GroupNorm32: 32 groups, eps 1e-5, in float32), with
  `nn.GroupNorm`'s parameters and a backward that keeps less (`lean_backward`)."""
  return lean_backward.GroupNorm(
      groups, 1e-5, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


def zero_dense(features: int, name: str) -> nn.Dense:
  """A zero-initialized Linear (embedding → modulation), kernel axes (embed, mlp)."""
  return nn.Dense(features, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))


def conv1x1(x: jax.Array, features: int, dtype: Any, name: str) -> jax.Array:
  return conv(x, features, dtype, name, kernel=1)


class DiTSRBlock(nn.Module):
  """One Swin block with timestep conditioning on x [B, H, W, C], emb [B, E] (module doc).

  resolution: the side the reference built the block for (None: the input's): windows,
  shift and FFT patch follow min(H, W, resolution). window_mask: 'swin' or 'reference'.
  """
  num_heads: int
  window_size: int = 8
  shift: bool = False
  mlp_ratio: float = 4.0
  conditioning: str = "adafm"
  fft_patch_size: int = 8
  dropout: float = 0.0
  norm_groups: int = 32
  dtype: Any = jnp.float32
  resolution: Optional[int] = None
  window_mask: str = "swin"

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
    b, height, width, c = x.shape
    side = min(height, width, self.resolution or height)
    ws = min(self.window_size, side)
    shift = ws // 2 if self.shift and side > self.window_size else 0
    if height % ws or width % ws:
      raise ValueError(f"DiTSRBlock: map {height}×{width} is not a multiple of the window {ws}")
    drop = Dropout(self.dropout, deterministic=not train)
    e = nn.silu(emb)
    if self.conditioning == "adafm":
      p = min(self.fft_patch_size, side)
      scales = [1.0 + zero_dense(p * (p // 2 + 1), f"adafm_{n}")(e).reshape(b, p, p // 2 + 1)
                for n in ("msa", "mlp")]
      modulate = lambda h, i: adafm(h, scales[i], p)
    elif self.conditioning == "adaln":
      mod = zero_dense(4 * c, "adaln")(e).reshape(b, 1, 1, 4, c)
      modulate = lambda h, i: h * (1 + mod[..., 2 * i, :]) + mod[..., 2 * i + 1, :]
    elif self.conditioning == "none":
      modulate = lambda h, i: h
    else:
      raise ValueError(f"conditioning={self.conditioning!r}: expected one of {CONDITIONINGS}")
    h = modulate(group_norm(self.norm_groups, self.dtype, "norm1")(x), 0).astype(self.dtype)
    x = x + drop(window_attention(h, self.num_heads, ws, shift, self.window_mask, self.dtype))
    h = modulate(group_norm(self.norm_groups, self.dtype, "norm2")(x), 1).astype(self.dtype)
    h = drop(lean_backward.gelu(dense(int(c * self.mlp_ratio), ("embed", "mlp"), self.dtype,
                                      "fc1")(h), approximate=False))
    return x + drop(dense(c, ("mlp", "embed"), self.dtype, "fc2")(h))


class Stage(nn.Module):
  """Isotropic transformer stage (reference BasicLayer): ch → embed_dim → depth blocks → ch."""
  embed_dim: int
  depth: int
  num_heads: int
  window_size: int = 8
  mlp_ratio: float = 4.0
  conditioning: str = "adafm"
  fft_patch_size: int = 8
  dropout: float = 0.0
  norm_groups: int = 32
  dtype: Any = jnp.float32
  resolution: Optional[int] = None
  window_mask: str = "swin"
  scan_layers: bool = True

  def block(self, j: int, **kwargs) -> DiTSRBlock:
    """Block j's module (odd blocks shift their windows)."""
    return DiTSRBlock(self.num_heads, self.window_size, j % 2 == 1, self.mlp_ratio,
                      self.conditioning, self.fft_patch_size, self.dropout, self.norm_groups,
                      self.dtype, self.resolution, self.window_mask, **kwargs)

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
    ch = x.shape[-1]
    h = conv1x1(x, self.embed_dim, self.dtype, "patch_embed")
    # With `scan_layers`, the blocks run as a scan over (plain, shifted) pairs: one traced
    # pair per stage instead of `depth` blocks (`effcomp.nn.layer_scan`; the recipe's train
    # step compiles in 28 s instead of 41 s on 2 cores, issue 22); an odd last block, and
    # a stage of fewer than two pairs, run unrolled.
    pairs = self.depth // 2 if self.scan_layers and not self.is_initializing() else 0
    pairs = pairs if pairs > 1 else 0
    if pairs:
      h = layer_scan.scan_layers(self, [self.block(0), self.block(1)],
                                 [[f"blocks_{2 * i}", f"blocks_{2 * i + 1}"]
                                  for i in range(pairs)],
                                 h, emb, train, rng_names=("dropout",))
    for j in range(2 * pairs, self.depth):
      h = self.block(j, name=f"blocks_{j}")(h, emb, train)
    return conv1x1(h, ch, self.dtype, "patch_unembed")


def downsample(x: jax.Array, features: int, dtype: Any, name: str) -> jax.Array:
  """Reference `Downsample(use_conv=True)`: a 3×3 conv with stride 2 (padding 1)."""
  return nn.Conv(features, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=dtype,
                 name=name, kernel_init=nn.with_logical_partitioning(
                     nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                     ("height", "width", "conv_in", "conv_out")))(x)


def upsample(x: jax.Array, features: int, dtype: Any, name: str) -> jax.Array:
  """Reference `Upsample(use_conv=True)`: nearest ×2, then a 3×3 conv."""
  x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return conv(x, features, dtype, name)


class TimeEmbedding(nn.Module):
  """ADM time embedding: sinusoid(t, model_channels) → Linear 4·mc → SiLU → Linear 4·mc."""
  model_channels: int

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    e = timestep_embedding(t, self.model_channels)
    e = nn.silu(dense(4 * self.model_channels, (None, "mlp"), jnp.float32, "linear_0")(e))
    return dense(4 * self.model_channels, ("mlp", "embed"), jnp.float32, "linear_1")(e)


def check_widths(model) -> None:
  """ValueError naming the field unless a U-shaped denoiser's widths fit together."""
  if not model.channel_mult or min(model.channel_mult) < 1:
    raise ValueError(f"channel_mult={model.channel_mult}: expected positive multipliers")
  if model.swin_embed_dim % model.num_head_channels:
    raise ValueError(f"swin_embed_dim={model.swin_embed_dim} is not a multiple of "
                     f"num_head_channels={model.num_head_channels}")
  for ch in (model.swin_embed_dim, *(m * model.model_channels for m in model.channel_mult)):
    if ch % model.norm_groups:
      raise ValueError(f"norm_groups={model.norm_groups} must divide every width "
                       f"(model_channels·channel_mult and swin_embed_dim); {ch} is not")


def level_side(model, level: int) -> Optional[int]:
  """The side a U-shaped denoiser's `level` had when the reference was built for
  `model.image_size` (None when unset)."""
  return None if model.image_size is None else max(model.image_size // 2 ** level, 1)


def has_stage(model, level: int) -> bool:
  """Whether a U-shaped denoiser's `level` has a transformer Stage (`attention_levels`)."""
  return model.attention_levels is None or level in model.attention_levels


def check_unet_input(x: jax.Array, lq: jax.Array, levels: int, in_channels: int) -> None:
  """ValueError unless x [B, H, W, in_channels] and lq [B, H, W, ·] fit a U-Net of
  `levels` levels (H, W divisible by 2^(levels−1))."""
  if x.ndim != 4 or x.shape[-1] != in_channels:
    raise ValueError(f"x has shape {x.shape}; expected [batch, height, width, {in_channels}]")
  if lq.shape[:3] != x.shape[:3]:
    raise ValueError(f"lq has shape {lq.shape}; expected x's batch, height and width "
                     f"{x.shape[:3]} (the LR condition upsampled to x's size)")
  m = 2 ** (levels - 1)
  if x.shape[1] % m or x.shape[2] % m:
    raise ValueError(f"x of {x.shape[1]}×{x.shape[2]}: expected sides divisible by {m} "
                     f"(2^(levels−1) for channel_mult of {levels} levels)")


@MODELS.register("dit_sr")
class DiTSR(nn.Module):
  """DiT-SR denoiser: (x_t [B, H, W, in_channels], t [B], lq [B, H, W, lq_channels]) →
  [B, H, W, out_channels] (module docstring; defaults = the paper's recipe).

  Attributes:
    scale: the SR factor of the data (checked by the task; the network is resolution-free).
    model_channels, channel_mult: conv widths per level (levels = len(channel_mult)).
    swin_embed_dim, swin_depth, num_head_channels: every Stage's width, depth, head width.
    window_size, mlp_ratio, fft_patch_size, dropout, norm_groups: block settings.
    conditioning: 'adafm' (DiT-SR), 'adaln' (ablation) or 'none'.
    attention_levels: levels with a Stage (None: all, the recipe); others pass through.
    image_size: the reference's construction-time input side (its `image_size`, 64 in the
      recipe): level l's windows, shifts and FFT patches are the reference's for a side of
      image_size / 2^l at any larger input (module docstring); None: the input's own.
    window_mask: 'swin' (Swin's shifted-window mask) or 'reference' (the reference code's).
    scan_layers: run each stage's blocks as a scan over (plain, shifted) pairs (`Stage`;
      the parameter tree is the same either way).
  """
  scale: int = 4
  in_channels: int = 3
  out_channels: int = 3
  lq_channels: int = 3
  model_channels: int = 160
  channel_mult: Tuple[int, ...] = (1, 2, 2, 4)
  swin_embed_dim: int = 192
  swin_depth: int = 6
  num_head_channels: int = 32
  window_size: int = 8
  mlp_ratio: float = 4.0
  fft_patch_size: int = 8
  conditioning: str = "adafm"
  attention_levels: Optional[Tuple[int, ...]] = None
  dropout: float = 0.1
  norm_groups: int = 32
  image_size: Optional[int] = None
  window_mask: str = "swin"
  scan_layers: bool = True
  dtype: str = "float32"

  def stage(self, name: str, depth: int, level: int):
    return Stage(self.swin_embed_dim, depth, self.swin_embed_dim // self.num_head_channels,
                 self.window_size, self.mlp_ratio, self.conditioning, self.fft_patch_size,
                 self.dropout, self.norm_groups, self.dtype, level_side(self, level),
                 self.window_mask, self.scan_layers, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, lq: jax.Array, train: bool = False,
               encoder_only: bool = False):
    """The denoiser's output; `encoder_only`: instead, the encoder's feature maps (each
    level's after its stage, then the middle stage's; TAD-SR's `only_fea` forward, for
    `time_aware_discriminator`), the decoder not run."""
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"conditioning={self.conditioning!r}: expected one of {CONDITIONINGS}")
    check_widths(self)
    levels = len(self.channel_mult)
    check_unet_input(x, lq, levels, self.in_channels)
    dt, mc = self.dtype, self.model_channels
    emb = TimeEmbedding(mc, name="time_embed")(t)
    h = conv(jnp.concatenate([x, lq], -1).astype(dt), mc * self.channel_mult[0], dt, "conv_in")
    skips = [h]
    for level in range(levels):
      if has_stage(self, level):
        h = self.stage(f"down_{level}_stage", self.swin_depth, level)(h, emb, train)
      skips.append(h)
      if level < levels - 1:
        h = downsample(h, mc * self.channel_mult[level + 1], dt, f"down_{level}_downsample")
        skips.append(h)
    h = self.stage("middle", self.swin_depth, levels - 1)(h, emb, train)
    if encoder_only:
      return tuple(skips[1::2]) + (h,)
    for level in reversed(range(levels)):
      ch = mc * self.channel_mult[level]
      for i, depth in enumerate((self.swin_depth, 1)):
        h = conv(jnp.concatenate([h, skips.pop()], -1), ch, dt, f"up_{level}_{i}_conv")
        if has_stage(self, level):
          h = self.stage(f"up_{level}_{i}_stage", depth, level)(h, emb, train)
      if level > 0:
        h = upsample(h, mc * self.channel_mult[level - 1], dt, f"up_{level}_upsample")
    h = nn.silu(group_norm(self.norm_groups, dt, "out_norm")(h))
    return conv(h.astype(dt), self.out_channels, dt, "conv_out").astype(jnp.float32)
