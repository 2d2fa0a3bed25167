"""Residual shifting diffusion (ResShift) for restoration: a Markov chain from the HR x_0 to
the (upsampled) LR y in a few steps, as pure functions.

Yue et al., "ResShift: Efficient Diffusion Model for Image Super-resolution by Residual
Shifting" (NeurIPS 2023). Follows zsyOAOA/ResShift `models/gaussian_diffusion.py`
(`get_named_eta_schedule`, `GaussianDiffusion`: `q_sample`, `q_posterior_mean_variance`,
`p_mean_variance`, `p_sample`, `p_sample_loop_progressive`, `prior_sample`,
`training_losses`, `_scale_input`) and `models/script_util.py`
(`create_gaussian_diffusion`). DiT-SR (Cheng et al.) trains on this process unchanged; its
recipe (configs/realsr_DiT.yaml) is the default here: 15 steps, κ = 2, √η_1 = 0.04/κ,
√η_T = 0.99, power 0.3, x_0 prediction, normalized input.

With the residual e = y − x_0 and t = 0 … T−1 (t = 0 is the first, least noisy step):

  q(x_t | x_0, y)       = N(x_0 + η_t·e, κ²·η_t·I)                                (eq. 1–2)
  q(x_{t−1} | x_t, x_0) = N(η_{t−1}/η_t · x_t + α_t/η_t · x_0, κ²·η_{t−1}/η_t·α_t·I)  (eq. 5)
  α_t = η_t − η_{t−1}, η_{−1} = 0; the prior x_T ~ N(y, κ²·η_T·I) (η_T ≈ 1).

Schedule 'exponential' (the reference, §3.2): √η_t = √η_1 · b^(β_t), with
β_t = (t/(T−1))^p · (T−1), b = (√η_T/√η_1)^(1/(T−1)), √η_1 = min(min_noise_level/κ,
min_noise_level), √η_T = etas_end.

Training (`training_loss`): t ~ U{0 … T−1}, x_t from q, the model sees x_t normalized
(`scale_input`: ÷ √(κ²η_t + 1) for latents, ÷ (3κ√η_t + 1) for pixels) and t, and predicts
x_0 ('xstart', the papers' choice), ε, κ√η_t·ε ('epsilon_scale') or the residual
('residual'); the loss is the MSE to that target (×`weights` when `weighted`: the
reference's ELBO weights). Sampling (`sample`): x_T from the prior, then T ancestral steps
through the posterior with x_0 predicted (clipped to [−1, 1] in pixel space, as the
reference's sampler does without an autoencoder); the last step's mean is the x_0
prediction itself (η_{−1} = 0). Layout: channels last; `model_fn(x_scaled, t) -> output`.
"""

import math
from typing import Callable, Dict, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

PREDICTIONS = ("xstart", "epsilon", "epsilon_scale", "residual")
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


class ResShiftSchedule(flax.struct.PyTreeNode):
  """η_t and the posterior arrays, float32 [T] (computed in float64), and κ (static)."""
  sqrt_etas: jax.Array
  etas: jax.Array
  etas_prev: jax.Array
  posterior_variance: jax.Array
  posterior_log_variance_clipped: jax.Array
  posterior_mean_coef1: jax.Array
  posterior_mean_coef2: jax.Array
  weight_loss_mse: jax.Array
  kappa: float = flax.struct.field(pytree_node=False)

  @property
  def num_timesteps(self) -> int:
    return self.etas.shape[0]


def exponential_sqrt_etas(steps: int, kappa: float, min_noise_level: float, etas_end: float,
                          power: float) -> np.ndarray:
  """√η_t, float64 [steps] (reference `get_named_eta_schedule('exponential')`)."""
  if steps < 2:
    raise ValueError(f"steps={steps}: expected ≥ 2")
  start = min(min_noise_level / kappa, min_noise_level)
  if not 0 < start < etas_end <= 1:
    raise ValueError(f"min_noise_level={min_noise_level}, kappa={kappa}, etas_end={etas_end}: "
                     f"expected 0 < min(min_noise_level/kappa, min_noise_level) < etas_end ≤ 1")
  increaser = math.exp(math.log(etas_end / start) / (steps - 1))
  exponent = np.linspace(0, 1, steps, dtype=np.float64) ** power * (steps - 1)
  return np.power(increaser, exponent) * start


def from_sqrt_etas(sqrt_etas, kappa: float) -> ResShiftSchedule:
  """The schedule of √η [T] (reference `GaussianDiffusion.__init__`, float64 math)."""
  sqrt_etas = np.asarray(sqrt_etas, np.float64)
  etas = sqrt_etas ** 2
  if sqrt_etas.ndim != 1 or sqrt_etas.size < 2 or not np.all((etas > 0) & (etas <= 1)):
    raise ValueError("sqrt_etas: expected a 1-D array of ≥ 2 values in (0, 1]")
  if np.any(np.diff(etas) <= 0):
    raise ValueError("sqrt_etas: expected strictly increasing values")
  if kappa <= 0:
    raise ValueError(f"kappa={kappa}: expected > 0")
  etas_prev = np.append(0.0, etas[:-1])
  alpha = etas - etas_prev
  post_var = kappa ** 2 * etas_prev / etas * alpha
  post_var_clipped = np.append(post_var[1], post_var[1:])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return ResShiftSchedule(
      sqrt_etas=f32(sqrt_etas), etas=f32(etas), etas_prev=f32(etas_prev),
      posterior_variance=f32(post_var),
      posterior_log_variance_clipped=f32(np.log(post_var_clipped)),
      posterior_mean_coef1=f32(etas_prev / etas), posterior_mean_coef2=f32(alpha / etas),
      # Reference weight for x_0 / residual prediction: 0.5/σ̃²_t · (α_t/η_t)².
      weight_loss_mse=f32(0.5 / post_var_clipped * (alpha / etas) ** 2),
      kappa=float(kappa))


def create(steps: int = 15, kappa: float = 2.0, min_noise_level: float = 0.04,
           etas_end: float = 0.99, power: float = 0.3) -> ResShiftSchedule:
  """The 'exponential' schedule (defaults: DiT-SR's and ResShift's real-SR recipe)."""
  return from_sqrt_etas(exponential_sqrt_etas(steps, kappa, min_noise_level, etas_end, power),
                        kappa)


def _at(a: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """a[t] [B] broadcast to rank ndim ([B, 1, …, 1])."""
  return a[t].reshape(t.shape + (1,) * (ndim - 1))


def q_mean_variance(schedule: ResShiftSchedule, x0: jax.Array, y: jax.Array, t: jax.Array
                    ) -> Tuple[jax.Array, jax.Array]:
  """Mean x_0 + η_t(y − x_0) and variance κ²η_t of q(x_t | x_0, y)."""
  eta = _at(schedule.etas, t, x0.ndim)
  return x0 + eta * (y - x0), schedule.kappa ** 2 * eta * jnp.ones_like(x0)


def q_sample(schedule: ResShiftSchedule, x0: jax.Array, y: jax.Array, t: jax.Array,
             noise: jax.Array) -> jax.Array:
  """x_t = x_0 + η_t(y − x_0) + κ√η_t·ε."""
  mean, _ = q_mean_variance(schedule, x0, y, t)
  return mean + schedule.kappa * _at(schedule.sqrt_etas, t, x0.ndim) * noise


def q_posterior(schedule: ResShiftSchedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
                ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x_0)."""
  n = x_t.ndim
  mean = (_at(schedule.posterior_mean_coef1, t, n) * x_t
          + _at(schedule.posterior_mean_coef2, t, n) * x0)
  return (mean, _at(schedule.posterior_variance, t, n),
          _at(schedule.posterior_log_variance_clipped, t, n))


def prior_sample(schedule: ResShiftSchedule, y: jax.Array, noise: jax.Array) -> jax.Array:
  """x_T ~ N(y, κ²η_T): y + κ√η_T·ε."""
  return y + schedule.kappa * schedule.sqrt_etas[-1] * noise


def scale_input(schedule: ResShiftSchedule, x_t: jax.Array, t: jax.Array, latent: bool
                ) -> jax.Array:
  """The model's input (reference `_scale_input`, normalize_input=True)."""
  sqrt_eta = _at(schedule.sqrt_etas, t, x_t.ndim)
  if latent:  # the latent code's variance is about 1
    return x_t / jnp.sqrt(sqrt_eta ** 2 * schedule.kappa ** 2 + 1)
  return x_t / (sqrt_eta * schedule.kappa * 3 + 1)


def model_input(schedule: ResShiftSchedule, x_t: jax.Array, t: jax.Array,
                normalize_input: bool, latent: bool) -> jax.Array:
  """What the model sees of x_t: `scale_input` when normalize_input, else x_t itself."""
  return scale_input(schedule, x_t, t, latent) if normalize_input else x_t


def predict_x0(schedule: ResShiftSchedule, output: jax.Array, x_t: jax.Array, y: jax.Array,
               t: jax.Array, prediction: str = "xstart") -> jax.Array:
  """x_0 from the model's output for each `prediction` (reference `p_mean_variance`)."""
  n = x_t.ndim
  eta = _at(schedule.etas, t, n)
  if prediction == "xstart":
    return output
  if prediction == "residual":
    return y - output
  if prediction == "epsilon":
    noise = schedule.kappa * _at(schedule.sqrt_etas, t, n) * output
  elif prediction == "epsilon_scale":
    noise = output
  else:
    raise ValueError(f"prediction={prediction!r}: expected one of {PREDICTIONS}")
  return (x_t - noise - eta * y) / (1 - eta)


def denoise(model_fn: ModelFn, x_t: jax.Array, y: jax.Array, t: jax.Array,
            schedule: ResShiftSchedule, *, prediction: str = "xstart",
            normalize_input: bool = True, latent: bool = False) -> jax.Array:
  """The model's x_0 at state x_t (unscaled) and timesteps t [B]."""
  return predict_x0(schedule, model_fn(model_input(schedule, x_t, t, normalize_input, latent), t),
                    x_t, y, t, prediction)


def _target(schedule, x0, y, t, noise, prediction):
  return {"xstart": x0, "residual": y - x0, "epsilon": noise,
          "epsilon_scale": schedule.kappa * _at(schedule.sqrt_etas, t, x0.ndim) * noise
          }[prediction]


def training_loss(rng: jax.Array, model_fn: ModelFn, x0: jax.Array, y: jax.Array,
                  schedule: ResShiftSchedule, *, prediction: str = "xstart",
                  weighted: bool = False, normalize_input: bool = True, latent: bool = False,
                  t: Optional[jax.Array] = None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Per-example loss [B] and metrics (`mse` [B], `x_t`, `pred_x0`) for one random t
  per example (reference `training_losses`); `t` fixes the timesteps."""
  if prediction not in PREDICTIONS:
    raise ValueError(f"prediction={prediction!r}: expected one of {PREDICTIONS}")
  if x0.shape != y.shape:
    raise ValueError(f"x0 {x0.shape} and y {y.shape}: expected equal shapes")
  rng_t, rng_noise = jax.random.split(rng)
  b = x0.shape[0]
  if t is None:
    t = jax.random.randint(rng_t, (b,), 0, schedule.num_timesteps)
  noise = jax.random.normal(rng_noise, x0.shape, x0.dtype)
  x_t = q_sample(schedule, x0, y, t, noise)
  output = model_fn(model_input(schedule, x_t, t, normalize_input, latent), t)
  if output.shape != x0.shape:
    raise ValueError(f"model output {output.shape}: expected {x0.shape}")
  mse = jnp.mean(jnp.square(_target(schedule, x0, y, t, noise, prediction) - output),
                 axis=tuple(range(1, x0.ndim)))
  if prediction == "epsilon_scale":
    mse = mse / (schedule.kappa ** 2 * schedule.etas[t])
  loss = mse * schedule.weight_loss_mse[t] if weighted else mse
  return loss, {"mse": mse, "x_t": x_t,
                "pred_x0": predict_x0(schedule, output, x_t, y, t, prediction)}


def p_sample(rng: jax.Array, model_fn: ModelFn, x_t: jax.Array, y: jax.Array, t: jax.Array,
             schedule: ResShiftSchedule, *, prediction: str = "xstart", clip: bool = True,
             normalize_input: bool = True, latent: bool = False
             ) -> Tuple[jax.Array, jax.Array]:
  """One ancestral step: (x_{t−1}, predicted x_0); no noise where t = 0."""
  x0 = denoise(model_fn, x_t, y, t, schedule, prediction=prediction,
               normalize_input=normalize_input, latent=latent)
  if clip:
    x0 = jnp.clip(x0, -1.0, 1.0)
  mean, _, log_var = q_posterior(schedule, x0, x_t, t)
  noise = jax.random.normal(rng, x_t.shape, x_t.dtype)
  nonzero = (t != 0).astype(x_t.dtype).reshape(t.shape + (1,) * (x_t.ndim - 1))
  return mean + nonzero * jnp.exp(0.5 * log_var) * noise, x0


def sample(rng: jax.Array, model_fn: ModelFn, y: jax.Array, schedule: ResShiftSchedule, *,
           prediction: str = "xstart", clip: bool = True, normalize_input: bool = True,
           latent: bool = False, return_trajectory: bool = False):
  """x_0 from the chain started at the prior around y (reference `p_sample_loop`).

  return_trajectory: also {'x_t': [T+1, …] (x_T, x_{T−1}, …, x_0: the sampled states),
  'pred_x0': [T, …] (the x_0 predicted at t = T−1, …, 0), 't': [T]} — what a distilled
  student needs from its teacher.
  """
  rng_prior, rng_steps = jax.random.split(rng)
  x_T = prior_sample(schedule, y, jax.random.normal(rng_prior, y.shape, y.dtype))
  ts = jnp.arange(schedule.num_timesteps - 1, -1, -1)

  def step(x, inputs):
    t, key = inputs
    x_prev, x0 = p_sample(key, model_fn, x, y, jnp.full(y.shape[:1], t), schedule,
                          prediction=prediction, clip=clip, normalize_input=normalize_input,
                          latent=latent)
    return x_prev, (x_prev, x0)

  keys = jax.random.split(rng_steps, schedule.num_timesteps)
  x0, (states, preds) = jax.lax.scan(step, x_T, (ts, keys))
  if not return_trajectory:
    return x0
  return x0, {"x_t": jnp.concatenate([x_T[None], states]), "pred_x0": preds, "t": ts}


def ddim_step(x0: jax.Array, x_t: jax.Array, y: jax.Array, t: jax.Array,
              schedule: ResShiftSchedule) -> jax.Array:
  """The deterministic step x_t → x_{t−1} given the predicted x_0 (SinSR's DDIM-style
  sampler for this process, wyf0912/SinSR `models/gaussian_diffusion.py` p_mean_variance
  with ddim): x_{t−1} = x̂_0 + η_{t−1}(y − x̂_0) + √(η_{t−1}/η_t)·(x_t − x̂_0 − η_t(y − x̂_0)),
  i.e. the forward process's mean at t − 1 plus the current noise rescaled to its
  standard deviation; at t = 0 (η_{−1} = 0) it is x̂_0 itself."""
  n = x_t.ndim
  eta, eta_prev = _at(schedule.etas, t, n), _at(schedule.etas_prev, t, n)
  return x0 + eta_prev * (y - x0) + jnp.sqrt(eta_prev / eta) * (x_t - x0 - eta * (y - x0))


def ddim_sample(model_fn: ModelFn, x_T: jax.Array, y: jax.Array, schedule: ResShiftSchedule,
                *, prediction: str = "xstart", clip: bool = True, normalize_input: bool = True,
                latent: bool = False) -> jax.Array:
  """x_0 by T deterministic steps (`ddim_step`) from the given prior state x_T (e.g.
  `prior_sample(schedule, y, ε)`): SinSR's and TAD-SR's teacher target for the one-step
  student started from the same x_T (SinSR `ddim_sample_loop`)."""

  def step(x, t):
    tb = jnp.full(y.shape[:1], t)
    x0 = denoise(model_fn, x, y, tb, schedule, prediction=prediction,
                 normalize_input=normalize_input, latent=latent)
    if clip:
      x0 = jnp.clip(x0, -1.0, 1.0)
    return ddim_step(x0, x, y, tb, schedule), None

  x0, _ = jax.lax.scan(step, x_T, jnp.arange(schedule.num_timesteps - 1, -1, -1))
  return x0
