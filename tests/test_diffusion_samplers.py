"""Samplers on Gaussian data, whose optimal denoiser and velocity field are analytic.

x_0 ~ N(MU, S²) element-wise. The optimal ε-model is affine in x_t, so every DDPM / DDIM
step is affine plus Gaussian noise and the sampler's output law is computable exactly
by a moment recursion (NumPy float64 here); the flow ODE's exact solution keeps the
standardized value z = (x_t − (1 − t)·μ)/√((1 − t)²·s² + t²), so x_0 = μ + s·x_1.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.diffusion import guidance, samplers, schedules

MU, S = 1.5, 0.5
FULL = schedules.create()
AC = np.cumprod(1 - np.asarray(FULL.betas64))  # float64, indexed by original timestep


def eps_model(learned=None):
  """E[ε | x_t] at the original timestep; with `learned`, a constant variance value."""

  def model_fn(x, model_t):
    a = FULL.alphas_cumprod[model_t][:, None]
    eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * MU) / (a * S ** 2 + 1 - a)
    if learned is None:
      return eps
    return jnp.concatenate([eps, jnp.full_like(eps, learned)], -1)

  return model_fn


def ddpm_moments(schedule, variance, learned=0.0, eta=None):
  """Mean and variance of the DDPM (or DDIM(eta)) output from x_T ~ N(0, 1), exactly."""
  betas = np.asarray(schedule.betas64)
  ac = np.cumprod(1 - betas)
  ac_prev = np.append(1.0, ac[:-1])
  post = betas * (1 - ac_prev) / (1 - ac)
  post_clip = np.append(post[1] if len(post) > 1 else betas[0], post[1:])
  m, var = 0.0, 1.0
  for i in reversed(range(len(betas))):
    a0 = AC[int(schedule.timestep_map[i])]
    k = math.sqrt(1 - a0) / (a0 * S ** 2 + 1 - a0)  # ε̂ = k·(x − √a0·μ)
    a, ap = ac[i], ac_prev[i]
    # x̂_0 = (x − √(1−a)·ε̂)/√a = p·x + q
    p = (1 - math.sqrt(1 - a) * k) / math.sqrt(a)
    q = math.sqrt(1 - a) * k * math.sqrt(a0) * MU / math.sqrt(a)
    if eta is None:
      c1, c2 = betas[i] * math.sqrt(ap) / (1 - a), (1 - ap) * math.sqrt(1 - betas[i]) / (1 - a)
      A, b = c1 * p + c2, c1 * q
      frac = {"large": 1.0, "small": 0.0, "learned": (learned + 1) / 2}[variance]
      logv = frac * math.log(betas[i]) + (1 - frac) * math.log(post_clip[i])
      noise_var = math.exp(logv) if i > 0 else 0.0
    else:
      sigma2 = eta ** 2 * (1 - ap) / (1 - a) * (1 - a / ap)
      # x ← √a'·x̂_0 + √(1 − a' − σ²)·(x − √a·x̂_0)/√(1−a) + σ·z
      r = math.sqrt(max(1 - ap - sigma2, 0.0)) / math.sqrt(1 - a)
      A, b = (math.sqrt(ap) - r * math.sqrt(a)) * p + r, (math.sqrt(ap) - r * math.sqrt(a)) * q
      noise_var = sigma2
    m, var = A * m + b, A * A * var + noise_var
  return m, var


@pytest.mark.parametrize("steps, variance", [(None, "large"), (250, "small"), (50, "learned")])
def test_ddpm_with_the_optimal_denoiser_has_the_exact_output_law(steps, variance):
  n = 8192
  learned = variance == "learned"
  sample = jax.jit(lambda rng: samplers.sample(
      rng, eps_model(0.3 if learned else None), (n, 4), FULL, "ddpm", steps,
      learn_sigma=learned, fixed_variance="small" if variance == "small" else "large"))
  x = np.asarray(sample(jax.random.PRNGKey(0)), np.float64)
  m, var = ddpm_moments(samplers.respaced(FULL, steps), variance, learned=0.3)
  assert abs(x.mean() - m) < 4 * math.sqrt(var / x.size)
  assert x.var() == pytest.approx(var, rel=0.04)
  # …and that law is the data's, up to the discretisation of the reverse process.
  assert m == pytest.approx(MU, abs=0.02) and math.sqrt(var) == pytest.approx(S, rel=0.05)


def test_ddim_eta0_is_deterministic_and_follows_its_affine_map():
  x_T = jax.random.normal(jax.random.PRNGKey(1), (64, 2))
  run = lambda rng: samplers.sample(rng, eps_model(), x_T.shape, FULL, "ddim", 25, noise=x_T)
  a, b = run(jax.random.PRNGKey(2)), run(jax.random.PRNGKey(3))
  np.testing.assert_array_equal(a, b)
  # The law of a deterministic affine map, applied to N(0, 1), gives A·x_T + b exactly.
  m, var = ddpm_moments(samplers.respaced(FULL, 25), None, eta=0.0)
  np.testing.assert_allclose(a, m + math.sqrt(var) * np.asarray(x_T), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_x0_and_v_models_sample_like_the_equivalent_eps_model(sampler):
  def as_prediction(prediction):
    def model_fn(x, model_t):
      a = FULL.alphas_cumprod[model_t][:, None]
      eps = eps_model()(x, model_t)
      x0 = (x - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
      return {"x0": x0, "v": jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0}[prediction]
    return model_fn

  run = lambda fn, p: samplers.sample(jax.random.PRNGKey(14), fn, (16, 2), FULL, sampler, 20,
                                      prediction=p)
  want = run(eps_model(), "eps")
  np.testing.assert_allclose(run(as_prediction("x0"), "x0"), want, atol=1e-4)
  np.testing.assert_allclose(run(as_prediction("v"), "v"), want, atol=1e-4)


def test_ddim_eta1_is_ddpm_with_the_posterior_variance():
  args = (jax.random.PRNGKey(4), eps_model(), (256, 3), FULL)
  ddim = samplers.sample(*args, "ddim", 40, eta=1.0)
  ddpm = samplers.sample(*args, "ddpm", 40, fixed_variance="small")
  np.testing.assert_allclose(ddim, ddpm, atol=2e-4)
  m, var = ddpm_moments(samplers.respaced(FULL, 40), None, eta=0.5)
  x = np.asarray(samplers.sample(jax.random.PRNGKey(5), eps_model(), (8192, 4), FULL, "ddim", 40,
                                 eta=0.5), np.float64)
  assert abs(x.mean() - m) < 4 * math.sqrt(var / x.size)
  assert x.var() == pytest.approx(var, rel=0.04)


def test_ddim_inversion_reconstructs_x0_up_to_discretisation():
  x0 = MU + S * jax.random.normal(jax.random.PRNGKey(6), (128, 2))
  errors, drift = {}, {}
  for steps in (10, 50, 250):
    sched = samplers.respaced(FULL, steps)
    x_T = samplers.ddim_invert(eps_model(), x0, sched)
    # The probability-flow ODE keeps z = (x_t − √a·μ)/√(a·s² + 1 − a): x_T ≈ z at ᾱ ≈ 0.
    a_T = AC[int(sched.timestep_map[-1])]
    z = (np.asarray(x0) - MU) / S
    exact_T = math.sqrt(a_T) * MU + math.sqrt(a_T * S ** 2 + 1 - a_T) * z
    # x_T − exact ≈ drift + scale·z (a discretisation error ∝ z); fit, keep the drift.
    drift[steps] = abs(np.polyfit(z.ravel(), (np.asarray(x_T) - exact_T).ravel(), 1)[1])
    back = samplers.ddim_sample(jax.random.PRNGKey(7), eps_model(), x_T, sched)
    errors[steps] = float(jnp.max(jnp.abs(back - x0)))
  # First order in the step (ε̂ is frozen over a step); no drift of the mean: the model is
  # always evaluated at the level its input is at (an inversion mixing levels drifts ~μ/K).
  assert errors[250] < 0.04 and errors[250] < errors[50] / 3.5 < errors[10] / 12, errors
  assert max(drift.values()) < 0.01, drift


def flow_velocity(x, t):
  """E[ε − x_0 | x_t] for x_t = (1 − t)·x_0 + t·ε, x_0 ~ N(MU, S²)."""
  t = t[:, None]
  var = (1 - t) ** 2 * S ** 2 + t ** 2
  return -MU + (t - (1 - t) * S ** 2) / var * (x - (1 - t) * MU)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_and_heun_reach_the_flows_analytic_endpoint(shift):
  x1 = jax.random.normal(jax.random.PRNGKey(8), (256, 2))
  exact = MU + S * x1
  err = {}
  for sampler in ("euler", "heun"):
    for steps in (8, 32):
      out = samplers.sample(jax.random.PRNGKey(9), flow_velocity, x1.shape, sampler=sampler,
                            steps=steps, shift=shift, noise=x1)
      err[sampler, steps] = float(jnp.max(jnp.abs(out - exact)))
  assert err["heun", 8] < err["euler", 8] / 5, err
  assert err["heun", 32] < 2e-3 and err["euler", 32] < err["euler", 8] / 2.5, err
  assert err["heun", 32] < err["heun", 8] / 8, err  # second order: ≈ 16× for 4× the steps


def test_flow_ode_runs_backwards_to_invert():
  x0 = MU + S * jax.random.normal(jax.random.PRNGKey(10), (64, 2))
  up = samplers.flow_ode(flow_velocity, x0, jnp.linspace(0, 1, 65), "heun")
  np.testing.assert_allclose(up, (x0 - MU) / S, atol=2e-3)
  down = samplers.flow_ode(flow_velocity, up, jnp.linspace(1, 0, 65), "heun")
  np.testing.assert_allclose(down, x0, atol=2e-3)


def _cond_model(calls):
  def model_fn(x, t, y):
    calls.append(x.shape[0])
    scale = 1.0 + y.astype(jnp.float32)[:, None]  # the null label 10 → a distinct output
    return jnp.concatenate([x * scale, jnp.tile(y.astype(jnp.float32)[:, None], (1, 4))], -1)

  return model_fn


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
  x = jax.random.normal(jax.random.PRNGKey(11), (3, 4))
  t, y = jnp.array([5, 5, 5]), jnp.array([0, 3, 7])
  calls = []
  cond = _cond_model(calls)(x, t, y)
  uncond = _cond_model(calls)(x, t, jnp.full_like(y, 10))
  calls.clear()
  g1 = guidance.classifier_free_guidance(_cond_model(calls), y, 10, 1.0, learn_sigma=True)(x, t)
  assert calls == [6]  # one model call on the doubled batch, as DiT's forward_with_cfg
  np.testing.assert_allclose(g1, cond, rtol=1e-6)
  g0 = guidance.classifier_free_guidance(_cond_model(calls), y, 10, 0.0, learn_sigma=True)(x, t)
  np.testing.assert_allclose(g0[:, :4], uncond[:, :4], rtol=1e-6)
  g4 = guidance.classifier_free_guidance(_cond_model(calls), y, 10, 4.0, learn_sigma=True)(x, t)
  want = uncond[:, :4] + 4 * (cond[:, :4] - uncond[:, :4])
  np.testing.assert_allclose(g4[:, :4], want, rtol=1e-5)
  np.testing.assert_allclose(g4[:, 4:], cond[:, 4:])  # the variance of the conditional half
  g_dit = guidance.classifier_free_guidance(_cond_model(calls), y, 10, 4.0, learn_sigma=True,
                                            guided_channels=3)(x, t)
  np.testing.assert_allclose(g_dit[:, :3], g4[:, :3])
  np.testing.assert_allclose(g_dit[:, 3:], cond[:, 3:])  # DiT's default leaves channel 4


def test_guided_sampling_with_scale_one_equals_conditional_sampling():
  y = jnp.array([1, 2, 3, 4])
  model = lambda x, t, y: eps_model()(x, t) * (1 + 0.1 * y[:, None])
  guided = guidance.classifier_free_guidance(model, y, 0, 1.0)
  a = samplers.sample(jax.random.PRNGKey(12), guided, (4, 2), FULL, "ddim", 10)
  b = samplers.sample(jax.random.PRNGKey(12), lambda x, t: model(x, t, y), (4, 2), FULL, "ddim", 10)
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_label_dropout_replaces_labels_with_the_null_label():
  y = jnp.arange(20000) % 7
  np.testing.assert_array_equal(guidance.drop_labels(jax.random.PRNGKey(0), y, 7, 0.0), y)
  np.testing.assert_array_equal(guidance.drop_labels(jax.random.PRNGKey(0), y, 7, 1.0), 7)
  dropped = guidance.drop_labels(jax.random.PRNGKey(0), y, 7, 0.1)
  assert float(jnp.mean(dropped == 7)) == pytest.approx(0.1, abs=0.01)
  np.testing.assert_array_equal(jnp.where(dropped == 7, y, dropped), y)


def test_sample_jits_with_the_schedule_as_a_traced_argument():
  rng = jax.random.PRNGKey(13)
  f = jax.jit(lambda rng, sched: samplers.sample(rng, eps_model(), (4, 2), sched, "ddim", 10))
  eager = samplers.sample(rng, eps_model(), (4, 2), FULL, "ddim", 10)
  np.testing.assert_allclose(f(rng, FULL), eager, atol=1e-5)
  assert samplers.respaced(FULL, None) is FULL and samplers.respaced(FULL, 1000) is FULL
  assert samplers.respaced(FULL, 10).num_timesteps == 10


def test_bad_arguments_are_named():
  rng = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="sampler='plms'"):
    samplers.sample(rng, eps_model(), (2, 1), FULL, "plms", 10)
  with pytest.raises(ValueError, match="schedule=None"):
    samplers.sample(rng, eps_model(), (2, 1), None, "ddim", 10)
  with pytest.raises(ValueError, match="steps=None"):
    samplers.sample(rng, flow_velocity, (2, 1), sampler="heun")
  with pytest.raises(ValueError, match="noise of shape"):
    samplers.sample(rng, eps_model(), (2, 1), FULL, "ddim", 10, noise=jnp.zeros((3, 1)))
  with pytest.raises(ValueError, match="expected \\(2, 2\\)"):  # learned sigma needs 2C
    samplers.sample(rng, eps_model(), (2, 1), FULL, "ddpm", 10, learn_sigma=True)
