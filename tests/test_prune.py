"""Pruning one layer: Wanda's and magnitude's masks against NumPy, N:M patterns, SparseGPT
against a NumPy port of the reference `SparseGPT.fasterprune`, packed masks, bad arguments."""

import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.prune import masks, sparsegpt, wanda
from effcomp.quant.ptq import hessian


def _correlated_inputs(n_in, n_tokens=512, seed=0):
  """x [tokens, in] = z·A mixed by a random A, with a few channels 10x larger."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n_tokens, n_in)) @ (rng.standard_normal((n_in, n_in)) / np.sqrt(n_in))
  x[:, [1, 7]] *= 10.0
  return x.astype(np.float32)


def _weights(n_in, n_out, seed=1):
  return np.random.default_rng(seed).standard_normal((n_in, n_out)).astype(np.float32)


def _pruned_lowest(score, k):
  """Keep mask of `score` [in, out]: each column drops its k lowest entries (stable)."""
  keep = np.ones(score.shape, bool)
  np.put_along_axis(keep, np.argsort(score, axis=0, kind="stable")[:k], False, axis=0)
  return keep


def test_wanda_score_is_weight_magnitude_times_input_norm_and_mask_is_per_output():
  rng = np.random.default_rng(0)
  xs = [rng.standard_normal((2, 5, 16)).astype(np.float32) for _ in range(3)]
  w = _weights(16, 6)
  state = wanda.init(16)
  for x in xs:
    state = wanda.update(state, jnp.asarray(x))
  rows = np.concatenate([x.reshape(-1, 16) for x in xs]).astype(np.float64)
  expected = np.abs(w) * np.sqrt(np.sum(rows**2, axis=0) / len(rows))[:, None]
  score = np.asarray(wanda.wanda_score(jnp.asarray(w), state.sq_norm))
  np.testing.assert_allclose(score, expected, rtol=1e-5)
  assert int(state.count) == 30
  for sparsity, k in ((0.5, 8), (0.3, 4)):  # int(16 · s) per output
    keep = np.asarray(masks.per_output(jnp.asarray(expected), sparsity))
    np.testing.assert_array_equal(keep, _pruned_lowest(expected, k))
    assert (np.sum(~keep, axis=0) == k).all()


def test_magnitude_mask_prunes_the_smallest_weights_of_the_whole_layer():
  w = _weights(16, 6)
  keep = np.asarray(masks.per_layer(wanda.magnitude_score(jnp.asarray(w)), 0.3))
  k = int(96 * 0.3)
  expected = np.ones(96, bool)
  expected[np.argsort(np.abs(w).reshape(-1), kind="stable")[:k]] = False
  np.testing.assert_array_equal(keep, expected.reshape(16, 6))
  assert np.count_nonzero(~keep) == 28


def test_masks_break_ties_stably():
  keep = np.asarray(masks.per_output(jnp.ones((4, 2)), 0.5))
  np.testing.assert_array_equal(keep, [[False, False], [False, False], [True, True], [True, True]])


def _check_nm(keep, n, m):
  groups = np.asarray(keep).reshape(-1, m, keep.shape[1])
  assert (np.sum(groups, axis=1) == n).all()


@pytest.mark.parametrize("nm", ["2:4", "4:8", "1:4"])
def test_nm_pattern_holds_exactly_for_wanda_and_sparsegpt(nm):
  n, m = masks.parse_nm(nm)
  x, w = _correlated_inputs(64), _weights(64, 24)
  keep = np.asarray(masks.n_m(wanda.wanda_score(jnp.asarray(w), wanda.from_inputs(x)), n, m))
  _check_nm(keep, n, m)
  w_hat, keep, _ = sparsegpt.sparsegpt_prune(w, hessian.from_inputs(x), nm=nm, block_size=16)
  _check_nm(keep, n, m)
  w_hat = np.asarray(w_hat)
  assert (w_hat[~np.asarray(keep)] == 0).all()
  _check_nm(w_hat != 0, n, m)  # kept weights stay non-zero on random data


def test_nm_keeps_the_n_highest_of_each_group():
  score = jnp.asarray([[1.0, 8.0], [4.0, 7.0], [3.0, 6.0], [2.0, 5.0]])  # [in=4, out=2]
  np.testing.assert_array_equal(masks.n_m(score, 2, 4),
                                [[False, True], [True, True], [True, False], [False, False]])


def _reference_fasterprune(w, h, sparsity, nm, blocksize, percdamp=0.01):
  """IST-DASLab/sparsegpt `SparseGPT.fasterprune` in NumPy float64, on W = wᵀ [out, in];
  the unstructured mask of a block prunes exactly int(numel · s) (effcomp's convention)."""
  W, H = w.T.astype(np.float64), np.array(h, np.float64)
  rows, columns = W.shape
  dead = np.diag(H) == 0
  H[dead, dead] = 1
  W[:, dead] = 0
  H += percdamp * np.mean(np.diag(H)) * np.eye(columns)
  Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper: HinvᵀHinv = H⁻¹
  pruned = np.zeros(W.shape, bool)
  for i1 in range(0, columns, blocksize):
    i2 = min(i1 + blocksize, columns)
    W1, Hinv1 = W[:, i1:i2].copy(), Hinv[i1:i2, i1:i2]
    Q1, Err1 = np.zeros_like(W1), np.zeros_like(W1)
    mask1 = np.zeros(W1.shape, bool)
    if nm is None:
      tmp = W1**2 / np.diag(Hinv1)[None, :]**2
      # the int(numel · s) lowest, ties in effcomp's [in, out] order
      order = np.argsort(tmp.T.reshape(-1), kind="stable")[:int(tmp.size * sparsity)]
      flat = np.zeros(tmp.size, bool)
      flat[order] = True
      mask1 = flat.reshape(tmp.shape[::-1]).T
    for i in range(i2 - i1):
      w_col, d = W1[:, i], Hinv1[i, i]
      if nm is not None and i % nm[1] == 0:
        tmp = W1[:, i:i + nm[1]]**2 / np.diag(Hinv1)[i:i + nm[1]][None, :]**2
        lowest = np.argsort(tmp, axis=1, kind="stable")[:, :nm[1] - nm[0]]
        np.put_along_axis(mask1[:, i:i + nm[1]], lowest, True, axis=1)
      q = np.where(mask1[:, i], 0.0, w_col)
      Q1[:, i] = q
      err1 = (w_col - q) / d
      W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
      Err1[:, i] = err1
    W[:, i1:i2] = Q1
    pruned[:, i1:i2] = mask1
    W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
  return W.T, ~pruned.T


@pytest.mark.parametrize("n_in,block_size,nm", [
    (48, 48, None),    # one block
    (40, 16, None),    # several blocks, a shorter last one
    (48, 48, (2, 4)),
    (48, 16, (4, 8)),
])
def test_sparsegpt_matches_numpy_port_of_reference(n_in, block_size, nm):
  x, w = _correlated_inputs(n_in), _weights(n_in, 12)
  h = np.asarray(hessian.from_inputs(x))
  w_hat, keep, _ = sparsegpt.sparsegpt_prune(w, h, 0.5, nm, block_size=block_size)
  w_ref, keep_ref = _reference_fasterprune(w, h, 0.5, nm, block_size)
  np.testing.assert_array_equal(keep, keep_ref)
  np.testing.assert_allclose(w_hat, w_ref, atol=2e-5, rtol=1e-4)
  assert np.count_nonzero(~np.asarray(keep)) == n_in * 12 // 2


def test_sparsegpt_error_is_the_damped_output_error():
  """Σ (w_i − q_i)²/(2 U_ii²) = ½ ΔᵀHΔ = ‖X Δ‖²/N + λ/2 ‖Δ‖² over the outputs."""
  x, w = _correlated_inputs(32), _weights(32, 8)
  h = np.asarray(hessian.from_inputs(x), np.float64)
  w_hat, _, info = sparsegpt.sparsegpt_prune(w, h, 0.5, block_size=8)
  delta = w.astype(np.float64) - np.asarray(w_hat, np.float64)
  lam = 0.01 * np.mean(np.diag(h))
  expected = np.sum((x.astype(np.float64) @ delta)**2) / len(x) + lam / 2 * np.sum(delta**2)
  np.testing.assert_allclose(info["error"], expected, rtol=1e-3)


def test_sparsegpt_zeroes_dead_inputs():
  x, w = _correlated_inputs(16), _weights(16, 4)
  x[:, 3] = 0.0
  w_hat, _, _ = sparsegpt.sparsegpt_prune(w, hessian.from_inputs(x), 0.25)
  assert (np.asarray(w_hat)[3] == 0).all()


@pytest.mark.parametrize("nm", [None, "2:4"])
def test_sparsegpt_output_error_is_below_wanda_and_magnitude(nm):
  x, w = _correlated_inputs(64, n_tokens=1024), _weights(64, 32)
  w_sgpt, _, _ = sparsegpt.sparsegpt_prune(w, hessian.from_inputs(x), 0.5, nm)
  w_wanda = w * np.asarray(masks.select(wanda.wanda_score(jnp.asarray(w), wanda.from_inputs(x)),
                                        0.5, nm, "output"))
  w_mag = w * np.asarray(masks.select(wanda.magnitude_score(jnp.asarray(w)), 0.5, nm, "layer"))
  err = {name: float(np.linalg.norm(x.astype(np.float64) @ (w - np.asarray(v, np.float64))))
         for name, v in (("sparsegpt", w_sgpt), ("wanda", w_wanda), ("magnitude", w_mag))}
  assert err["sparsegpt"] < err["wanda"] < err["magnitude"], err


def test_pack_unpack_round_trip():
  rng = np.random.default_rng(0)
  for shape in ((7, 5), (64, 24), (3,)):
    mask = rng.random(shape) < 0.5
    packed = masks.pack(mask)
    assert packed.bits.dtype == np.uint8 and packed.bits.shape == (-(-mask.size // 8),)
    assert packed.shape == shape
    np.testing.assert_array_equal(masks.unpack(packed), mask)
  assert masks.sparsity_of(masks.pack(np.array([True, False, False, False]))) == 0.75


@pytest.mark.parametrize("call,name", [
    (lambda: masks.per_output(jnp.ones((8, 2)), 1.0), "sparsity="),
    (lambda: masks.per_layer(jnp.ones((8, 2)), -0.1), "sparsity="),
    (lambda: masks.parse_nm("4:4"), "nm="),
    (lambda: masks.parse_nm("3:2"), "nm="),
    (lambda: masks.parse_nm("0:4"), "nm="),
    (lambda: masks.parse_nm("2-4"), "nm="),
    (lambda: masks.n_m(jnp.ones((6, 2)), 2, 4), "score of shape"),
    (lambda: masks.select(jnp.ones((8, 2)), 0.5, comparison="row"), "comparison="),
    (lambda: masks.pack(np.ones(4)), "mask of dtype"),
    (lambda: masks.unpack(masks.PackedMask(np.zeros(2, np.uint8), (4, 5))), "packed.bits"),
    (lambda: wanda.wanda_score(jnp.ones((8, 2)), jnp.ones(4)), "sq_norm of shape"),
    (lambda: sparsegpt.sparsegpt_prune(np.ones((8, 2)), np.eye(8), 1.5), "sparsity="),
    (lambda: sparsegpt.sparsegpt_prune(np.ones((8, 2)), np.eye(8), nm="2:4", block_size=6),
     "block_size="),
    (lambda: sparsegpt.sparsegpt_prune(np.ones((8, 2)), np.eye(4)), "hessian of shape"),
    (lambda: sparsegpt.sparsegpt_prune(np.ones((6, 2)), np.eye(6), nm="4:8"), "w of shape"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, name):
  with pytest.raises(ValueError, match=name):
    call()
