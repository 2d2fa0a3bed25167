"""ElasticDiT: one DiT whose depth and spatial compression are chosen per call.

Du, Xie, Lu et al., "ElasticDiT: Efficient Diffusion Transformers via Elastic Architecture
and Sparse Attention for High-Resolution Image Generation on Mobile Devices": a single
parameter set covers a range of fidelity-latency trade-offs by changing the number of DiT
blocks that run and the spatial compression ratio (tokens per image). The paper has no
public code and its text gives neither which blocks a shallower configuration keeps nor
how the patch layers are shared, so both follow the nearest published designs:

  * Depth (`depths`, the largest = `depth`): a configuration of d blocks runs the blocks
    at `round(linspace(0, depth − 1, d))` — the first and the last block always, the
    others evenly spread (layer dropping keeps the ends, which touch the embeddings: BK-SDM,
    Kim et al. 2023; LayerDrop's "every other layer" pruning, Fan et al. 2020).
  * Compression (`patch_sizes`, the first = `patch_size`, the finest): a patch of k·p
    pixels is one token, k² fewer tokens. FlexiViT's PI-resize (Beyer et al. 2023, eq. 5
    with the area resize) maps the base p-patch embedding to the k·p patch: embedding a
    k·p patch = embedding its k×k average-pooled p-patch; the output layer's k·p patch is
    its base p-patch prediction upsampled (bilinear) by k. On top, each coarse patch size
    has its own zero-initialized embedding and output residual (`x_embedder_p{kp}`,
    `final_linear_p{kp}`: FlexiDiT, Anagnostidis et al. 2024, adds such per-size patch
    layers) on the input patch and on the final layer's modulated features, so a coarse
    configuration can still predict per-pixel detail. Positions (`merge_positions`, the
    default): the area resize of the fine grid's 2-D sin-cos (FlexiViT resizes its position
    embedding to the new grid too), i.e. a coarse token sits at the mean position of the
    k×k fine tokens it covers, so the blocks see one geometry at every compression;
    `merge_positions=False` gives the coarse grid its own sin-cos (the first version: a
    coarse token one position from its neighbour, as a fine token is; measured worse, see
    the README). Everything else (the blocks, the conditioning, the final adaLN) is shared.

At (depth, patch_size) = (max, finest) the model is a plain DiT with the same parameter
tree (tested equal). `attention='ssba:<b>'` uses Shift Sparse Block Attention in every
configuration (the coarse grids must be multiples of b). Training samples configurations by
the sandwich rule (`effcomp.tasks.diffusion`: `elastic_random`, `elastic_distill`).
"""

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.models.dit.dit import DiT, patchify, sincos_pos_embed_2d, unpatchify
from effcomp.nn.downsampled_attention import xavier_dense
from effcomp.nn.sparse_block_attention import parse_attention
from effcomp.registry import MODELS


def block_indices(depth: int, max_depth: int) -> Tuple[int, ...]:
  """The blocks a `depth`-block configuration runs: round(linspace(0, max_depth − 1,
  depth)), the ends always (depth 1: the first)."""
  if not 1 <= depth <= max_depth:
    raise ValueError(f"depth={depth}: expected 1 … {max_depth}")
  if depth == 1:
    return (0,)
  return tuple(int(i) for i in np.round(np.linspace(0, max_depth - 1, depth)))


def avg_pool(x: jax.Array, k: int) -> jax.Array:
  """[B, H, W, C] → [B, H/k, W/k, C], k×k means."""
  if k == 1:
    return x
  b, h, w, c = x.shape
  return x.reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4))


@MODELS.register("elastic_dit")
class ElasticDiT(DiT):
  """A `DiT` runnable at `depths` × `patch_sizes` (module docstring); call with
  `depth=` / `patch_size=` (None: the largest depth, the finest patch)."""
  depths: Sequence[int] = (28,)
  patch_sizes: Sequence[int] = (2,)
  merge_positions: bool = True

  def configurations(self) -> Tuple[Tuple[int, int], ...]:
    """Every (depth, patch size), the largest first, the smallest last."""
    return tuple((d, p) for p in sorted(self.patch_sizes) for d in sorted(self.depths,
                                                                          reverse=True))

  def _check_elastic(self) -> None:
    if max(self.depths) != self.depth or min(self.depths) < 1:
      raise ValueError(f"depths={tuple(self.depths)}: expected values in 1 … depth={self.depth}"
                       " including depth")
    if min(self.patch_sizes) != self.patch_size or any(
        q % self.patch_size or self.input_size % q for q in self.patch_sizes):
      raise ValueError(f"patch_sizes={tuple(self.patch_sizes)}: expected multiples of "
                       f"patch_size={self.patch_size} that divide input_size={self.input_size},"
                       " including patch_size")
    block = parse_attention(self.attention)
    for q in self.patch_sizes:
      if (self.input_size // q) % max(block, 1):
        raise ValueError(f"attention={self.attention!r}: block={block} must divide every "
                         f"token grid; patch {q} gives {self.input_size // q}")

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False,
               force_drop_ids: Optional[jax.Array] = None, depth: Optional[int] = None,
               patch_size: Optional[int] = None) -> jax.Array:
    self._check(x)
    self._check_elastic()
    depth = self.depth if depth is None else depth
    q = self.patch_size if patch_size is None else patch_size
    if q not in self.patch_sizes:
      raise ValueError(f"patch_size={q}: expected one of {tuple(self.patch_sizes)}")
    if depth not in self.depths:
      raise ValueError(f"depth={depth}: expected one of {tuple(self.depths)}")
    p, k, grid = self.patch_size, q // self.patch_size, self.input_size // q
    fine = self.input_size // p
    x = x.astype(self.dtype)
    # Every coarse size's layers exist in every call: one parameter tree for all.
    extra_in = {s: xavier_dense(self.hidden_size, (None, "embed"), self.dtype,
                                f"x_embedder_p{s}", zero=True) for s in self.patch_sizes if s != p}
    extra_out = {s: xavier_dense(s * s * self.out_channels, ("embed", None), self.dtype,
                                 f"final_linear_p{s}", zero=True)
                 for s in self.patch_sizes if s != p}
    positions = None  # the grid's own sin-cos
    if k > 1 and self.merge_positions:  # the means of the fine grid's k×k positions
      positions = avg_pool(sincos_pos_embed_2d(self.hidden_size, fine).reshape(
          1, fine, fine, -1), k).reshape(grid * grid, -1)
    tokens = self.embed_patches(patchify(avg_pool(x, k), p), grid, positions)
    if k > 1:
      tokens = tokens + extra_in[q](patchify(x, q))
    if self.is_initializing():  # create the other sizes' layers too
      for s in extra_in:
        if s != q:
          extra_in[s](jnp.zeros((1, 1, s * s * self.in_channels), self.dtype))
          extra_out[s](jnp.zeros((1, 1, self.hidden_size), self.dtype))
    c = self.condition(t, y, train, force_drop_ids)
    blocks = self.blocks()
    for i in block_indices(depth, self.depth):
      tokens = blocks[i](tokens, c)
    if self.is_initializing():  # blocks a shallower first call skipped
      for i in set(range(self.depth)) - set(block_indices(depth, self.depth)):
        blocks[i](tokens, c)
    features = self.final_features(tokens, c)
    out = unpatchify(self.final_projection(features), p, grid, self.out_channels)
    if k > 1:
      b = out.shape[0]
      out = jax.image.resize(out, (b, self.input_size, self.input_size, self.out_channels),
                             "bilinear")
      out = out + unpatchify(extra_out[q](features), q, grid, self.out_channels)
    return out.astype(jnp.float32)
