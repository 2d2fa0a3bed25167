"""Discrete noise schedules q(x_t | x_0) and timestep respacing.

Follows facebookresearch/DiT `diffusion/gaussian_diffusion.py` (itself OpenAI's ADM /
improved-diffusion) and `diffusion/respace.py`:

  * betas: 'linear' (Ho et al. 2020, β from 1e-4 to 0.02 scaled by 1000/T so that any T
    gives the same curve; DiT's schedule is `create()` = linear × 1000 steps) and
    'cosine' (Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2),
    s = 0.008, β clipped at 0.999; ADM's 'squaredcos_cap_v2').
  * derived arrays (computed in float64, stored float32 like the reference's
    `_extract_into_tensor(...).float()`): ᾱ_t, ᾱ_{t-1}, ᾱ_{t+1}, the posterior
    q(x_{t-1} | x_t, x_0) = N(c1·x_0 + c2·x_t, β̃_t) with β̃_t = β_t(1 − ᾱ_{t-1})/(1 − ᾱ_t)
    (DDPM eq. 6–7) and its log clipped at t = 0 (log β̃_1 there, β̃_0 = 0).
  * respacing (`respace.py` `SpacedDiffusion`): keep a subset S of the T steps and set
    β'_k = 1 − ᾱ_{s_k}/ᾱ_{s_{k-1}}, so ᾱ' at the kept steps equals ᾱ there;
    `timestep_map[k] = s_k` is the original timestep the model is called with.

Indices t ∈ [0, T) follow the reference: t = 0 is the first noising step (ᾱ_0 = 1 − β_0).
A `Schedule` is a pytree of [T] arrays (jit/vmap-able) plus the float64 betas as static
data, so respacing an already-built schedule stays exact.
"""

import math
from typing import Iterable, Sequence, Tuple, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

NOISE_SCHEDULES = ("linear", "cosine")
SectionCounts = Union[int, str, Sequence[int]]


class Schedule(flax.struct.PyTreeNode):
  """A discrete diffusion process of T steps; every array field is float32 [T].

  `timesteps` (static) and `timestep_map` (the same as int32 [T]): the timestep the model
  sees at each index (0 … T−1 for a full schedule, the kept original steps for a respaced
  one). `betas64`: the betas in float64 (static), the source of every other field. Static
  fields keep respacing possible while a schedule is a traced argument of a jitted function.
  """
  betas: jax.Array
  log_betas: jax.Array
  alphas_cumprod: jax.Array
  alphas_cumprod_prev: jax.Array
  alphas_cumprod_next: jax.Array
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  log_one_minus_alphas_cumprod: jax.Array
  sqrt_recip_alphas_cumprod: jax.Array
  sqrt_recipm1_alphas_cumprod: jax.Array
  posterior_variance: jax.Array
  posterior_log_variance_clipped: jax.Array
  posterior_mean_coef1: jax.Array
  posterior_mean_coef2: jax.Array
  large_variance: jax.Array
  large_log_variance: jax.Array
  betas64: Tuple[float, ...] = flax.struct.field(pytree_node=False)
  timesteps: Tuple[int, ...] = flax.struct.field(pytree_node=False)

  @property
  def num_timesteps(self) -> int:
    return len(self.betas64)

  @property
  def timestep_map(self) -> jax.Array:
    return jnp.asarray(self.timesteps, jnp.int32)


def named_betas(name: str, num_steps: int) -> np.ndarray:
  """β_t, float64 [num_steps], for `name` in NOISE_SCHEDULES (module docstring)."""
  if num_steps < 1:
    raise ValueError(f"num_steps={num_steps}: expected ≥ 1")
  if name == "linear":
    scale = 1000 / num_steps
    return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
  if name in ("cosine", "squaredcos_cap_v2"):
    return betas_for_alpha_bar(
        num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
  raise ValueError(f"noise_schedule={name!r}: expected one of {NOISE_SCHEDULES}")


def betas_for_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
  """β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta) for a continuous ᾱ: [0, 1] → (0, 1]."""
  t1 = np.arange(num_steps, dtype=np.float64) / num_steps
  t2 = (np.arange(num_steps, dtype=np.float64) + 1) / num_steps
  ratio = np.array([alpha_bar(b) / alpha_bar(a) for a, b in zip(t1, t2)], np.float64)
  return np.minimum(1 - ratio, max_beta)


def from_betas(betas, timestep_map=None) -> Schedule:
  """The `Schedule` of betas [T] (float64 math, as the reference's `GaussianDiffusion`)."""
  betas = np.asarray(betas, np.float64)
  if betas.ndim != 1 or betas.size == 0:
    raise ValueError(f"betas of shape {betas.shape}: expected a non-empty 1-D array")
  if not np.all((betas > 0) & (betas <= 1)):
    raise ValueError("betas: expected every value in (0, 1]")
  steps = betas.shape[0]
  if timestep_map is None:
    timestep_map = np.arange(steps)
  timestep_map = np.asarray(timestep_map)
  if timestep_map.shape != (steps,):
    raise ValueError(f"timestep_map of shape {timestep_map.shape}: expected ({steps},)")
  ac = np.cumprod(1.0 - betas)
  ac_prev = np.append(1.0, ac[:-1])
  ac_next = np.append(ac[1:], 0.0)
  post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
  # β̃_0 = 0: the reference clips its log to log β̃_1. A one-step schedule has no β̃_1;
  # β_0 (the only finite choice that does not depend on the data) stands in.
  first = post_var[1] if steps > 1 else betas[0]
  post_var_clipped = np.append(first, post_var[1:])
  large_var = np.append(first, betas[1:])  # 'fixed_large': β_t, β̃_1 at t = 0
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Schedule(
      betas=f32(betas), log_betas=f32(np.log(betas)), alphas_cumprod=f32(ac),
      alphas_cumprod_prev=f32(ac_prev), alphas_cumprod_next=f32(ac_next),
      sqrt_alphas_cumprod=f32(np.sqrt(ac)), sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1 - ac)),
      log_one_minus_alphas_cumprod=f32(np.log(1 - ac)),
      sqrt_recip_alphas_cumprod=f32(np.sqrt(1 / ac)),
      sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1 / ac - 1)),
      posterior_variance=f32(post_var),
      posterior_log_variance_clipped=f32(np.log(post_var_clipped)),
      posterior_mean_coef1=f32(betas * np.sqrt(ac_prev) / (1 - ac)),
      posterior_mean_coef2=f32((1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac)),
      large_variance=f32(large_var), large_log_variance=f32(np.log(large_var)),
      betas64=tuple(float(b) for b in betas), timesteps=tuple(int(s) for s in timestep_map))


def space_timesteps(num_timesteps: int, section_counts: SectionCounts) -> Tuple[int, ...]:
  """The kept timesteps (sorted) of DiT's `respace.space_timesteps`.

  section_counts: 'ddimN' (the DDIM paper's integer stride giving exactly N steps),
  'N' or 'a,b,c' / [a, b, c] (the T steps cut into equal sections, section i strided to
  its count with rounded fractional strides; both ends of each section kept), or an int N.
  E.g. (1000, '250') keeps 0, 4, 8, …, 999; (1000, 'ddim25') keeps 0, 40, …, 960.
  """
  if isinstance(section_counts, str):
    if section_counts.startswith("ddim"):
      desired = int(section_counts[len("ddim"):])
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
          return tuple(range(0, num_timesteps, stride))
      if desired == num_timesteps == 1:  # the reference's stride loop is empty for T = 1
        return (0,)
      raise ValueError(f"section_counts={section_counts!r}: cannot create exactly {desired} "
                       f"steps out of {num_timesteps} with an integer stride")
    try:
      section_counts = [int(x) for x in section_counts.split(",")]
    except ValueError:
      raise ValueError(f"section_counts={section_counts!r}: expected 'ddimN', 'N' or "
                       "comma-separated ints") from None
  elif isinstance(section_counts, (int, np.integer)):
    section_counts = [int(section_counts)]
  size_per, extra = divmod(num_timesteps, len(section_counts))
  start, steps = 0, []
  for i, count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if count < 1 or size < count:
      raise ValueError(f"section_counts={section_counts}: cannot divide a section of {size} "
                       f"steps into {count}")
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    position = 0.0
    for _ in range(count):  # accumulated float position + Python's round, as the reference
      steps.append(start + round(position))
      position += stride
    start += size
  return tuple(sorted(set(steps)))


def respace(schedule: Schedule, use_timesteps: Iterable[int]) -> Schedule:
  """`schedule` restricted to the indices `use_timesteps` (DiT `SpacedDiffusion`).

  β'_k = 1 − ᾱ_{s_k}/ᾱ_{s_{k-1}} (ᾱ_{s_{-1}} = 1), so ᾱ'_k = ᾱ_{s_k}; the model keeps
  being called with the original timesteps (`timestep_map` composes when respacing twice).
  """
  kept = sorted(set(int(s) for s in use_timesteps))
  steps = schedule.num_timesteps
  if not kept or kept[0] < 0 or kept[-1] >= steps:
    raise ValueError(f"use_timesteps={kept[:8]}…: expected a non-empty subset of "
                     f"[0, {steps})")
  ac = np.cumprod(1.0 - np.asarray(schedule.betas64, np.float64))[kept]
  new_betas = 1.0 - ac / np.append(1.0, ac[:-1])
  old_map = np.asarray(schedule.timesteps)
  return from_betas(new_betas, old_map[kept])


def create(noise_schedule: str = "linear", num_steps: int = 1000,
           respacing: Union[None, SectionCounts] = None) -> Schedule:
  """DiT's `create_diffusion` schedule: `create()` trains (linear, 1000 steps);
  `create(respacing='250')` or `'ddim25'` samples with fewer steps."""
  schedule = from_betas(named_betas(noise_schedule, num_steps))
  if respacing is None or respacing == "":
    return schedule
  return respace(schedule, space_timesteps(num_steps, respacing))


def extract(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """values[t] shaped [batch, 1, …, 1] (`ndim` dims) to broadcast against x_t.

  values: [T]; t: int [batch] indices into the schedule.
  """
  t = jnp.asarray(t)
  return jnp.take(values, t, axis=0).reshape(t.shape + (1,) * (ndim - t.ndim))
