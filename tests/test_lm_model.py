"""The LLaMA-style decoder: RoPE, GQA, causality, cached decoding, sampling, sharding."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_causal, assert_greedy_generation_recomputes, run_python
from effcomp import models
from effcomp.models.lm import generate, llama

SMALL = dict(vocab_size=97, num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2)


@pytest.fixture(scope="module")
def small():
  model = llama.Llama(**SMALL)
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 3, 97)
  params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
  return model, params, tokens


def test_registered_and_shapes(small):
  model, params, tokens = small
  assert isinstance(models.build("llama", **SMALL), llama.Llama)
  attn = params["layers_0"]["attn"]
  assert attn["q"]["kernel"].shape == (64, 4 * 16)
  assert attn["k"]["kernel"].shape == (64, 2 * 16)  # GQA: 2 key/value heads
  assert attn["o"]["kernel"].shape == (64, 64)
  assert params["layers_0"]["mlp"]["gate"]["kernel"].shape == (64, 192)  # 8/3·64 → 192
  assert "lm_head" not in params  # tied
  logits = model.apply({"params": params}, tokens)
  assert logits.shape == (2, 12, 97) and logits.dtype == jnp.float32
  untied = llama.Llama(**{**SMALL, "tie_embeddings": False})
  assert nn.unbox(untied.init(jax.random.key(1), tokens)["params"])["lm_head"]["kernel"].shape == (64, 97)


def test_logical_axis_names():
  model = llama.Llama(**SMALL)
  boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  names = {"/".join(str(k.key) for k in path): leaf.names for path, leaf in
           jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]}
  assert names["embed/embedding"] == ("vocab", "embed")
  assert names["layers_1/attn/q/kernel"] == ("embed", "heads")
  assert names["layers_1/attn/k/kernel"] == ("embed", "kv")
  assert names["layers_1/attn/o/kernel"] == ("heads", "embed")
  assert names["layers_1/mlp/down/kernel"] == ("mlp", "embed")
  assert names["final_norm/scale"] == ("norm",)


def test_rope_is_a_rotation_with_relative_phase():
  x = jax.random.normal(jax.random.key(0), (1, 5, 2, 8))
  cos, sin = llama.rope_angles(jnp.arange(5)[None], 8, 10000.0)
  y = llama.apply_rope(x, cos, sin)
  assert y.shape == x.shape
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-6)  # position 0: no rotation
  # q·k depends only on the position difference.
  q, k = jax.random.normal(jax.random.key(1), (2, 8))

  def dot(pq, pk):
    c, s = llama.rope_angles(jnp.array([[pq, pk]]), 8, 10000.0)
    r = llama.apply_rope(jnp.stack([q, k])[None, :, None], c, s)[0, :, 0]
    return float(r[0] @ r[1])
  assert dot(7, 3) == pytest.approx(dot(14, 10), rel=1e-4)
  assert dot(7, 3) != pytest.approx(dot(7, 6), rel=1e-2)
  with pytest.raises(ValueError, match="even"):
    llama.rope_angles(jnp.arange(3), 7, 10000.0)


def test_gqa_equals_repeated_kv_heads():
  """Grouped-query attention = multi-head attention with each kv head repeated."""
  ks = jax.random.split(jax.random.key(2), 3)
  q = jax.random.normal(ks[0], (2, 6, 4, 8))
  k, v = (jax.random.normal(key, (2, 6, 2, 8)) for key in ks[1:])
  pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
  gqa = llama.causal_attention(q, k, v, pos, jnp.arange(6))
  mha = llama.causal_attention(q, jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2), pos, jnp.arange(6))
  np.testing.assert_allclose(gqa, mha, atol=1e-6)
  # Reference: explicit softmax with a lower-triangular mask, head by head.
  kr, vr = jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)
  s = jnp.einsum("bthd,bshd->bhts", q, kr) / np.sqrt(8)
  s = jnp.where(jnp.tril(jnp.ones((6, 6), bool)), s, -jnp.inf)
  ref = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, -1), vr)
  np.testing.assert_allclose(gqa, ref, atol=1e-5)
  with pytest.raises(ValueError, match="multiple"):
    llama.causal_attention(q[:, :, :3], k, v, pos, jnp.arange(6))


def test_causality(small):
  assert_causal(*small)


def test_cached_decoding_equals_full_forward(small):
  model, params, tokens = small
  full = model.apply({"params": params}, tokens)
  cache = model.init_cache(2, 16)
  logits, cache = model.apply({"params": params}, tokens[:, :5], cache=cache)
  pieces = [logits]
  for i in range(5, 12):
    logits, cache = model.apply({"params": params}, tokens[:, i:i + 1], cache=cache)
    pieces.append(logits)
  assert int(cache["index"]) == 12
  np.testing.assert_allclose(jnp.concatenate(pieces, 1), full, atol=1e-5)


def test_greedy_generation_equals_recomputation(small):
  model, params, tokens = small
  assert_greedy_generation_recomputes(model, params, tokens[:, :4])


def test_generation_stops_at_eos(small):
  model, params, tokens = small
  free = np.asarray(generate.generate(model, params, tokens[:, :4], max_new_tokens=8,
                                      rng=jax.random.key(3), temperature=1.0))[0, 4:]
  # EOS := the first generated token of row 0 that was not generated before it.
  j = next(i for i in range(1, 8) if free[i] not in free[:i])
  out = np.asarray(generate.generate(model, params, tokens[:, :4], max_new_tokens=8, temperature=1.0,
                                     rng=jax.random.key(3), eos_id=int(free[j]), pad_id=0))[0, 4:]
  np.testing.assert_array_equal(out[:j + 1], free[:j + 1])
  assert (out[j + 1:] == 0).all()


def test_top_p_keeps_the_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draws = jax.vmap(lambda k: generate.sample_logits(logits, k, 1.0, 0.7))(
      jax.random.split(jax.random.key(0), 2000))[:, 0]
  counts = np.bincount(np.asarray(draws), minlength=4)
  assert counts[2] == counts[3] == 0  # 0.5 + 0.3 ≥ 0.7: only the first two survive
  assert counts[0] / 2000 == pytest.approx(0.5 / 0.8, abs=0.04)
  assert int(generate.sample_logits(logits, jax.random.key(1), 0.0)[0]) == 0
  with pytest.raises(ValueError, match="top_p"):
    generate.sample_logits(logits, jax.random.key(1), 1.0, 0.0)


def test_sharded_forward_equals_single_device():
  """fsdp=2 × tensor=4 on 8 devices gives the 1-device logits (and shards the weights)."""
  code = """
import json, jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from effcomp.models.lm import llama
from effcomp.train import sharding
model = llama.Llama(vocab_size=128, num_layers=2, embed_dim=64, num_heads=8, num_kv_heads=4)
tokens = jax.random.randint(jax.random.key(0), (4, 16), 0, 128)
boxed = model.init(jax.random.key(1), tokens)
params = nn.unbox(boxed)["params"]
single = np.asarray(model.apply({"params": params}, tokens))
mesh = sharding.create_mesh({"data": 1, "fsdp": 2, "tensor": 4})
shard = sharding.tree_shardings(boxed, mesh)["params"]
sharded_params = jax.device_put(params, shard)
fwd = jax.jit(lambda p, t: model.apply({"params": p}, t),
              in_shardings=(shard, sharding.batch_sharding(mesh)))
out = np.asarray(fwd(sharded_params, jax.device_put(tokens, sharding.batch_sharding(mesh))))
q = sharded_params["layers_0"]["attn"]["q"]["kernel"]
print(json.dumps({"diff": float(np.abs(out - single).max()), "devices": jax.device_count(),
                  "q_spec": str(q.sharding.spec), "q_shard": list(q.addressable_shards[0].data.shape)}))
"""
  result = json.loads(run_python(code, devices=8).stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  assert result["q_shard"] == [32, 16]  # [64 / fsdp 2, 64 / tensor 4]
  assert result["diff"] < 1e-5, result
