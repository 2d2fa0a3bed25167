"""Gaussian mixtures: data whose noised law, optimal denoiser and velocity are analytic.

A known answer for every sampler and objective. With x_0 ~ Σ_k π_k N(μ_k, Σ_k) and a
noising path x_t = α·x_0 + σ·ε (diffusion: α = √ᾱ_t, σ = √(1 − ᾱ_t); flow: α = 1 − t,
σ = t), x_t is again a mixture, Σ_k π_k N(α·μ_k, C_k) with C_k = α²·Σ_k + σ²·I, and the
minimum-MSE predictions are mixtures of the per-component Gaussian posteriors
(Bishop, PRML §2.3.3):

  r_k(x_t)        ∝ π_k·N(x_t; α·μ_k, C_k)                (responsibilities)
  E[ε | x_t, k]   = σ·C_k⁻¹·(x_t − α·μ_k)
  E[x_0 | x_t, k] = μ_k + α·Σ_k·C_k⁻¹·(x_t − α·μ_k)

so ε̂ = Σ_k r_k·E[ε | x_t, k], x̂_0 likewise, and the flow velocity is ε̂ − x̂_0. A
class-conditional model conditions on one component (label k); the null label
(= num_components) is the whole mixture, so classifier-free guidance has both halves.

`statistics` reads a sample back as weights, means and covariances (each point assigned
to its most responsible component at t = 0): what a sampler must reproduce.
"""

from typing import Callable, Dict, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.diffusion.schedules import Schedule


class GaussianMixture(flax.struct.PyTreeNode):
  """weights [K] (sum 1), means [K, D], covariances [K, D, D] (symmetric positive definite)."""
  weights: jax.Array
  means: jax.Array
  covariances: jax.Array

  @property
  def num_components(self) -> int:
    return self.weights.shape[0]


def create(weights, means, covariances) -> GaussianMixture:
  """A `GaussianMixture`, its shapes and weights checked."""
  weights = jnp.asarray(weights, jnp.float32)
  means = jnp.asarray(means, jnp.float32)
  covariances = jnp.asarray(covariances, jnp.float32)
  k = weights.shape[0]
  if weights.ndim != 1 or not np.isclose(float(weights.sum()), 1.0, atol=1e-5):
    raise ValueError(f"weights of shape {weights.shape}: expected [K] summing to 1")
  if means.ndim != 2 or means.shape[0] != k:
    raise ValueError(f"means of shape {means.shape}: expected [{k}, D]")
  d = means.shape[1]
  if covariances.shape != (k, d, d):
    raise ValueError(f"covariances of shape {covariances.shape}: expected ({k}, {d}, {d})")
  if np.any(np.linalg.eigvalsh(np.asarray(covariances, np.float64)) <= 0):
    raise ValueError("covariances: expected symmetric positive definite matrices")
  return GaussianMixture(weights, means, covariances)


def sample(rng: jax.Array, mixture: GaussianMixture, n: int,
           labels: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
  """(x [n, D], labels int32 [n]): labels drawn by the weights unless given."""
  rng_label, rng_x = jax.random.split(rng)
  if labels is None:
    labels = jax.random.categorical(rng_label, jnp.log(mixture.weights), shape=(n,))
  labels = jnp.asarray(labels, jnp.int32)
  chol = jnp.linalg.cholesky(mixture.covariances)[labels]
  z = jax.random.normal(rng_x, (n, mixture.means.shape[1]))
  return mixture.means[labels] + jnp.einsum("nij,nj->ni", chol, z), labels


def posterior(mixture: GaussianMixture, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array,
              labels: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
  """{'responsibilities' [B, K], 'eps' [B, D], 'x0' [B, D]}: the optimal predictions at
  x_t [B, D] on the path α·x_0 + σ·ε (alpha, sigma: [B]). labels (int [B], optional):
  condition on that component; the null label K keeps the whole mixture."""
  d = x_t.shape[-1]
  alpha, sigma = alpha[:, None, None, None], sigma[:, None, None, None]
  cov = alpha ** 2 * mixture.covariances[None] + sigma ** 2 * jnp.eye(d)  # [B, K, D, D]
  diff = x_t[:, None, :] - alpha[..., 0] * mixture.means[None]  # [B, K, D]
  solved = jnp.linalg.solve(cov, diff[..., None])[..., 0]  # C_k⁻¹·(x_t − α·μ_k)
  _, logdet = jnp.linalg.slogdet(cov)
  log_r = jnp.log(mixture.weights) - 0.5 * (jnp.sum(diff * solved, -1) + logdet)
  if labels is not None:
    k = mixture.num_components
    own = jax.nn.one_hot(labels, k, dtype=bool) | (labels == k)[:, None]
    log_r = jnp.where(own, log_r, -jnp.inf)
  r = jax.nn.softmax(log_r, axis=-1)
  eps = sigma[..., 0] * solved
  x0 = mixture.means[None] + alpha[..., 0] * jnp.einsum("kij,bkj->bki", mixture.covariances,
                                                        solved)
  return {"responsibilities": r, "eps": jnp.einsum("bk,bkd->bd", r, eps),
          "x0": jnp.einsum("bk,bkd->bd", r, x0)}


def eps_model(mixture: GaussianMixture, schedule: Schedule
              ) -> Callable[[jax.Array, jax.Array, Optional[jax.Array]], jax.Array]:
  """The optimal ε-model `model_fn(x_t, t, labels=None)`, t the (original) timestep of the
  full training `schedule` (what the samplers pass)."""

  def model_fn(x, t, labels=None):
    a = schedule.alphas_cumprod[t]
    return posterior(mixture, x, jnp.sqrt(a), jnp.sqrt(1.0 - a), labels)["eps"]

  return model_fn


def velocity_model(mixture: GaussianMixture
                   ) -> Callable[[jax.Array, jax.Array, Optional[jax.Array]], jax.Array]:
  """The optimal flow velocity `model_fn(x_t, t, labels=None)`, t float [B] in [0, 1]."""

  def model_fn(x, t, labels=None):
    p = posterior(mixture, x, 1.0 - t, t, labels)
    return p["eps"] - p["x0"]

  return model_fn


def statistics(mixture: GaussianMixture, x: jax.Array) -> Dict[str, np.ndarray]:
  """A sample x [N, D] read back against `mixture`: {'labels' [N] (most responsible
  component at t = 0), 'weights' [K], 'means' [K, D], 'covariances' [K, D, D]} (NaN for a
  component no point was assigned to)."""
  x = jnp.asarray(x, jnp.float32)
  ones = jnp.ones(x.shape[:1])
  labels = np.asarray(posterior(mixture, x, ones, 0.0 * ones)["responsibilities"].argmax(-1))
  x = np.asarray(x, np.float64)
  k, d = mixture.means.shape
  means, covs = np.full((k, d), np.nan), np.full((k, d, d), np.nan)
  for j in range(k):
    own = x[labels == j]
    if len(own) > 1:
      means[j], covs[j] = own.mean(0), np.cov(own, rowvar=False)
  return {"labels": labels, "weights": np.bincount(labels, minlength=k) / len(labels),
          "means": means, "covariances": covs}


def mismatch(mixture: GaussianMixture, x: jax.Array) -> Dict[str, float]:
  """How far a sample x [N, D] is from `mixture`: {'weights': max |Δπ|, 'means':
  max_k ‖Δμ_k‖ / √(max eigenvalue of Σ_k), 'covariances': max_k ‖ΔΣ_k‖_F / ‖Σ_k‖_F}.
  (Points are assigned by responsibility, which truncates overlapping tails: compare
  against `mismatch` of an exact sample of the same size, not against zero.)"""
  s = statistics(mixture, x)
  covs = np.asarray(mixture.covariances, np.float64)
  scale = np.sqrt(np.linalg.eigvalsh(covs)[:, -1])
  mean_err = np.linalg.norm(s["means"] - np.asarray(mixture.means), axis=-1) / scale
  cov_err = (np.linalg.norm(s["covariances"] - covs, axis=(1, 2))
             / np.linalg.norm(covs, axis=(1, 2)))
  nan_max = lambda a: float(np.inf if np.isnan(a).any() else a.max())
  return {"weights": float(np.abs(s["weights"] - np.asarray(mixture.weights)).max()),
          "means": nan_max(mean_err), "covariances": nan_max(cov_err)}
