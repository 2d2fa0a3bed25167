"""DiT: a class-conditional latent diffusion transformer with adaLN-Zero blocks.

Peebles & Xie, "Scalable Diffusion Models with Transformers" (ICCV 2023); follows the
official facebookresearch/DiT `models.py` layer by layer:

  * patchify: a p×p / stride-p conv = a Linear on each flattened p·p·C patch (the
    reference re-initializes the conv as a Linear: Xavier over [p·p·C, D]);
    tokens [B, (H/p)·(W/p), D] plus the fixed 2-D sin-cos position embedding (MAE
    `get_2d_sincos_pos_embed`: first half encodes the column, second half the row);
  * c = TimestepEmbedder(t) + LabelEmbedder(y): the GLIDE frequency embedding of t
    (256 frequencies, [cos | sin]) through Linear–SiLU–Linear; a label table with one
    extra "null" row (index num_classes) when class_dropout_prob > 0, which labels are
    replaced by with probability class_dropout_prob in training (classifier-free guidance);
  * depth × DiTBlock (adaLN-Zero): SiLU–Linear(c) → 6 vectors (shift, scale, gate)×2,
    x += gate_msa·Attn(LN(x)·(1 + scale_msa) + shift_msa), the same for the MLP
    (ratio 4, tanh-GELU); LN without affine, eps 1e-6; the modulation Linear is
    zero-initialized, so every block starts as the identity;
  * FinalLayer: adaLN (shift, scale) then a zero-initialized Linear to p·p·C_out;
    unpatchify back to [B, H, W, C_out], C_out = 2C with learn_sigma (ε and the
    variance interpolation v).

Images are NHWC here (the reference is NCHW); weights port by transposing kernels
(Linear [out, in] → [in, out]; patch conv [D, C, p, p] → [p, p, C, D] → [p·p·C, D]).
Sizes: `DIT_SIZES` (the reference `DiT_models`).
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.nn.downsampled_attention import SelfAttention, xavier_dense
from effcomp.nn.sparse_block_attention import SparseBlockAttention, layer_shift, parse_attention
from effcomp.registry import MODELS

FREQ_DIM = 256  # TimestepEmbedder frequency_embedding_size.
INIT_STD = 0.02  # label table and timestep-MLP init (reference `initialize_weights`).

_WIDTHS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
DIT_SIZES = {f"DiT-{name}/{p}": dict(depth=d, hidden_size=w, num_heads=h, patch_size=p)
             for name, (d, w, h) in _WIDTHS.items() for p in (2, 4, 8)}


def timestep_embedding(t: jax.Array, dim: int = FREQ_DIM, max_period: float = 10000.0) -> jax.Array:
  """[cos(t·ω_i), sin(t·ω_i)], ω_i = max_period^(−i/half), i < dim//2: [B] → [B, dim]
  (GLIDE `timestep_embedding`; t may be fractional; odd dim pads one zero)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t).astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
  """Fixed 2-D sin-cos embedding [grid_size², embed_dim] for row-major tokens (MAE
  `get_2d_sincos_pos_embed`: meshgrid(w, h), so the first embed_dim/2 channels encode
  the column, the rest the row; each half is [sin | cos] of pos·10000^(−i/(D/4)))."""
  if embed_dim % 4:
    raise ValueError(f"hidden_size={embed_dim}: the 2-D sin-cos embedding needs a multiple of 4")
  cols, rows = np.meshgrid(np.arange(grid_size), np.arange(grid_size))
  emb = np.concatenate([_sincos_1d(embed_dim // 2, cols), _sincos_1d(embed_dim // 2, rows)], 1)
  return emb.astype(np.float32)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """x·(1 + scale) + shift with shift, scale [B, C] broadcast over x's middle axes."""
  idx = (slice(None),) + (None,) * (x.ndim - 2)
  return x * (1 + scale[idx]) + shift[idx]


def layer_norm(dtype, name: str) -> nn.LayerNorm:
  """LayerNorm over the last axis without affine parameters, eps 1e-6 (adaLN supplies them)."""
  return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=dtype, name=name)


def adaln(c: jax.Array, n: int, dtype, name: str):
  """n modulation vectors [B, C] from SiLU–Linear(c), zero-initialized (adaLN-Zero)."""
  out = xavier_dense(n * c.shape[-1], ("embed", "mlp"), dtype, name, zero=True)(nn.silu(c))
  return jnp.split(out, n, axis=-1)


def normal_dense(features: int, axes, dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


class TimestepEmbedder(nn.Module):
  """t [B] (int or float) → [B, hidden_size]: frequency embedding → Linear–SiLU–Linear."""
  hidden_size: int
  freq_dim: int = FREQ_DIM
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    h = normal_dense(self.hidden_size, (None, "mlp"), self.dtype, "fc1")(
        timestep_embedding(t, self.freq_dim))
    return normal_dense(self.hidden_size, ("mlp", "embed"), self.dtype, "fc2")(nn.silu(h))


def label_drop_mask(module: nn.Module, labels: jax.Array, dropout_prob: float, train: bool,
                    force_drop_ids: Optional[jax.Array]) -> Optional[jax.Array]:
  """Which labels become the null class (reference `LabelEmbedder.token_drop`): where
  force_drop_ids == 1 if given, else uniform < dropout_prob when training (rng 'dropout')."""
  if force_drop_ids is not None:
    if dropout_prob <= 0:
      raise ValueError("force_drop_ids needs class_dropout_prob > 0: without it the label "
                       "table has no null class")
    return jnp.asarray(force_drop_ids) == 1
  if train and dropout_prob > 0:
    return jax.random.uniform(module.make_rng("dropout"), labels.shape) < dropout_prob
  return None


class LabelEmbedder(nn.Module):
  """y [B] → [B, hidden_size]; a table of num_classes (+1 null row if dropout_prob > 0)."""
  num_classes: int
  hidden_size: int
  dropout_prob: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, labels: jax.Array, drop: Optional[jax.Array] = None) -> jax.Array:
    rows = self.num_classes + int(self.dropout_prob > 0)
    table = nn.Embed(rows, self.hidden_size, dtype=self.dtype, name="embedding_table",
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(INIT_STD), ("classes", "embed")))
    if drop is not None:
      labels = jnp.where(drop, self.num_classes, labels)
    return table(labels)


class DiTBlock(nn.Module):
  """adaLN-Zero transformer block on x: [B, N, D] conditioned on c: [B, D].

  ssba_block > 0: the attention is Shift Sparse Block Attention over the square token grid
  (√N × √N) in blocks of ssba_block² tokens, shifted by ssba_shift (same parameters).
  """
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  ssba_block: int = 0
  ssba_shift: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    d = x.shape[-1]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln(
        c, 6, self.dtype, "adaLN_modulation")
    h = modulate(layer_norm(self.dtype, "norm1")(x), shift_msa, scale_msa)
    if self.ssba_block:
      side = math.isqrt(x.shape[1])
      if side * side != x.shape[1]:
        raise ValueError(f"ssba_block={self.ssba_block}: {x.shape[1]} tokens are not a square grid")
      attn = SparseBlockAttention(self.num_heads, side, side, self.ssba_block, self.ssba_shift,
                                  dtype=self.dtype, name="attn")
    else:
      attn = SelfAttention(self.num_heads, "dot", True, self.dtype, name="attn")
    x = x + gate_msa[:, None] * attn(h)
    h = modulate(layer_norm(self.dtype, "norm2")(x), shift_mlp, scale_mlp)
    h = xavier_dense(int(d * self.mlp_ratio), ("embed", "mlp"), self.dtype, "fc1")(h)
    h = xavier_dense(d, ("mlp", "embed"), self.dtype, "fc2")(nn.gelu(h, approximate=True))
    return x + gate_mlp[:, None] * h


def patchify(x: jax.Array, p: int) -> jax.Array:
  """[B, H, W, C] → [B, (H/p)·(W/p), p·p·C], row-major patches, each (row, col, channel)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, grid: int, channels: int) -> jax.Array:
  """[B, grid², p·p·C] → [B, grid·p, grid·p, C] (reference `unpatchify`, NHWC)."""
  b = x.shape[0]
  x = x.reshape(b, grid, grid, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid * p, grid * p, channels)


def guided_output(out: jax.Array, cfg_scale: float, guided_channels: int) -> jax.Array:
  """Classifier-free guidance on a [cond; uncond] batch (reference `forward_with_cfg`):
  ε = ε_u + s·(ε_c − ε_u) on the first `guided_channels` channels, written to both halves;
  the remaining channels (the learned variance) pass through. out: [2B, H, W, C']."""
  eps, rest = out[..., :guided_channels], out[..., guided_channels:]
  cond, uncond = jnp.split(eps, 2, axis=0)
  half = uncond + cfg_scale * (cond - uncond)
  return jnp.concatenate([jnp.concatenate([half, half], axis=0), rest], axis=-1)


@MODELS.register("dit")
class DiT(nn.Module):
  """Diffusion transformer: x [B, H, W, C], t [B], y [B] → [B, H, W, C or 2C] (float32).

  Attributes (reference `DiT.__init__`): input_size (H = W of the latent), patch_size,
  in_channels, hidden_size, depth, num_heads, mlp_ratio, class_dropout_prob,
  num_classes, learn_sigma (2C outputs); remat recomputes each block in the backward
  pass; dtype is the compute dtype (parameters stay float32). attention: 'dense' (DiT) or
  'ssba:<b>', Shift Sparse Block Attention (ElasticDiT; `effcomp.nn.sparse_block_attention`)
  in b×b-token blocks of the token grid, shift 0 in even blocks and b//2 in odd ones; the
  parameters are the same either way.
  """
  input_size: int = 32
  patch_size: int = 2
  in_channels: int = 4
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  class_dropout_prob: float = 0.1
  num_classes: int = 1000
  learn_sigma: bool = True
  remat: bool = False
  dtype: str = "float32"
  attention: str = "dense"

  @property
  def out_channels(self) -> int:
    return 2 * self.in_channels if self.learn_sigma else self.in_channels

  def _check(self, x: jax.Array) -> None:
    if self.input_size % self.patch_size:
      raise ValueError(f"patch_size={self.patch_size} must divide input_size={self.input_size}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide hidden_size={self.hidden_size}")
    block, grid = parse_attention(self.attention), self.input_size // self.patch_size
    if grid % max(block, 1):
      raise ValueError(f"attention={self.attention!r}: block={block} must divide the token "
                       f"grid {grid}×{grid}")
    expected = (self.input_size, self.input_size, self.in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(f"x has shape {tuple(x.shape)}; expected [batch, "
                       f"{', '.join(map(str, expected))}] (NHWC: input_size, in_channels)")

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False,
               force_drop_ids: Optional[jax.Array] = None) -> jax.Array:
    """Predicted noise (and variance) [B, H, W, C_out] for latents x at timesteps t, labels y.

    train: draws label dropout (needs the 'dropout' rng); force_drop_ids [B]: 1 = use the
    null class (classifier-free guidance), regardless of train.
    """
    self._check(x)
    p, grid = self.patch_size, self.input_size // self.patch_size
    tokens = self.embed_patches(patchify(x.astype(self.dtype), p), grid)
    c = self.condition(t, y, train, force_drop_ids)
    for block in self.blocks():
      tokens = block(tokens, c)
    tokens = self.final_layer(tokens, c)
    return unpatchify(tokens, p, grid, self.out_channels).astype(jnp.float32)

  # The pieces of `__call__`, each creating its submodules (called from a compact method;
  # `effcomp.models.dit.elastic` reuses them).
  def embed_patches(self, patches: jax.Array, grid: int,
                    positions: Optional[np.ndarray] = None) -> jax.Array:
    """x_embedder of flattened patches [B, grid², p·p·C] + `positions` [grid², D]
    (default: the 2-D sin-cos positions of the grid)."""
    tokens = xavier_dense(self.hidden_size, (None, "embed"), self.dtype, "x_embedder")(patches)
    if positions is None:
      positions = sincos_pos_embed_2d(self.hidden_size, grid)
    return tokens + jnp.asarray(positions, self.dtype)

  def condition(self, t: jax.Array, y: jax.Array, train: bool,
                force_drop_ids: Optional[jax.Array]) -> jax.Array:
    """c = TimestepEmbedder(t) + LabelEmbedder(y) (label dropout in training)."""
    drop = label_drop_mask(self, y, self.class_dropout_prob, train, force_drop_ids)
    return (TimestepEmbedder(self.hidden_size, dtype=self.dtype, name="t_embedder")(t)
            + LabelEmbedder(self.num_classes, self.hidden_size, self.class_dropout_prob,
                            self.dtype, name="y_embedder")(y, drop))

  def blocks(self) -> list:
    """The `depth` DiTBlocks (SSBA's shift alternating with the block index)."""
    block_cls = nn.remat(DiTBlock) if self.remat else DiTBlock
    ssba = parse_attention(self.attention)
    return [block_cls(self.num_heads, self.mlp_ratio, self.dtype, ssba, layer_shift(ssba, i),
                      name=f"blocks_{i}") for i in range(self.depth)]

  def final_layer(self, tokens: jax.Array, c: jax.Array) -> jax.Array:
    """adaLN (shift, scale) then the zero-initialized Linear to p·p·C_out per token."""
    return self.final_projection(self.final_features(tokens, c))

  def final_features(self, tokens: jax.Array, c: jax.Array) -> jax.Array:
    """The final layer's input: LayerNorm then the adaLN (shift, scale) modulation."""
    shift, scale = adaln(c, 2, self.dtype, "final_adaLN_modulation")
    return modulate(layer_norm(self.dtype, "final_norm")(tokens), shift, scale)

  def final_projection(self, features: jax.Array) -> jax.Array:
    """The zero-initialized Linear to p·p·C_out per token."""
    p = self.patch_size
    return xavier_dense(p * p * self.out_channels, ("embed", None), self.dtype, "final_linear",
                        zero=True)(features)

  def forward_with_cfg(self, x: jax.Array, t: jax.Array, y: jax.Array, cfg_scale: float,
                       guided_channels: Optional[int] = None) -> jax.Array:
    """Reference `forward_with_cfg`: runs [x_half; x_half] with labels y (second half
    = null class) and guides `guided_channels` channels (default in_channels, the
    standard choice; the reference guides 3 "for exact reproducibility")."""
    half = x[: x.shape[0] // 2]
    out = self(jnp.concatenate([half, half], axis=0), t, y)
    return guided_output(out, cfg_scale, guided_channels or self.in_channels)
