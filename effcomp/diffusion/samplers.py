"""Samplers: DDPM ancestral, DDIM (with η) and its inversion, Euler / Heun for flows.

Diffusion samplers walk a (respaced) `Schedule` from index K−1 down to 0 in a
`lax.fori_loop`, calling `model_fn(x, schedule.timestep_map[t])` (original timesteps, as
DiT's `_WrappedModel`):

  * 'ddpm' (DiT `p_sample`): x ← μ_θ(x_t) + 1[t > 0]·exp(½·log Σ)·z, z ~ N(0, I), with Σ
    learned (output [..., 2C]) or fixed ('large' β_t, DiT's default, or 'small' β̃_t).
  * 'ddim' (Song et al. 2021, eq. 12 and 16; DiT `ddim_sample`): with x̂_0, ε̂ from the
    model and a = ᾱ_t, a' = ᾱ_{t-1} of the respaced schedule,
      σ = η·√((1 − a')/(1 − a))·√(1 − a/a'),
      x ← √a'·x̂_0 + √(1 − a' − σ²)·ε̂ + 1[t > 0]·σ·z.
    η = 0 is deterministic; η = 1 is DDPM with β̃_t (same noise draws → same samples).
  * `ddim_invert` (x_0 → x_T, η = 0): DiT/ADM `ddim_reverse_sample` (eq. 12 reversed:
    x_0-estimate and ε̂ from the model at the level x is at, re-noised to the next
    level), on the sampler's grid of levels 1 → ᾱ_0 → … → ᾱ_{K−1}, so x_T lands where
    `ddim_sample` starts (ADM treats x_0 as x at ᾱ_0 and ends at ᾱ = 0 instead, one level
    off); the first step, from clean data, takes ε̂ from the model at t_0. Inverts
    `ddim_sample` up to the O(step) change of ε̂ within a step. (Evaluating the model at
    the *next* timestep on the current x instead mixes noise levels: on data of mean μ
    the mean of x_T drifts by O(μ/K): 0.7 for μ = 1.5 and K = 10 in our tests.)

Flow samplers integrate dx/dt = v(x, t) (`flow.py` convention: t = 1 noise → t = 0 data)
over `flow.time_grid(steps, shift)`: 'euler' x ← x + Δt·v(x, t); 'heun' (Karras et al.
2022, Alg. 1, second-order correction at every step, including the last one since v is
defined at t = 0): x̃ = x + Δt·v(x, t), x ← x + Δt·(v(x, t) + v(x̃, t'))/2.

Noise: z at loop index i is `normal(fold_in(rng_loop, i))`, so DDPM and DDIM(η=1) draw
identical noise; x_T is `normal(rng_init)` with rng_init, rng_loop = split(rng).
"""

from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from effcomp.diffusion import flow
from effcomp.diffusion import parameterization as param
from effcomp.diffusion.schedules import Schedule, extract, respace, space_timesteps

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
SAMPLERS = ("ddpm", "ddim", "euler", "heun")
Steps = Union[None, int, str, Sequence[int]]


def respaced(schedule: Schedule, steps: Steps) -> Schedule:
  """`schedule` respaced to `steps`: None keeps it; an int K keeps K evenly spaced steps
  (DiT's sample.py, respacing str(K)); a str ('250', 'ddim25', '10,15,20') or a list of
  section counts follows `schedules.space_timesteps`."""
  if steps is None:
    return schedule
  kept = space_timesteps(schedule.num_timesteps, str(steps) if isinstance(steps, int) else steps)
  return schedule if len(kept) == schedule.num_timesteps else respace(schedule, kept)


def _noise(rng, i, x):
  return jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)


def ddpm_step(schedule: Schedule, output: jax.Array, x: jax.Array, t: jax.Array,
              noise: jax.Array, *, prediction: str = "eps", learn_sigma: bool = False,
              fixed_variance: str = "large", clip_denoised: bool = False) -> jax.Array:
  """x_{t-1} ~ p(x_{t-1} | x_t) given the model output at (x, t) and z = noise."""
  p = param.p_mean_variance(schedule, output, x, t, prediction=prediction,
                            learn_sigma=learn_sigma, fixed_variance=fixed_variance,
                            clip_denoised=clip_denoised)
  nonzero = extract((jnp.arange(schedule.num_timesteps) != 0).astype(x.dtype), t, x.ndim)
  return (p["mean"] + nonzero * jnp.exp(0.5 * p["log_variance"]) * noise).astype(x.dtype)


def ddim_step(schedule: Schedule, output: jax.Array, x: jax.Array, t: jax.Array,
              noise: jax.Array, eta: float = 0.0, *, prediction: str = "eps",
              learn_sigma: bool = False, clip_denoised: bool = False) -> jax.Array:
  """One DDIM update t → t−1 (module docstring); `noise` is unused when eta = 0."""
  mean_out, _ = param.split_output(output, x, learn_sigma)
  pred_x0, _ = param.to_x0_eps(schedule, x, t, mean_out, prediction)
  if clip_denoised:
    pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
  eps = param.eps_from_x0(schedule, x, t, pred_x0)  # re-derived, as the reference
  a = extract(schedule.alphas_cumprod, t, x.ndim)
  a_prev = extract(schedule.alphas_cumprod_prev, t, x.ndim)
  sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a)) * jnp.sqrt(1 - a / a_prev)
  mean = pred_x0 * jnp.sqrt(a_prev) + jnp.sqrt(jnp.maximum(1 - a_prev - sigma ** 2, 0.0)) * eps
  return (mean + sigma * noise).astype(x.dtype)  # σ = 0 at t = 0 (a_prev = 1)


def _loop(schedule: Schedule, model_fn: ModelFn, x: jax.Array, step) -> jax.Array:
  """Runs step(i, t, output, x) for i = K−1 … 0 with output = model_fn(x, map[t])."""
  steps = schedule.num_timesteps

  def body(j, x):
    i = steps - 1 - j
    t = jnp.full((x.shape[0],), i, jnp.int32)
    return step(i, t, model_fn(x, schedule.timestep_map[t]), x)

  return jax.lax.fori_loop(0, steps, body, x)


def ddpm_sample(rng: jax.Array, model_fn: ModelFn, x_T: jax.Array, schedule: Schedule, *,
                prediction: str = "eps", learn_sigma: bool = False,
                fixed_variance: str = "large", clip_denoised: bool = False) -> jax.Array:
  """Ancestral sampling from x_T [batch, ...] over every step of `schedule`."""
  return _loop(schedule, model_fn, x_T, lambda i, t, out, x: ddpm_step(
      schedule, out, x, t, _noise(rng, i, x), prediction=prediction, learn_sigma=learn_sigma,
      fixed_variance=fixed_variance, clip_denoised=clip_denoised))


def ddim_sample(rng: jax.Array, model_fn: ModelFn, x_T: jax.Array, schedule: Schedule,
                eta: float = 0.0, *, prediction: str = "eps", learn_sigma: bool = False,
                clip_denoised: bool = False) -> jax.Array:
  """DDIM from x_T [batch, ...] over every step of `schedule` (deterministic at eta = 0)."""
  return _loop(schedule, model_fn, x_T, lambda i, t, out, x: ddim_step(
      schedule, out, x, t, _noise(rng, i, x), eta, prediction=prediction,
      learn_sigma=learn_sigma, clip_denoised=clip_denoised))


def ddim_invert(model_fn: ModelFn, x0: jax.Array, schedule: Schedule, *,
                prediction: str = "eps", learn_sigma: bool = False) -> jax.Array:
  """x_T at level ᾱ_{K−1} whose η = 0 DDIM sample is ≈ x0 (module docstring)."""

  def body(i, x):
    t = jnp.full((x.shape[0],), i, jnp.int32)
    t_now = jnp.maximum(t - 1, 0)  # x is at level ᾱ_{i−1} (clean at i = 0: use t_0)
    out = model_fn(x, schedule.timestep_map[t_now])
    mean_out, _ = param.split_output(out, x, learn_sigma)
    _, eps = param.to_x0_eps(schedule, x, t_now, mean_out, prediction)
    a = extract(schedule.alphas_cumprod, t, x.ndim)
    a_now = extract(schedule.alphas_cumprod_prev, t, x.ndim)
    pred_x0 = (x - jnp.sqrt(1 - a_now) * eps) / jnp.sqrt(a_now)
    return (jnp.sqrt(a) * pred_x0 + jnp.sqrt(1 - a) * eps).astype(x.dtype)

  return jax.lax.fori_loop(0, schedule.num_timesteps, body, x0)


def flow_ode(model_fn: ModelFn, x: jax.Array, times: jax.Array, method: str = "euler"
             ) -> jax.Array:
  """Integrates dx/dt = model_fn(x, t) over times [n + 1] (any direction: 1 → 0 samples,
  0 → 1 inverts); method 'euler' or 'heun'. x: [batch, ...]; t passed as float32 [batch]."""
  if method not in ("euler", "heun"):
    raise ValueError(f"method={method!r}: expected 'euler' or 'heun'")
  times = jnp.asarray(times, jnp.float32)
  if times.ndim != 1 or times.shape[0] < 2:
    raise ValueError(f"times of shape {times.shape}: expected [n + 1] with n ≥ 1")
  full = lambda s: jnp.full((x.shape[0],), s, jnp.float32)

  def body(k, x):
    t, t_next = times[k], times[k + 1]
    v = model_fn(x, full(t))
    x_euler = x + (t_next - t) * v
    if method == "euler":
      return x_euler.astype(x.dtype)
    v_next = model_fn(x_euler, full(t_next))
    return (x + (t_next - t) * 0.5 * (v + v_next)).astype(x.dtype)

  return jax.lax.fori_loop(0, times.shape[0] - 1, body, x)


def sample(rng: jax.Array, model_fn: ModelFn, shape: Sequence[int],
           schedule: Optional[Schedule] = None, sampler: str = "ddpm", steps: Steps = None,
           *, prediction: str = "eps", learn_sigma: bool = False,
           fixed_variance: str = "large", eta: float = 0.0, clip_denoised: bool = False,
           shift: float = 1.0, noise: Optional[jax.Array] = None) -> jax.Array:
  """Samples [*shape] (float32) with `sampler` in SAMPLERS; the one entry point.

  'ddpm' / 'ddim': `schedule` (the training one) respaced to `steps` (`respaced`; None:
  every step). 'euler' / 'heun': a flow-matching velocity model, `steps` (int) uniform
  times shifted by `shift`; `schedule` unused. `noise`: the starting x_T (default
  normal(split(rng)[0])). Jittable with `model_fn`, `shape`, strings and `steps` static.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
  rng_init, rng_loop = jax.random.split(rng)
  shape = tuple(shape)
  if noise is None:
    noise = jax.random.normal(rng_init, shape, jnp.float32)
  elif noise.shape != shape:
    raise ValueError(f"noise of shape {noise.shape}: expected shape {shape}")
  if sampler in ("euler", "heun"):
    if not isinstance(steps, int) or steps < 1:
      raise ValueError(f"steps={steps!r}: the {sampler} sampler needs an int ≥ 1")
    return flow_ode(model_fn, noise, flow.time_grid(steps, shift), sampler)
  if schedule is None:
    raise ValueError(f"schedule=None: sampler={sampler!r} needs a diffusion schedule")
  schedule = respaced(schedule, steps)
  if sampler == "ddpm":
    return ddpm_sample(rng_loop, model_fn, noise, schedule, prediction=prediction,
                       learn_sigma=learn_sigma, fixed_variance=fixed_variance,
                       clip_denoised=clip_denoised)
  return ddim_sample(rng_loop, model_fn, noise, schedule, eta, prediction=prediction,
                     learn_sigma=learn_sigma, clip_denoised=clip_denoised)
