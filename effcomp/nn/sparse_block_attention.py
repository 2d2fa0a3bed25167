"""Shift Sparse Block Attention (SSBA): self-attention inside blocks of a 2-D token grid,
the block partition shifted on alternate layers.

ElasticDiT (Du, Xie, Lu et al., "Efficient Diffusion Transformers via Elastic Architecture
and Sparse Attention for High-Resolution Image Generation on Mobile Devices", arXiv
2605.15684) names SSBA and reports 84.16 % average sparsity; no public code was found and
the text of the paper at hand (its abstract) gives no block size, shift or boundary rule,
so these are effcomp's choices, following Swin's shifted-window attention (Liu et al. 2021;
microsoft/Swin-Transformer `window_partition`, `WindowAttention`, the `attn_mask` of
`SwinTransformerBlock`):

  * x: [B, N, C] are the tokens of an H×W grid, row-major (DiT's patch order);
  * `block` b (tokens per block side) divides H and W; a layer with shift 0 attends inside
    each of the (H/b)·(W/b) blocks of b×b tokens (Swin's W-MSA);
  * `shift` s (0 ≤ s < b; `layer_shift` gives Swin's s = b//2 on odd layers, SW-MSA)
    moves the block boundaries by s along both axes: an axis of length L is cut into
    [0, s), [s, s + b), …, [L − b + s, L) (`segments`), and a block is a product of a row
    segment and a column segment.
  * Shifted blocks do NOT wrap around: the attention is that of Swin's cyclic roll by −s
    plus its mask (SwinIR `calculate_mask`, effcomp's `swinir.shifted_window_mask`),
    under which tokens the roll brings together from opposite edges never attend to each
    other; opposite edges of an image are not neighbours. Swin computes the masked pairs
    of its rolled b×b windows and throws them away (logits −100); here the edge pieces
    (b×s, s×b, s×s, … tokens) are gathered by size and attended separately, so no masked
    pair is computed: the sparsity (`sparsity`, the pairs `equivalent_mask` leaves out) is
    also the share of q·kᵀ and attn·v multiply-adds saved (`attention_macs`).

The per-piece attention is effcomp's `multi_head_attention` (softmax(q·kᵀ/√d)·v) and the
parameters are those of `SelfAttention` (`qkv`, `out`), so a checkpoint loads into either.
Swin's partition and mask helpers (`effcomp/models/sr/swinir.py`) sit on the models floor,
above `effcomp.nn`, and work on [B, H, W, C] maps with a mask; they are not reused.
"""

from typing import Any, List, Optional, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.nn.downsampled_attention import multi_head_attention, xavier_dense

DENSE = "dense"
SSBA_PREFIX = "ssba:"


def check_blocks(height: int, width: int, block: int, shift: int) -> None:
  """Raises a ValueError naming `block` or `shift` unless b ≥ 1 divides H and W, 0 ≤ s < b."""
  if block < 1 or height % block or width % block:
    raise ValueError(f"block={block} must be ≥ 1 and divide the token grid {height}×{width}")
  if not 0 <= shift < block:
    raise ValueError(f"shift={shift} must be in [0, block={block})")


def segments(length: int, block: int, shift: int) -> List[Tuple[int, int]]:
  """(start, size) of the pieces an axis of `length` tokens is cut into: cuts at s + k·b
  strictly inside (0, length), i.e. [0, s), [s, s + b), …, [length − b + s, length)."""
  cuts = [0] + [c for c in range(shift, length, block) if c > 0] + [length]
  return [(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])]


def piece_order(height: int, width: int, block: int, shift: int
                ) -> Tuple[np.ndarray, Tuple[Tuple[int, int], ...]]:
  """(order [N], groups): `order` lists the row-major token indices piece by piece, the
  pieces of the shifted partition sorted by their token count; `groups` ((pieces, tokens),
  …) gives, in that order, how many pieces of how many tokens follow one another."""
  check_blocks(height, width, block, shift)
  by_size = {}
  for r0, rows in segments(height, block, shift):
    for c0, cols in segments(width, block, shift):
      idx = (np.arange(r0, r0 + rows)[:, None] * width + np.arange(c0, c0 + cols)).reshape(-1)
      by_size.setdefault(rows * cols, []).append(idx)
  sizes = sorted(by_size, reverse=True)
  order = np.concatenate([np.concatenate(by_size[t]) for t in sizes])
  return order, tuple((len(by_size[t]), t) for t in sizes)


def equivalent_mask(height: int, width: int, block: int, shift: int) -> np.ndarray:
  """bool [N, N], N = H·W: True where query i attends to key j, i.e. both tokens lie in one
  piece of the (shifted) partition. Dense attention with this mask equals SSBA."""
  check_blocks(height, width, block, shift)

  def piece_ids(length):
    ids = np.zeros(length, np.int64)
    for k, (start, size) in enumerate(segments(length, block, shift)):
      ids[start:start + size] = k
    return ids
  rows = np.repeat(piece_ids(height), width)
  cols = np.tile(piece_ids(width), height)
  return (rows[:, None] == rows[None, :]) & (cols[:, None] == cols[None, :])


def attended_pairs(height: int, width: int, block: int, shift: int) -> int:
  """Σ over pieces of tokens²: the query-key pairs SSBA computes (= equivalent_mask.sum())."""
  _, groups = piece_order(height, width, block, shift)
  return sum(pieces * tokens * tokens for pieces, tokens in groups)


def sparsity(height: int, width: int, block: int, shift: int) -> float:
  """Fraction of the N² query-key pairs SSBA does not compute: 1 − attended_pairs / N²
  (1 − b²/N unshifted; a little more when shifted, whose edge pieces are smaller)."""
  n = height * width
  return 1.0 - attended_pairs(height, width, block, shift) / (n * n)


def attention_macs(height: int, width: int, dim: int, block: Optional[int] = None,
                   shift: int = 0) -> int:
  """Multiply-adds of q·kᵀ and attn·v as run, summed over heads (dim = heads·head_dim):
  each computed query-key pair costs `dim` in each product, so 2·N²·dim dense
  (`block=None`) and 2·attended_pairs·dim with SSBA. The qkv and output projections
  (4·N·dim², the same for both) are not included. Takes the grid rather than N because a
  shifted partition's edge pieces depend on H and W."""
  if block is None:
    n = height * width
    return 2 * n * n * dim
  return 2 * attended_pairs(height, width, block, shift) * dim


def layer_shift(block: int, layer: int) -> int:
  """The shift of layer `layer` (0-based): 0 on even layers, block // 2 on odd ones (Swin)."""
  return block // 2 if layer % 2 else 0


def parse_attention(spec: str) -> int:
  """`attention` field of a model: 'dense' → 0; 'ssba:<block>' → block (≥ 1)."""
  if spec == DENSE:
    return 0
  if spec.startswith(SSBA_PREFIX) and spec[len(SSBA_PREFIX):].isdigit():
    block = int(spec[len(SSBA_PREFIX):])
    if block >= 1:
      return block
  raise ValueError(f"attention={spec!r}: expected 'dense' or 'ssba:<block>' with block ≥ 1 "
                   "tokens per block side (e.g. 'ssba:8')")


def _pieces_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                      groups: Tuple[Tuple[int, int], ...]) -> jax.Array:
  """multi_head_attention inside each piece; q, k, v: [..., heads, N, d] with the tokens in
  `piece_order` (groups of equal-size pieces one after another) → [..., heads, N, d]."""
  outs, start = [], 0
  for pieces, tokens in groups:
    stop = start + pieces * tokens
    qg, kg, vg = (einops.rearrange(a[..., start:stop, :], "... (p t) d -> ... p t d", t=tokens)
                  for a in (q, k, v))
    outs.append(einops.rearrange(multi_head_attention(qg, kg, vg), "... p t d -> ... (p t) d"))
    start = stop
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-2)


def _reorder(x: jax.Array, index: np.ndarray) -> jax.Array:
  """x[..., index, :], skipped when `index` is the identity."""
  if np.array_equal(index, np.arange(len(index))):
    return x
  return jnp.take(x, jnp.asarray(index), axis=-2)


def block_attention(q: jax.Array, k: jax.Array, v: jax.Array, height: int, width: int,
                    block: int, shift: int = 0) -> jax.Array:
  """SSBA on per-head q, k, v: [..., heads, N, d] of an H×W row-major grid → [..., heads,
  N, d]: softmax(q·kᵀ/√d)·v over the keys of each query's piece only (module docstring)."""
  if q.shape[-2] != height * width:
    raise ValueError(f"q has {q.shape[-2]} tokens; expected height·width = {height}·{width}")
  order, groups = piece_order(height, width, block, shift)
  q, k, v = (_reorder(a, order) for a in (q, k, v))
  return _reorder(_pieces_attention(q, k, v, groups), np.argsort(order))


class SparseBlockAttention(nn.Module):
  """SSBA on tokens x: [..., N, C] of a `height`×`width` grid (row-major) → [..., N, C].

  Parameters as `SelfAttention` (attn_type 'dot'): `qkv` C → 3C laid out [3, heads,
  head_dim], `out` C → C. The tokens are put in `piece_order` before `qkv` (a per-token
  map, so the order commutes with it) and back before `out`.
  """
  num_heads: int
  height: int
  width: int
  block: int
  shift: int = 0
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    *_, n, c = x.shape
    if c % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the width {c}")
    if n != self.height * self.width:
      raise ValueError(f"x has {n} tokens; expected height·width = {self.height}·{self.width}")
    h = self.num_heads
    order, groups = piece_order(self.height, self.width, self.block, self.shift)
    qkv = nn.Dense(3 * c, use_bias=self.use_bias, dtype=self.dtype, name="qkv",
                   kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                            ("embed", "heads")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("heads",)))(
                       _reorder(x, order))
    q, k, v = einops.rearrange(qkv, "... n (three h d) -> three ... h n d", three=3, h=h)
    out = einops.rearrange(_pieces_attention(q, k, v, groups), "... h n d -> ... n (h d)")
    return xavier_dense(c, ("heads", "embed"), self.dtype, "out")(
        _reorder(out, np.argsort(order)))
