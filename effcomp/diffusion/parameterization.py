"""What a diffusion model's output means: q(x_t | x_0), the posterior, and eps / x0 / v.

With α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) (`schedules.Schedule`), a model predicts one of

  eps: ε                         x_t = α_t·x_0 + σ_t·ε                (DDPM, Ho et al. 2020)
  x0:  x_0                       ε = (x_t − α_t·x_0)/σ_t
  v:   v = α_t·ε − σ_t·x_0       x_0 = α_t·x_t − σ_t·v, ε = σ_t·x_t + α_t·v
                                 (Salimans & Ho 2022, "Progressive distillation", §4)

and p(x_{t-1} | x_t) = N(μ̃(x̂_0, x_t), Σ) with the posterior mean of DDPM eq. 7 and a
variance that is fixed ('large': β_t, 'small': β̃_t) or learned: Improved DDPM eq. 15,
Σ = exp(v·log β_t + (1 − v)·log β̃_t) with the model's v ∈ [-1, 1] mapped to [0, 1]
(DiT `GaussianDiffusion.p_mean_variance`, LEARNED_RANGE).

Layout: x: [batch, ..., channels] (channels last); a model with learned sigma outputs
[batch, ..., 2·channels], the mean parameterization first (DiT splits its NCHW output on
dim 1 the same way). t: int32 [batch] indices into the schedule.
"""

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

from effcomp.diffusion.schedules import Schedule, extract

PREDICTIONS = ("eps", "x0", "v")
FIXED_VARIANCES = ("large", "small")


def check_prediction(prediction: str) -> None:
  if prediction not in PREDICTIONS:
    raise ValueError(f"prediction={prediction!r}: expected one of {PREDICTIONS}")


def q_mean_variance(schedule: Schedule, x0: jax.Array, t: jax.Array
                    ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Mean α_t·x_0, variance 1 − ᾱ_t and its log of q(x_t | x_0) (broadcast to x0)."""
  mean = extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
  var = jnp.square(extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim))  # no 1 − ᾱ in f32
  log_var = extract(schedule.log_one_minus_alphas_cumprod, t, x0.ndim)
  return mean, jnp.broadcast_to(var, x0.shape), jnp.broadcast_to(log_var, x0.shape)


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = α_t·x_0 + σ_t·ε (DDPM eq. 4); x0, noise: [batch, ...], t: int [batch]."""
  if noise.shape != x0.shape:
    raise ValueError(f"noise of shape {noise.shape}: expected x0's shape {x0.shape}")
  return (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
          + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)


def q_posterior(schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
                ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """q(x_{t-1} | x_t, x_0): mean c1·x_0 + c2·x_t, variance β̃_t, log β̃_t clipped at t = 0."""
  mean = (extract(schedule.posterior_mean_coef1, t, x_t.ndim) * x0
          + extract(schedule.posterior_mean_coef2, t, x_t.ndim) * x_t)
  var = extract(schedule.posterior_variance, t, x_t.ndim)
  log_var = extract(schedule.posterior_log_variance_clipped, t, x_t.ndim)
  return mean, jnp.broadcast_to(var, x_t.shape), jnp.broadcast_to(log_var, x_t.shape)


def x0_from_eps(schedule: Schedule, x_t, t, eps):
  """x̂_0 = (x_t − σ_t·ε)/α_t, written as √(1/ᾱ)·x_t − √(1/ᾱ − 1)·ε like the reference."""
  return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
          - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps)


def eps_from_x0(schedule: Schedule, x_t, t, x0):
  """ε̂ = (x_t − α_t·x_0)/σ_t (the reference's `_predict_eps_from_xstart`)."""
  return ((extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0)
          / extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim))


def v_from_x0_eps(schedule: Schedule, t, x0, eps):
  """v = α_t·ε − σ_t·x_0 (Salimans & Ho 2022)."""
  return (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * eps
          - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)


def x0_eps_from_v(schedule: Schedule, x_t, t, v):
  """(x_0, ε) = (α_t·x_t − σ_t·v, σ_t·x_t + α_t·v), exact since α_t² + σ_t² = 1."""
  a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
  s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
  return a * x_t - s * v, s * x_t + a * v


def to_x0_eps(schedule: Schedule, x_t, t, output, prediction: str
              ) -> Tuple[jax.Array, jax.Array]:
  """(x̂_0, ε̂) implied by a model `output` of kind `prediction` at x_t (same shapes)."""
  check_prediction(prediction)
  if prediction == "eps":
    return x0_from_eps(schedule, x_t, t, output), output
  if prediction == "x0":
    return output, eps_from_x0(schedule, x_t, t, output)
  return x0_eps_from_v(schedule, x_t, t, output)


def target(schedule: Schedule, x0, t, noise, prediction: str) -> jax.Array:
  """The regression target of `prediction` for x_t = q_sample(x0, t, noise)."""
  check_prediction(prediction)
  if prediction == "eps":
    return noise
  if prediction == "x0":
    return x0
  return v_from_x0_eps(schedule, t, x0, noise)


def split_output(output: jax.Array, x_t: jax.Array, learn_sigma: bool):
  """(mean part [..., C], variance values [..., C] or None) of a model output."""
  channels = x_t.shape[-1]
  want = x_t.shape[:-1] + ((2 * channels,) if learn_sigma else (channels,))
  if output.shape != want:
    raise ValueError(f"model output of shape {output.shape}: expected {want} for x_t of shape "
                     f"{x_t.shape} with learn_sigma={learn_sigma}")
  if not learn_sigma:
    return output, None
  return output[..., :channels], output[..., channels:]


def model_log_variance(schedule: Schedule, t, x_t, var_values=None,
                       fixed_variance: str = "large") -> jax.Array:
  """log Σ of p(x_{t-1} | x_t), shaped like x_t.

  var_values ([..., C] in [-1, 1], learned sigma): log Σ = f·log β_t + (1 − f)·log β̃_t
  (clipped), f = (v + 1)/2 (Improved DDPM eq. 15). None: 'large' (β_t, with β̃_1 at
  t = 0 "for a better decoder log-likelihood") or 'small' (β̃_t, clipped).
  """
  if var_values is not None:
    min_log = extract(schedule.posterior_log_variance_clipped, t, x_t.ndim)
    max_log = extract(schedule.log_betas, t, x_t.ndim)
    frac = (var_values + 1) / 2
    return frac * max_log + (1 - frac) * min_log
  if fixed_variance not in FIXED_VARIANCES:
    raise ValueError(f"fixed_variance={fixed_variance!r}: expected one of {FIXED_VARIANCES}")
  table = (schedule.large_log_variance if fixed_variance == "large"
           else schedule.posterior_log_variance_clipped)
  return jnp.broadcast_to(extract(table, t, x_t.ndim), x_t.shape)


def p_mean_variance(schedule: Schedule, output: jax.Array, x_t: jax.Array, t: jax.Array, *,
                    prediction: str = "eps", learn_sigma: bool = False,
                    fixed_variance: str = "large", clip_denoised: bool = False
                    ) -> Dict[str, jax.Array]:
  """p(x_{t-1} | x_t) from a model output (DiT `GaussianDiffusion.p_mean_variance`).

  Returns {'mean', 'log_variance', 'pred_x0', 'eps'}, each shaped like x_t; the mean is
  the posterior mean at x̂_0 (clipped to [-1, 1] when `clip_denoised`), and 'eps' the ε
  consistent with that x̂_0.
  """
  mean_out, var_values = split_output(output, x_t, learn_sigma)
  pred_x0, eps = to_x0_eps(schedule, x_t, t, mean_out, prediction)
  if clip_denoised:
    pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
    eps = eps_from_x0(schedule, x_t, t, pred_x0)
  mean, _, _ = q_posterior(schedule, pred_x0, x_t, t)
  log_var = model_log_variance(schedule, t, x_t, var_values, fixed_variance)
  return {"mean": mean, "log_variance": log_var, "pred_x0": pred_x0, "eps": eps}
