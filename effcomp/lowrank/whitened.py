"""Activation-aware SVD: factorize T·W instead of W, with T from the calibration inputs X.

A linear layer is judged by its outputs on real inputs, ‖X W − X A B‖_F, not by ‖W − A B‖_F.
Both methods here take the SVD of a transformed kernel T W [in, out], truncate it, and undo T
on the left factor (A = T⁻¹ U_r √Σ_r, B = √Σ_r V_rᵀ; √Σ on both sides as in `svd.py`).

SVD-LLM (Wang et al. 2024, "SVD-LLM: Truncation-aware Data Whitening and Parameter Update for
Large Language Model Compression", §3.1; AIoT-MLSys-Lab/SVD-LLM `SVDLLM.py`, `profle_svdllm`
and `whitening`): T = Sᵀ with S the lower Cholesky factor of XᵀX = S Sᵀ. Then

    ‖X (W − A B)‖_F² = tr((W − AB)ᵀ S Sᵀ (W − AB)) = ‖Sᵀ W − Sᵀ A B‖_F²,

and Sᵀ A B ranges over all rank-r matrices, so truncating the SVD of Sᵀ W is the exact
optimum of the output error (Eckart–Young), and each dropped whitened singular value σ_k
adds exactly σ_k² to ‖X(W − AB)‖². The reference, in torch's [out, in] layout, takes
`svd(W @ S)` and `truc_v = VT_r @ inv(S)`; transposed, that is ours. Any positive multiple of
XᵀX gives the same factors; we take GPTQ's H = 2/N XᵀX (`effcomp.quant.ptq.hessian`).

ASVD (Yuan et al. 2023, "ASVD: Activation-aware Singular Value Decomposition for Compressing
Large Language Models", §3.2; hahnyuan/ASVD4LLM `act_aware_utils.py`,
`calib_input_distribution(method="abs_mean")`, and `modules/svd_linear.py`,
`SVDLinear.from_linear(act_aware=True)`): T = diag(s), s_j = mean|X_j|^α + 1e-6 over the
calibration tokens, α = 0.5 (`asvd.py`'s default `--alpha`); input channels that carry large
activations weigh more in the truncation. It is a heuristic, not an optimum.

Deviations from the references:
  * SVD-LLM: Cholesky, inverse-free triangular solves and SVD all run in float64 (the reference:
    Cholesky in float64, the SVD of W S in float32). Its fallback for an H that is not positive
    definite (rank-deficient calibration) adds (−λ_min + 1e-6)·I; ours adds
    (−λ_min + 1e-6 · mean diag H)·I, the same rule made independent of H's scale. An optional
    `damp` adds damp · mean(diag H)·I first (GPTQ's damping; 0 = the reference).
  * ASVD: the reference sums per-sample token means over calibration samples of equal length;
    we take the mean over all tokens (a constant factor apart, which the SVD does not see but
    the 1e-6 does). It truncates with `torch.svd_lowrank` (randomized, q = rank); we take the
    exact SVD. Its Fisher-information scaling and sensitivity-based rank search are left out
    (ranks come from `rank_allocation.py`).
"""

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from effcomp.lowrank import svd as svd_lib

Array = jax.Array
ASVD_ALPHA = 0.5  # ASVD4LLM asvd.py --alpha default
ASVD_EPS = 1e-6  # ASVD4LLM svd_linear.py: scaling_diag_matrix += 1e-6
SVDLLM_EPS = 1e-6  # SVD-LLM SVDLLM.py: fallback shift (−λ_min + 1e-6), here × mean diag H


def whitening_factor(hessian, damp: float = 0.0) -> np.ndarray:
  """S [in, in] lower triangular, float64, with S Sᵀ = H + λI (SVD-LLM's `scaling_diag_matrix`).

  Args:
    hessian: [in, in] a positive multiple of XᵀX (e.g. `hessian.from_inputs(x)` = 2/N XᵀX).
    damp: λ = damp · mean(diag H) added before the factorization (0: the reference).

  If H + λI is not positive definite, it is shifted by (−λ_min + 1e-6 · mean diag H)·I, as the
  reference does when its Cholesky fails.
  """
  h = np.array(hessian, np.float64)
  if h.ndim != 2 or h.shape[0] != h.shape[1]:
    raise ValueError(f"hessian of shape {h.shape}: expected a square [in, in] matrix")
  if damp < 0:
    raise ValueError(f"damp={damp}: expected a non-negative fraction of mean(diag H)")
  scale = float(np.mean(np.diag(h)))
  if not scale > 0:
    raise ValueError("hessian has no positive diagonal: the layer saw only zero inputs")
  h[np.diag_indices_from(h)] += damp * scale
  try:
    return np.linalg.cholesky(h)
  except np.linalg.LinAlgError:
    h[np.diag_indices_from(h)] += -np.linalg.eigvalsh(h)[0] + SVDLLM_EPS * scale
    return np.linalg.cholesky(h)


def whitened_kernel(w, whitening: np.ndarray) -> np.ndarray:
  """Sᵀ W [in, out] (float64): the kernel whose singular values are the output error's."""
  svd_lib.check_kernel(w)
  if whitening.shape != (np.shape(w)[0],) * 2:
    raise ValueError(f"whitening of shape {whitening.shape}: expected ({np.shape(w)[0]},) * 2 "
                     f"for w of shape {np.shape(w)}")
  return whitening.T @ np.asarray(w, np.float64)


def svdllm_factors(w, whitening: np.ndarray, rank: int) -> Tuple[Array, Array]:
  """SVD-LLM's truncation-aware factors (A [in, r], B [r, out]), minimizing ‖X W − X A B‖_F.

  Args:
    w: the kernel [in, out].
    whitening: S [in, in] from `whitening_factor` (S Sᵀ = XᵀX).
    rank: r.

  Returns:
    A = S⁻ᵀ U_r √Σ_r and B = √Σ_r V_rᵀ, with U Σ Vᵀ the SVD of Sᵀ W, in w's dtype.
  """
  u, s, vt = svd_lib.decompose(whitened_kernel(w, whitening))
  a_white, b = svd_lib.split_factors(u, s, vt, rank)
  a = scipy.linalg.solve_triangular(whitening.T, a_white, lower=False)  # S⁻ᵀ, no inverse formed
  dtype = jnp.asarray(w).dtype
  return jnp.asarray(a, dtype), jnp.asarray(b, dtype)


def abs_mean(xs: Sequence[Array]) -> Array:
  """mean |x| [in] per input channel over every token of the batches `xs` ([..., in] each)."""
  if not xs:
    raise ValueError("xs is empty: expected the layer's inputs of at least one batch")
  total = sum(jnp.sum(jnp.abs(x.astype(jnp.float32)).reshape(-1, x.shape[-1]), axis=0) for x in xs)
  return total / sum(x.size // x.shape[-1] for x in xs)


def activation_scale(channel_abs_mean, alpha: float = ASVD_ALPHA) -> np.ndarray:
  """ASVD's s [in] = mean|X|^α + 1e-6 (float64)."""
  if alpha < 0:
    raise ValueError(f"alpha={alpha}: expected a non-negative exponent")
  m = np.asarray(channel_abs_mean, np.float64)
  if m.ndim != 1 or np.any(m < 0):
    raise ValueError(f"channel_abs_mean of shape {m.shape}: expected a non-negative vector [in]")
  return m ** alpha + ASVD_EPS


def scaled_kernel(w, scale: np.ndarray) -> np.ndarray:
  """diag(s) W [in, out] (float64): ASVD's `w * scaling_diag_matrix.view(1, -1)`, transposed."""
  svd_lib.check_kernel(w)
  if scale.shape != (np.shape(w)[0],):
    raise ValueError(f"scale of shape {scale.shape}: expected ({np.shape(w)[0]},) for w of "
                     f"shape {np.shape(w)}")
  return scale[:, None] * np.asarray(w, np.float64)


def asvd_factors(w, scale: np.ndarray, rank: int) -> Tuple[Array, Array]:
  """ASVD's factors (A [in, r], B [r, out]): A = diag(s)⁻¹ U_r √Σ_r, B = √Σ_r V_rᵀ, with U Σ Vᵀ
  the SVD of diag(s) W and s from `activation_scale`."""
  u, sv, vt = svd_lib.decompose(scaled_kernel(w, scale))
  a_scaled, b = svd_lib.split_factors(u, sv, vt, rank)
  dtype = jnp.asarray(w).dtype
  return jnp.asarray(a_scaled / scale[:, None], dtype), jnp.asarray(b, dtype)
