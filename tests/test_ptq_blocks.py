"""The block view PTQ works on: equals the model, captures linear inputs, folds scales."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.models.lm import bert, llama
from effcomp.quant import fake_quant
from effcomp.quant.ptq import blocks


def _llama(kv_heads, attention="softmax"):
  model = llama.Llama(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=kv_heads,
                      tie_embeddings=False, attention=attention)
  tokens = jax.random.randint(jax.random.key(0), (3, 10), 0, 64)
  params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
  # Norm scales away from 1 so a wrong fold shows.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * (1 + 0.5 * jax.random.uniform(jax.random.key(len(str(p))), x.shape))
      if "norm" in str(p) else x, params)
  return model, params, tokens


def _forward(bm, params, batch, act=None):
  h = bm.embed(params, batch)
  for i in range(bm.num_blocks):
    h = bm.block(i, params, h, batch, act=act)
  return bm.head(params, h, batch)


def test_llama_block_view_equals_the_model():
  model, params, tokens = _llama(2)
  bm = blocks.for_llama(model)
  np.testing.assert_allclose(_forward(bm, params, tokens), model.apply({"params": params}, tokens),
                             atol=1e-5)
  assert bm.kernels(1) == tuple(f"layers_1/{p}/kernel" for p in
                                ("attn/q", "attn/k", "attn/v", "attn/o", "mlp/gate", "mlp/up", "mlp/down"))


def test_retention_block_view_equals_the_model_and_reads_the_gate_with_qkv():
  model, params, tokens = _llama(4, "retention")
  bm = blocks.for_llama(model)
  np.testing.assert_allclose(_forward(bm, params, tokens), model.apply({"params": params}, tokens),
                             atol=1e-5)
  groups = bm.groups(0)
  assert groups[0].kernels == tuple(f"layers_0/attn/{n}/kernel" for n in "qkvg")
  assert groups[1].producers == ()  # o reads normalized, gated heads: no exact fold into v
  _, captured = bm.block(0, params, bm.embed(params, tokens), tokens, capture=True)
  assert set(captured) == set(bm.kernels(0))


def test_capture_gives_each_linear_its_input_and_act_quant_changes_the_output():
  model, params, tokens = _llama(2)
  bm = blocks.for_llama(model)
  h = bm.embed(params, tokens)
  out, captured = bm.block(0, params, h, tokens, capture=True)
  assert set(captured) == set(bm.kernels(0))
  assert captured["layers_0/mlp/down/kernel"].shape == (3, 10, model.hidden_dim)
  normed = llama.rms_norm(h, params["layers_0"]["attn_norm"]["scale"], model.norm_eps)
  np.testing.assert_allclose(captured["layers_0/attn/q/kernel"], normed, atol=1e-6)
  act = fake_quant.QuantSpec(4, granularity="token")
  quantized, captured_q = bm.block(0, params, h, tokens, act=act, capture=True)
  np.testing.assert_allclose(captured_q["layers_0/attn/q/kernel"],
                             fake_quant.quantize_activation(normed, act), atol=1e-6)
  assert float(jnp.abs(quantized - out).max()) > 1e-4
  # The whole model under the act-quant interceptor matches the block view; lm_head is skipped.
  full = blocks.apply_with_act_quant(lambda: model.apply({"params": params}, tokens), act,
                                     skip=bm.skip_act)
  np.testing.assert_allclose(full, _forward(bm, params, tokens, act), atol=1e-4)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_folding_scales_keeps_the_function(kv_heads):
  model, params, tokens = _llama(kv_heads)
  bm = blocks.for_llama(model)
  ref = model.apply({"params": params}, tokens)
  folded = params
  for i in range(bm.num_blocks):
    for group in bm.groups(i):
      if not group.producers:
        assert group.kernels == (f"layers_{i}/attn/o/kernel",) and kv_heads < 4  # GQA: no fold
        continue
      n = blocks.get_path(params, group.kernels[0]).shape[0]
      s = jnp.exp(jax.random.normal(jax.random.key(i), (n,)))
      folded = blocks.fold_scales(folded, group, s)
  assert float(jnp.abs(folded["layers_0"]["mlp"]["down"]["kernel"]
                       - params["layers_0"]["mlp"]["down"]["kernel"]).max()) > 1e-3
  np.testing.assert_allclose(model.apply({"params": folded}, tokens), ref, atol=1e-4)


def test_bert_block_view_equals_the_encoder_and_its_fold_is_exact():
  encoder = bert.BertEncoder(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=64, max_position_embeddings=16)
  ids = jax.random.randint(jax.random.key(0), (2, 9), 0, 50)
  mask = jnp.array([[1] * 9, [1] * 6 + [0] * 3])
  params = nn.unbox(encoder.init(jax.random.key(1), ids, mask)["params"])
  bm = blocks.for_bert(encoder)
  expected = bert.l2_normalize(bert.mean_pool(encoder.apply({"params": params}, ids, mask), mask))
  np.testing.assert_allclose(_forward(bm, params, (ids, mask)), expected, atol=1e-5)
  groups = bm.groups(1)
  assert [bool(g.producers) for g in groups] == [False, True, False, False]
  folded = blocks.fold_scales(params, groups[1], jnp.linspace(0.5, 2.0, 32))
  np.testing.assert_allclose(_forward(bm, folded, (ids, mask)), expected, atol=1e-5)
  with pytest.raises(ValueError, match="no producer"):
    blocks.fold_scales(params, groups[0], jnp.ones(32))
