"""The residual-shifting process: schedule, marginals, posterior, loss and sampler."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.diffusion import resshift


def _reference_sqrt_etas(steps, kappa, min_noise_level, etas_end, power):
  """ResShift `get_named_eta_schedule('exponential')`, line for line."""
  etas_start = min(min_noise_level / kappa, min_noise_level)
  increaser = math.exp(1 / (steps - 1) * math.log(etas_end / etas_start))
  base = np.ones([steps]) * increaser
  power_timestep = np.linspace(0, 1, steps, endpoint=True) ** power
  power_timestep *= steps - 1
  return np.power(base, power_timestep) * etas_start


@pytest.mark.parametrize("steps,kappa,noise,power", [(15, 2.0, 0.04, 0.3), (4, 2.0, 0.2, 0.3),
                                                     (50, 1.0, 0.01, 1.0)])
def test_schedule_is_the_reference(steps, kappa, noise, power):
  s = resshift.create(steps, kappa, noise, 0.99, power)
  ref = _reference_sqrt_etas(steps, kappa, noise, 0.99, power)
  np.testing.assert_allclose(s.sqrt_etas, ref, rtol=1e-6)
  etas = ref ** 2
  prev = np.append(0.0, etas[:-1])
  np.testing.assert_allclose(s.posterior_variance, kappa ** 2 * prev / etas * (etas - prev),
                             rtol=1e-5)
  assert s.num_timesteps == steps and s.sqrt_etas[-1] == pytest.approx(0.99)
  assert s.sqrt_etas[0] == pytest.approx(min(noise / kappa, noise))


def test_bad_schedules_are_errors():
  with pytest.raises(ValueError, match="steps"):
    resshift.create(steps=1)
  with pytest.raises(ValueError, match="etas_end"):
    resshift.create(min_noise_level=0.5, kappa=0.1, etas_end=0.4)
  with pytest.raises(ValueError, match="increasing"):
    resshift.from_sqrt_etas([0.5, 0.3], 1.0)


def test_marginals_of_the_markov_chain_are_the_closed_form():
  """Run the forward chain x_t = x_{t−1} + α_t·e + κ√α_t·ε step by step and compare the
  empirical mean and variance at every t with q(x_t | x_0, y)."""
  s = resshift.create(8, 2.0, 0.04, 0.99, 0.3)
  etas = np.asarray(s.etas, np.float64)
  x0, y = np.float64(-0.3), np.float64(0.5)
  rng = np.random.default_rng(0)
  n = 400_000
  x = np.full(n, x0)
  prev = 0.0
  for t in range(s.num_timesteps):
    alpha = etas[t] - prev
    x = x + alpha * (y - x0) + s.kappa * math.sqrt(alpha) * rng.standard_normal(n)
    prev = etas[t]
    mean, var = resshift.q_mean_variance(s, jnp.full((1, 1), x0, jnp.float32),
                                         jnp.full((1, 1), y, jnp.float32), jnp.array([t]))
    assert x.mean() == pytest.approx(float(mean[0, 0]), abs=4 * math.sqrt(float(var[0, 0]) / n))
    assert x.var() == pytest.approx(float(var[0, 0]), rel=0.01)


def test_posterior_is_bayes_rule():
  """q(x_{t−1} | x_t, x_0) from the joint Gaussian of (x_{t−1}, x_t) given x_0, y."""
  s = resshift.create(15)
  kappa = s.kappa
  rng = np.random.default_rng(1)
  x0, x_t, y = (jnp.asarray(rng.normal(size=(15, 4)), jnp.float32) for _ in range(3))
  t = jnp.arange(15)
  mean, var, _ = resshift.q_posterior(s, x0, x_t, t)
  for i in range(1, 15):
    eta, eta_prev = float(s.etas[i]), float(s.etas[i - 1])
    e = y[i] - x0[i]
    m_prev, v_prev = x0[i] + eta_prev * e, kappa ** 2 * eta_prev
    m_t, v_t = x0[i] + eta * e, kappa ** 2 * eta
    # cov(x_{t−1}, x_t) = var(x_{t−1}); condition x_{t−1} on x_t.
    np.testing.assert_allclose(mean[i], m_prev + v_prev / v_t * (x_t[i] - m_t), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(var[i, 0], v_prev - v_prev ** 2 / v_t, rtol=1e-4)
  np.testing.assert_allclose(mean[0], x0[0], rtol=1e-5)  # η_{−1} = 0: x_{−1} = x_0


@pytest.mark.parametrize("prediction", resshift.PREDICTIONS)
def test_an_oracle_has_zero_loss_and_recovers_x0(prediction):
  s = resshift.create(15)
  rng = np.random.default_rng(2)
  x0 = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8, 3)), jnp.float32)
  key = jax.random.key(0)
  t = jnp.array([0, 7, 14])
  # The oracle returns the target computed from the same draws the loss makes.
  noise = jax.random.normal(jax.random.split(key)[1], x0.shape)
  x_t = resshift.q_sample(s, x0, y, t, noise)
  target = {"xstart": x0, "residual": y - x0, "epsilon": noise,
            "epsilon_scale": s.kappa * s.sqrt_etas[t][:, None, None, None] * noise}[prediction]
  loss, metrics = resshift.training_loss(key, lambda x, tt: target, x0, y, s,
                                         prediction=prediction, t=t)
  np.testing.assert_allclose(loss, 0.0, atol=1e-10)
  np.testing.assert_allclose(metrics["x_t"], x_t, rtol=1e-6)
  np.testing.assert_allclose(metrics["pred_x0"], x0, atol=2e-5)


def test_sampler_starts_around_y_and_an_oracle_ends_at_x0():
  s = resshift.create(15)
  rng = np.random.default_rng(3)
  x0 = jnp.asarray(rng.uniform(-0.9, 0.9, (2, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(-0.9, 0.9, (2, 16, 16, 3)), jnp.float32)
  out, traj = resshift.sample(jax.random.key(4), lambda x, t: x0, y, s, return_trajectory=True)
  assert traj["x_t"].shape == (16, 2, 16, 16, 3) and traj["pred_x0"].shape == (15, 2, 16, 16, 3)
  np.testing.assert_array_equal(traj["t"], np.arange(14, -1, -1))
  # x_T ~ N(y, κ²η_T): standardized residuals have mean 0 and variance 1.
  z = (traj["x_t"][0] - y) / (s.kappa * s.sqrt_etas[-1])
  assert abs(float(z.mean())) < 0.05 and float(z.std()) == pytest.approx(1.0, abs=0.05)
  np.testing.assert_allclose(out, x0, atol=1e-5)  # the last step's mean is the prediction
  np.testing.assert_allclose(traj["x_t"][-1], out)
  # Along the chain the state moves from y towards x_0.
  dist = [float(jnp.mean(jnp.abs(x - x0))) for x in traj["x_t"]]
  assert dist[-1] < dist[len(dist) // 2] < dist[0]


def test_ddim_step_keeps_the_noise_and_an_oracle_ends_at_x0():
  s = resshift.create(15)
  rng = np.random.default_rng(5)
  x0, y, eps = (jnp.asarray(rng.uniform(-0.9, 0.9, (2, 8, 8, 3)), jnp.float32) for _ in range(3))
  # With the true x_0, a step from q(x_t | x_0, ε) lands on q(x_{t−1} | x_0, ε): same ε.
  for t in (14, 7, 1):
    tb = jnp.full((2,), t)
    got = resshift.ddim_step(x0, resshift.q_sample(s, x0, y, tb, eps), y, tb, s)
    np.testing.assert_allclose(got, resshift.q_sample(s, x0, y, tb - 1, eps), atol=1e-5)
  np.testing.assert_allclose(resshift.ddim_step(x0, y, y, jnp.zeros((2,), jnp.int32), s), x0)
  # The whole deterministic chain: an oracle returns x_0 from any prior state; the chain
  # runs as one scan over the T steps.
  x_T = resshift.prior_sample(s, y, eps)
  np.testing.assert_allclose(resshift.ddim_sample(lambda x, t: x0, x_T, y, s), x0, atol=1e-5)
  seen = []
  resshift.ddim_sample(lambda x, t: seen.append(t.shape) or jnp.zeros_like(x), x_T, y, s)
  assert seen == [(2,)]  # traced once (a scan over the 15 steps)


def test_scale_input_and_shape_errors():
  s = resshift.create(15)
  x = jnp.ones((1, 2, 2, 1))
  t = jnp.array([14])
  np.testing.assert_allclose(resshift.scale_input(s, x, t, latent=False),
                             1 / (3 * 2.0 * 0.99 + 1), rtol=1e-6)
  np.testing.assert_allclose(resshift.scale_input(s, x, t, latent=True),
                             1 / math.sqrt(4.0 * 0.99 ** 2 + 1), rtol=1e-6)
  with pytest.raises(ValueError, match="prediction"):
    resshift.training_loss(jax.random.key(0), lambda a, b: a, x, x, s, prediction="v")
  with pytest.raises(ValueError, match="equal shapes"):
    resshift.training_loss(jax.random.key(0), lambda a, b: a, x, x[:, :1], s)
