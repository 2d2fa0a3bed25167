"""Training losses: eps / x0 / v regression, DiT's learned-variance hybrid, flow matching.

Diffusion (DiT `GaussianDiffusion.training_losses` with `LossType.MSE`, the loss every DiT
is trained with): t ~ U{0, …, T−1}, ε ~ N(0, I), x_t = q_sample(x_0, t, ε), then

  mse = mean over non-batch axes of (target − model_mean_output)²,  target ∈ {ε, x_0, v}
  vb  = L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t)) in bits per dim for t > 0,
        L_0 = −log p(x_0 | x_1) (discretized Gaussian) at t = 0   (DDPM eq. 5; bits: /ln 2)
  loss = mse (+ vb when sigma is learned)    (Improved DDPM §3.1: L_hybrid = L_simple +
        λ·L_vlb, λ = 1/1000; vb is one uniformly drawn L_t ≈ L_vlb/T, so for T = 1000
        the reference adds it unweighted)

and the VLB term sees the mean part of the output through a stop-gradient, so it trains
the variance only ("Learn the variance using the variational bound, but don't let it
affect our mean prediction").

Flow matching (`flow.py`): t from `flow.sample_time`, x_t = (1 − t)·x_0 + t·ε,
loss = mean over non-batch axes of (ε − x_0 − v(x_t, t))².

`model_fn(x_t, t) -> output`: x_t [batch, ..., C]; t int32 [batch] original timesteps
(`schedule.timestep_map[t]`) for diffusion, float32 [batch] in [0, 1] for flow; output
[batch, ..., C] or [batch, ..., 2C] with learned sigma. Conditioning (labels) is the
caller's closure.
"""

import math
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from effcomp.diffusion import flow, likelihood
from effcomp.diffusion import parameterization as param
from effcomp.diffusion.schedules import Schedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
OBJECTIVES = param.PREDICTIONS + ("flow",)
Metrics = Dict[str, jax.Array]


def vb_term(schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array,
            output: jax.Array, *, prediction: str = "eps", learn_sigma: bool = True,
            fixed_variance: str = "large") -> jax.Array:
  """One VLB term per example, bits per dim, float32 [batch] (DiT `_vb_terms_bpd`).

  KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t)) where t > 0, the discretized Gaussian
  negative log-likelihood of x_0 (data in [-1, 1]) under p(x_0 | x_1) where t = 0.
  x0, x_t: [batch, ..., C]; t: int [batch] schedule indices; output: the model's.
  """
  true_mean, _, true_log_var = param.q_posterior(schedule, x0, x_t, t)
  p = param.p_mean_variance(schedule, output, x_t, t, prediction=prediction,
                            learn_sigma=learn_sigma, fixed_variance=fixed_variance)
  kl = likelihood.mean_flat(
      likelihood.normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]))
  nll = -likelihood.mean_flat(likelihood.discretized_gaussian_log_likelihood(
      x0, p["mean"], 0.5 * p["log_variance"]))
  return jnp.where(t == 0, nll, kl) / math.log(2.0)


def diffusion_loss(rng: jax.Array, model_fn: ModelFn, x0: jax.Array, schedule: Schedule,
                   prediction: str = "eps", learn_sigma: bool = False, *,
                   t: Optional[jax.Array] = None, noise: Optional[jax.Array] = None
                   ) -> Tuple[jax.Array, Metrics]:
  """Per-example loss [batch] and metrics {'mse', 'vb' (learned sigma), 't'} (each [batch]).

  t (int [batch] schedule indices) and noise default to fresh draws from `rng`.
  """
  param.check_prediction(prediction)
  rng_t, rng_noise = jax.random.split(rng)
  if t is None:
    t = jax.random.randint(rng_t, (x0.shape[0],), 0, schedule.num_timesteps, jnp.int32)
  if noise is None:
    noise = jax.random.normal(rng_noise, x0.shape, x0.dtype)
  x_t = param.q_sample(schedule, x0, t, noise)
  output = model_fn(x_t, schedule.timestep_map[t])
  mean_out, var_values = param.split_output(output, x_t, learn_sigma)
  tgt = param.target(schedule, x0, t, noise, prediction)
  mse = likelihood.mean_flat(jnp.square(tgt.astype(jnp.float32) - mean_out.astype(jnp.float32)))
  metrics = {"mse": mse, "t": t}
  if not learn_sigma:
    return mse, metrics
  frozen = jnp.concatenate([jax.lax.stop_gradient(mean_out), var_values], axis=-1)
  vb = vb_term(schedule, x0.astype(jnp.float32), x_t.astype(jnp.float32), t,
               frozen.astype(jnp.float32), prediction=prediction, learn_sigma=True)
  metrics["vb"] = vb
  return mse + vb, metrics


def flow_loss(rng: jax.Array, model_fn: ModelFn, x0: jax.Array, *,
              t_distribution: str = "uniform", logit_mean: float = 0.0,
              logit_std: float = 1.0, shift: float = 1.0, t: Optional[jax.Array] = None,
              noise: Optional[jax.Array] = None) -> Tuple[jax.Array, Metrics]:
  """Flow-matching loss [batch] and metrics {'mse', 't'}; t float [batch] in [0, 1]."""
  rng_t, rng_noise = jax.random.split(rng)
  if t is None:
    t = flow.sample_time(rng_t, x0.shape[0], t_distribution, logit_mean, logit_std, shift)
  if noise is None:
    noise = jax.random.normal(rng_noise, x0.shape, x0.dtype)
  x_t = flow.interpolate(x0, noise, t)
  v = model_fn(x_t, t)
  if v.shape != x0.shape:
    raise ValueError(f"model output of shape {v.shape}: expected x0's shape {x0.shape} "
                     "(a velocity; flow matching has no learned sigma)")
  u = flow.velocity_target(x0, noise)
  mse = likelihood.mean_flat(jnp.square(u.astype(jnp.float32) - v.astype(jnp.float32)))
  return mse, {"mse": mse, "t": t}


def training_loss(rng: jax.Array, model_fn: ModelFn, x0: jax.Array,
                  schedule: Optional[Schedule] = None, objective: str = "eps",
                  learn_sigma: bool = False, **kwargs) -> Tuple[jax.Array, Metrics]:
  """The one entry point: per-example loss float32 [batch] and per-example metrics.

  objective: 'eps' / 'x0' / 'v' (diffusion on `schedule`; DiT = `schedules.create()`,
  'eps', learn_sigma=True) or 'flow' (no schedule, no learned sigma; kwargs of
  `flow_loss`: t_distribution, logit_mean, logit_std, shift). The caller averages
  (and masks) the batch.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective={objective!r}: expected one of {OBJECTIVES}")
  if objective == "flow":
    if learn_sigma:
      raise ValueError("learn_sigma=True: flow matching predicts a velocity only")
    return flow_loss(rng, model_fn, x0, **kwargs)
  if schedule is None:
    raise ValueError(f"schedule=None: objective={objective!r} needs a diffusion schedule")
  return diffusion_loss(rng, model_fn, x0, schedule, objective, learn_sigma, **kwargs)
