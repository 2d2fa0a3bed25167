"""Tokenizers: byte ids, BPE training, round trips, specials, save/load, the command."""

import json
import os

import pytest

from tests.conftest import run_python
from effcomp.data import packing, sources, tokenizer

TEXTS = [
    "",
    "hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines",
    "unicode: déjà vu, naïve, Straße, 日本語, Ελληνικά, עברית",
    "emoji 🙂👍🏽 and a family 👨‍👩‍👧 and flags 🇫🇷",
    "combining e\u0301 and zero\u200bwidth and NUL \x00 and DEL \x7f",
    "literal specials <s> </s> <pad> stay text",
    "def f(x):\n    return {'a': [1, 2.5]}  # comment\n",
]
CORPUS = [
    "the quick brown fox jumps over the lazy dog. " * 5,
    "def function(argument):\n    return argument + 1\n" * 5,
    "Python is a programming language that lets you work quickly.\n" * 5,
]


@pytest.fixture(scope="module")
def small_bpe():
  return tokenizer.train_bpe(CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def docs_texts(data_dir):
  return {split: packing.read_texts(sources.get_source("python_docs", split, data_dir=data_dir))
          for split in ("train", "validation")}


def test_byte_tokenizer_maps_utf8_byte_b_to_id_b_plus_3():
  tok = tokenizer.ByteTokenizer()
  assert tok.vocab_size == 259
  assert tok.encode("A") == [65 + 3]
  assert tok.encode("é") == [0xC3 + 3, 0xA9 + 3]
  assert tok.encode("") == []
  assert tok.decode([tokenizer.BOS_ID, 68, 69, tokenizer.EOS_ID, tokenizer.PAD_ID]) == "AB"
  with pytest.raises(ValueError, match=r"\[0, 259\)"):
    tok.decode([259])


def test_special_ids_are_the_same_in_both_kinds(small_bpe):
  assert (tokenizer.PAD_ID, tokenizer.BOS_ID, tokenizer.EOS_ID) == (0, 1, 2)
  for tok in (tokenizer.ByteTokenizer(), small_bpe):
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert [small_bpe.tokenizer.id_to_token(i) for i in range(3)] == ["<pad>", "<s>", "</s>"]


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_decode_encode_round_trips_any_text_without_special_ids(kind, small_bpe):
  tok = tokenizer.ByteTokenizer() if kind == "byte" else small_bpe
  for text in TEXTS:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(3 <= i < tok.vocab_size for i in ids), text  # "<s>" in text is not BOS
  assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]


def test_decode_drops_special_ids(small_bpe):
  ids = small_bpe.encode("fox jumps")
  assert small_bpe.decode([1, *ids, 2, 0, 0]) == "fox jumps"


def test_bpe_merges_frequent_words_and_reaches_the_vocab_size(small_bpe):
  assert small_bpe.vocab_size == 320
  assert len(small_bpe.encode(" the quick brown fox")) < len(" the quick brown fox") // 2
  # Characters never seen in training still encode, byte by byte, without unknowns.
  assert len(small_bpe.encode("日")) == 3


def test_train_bpe_is_deterministic():
  a = tokenizer.train_bpe(CORPUS, vocab_size=300)
  b = tokenizer.train_bpe(CORPUS, vocab_size=300)
  assert a.to_json() == b.to_json()
  model = json.loads(a.to_json())["model"]
  assert len(model["merges"]) == 300 - 259
  assert model["vocab"] == json.loads(b.to_json())["model"]["vocab"]


def test_train_bpe_rejects_a_vocab_smaller_than_specials_plus_bytes():
  with pytest.raises(ValueError, match="vocab_size=258: expected at least 259"):
    tokenizer.train_bpe(CORPUS, vocab_size=258)


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_save_then_load_gives_the_same_tokenizer(kind, small_bpe, tmp_path):
  tok = tokenizer.ByteTokenizer() if kind == "byte" else small_bpe
  path = str(tmp_path / "sub" / "tokenizer.json")
  tok.save(path)
  with open(path, encoding="utf-8") as f:
    assert f.read() == tok.to_json()
  assert os.listdir(tmp_path / "sub") == ["tokenizer.json"]  # no temporary file left
  loaded = tokenizer.load(path)
  assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
  assert [loaded.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
  assert loaded.encode("<s>") == tok.encode("<s>") != [1]


def test_load_byte_spec_and_clear_errors(small_bpe, tmp_path):
  assert isinstance(tokenizer.load("byte"), tokenizer.ByteTokenizer)
  with pytest.raises(FileNotFoundError, match=r"tokenizer='nowhere.json': no such file; expected 'byte'"):
    tokenizer.load("nowhere.json")
  bad = {"text.json": "not json", "other.json": '{"model": {"type": "WordPiece"}}',
         "list.json": "[1, 2]"}
  for name, content in bad.items():
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=f"tokenizer='{tmp_path / name}'"):
      tokenizer.load(str(tmp_path / name))
  # A BPE file whose first ids are not <pad>, <s>, </s>.
  content = json.loads(small_bpe.to_json())
  content["added_tokens"] = []
  content["model"]["vocab"] = {k: v + 3 for k, v in content["model"]["vocab"].items()}
  (tmp_path / "nospecials.json").write_text(json.dumps(content))
  with pytest.raises(ValueError, match="expected ids 0, 1, 2 to be"):
    tokenizer.load(str(tmp_path / "nospecials.json"))


def test_round_trip_and_compression_on_every_python_docs_validation_document(docs_texts):
  bpe = tokenizer.train_bpe(docs_texts["train"], vocab_size=4096)
  assert bpe.vocab_size == 4096
  validation = docs_texts["validation"]
  assert len(validation) > 50
  for tok in (bpe, tokenizer.ByteTokenizer()):
    encoded = tok.encode_batch(validation)
    assert [tok.decode(ids) for ids in encoded] == validation
  chars = sum(map(len, validation))
  bpe_tokens = sum(map(len, bpe.encode_batch(validation)))
  assert 3.0 < chars / bpe_tokens < 4.5  # measured 3.43 on CPython 3.11


def test_train_tokenizer_command_writes_a_loadable_tokenizer(data_dir, tmp_path):
  workdir = tmp_path / "run"
  result = run_python(["experiments/train_tokenizer.py", f"--workdir={workdir}",
                       f"--data_dir={data_dir}", "--vocab_size=512"])
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1 and "vocab_size 512" in lines[0], result.stdout
  assert "characters/token" in lines[0]
  tok = tokenizer.load(str(workdir / "tokenizer.json"))
  assert isinstance(tok, tokenizer.BPETokenizer) and tok.vocab_size == 512
  assert tok.decode(tok.encode("Module json\n\nJSON 🙂")) == "Module json\n\nJSON 🙂"

  result = run_python(["experiments/train_tokenizer.py", f"--workdir={workdir}", "--kind=byte",
                       f"--data_dir={data_dir}"])
  assert "vocab_size 259" in result.stdout and "1.00 characters/token" in result.stdout
  assert isinstance(tokenizer.load(str(workdir / "tokenizer.json")), tokenizer.ByteTokenizer)


@pytest.mark.parametrize("args, message", [
    (["--vocab_size=100"], "--vocab_size=100: expected at least 259"),
    (["--kind=wordpiece"], "flag --kind=wordpiece: value should be one of <bpe|byte>"),
    (["--dataset=nope"], "--dataset='nope' is unknown"),
])
def test_train_tokenizer_command_rejects_bad_values_in_one_line(args, message, tmp_path):
  result = run_python(["experiments/train_tokenizer.py", f"--workdir={tmp_path}", *args],
                      check=False)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith("effcomp: error: ") and message in lines[0]
  assert not (tmp_path / "tokenizer.json").exists()
