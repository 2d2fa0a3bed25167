"""Rectified flow / flow matching: the straight noising path, its velocity and its times.

Convention (Stable Diffusion 3, Esser et al. 2024, eq. 2–3 and §3.1 "RF"; rectified
flow, Liu et al. 2022; conditional flow matching with σ_min = 0, Lipman et al. 2022):

  x_t = (1 − t)·x_0 + t·ε,   t ∈ [0, 1],  t = 0 data, t = 1 noise ε ~ N(0, I)
  dx_t/dt = u = ε − x_0      (the regression target of a velocity model v(x_t, t))

Sampling integrates dx/dt = v from t = 1 to t = 0. SiT (Ma et al. 2024) writes the same
linear path with time reversed (x_t = t·x_1 + (1 − t)·ε, x_1 data, velocity x_1 − ε): a
SiT model is ours with t → 1 − t and v → −v. Model times stay floats in [0, 1]; a model
whose embedding expects DiT's 0…1000 scales them itself.

Times for training: 'uniform' or SD3's 'logit_normal' (t = sigmoid(n), n ~ N(m, s²),
eq. 19), optionally shifted towards noise by SD3's resolution shift (eq. 23 with
α = shift): t' = α·t/(1 + (α − 1)·t), the same map diffusers' FlowMatchEulerDiscrete
applies to its sampling sigmas.
"""

import jax
import jax.numpy as jnp

TIME_DISTRIBUTIONS = ("uniform", "logit_normal")


def _bcast(t: jax.Array, ndim: int) -> jax.Array:
  t = jnp.asarray(t, jnp.float32)
  return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def interpolate(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = (1 − t)·x_0 + t·ε; x0, noise: [batch, ...], t: float [batch]."""
  if noise.shape != x0.shape:
    raise ValueError(f"noise of shape {noise.shape}: expected x0's shape {x0.shape}")
  t = _bcast(t, x0.ndim)
  return (1.0 - t) * x0 + t * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
  """u = dx_t/dt = ε − x_0."""
  return noise - x0


def x0_from_velocity(x_t: jax.Array, t: jax.Array, velocity: jax.Array) -> jax.Array:
  """x̂_0 = x_t − t·v (exact for v = ε − x_0)."""
  return x_t - _bcast(t, x_t.ndim) * velocity


def noise_from_velocity(x_t: jax.Array, t: jax.Array, velocity: jax.Array) -> jax.Array:
  """ε̂ = x_t + (1 − t)·v (exact for v = ε − x_0)."""
  return x_t + (1.0 - _bcast(t, x_t.ndim)) * velocity


def shift_time(t: jax.Array, shift: float = 1.0) -> jax.Array:
  """t' = shift·t/(1 + (shift − 1)·t): monotone, fixes 0 and 1, shift > 1 → noisier."""
  if shift <= 0:
    raise ValueError(f"shift={shift}: expected > 0")
  t = jnp.asarray(t, jnp.float32)
  return shift * t / (1.0 + (shift - 1.0) * t)


def sample_time(rng: jax.Array, batch: int, distribution: str = "uniform",
                logit_mean: float = 0.0, logit_std: float = 1.0,
                shift: float = 1.0) -> jax.Array:
  """Training times t: float32 [batch] in [0, 1] (module docstring)."""
  if distribution == "uniform":
    t = jax.random.uniform(rng, (batch,), jnp.float32)
  elif distribution == "logit_normal":
    if logit_std <= 0:
      raise ValueError(f"logit_std={logit_std}: expected > 0")
    t = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(rng, (batch,), jnp.float32))
  else:
    raise ValueError(f"distribution={distribution!r}: expected one of {TIME_DISTRIBUTIONS}")
  return shift_time(t, shift)


def time_grid(steps: int, shift: float = 1.0) -> jax.Array:
  """Sampling times 1 = t_0 > … > t_steps = 0: float32 [steps + 1], uniform then shifted."""
  if steps < 1:
    raise ValueError(f"steps={steps}: expected ≥ 1")
  return shift_time(jnp.linspace(1.0, 0.0, steps + 1, dtype=jnp.float32), shift)
