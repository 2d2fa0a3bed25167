"""Binarization gradient estimators: sign forward, each paper's surrogate backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.quant import estimators as est
from tests.conftest import run_python

SIGN_GRID = np.array([-2.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 2.0])
# x = k/100 for k in [-250, 250]: hits -1, 0 and 1 exactly in float32.
DENSE_GRID = np.arange(-250, 251) / 100.0
EXPECTED_SIGN = np.array([-1, -1, -1, -1, 1, 1, 1, 1, 1])

T_K = (0.1, 10.0)  # ede_schedule(0.5) with the default t range.


def _ede(x):
  return est.ede_sign(x, *T_K)


def _progressive(x):
  return est.progressive_tanh(x, 5.0)


SIGN_ESTIMATORS = {"ste": est.sign_ste, "clipped_ste": est.sign_clipped_ste,
                   "approx_sign": est.approx_sign, "ede": _ede}
ALL_FUNCTIONS = {**SIGN_ESTIMATORS, "progressive_tanh": _progressive}


def _reference_grad(name, x):
  """The papers' formulas, written out piecewise in float64."""
  if name == "ste":
    return np.ones_like(x)
  if name == "clipped_ste":
    return (np.abs(x) <= 1).astype(np.float64)
  if name == "approx_sign":
    return np.where((-1 <= x) & (x < 0), 2 + 2 * x, np.where((0 <= x) & (x < 1), 2 - 2 * x, 0.0))
  if name == "ede":
    t, k = T_K
    return k * t * (1 - np.tanh(t * x) ** 2)
  raise KeyError(name)


def _vjp(f, x, seed=0):
  """(w, d/dx sum(f(x) * w)) for a random cotangent w."""
  w = jax.random.normal(jax.random.PRNGKey(seed), x.shape).astype(x.dtype)
  return w, jax.grad(lambda x: jnp.sum(f(x) * w))(x)


@pytest.mark.parametrize("name", SIGN_ESTIMATORS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_is_sign_with_sign_of_zero_plus_one(name, dtype):
  y = SIGN_ESTIMATORS[name](jnp.asarray(SIGN_GRID, dtype))
  assert y.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y, np.float32), EXPECTED_SIGN)


@pytest.mark.parametrize("name", SIGN_ESTIMATORS)
def test_backward_matches_paper_formula_including_boundaries(name):
  x = jnp.asarray(DENSE_GRID, jnp.float32)
  w, g = _vjp(SIGN_ESTIMATORS[name], x)
  expected = np.asarray(w, np.float64) * _reference_grad(name, DENSE_GRID)
  np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_FUNCTIONS)
def test_bfloat16_gradient_stays_bfloat16(name):
  x = jnp.asarray(DENSE_GRID, jnp.bfloat16)
  _, g = _vjp(ALL_FUNCTIONS[name], x)
  assert g.dtype == jnp.bfloat16
  _, g32 = _vjp(ALL_FUNCTIONS[name], x.astype(jnp.float32))  # same x, w up to rounding
  np.testing.assert_allclose(np.asarray(g, np.float32), g32, rtol=2e-2, atol=2e-2)


def test_boundary_values_of_clipped_ste_and_approx_sign():
  x = jnp.array([-1.0, 0.0, 1.0])
  np.testing.assert_array_equal(jax.grad(lambda x: est.sign_clipped_ste(x).sum())(x), [1, 1, 1])
  np.testing.assert_array_equal(jax.grad(lambda x: est.approx_sign(x).sum())(x), [0, 2, 0])


@pytest.mark.parametrize("progress, t, k", [
    (0.0, 1e-3, 1e3), (0.5, 1e-1, 10.0), (1.0, 10.0, 1.0),
    (-0.3, 1e-3, 1e3), (1.7, 10.0, 1.0),  # clipped to [0, 1]
])
def test_ede_schedule_closed_form(progress, t, k):
  t_got, k_got = est.ede_schedule(progress)
  np.testing.assert_allclose([t_got, k_got], [t, k], rtol=1e-5)


def test_ede_schedule_accepts_traced_progress():
  t, k = jax.jit(est.ede_schedule)(jnp.float32(0.25))
  np.testing.assert_allclose([t, k], [10 ** -2.0, 100.0], rtol=1e-5)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_ede_backward_uses_scheduled_t_and_k(progress):
  t, k = est.ede_schedule(progress)
  x = jnp.asarray(DENSE_GRID, jnp.float32)
  w, g = _vjp(lambda x: est.ede_sign(x, t, k), x)
  t64, k64 = float(t), float(k)
  expected = np.asarray(w, np.float64) * k64 * t64 * (1 - np.tanh(t64 * DENSE_GRID) ** 2)
  np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)


def test_ede_t_and_k_get_zero_gradients_and_can_be_traced():
  x = jnp.asarray(DENSE_GRID, jnp.float32)
  loss = lambda x, t, k: jnp.sum(est.ede_sign(x, t, k) * x)
  gx, gt, gk = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, 0.1, 10.0)
  assert float(gt) == 0.0 and float(gk) == 0.0
  np.testing.assert_allclose(gx, jax.grad(loss)(x, 0.1, 10.0), rtol=1e-6)
  # The schedule itself traced inside the step, as in a training loop.
  step = jax.jit(lambda x, p: jax.grad(loss)(x, *est.ede_schedule(p)))
  np.testing.assert_allclose(step(x, 0.5), gx, rtol=1e-6)


def test_ede_accepts_per_channel_temperature():
  x = jnp.ones((3, 2)) * 0.5
  t = jnp.array([1.0, 2.0])
  g = jax.grad(lambda x: est.ede_sign(x, t, 1.0).sum())(x)
  np.testing.assert_allclose(g[0], np.array([1.0, 2.0]) * (1 - np.tanh([0.5, 1.0]) ** 2),
                             rtol=1e-6)


def _progressive_reference(z, t):
  return jnp.tanh(t * z) / jnp.tanh(t)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0, 3.0, 10.0])
def test_progressive_tanh_forward_and_backward_match_the_formula(t):
  z = jnp.asarray(DENSE_GRID, jnp.float32)
  np.testing.assert_allclose(est.progressive_tanh(z, t), _progressive_reference(z, t),
                             rtol=1e-6, atol=1e-7)
  w, g = _vjp(lambda z: est.progressive_tanh(z, t), z)
  _, g_ref = _vjp(lambda z: _progressive_reference(z, t), z)
  # atol: autodiff of the plain formula rounds 1 − tanh² to 0 where ours keeps ~1e-6.
  np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)


def test_progressive_tanh_derivative_is_accurate_where_tanh_saturates():
  # float32 1 − tanh²(10) cancels to 0; the true derivative is 20·sech²(10)/tanh(20).
  z = jnp.array([0.5, 1.0])
  g = jax.grad(lambda z: est.progressive_tanh(z, 20.0).sum())(z)
  expected = 20.0 / np.cosh(20.0 * np.array([0.5, 1.0])) ** 2 / np.tanh(20.0)
  np.testing.assert_allclose(g, expected, rtol=1e-4)


def test_progressive_tanh_approaches_sign_for_large_t():
  z = jnp.asarray(DENSE_GRID[np.abs(DENSE_GRID) >= 0.01], jnp.float32)
  assert float(jnp.max(jnp.abs(est.progressive_tanh(z, 1e4) - jnp.sign(z)))) < 1e-6


def test_progressive_tanh_is_identity_for_tiny_t():
  z = jnp.asarray(DENSE_GRID, jnp.float32)
  np.testing.assert_array_equal(est.progressive_tanh(z, 1e-8), z)
  np.testing.assert_array_equal(jax.grad(lambda z: est.progressive_tanh(z, 1e-8).sum())(z),
                                np.ones_like(z))


@pytest.mark.parametrize("t", [0.0, 1e-8, 1e-3, 1.0, 10.0, 1e4])
def test_progressive_tanh_is_finite(t):
  z = jnp.array([0.0, 1e-3, -1e-3, 1.0, -1.0, 100.0, -100.0])
  y, vjp = jax.vjp(est.progressive_tanh, z, jnp.float32(t))
  gz, gt = vjp(jnp.ones_like(y))
  assert np.all(np.isfinite(y)) and np.all(np.isfinite(gz)) and float(gt) == 0.0
  if t == 1e4:  # ∂F/∂z(0) = t / tanh(t)
    assert float(gz[0]) == pytest.approx(1e4)


@pytest.mark.parametrize("progress, t", [(0.0, 1.0), (0.5, 10 ** 1.5), (1.0, 1e3), (2.0, 1e3)])
def test_progressive_schedule_is_log_linear(progress, t):
  np.testing.assert_allclose(est.progressive_schedule(progress), t, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(est.progressive_schedule)(progress), t, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_FUNCTIONS)
def test_vmap_jit_and_grad_of_jit_agree_with_eager(name):
  f = ALL_FUNCTIONS[name]
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8)) * 1.5
  np.testing.assert_array_equal(jax.vmap(f)(x), f(x))
  np.testing.assert_array_equal(jax.jit(f)(x), f(x))
  composed = lambda x: jnp.sum(jnp.tanh(f(x * 2.0)) * x)
  np.testing.assert_allclose(jax.grad(jax.jit(composed))(x), jax.grad(composed)(x), rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(lambda r: composed(r[None])))(x),
                             jax.grad(composed)(x), rtol=1e-6)


def test_get_by_name_and_unknown_name_lists_choices():
  assert est.get("approx_sign") is est.approx_sign
  assert set(est.ESTIMATORS) == {"ste", "clipped_ste", "approx_sign"}
  with pytest.raises(ValueError, match="approx_sign, clipped_ste, ste$"):
    est.get("bogus")


def test_same_results_on_array_sharded_over_eight_devices():
  code = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tests.test_estimators import ALL_FUNCTIONS
assert jax.device_count() == 8
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
x = jax.random.normal(jax.random.PRNGKey(2), (4, 8)) * 1.5
xs = jax.device_put(x, NamedSharding(mesh, P("a", "b")))
for name, f in ALL_FUNCTIONS.items():
  loss = lambda x: jnp.sum(f(x) * jnp.cos(x))
  y, g = jax.jit(lambda x: (f(x), jax.grad(loss)(x)))(xs)
  assert len(g.sharding.device_set) == 8, name
  np.testing.assert_array_equal(y, f(x), err_msg=name)
  np.testing.assert_allclose(g, jax.grad(loss)(x), rtol=1e-6, err_msg=name)
print("sharded ok")
"""
  assert "sharded ok" in run_python(code, devices=8).stdout
