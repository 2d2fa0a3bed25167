"""DiT: embeddings, adaLN-Zero identity at init, label dropout / CFG, and the reference forward."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effcomp.metrics.flops import count_params
from effcomp.models.dit.dit import (DIT_SIZES, DiT, DiTBlock, sincos_pos_embed_2d,
                                    timestep_embedding)
from effcomp.registry import MODELS
from effcomp.train.sharding import LOGICAL_RULES

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4,
            num_classes=10)


def _inputs(batch=2, seed=0, size=8, channels=4):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
  y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
  return x, t, y


def _key(seed=0):
  # Counter-based 'rbg' keys: on the CPU, jitting an init with threefry keys compiles ~2.5×
  # slower, and the values of the initial weights do not matter to these tests.
  return jax.random.key(seed, impl="rbg")


def _init(model, batch=2):
  """Initial params (unboxed) from one jitted init."""
  return nn.unbox(jax.jit(model.init)(_key(), *_inputs(batch))["params"])


def _normal(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _randomize(params, seed=1, scale=0.2):
  """Every parameter replaced by N(0, scale²) (numpy): breaks the zero init so that outputs
  depend on every parameter."""
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(tree, [scale * _normal(leaf.shape, seed + i)
                                   for i, leaf in enumerate(leaves)])


def test_timestep_embedding_is_the_glide_frequency_embedding():
  t = jnp.array([0.0, 1.5, 999.0])
  got = np.asarray(timestep_embedding(t, 8))
  freqs = np.exp(-math.log(10000) * np.arange(4) / 4)
  want = np.concatenate([np.cos(np.outer([0, 1.5, 999], freqs)),
                         np.sin(np.outer([0, 1.5, 999], freqs))], 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  odd = timestep_embedding(t, 7)
  assert odd.shape == (3, 7) and np.all(np.asarray(odd[:, -1]) == 0)


def test_pos_embed_first_half_encodes_the_column_second_half_the_row():
  emb = sincos_pos_embed_2d(16, 4)
  omega = 1.0 / 10000 ** (np.arange(4) / 4.0)
  row, col = 1, 2
  token = emb[row * 4 + col]
  np.testing.assert_allclose(token[:8], np.concatenate([np.sin(col * omega), np.cos(col * omega)]),
                             rtol=1e-6)
  np.testing.assert_allclose(token[8:], np.concatenate([np.sin(row * omega), np.cos(row * omega)]),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="hidden_size=18"):
    sincos_pos_embed_2d(18, 4)


@pytest.mark.parametrize("learn_sigma, channels", [(True, 8), (False, 4)])
def test_output_shape_doubles_channels_with_learn_sigma(learn_sigma, channels):
  model = DiT(**TINY, learn_sigma=learn_sigma)
  out = jax.eval_shape(lambda: model.init_with_output(_key(), *_inputs())[0])
  assert out.shape == (2, 8, 8, channels) and out.dtype == jnp.float32


def test_registered_and_sizes_match_the_reference_table():
  assert MODELS.get("dit") is DiT
  assert len(DIT_SIZES) == 12
  assert DIT_SIZES["DiT-XL/2"] == dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2)
  assert DIT_SIZES["DiT-S/8"] == dict(depth=12, hidden_size=384, num_heads=6, patch_size=8)


@pytest.fixture(scope="module")
def tiny():
  """The tiny DiT (label dropout 0.5), its initial params, randomized params, and one compiled
  forward per mode: run(params, x, t, y, force_drop_ids) and run_train(..., dropout key)."""
  model = DiT(**TINY, class_dropout_prob=0.5)
  init = _init(model)
  run = jax.jit(lambda p, x, t, y, force: model.apply({"params": p}, x, t, y,
                                                      force_drop_ids=force))
  run_train = jax.jit(lambda p, x, t, y, key: model.apply({"params": p}, x, t, y, train=True,
                                                          rngs={"dropout": key}))
  return model, init, _randomize(init), run, run_train


def test_at_init_every_block_is_the_identity_and_the_output_is_zero(tiny):
  _, init, _, run, _ = tiny
  x, t, y = _inputs()
  np.testing.assert_array_equal(run(init, x, t, y, jnp.zeros(2, jnp.int32)), 0.0)
  tokens = _normal((2, 16, 32), 3)
  c = _normal((2, 32), 4)
  block = jax.jit(DiTBlock(num_heads=4).apply)
  for i in range(TINY["depth"]):
    np.testing.assert_array_equal(block({"params": init[f"blocks_{i}"]}, tokens, c), tokens)
  # The identity comes from the zero modulation, not from the block ignoring its input.
  moved = _randomize(init)["blocks_0"]
  assert float(jnp.max(jnp.abs(block({"params": moved}, tokens, c) - tokens))) > 1e-2


def test_label_table_has_a_null_row_only_with_label_dropout():
  for prob, rows in ((0.1, 11), (0.0, 10)):
    model = DiT(**TINY, class_dropout_prob=prob)
    params = jax.eval_shape(lambda: nn.unbox(model.init(_key(), *_inputs())["params"]))
    assert params["y_embedder"]["embedding_table"]["embedding"].shape == (rows, 32)
  with pytest.raises(ValueError, match="class_dropout_prob"):
    model = DiT(**TINY, class_dropout_prob=0.0)
    jax.eval_shape(lambda: model.init(_key(), *_inputs(), force_drop_ids=jnp.array([1, 0])))


def test_forced_and_random_label_dropout_use_the_null_class(tiny):
  _, _, params, run, run_train = tiny
  x, t, y = _inputs()
  null, keep = jnp.full_like(y, 10), jnp.zeros_like(y)
  cond, uncond = run(params, x, t, y, keep), run(params, x, t, null, keep)
  assert float(jnp.min(jnp.max(jnp.abs(cond - uncond), axis=(1, 2, 3)))) > 1e-3
  forced = run(params, x, t, y, jnp.array([0, 1]))
  np.testing.assert_allclose(forced[0], cond[0], atol=1e-6)
  np.testing.assert_allclose(forced[1], uncond[1], atol=1e-6)
  dropped = []  # class_dropout_prob = 0.5: each sample is conditional or null, by the rng
  for seed in range(8):
    out = run_train(params, x, t, y, jax.random.key(seed))
    for i in range(2):
      is_null = bool(jnp.allclose(out[i], uncond[i], atol=1e-6))
      assert is_null != bool(jnp.allclose(out[i], cond[i], atol=1e-6))
      dropped.append(is_null)
  assert 0 < sum(dropped) < 16


def test_forward_with_cfg_guides_the_first_channels_of_both_halves(tiny):
  model, _, params, run, _ = tiny
  x, t, _ = _inputs()
  y = jnp.array([3, 10])  # conditional half, null half
  out = jax.jit(lambda p: model.apply({"params": p}, x, t, y, 4.0,
                                      method=DiT.forward_with_cfg))(params)
  full = run(params, jnp.concatenate([x[:1], x[:1]]), t, y, jnp.zeros(2, jnp.int32))
  guided = full[1, ..., :4] + 4.0 * (full[0, ..., :4] - full[1, ..., :4])
  np.testing.assert_allclose(out[0, ..., :4], guided, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[1, ..., :4], guided, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[..., 4:], full[..., 4:], rtol=1e-6, atol=1e-6)


def test_tiny_dit_forward_and_backward_are_finite(tiny):
  model, _, params, _, _ = tiny
  x, t, y = _inputs()

  def loss(p):
    return jnp.mean(model.apply({"params": p}, x, t, y, train=True,
                                rngs={"dropout": jax.random.key(0)}) ** 2)

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(float(value))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.linalg.norm(grads["blocks_0"]["attn"]["qkv"]["kernel"])) > 0


def test_bad_shapes_raise_value_errors_naming_the_field():
  with pytest.raises(ValueError, match="x has shape"):
    DiT(**TINY).init(_key(), jnp.zeros((1, 16, 16, 4)), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  with pytest.raises(ValueError, match="num_heads=5"):
    DiT(**{**TINY, "num_heads": 5}).init(_key(), *_inputs())


def test_dit_xl2_has_the_papers_675m_parameters():
  n = count_params(DiT(**DIT_SIZES["DiT-XL/2"]))
  # 674.83 M; the reference also counts its frozen 256×1152 position embedding (675.13 M).
  assert n == pytest.approx(675e6, rel=2e-3)


# --- The reference forward (facebookresearch/DiT models.py, timm Attention/Mlp/PatchEmbed), in
# PyTorch on NCHW, with our parameters converted to the reference layout.

def _ref_pos_embed(embed_dim, grid_size):
  grid = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
  grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])

  def one_d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def _reference_forward(p, x, t, y, cfg):
  tt = lambda a: torch.from_numpy(np.array(a, np.float32))
  lin = lambda h, d: F.linear(h, tt(d["kernel"]).T, tt(d["bias"]))
  mod = lambda h, shift, scale: h * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
  norm = lambda h: F.layer_norm(h, h.shape[-1:], eps=1e-6)
  d, ps, heads = cfg["hidden_size"], cfg["patch_size"], cfg["num_heads"]
  c_in, c_out = cfg["in_channels"], 2 * cfg["in_channels"]
  w = tt(p["x_embedder"]["kernel"]).reshape(ps, ps, c_in, d).permute(3, 2, 0, 1)
  h = F.conv2d(tt(x).permute(0, 3, 1, 2), w, tt(p["x_embedder"]["bias"]), stride=ps)
  h = h.flatten(2).transpose(1, 2) + tt(_ref_pos_embed(d, cfg["input_size"] // ps))[None]
  half = 128
  freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
  args = torch.from_numpy(np.array(t)).float()[:, None] * freqs[None]
  temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
  te = p["t_embedder"]
  c = lin(F.silu(lin(temb, te["fc1"])), te["fc2"])
  c = c + tt(p["y_embedder"]["embedding_table"]["embedding"])[torch.from_numpy(np.array(y))]
  b, n = h.shape[:2]
  for i in range(cfg["depth"]):
    blk = p[f"blocks_{i}"]
    sm, cm, gm, sf, cf, gf = lin(F.silu(c), blk["adaLN_modulation"]).chunk(6, dim=1)
    qkv = lin(mod(norm(h), sm, cm), blk["attn"]["qkv"]).reshape(b, n, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
    h = h + gm.unsqueeze(1) * lin((attn @ v).transpose(1, 2).reshape(b, n, d), blk["attn"]["out"])
    m = lin(F.gelu(lin(mod(norm(h), sf, cf), blk["fc1"]), approximate="tanh"), blk["fc2"])
    h = h + gf.unsqueeze(1) * m
  shift, scale = lin(F.silu(c), p["final_adaLN_modulation"]).chunk(2, dim=1)
  h = lin(mod(norm(h), shift, scale), p["final_linear"])
  g = int(n ** 0.5)
  h = torch.einsum("nhwpqc->nchpwq", h.reshape(b, g, g, ps, ps, c_out))
  return h.reshape(b, c_out, g * ps, g * ps).numpy()


def test_matches_the_reference_forward_in_pytorch(tiny):
  _, _, params, run, _ = tiny
  x, t, y = _inputs()
  ours = np.asarray(run(params, x, t, y, jnp.zeros(2, jnp.int32)))
  ref = _reference_forward(jax.tree.map(np.asarray, params), x, t, y, TINY)
  np.testing.assert_allclose(ours.transpose(0, 3, 1, 2), ref, rtol=1e-4, atol=1e-4)


def test_every_parameter_has_logical_axis_names_the_sharding_rules_know():
  boxed = jax.eval_shape(lambda: DiT(**TINY).init(_key(), *_inputs())["params"])
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  known = {name for name, _ in LOGICAL_RULES} | {None}
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  assert all(len(x.names) == len(x.value.shape) and set(x.names) <= known for x in leaves)
