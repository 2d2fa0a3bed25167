"""grain pipelines: deterministic, process-sharded, checkpointable.

The training stream depends only on the seed and the *global* batch size: step `t`
always sees the shuffled examples `[t·B, (t+1)·B)`, and process `p` of `P` reads the
contiguous slice `[p·B/P, (p+1)·B/P)` of it. So a run on 1 device, 8 devices or 2
processes sees the same global batches, and the iterator's state (grain's own
`get_state`) is checkpointed with the model.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Iterator, Optional

import grain
import numpy as np

Example = Dict[str, Any]
Transform = Callable[[Example, np.random.Generator], Example]


@dataclasses.dataclass(frozen=True)
class _ProcessSlice:
  """Maps a process-local example index to its index in the global stream."""
  stream: grain.MapDataset
  global_batch: int
  local_batch: int
  process_index: int

  def __call__(self, i: int) -> Example:
    step, j = divmod(int(i), self.local_batch)
    return self.stream[step * self.global_batch + self.process_index * self.local_batch + j]


def _local_batch_size(global_batch_size: int, process_count: int, name: str) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"{name}={global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  return global_batch_size // process_count


def train_iterator(source: Any, *, global_batch_size: int, seed: int,
                   transform: Optional[Transform] = None,
                   process_index: int = 0, process_count: int = 1,
                   num_workers: int = 0, prefetch: int = 2) -> grain.DatasetIterator:
  """An endless iterator of this process's share of shuffled global batches.

  Args:
    source: random-access data source (`len`, `__getitem__` → dict of arrays).
    global_batch_size: examples per step over all processes.
    seed: shuffle and augmentation seed; each epoch is reshuffled.
    transform: `(example, np.random.Generator) -> example`, e.g. augmentation.
    process_index, process_count: this process's slot (`jax.process_index()` …).
    num_workers: grain worker processes (0 = read in this process).
    prefetch: batches a thread pool reads ahead (0 = none).

  Returns:
    A `grain.DatasetIterator` yielding dicts of `[global_batch_size / process_count, ...]`
    numpy arrays; `get_state()`/`set_state()` make it resumable.
  """
  if len(source) == 0:
    raise ValueError("source is empty: nothing to train on")
  local = _local_batch_size(global_batch_size, process_count, "global_batch_size")
  ds = grain.MapDataset.source(source).seed(seed).shuffle()
  if transform is not None:
    ds = ds.random_map(transform)
  ds = ds.repeat()
  if process_count > 1:
    ds = grain.MapDataset.range(0, math.ceil(len(ds) / process_count)).map(
        _ProcessSlice(ds, global_batch_size, local, process_index))
  ds = ds.batch(local, drop_remainder=True)
  read = grain.ReadOptions(num_threads=max(prefetch, 1), prefetch_buffer_size=prefetch)
  it_ds = ds.to_iter_dataset(read)
  if num_workers > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it_ds)


def eval_batches(source: Any, *, global_batch_size: int,
                 transform: Optional[Callable[[Example], Example]] = None,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Example]:
  """Every example exactly once, in fixed-size batches with a `mask` field.

  Each process yields the same number of `[global_batch_size / process_count, ...]`
  batches; padding rows repeat example 0 and carry `mask == False`, so metrics
  weighted by `mask` count each real example once whatever the device count.
  """
  local = _local_batch_size(global_batch_size, process_count, "eval batch_size")
  n = len(source)
  num_batches = math.ceil(n / global_batch_size)
  ds = grain.MapDataset.source(source)
  if transform is not None:
    ds = ds.map(transform)
  for b in range(num_batches):
    start = b * global_batch_size + process_index * local
    indices = np.arange(start, start + local)
    mask = indices < n
    rows = [ds[int(i) if m else 0] for i, m in zip(indices, mask)]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["mask"] = mask
    yield batch
