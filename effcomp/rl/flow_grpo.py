"""Flow-GRPO (Liu et al. 2025, "Flow-GRPO: Training Flow Matching Models via Online RL"):
the SDE sampler with per-step Gaussian log-probabilities, group-relative advantages and
the clipped policy loss, as pure functions over a velocity function `v_fn(x, t)`.

Reference: yifan123/flow_grpo (ac4c86e) `flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`
(`sde_step_with_logprob`), `flow_grpo/stat_tracking.py` (`PerPromptStatTracker`) and
`scripts/train_sd3.py` (the loss), `config/base.py`, `config/grpo.py` (defaults).

Conventions. The reference runs diffusers' FlowMatchEulerDiscreteScheduler on SD3, whose
sigma is effcomp's t (`effcomp.diffusion.flow`): x_t = (1 − t)·x_0 + t·ε, t = 1 noise,
the model's output v = ε − x_0, sampling from t = 1 down to 0. So nothing is flipped:
sigma → t, sigma_prev → t_next, dt = t_next − t < 0, model_output → v. (SiT-style
x_t = t·x_1 + (1 − t)·ε models would need t → 1 − t and v → −v first.)

SDE step (reference `sde_step_with_logprob`; paper eq. 12 with Δt = −dt > 0). With
σ_t = η·√(t / (1 − t)) (η = `noise_level`, 0.7 by default; at t = 1 the reference puts the
grid's second time sigmas[1] in 1 − t, which is t_next at the first step, the only step
that starts at t = 1):

  mean   = x + [v + σ_t²/(2t)·(x + (1 − t)·v)]·dt
  x_next = mean + σ_t·√(−dt)·ε,   ε ~ N(0, I)

x + (1 − t)·v is E[ε | x_t] (`flow.noise_from_velocity`), so −(x + (1 − t)·v)/t is the
score ∇log p_t and the drift v − (σ_t²/2)·∇log p_t is the reverse-time SDE with the
probability-flow ODE dx = v·dt's marginals for any σ_t (η = 0 is that ODE's Euler step).
The discretization keeps them up to O(dt) except at the first step: from t = 1 the
reference's σ_t² = η²/(1 − t_next) makes that step's noise std η whatever dt, and its
variance overshoots by ≈ η⁴/4 (6 % at η = 0.7, 0.2 % at η = 0.3) before later steps relax
it (tests/test_flow_grpo.py measures both).

Log-probability (reference): log N(x_next; mean, (σ_t√(−dt))²) per element, then the *mean*
over all but the batch axis (`reduce='mean'`), not the sum: a per-dimension density, so the
PPO ratio exp(Δ log p) and its clip range (1e-4) are per dimension. `reduce='sum'` is the
joint density.

Advantages (`PerPromptStatTracker.update`, type 'grpo'): (r − mean of the prompt's group)
/ (std + 1e-4), population std (np.std, ddof 0), 1e-4 added to the std (not the variance);
the reference's configs use `global_std=True`: the std of all rewards of the batch in place
of the group's (the paper's eq. 4 uses the group's).

Loss (`train_sd3.py`): advantages clipped to ±adv_clip_max (5), ratio = exp(logp_new −
logp_old), policy loss = mean(max(−A·ratio, −A·clip(ratio, 1 − ε, 1 + ε))) (ε =
`clip_range`, 1e-4), plus β·KL (β = 0.04 on GenEval / OCR, 0.01 on PickScore):

  kl = mean over dims of (mean − mean_ref)² / (2·σ_t²)

with σ_t the SDE's diffusion coefficient (the reference's `std_dev_t`), not the step's std
σ_t·√(−dt): the exact KL between the two steps' Gaussians is this divided by −dt, so the
reference's term is (−dt)·KL per dimension (`reference_kl`; `gaussian_kl` is the exact one).
"""

from typing import Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]  # v(x [B, ...], t [B]) -> [B, ...]
REDUCTIONS = ("mean", "sum")


def _bcast(t: jax.Array, x: jax.Array) -> jax.Array:
  t = jnp.asarray(t, jnp.float32)
  t = jnp.broadcast_to(t, x.shape[:1]) if t.ndim == 0 else t
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def sde_sigma(t: jax.Array, t_next: jax.Array, eta: float) -> jax.Array:
  """σ_t = η·√(t / (1 − t')) with t' = t except at t = 1, where t' = t_next (the reference's
  sigma_max = sigmas[1]: the time after 1 on the grid). t, t_next: scalars or [B]."""
  t, t_next = jnp.asarray(t, jnp.float32), jnp.asarray(t_next, jnp.float32)
  return eta * jnp.sqrt(t / (1.0 - jnp.where(t == 1.0, t_next, t)))


def sde_mean_std(x: jax.Array, v: jax.Array, t: jax.Array, t_next: jax.Array,
                 eta: float) -> Tuple[jax.Array, jax.Array]:
  """(mean, std) of the step's Gaussian x_next | x (module docstring); std = σ_t·√(t − t_next)
  broadcast to x's rank. x, v: [B, ...]; t, t_next: scalars or [B], t_next < t."""
  t_b, dt = _bcast(t, x), _bcast(t_next, x) - _bcast(t, x)
  sigma = _bcast(sde_sigma(t, t_next, eta), x)
  mean = x + (v + sigma ** 2 / (2.0 * t_b) * (x + (1.0 - t_b) * v)) * dt
  return mean, sigma * jnp.sqrt(-dt)


def sde_step(x: jax.Array, v: jax.Array, t: jax.Array, t_next: jax.Array, eta: float,
             noise: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """One Flow-GRPO SDE step t → t_next: (x_next, mean, std), x_next = mean + std·noise.
  eta = 0 is the Euler step of the ODE (std 0)."""
  if noise.shape != x.shape:
    raise ValueError(f"noise of shape {noise.shape}: expected x's shape {x.shape}")
  mean, std = sde_mean_std(x, v, t, t_next, eta)
  return mean + std * noise, mean, std


def gaussian_log_prob(x: jax.Array, mean: jax.Array, std: jax.Array,
                      reduce: str = "mean") -> jax.Array:
  """log N(x; mean, std²) per element, reduced over all but the batch axis: [B].
  'mean' is the reference's (per-dimension); 'sum' the joint density."""
  if reduce not in REDUCTIONS:
    raise ValueError(f"reduce={reduce!r}: expected one of {REDUCTIONS}")
  std = jnp.broadcast_to(std, x.shape)
  log_p = (-jnp.square(x - mean) / (2.0 * jnp.square(std)) - jnp.log(std)
           - 0.5 * jnp.log(2.0 * jnp.pi))
  axes = tuple(range(1, x.ndim))
  return jnp.mean(log_p, axis=axes) if reduce == "mean" else jnp.sum(log_p, axis=axes)


def step_log_prob(x: jax.Array, x_next: jax.Array, v: jax.Array, t: jax.Array,
                  t_next: jax.Array, eta: float) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """(log p(x_next | x) [B], mean, std) of a recorded step under velocity v at (x, t): the
  reference's `sde_step_with_logprob(..., prev_sample=x_next)`."""
  mean, std = sde_mean_std(x, v, t, t_next, eta)
  return gaussian_log_prob(x_next, mean, std), mean, std


class Trajectory(NamedTuple):
  """A sampled chain: states [K + 1, B, ...] (states[0] = x_1 noise, states[K] the sample),
  log_probs [K, B] (of states[k + 1] given states[k]), times [K + 1] (1 → 0)."""
  states: jax.Array
  log_probs: jax.Array
  times: jax.Array


def step_noise(key: jax.Array, k: int, x: jax.Array) -> jax.Array:
  """The ε of step k: normal(fold_in(key, k)) (so a chain replays from its key)."""
  return jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)


def sample_trajectory(v_fn: VelocityFn, x1: jax.Array, times: jax.Array, eta: float,
                      key: jax.Array) -> Trajectory:
  """Runs the SDE from x1 (t = times[0]) over `times` [K + 1] (decreasing, e.g.
  `flow.time_grid(K)`), recording every state and step log-prob (a `lax.scan`). The
  log-probs are those of the sampling velocities (the reference's old log-probs)."""
  times = jnp.asarray(times, jnp.float32)
  if times.ndim != 1 or times.shape[0] < 2:
    raise ValueError(f"times of shape {times.shape}: expected [K + 1] with K ≥ 1")
  if eta <= 0:
    raise ValueError(f"eta={eta}: expected > 0 (eta = 0 has no step density; use `sample`)")
  batch = x1.shape[0]

  def body(x, xs):
    k, t, t_next = xs
    tb, tb_next = jnp.full((batch,), t), jnp.full((batch,), t_next)
    x_next, mean, std = sde_step(x, v_fn(x, tb), tb, tb_next, eta, step_noise(key, k, x))
    return x_next, (x_next, gaussian_log_prob(x_next, mean, std))

  steps = times.shape[0] - 1
  _, (states, log_probs) = jax.lax.scan(body, x1, (jnp.arange(steps), times[:-1], times[1:]))
  return Trajectory(jnp.concatenate([x1[None], states]), log_probs, times)


def sample(v_fn: VelocityFn, x1: jax.Array, times: jax.Array, eta: float,
           key: jax.Array) -> jax.Array:
  """The final state of the SDE (eta > 0) or of the ODE's Euler steps (eta = 0; the
  reference evaluates with noise_level 0) over `times`, without log-probs."""
  times = jnp.asarray(times, jnp.float32)
  batch = x1.shape[0]

  def body(k, x):
    t, t_next = jnp.full((batch,), times[k]), jnp.full((batch,), times[k + 1])
    v = v_fn(x, t)
    if eta == 0:
      return x + v * (_bcast(t_next, x) - _bcast(t, x))
    return sde_step(x, v, t, t_next, eta, step_noise(key, k, x))[0]

  return jax.lax.fori_loop(0, times.shape[0] - 1, body, x1)


def group_advantages(rewards: jax.Array, group_size: int, global_std: bool = False,
                     eps: float = 1e-4) -> jax.Array:
  """(r − mean of its group) / (std + eps) for rewards [P·G] laid out as P groups of G
  consecutive samples (one prompt each); std of the group (paper eq. 4) or, with
  `global_std`, of all P·G rewards (the reference configs' choice). Population std (ddof
  0); eps is added to the std, as `PerPromptStatTracker`."""
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1 or group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"rewards of shape {rewards.shape}, group_size={group_size}: expected "
                     "[prompts · group_size]")
  groups = rewards.reshape(-1, group_size)
  mean = jnp.mean(groups, axis=1, keepdims=True)
  std = jnp.std(rewards) if global_std else jnp.std(groups, axis=1, keepdims=True)
  return ((groups - mean) / (std + eps)).reshape(-1)


def gaussian_kl(mean: jax.Array, mean_ref: jax.Array, std: jax.Array) -> jax.Array:
  """KL(N(mean, std²) ‖ N(mean_ref, std²)) per dimension, averaged over all but the batch
  axis: [B] (the exact KL of two steps with the same std, per dimension)."""
  kl = jnp.square(mean - mean_ref) / (2.0 * jnp.square(jnp.broadcast_to(std, mean.shape)))
  return jnp.mean(kl, axis=tuple(range(1, mean.ndim)))


def reference_kl(mean: jax.Array, mean_ref: jax.Array, sigma: jax.Array) -> jax.Array:
  """The reference's KL term per sample [B]: mean over dims of (mean − mean_ref)² / (2σ_t²),
  σ_t = `sde_sigma` ([B] or scalar), = (t − t_next)·`gaussian_kl` of the two steps."""
  sigma = _bcast(sigma, mean)
  return jnp.mean(jnp.square(mean - mean_ref) / (2.0 * jnp.square(sigma)),
                  axis=tuple(range(1, mean.ndim)))


def grpo_loss(logp_new: jax.Array, logp_old: jax.Array, advantages: jax.Array, *,
              clip_range: float = 1e-4, adv_clip_max: Optional[float] = 5.0,
              kl_beta: float = 0.0, kl: Optional[jax.Array] = None
              ) -> Tuple[jax.Array, dict]:
  """PPO's clipped objective on the steps' log-probs, plus kl_beta·mean(kl).

  logp_new, logp_old: [..., B] (e.g. [steps, B]); advantages: broadcastable ([B]); kl: the
  per-step KL to the reference, same shape as logp_new (`reference_kl`), needed when
  kl_beta > 0. Means over every axis (the reference averages each step's batch, then the
  steps by gradient accumulation). Returns (loss, {'policy_loss', 'kl', 'clipfrac',
  'approx_kl'}); approx_kl = ½·mean((logp_new − logp_old)²) as the reference logs it.
  """
  if clip_range <= 0:
    raise ValueError(f"clip_range={clip_range}: expected > 0")
  if kl_beta and kl is None:
    raise ValueError(f"kl_beta={kl_beta}: needs kl (the per-step KL to the reference)")
  a = jnp.asarray(advantages, jnp.float32)
  if adv_clip_max is not None:
    a = jnp.clip(a, -adv_clip_max, adv_clip_max)
  ratio = jnp.exp(logp_new - logp_old)
  unclipped = -a * ratio
  clipped = -a * jnp.clip(ratio, 1.0 - clip_range, 1.0 + clip_range)
  policy = jnp.mean(jnp.maximum(unclipped, clipped))
  kl_mean = jnp.mean(kl) if kl is not None else jnp.zeros((), jnp.float32)
  metrics = {"policy_loss": policy, "kl": kl_mean,
             "clipfrac": jnp.mean((jnp.abs(ratio - 1.0) > clip_range).astype(jnp.float32)),
             "approx_kl": 0.5 * jnp.mean(jnp.square(logp_new - logp_old))}
  return policy + kl_beta * kl_mean, metrics
