"""LIPT: the sparse mask against the reference's literal masks, NVSM-SA against an explicit
gather / attend / scatter over each large window and (reference_order) against a PyTorch
transcription of the official NVSM_SA, the re-parameterized convs and the whole
fused model against the multi-branch training form, shapes, errors, parameter counts and
gradients."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from effcomp.models.sr.lipt import (LIPT, LIPT_SIZES, NVSMSA, RepConv, from_sparse, fuse,
                                    fuse_rep_conv, nvsm_attention, sparse_permutation,
                                    sparse_window_mask, to_sparse)
from effcomp.registry import MODELS

# Two blocks (shift 0, then 2) of two layers (the second reuses the attention maps).
TINY = dict(channels=8, depth=4, window_size=4)
# Lucien66/LIPT models/lipt_block.py, MASK('sparse'): mask_1 (window 8), mask_3 (window 16).
REFERENCE_MASK_8 = [1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1]
REFERENCE_MASK_16 = [1, 0] * 8 + [0, 1] * 8


def _key(seed=0):
  return jax.random.key(seed, impl="rbg")


def _normal(shape, seed=0, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def _random_variables(model, x, seed=0, kernel_std=0.25):
  """{'params', 'batch_stats'} for `model` on x with every value random and nonzero:
  kernels N(0, kernel_std²/fan_in) (small enough that the 6-branch convs and the residual
  stack keep activations near unit scale, so a tolerance relative to the output's maximum
  stays tight), BN scales 1 + 0.2·N, other params 0.2·N, running means 0.2·N,
  running variances U(0.5, 1.5). Shapes from `eval_shape` (no compiled init)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(_key(), x)))

  def draw(path, leaf):
    name, noise = jax.tree_util.keystr(path), rng.normal(size=leaf.shape).astype(np.float32)
    if name.endswith("['kernel']"):
      return kernel_std * noise / math.sqrt(math.prod(leaf.shape[:-1]))
    if name.endswith("['var']"):
      return rng.uniform(0.5, 1.5, size=leaf.shape).astype(np.float32)
    return float(name.endswith("['scale']")) + 0.2 * noise
  return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def _num_params(model, hw=16):
  shapes = jax.eval_shape(lambda: model.init(_key(), jnp.zeros((1, hw, hw, 3))))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nn.unbox(shapes["params"])))


def _naive_window_attention(q, v, p, shift, sparse, attn=None, reference_order=False):
  """One NVSM-SA half by explicit loops: for each p×p window (i, j), take the large 2p×2p
  window at (i·p, j·p) (wrapping around), keep the masked rows and columns, attend
  softmax(q·qᵀ)·v among those p² tokens and write each output back to the pixel its query
  came from (reference_order: to the window's own p×p pixels, in sampled order; given attn,
  the reference also takes the values from the window's own pixels)."""
  q = None if q is None else np.roll(np.asarray(q), (-shift, -shift), axis=(1, 2))
  v = np.roll(np.asarray(v), (-shift, -shift), axis=(1, 2))
  b, h, w, e = v.shape
  keep = np.flatnonzero(sparse_window_mask(p)) if sparse else np.arange(p)
  out, written, maps = np.zeros_like(v), np.zeros((h, w), int), []
  n = 0
  for bi in range(b):
    for i in range(h // p):
      for j in range(w // p):
        rows, cols = (i * p + keep) % h, (j * p + keep) % w
        own_rows, own_cols = i * p + np.arange(p), j * p + np.arange(p)
        if attn is None:
          qt = q[bi][np.ix_(rows, cols)].reshape(p * p, -1)
          logits = qt @ qt.T
          a = np.exp(logits - logits.max(-1, keepdims=True))
          a /= a.sum(-1, keepdims=True)
        else:
          a = np.asarray(attn[n])
        maps.append(a)
        n += 1
        val_rows, val_cols = ((own_rows, own_cols) if reference_order and attn is not None
                              else (rows, cols))
        y = (a @ v[bi][np.ix_(val_rows, val_cols)].reshape(p * p, e)).reshape(p, p, e)
        out_rows, out_cols = (own_rows, own_cols) if reference_order else (rows, cols)
        out[bi][np.ix_(out_rows, out_cols)] = y
        if bi == 0:
          written[np.ix_(out_rows, out_cols)] += 1
  np.testing.assert_array_equal(written, 1)  # Every pixel receives exactly one output.
  return np.roll(out, (shift, shift), axis=(1, 2)), np.stack(maps)


def test_lipt_is_registered():
  assert MODELS.get("lipt") is LIPT


@pytest.mark.parametrize("p,reference", [(8, REFERENCE_MASK_8), (16, REFERENCE_MASK_16)])
def test_sparse_mask_is_the_reference_mask(p, reference):
  np.testing.assert_array_equal(sparse_window_mask(p), np.array(reference, bool))


@pytest.mark.parametrize("p", [2, 4, 8, 16])
def test_sparse_window_has_the_dense_windows_token_count_and_spans_the_large_window(p):
  mask = sparse_window_mask(p)
  kept = np.flatnonzero(mask)
  assert mask.shape == (2 * p,)
  assert len(kept) ** 2 == p * p  # p² tokens per window: the dense window's attention cost.
  assert kept.min() == 0 and kept.max() == 2 * p - 1  # From the first to the last row.
  assert (kept < p).sum() == (kept >= p).sum() == p // 2  # Both halves of the large window.


@pytest.mark.parametrize("size,p", [(8, 8), (24, 8), (12, 4), (32, 16)])
def test_to_sparse_permutes_rows_and_columns_and_from_sparse_inverts_it(size, p):
  perm = sparse_permutation(size, p)
  np.testing.assert_array_equal(np.sort(perm), np.arange(size))
  x = _normal((2, size, 3 * p, 3))
  expected = np.asarray(x)[:, perm][:, :, sparse_permutation(3 * p, p)]
  np.testing.assert_array_equal(to_sparse(x, p), expected)
  np.testing.assert_array_equal(from_sparse(to_sparse(x, p), p), x)
  assert not np.array_equal(expected, x)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("reference_order", [False, True])
def test_nvsm_attention_equals_explicit_gather_attend_scatter(shift, sparse, reference_order):
  p = 4
  q, v, v2 = _normal((2, 8, 12, 3), 1), _normal((2, 8, 12, 5), 2), _normal((2, 8, 12, 5), 3)
  y, attn = nvsm_attention(q, v, p, sparse, shift, reference_order=reference_order)
  expected, maps = _naive_window_attention(q, v, p, shift, sparse,
                                           reference_order=reference_order)
  assert attn.shape == (2 * 2 * 3, p * p, p * p)
  np.testing.assert_allclose(attn, maps, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # A later layer reuses the maps on its own values.
  y2, _ = nvsm_attention(None, v2, p, sparse, shift, attn=attn, reference_order=reference_order)
  expected2, _ = _naive_window_attention(None, v2, p, shift, sparse, attn=attn,
                                         reference_order=reference_order)
  np.testing.assert_allclose(y2, expected2, rtol=1e-5, atol=1e-5)


def _torch_reference_half(x, p, shift, sparse, attn=None):
  """One half of Lucien66/LIPT `NVSM_SA.forward` (models/lipt_block.py), transcribed:
  x [B, C, H, W] holds [q | v] (or v alone when attn, [B·nW, p², p²], is given); half 1 goes
  through `MASK('sparse', pad_type='sparse')` (only when attention is computed). → (y, attn)."""
  b, c, h, w = x.shape
  if shift:
    x = torch.roll(x, shifts=(-shift, -shift), dims=(2, 3))
  if sparse and attn is None:
    xp = torch.nn.functional.pad(x, (0, p, 0, p))  # seq_refl_win_pad: wrap the first p.
    xp[:, :, -p:, :] = xp[:, :, :p, :]
    xp[:, :, :, -p:] = xp[:, :, :, :p]
    unfolded = xp.unfold(3, 2 * p, p).unfold(2, 2 * p, p)  # b c nh nw w-offset h-offset
    mask = torch.from_numpy(sparse_window_mask(p))
    picked = unfolded[:, :, :, :, mask, :][..., mask]
    x = picked.permute(0, 1, 2, 5, 3, 4).reshape(b, c, h, w)  # b c (nh h') (nw w')
  nh, nw = h // p, w // p
  if attn is None:  # 'b (qv c) (h dh) (w dw) -> qv (b h w) (dh dw) c'
    qv = x.reshape(b, 2, c // 2, nh, p, nw, p).permute(1, 0, 3, 5, 4, 6, 2)
    q, v = qv.reshape(2, b * nh * nw, p * p, c // 2)
    attn = (q @ q.transpose(-2, -1)).softmax(dim=-1)
  else:
    v = x.reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 3, 5, 1).reshape(-1, p * p, c)
  y = attn @ v  # '(b h w) (dh dw) c -> b c (h dh) (w dw)'
  y = y.reshape(b, nh, nw, p, p, -1).permute(0, 5, 1, 3, 2, 4).reshape(b, -1, h, w)
  if shift:
    y = torch.roll(y, shifts=(shift, shift), dims=(2, 3))
  return y, attn


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("sparse", [True, False])
def test_reference_order_matches_the_official_nvsm_sa_transcription(shift, sparse):
  p = 4
  qv, v2 = _normal((2, 8, 12, 6), 12), _normal((2, 8, 12, 3), 13)
  nchw = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2)  # noqa: E731
  y, attn = nvsm_attention(qv[..., :3], qv[..., 3:], p, sparse, shift, reference_order=True)
  expected, expected_attn = _torch_reference_half(nchw(qv), p, shift, sparse)
  np.testing.assert_allclose(attn, expected_attn.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)
  y2, _ = nvsm_attention(None, v2, p, sparse, shift, attn=attn, reference_order=True)
  expected2, _ = _torch_reference_half(nchw(v2), p, shift, sparse, expected_attn)
  np.testing.assert_allclose(y2, expected2.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


def test_nvsm_sa_splits_projections_into_dense_and_sparse_halves():
  """The fused module = 1×1 projection → [q | v] of the dense half, [q | v] of the sparse
  half → naive attention → concat → 1×1 projection; both halves cost p²×p² maps."""
  p, c, shift = 4, 6, 2
  x = _normal((1, 8, 8, c), 4)
  module = NVSMSA(window_size=p, shift=shift, fused=True)
  params = _random_variables(module, x, 5, kernel_std=1.0)["params"]
  y, (dense_map, sparse_map) = module.apply({"params": params}, x)
  h = np.asarray(x) @ params["project_inp"]["kernel"][0, 0] + params["project_inp"]["bias"]
  halves = [_naive_window_attention(h[..., k * c:k * c + c // 2],
                                    h[..., k * c + c // 2:(k + 1) * c], p, shift,
                                    sparse=k == 1)[0] for k in range(2)]
  expected = (np.concatenate(halves, -1) @ params["project_out"]["kernel"][0, 0]
              + params["project_out"]["bias"])
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
  assert dense_map.shape == sparse_map.shape == (4, p * p, p * p)


def test_rep_conv_fused_kernel_equals_the_multi_branch_output():
  x = _normal((2, 7, 9, 5), 6)
  module = RepConv(6)
  variables = _random_variables(module, x, 7)
  out = module.apply(variables, x)
  fused = fuse_rep_conv(variables["params"], variables["batch_stats"])
  assert jax.tree.map(jnp.shape, fused) == {"dbb_reparam": {"kernel": (3, 3, 5, 6), "bias": (6,)}}
  np.testing.assert_allclose(RepConv(6, fused=True).apply({"params": fused}, x), out,
                             rtol=1e-4, atol=1e-4 * float(jnp.abs(out).max()))


def test_fused_lipt_equals_unfused_lipt_on_a_size_not_a_multiple_of_the_window():
  x = jnp.asarray(np.random.default_rng(8).uniform(size=(2, 10, 7, 3)), jnp.float32)
  model = LIPT(scale=3, **TINY)
  variables = _random_variables(model, x, 9)
  out = model.apply(variables, x)  # Eager: XLA compiles the training form slowly on a CPU.
  assert out.shape == (2, 30, 21, 3)
  fused_params = fuse(variables["params"], variables["batch_stats"])
  fused_model = LIPT(scale=3, fused=True, **TINY)
  assert (jax.tree.structure(fused_params)
          == jax.tree.structure(_random_variables(fused_model, x)["params"]))
  fused_out = fused_model.apply({"params": fused_params}, x)
  np.testing.assert_allclose(fused_out, out, rtol=1e-4, atol=1e-4 * float(jnp.abs(out).max()))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_is_input_times_scale(scale):
  x = jnp.zeros((2, 13, 10, 3))
  model = LIPT(scale=scale, fused=True, **TINY)  # The unfused shapes: the fused == unfused test.
  out = jax.eval_shape(lambda: model.apply(model.init(_key(), x), x))
  assert out.shape == (2, 13 * scale, 10 * scale, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize("fields,match", [
    (dict(scale=5), "scale=5"), (dict(window_size=5), "window_size=5"),
    (dict(channels=7), "channels=7"), (dict(depth=5), "depth=5"),
    (dict(expand_ratio=0), "expand_ratio=0")])
def test_bad_configuration_raises_naming_the_field(fields, match):
  with pytest.raises(ValueError, match=match):
    LIPT(**{**TINY, **fields}).init(_key(), jnp.zeros((1, 8, 8, 3)))


def test_bad_input_raises():
  with pytest.raises(ValueError, match="NHWC"):
    LIPT(**TINY).init(_key(), jnp.zeros((1, 8, 8, 1)))


def test_default_is_lipt_small_with_the_papers_parameter_count():
  assert dict(LIPT_SIZES["small"]) == dict(channels=64, depth=10)
  assert (LIPT().channels, LIPT().depth, LIPT().window_size) == (64, 10, 8)
  assert _num_params(LIPT(fused=True)) == 2_328_396  # LIPT-Small ×2: 2.33 M (paper Table 2).
  assert _num_params(LIPT()) == 5_828_556  # The training form, with the branches and BN.
  assert _num_params(LIPT(scale=4, fused=True, **LIPT_SIZES["small_x34"])) == 2_813_104  # 2.81 M


def test_every_parameter_is_logically_partitioned():
  shapes = jax.eval_shape(lambda: LIPT(**TINY).init(_key(), jnp.zeros((1, 8, 8, 3))))
  leaves = jax.tree.leaves(shapes["params"], is_leaf=lambda a: isinstance(a, nn.Partitioned))
  assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
  assert all(len(leaf.names) == leaf.value.ndim for leaf in leaves)


@pytest.mark.slow  # end to end, ≈ 35 s: make test-slow
def test_gradients_reach_every_parameter_and_training_updates_batch_statistics():
  x = jnp.asarray(np.random.default_rng(10).uniform(size=(2, 8, 8, 3)), jnp.float32)
  model = LIPT(scale=2, remat=True, **TINY)
  variables = _random_variables(model, x, 11)

  def loss(params):
    out, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                               train=True, mutable=["batch_stats"])
    return jnp.mean(out ** 2), updates

  # Eager (op by op, each op compiled once): a jit of this gradient compiles for ~40 s.
  grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g))]
  assert not dead, dead
  for old, new in zip(jax.tree.leaves(variables["batch_stats"]),
                      jax.tree.leaves(updates["batch_stats"])):
    assert not np.allclose(old, new)
