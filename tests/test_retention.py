"""RetNet retention: parallel, recurrent and chunkwise forms, and `Llama(attention='retention')`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_causal, assert_greedy_generation_recomputes
from effcomp import config as config_lib
from effcomp import models
from effcomp.models.lm import llama
from effcomp.nn import retention

B, T, H, D = 2, 9, 3, 8
SMALL = dict(vocab_size=97, num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2,
             attention="retention")


def _qkv(seed=0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, T, H, D)), jax.random.normal(kk, (B, T, H, D)) * D ** -0.5,
          jax.random.normal(kv, (B, T, H, D)))


def _recurrent(q, k, v, gamma):
  state, outs = retention.init_state(B, H, D, D), []
  for n in range(T):
    out, state = retention.recurrent_retention(q[:, n], k[:, n], v[:, n], gamma, state)
    outs.append(out)
  return jnp.stack(outs, 1), state


@pytest.fixture(scope="module")
def small():
  model = llama.Llama(**SMALL)
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 3, 97)
  params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
  return model, params, tokens


def test_decay_rates_are_torchscales():
  np.testing.assert_allclose(retention.decay_rates(4), [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128,
                                                        1 - 1 / 256], rtol=1e-7)


def test_parallel_form_equals_the_definition_in_numpy():
  q, k, v = (np.asarray(x, np.float64) for x in _qkv())
  gamma = np.asarray(retention.decay_rates(H), np.float64)
  expected, normalized = np.zeros((B, T, H, D)), np.zeros((B, T, H, D))
  for b in range(B):
    for h in range(H):
      for n in range(T):
        row = np.array([gamma[h] ** (n - m) for m in range(n + 1)])
        scores = np.array([q[b, n, h] @ k[b, m, h] for m in range(n + 1)]) * row
        scores /= np.sqrt(row.sum())  # D̃ = D / sqrt(Σ_m D_nm)
        expected[b, n, h] = scores @ v[b, :n + 1, h]
        normalized[b, n, h] = expected[b, n, h] / max(1.0, np.abs(scores).sum())
  q, k, v = _qkv()
  gamma = retention.decay_rates(H)
  out = retention.parallel_retention(q, k, v, gamma, normalize_scores=False)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(retention.parallel_retention(q, k, v, gamma), normalized,
                             rtol=1e-5, atol=1e-5)


def test_parallel_and_recurrent_forms_agree():
  q, k, v = _qkv()
  gamma = retention.decay_rates(H)
  recurrent, state = _recurrent(q, k, v, gamma)
  parallel = retention.parallel_retention(q, k, v, gamma, normalize_scores=False)
  np.testing.assert_allclose(recurrent, parallel, rtol=1e-5, atol=1e-5)
  # The state is torchscale's kv_n = S_n / sqrt(scale_n), S_n = Σ_m γ^(n−m) k_mᵀ v_m.
  powers = gamma[:, None] ** jnp.arange(T - 1, -1, -1)[None]  # [H, T]
  s = jnp.einsum("bmhk,bmhv,hm->bhkv", k, v, powers)
  np.testing.assert_allclose(state["scale"], powers.sum(-1), rtol=1e-6)
  np.testing.assert_allclose(state["kv"], s / jnp.sqrt(powers.sum(-1))[None, :, None, None],
                             rtol=1e-5, atol=1e-5)


def test_score_normalization_is_undone_by_the_head_norm():
  q, k, v = _qkv()
  gamma = retention.decay_rates(H)
  normalized = retention.parallel_retention(q, k, v, gamma)
  raw = retention.parallel_retention(q, k, v, gamma, normalize_scores=False)
  assert np.abs(normalized - raw).max() > 0.1  # unit-variance scores: rows are divided
  recurrent, _ = _recurrent(q, k, v, gamma)
  np.testing.assert_allclose(retention.head_rms_norm(normalized, 0.0),
                             retention.head_rms_norm(recurrent, 0.0), rtol=1e-5, atol=1e-5)


def test_chunks_continue_the_recurrent_state():
  q, k, v = _qkv(1)
  gamma = retention.decay_rates(H)
  recurrent, final = _recurrent(q, k, v, gamma)
  state, outs = retention.init_state(B, H, D, D), []
  for lo, hi in ((0, 4), (4, 5), (5, T)):
    out, state = retention.chunk_retention(q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], gamma, state)
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), recurrent, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state["kv"], final["kv"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state["scale"], final["scale"], rtol=1e-6)


def test_retention_llama_has_a_gate_and_the_attention_shapes(small):
  model, params, tokens = small
  assert isinstance(models.build("llama", **SMALL), llama.Llama)
  attn = params["layers_0"]["attn"]
  assert attn["q"]["kernel"].shape == (64, 64) and attn["k"]["kernel"].shape == (64, 32)
  assert attn["g"]["kernel"].shape == (64, 64) and attn["o"]["kernel"].shape == (64, 64)
  boxed = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
  assert boxed["layers_1"]["attn"]["g"]["kernel"].names == ("embed", "heads")
  assert model.apply({"params": params}, tokens).shape == (2, 12, 97)


def test_cached_decoding_equals_full_forward(small):
  model, params, tokens = small
  full = model.apply({"params": params}, tokens)
  cache = model.init_cache(2, 16)
  assert cache["layers"][0]["kv"].shape == (2, 4, 16, 16)
  assert cache["layers"][0]["scale"].shape == (4,)
  logits, cache = model.apply({"params": params}, tokens[:, :5], cache=cache)  # chunk prefill
  pieces = [logits]
  for i in range(5, 12):
    logits, cache = model.apply({"params": params}, tokens[:, i:i + 1], cache=cache)
    pieces.append(logits)
  assert int(cache["index"]) == 12
  np.testing.assert_allclose(jnp.concatenate(pieces, 1), full, rtol=1e-5, atol=1e-5)
  cache, pieces = model.init_cache(2, 16), []
  for i in range(12):  # token by token from the start: the recurrent form only
    logits, cache = model.apply({"params": params}, tokens[:, i:i + 1], cache=cache)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, 1), full, rtol=1e-5, atol=1e-5)


def test_causal(small):
  assert_causal(*small)


@pytest.mark.slow  # ≈ 20 s (cached decoding = the full forward is a default test): make test-slow
def test_greedy_generation_equals_recomputation(small):
  model, params, tokens = small
  assert_greedy_generation_recomputes(model, params, tokens[:, :4])


def test_gradient_is_finite_and_reaches_every_retention_weight(small):
  model, params, tokens = small

  def loss(p):
    logits = model.apply({"params": p}, tokens)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]),
                                         tokens[:, 1:, None], -1))

  grads = jax.grad(loss)(params)["layers_0"]["attn"]
  for name in ("q", "k", "v", "g", "o"):
    g = np.asarray(grads[name]["kernel"])
    assert np.isfinite(g).all() and np.abs(g).max() > 0, name


def test_unknown_attention_is_a_value_error_listing_the_choices():
  model = llama.Llama(**{**SMALL, "attention": "linear"})
  with pytest.raises(ValueError, match=r"attention='linear'.*'softmax', 'retention'"):
    model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match="attention="):
    model.init_cache(1, 4)


def test_lm_tiny_config_selects_retention():
  config = config_lib.load("configs/lm_tiny.py:attention=retention")
  assert config.model.attention == "retention"
  assert config_lib.load("configs/lm_tiny.py").model.attention == "softmax"
  overridden = config_lib.load("configs/lm_tiny.py", **{"model.attention": "retention"})
  assert models.build(**overridden.model).attention == "retention"
