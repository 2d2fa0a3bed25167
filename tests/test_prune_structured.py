"""Structured pruning: a smaller Llama computing exactly what the masked dense one does, the
Wanda-sp and Taylor scores against direct computations, and per-layer widths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.models.lm import generate, llama
from effcomp.prune import structured
from effcomp.quant.ptq import blocks

E, LAYERS, HEADS, MLP, VOCAB = 32, 2, 4, 48, 64


def _setup(attention="softmax", kv=4):
  model = llama.Llama(vocab_size=VOCAB, num_layers=LAYERS, embed_dim=E, num_heads=HEADS,
                      num_kv_heads=kv, mlp_dim=MLP, tie_embeddings=False, attention=attention)
  tokens = jax.random.randint(jax.random.key(0), (8, 13), 0, VOCAB)
  params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
  calib = [np.asarray(tokens[:4]), np.asarray(tokens[4:])]
  return model, params, calib, tokens


def _logits(model, params, tokens):
  return model.apply({"params": params}, tokens)


CASES = [("softmax", 4, "wanda_sp"), ("softmax", 4, "taylor"), ("softmax", 2, "wanda_sp"),
         ("softmax", 2, "taylor"), ("retention", 4, "wanda_sp"), ("retention", 2, "taylor")]


@pytest.mark.parametrize("attention,kv,score", CASES)
def test_pruned_model_equals_the_masked_dense_model(attention, kv, score):
  model, params, calib, tokens = _setup(attention, kv)
  small, small_params, report = structured.prune_structured(model, params, calib, score, 0.5,
                                                            0.25)
  g = HEADS // kv
  assert small.layer_heads == (HEADS // 2,) * LAYERS and small.layer_mlp == (36,) * LAYERS
  assert report["kv_heads"] == (kv // 2,) * LAYERS
  masked = structured.structured_mask(model, params, report["selection"])
  np.testing.assert_allclose(_logits(small, small_params, tokens),
                             _logits(model, masked, tokens), atol=1e-5, rtol=0)
  # Every kv group of q/k/v/o (+ g) weights: (3 + retention)·E·g·d minus the shared k/v
  # (one kv head, E·d each), per MLP channel 3·E.
  d = E // HEADS
  per_group = E * d * (g * (3 if attention == "retention" else 2) + 2)
  removed = LAYERS * ((kv // 2) * per_group + (MLP - 36) * 3 * E)
  assert report["params_before"] - report["params_after"] == removed
  assert report["params_after"] == llama.num_params(small_params)
  assert report["seconds"] > 0
  # the kept heads are whole kv groups, and the masked model differs from the dense one
  for heads in report["selection"].heads:
    assert (heads.reshape(-1, g) // g == heads.reshape(-1, g)[:, :1] // g).all()
  assert not np.allclose(_logits(model, params, tokens), _logits(model, masked, tokens))


def test_retention_keeps_each_kept_heads_own_decay():
  model, params, calib, tokens = _setup("retention")
  sel = structured.Selection((np.array([1, 3]), np.array([0, 2])), (np.arange(MLP),) * 2)
  small, small_params = structured.slice_params(model, params, sel)
  assert small.layer_head_ids == ((1, 3), (0, 2))
  masked = structured.structured_mask(model, params, sel)
  np.testing.assert_allclose(_logits(small, small_params, tokens),
                             _logits(model, masked, tokens), atol=1e-5, rtol=0)
  wrong = small.clone(layer_head_ids=())  # γ of heads 0, 1 instead of 1, 3
  assert not np.allclose(_logits(wrong, small_params, tokens), _logits(model, masked, tokens))


def _np_wanda_sp(w, x, group):
  """FLAP prune_wanda_sp in NumPy: (|W|·sqrt(mean_tokens x²)).mean(out), summed per group."""
  x = np.asarray(x, np.float64).reshape(-1, w.shape[0])
  metric = (np.abs(np.asarray(w, np.float64)) * np.sqrt((x ** 2).mean(0))[:, None]).mean(1)
  return metric.reshape(-1, group).sum(1)


def test_wanda_sp_scores_and_choice_match_numpy_block_by_block():
  model, params, calib, _ = _setup(kv=2)
  sel = structured.select(model, params, calib, "wanda_sp", 0.5, 0.25)
  bm = blocks.for_llama(model)
  hs = [bm.embed(params, b) for b in calib]
  for i in range(LAYERS):
    caps = [bm.block(i, params, h, b, capture=True)[1] for h, b in zip(hs, calib)]
    o, down = f"layers_{i}/attn/o/kernel", f"layers_{i}/mlp/down/kernel"
    xo = np.concatenate([np.asarray(c[o]).reshape(-1, E) for c in caps])
    xd = np.concatenate([np.asarray(c[down]).reshape(-1, MLP) for c in caps])
    ref_h = _np_wanda_sp(blocks.get_path(params, o), xo, 2 * (E // HEADS))
    ref_c = _np_wanda_sp(blocks.get_path(params, down), xd, 1)
    got_h, got_c = structured.wanda_sp_scores(
        blocks.get_path(params, o), jnp.asarray((xo ** 2).mean(0)),
        blocks.get_path(params, down), jnp.asarray((xd ** 2).mean(0)), 2, E // HEADS)
    np.testing.assert_allclose(got_h, ref_h, rtol=1e-5)
    np.testing.assert_allclose(got_c, ref_c, rtol=1e-5)
    best = int(np.argmax(ref_h))
    np.testing.assert_array_equal(sel.heads[i], [2 * best, 2 * best + 1])
    np.testing.assert_array_equal(sel.channels[i], np.sort(np.argsort(ref_c)[12:]))
    # block i + 1 sees the output of the pruned block i
    params = structured._mask_layer(model, params, i, sel.heads[i], sel.channels[i])
    hs = [bm.block(i, params, h, b) for h, b in zip(hs, calib)]


@pytest.mark.parametrize("mode", structured.TAYLOR)
def test_taylor_scores_match_a_direct_gradient(mode):
  model, params, calib, _ = _setup(kv=2)

  def loss(p, t):
    logp = jax.nn.log_softmax(model.apply({"params": p}, t)[:, :-1], -1)
    return -jnp.take_along_axis(logp, t[:, 1:, None], -1).mean()

  grads = [jax.grad(loss)(params, jnp.asarray(t)) for t in calib]
  heads, channels = structured.taylor_scores(model, params, calib, mode)
  red = ((lambda s, ax: np.abs(s).sum(ax)) if mode == "param_first"
         else (lambda s, ax: np.abs(s.sum(ax))))
  for i in range(LAYERS):
    def sal(name):
      path = f"layers_{i}/{name}/kernel"
      g = sum(np.asarray(blocks.get_path(gr, path), np.float64) for gr in grads) / 2
      return np.asarray(blocks.get_path(params, path), np.float64) * g
    ref = sum(red(sal(f"attn/{n}"), 0).reshape(2, -1).sum(1) for n in "qkv")
    ref = ref + red(sal("attn/o"), 1).reshape(2, -1).sum(1)
    np.testing.assert_allclose(heads[i], ref, rtol=1e-4)
    ref = red(sal("mlp/gate"), 0) + red(sal("mlp/up"), 0) + red(sal("mlp/down"), 1)
    np.testing.assert_allclose(channels[i], ref, rtol=1e-4)


def test_taylor_first_order_term_matches_a_finite_difference():
  """Σ_group W·∂L/∂W is the derivative of L along the group's weights (Eq. 4's ΔL)."""
  model, params, calib, _ = _setup()
  tokens = jnp.asarray(calib[0])
  path = "layers_1/mlp/down/kernel"
  w = blocks.get_path(params, path)
  grad = blocks.get_path(jax.grad(lambda p: structured.lm_loss(model, p, tokens))(params), path)
  rows = np.zeros((MLP, 1), np.float32)
  rows[:8] = 1  # channels 0 … 7
  along = lambda t: structured.lm_loss(model, blocks.set_path(params, path, w * (1 + t * rows)),
                                       tokens)
  eps = 0.05
  fd = (along(eps) - along(-eps)) / (2 * eps)
  np.testing.assert_allclose(float(jnp.sum(w * grad * rows)), float(fd), rtol=2e-2, atol=1e-5)


@pytest.mark.slow  # ≈ 20 s of decoding compiles: make test-slow
def test_pruned_model_inits_runs_and_decodes_with_a_cache():
  model = llama.Llama(vocab_size=VOCAB, num_layers=3, embed_dim=E, num_heads=HEADS,
                      num_kv_heads=2, mlp_dim=MLP, layer_heads=(2, 4, 2), layer_mlp=(8, 48, 20))
  tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, VOCAB)
  params = nn.unbox(model.init(jax.random.key(3), tokens)["params"])
  assert params["layers_0"]["attn"]["q"]["kernel"].shape == (E, 2 * 8)
  assert params["layers_0"]["attn"]["k"]["kernel"].shape == (E, 8)
  assert params["layers_2"]["mlp"]["down"]["kernel"].shape == (20, E)
  cache = model.init_cache(2, 16)
  assert [c["k"].shape[2] for c in cache["layers"]] == [1, 2, 1]
  full = _logits(model, params, tokens)
  logits, cache = model.apply({"params": params}, tokens[:, :5], cache=cache)
  pieces = [logits]
  for i in range(5, 12):
    logits, cache = model.apply({"params": params}, tokens[:, i:i + 1], cache=cache)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, 1), full, atol=1e-5)
  out = generate.generate(model, params, tokens[:, :4], max_new_tokens=4, rng=jax.random.key(4))
  seq = tokens[:, :4]
  for _ in range(4):
    nxt = jnp.argmax(_logits(model, params, seq)[:, -1], -1)
    seq = jnp.concatenate([seq, nxt[:, None].astype(seq.dtype)], 1)
  np.testing.assert_array_equal(out, seq)


def test_full_per_layer_widths_leave_the_model_unchanged():
  model, params, _, tokens = _setup(kv=2)
  same = model.clone(layer_heads=(HEADS,) * LAYERS, layer_mlp=(MLP,) * LAYERS)
  init = nn.unbox(same.init(jax.random.key(1), tokens)["params"])
  jax.tree.map(np.testing.assert_array_equal, init, params)
  np.testing.assert_array_equal(_logits(same, params, tokens), _logits(model, params, tokens))


@pytest.mark.parametrize("kwargs,name", [({"heads_ratio": 1.0}, "heads_ratio"),
                                         ({"mlp_ratio": -0.1}, "mlp_ratio"),
                                         ({"score": "l2"}, "score"),
                                         ({"options": {"iterative": 2}}, "options")])
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
  model, params, calib, _ = _setup()
  with pytest.raises(ValueError, match=name):
    structured.prune_structured(model, params, calib, **kwargs)


def test_bad_layer_widths_raise():
  tokens = jnp.zeros((1, 4), jnp.int32)
  for kw in ({"layer_heads": (3, 4)}, {"layer_heads": (4,)}, {"layer_mlp": (0, 8)}):
    model = llama.Llama(vocab_size=VOCAB, num_layers=2, embed_dim=E, num_heads=HEADS,
                        num_kv_heads=2, mlp_dim=MLP, **kw)
    with pytest.raises(ValueError, match="layer"):
      model.init(jax.random.key(0), tokens)


def test_global_pruning_ranks_over_layers_and_keeps_every_layer():
  model, params, calib, tokens = _setup()
  small, small_params, report = structured.prune_structured(
      model, params, calib, "taylor", 0.5, 0.5, {"global": True})
  assert sum(small.layer_heads) == LAYERS * HEADS // 2 and min(small.layer_heads) >= 1
  assert sum(small.layer_mlp) == LAYERS * MLP // 2 and min(small.layer_mlp) >= 1
  heads, channels = structured.taylor_scores(model, params, calib)
  flat = np.concatenate(channels)
  kept = np.concatenate([c + i * MLP for i, c in enumerate(report["selection"].channels)])
  assert flat[kept].min() >= np.delete(flat, kept).max()
  masked = structured.structured_mask(model, params, report["selection"])
  np.testing.assert_allclose(_logits(small, small_params, tokens),
                             _logits(model, masked, tokens), atol=1e-5, rtol=0)


def test_block_view_of_the_pruned_model_equals_the_model():
  model, params, calib, tokens = _setup(kv=2)
  small, small_params, _ = structured.prune_structured(model, params, calib, "wanda_sp", 0.5,
                                                       0.5)
  bm = blocks.for_llama(small)
  h = bm.embed(small_params, tokens)
  for i in range(bm.num_blocks):
    h = bm.block(i, small_params, h, tokens)
  np.testing.assert_allclose(bm.head(small_params, h, tokens),
                             _logits(small, small_params, tokens), atol=1e-5, rtol=0)
