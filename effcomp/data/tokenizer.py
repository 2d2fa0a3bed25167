"""Tokenizers for the language models: bytes (no training) or byte-level BPE.

    tok = tokenizer.train_bpe(texts, vocab_size=4096)   # or tokenizer.ByteTokenizer()
    ids = tok.encode("déjà vu 🙂")                       # list[int], no specials added
    tok.decode(ids) == "déjà vu 🙂"                      # any str that UTF-8 can encode
    tok.save("workdir/tokenizer.json"); tokenizer.load("workdir/tokenizer.json")

Both kinds share the special ids `PAD_ID = 0` ("<pad>"), `BOS_ID = 1` ("<s>") and
`EOS_ID = 2` ("</s>"), so packing (`effcomp.data.packing`) and the models need not
know which kind they use. `encode` never produces them: the text "<s>" is encoded as
ordinary characters, and `decode` drops special ids, so `decode(encode(x)) == x`.

* `ByteTokenizer`: UTF-8 byte b → id b + 3; vocab_size 259.
* `BPETokenizer`: byte-level BPE (GPT-2, Radford et al. 2019, §2.2) from the HF
  `tokenizers` library: the ByteLevel pre-tokenizer maps each UTF-8 byte to one of 256
  printable characters, which are all in the initial alphabet, so no text needs an
  unknown token. Training (`train_bpe`) is deterministic: the same texts give the same
  vocabulary and merges.

A tokenizer is saved as one JSON file: the `tokenizers` JSON for BPE, and
`{"effcomp_tokenizer": "byte", ...}` for bytes; `load(spec)` reads either, or takes
"byte" for the byte tokenizer.
"""

import json
import os
import tempfile
from typing import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # in id order
NUM_BYTES = 256
BYTE_KIND = "byte"


class _Specials:
  """The special ids shared by every tokenizer kind."""

  pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

  def to_json(self) -> str:
    raise NotImplementedError

  def save(self, path: str) -> None:
    """Writes `to_json()` to `path` atomically (a temporary file, then `os.replace`)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False,
                                     encoding="utf-8") as f:
      f.write(self.to_json())
    os.replace(f.name, path)


class ByteTokenizer(_Specials):
  """UTF-8 bytes as tokens: byte b → id b + 3 (after the 3 special ids)."""

  vocab_size = len(SPECIAL_TOKENS) + NUM_BYTES

  def encode(self, text: str) -> list[int]:
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    return (data.astype(np.int32) + len(SPECIAL_TOKENS)).tolist()

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`, special ids dropped; invalid UTF-8 becomes U+FFFD."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ValueError(f"ids: expected values in [0, {self.vocab_size}), got "
                       f"[{ids.min()}, {ids.max()}]")
    data = ids[ids >= len(SPECIAL_TOKENS)] - len(SPECIAL_TOKENS)
    return data.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def to_json(self) -> str:
    return json.dumps({"effcomp_tokenizer": BYTE_KIND, "vocab_size": self.vocab_size})


class BPETokenizer(_Specials):
  """Byte-level BPE around a `tokenizers.Tokenizer` whose ids 0, 1, 2 are the specials."""

  def __init__(self, tok: tokenizers.Tokenizer):
    found = tuple(tok.id_to_token(i) for i in range(len(SPECIAL_TOKENS)))
    if found != SPECIAL_TOKENS:
      raise ValueError(f"tokenizer: expected ids 0, 1, 2 to be {SPECIAL_TOKENS}, got {found}")
    # Text such as "<s>" is ordinary text; only packing inserts special ids. Not stored
    # in the JSON, so set on every construction.
    tok.encode_special_tokens = True
    self.tokenizer = tok

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in encodings]

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`, special ids dropped; invalid UTF-8 becomes U+FFFD."""
    return self.tokenizer.decode(list(ids), skip_special_tokens=True)

  def to_json(self) -> str:
    return self.tokenizer.to_str()


Tokenizer = ByteTokenizer | BPETokenizer


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
  """Trains byte-level BPE on `texts` (deterministic: same texts → same merges).

  Args:
    texts: training documents.
    vocab_size: target vocabulary size, specials and the 256 byte symbols included
      (so at least 259); fewer if the texts have no more pairs seen `min_frequency` times.
    min_frequency: a pair is merged only if it occurs at least this often.
  """
  minimum = len(SPECIAL_TOKENS) + NUM_BYTES
  if vocab_size < minimum:
    raise ValueError(f"vocab_size={vocab_size}: expected at least {minimum} (3 special "
                     f"tokens + {NUM_BYTES} bytes)")
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
      special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer=trainer)
  return BPETokenizer(tok)


def from_json(text: str, what: str = "tokenizer JSON") -> Tokenizer:
  """The tokenizer that `to_json()` wrote; `what` names the source in errors."""
  try:
    content = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{what}: not JSON ({e})") from None
  if isinstance(content, dict) and content.get("effcomp_tokenizer") == BYTE_KIND:
    return ByteTokenizer()
  if not (isinstance(content, dict) and isinstance(content.get("model"), dict)
          and content["model"].get("type") == "BPE"):
    raise ValueError(f"{what}: expected a tokenizer saved by effcomp.data.tokenizer "
                     f"(byte-level BPE from `tokenizers`, or {{'effcomp_tokenizer': 'byte'}})")
  try:
    tok = tokenizers.Tokenizer.from_str(text)
  except Exception as e:  # tokenizers raises plain Exception on a malformed file.
    raise ValueError(f"{what}: not a valid `tokenizers` JSON ({e})") from None
  return BPETokenizer(tok)


def load(spec: str) -> Tokenizer:
  """'byte' → `ByteTokenizer()`; otherwise the path of a JSON file written by `save`.

  Raises:
    FileNotFoundError: `spec` is neither 'byte' nor an existing file.
    ValueError: the file is not a tokenizer saved by this module.
  """
  if spec == BYTE_KIND:
    return ByteTokenizer()
  if not os.path.isfile(spec):
    raise FileNotFoundError(f"tokenizer={spec!r}: no such file; expected 'byte' or the path "
                            f"of a tokenizer.json (experiments/train_tokenizer.py writes one)")
  with open(spec, encoding="utf-8") as f:
    return from_json(f.read(), what=f"tokenizer={spec!r}")
