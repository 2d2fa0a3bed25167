"""SparseGPT: one-shot pruning with OBS weight updates from the layer Hessian.

Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot", Algorithm 1, following IST-DASLab/sparsegpt `sparsegpt.py`
(`SparseGPT.fasterprune`; the copy in locuslab/wanda `lib/sparsegpt.py` is the same) step by
step. effcomp kernels are [in, out], the transpose of the reference's W, so its "columns"
(inputs) are our rows. With H = 2/N XᵀX from `effcomp.quant.ptq.hessian` (shared with GPTQ):

  1. dead inputs (H_ii = 0): H_ii ← 1 and their weight rows ← 0;
  2. U = the upper Cholesky factor of (H + λI)⁻¹, λ = percdamp · mean(diag H)
     (`gptq.inverse_hessian_factor`, the reference's cholesky → cholesky_inverse →
     cholesky(upper=True));
  3. rows in blocks of `block_size` (the reference's `blocksize`, 128); at the start of a
     block (unstructured) the mask of the whole block is chosen from the OBS saliency
     w²/U_ii² of the block's current weights: its int(rows · out · s) lowest are pruned
     (adaptive mask selection, §3.3); for N:M the mask of each group of M rows is chosen
     when the loop reaches the group's first row, keeping the N highest per output;
  4. row i: q_i = w_i with the pruned weights zeroed; its scaled error e_i = (w_i − q_i)/U_ii
     updates the block's later rows at once (w_j −= U_ij e_i, the OBS update of eq. 3 in
     Cholesky form) and the rows after the block lazily at the block's end
     (W[i2:] −= U[i1:i2, i2:]ᵀ E); the loss (w_i − q_i)²/(2 U_ii²) is summed into `error`.

Deviations from the reference (the row loop is GPTQ's, `effcomp.quant.ptq.gptq`):
  * the per-block unstructured mask prunes exactly int(rows · out · s) weights (stable ties)
    where the reference's `tmp <= sorted[int(numel · s)]` prunes one more (`masks`);
  * N:M groups are M consecutive inputs of the whole layer, so `block_size` must be a
    multiple of M (the reference counts `i % prunem` within a block, which is the same then);
  * damping, Cholesky and inverse in float64 (the reference: float32); the row loop runs in
    float32 under `jax.jit`, one `lax.scan` over blocks padded with decoupled zero rows.
"""

import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from effcomp.prune import masks as masks_lib
from effcomp.quant.ptq import gptq

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("block_size", "n_in", "nm"))
def _prune_rows(w: Array, u: Array, ks: Array, *, block_size: int, n_in: int,
                nm: Optional[Tuple[int, int]]) -> Tuple[Array, Array, Array]:
  """SparseGPT's block loop over the rows of w [rows, out] (rows a multiple of block_size).

  Args:
    w: the padded weights (rows ≥ n_in are zero).
    u: [rows, rows] the upper Cholesky factor of the damped inverse Hessian (identity on
      the padding).
    ks: [rows / block_size] int32, the weights each block prunes (unstructured).
    block_size: rows per block.
    n_in: the real rows.
    nm: (N, M), or None for unstructured.

  Returns:
    (pruned and updated w [rows, out], keep mask [rows, out], the summed OBS loss).
  """
  n_rows, n_out = w.shape
  real = jnp.arange(n_rows) < n_in

  def choose_group(i, w1, d1, keep1):
    n, m = nm
    g = jax.lax.dynamic_slice_in_dim(w1, i, m, axis=0)
    dg = jax.lax.dynamic_slice_in_dim(d1, i, m)
    return jax.lax.dynamic_update_slice(keep1, masks_lib.n_m(g**2 / dg[:, None]**2, n, m),
                                        (i, 0))

  def block(carry, xs):
    w_all, error = carry
    i1, k = xs
    w1 = jax.lax.dynamic_slice_in_dim(w_all, i1, block_size, axis=0)
    u_rows = jax.lax.dynamic_slice_in_dim(u, i1, block_size, axis=0)  # [block, rows]
    u1 = jax.lax.dynamic_slice_in_dim(u_rows, i1, block_size, axis=1)  # [block, block]
    d1 = jnp.diag(u1)
    if nm is None:
      saliency = w1**2 / d1[:, None]**2
      saliency = jnp.where(jax.lax.dynamic_slice_in_dim(real, i1, block_size)[:, None],
                           saliency, jnp.inf)  # padding rows are never counted as pruned
      keep1 = masks_lib.prune_lowest(saliency.reshape(-1), k).reshape(w1.shape)
    else:
      keep1 = jnp.ones(w1.shape, bool)

    def row(i, inner):
      w1, keep1, q1, err1, error = inner
      if nm is not None:
        keep1 = jax.lax.cond(i % nm[1] == 0, lambda k: choose_group(i, w1, d1, k),
                             lambda k: k, keep1)
      wi = w1[i]
      qi = jnp.where(keep1[i], wi, 0.0)
      d = u1[i, i]
      e = (wi - qi) / d
      w1 = w1 - u1[i][:, None] * e[None, :]  # u1[i, j] = 0 for j < i: only later rows move
      error = error + jnp.sum(jnp.square(wi - qi)) / (2 * d * d)
      return w1, keep1, q1.at[i].set(qi), err1.at[i].set(e), error

    zeros = jnp.zeros_like(w1)
    _, keep1, q1, err1, error = jax.lax.fori_loop(0, block_size, row,
                                                  (w1, keep1, zeros, zeros, error))
    # Lazy batch update; rows before the block get 0, rows inside it are replaced by q1.
    w_all = w_all - jnp.matmul(u_rows.T, err1, precision=jax.lax.Precision.HIGHEST)
    return (w_all, error), (q1, keep1)

  starts = jnp.arange(n_rows // block_size) * block_size
  (_, error), (q, keep) = jax.lax.scan(block, (w, jnp.zeros((), jnp.float32)), (starts, ks))
  return q.reshape(n_rows, n_out), keep.reshape(n_rows, n_out), error


def _check_arguments(w: np.ndarray, hessian: np.ndarray, block_size: int, damp: float) -> None:
  if w.ndim != 2:
    raise ValueError(f"w of shape {w.shape}: expected a 2-D kernel [in, out]")
  if hessian.shape != (w.shape[0],) * 2:
    raise ValueError(f"hessian of shape {hessian.shape}: expected ({w.shape[0]}, {w.shape[0]}) "
                     f"for w of shape {w.shape}")
  if block_size < 1:
    raise ValueError(f"block_size={block_size}: expected a positive number of rows")
  if damp < 0:
    raise ValueError(f"damp={damp}: expected a non-negative fraction of mean(diag H)")


def sparsegpt_prune(w: Array, hessian: Array, sparsity: float = 0.5,
                    nm: Optional[masks_lib.NM] = None, *, block_size: int = 128,
                    damp: float = 0.01) -> Tuple[Array, Array, Dict[str, Any]]:
  """Prunes kernel `w` [in, out] given its input Hessian [in, in] (module docstring).

  Args:
    w: the kernel, [in, out] (effcomp's layout).
    hessian: 2/N XᵀX of the layer's inputs (`effcomp.quant.ptq.hessian`), [in, in].
    sparsity: fraction pruned, in [0, 1) (unstructured; ignored with `nm`).
    nm: 'N:M' (e.g. '2:4'): N kept of every M consecutive inputs per output.
    block_size: rows per block (the reference's `blocksize`); a multiple of M with `nm`.
    damp: λ as a fraction of mean(diag H) (the reference's `percdamp`).

  Returns:
    (w_hat [in, out] float32, zero where pruned; keep mask [in, out] bool;
     info {'error': the summed OBS losses, ½ Σ_out ΔwᵀHΔw with the damped H}).
  """
  w = np.array(w, np.float32)
  h = np.array(hessian, np.float64)
  _check_arguments(w, h, block_size, damp)
  n_in, n_out = w.shape
  block = min(block_size, n_in)
  if nm is not None:
    nm = masks_lib.parse_nm(nm)
    masks_lib.check_nm_shape(w.shape, nm[1], "w")
    if block % nm[1]:
      raise ValueError(f"block_size={block_size}: expected a multiple of M={nm[1]} (N:M groups "
                       "must not straddle blocks)")
  else:
    sparsity = masks_lib.check_sparsity(sparsity)

  dead = np.flatnonzero(np.diag(h) == 0)
  h[dead, dead] = 1.0
  w[dead] = 0.0
  u = gptq.inverse_hessian_factor(h, damp)

  n_rows = -(-n_in // block) * block
  w_pad = np.zeros((n_rows, n_out), np.float32)
  w_pad[:n_in] = w
  u_pad = np.eye(n_rows, dtype=np.float32)
  u_pad[:n_in, :n_in] = u
  real_rows = np.minimum(block, n_in - np.arange(0, n_rows, block))
  ks = (real_rows * n_out * (0.0 if nm else sparsity)).astype(np.int32)  # int(): floor
  q, keep, error = _prune_rows(w_pad, u_pad, ks, block_size=block, n_in=n_in, nm=nm)
  return q[:n_in], keep[:n_in], {"error": float(error)}
