"""Packing: rows overlap by one token, unpack to the stream, pad only the tail."""

import time

import numpy as np
import pytest

from effcomp.data import packing, pipeline, sources, tokenizer

BOS, EOS, PAD = 1, 2, 0


def _pack(docs, seq_len):
  return packing.pack(docs, seq_len, bos_id=BOS, eos_id=EOS, pad_id=PAD)


def _stream(docs):
  return [t for d in docs for t in (BOS, *d, EOS)]


def _unpack(rows):
  """rows[0] then each next row without its first (shared) token, tail padding removed."""
  flat = np.concatenate([rows[0], rows[1:, 1:].ravel()])
  return np.trim_zeros(flat, "b").tolist()  # PAD == 0


def test_pack_small_example_exactly():
  docs = [[5, 6, 7], [8], []]  # stream 1 5 6 7 2 1 8 2 1 2: 10 tokens, 9 targets
  np.testing.assert_array_equal(_pack(docs, 3), [[1, 5, 6, 7], [7, 2, 1, 8], [8, 2, 1, 2]])
  np.testing.assert_array_equal(_pack(docs, 4), [[1, 5, 6, 7, 2], [2, 1, 8, 2, 1], [1, 2, 0, 0, 0]])
  np.testing.assert_array_equal(_pack(docs, 20), [[1, 5, 6, 7, 2, 1, 8, 2, 1, 2] + [0] * 11])
  np.testing.assert_array_equal(_pack([[]], 1), [[1, 2]])


@pytest.mark.parametrize("seq_len", [1, 2, 7, 64, 1000])
def test_rows_unpack_to_the_stream_and_every_target_appears_once(seq_len):
  rng = np.random.default_rng(seq_len)
  docs = [rng.integers(3, 500, size=n).tolist() for n in rng.integers(0, 40, size=30)]
  stream = _stream(docs)
  rows = _pack(docs, seq_len)
  assert rows.dtype == np.int32 and rows.shape == (-(-(len(stream) - 1) // seq_len), seq_len + 1)
  np.testing.assert_array_equal(rows[1:, 0], rows[:-1, -1])  # consecutive rows share a token
  assert _unpack(rows) == stream
  targets = rows[:, 1:].ravel()
  assert targets[targets != PAD].tolist() == stream[1:]
  assert packing.token_count(rows, PAD) == len(stream) - 1
  assert not np.any(rows[:-1] == PAD)  # padding only in the last row, at its end
  last = rows[-1].tolist()
  pad_from = len(stream) - (len(rows) - 1) * seq_len
  assert last[pad_from:] == [PAD] * (seq_len + 1 - pad_from) and PAD not in last[:pad_from]


def test_pack_accepts_arrays_and_generators():
  docs = [np.array([3, 4], np.int64), np.array([5], np.int32)]
  np.testing.assert_array_equal(_pack(iter(docs), 2), _pack([[3, 4], [5]], 2))


def test_pack_rejects_bad_arguments():
  with pytest.raises(ValueError, match="seq_len=0: expected at least 1"):
    _pack([[3]], 0)
  with pytest.raises(ValueError, match="docs is empty"):
    _pack([], 4)
  with pytest.raises(ValueError, match="docs contain pad_id=0"):
    _pack([[3, 0, 4]], 4)


def test_pack_400k_tokens_takes_well_under_a_second():
  rng = np.random.default_rng(0)
  docs = [rng.integers(3, 4096, size=n).tolist() for n in rng.integers(1, 560, size=1500)]
  assert sum(map(len, docs)) > 400_000
  start = time.perf_counter()
  rows = _pack(docs, 256)
  assert time.perf_counter() - start < 0.5
  assert packing.token_count(rows, PAD) == sum(map(len, docs)) + 2 * len(docs) - 1


def test_tokenize_source_reads_bytes_or_str_in_order_across_batches():
  records = [{"text": "héllo".encode()}, {"text": "wörld"}, {"text": b""}, {"text": "🙂"}]
  ids = packing.tokenize_source(records, tokenizer.ByteTokenizer(), batch_size=3)
  assert ids == [tokenizer.ByteTokenizer().encode(t) for t in ["héllo", "wörld", "", "🙂"]]
  with pytest.raises(ValueError, match="no 'text' feature"):
    packing.read_texts([{"image": 0}])


def test_python_docs_validation_tokenizes_and_packs_into_a_trainable_source(data_dir):
  source = sources.get_source("python_docs", "validation", data_dir=data_dir)
  texts = [source[i]["text"].decode("utf-8") for i in range(len(source))]
  tok = tokenizer.ByteTokenizer()
  docs = packing.tokenize_source(source, tok, batch_size=16)
  assert len(docs) == len(source) > 50
  assert docs == [tok.encode(t) for t in texts]
  assert sum(map(len, docs)) == sum(len(t.encode("utf-8")) for t in texts)

  packed = packing.packed_source(source, tok, seq_len=128)
  assert isinstance(packed, pipeline.ArraySource) and list(packed.arrays) == ["tokens"]
  rows = packed.arrays["tokens"]
  assert rows.dtype == np.int32 and rows.shape[1] == 129
  assert _unpack(rows) == _stream(docs)
  assert packing.token_count(rows, tok.pad_id) == sum(len(d) + 2 for d in docs) - 1
  batch = next(pipeline.train_iterator(packed, global_batch_size=4, seed=0))
  assert batch["tokens"].shape == (4, 129) and batch["tokens"].dtype == np.int32
