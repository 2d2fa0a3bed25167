"""SmoothQuant and AWQ at the matrix level: exact folding, lower quantized error, and
searches that return what their losses say is best."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.quant.fake_quant import QuantConfig, QuantSpec, quantize_activation, quantize_weight
from effcomp.quant.ptq import awq
from effcomp.quant.ptq import smoothquant as sq

W4G32 = QuantSpec(bits=4, granularity="group", group_size=32)
# One compiled call per shape instead of op-by-op dispatch: keeps the file fast.
fake_quant_w = jax.jit(quantize_weight, static_argnames="spec")
fake_quant_x = jax.jit(quantize_activation, static_argnames="spec")
W3 = QuantSpec(bits=3, granularity="channel")


def _acts(seed, tokens, n_in, channels=(), gain=1.0):
  """Gaussian activations [tokens, n_in]; `channels` multiplied by `gain`."""
  x = np.random.default_rng(seed).normal(size=(tokens, n_in)).astype(np.float32)
  x[:, list(channels)] *= gain
  return x


def _kernels(seed, n_in, outs):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(n_in, o)) / np.sqrt(n_in)).astype(np.float32) for o in outs]


def _rel(approx, exact):
  approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
  return float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))


def _awq_mse(x, kernels, s, spec):
  """The reference's loss, written out: mean (X·W − (X / s)·Q(diag(s)·W))² in float64."""
  x, s = np.asarray(x, np.float64), np.asarray(s)
  exact = np.concatenate([x @ w for w in kernels], axis=1)
  quant = np.concatenate([(x / s) @ np.asarray(fake_quant_w(w * s[:, None], spec),
                                               np.float64) for w in kernels], axis=1)
  return float(np.mean((exact - quant) ** 2))


# --- SmoothQuant -------------------------------------------------------------------


def test_act_absmax_is_the_max_over_all_tokens_and_streams():
  x = _acts(0, 24, 8, channels=(2,), gain=-50.0).reshape(2, 12, 8)
  expected = np.abs(x).reshape(-1, 8).max(axis=0)
  np.testing.assert_array_equal(sq.act_absmax(x), expected)
  running = None
  for batch in np.split(x.reshape(-1, 8), 4):
    running = sq.update_act_absmax(running, batch)
  np.testing.assert_array_equal(running, expected)


def test_smooth_scales_follow_eq4_with_the_reference_clamps():
  act_max = np.array([4.0, 0.0, 9.0, 1.0], np.float32)
  w1 = np.array([[1.0, -2.0], [0.0, 0.0], [0.5, 0.1], [0.25, 0.0]], np.float32)
  w2 = np.array([[0.5], [0.0], [-3.0], [0.0]], np.float32)
  s = sq.smooth_scales(act_max, [w1, w2], alpha=0.5)
  w_max = np.maximum(np.array([2.0, 0.0, 3.0, 0.25]), 1e-5)  # max over both kernels
  expected = np.maximum(np.sqrt(act_max) / np.sqrt(w_max), 1e-5)
  np.testing.assert_allclose(s, expected, rtol=1e-6)
  np.testing.assert_allclose(sq.smooth_scales(act_max, [w1, w2], alpha=1.0),
                             np.maximum(act_max, 1e-5), rtol=1e-6)


@pytest.mark.parametrize("producer", ["rmsnorm", "layernorm", "dense"])
def test_smoothing_preserves_the_float_output(producer):
  rng = np.random.default_rng(1)
  n_in = 48
  h = _acts(2, 32, n_in)  # the normalized input (or the previous Dense's input)
  boost = np.where(np.isin(np.arange(n_in), [5, 30]), 40.0, 1.0)  # outlier channels
  gamma = (rng.uniform(0.5, 2.0, n_in) * boost).astype(np.float32)
  bias = (rng.normal(size=n_in) * boost).astype(np.float32)
  if producer == "rmsnorm":
    params, produce = gamma, lambda p: h * p
  elif producer == "layernorm":
    params = {"scale": gamma, "bias": bias}
    produce = lambda p: h * p["scale"] + p["bias"]
  else:
    params = {"kernel": (rng.normal(size=(n_in, n_in)) * boost).astype(np.float32), "bias": bias}
    produce = lambda p: h @ p["kernel"] + p["bias"]
  x = produce(params)
  kernels = _kernels(3, n_in, (48, 16, 16))

  s = sq.smooth_scales(sq.act_absmax(x), kernels, alpha=0.5)
  assert float(jnp.max(s) / jnp.min(s)) > 5.0  # far from the identity
  new_params, new_kernels = sq.apply_smoothing(params, kernels, s)
  x_smooth = produce(jax.tree_util.tree_map(np.asarray, new_params))
  np.testing.assert_allclose(x_smooth * np.asarray(s), x, rtol=1e-5, atol=1e-5)
  for w, w_new in zip(kernels, new_kernels):
    assert _rel(x_smooth @ np.asarray(w_new), x @ w) <= 1e-5


def test_smoothing_flattens_the_channel_ranges():
  x = _acts(4, 256, 64, channels=(3, 17, 40), gain=30.0)
  kernels = _kernels(5, 64, (64,))
  s = sq.smooth_scales(sq.act_absmax(x), kernels, alpha=0.5)
  spread = lambda a: float(np.max(a) / np.min(a))
  before, after = spread(sq.act_absmax(x)), spread(sq.act_absmax(x / s))
  print(f"channel max/min of max|x|: {before:.1f} → {after:.1f}")
  assert after < before / 4


def test_smoothing_lowers_w8a8_error_on_outlier_channels():
  cfg = QuantConfig.parse("w8a8")
  x = _acts(6, 256, 64, channels=(3, 17, 40), gain=30.0)
  (w,) = _kernels(7, 64, (96,))
  exact = x @ w
  plain = fake_quant_x(x, cfg.act) @ fake_quant_w(w, cfg.weight)
  s = sq.smooth_scales(sq.act_absmax(x), [w], alpha=0.5)
  _, (w_s,) = sq.apply_smoothing(None, [w], s)
  smooth = fake_quant_x(x / s, cfg.act) @ fake_quant_w(w_s, cfg.weight)
  err_plain, err_smooth = _rel(plain, exact), _rel(smooth, exact)
  print(f"W8A8 relative output error: RTN {err_plain:.4f}, SmoothQuant {err_smooth:.4f} "
        f"(ratio {err_smooth / err_plain:.3f})")
  assert err_smooth < 0.5 * err_plain


# --- AWQ scale search -----------------------------------------------------------------

SALIENT = tuple(range(0, 256, 32))  # 8 of 256 channels with 10× the mean |x|


@pytest.fixture(scope="module")
def salient_problem():
  return _acts(8, 512, 256, channels=SALIENT, gain=10.0), _kernels(9, 256, (256, 128, 128))


@pytest.mark.parametrize("spec", [W4G32, W3], ids=["w4g32", "w3"])
def test_awq_scales_up_salient_channels_and_beats_rtn(salient_problem, spec):
  x, kernels = salient_problem
  s, info = awq.search_scale(x, kernels, spec)
  s = np.asarray(s)
  rtn, scaled = _awq_mse(x, kernels, np.ones(256), spec), _awq_mse(x, kernels, s, spec)
  print(f"{spec}: α={float(info['ratio']):.2f}, AWQ/RTN output MSE = {scaled / rtn:.3f}")
  assert float(info["ratio"]) > 0
  assert np.min(s[list(SALIENT)]) > np.max(np.delete(s, SALIENT))
  assert scaled <= rtn
  np.testing.assert_allclose(float(info["errors"][0]), rtn, rtol=1e-4)


def test_awq_errors_are_the_reference_loss_and_the_ratio_its_argmin(salient_problem):
  x, kernels = salient_problem
  x, kernels = x[:128], [w[:, :32] for w in kernels]
  grid = 5
  s, info = awq.search_scale(x, kernels, W4G32, grid=grid)
  act_mean = np.abs(x).mean(axis=0).astype(np.float64)
  candidates, expected = [], []
  for i in range(grid):  # `_search_module_scale`'s scales and loss, written out
    s_i = np.maximum(act_mean ** (i / grid), 1e-4)
    candidates.append((s_i / np.sqrt(s_i.max() * s_i.min())).astype(np.float32))
    expected.append(_awq_mse(x, kernels, candidates[-1], W4G32))
  np.testing.assert_allclose(info["errors"], expected, rtol=1e-3)
  best = int(np.argmin(expected))
  np.testing.assert_allclose(float(info["ratio"]), best / grid, rtol=1e-6)
  np.testing.assert_allclose(s, candidates[best], rtol=1e-5)


def test_awq_alpha_zero_is_exactly_rtn(salient_problem):
  x, kernels = salient_problem
  s, info = awq.search_scale(x, kernels, W4G32, grid=1)
  assert float(info["ratio"]) == 0.0
  np.testing.assert_array_equal(s, np.ones(256, np.float32))
  norm = np.linspace(0.5, 2.0, 256).astype(np.float32)
  new_norm, new_kernels = awq.apply_scale(norm, kernels, s)
  np.testing.assert_array_equal(new_norm, norm)
  for w, w_new in zip(kernels, new_kernels):
    np.testing.assert_array_equal(fake_quant_w(w_new, W4G32), fake_quant_w(w, W4G32))
  # α = 0 also holds exactly for channels that are never active (0^0 = 1).
  x_dead = x.copy()
  x_dead[:, 7] = 0.0
  s_dead, _ = awq.search_scale(x_dead, kernels, W4G32, grid=1)
  np.testing.assert_array_equal(s_dead, np.ones(256, np.float32))


def test_awq_search_scale_is_jittable(salient_problem):
  x, kernels = salient_problem
  x, (w,) = x[:64], [kernels[1][:, :16]]
  eager, _ = awq.search_scale(x, [w], W3, grid=4)
  jitted = jax.jit(lambda x, w: awq.search_scale(x, [w], W3, grid=4)[0])(x, w)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)


# --- AWQ clip search ------------------------------------------------------------------


def _group_errors(x, w, spec, ratio):
  """mean over tokens of (X_g·W_g − X_g·Q(W_g))² per group and output: [groups, out]."""
  q = np.asarray(fake_quant_w(w, spec, jnp.asarray(ratio, jnp.float32)), np.float64)
  size = spec.group_size or w.shape[0]
  xg = np.asarray(x, np.float64).reshape(x.shape[0], -1, size)
  d = (q - w).reshape(-1, size, w.shape[1])
  return np.mean(np.einsum("tgi,gio->tgo", xg, d) ** 2, axis=0)


@pytest.mark.parametrize("spec", [QuantSpec(bits=3, granularity="group", group_size=32),
                                  QuantSpec(bits=4, granularity="channel")],
                         ids=["w3g32", "w4"])
def test_clip_search_picks_the_best_candidate_per_group(spec):
  x = _acts(10, 256, 128, channels=(5, 70), gain=8.0)
  (w,) = _kernels(11, 128, (48,))
  w[3, :] *= 6.0  # a few large weights that are worth clipping
  ratio = np.asarray(awq.search_clip(x, w, spec))
  groups = 128 // (spec.group_size or 128)
  assert ratio.shape == (groups, 1, 48)
  assert np.all((ratio >= 0.5) & (ratio <= 1.0))
  candidates = np.asarray(awq.clip_candidates(20, 0.5))
  best = np.min([_group_errors(x, w, spec, r) for r in candidates], axis=0)
  unclipped = _group_errors(x, w, spec, 1.0)
  chosen = _group_errors(x, w, spec, jnp.asarray(ratio))
  assert np.all(chosen <= unclipped * (1 + 1e-4) + 1e-12)
  np.testing.assert_allclose(chosen, best, rtol=1e-3, atol=1e-12)
  assert np.any(ratio < 1.0)
  exact = x @ w
  rtn = _rel(x @ np.asarray(fake_quant_w(w, spec)), exact)
  clipped = _rel(x @ np.asarray(fake_quant_w(w, spec, jnp.asarray(ratio))), exact)
  print(f"{spec}: relative output error clipped/unclipped = {clipped / rtn:.3f}")
  assert clipped < rtn


def test_clip_search_subsamples_tokens_by_stride():
  x = _acts(12, 256, 64)
  (w,) = _kernels(13, 64, (8,))
  np.testing.assert_array_equal(awq.search_clip(x, w, W3, n_sample_tokens=64),
                                awq.search_clip(x[::4], w, W3, n_sample_tokens=None))


def test_awq_pipeline_scale_then_clip_beats_rtn(salient_problem):
  x, kernels = salient_problem
  w = kernels[0]
  s, _ = awq.search_scale(x, [w], W4G32)
  _, (w_s,) = awq.apply_scale(None, [w], s)
  x_s = x / np.asarray(s)
  ratio = awq.search_clip(x_s, w_s, W4G32)
  exact = x @ w
  rtn = _rel(x @ np.asarray(fake_quant_w(w, W4G32)), exact)
  full = _rel(x_s @ np.asarray(fake_quant_w(w_s, W4G32, ratio)), exact)
  print(f"W4 g32 relative output error: RTN {rtn:.4f}, AWQ scale+clip {full:.4f}")
  assert full < rtn


# --- argument checks -------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: sq.smooth_scales(np.ones(4), [np.ones((4, 2))], alpha=1.5), "alpha"),
    (lambda: sq.smooth_scales(np.ones(4), [np.ones((3, 2))]), r"kernels\[0\]"),
    (lambda: sq.smooth_scales(np.ones(4), np.ones((4, 2))), "sequence"),
    (lambda: sq.apply_smoothing(np.ones(3), [np.ones((4, 2))], np.ones(4)), "norm leaf"),
    (lambda: sq.update_act_absmax(np.ones(3), np.ones((2, 4))), "running"),
    (lambda: awq.search_scale(np.ones((8, 4)), [np.ones((4, 2))], W3, grid=0), "grid"),
    (lambda: awq.search_scale(np.ones((8, 4)), [np.ones((5, 2))], W3), r"kernels\[0\]"),
    (lambda: awq.search_clip(np.ones((8, 4)), np.ones((4, 2)), QuantSpec(4, False, "tensor")),
     "granularity"),
    (lambda: awq.search_clip(np.ones((8, 4)), np.ones((4, 2)), W3, max_shrink=1.0),
     "max_shrink"),
    (lambda: awq.search_clip(np.ones((8, 5)), np.ones((4, 2)), W3), "x of shape"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_clip_search_handles_a_shorter_last_group():
  x = jax.random.normal(jax.random.key(0), (128, 100))
  w = jax.random.normal(jax.random.key(1), (100, 8)) * 0.1
  spec = QuantSpec(3, False, "group", 32)
  ratio = awq.search_clip(x, w, spec)
  assert ratio.shape == (4, 1, 8)
  err = lambda r: float(jnp.sum((x @ w - x @ quantize_weight(w, spec, r)) ** 2))
  assert err(ratio) <= err(1.0) + 1e-6
