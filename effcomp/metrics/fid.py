"""Fréchet Inception Distance (FID) from features: Gaussian statistics and their distance.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium", eq. 6) fits a Gaussian N(μ, Σ) to the features of each image
set and returns

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½).

The math follows mseitzer/pytorch-fid `src/pytorch_fid/fid_score.py`
(`calculate_frechet_distance`, `calculate_activation_statistics`): float64 NumPy,
`scipy.linalg.sqrtm` of the product, an `eps`·I offset on both covariances when that
square root is not finite, and the real part kept when the imaginary part of its
diagonal is below 1e-3 (larger is a `ValueError`). Statistics are `np.mean` and
`np.cov(rowvar=False)` (unbiased, N − 1).

Any features work (`effcomp.metrics.inception` for real FID, `effcomp.metrics.proxy`
for the CPU-scale proxy); `statistics_from_batches` streams image batches through a
jitted `features_fn(images) -> [B, D]` and accumulates the moments on the host in
float64 (Chan et al. 1979 pairwise update), so N×D features never sit in memory at once.
"""

from typing import Callable, Iterable, NamedTuple, Tuple
import warnings

from absl import logging
import jax.numpy as jnp
import numpy as np
from scipy import linalg

# pytorch-fid: imaginary parts of diag((Σ₁Σ₂)^½) above this are an error, below it noise.
IMAGINARY_ATOL = 1e-3


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """d² between N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid `calculate_frechet_distance`).

  mu1, mu2: [D]; sigma1, sigma2: [D, D] (a scalar is D = 1). Computed in float64.
  If sqrtm(Σ₁Σ₂) is not finite (a singular product), retries with `eps` added to both
  diagonals, as the reference does. Raises `ValueError` for mismatched shapes or an
  imaginary component larger than `IMAGINARY_ATOL` on the square root's diagonal.
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise ValueError(f"mu1.shape={mu1.shape}, mu2.shape={mu2.shape}: expected equal [D] vectors")
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"sigma1.shape={sigma1.shape}, sigma2.shape={sigma2.shape}: expected "
                     f"[{d}, {d}] matrices matching mu1.shape={mu1.shape}")
  diff = mu1 - mu2
  with warnings.catch_warnings():
    # A singular product is handled below (as pytorch-fid's `disp=False` call does).
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    logging.warning("fid calculation produces singular product; adding %s to diagonal of "
                    "cov estimates", eps)
    offset = np.eye(d) * eps
    covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
      raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary component "
                       f"{np.max(np.abs(covmean.imag))} > {IMAGINARY_ATOL}: expected "
                       "(near) positive semi-definite covariances")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _check_features(features, name: str = "features") -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(f"{name}.shape={features.shape}: expected [N, D]")
  return features


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
  """(μ [D], Σ [D, D]) of features [N, D], N ≥ 2, in float64 (pytorch-fid
  `calculate_activation_statistics`: `np.mean(axis=0)`, `np.cov(rowvar=False)`)."""
  features = _check_features(features)
  if features.shape[0] < 2:
    raise ValueError(f"features.shape={features.shape}: expected N ≥ 2 rows for a covariance")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features1, features2, eps: float = 1e-6) -> float:
  """FID between two feature sets [N1, D] and [N2, D]."""
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2), eps)


class Moments(NamedTuple):
  """Running moments of feature rows: count N, mean [D], scatter Σ (x − mean)(x − mean)ᵀ."""
  count: int
  mean: np.ndarray
  scatter: np.ndarray


def update_moments(moments: Moments | None, features) -> Moments:
  """`moments` merged with a batch of features [B, D] (Chan, Golub & LeVeque's pairwise
  update: exact in float64 and free of the E[xxᵀ] − μμᵀ cancellation)."""
  features = _check_features(features)
  n_b = features.shape[0]
  mean_b = features.mean(axis=0)
  centered = features - mean_b
  scatter_b = centered.T @ centered
  if moments is None or moments.count == 0:
    return Moments(n_b, mean_b, scatter_b)
  if moments.mean.shape != mean_b.shape:
    raise ValueError(f"features.shape={features.shape}: expected D={moments.mean.shape[0]} "
                     "like the earlier batches")
  n = moments.count + n_b
  delta = mean_b - moments.mean
  return Moments(n, moments.mean + delta * (n_b / n),
                 moments.scatter + scatter_b + np.outer(delta, delta) * (moments.count * n_b / n))


def moments_statistics(moments: Moments) -> Tuple[np.ndarray, np.ndarray]:
  """(μ, Σ) of accumulated moments, Σ unbiased (N − 1) like `np.cov`."""
  if moments is None or moments.count < 2:
    raise ValueError(f"moments.count={0 if moments is None else moments.count}: expected ≥ 2 "
                     "feature rows for a covariance")
  return moments.mean, moments.scatter / (moments.count - 1)


def statistics_from_batches(features_fn: Callable, batches: Iterable) -> Tuple[np.ndarray,
                                                                              np.ndarray]:
  """(μ, Σ) of `features_fn` over every image of `batches`.

  features_fn: a jitted `images [B, ...] -> features [B, D]`.
  batches: iterable of image arrays [B, ...] (NumPy or jax). A batch smaller than the
    first (the last one) is padded to the first's size with copies of its last image and
    the padded rows dropped, so `features_fn` compiles once. Batch t + 1 is dispatched
    before batch t's features are fetched, keeping the device busy.
  """
  moments, pending, size = None, None, None
  for images in batches:
    n = images.shape[0]
    size = n if size is None else size
    if n > size or n == 0:
      raise ValueError(f"batch with {n} images after a first batch of {size}: expected 1..{size} "
                       "(only the last batch may be smaller)")
    if n < size:
      pad = jnp.repeat(jnp.asarray(images[-1:]), size - n, axis=0)
      images = jnp.concatenate([jnp.asarray(images), pad], axis=0)
    features = features_fn(images)  # asynchronous dispatch
    if pending is not None:
      moments = update_moments(moments, np.asarray(pending[0])[:pending[1]])
    pending = (features, n)
  if pending is not None:
    moments = update_moments(moments, np.asarray(pending[0])[:pending[1]])
  return moments_statistics(moments)


def fid_from_batches(features_fn: Callable, batches1: Iterable, batches2: Iterable,
                     eps: float = 1e-6) -> float:
  """FID between two image streams, both through the same `features_fn`."""
  return frechet_distance(*statistics_from_batches(features_fn, batches1),
                          *statistics_from_batches(features_fn, batches2), eps)
