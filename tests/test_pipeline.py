"""grain pipelines: determinism, process sharding, resumable state, eval masking."""

import numpy as np
import pytest

from effcomp.data import pipeline
from effcomp.tasks import classification


class _Source:
  """A random-access source of `n` examples {x: [i], label: i % 10}, read one by one."""

  def __init__(self, n=50):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"x": np.array([i], np.int64), "label": np.int32(i % 10)}


def _take(it, k):
  return [next(it)["x"][:, 0].copy() for _ in range(k)]


def test_train_stream_is_deterministic_and_epochs_cover_everything():
  a = _take(pipeline.train_iterator(_Source(), global_batch_size=10, seed=3), 10)
  b = _take(pipeline.train_iterator(_Source(), global_batch_size=10, seed=3), 10)
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  first_epoch, second_epoch = np.concatenate(a[:5]), np.concatenate(a[5:])
  assert sorted(first_epoch) == list(range(50)) and sorted(second_epoch) == list(range(50))
  assert not np.array_equal(first_epoch, second_epoch)  # reshuffled each epoch
  c = _take(pipeline.train_iterator(_Source(), global_batch_size=10, seed=4), 5)
  assert not np.array_equal(np.stack(a[:5]), np.stack(c))


def test_batches_straddle_epoch_boundaries_without_losing_examples():
  batches = _take(pipeline.train_iterator(_Source(7), global_batch_size=3, seed=0), 7)
  stream = np.concatenate(batches)  # 21 positions = exactly 3 epochs of 7
  for e in range(3):
    assert sorted(stream[7 * e:7 * (e + 1)]) == list(range(7))


def test_in_memory_source_gives_the_same_stream():
  source = _Source()
  memory = pipeline.ArraySource.from_source(source)
  a = _take(pipeline.train_iterator(source, global_batch_size=10, seed=1), 7)
  b = _take(pipeline.train_iterator(memory, global_batch_size=10, seed=1), 7)
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  with pytest.raises(ValueError, match="equal lengths"):
    pipeline.ArraySource({"a": np.zeros(3), "b": np.zeros(4)})


def test_in_memory_source_keeps_records_of_different_shapes():
  records = [{"image": np.full((2 + i, 3, 1), i, np.uint8), "label": i} for i in range(3)]
  memory = pipeline.ArraySource.from_source(records)
  assert len(memory) == 3 and memory.arrays["label"].shape == (3,)
  for i in range(3):
    np.testing.assert_array_equal(memory[i]["image"], records[i]["image"])
  crop = lambda example, rng: {"image": example["image"][:2], "label": example["label"]}
  batch = pipeline.read_batch(memory, [2, 0], crop)
  assert batch["image"].shape == (2, 2, 3, 1) and list(batch["label"]) == [2, 0]


def test_processes_read_contiguous_slices_of_the_same_global_batches():
  whole = _take(pipeline.train_iterator(_Source(), global_batch_size=8, seed=0), 9)
  parts = [_take(pipeline.train_iterator(_Source(), global_batch_size=8, seed=0,
                                         process_index=p, process_count=2), 9) for p in range(2)]
  for step in range(9):
    np.testing.assert_array_equal(np.concatenate([parts[0][step], parts[1][step]]), whole[step])


def _noise(batch, rng):
  return {**batch, "noise": rng.normal(size=len(batch["x"]))}


def test_iterator_state_resumes_exactly():
  it = pipeline.train_iterator(_Source(), global_batch_size=7, seed=1, transform=_noise)
  _take(it, 4)
  state = it.get_state()
  expected = [next(it) for _ in range(6)]
  resumed = pipeline.train_iterator(_Source(), global_batch_size=7, seed=1, transform=_noise)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got["x"], want["x"])
    np.testing.assert_array_equal(got["noise"], want["noise"])  # augmentation randomness too


def test_eval_batches_cover_each_example_once_with_mask():
  for processes in (1, 2):
    seen = []
    for p in range(processes):
      batches = list(pipeline.eval_batches(_Source(23), global_batch_size=8, process_index=p,
                                           process_count=processes))
      assert len(batches) == 3
      for b in batches:
        assert b["x"].shape == (8 // processes, 1) and b["mask"].dtype == bool
        seen.extend(b["x"][b["mask"], 0].tolist())
    assert sorted(seen) == list(range(23))


def test_batch_size_must_divide_over_processes():
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    pipeline.train_iterator(_Source(), global_batch_size=8, seed=0, process_index=0, process_count=3)


def test_flip_crop_keeps_shape_and_moves_content():
  images = np.arange(2 * 6 * 6 * 1, dtype=np.uint8).reshape(2, 6, 6, 1) + 1
  out = classification.flip_crop({"image": images, "label": np.zeros(2)}, np.random.default_rng(0),
                                  pad=2)
  assert out["image"].shape == images.shape and out["image"].dtype == np.uint8
  # Every non-zero output pixel is a pixel of the (possibly flipped) input image.
  for i in range(2):
    assert set(out["image"][i].ravel()) - {0} <= set(images[i].ravel())
  zero_pad = classification.flip_crop({"image": images}, np.random.default_rng(0), pad=0)
  for i in range(2):
    assert (np.array_equal(zero_pad["image"][i], images[i])
            or np.array_equal(zero_pad["image"][i], images[i, :, ::-1]))
