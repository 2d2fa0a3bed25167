"""Which weights a pruner keeps: masks chosen from a score, and their compact storage.

A mask is a bool array shaped like the kernel [in, out] (effcomp's layout, y = x W), True
where the weight is *kept*. The references (locuslab/wanda `lib/prune.py`) hold the
opposite, `W_mask` True where pruned, over torch's [out, in] weights; their "row" (one
output) is a column of our kernel and their "column" (one input) a row of it.

Comparison groups, each dropping the lowest scores:
  * `per_output`: int(in · s) weights of every output (`prune_wanda`'s unstructured
    branch: `torch.sort(W_metric, dim=-1, stable=True)`, the first int(cols · s) indices);
  * `per_layer`: int(in · out · s) weights of the whole layer (`prune_magnitude`'s
    threshold over the flattened layer);
  * `n_m`: N kept of every M consecutive inputs of each output (`prune_n`/`prune_m`
    branches: `topk(W_metric[:, ii:ii+m], largest=False)` marks the pruned ones).

Ties go stably: among equal scores the earlier entry is pruned first. The references'
layer-wise thresholds (`prune_magnitude`, SparseGPT's per-block mask) prune every weight
`<= sorted[int(numel · s)]`, i.e. int(numel · s) + 1 weights (more on ties); here exactly
int(numel · s), so a layer's sparsity is the one asked for. For N:M the references'
`prune_n` counts the *pruned* weights of a group; for 2:4 and 4:8 (N = M/2) kept and pruned
coincide, and here N counts the kept ones (NVIDIA's N:M: at most N non-zeros in M).

Storage: `pack` keeps one bit per weight (np.packbits of the flattened mask) with the shape.
"""

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
NM = Union[str, Sequence[int]]


def check_sparsity(sparsity: float) -> float:
  """`sparsity` as a float, or a ValueError naming it when it is not in [0, 1)."""
  if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
    raise ValueError(f"sparsity={sparsity!r}: expected a fraction of weights in [0, 1)")
  return float(sparsity)


def parse_nm(nm: NM) -> Tuple[int, int]:
  """(N, M) from '2:4' or (2, 4); a ValueError naming `nm` unless 1 ≤ N < M."""
  try:
    n, m = (int(v) for v in (nm.split(":") if isinstance(nm, str) else nm))
  except (TypeError, ValueError) as e:
    raise ValueError(f"nm={nm!r}: expected 'N:M' (e.g. '2:4') or a pair (N, M)") from e
  if not 1 <= n < m:
    raise ValueError(f"nm={nm!r}: expected 1 <= N < M (N weights kept of every M inputs)")
  return n, m


def check_nm_shape(shape: Sequence[int], m: int, name: str = "score") -> None:
  """A ValueError unless the input dimension (axis 0) of `shape` is a multiple of M."""
  if len(shape) != 2 or shape[0] % m:
    raise ValueError(f"{name} of shape {tuple(shape)}: expected [in, out] with in a multiple "
                     f"of M={m} (N:M groups are M consecutive inputs)")


def setting(sparsity: float, nm: Optional[NM] = None) -> str:
  """The setting's name: 'unstructured50' for sparsity 0.5, '2:4' for N:M."""
  if nm is not None:
    return "{}:{}".format(*parse_nm(nm))
  return f"unstructured{round(100 * check_sparsity(sparsity))}"


def prune_lowest(score: Array, k, axis: int = 0) -> Array:
  """Keep mask: False at the `k` lowest entries of `score` along `axis` (stable).

  `k` may be traced (jit): the mask is ranks ≥ k, with ranks from a stable double argsort.
  """
  order = jnp.argsort(score, axis=axis, stable=True)
  ranks = jnp.argsort(order, axis=axis, stable=True)
  return ranks >= k


def _check_score(score: Array) -> None:
  if score.ndim != 2:
    raise ValueError(f"score of shape {score.shape}: expected a 2-D [in, out] score")


def per_output(score: Array, sparsity: float) -> Array:
  """Keep mask [in, out]: each output keeps all but its int(in · s) lowest-scoring inputs."""
  _check_score(score)
  return prune_lowest(score, int(score.shape[0] * check_sparsity(sparsity)), axis=0)


def per_layer(score: Array, sparsity: float) -> Array:
  """Keep mask [in, out]: the layer keeps all but its int(in · out · s) lowest scores."""
  _check_score(score)
  k = int(score.size * check_sparsity(sparsity))
  return prune_lowest(score.reshape(-1), k).reshape(score.shape)


def n_m(score: Array, n: int, m: int) -> Array:
  """Keep mask [in, out]: the N highest scores of every M consecutive inputs per output."""
  _check_score(score)
  n, m = parse_nm((n, m))
  check_nm_shape(score.shape, m)
  groups = score.reshape(score.shape[0] // m, m, score.shape[1])
  return prune_lowest(groups, m - n, axis=1).reshape(score.shape)


def select(score: Array, sparsity: float = 0.5, nm: Optional[NM] = None,
           comparison: str = "output") -> Array:
  """Keep mask [in, out] of `score`: N:M when `nm` is given, else unstructured at
  `sparsity` compared per 'output' (Wanda) or per 'layer' (magnitude)."""
  if nm is not None:
    return n_m(score, *parse_nm(nm))
  if comparison == "output":
    return per_output(score, sparsity)
  if comparison == "layer":
    return per_layer(score, sparsity)
  raise ValueError(f"comparison={comparison!r}: expected 'output' or 'layer'")


class PackedMask(NamedTuple):
  """A keep mask at one bit per weight.

  Attributes:
    bits: uint8 [ceil(size / 8)], np.packbits of the flattened mask (big-endian bit order).
    shape: the mask's shape.
  """
  bits: np.ndarray
  shape: Tuple[int, ...]


def pack(mask) -> PackedMask:
  """The mask (any array of bools) as bits + shape."""
  mask = np.asarray(mask)
  if mask.dtype != np.bool_:
    raise ValueError(f"mask of dtype {mask.dtype}: expected bool (True = kept)")
  return PackedMask(np.packbits(mask.reshape(-1)), tuple(int(d) for d in mask.shape))


def unpack(packed: PackedMask) -> np.ndarray:
  """The bool mask `pack` stored."""
  size = math.prod(packed.shape)
  bits = np.asarray(packed.bits, np.uint8)
  if bits.shape != ((size + 7) // 8,):
    raise ValueError(f"packed.bits of shape {bits.shape}: expected ({(size + 7) // 8},) for a "
                     f"mask of shape {packed.shape}")
  return np.unpackbits(bits, count=size).astype(bool).reshape(packed.shape)


def sparsity_of(mask) -> float:
  """Fraction of pruned (False) entries of a keep mask or a PackedMask."""
  mask = unpack(mask) if isinstance(mask, PackedMask) else np.asarray(mask)
  return float(1.0 - np.count_nonzero(mask) / mask.size)
