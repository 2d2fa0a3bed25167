"""Coarse-to-fine outlier pre-processing (CFP), CBQ's step before reconstruction.

CBQ (Ding et al., "CBQ: Cross-Block Quantization for Large Language Models", 2023 /
ICLR 2025, §3.4) finds outliers in two stages and then removes them:

  1. coarse: Tukey's fence on magnitudes, T_c = Q3 + λ₁·(Q3 − Q1), λ₁ = 1.5; every
     |x| > T_c is a candidate (`coarse_threshold`);
  2. fine: the candidates sorted by magnitude are split into outliers (the k largest)
     and a reserved group (the rest), choosing k to maximise the distance between the
     two groups minus λ₂ times their intra-group variance (`fine_split`);
  3. weights: outliers are truncated to the threshold (`preprocess_weight`);
     activations: outlier channels are scaled down by s_j > 1, with diag(s) folded into
     the weights that read them, SmoothQuant-style (`activation_scales`).

Variants we chose (no official code exists; the paper gives the criterion in words):
  * The fine stage works on log-magnitudes ℓ = log|x|, with
        J(k) = (ℓ_(k) − ℓ_(k+1)) − λ₂ · (Var[ℓ_out] + Var[ℓ_res]),
    ℓ_(1) ≥ ℓ_(2) ≥ … the sorted candidates: the distance between the groups is the
    log-ratio of the smallest outlier to the largest reserved value (the gap between
    them), and the reserved group always holds T_c as one more member, standing for
    the inliers below it (so "every candidate is an outlier", k = m, is a valid split,
    with ℓ_(m+1) = log T_c). λ₂ = 0.5; λ₂ = 0 is the largest gap alone.
    Why: with distances between group *means* on linear magnitudes, isolating the single
    largest value always scores best (its group has zero variance and the largest
    mean), and even the pure minimum-variance split (λ₂ → ∞, Otsu) cuts a group of
    outliers spread over 8–20σ at the midpoint of the means; both were measured on the
    planted sets of tests/test_cbq.py. Logs make the criterion scale invariant and treat
    a 10× and a 100× outlier as one group.
  * The returned threshold is the midpoint between the smallest outlier and the largest
    value kept; `|x| > threshold` is the outlier mask.
  * Activation scales (the paper: "scale the outlier channels"): on outlier channels
    s_j = max(1, (a_j / T)^α · (w_ref / w_j)^(1−α)), elsewhere s_j = 1. This is
    SmoothQuant's s = a^α / w^(1−α) measured relative to the inliers: a_j / T is how far
    channel j's activation range exceeds the threshold, w_j / w_ref how its weight row
    compares with the inlier rows' largest. α = 0.7 follows Huawei msmodelslim's partial
    CBQ (its "scale exponent 0.7"); α = 1 brings each outlier channel exactly to T.

Shapes: `values` any shape (flattened); `act_absmax` [in]; kernels [in, out].
"""

from typing import Dict, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

Array = jax.Array
LAM1 = 1.5  # Tukey's fence (CBQ §3.4)
LAM2 = 0.5  # our choice (module docstring), checked on planted outliers (tests/test_cbq.py)
QUARTILES = (0.25, 0.75)
ALPHA = 0.7  # msmodelslim's CBQ scale exponent


def _magnitudes(values: Array) -> Array:
  return jnp.abs(jnp.ravel(jnp.asarray(values))).astype(jnp.float32)


def coarse_threshold(values: Array, lam1: float = LAM1,
                     quantiles: Tuple[float, float] = QUARTILES) -> Array:
  """T_c = Q3 + λ₁·(Q3 − Q1) of |values| (a scalar; `quantiles` = (Q1, Q3) levels)."""
  lo, hi = quantiles
  if not 0.0 <= lo < hi <= 1.0:
    raise ValueError(f"quantiles={quantiles}: expected 0 ≤ low < high ≤ 1")
  q1, q3 = jnp.quantile(_magnitudes(values), jnp.array([lo, hi], jnp.float32))
  return q3 + lam1 * (q3 - q1)


def _split(values: Array, lam1: float, lam2: float, quantiles) -> Tuple[Array, Array]:
  """(fine threshold, coarse threshold) of |values|."""
  if lam2 < 0:
    raise ValueError(f"lam2={lam2}: expected ≥ 0")
  a = -jnp.sort(-_magnitudes(values))  # descending
  t = coarse_threshold(values, lam1, quantiles)
  candidate = a > t
  m = jnp.sum(candidate)
  tiny = jnp.finfo(jnp.float32).tiny
  log_t = jnp.log(jnp.maximum(t, tiny))
  ell = jnp.where(candidate, jnp.log(jnp.maximum(a, tiny)) - log_t, 0.0)  # relative to T_c
  k = jnp.arange(1, a.size + 1)  # the k largest values are the outliers
  nxt = jnp.where(k < m, jnp.roll(ell, -1), 0.0)  # ℓ_(k+1); T_c (0 here) after the last
  gap = ell - nxt
  s1, s2 = jnp.cumsum(ell), jnp.cumsum(ell * ell)
  var_out = s2 / k - (s1 / k) ** 2
  n_res = (m - k + 1).astype(jnp.float32)  # candidates below the split, plus T_c (ℓ = 0)
  res1, res2 = jnp.sum(ell) - s1, jnp.sum(ell * ell) - s2
  var_res = res2 / jnp.maximum(n_res, 1.0) - (res1 / jnp.maximum(n_res, 1.0)) ** 2
  score = gap - lam2 * (jnp.maximum(var_out, 0.0) + jnp.maximum(var_res, 0.0))
  best = jnp.argmax(jnp.where(k <= m, score, -jnp.inf))  # index of the smallest outlier
  below = jnp.where(best + 1 < a.size, a[jnp.minimum(best + 1, a.size - 1)], 0.0)
  threshold = jnp.where(m > 0, 0.5 * (a[best] + below), a[0])
  return threshold, t


def fine_split(values: Array, lam2: float = LAM2, lam1: float = LAM1,
               quantiles: Tuple[float, float] = QUARTILES) -> Array:
  """The outlier threshold of |values| (a scalar): CFP's coarse fence, then the fine split.

  `|values| > threshold` are the outliers; with no coarse candidate the threshold is
  max|values| and nothing is an outlier.
  """
  return _split(values, lam1, lam2, quantiles)[0]


def outlier_mask(values: Array, lam2: float = LAM2, lam1: float = LAM1,
                 quantiles: Tuple[float, float] = QUARTILES) -> Array:
  """Boolean mask (values' shape) of CFP's outliers."""
  return jnp.abs(values) > fine_split(values, lam2, lam1, quantiles)


def preprocess_weight(w: Array, lam2: float = LAM2, lam1: float = LAM1,
                      quantiles: Tuple[float, float] = QUARTILES) -> Tuple[Array, Dict[str, Array]]:
  """Truncates kernel `w` [in, out]'s outliers to ±threshold (per tensor).

  Returns:
    `(w_clipped, info)`, info = {'threshold', 'coarse_threshold', 'mask' (w's shape),
    'num_outliers'}.
  """
  if w.ndim != 2:
    raise ValueError(f"w of shape {w.shape}: expected a 2-D kernel [in, out]")
  threshold, coarse = _split(w, lam1, lam2, quantiles)
  mask = jnp.abs(w) > threshold
  clipped = jnp.clip(w, -threshold, threshold).astype(w.dtype)
  return clipped, {"threshold": threshold, "coarse_threshold": coarse, "mask": mask,
                   "num_outliers": jnp.sum(mask)}


def activation_scales(act_absmax: Array, kernels: Union[Array, Sequence[Array], None] = None,
                      alpha: float = ALPHA, lam2: float = LAM2, lam1: float = LAM1,
                      quantiles: Tuple[float, float] = QUARTILES) -> Array:
  """Per-input-channel scales s [in] for CFP's activation outlier channels.

  The caller computes with x / s and diag(s)·W (fold 1/s into the norm or linear that
  produces x: `blocks.fold_scales`). Channels CFP flags in `act_absmax` get
  s_j = max(1, (a_j / T)^α · (w_ref / w_j)^(1−α)) (module docstring); all others exactly 1.

  Args:
    act_absmax: [in] max |x| of each input channel over the calibration tokens.
    kernels: the [in, out] kernel(s) reading x; w_j = max |W[j, :]| over all of them and
      w_ref the largest w_j of the non-outlier channels. None: weights ignored (w_j = w_ref).
    alpha: migration strength in [0, 1].
  """
  a = jnp.asarray(act_absmax, jnp.float32)
  if a.ndim != 1:
    raise ValueError(f"act_absmax of shape {a.shape}: expected [in]")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha={alpha}: expected a value in [0, 1]")
  threshold = fine_split(a, lam2, lam1, quantiles)
  mask = a > threshold
  if kernels is None:
    w_row = jnp.ones_like(a)
  else:
    ks = [kernels] if hasattr(kernels, "ndim") else list(kernels)
    for k in ks:
      if k.ndim != 2 or k.shape[0] != a.shape[0]:
        raise ValueError(f"kernel of shape {k.shape}: expected [in={a.shape[0]}, out]")
    w_row = jnp.max(jnp.stack([jnp.max(jnp.abs(k.astype(jnp.float32)), axis=1) for k in ks]),
                    axis=0)
  w_row = jnp.maximum(w_row, 1e-12)
  w_ref = jnp.max(jnp.where(mask, 0.0, w_row))
  w_ref = jnp.where(w_ref > 0, w_ref, jnp.max(w_row))
  s = (a / threshold) ** alpha * (w_ref / w_row) ** (1.0 - alpha)
  return jnp.where(mask, jnp.maximum(s, 1.0), 1.0)
