"""grain pipelines: deterministic, process-sharded, checkpointable, batch-vectorized.

The training stream depends only on the seed and the *global* batch size: epoch `e`
visits the records in the order of a numpy permutation seeded by `(seed, e)`, step `t`
takes positions `[t·B, (t+1)·B)` of that endless stream, and process `p` of `P` reads
the contiguous rows `[p·B/P, (p+1)·B/P)` of it. A run on 1 device, 8 devices or 2
processes therefore sees the same global batches.

Work is done per batch, not per example: one grain element is one batch, read with the
source's batched `__getitems__` (or a vectorized gather from an in-memory
`ArraySource`) and transformed by a vectorized `(batch, rng) -> batch` function. grain
provides the iteration, prefetching threads, optional worker processes, and the
iterator state (`get_state`/`set_state`) that checkpoints store.
"""

import math
import sys
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import grain
import numpy as np

Batch = Dict[str, np.ndarray]
BatchTransform = Callable[[Batch, np.random.Generator], Batch]


class ArraySource:
  """An in-memory source: a dict of equally long arrays, gathered in one numpy op."""

  def __init__(self, arrays: Dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"arrays: expected equal lengths, got {lengths}")
    self.arrays = arrays

  @classmethod
  def from_source(cls, source: Any) -> "ArraySource":
    """Reads every record of `source` into memory (for datasets that fit in RAM). A field
    whose records differ in shape (photos of several sizes) is kept as an object array of
    the records' arrays: such data is read through an example transform (crops), never
    gathered into one batch as stored."""
    rows = [source[i] for i in range(len(source))]
    arrays = {}
    for key in rows[0]:
      values = [np.asarray(r[key]) for r in rows]
      if len({v.shape for v in values}) == 1:
        arrays[key] = np.stack(values)
      else:
        arrays[key] = np.empty(len(values), object)
        for i, value in enumerate(values):  # not `[:] = values`: numpy would broadcast them
          arrays[key][i] = value
    return cls(arrays)

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, i: int) -> Dict[str, Any]:
    return {k: v[i] for k, v in self.arrays.items()}

  def gather(self, indices: np.ndarray) -> Batch:
    return {k: v[indices] for k, v in self.arrays.items()}


def read_batch(source: Any, indices: Sequence[int],
               example_transform: Optional[Callable[[Dict[str, Any], np.random.Generator], Dict[str, Any]]] = None,
               rng: Optional[np.random.Generator] = None) -> Batch:
  """`source`'s records at `indices`, stacked into a dict of `[len(indices), ...]` arrays.

  `example_transform(example, rng)` runs on each record before stacking, for records that
  cannot be stacked as stored (e.g. ImageNet images of different sizes → fixed crops).
  """
  if isinstance(source, ArraySource) and example_transform is None:
    return source.gather(np.asarray(indices))
  indices = [int(i) for i in indices]
  rows = source.__getitems__(indices) if hasattr(source, "__getitems__") else [
      source[i] for i in indices]
  if example_transform is not None:
    rng = rng or np.random.default_rng(0)
    rows = [example_transform(r, rng) for r in rows]
  return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


class _TrainBatches:
  """Step `t` → this process's rows of global batch `t` (see the module docstring)."""

  def __init__(self, source: Any, seed: int, global_batch: int, local_batch: int,
               process_index: int, example_transform: Optional[Callable] = None):
    self.source, self.seed, self.example_transform = source, seed, example_transform
    self.global_batch, self.local_batch, self.process_index = global_batch, local_batch, process_index
    self._permutations: Dict[int, np.ndarray] = {}  # the two most recent epochs

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      if len(self._permutations) >= 2:
        self._permutations.pop(min(self._permutations))
      self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
          len(self.source))
    return self._permutations[epoch]

  def indices(self, step: int) -> np.ndarray:
    start = step * self.global_batch + self.process_index * self.local_batch
    epochs, offsets = np.divmod(np.arange(start, start + self.local_batch), len(self.source))
    out = np.empty(self.local_batch, np.int64)
    for epoch in np.unique(epochs):
      rows = epochs == epoch
      out[rows] = self._permutation(int(epoch))[offsets[rows]]
    return out

  def __call__(self, step: int) -> Batch:
    rng = np.random.default_rng([self.seed, int(step), self.process_index, 1])
    return read_batch(self.source, self.indices(int(step)), self.example_transform, rng)


def _local_batch_size(global_batch_size: int, process_count: int, name: str) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"{name}={global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  return global_batch_size // process_count


def train_iterator(source: Any, *, global_batch_size: int, seed: int,
                   transform: Optional[BatchTransform] = None,
                   example_transform: Optional[Callable] = None,
                   process_index: int = 0, process_count: int = 1,
                   num_workers: int = 0, prefetch: int = 2) -> grain.DatasetIterator:
  """An endless iterator of this process's share of shuffled global batches.

  Args:
    source: random-access source (`len`, `__getitem__`/`__getitems__` → dicts of
      arrays), e.g. `effcomp.data.sources.get_source(...)` or an `ArraySource`.
    global_batch_size: examples per step over all processes.
    seed: shuffling and augmentation seed; every epoch is reshuffled.
    transform: vectorized `(batch, np.random.Generator) -> batch` (augmentation);
      the generator is seeded by `seed` and the step, so it is reproducible.
    example_transform: `(example, np.random.Generator) -> example` applied per record
      before stacking (decode/crop variable-size images), seeded by (seed, step).
    process_index, process_count: this process's slot (`jax.process_index()` …).
    num_workers: grain worker processes (0 = read in this process).
    prefetch: batches read ahead by a thread pool (0 = none).

  Returns:
    A `grain.DatasetIterator` yielding dicts of `[global_batch_size / process_count, ...]`
    arrays; `get_state()`/`set_state()` make it resumable.
  """
  if len(source) == 0:
    raise ValueError("source is empty: nothing to train on")
  local = _local_batch_size(global_batch_size, process_count, "global_batch_size")
  ds = grain.MapDataset.range(0, sys.maxsize).seed(seed).map(
      _TrainBatches(source, seed, global_batch_size, local, process_index, example_transform))
  if transform is not None:
    ds = ds.random_map(transform)
  read = grain.ReadOptions(num_threads=max(prefetch, 1), prefetch_buffer_size=prefetch)
  it_ds = ds.to_iter_dataset(read)
  if num_workers > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it_ds)


def eval_batches(source: Any, *, global_batch_size: int,
                 transform: Optional[Callable[[Batch], Batch]] = None,
                 example_transform: Optional[Callable] = None,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Every example exactly once, in fixed-size batches with a boolean `mask` field.

  Each process yields the same number of `[global_batch_size / process_count, ...]`
  batches; padding rows repeat example 0 and carry `mask == False`, so metrics
  weighted by `mask` count each real example once whatever the device count.
  """
  local = _local_batch_size(global_batch_size, process_count, "eval batch_size")
  n = len(source)
  for b in range(math.ceil(n / global_batch_size)):
    start = b * global_batch_size + process_index * local
    indices = np.arange(start, start + local)
    mask = indices < n
    batch = read_batch(source, np.where(mask, indices, 0), example_transform)
    if transform is not None:
      batch = transform(batch)
    batch["mask"] = mask
    yield batch
