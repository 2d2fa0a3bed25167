"""q(x_t | x_0), eps / x0 / v, the VLB term and the training losses against closed forms.

Data for the loss checks: x_0 ~ N(μ, s²) element-wise, for which the Bayes-optimal
predictors and their errors are analytic (x_t is jointly Gaussian with x_0 and ε).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from effcomp.diffusion import flow, likelihood, objectives, schedules
from effcomp.diffusion import parameterization as param

MU, S = 0.4, 0.5
SCHED = schedules.create()
AC64 = np.cumprod(1 - np.asarray(SCHED.betas64))  # float64 ᾱ for the expectations


def _ac(model_t):
  return SCHED.alphas_cumprod[model_t][:, None]


def _optimal(prediction):
  """E[target | x_t] for x_0 ~ N(MU, S²): x_t ~ N(√a·μ, v), v = a·s² + 1 − a."""

  def model_fn(x, model_t):
    a = _ac(model_t)
    v = a * S ** 2 + 1 - a
    x0 = MU + jnp.sqrt(a) * S ** 2 * (x - jnp.sqrt(a) * MU) / v
    eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * MU) / v
    return {"eps": eps, "x0": x0, "v": jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0}[prediction]

  return model_fn


def test_q_sample_has_the_closed_form_moments():
  n = 20000
  x0 = jnp.full((n, 2), 1.3)
  for step in (0, 250, 999):
    t = jnp.full((n,), step)
    xt = param.q_sample(SCHED, x0, t, jax.random.normal(jax.random.PRNGKey(step), x0.shape))
    a = float(AC64[step])
    mean, var, log_var = param.q_mean_variance(SCHED, x0, t)
    np.testing.assert_allclose(mean[0, 0], math.sqrt(a) * 1.3, rtol=1e-6)
    np.testing.assert_allclose(var[0, 0], 1 - a, rtol=1e-5)
    np.testing.assert_allclose(log_var[0, 0], math.log(1 - a), rtol=1e-5)
    se = math.sqrt((1 - a) / xt.size)
    assert abs(float(jnp.mean(xt)) - math.sqrt(a) * 1.3) < 5 * se
    assert float(jnp.var(xt)) == pytest.approx(1 - a, rel=0.05)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_predictions_convert_to_x0_and_eps_exactly(prediction):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x0 = jax.random.normal(k1, (6, 3, 2))
  eps = jax.random.normal(k2, x0.shape)
  t = jnp.array([0, 1, 100, 500, 900, 999])
  xt = param.q_sample(SCHED, x0, t, eps)
  output = param.target(SCHED, x0, t, eps, prediction)
  got_x0, got_eps = param.to_x0_eps(SCHED, xt, t, output, prediction)
  np.testing.assert_allclose(got_x0, x0, atol=2e-4)
  np.testing.assert_allclose(got_eps, eps, atol=2e-4)
  a = AC64[np.asarray(t)][:, None, None]
  v = np.sqrt(a) * np.asarray(eps) - np.sqrt(1 - a) * np.asarray(x0)
  np.testing.assert_allclose(param.v_from_x0_eps(SCHED, t, x0, eps), v, atol=1e-6)


def test_posterior_is_bayes_rule_for_gaussians():
  x0, xt = jnp.array([[0.7], [-0.2]]), jnp.array([[0.1], [1.5]])
  t = jnp.array([1, 600])
  mean, var, _ = param.q_posterior(SCHED, x0, xt, t)
  for i, step in enumerate([1, 600]):
    beta = float(SCHED.betas[step])
    a_prev = float(SCHED.alphas_cumprod[step - 1])
    # q(x_{t-1} | x_0) = N(√ā_{t-1}·x_0, 1 − ā_{t-1}), q(x_t | x_{t-1}) = N(√(1−β)·x_{t-1}, β)
    precision = (1 - beta) / beta + 1 / (1 - a_prev)
    want_mean = (math.sqrt(1 - beta) * float(xt[i, 0]) / beta
                 + math.sqrt(a_prev) * float(x0[i, 0]) / (1 - a_prev)) / precision
    np.testing.assert_allclose(var[i, 0], 1 / precision, rtol=1e-4)
    np.testing.assert_allclose(mean[i, 0], want_mean, rtol=1e-4, atol=1e-6)


def test_normal_kl_is_the_gaussian_kl():
  m1, m2, s1, s2 = 0.3, -0.5, 0.7, 1.9
  want = math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
  got = likelihood.normal_kl(m1, 2 * math.log(s1), m2, jnp.asarray(2 * math.log(s2)))
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_discretized_likelihood_integrates_the_gaussian_over_the_pixel_bin():
  x = jnp.array([-1.0, -0.2, 0.4, 1.0])
  means = jnp.array([-0.9, -0.25, 0.5, 0.95])
  log_scales = jnp.log(jnp.array([0.1, 0.05, 0.2, 0.1]))
  got = np.asarray(likelihood.discretized_gaussian_log_likelihood(x, means, log_scales))
  xs, m, sd = np.asarray(x), np.asarray(means), np.exp(np.asarray(log_scales))
  want = np.log(np.where(
      xs < -0.999, stats.norm.cdf(xs + 1 / 255, m, sd),
      np.where(xs > 0.999, stats.norm.sf(xs - 1 / 255, m, sd),
               stats.norm.cdf(xs + 1 / 255, m, sd) - stats.norm.cdf(xs - 1 / 255, m, sd))))
  np.testing.assert_allclose(got, want, rtol=5e-3)  # tanh approximation of Φ (≤ 3e-4 abs)


def test_vb_term_is_the_kl_between_the_posterior_and_the_learned_gaussian():
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(1), 4)
  x0 = jax.random.uniform(k1, (3, 4, 2), minval=-1, maxval=1)
  noise = jax.random.normal(k2, x0.shape)
  t = jnp.array([5, 300, 999])
  xt = param.q_sample(SCHED, x0, t, noise)
  eps_hat = jax.random.normal(k3, x0.shape)
  var_values = jax.random.uniform(k4, x0.shape, minval=-1, maxval=1)
  got = jax.jit(objectives.vb_term)(SCHED, x0, xt, t, jnp.concatenate([eps_hat, var_values], -1))
  # NumPy float64, from the betas: posterior N(μ̃(x_0), β̃) vs N(μ̃(x̂_0), Σ_θ).
  betas, ts = np.asarray(SCHED.betas64), np.asarray(t)
  ac = np.cumprod(1 - betas)
  a, a_prev, b = ac[ts], ac[ts - 1], betas[ts]
  post_var = b * (1 - a_prev) / (1 - a)
  sh = lambda v: v[:, None, None]
  c1, c2 = sh(b * np.sqrt(a_prev) / (1 - a)), sh((1 - a_prev) * np.sqrt(1 - b) / (1 - a))
  x0n, xtn = np.asarray(x0, np.float64), np.asarray(xt, np.float64)
  x0_hat = (xtn - sh(np.sqrt(1 - a)) * np.asarray(eps_hat)) / sh(np.sqrt(a))
  frac = (np.asarray(var_values) + 1) / 2
  log_var = frac * sh(np.log(b)) + (1 - frac) * sh(np.log(post_var))
  kl = (0.5 * (log_var - sh(np.log(post_var))) - 0.5
        + (sh(post_var) + (c1 * (x0n - x0_hat)) ** 2) / (2 * np.exp(log_var)))
  want = kl.mean(axis=(1, 2)) / math.log(2)
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)


def test_vb_term_at_t0_is_the_decoder_negative_log_likelihood_in_bits():
  x0 = jnp.array([[[-1.0], [0.2]], [[1.0], [0.6]]])
  t = jnp.zeros((2,), jnp.int32)
  eps = jnp.full(x0.shape, 0.3)
  xt = param.q_sample(SCHED, x0, t, eps)
  out = jnp.concatenate([eps + 0.2, jnp.zeros_like(x0)], -1)
  p = param.p_mean_variance(SCHED, out, xt, t, learn_sigma=True)
  ll = likelihood.discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
  want = -np.asarray(ll).mean(axis=(1, 2)) / math.log(2)
  np.testing.assert_allclose(jax.jit(objectives.vb_term)(SCHED, x0, xt, t, out), want, rtol=1e-6)


def test_hybrid_loss_trains_the_variance_with_the_vlb_and_the_mean_with_the_mse():
  x0 = jax.random.uniform(jax.random.PRNGKey(2), (8, 4, 4, 3), minval=-1, maxval=1)

  def parts(p):  # d(Σ vb, Σ mse)/dp in one compiled function, with the losses
    model_fn = lambda x, t: jnp.broadcast_to(p, x.shape[:-1] + (6,)) + 0.1 * jnp.tile(x, 2)
    loss, m = objectives.training_loss(jax.random.PRNGKey(3), model_fn, x0, SCHED, "eps", True)
    return jnp.stack([m["vb"].sum(), m["mse"].sum()]), (loss, m)

  p = jnp.array([0.1, -0.2, 0.05, 0.3, -0.4, 0.0])
  (g_vb, g_mse), (loss, m) = jax.jit(jax.jacrev(parts, has_aux=True))(p)
  assert loss.shape == m["mse"].shape == m["vb"].shape == m["t"].shape == (8,)
  np.testing.assert_allclose(loss, m["mse"] + m["vb"], rtol=1e-6)
  np.testing.assert_array_equal(g_vb[:3], 0.0)  # mean stop-gradiented in the VLB term
  assert np.all(np.abs(g_vb[3:]) > 0)
  np.testing.assert_array_equal(g_mse[3:], 0.0)
  assert np.all(np.abs(g_mse[:3]) > 0)


def _bayes_error(prediction, a):
  v = a * S ** 2 + 1 - a
  return {"eps": a * S ** 2 / v, "x0": S ** 2 * (1 - a) / v, "v": S ** 2 / v}[prediction]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_optimal_predictor_reaches_the_bayes_error(prediction):
  x0 = MU + S * jax.random.normal(jax.random.PRNGKey(4), (4096, 16))
  loss, m = jax.jit(lambda r: objectives.training_loss(r, _optimal(prediction), x0, SCHED,
                                                       prediction))(jax.random.PRNGKey(5))
  a = np.asarray(SCHED.alphas_cumprod)
  t = np.asarray(m["t"])
  assert t.min() >= 0 and t.max() <= 999 and len(np.unique(t)) > 900
  # The mean over this batch's drawn timesteps: the remaining noise is the MSE's own.
  want = np.mean(_bayes_error(prediction, a[t]))
  assert float(jnp.mean(loss)) == pytest.approx(want, rel=0.03)
  # A worse predictor (the optimum plus a constant) pays the squared offset on top.
  worse = lambda x, t: _optimal(prediction)(x, t) + 0.2
  loss2, _ = objectives.training_loss(jax.random.PRNGKey(5), worse, x0, SCHED, prediction)
  assert float(jnp.mean(loss2 - loss)) == pytest.approx(0.04, rel=0.1)


def test_flow_matching_optimal_velocity_reaches_the_bayes_error():
  x0 = MU + S * jax.random.normal(jax.random.PRNGKey(6), (4096, 16))

  def velocity(x, t):  # E[ε − x_0 | x_t], x_t = (1 − t)·x_0 + t·ε
    t = t[:, None]
    var = (1 - t) ** 2 * S ** 2 + t ** 2
    return -MU + (t - (1 - t) * S ** 2) / var * (x - (1 - t) * MU)

  loss, m = objectives.training_loss(jax.random.PRNGKey(7), velocity, x0, objective="flow")
  t = np.asarray(m["t"], np.float64)
  var = (1 - t) ** 2 * S ** 2 + t ** 2
  want = np.mean(1 + S ** 2 - (t - (1 - t) * S ** 2) ** 2 / var)
  assert float(jnp.mean(loss)) == pytest.approx(want, rel=0.03)


def test_flow_path_and_velocity_identities():
  k1, k2 = jax.random.split(jax.random.PRNGKey(8))
  x0, noise = jax.random.normal(k1, (3, 5)), jax.random.normal(k2, (3, 5))
  t = jnp.array([0.0, 0.3, 1.0])
  xt = flow.interpolate(x0, noise, t)
  np.testing.assert_allclose(xt[0], x0[0])
  np.testing.assert_allclose(xt[2], noise[2])
  u = flow.velocity_target(x0, noise)
  np.testing.assert_allclose(flow.x0_from_velocity(xt, t, u), x0, atol=1e-6)
  np.testing.assert_allclose(flow.noise_from_velocity(xt, t, u), noise, atol=1e-6)
  # u is the time derivative of the path.
  du = jax.jvp(lambda s: flow.interpolate(x0, noise, s), (t,), (jnp.ones(3),))[1]
  np.testing.assert_allclose(du, u, atol=1e-6)


def test_time_shift_and_logit_normal_sampling():
  t = jnp.linspace(0, 1, 11)
  np.testing.assert_allclose(flow.shift_time(t, 1.0), t)
  shifted = flow.shift_time(t, 3.0)
  np.testing.assert_allclose(shifted[jnp.array([0, 5, 10])], [0.0, 0.75, 1.0], rtol=1e-6)
  assert np.all(np.diff(np.asarray(shifted)) > 0) and np.all(shifted >= t)
  ts = flow.sample_time(jax.random.PRNGKey(9), 50000, "logit_normal", 0.5, 0.8)
  logit = np.log(np.asarray(ts, np.float64) / (1 - np.asarray(ts, np.float64)))
  assert np.mean(logit) == pytest.approx(0.5, abs=0.02)
  assert np.std(logit) == pytest.approx(0.8, rel=0.02)
  tu = flow.sample_time(jax.random.PRNGKey(9), 50000)
  assert 0 <= float(tu.min()) and float(tu.max()) < 1 and float(tu.mean()) == pytest.approx(
      0.5, abs=0.01)


def test_bad_arguments_are_named():
  x0 = jnp.zeros((2, 3))
  ident = lambda x, t: x
  with pytest.raises(ValueError, match="objective='score'"):
    objectives.training_loss(jax.random.PRNGKey(0), ident, x0, SCHED, "score")
  with pytest.raises(ValueError, match="learn_sigma=True"):
    objectives.training_loss(jax.random.PRNGKey(0), ident, x0, None, "flow", True)
  with pytest.raises(ValueError, match="schedule=None"):
    objectives.training_loss(jax.random.PRNGKey(0), ident, x0, None, "eps")
  with pytest.raises(ValueError, match=r"model output of shape \(2, 3\): expected \(2, 6\)"):
    objectives.training_loss(jax.random.PRNGKey(0), ident, x0, SCHED, "eps", True)
  with pytest.raises(ValueError, match="distribution='beta'"):
    flow.sample_time(jax.random.PRNGKey(0), 4, "beta")
