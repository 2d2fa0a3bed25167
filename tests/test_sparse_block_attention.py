"""Shift Sparse Block Attention: equal to masked dense attention, Swin's shifted windows,
alternating shifts in DiT, the dense DiT when one block is the whole grid, counts."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.metrics.flops import jaxpr_macs
from effcomp.models.dit.dit import DiT
from effcomp.models.sr.swinir import shifted_window_mask, window_partition
from effcomp.nn.downsampled_attention import multi_head_attention
from effcomp.nn.sparse_block_attention import (SparseBlockAttention, attention_macs,
                                               block_attention, equivalent_mask, sparsity)

HEIGHT, WIDTH, BLOCK, WIDTH_C, HEADS = 8, 12, 4, 32, 4  # a non-square grid, 3 × 2 blocks
DIT = dict(input_size=16, patch_size=2, in_channels=4, hidden_size=32, depth=4, num_heads=4,
           num_classes=10)  # 8×8 token grid


def _normal(shape, seed, scale=1.0):
  return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _randomize(params, seed=1, scale=0.2):
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(tree, [_normal(leaf.shape, seed + i, scale)
                                   for i, leaf in enumerate(leaves)])


def _masked_dense(params, x, mask, heads):
  """Reference: timm-style attention, qkv → per-head softmax(q·kᵀ/√d) over the keys `mask`
  allows → out projection, in float64 numpy."""
  x = np.asarray(x, np.float64)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, n, c = x.shape
  d = c // heads
  qkv = (x @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(b, n, 3, heads, d)
  q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [B, heads, N, d]
  logits = np.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(d), -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  out = (weights / weights.sum(-1, keepdims=True)) @ v
  return out.transpose(0, 2, 1, 3).reshape(b, n, c) @ p["out"]["kernel"] + p["out"]["bias"]


def _ssba(shift, block=BLOCK):
  return SparseBlockAttention(HEADS, HEIGHT, WIDTH, block, shift)


def _ssba_params(seed=1):
  x = jnp.zeros((2, HEIGHT * WIDTH, WIDTH_C))
  return _randomize(nn.unbox(_ssba(0).init(jax.random.key(0), x)["params"]), seed)


@pytest.mark.parametrize("shift", [0, BLOCK // 2])
def test_ssba_equals_dense_attention_with_the_equivalent_mask(shift):
  params, x = _ssba_params(), _normal((2, HEIGHT * WIDTH, WIDTH_C), 7)
  got = np.asarray(jax.jit(_ssba(shift).apply)({"params": params}, x))
  mask = equivalent_mask(HEIGHT, WIDTH, BLOCK, shift)
  np.testing.assert_allclose(got, _masked_dense(params, x, mask, HEADS), rtol=1e-4, atol=1e-5)
  # The mask matters: full attention gives a clearly different output.
  dense = _masked_dense(params, x, np.ones_like(mask), HEADS)
  assert np.max(np.abs(got - dense)) > 1e-2


def test_block_attention_on_heads_equals_masked_softmax_attention():
  q, k, v = (_normal((2, HEADS, HEIGHT * WIDTH, 8), s) for s in (1, 2, 3))
  mask = equivalent_mask(HEIGHT, WIDTH, BLOCK, BLOCK // 2)
  logits = jnp.where(mask, jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(8), -jnp.inf)
  want = jax.nn.softmax(logits, axis=-1) @ v
  got = block_attention(q, k, v, HEIGHT, WIDTH, BLOCK, BLOCK // 2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("height, width, block, shift", [(8, 12, 4, 2), (16, 16, 8, 4),
                                                         (8, 8, 8, 4), (12, 8, 4, 0)])
def test_equivalent_mask_is_swins_cyclic_shift_with_its_mask(height, width, block, shift):
  """Swin: roll the map by −s, attend inside b×b windows where its additive mask is 0. The
  pairs that attend, mapped back to original positions, are the equivalent mask."""
  rolled = np.arange(height * width).reshape(1, height, width, 1)
  rolled = np.roll(rolled, (-shift, -shift), axis=(1, 2))  # original index at each position
  ids = np.asarray(window_partition(jnp.asarray(rolled), block)).reshape(-1, block * block)
  allowed = (shifted_window_mask(height, width, block, shift) == 0 if shift else
             np.ones((len(ids), block * block, block * block), bool))
  swin = np.zeros((height * width, height * width), bool)
  for window, ok in zip(ids, allowed):
    swin[np.ix_(window, window)] = ok
  np.testing.assert_array_equal(equivalent_mask(height, width, block, shift), swin)


def test_shift_alternates_across_dit_blocks():
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, SparseBlockAttention) and context.method_name == "__call__":
      m = context.module
      seen[m.scope.path[0]] = (m.block, m.shift, m.height, m.width)
    return next_fun(*args, **kwargs)

  model = DiT(**DIT, attention="ssba:4")
  inputs = (jnp.zeros((1, 16, 16, 4)), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))
  assert seen == {"blocks_0": (4, 0, 8, 8), "blocks_1": (4, 2, 8, 8),
                  "blocks_2": (4, 0, 8, 8), "blocks_3": (4, 2, 8, 8)}


def _dit_inputs(batch=2, size=16):
  rng = np.random.default_rng(0)
  return (_normal((batch, size, size, 4), 0), jnp.asarray(rng.integers(0, 1000, batch)),
          jnp.asarray(rng.integers(0, 10, batch)))


def test_ssba_dit_has_the_dense_parameter_tree_and_differs_in_output():
  dense, sparse = DiT(**DIT), DiT(**DIT, attention="ssba:4")
  inputs = _dit_inputs()
  p_dense = jax.jit(dense.init)(jax.random.key(0), *inputs)["params"]
  p_sparse = jax.jit(sparse.init)(jax.random.key(0), *inputs)["params"]
  assert jax.tree.structure(p_dense) == jax.tree.structure(p_sparse)
  assert nn.get_partition_spec(p_dense) == nn.get_partition_spec(p_sparse)
  jax.tree.map(np.testing.assert_array_equal, nn.unbox(p_dense), nn.unbox(p_sparse))
  params = _randomize(nn.unbox(p_dense))
  outs = [jax.jit(m.apply)({"params": params}, *inputs) for m in (dense, sparse)]
  assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) > 1e-3


def test_one_block_covering_the_grid_with_shift_0_is_the_dense_dit():
  config = {**DIT, "input_size": 8, "depth": 1}  # one block: shift 0; 4×4 token grid
  dense, sparse = DiT(**config), DiT(**config, attention="ssba:4")
  inputs = _dit_inputs(size=8)
  params = _randomize(nn.unbox(jax.jit(dense.init)(jax.random.key(0), *inputs)["params"]))
  want = jax.jit(dense.apply)({"params": params}, *inputs)
  np.testing.assert_array_equal(jax.jit(sparse.apply)({"params": params}, *inputs), want)


@pytest.mark.parametrize("height, width, block, shift, expected",
                         [(16, 16, 8, 0, 0.75), (16, 16, 8, 4, 1 - 9216 / 256 ** 2),
                          (8, 12, 4, 2, 1 - 960 / 96 ** 2), (8, 8, 8, 0, 0.0)])
def test_sparsity_is_the_share_of_pairs_the_mask_leaves_out(height, width, block, shift,
                                                           expected):
  mask = equivalent_mask(height, width, block, shift)
  assert sparsity(height, width, block, shift) == pytest.approx(1 - mask.mean(), abs=1e-12)
  assert sparsity(height, width, block, shift) == pytest.approx(expected, abs=1e-12)


def test_attention_macs_by_hand_and_as_traced():
  # 16×16 grid, dim 32. Dense: q·kᵀ and attn·v, 256² pairs × 32 each. Unshifted 8×8 blocks:
  # 4 blocks × 64² pairs. Shift 4: cuts at 4, 12 → pieces 4×4 (×4, 16 tokens), 4×8 and
  # 8×4 (×4, 32 tokens), 8×8 (×1): 4·16² + 4·32² + 64² = 9216 pairs.
  assert attention_macs(16, 16, 32) == 2 * 256 * 256 * 32 == 4_194_304
  assert attention_macs(16, 16, 32, 8) == 2 * 4 * 64 * 64 * 32 == 1_048_576
  assert attention_macs(16, 16, 32, 8, 4) == 2 * 9216 * 32 == 589_824
  q = jnp.zeros((1, 4, 256, 8))  # 4 heads × 8 = dim 32
  assert jaxpr_macs(multi_head_attention, q, q, q) == attention_macs(16, 16, 32)
  for shift in (0, 4):
    traced = jaxpr_macs(lambda a: block_attention(a, a, a, 16, 16, 8, shift), q)
    assert traced == attention_macs(16, 16, 32, 8, shift)


def test_gradients_flow_through_shifted_blocks():
  params, x = _ssba_params(), _normal((2, HEIGHT * WIDTH, WIDTH_C), 7)
  module = _ssba(BLOCK // 2)

  def loss(p, x):
    return jnp.sum(module.apply({"params": p}, x) ** 2)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  for g in jax.tree.leaves(grads):
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0
  assert float(jnp.min(jnp.max(jnp.abs(grads[1]), axis=-1))) > 0  # every token gets one


def test_bad_block_shift_or_attention_raise_value_errors_naming_them():
  x = jnp.zeros((1, HEIGHT * WIDTH, WIDTH_C))
  with pytest.raises(ValueError, match="block=5"):
    SparseBlockAttention(HEADS, HEIGHT, WIDTH, 5).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="block=3"):  # divides 12, not 8
    SparseBlockAttention(HEADS, HEIGHT, WIDTH, 3).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="shift=4"):
    SparseBlockAttention(HEADS, HEIGHT, WIDTH, 4, 4).init(jax.random.key(0), x)
  inputs = _dit_inputs(batch=1)
  with pytest.raises(ValueError, match="block=3"):
    jax.eval_shape(lambda: DiT(**DIT, attention="ssba:3").init(jax.random.key(0), *inputs))
  for spec in ("sparse", "ssba:", "ssba:0", "ssba:x"):
    with pytest.raises(ValueError, match="attention="):
      jax.eval_shape(lambda: DiT(**DIT, attention=spec).init(jax.random.key(0), *inputs))
