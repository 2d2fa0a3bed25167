"""Progressive binarization of LLM weights: F(z, t), the phase schedule, dual scaling, baselines."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.quant import estimators, progressive


def _w(shape=(48, 24), seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(0, 0.02, shape), jnp.float32)


@pytest.mark.parametrize("c, t", [(1, 1.3 * (math.exp(0.22) - 1)), (10, 1.3 * (math.exp(2.2) - 1)),
                                  (20, 1.3 * (math.exp(4.4) - 1))])
def test_phase_temperature_is_the_papers_exponential(c, t):
  assert float(progressive.phase_temperature(c)) == pytest.approx(t, rel=1e-6)


def test_phases_split_progress_evenly_and_end_at_the_last():
  progress = jnp.array([0.0, 0.0499, 0.05, 0.5, 0.9499, 0.95, 1.0, 1.7])
  np.testing.assert_array_equal(progressive.phase(progress, 20), [1, 1, 2, 11, 19, 20, 20, 20])
  with pytest.raises(ValueError, match="num_phases=1"):
    progressive.phase(0.5, 1)


def test_f_tends_to_sign_as_the_schedule_advances():
  z = jnp.linspace(-2, 2, 401)
  z = z[jnp.abs(z) > 0.05]
  gaps = [float(jnp.max(jnp.abs(progressive.progressive_sign(z, (c - 1) / 20) - jnp.sign(z))))
          for c in range(1, 21)]
  assert all(a >= b for a, b in zip(gaps, gaps[1:])), gaps  # monotone towards sign
  assert gaps[0] > 0.5 and gaps[-2] < 0.01 and gaps[-1] == 0.0  # last phase: exact sign
  np.testing.assert_array_equal(progressive.progressive_sign(z), jnp.sign(z))  # progress=None


@pytest.mark.parametrize("progress", [0.0, 0.3, 0.9])
def test_backward_is_the_true_gradient_of_the_forward(progress):
  z = jnp.linspace(-1.5, 1.5, 31)
  t = progressive.phase_temperature(progressive.phase(progress))
  reference = lambda z: jnp.sum(jnp.tanh(t * z) / jnp.tanh(t) * jnp.cos(z))
  ours = lambda z: jnp.sum(progressive.progressive_sign(z, progress) * jnp.cos(z))
  np.testing.assert_allclose(ours(z), reference(z), rtol=1e-6)
  # atol: autodiff of the reference computes 1 − tanh²(t·z) with float32 cancellation at
  # large t·z (ours is a stable sech², exact to ~1e-7 relative).
  np.testing.assert_allclose(jax.grad(ours)(z), jax.grad(reference)(z), rtol=1e-5, atol=5e-5)


def test_sign_phase_backward_is_the_derivative_of_f_at_the_last_temperature():
  z = jnp.array([-0.5, -0.01, 0.0, 0.003, 0.2])
  t = progressive.phase_temperature(20)
  expected = jax.vmap(jax.grad(lambda x: jnp.tanh(t * x) / jnp.tanh(t)))(z)
  np.testing.assert_allclose(jax.grad(lambda x: progressive.progressive_sign(x, 1.0).sum())(z),
                             expected, rtol=1e-5, atol=1e-12)


def _reference_dual(w, a, l, t):
  """w_b = a ⊗ l·α ⊙ F(w / (a α), t), α = mean_i |w / a|, in plain jnp (autodiff)."""
  w_hat = w / a[:, None]
  alpha = jnp.mean(jnp.abs(w_hat), axis=0)
  return a[:, None] * (l * alpha)[None, :] * jnp.tanh(t * w_hat / alpha) / jnp.tanh(t)


def test_dual_scaled_binarizer_equals_its_equation_with_gradients_for_all_inputs():
  w = _w()
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.uniform(0.5, 2, 48), jnp.float32)
  l = jnp.asarray(rng.uniform(0.5, 2, 24), jnp.float32)
  g = jnp.asarray(rng.normal(size=(48, 24)), jnp.float32)
  progress = 0.42
  t = progressive.phase_temperature(progressive.phase(progress))
  ours = lambda w, a, l: jnp.sum(g * progressive.binarize_weight(w, "progressive", progress, 20, a, l))
  ref = lambda w, a, l: jnp.sum(g * _reference_dual(w, a, l, t))
  np.testing.assert_allclose(ours(w, a, l), ref(w, a, l), rtol=1e-5)
  for got, want in zip(jax.grad(ours, (0, 1, 2))(w, a, l), jax.grad(ref, (0, 1, 2))(w, a, l)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)  # float32 sums over 48 rows


def test_dual_scaling_starts_at_the_fp_weight_and_ends_rank_one_scaled_signs():
  w = _w()
  a = jnp.linspace(0.5, 2.0, 48)
  l = jnp.linspace(0.8, 1.2, 24)
  z, u, v = progressive.binary_factors(w, "progressive", a, l)
  np.testing.assert_allclose(u[:, None] * v[None, :] * z, l * w, rtol=1e-5, atol=1e-8)  # F = z
  w_b = progressive.binarize_weight(w, "progressive", None, 20, a, l)
  alpha = jnp.mean(jnp.abs(w / a[:, None]), axis=0)
  np.testing.assert_allclose(w_b, a[:, None] * (l * alpha)[None, :] * jnp.sign(w), rtol=1e-6)


def test_without_dual_scaling_each_column_has_two_values_plus_minus_mean_abs():
  w = _w()
  w_b = progressive.binarize_weight(w, "progressive", None)
  alpha = jnp.mean(jnp.abs(w), axis=0)
  np.testing.assert_allclose(jnp.abs(w_b), jnp.broadcast_to(alpha, w.shape), rtol=1e-6)
  np.testing.assert_array_equal(jnp.sign(w_b), jnp.sign(w))


def test_bitnet_is_a_centred_per_tensor_sign_with_a_straight_through_gradient():
  w = _w() + 0.01
  w_b = progressive.binarize_weight(w, "bitnet")
  beta, mu = float(jnp.mean(jnp.abs(w))), float(jnp.mean(w))
  np.testing.assert_allclose(jnp.abs(w_b), beta, rtol=1e-5)
  np.testing.assert_array_equal(w_b > 0, w - mu >= 0)
  g = jnp.asarray(np.random.default_rng(2).normal(size=w.shape), jnp.float32)
  np.testing.assert_allclose(jax.grad(lambda w: jnp.sum(g * progressive.binarize_weight(w, "bitnet")))(w), g)


def test_xnor_scales_each_output_channel_by_its_mean_abs():
  w = _w()
  np.testing.assert_allclose(jnp.abs(progressive.binarize_weight(w, "xnor")),
                             jnp.broadcast_to(jnp.mean(jnp.abs(w), 0), w.shape), rtol=1e-6)


def test_unknown_binarizer_is_an_error():
  with pytest.raises(ValueError, match="binarizer='ternary'"):
    progressive.binarize_weight(_w(), "ternary")


def test_progressive_tanh_is_the_identity_below_the_tiny_temperature():
  z = jnp.linspace(-3, 3, 7)
  np.testing.assert_allclose(estimators.progressive_tanh(z, 1e-7), z)
