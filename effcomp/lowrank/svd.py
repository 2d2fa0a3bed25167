"""Truncated SVD of a kernel W [in, out] into two factors, W ≈ A @ B.

By Eckart–Young, keeping the r largest singular values, W ≈ U_r Σ_r V_rᵀ, is the best
rank-r approximation in the Frobenius norm, with error² = Σ_{k>r} σ_k². The singular
values are split as both official codes do by default: √Σ on each side,

    A = U_r √Σ_r   [in, r],     B = √Σ_r V_rᵀ   [r, out],

(ASVD, hahnyuan/ASVD4LLM `modules/svd_linear.py`, `SVDLinear(sigma_fuse="UV")`; SVD-LLM,
AIoT-MLSys-Lab/SVD-LLM `SVDLLM.py`, `whitening`: `svd_u = truc_u @ sqrtSigma`,
`svd_v = sqrtSigma @ truc_v`). effcomp kernels are the transpose of torch's [out, in]
weights, so the references' `svd_u` is our Bᵀ and their `svd_v` our Aᵀ; a layer computes
y = x @ A @ B + b.

The decompositions run in float64 NumPy on the host (as the GPTQ code here does); the
factors come back as jax arrays of the kernel's dtype.
"""

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def check_kernel(w) -> None:
  """Raises ValueError unless `w` is a 2-D kernel [in, out]."""
  if np.ndim(w) != 2:
    raise ValueError(f"w of shape {np.shape(w)}: expected a 2-D kernel [in, out]")


def _check_rank(rank: int, w_shape: Tuple[int, int]) -> None:
  if not 1 <= rank <= min(w_shape):
    raise ValueError(f"rank={rank}: expected 1 ≤ rank ≤ min(in, out) = {min(w_shape)} for a "
                     f"kernel of shape {tuple(w_shape)}")


def decompose(w) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The thin SVD of `w` [in, out] in float64: (u [in, k], s [k] descending, vt [k, out]),
  k = min(in, out)."""
  check_kernel(w)
  return np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)


def singular_values(w) -> np.ndarray:
  """σ [min(in, out)] of `w` [in, out], descending, float64."""
  check_kernel(w)
  return np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)


def split_factors(u: np.ndarray, s: np.ndarray, vt: np.ndarray,
                  rank: int) -> Tuple[np.ndarray, np.ndarray]:
  """(u_r √s_r [in, r], √s_r vt_r [r, out]) from an SVD (float64)."""
  _check_rank(rank, (u.shape[0], vt.shape[1]))
  root = np.sqrt(s[:rank])
  return u[:, :rank] * root, root[:, None] * vt[:rank]


def truncated_svd(w, rank: int) -> Tuple[Array, Array]:
  """(A [in, r], B [r, out]) with A @ B the best rank-r approximation of `w` [in, out]."""
  check_kernel(w)
  _check_rank(rank, np.shape(w))
  a, b = split_factors(*decompose(w), rank)
  dtype = jnp.asarray(w).dtype
  return jnp.asarray(a, dtype), jnp.asarray(b, dtype)


def energy_rank(s, tau: float) -> int:
  """The smallest r whose singular values keep ≥ τ of the energy: Σ_{k≤r} σ_k² ≥ τ Σ_k σ_k².

  Args:
    s: singular values [k], descending (e.g. `singular_values(w)`).
    tau: the fraction of Σσ² to keep, in (0, 1].
  """
  if not 0.0 < tau <= 1.0:
    raise ValueError(f"tau={tau}: expected a fraction of the energy in (0, 1]")
  s = np.asarray(s, np.float64)
  if s.ndim != 1 or s.size == 0:
    raise ValueError(f"s of shape {s.shape}: expected a non-empty vector of singular values")
  cumulative = np.cumsum(s * s)
  # total = the last partial sum, so τ = 1 reaches it exactly (no rounding gap).
  return int(np.searchsorted(cumulative, tau * cumulative[-1], side="left")) + 1


def dense_params(n_in: int, n_out: int) -> int:
  """Parameters of a dense kernel [in, out]: in·out."""
  return n_in * n_out


def factorized_params(n_in: int, n_out: int, rank: int) -> int:
  """Parameters of A [in, r] and B [r, out]: r·(in + out)."""
  return rank * (n_in + n_out)


def ratio_rank(n_in: int, n_out: int, param_ratio: float) -> int:
  """The rank keeping `param_ratio` of a layer's in·out parameters, int(in·out·ratio/(in+out)),
  at least 1 (SVD-LLM's `num_s_after_trunc`; ASVD's `SVDLinear.from_linear` rank)."""
  if not 0.0 < param_ratio <= 1.0:
    raise ValueError(f"param_ratio={param_ratio}: expected a fraction in (0, 1]")
  return max(1, int(n_in * n_out * param_ratio / (n_in + n_out)))


def break_even_rank(n_in: int, n_out: int) -> int:
  """The largest rank whose factors hold no more parameters than the dense kernel."""
  return max(1, n_in * n_out // (n_in + n_out))
