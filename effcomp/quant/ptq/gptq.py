"""GPTQ: one-shot weight quantization with second-order error compensation.

Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", Algorithm 1, following the reference IST-DASLab/gptq `gptq.py`
(`GPTQ.fasterquant`) step by step. effcomp kernels are [in, out], the transpose of the
reference's W, so its "columns of W" are our input rows:

  1. dead inputs (H_ii = 0): H_ii ← 1 and their weight rows ← 0;
  2. act_order (`actorder`): rows permuted by descending diag H, un-permuted at the end;
  3. λ = damp · mean(diag H); U = the upper Cholesky factor of (H + λI)⁻¹ = UᵀU;
  4. rows in blocks of `block_size`: row i is rounded to its grid, q_i; its scaled error
     e_i = (w_i − q_i)/U_ii updates the block's later rows at once (w_j −= U_ij e_i) and
     the rows after the block lazily, at the block's end (W[i2:] −= U[i1:i2, i2:]ᵀ E);
     the OBQ loss (w_i − q_i)²/(2 U_ii²) is summed into `error`.

Grids: per output channel (or per tensor), the min–max of the original weights, taken
before dead rows are zeroed (the reference's `find_params(W)` at the start). Per group
(g<size>): when a group's first row comes up, the min–max of that group's rows of W as it
stands at the start of the current block — the reference reads `W[:, i:i+groupsize]`,
which holds the lazy updates of earlier blocks but not those of the current block. With
`static_groups`, all groups' grids come from the (dead-zeroed) original weights up front,
and each row keeps its natural group under act_order.

The sum of the OBQ losses is the final value of ½ Σ_out ΔwᵀHΔw with the damped H; with H
from `hessian.py` (2/N XᵀX over N tokens) that is ‖X W − X Ŵ‖²/N + λ/2 ‖W − Ŵ‖².

Deviations from the reference:
  * the grid is effcomp's `fake_quant` grid: the same as the reference's `quant.py` for
    asymmetric specs; symmetric specs use codes −2ᵇ⁻¹ … 2ᵇ⁻¹−1 with
    s = max|w|/(2ᵇ⁻¹−1) (as RTN here) instead of s = 2·max|w|/(2ᵇ−1), z = 2ᵇ⁻¹;
    the reference's MSE grid search (`mse=True`) is left out;
  * damping, Cholesky and inverse run in float64 (numpy/scipy; the reference: float32);
    the row loop runs in float32 under `jax.jit`;
  * rows are padded to a multiple of the block size with decoupled zero rows (identity in
    U), and the lazy update multiplies full rows of U (zero left of the block), so the loop
    is one `lax.scan` over blocks, compiled once per layer shape and spec.
"""

import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from effcomp.quant import fake_quant as fq

Array = jax.Array


def _check_arguments(w: np.ndarray, hessian: np.ndarray, spec: fq.QuantSpec, block_size: int,
                     damp: float, static_groups: bool) -> None:
  if w.ndim != 2:
    raise ValueError(f"w of shape {w.shape}: expected a 2-D kernel [in, out]")
  n_in = w.shape[0]
  if hessian.shape != (n_in, n_in):
    raise ValueError(f"hessian of shape {hessian.shape}: expected ({n_in}, {n_in}) for w of "
                     f"shape {w.shape}")
  if not spec.enabled:
    raise ValueError(f"spec.bits={spec.bits}: expected 2–8 (GPTQ quantizes the weights)")
  if spec.granularity not in ("tensor", "channel", "group"):
    raise ValueError(f"spec.granularity={spec.granularity!r}: expected 'tensor', 'channel' or "
                     "'group' for weights")
  if block_size < 1:
    raise ValueError(f"block_size={block_size}: expected a positive number of rows")
  if damp < 0:
    raise ValueError(f"damp={damp}: expected a non-negative fraction of mean(diag H)")
  if static_groups and spec.granularity != "group":
    raise ValueError(f"static_groups=True with spec.granularity={spec.granularity!r}: static "
                     "groups need granularity 'group'")


def inverse_hessian_factor(hessian: np.ndarray, damp: float) -> np.ndarray:
  """U [in, in], upper triangular, with UᵀU = (H + λI)⁻¹ and λ = damp · mean(diag H).

  The same factor as the reference's `cholesky` → `cholesky_inverse` →
  `cholesky(upper=True)` (it is unique), in float64 and with one factorization: with J the
  row reversal and JHJ = MMᵀ (M lower), H⁻¹ = (JM⁻¹J)ᵀ(JM⁻¹J) and JM⁻¹J is upper.
  """
  h = np.array(hessian, np.float64)
  h[np.diag_indices_from(h)] += damp * np.mean(np.diag(h))
  try:
    m = scipy.linalg.cholesky(h[::-1, ::-1], lower=True)
  except np.linalg.LinAlgError as e:
    raise ValueError(f"hessian + damping is not positive definite (damp={damp}): expected a "
                     "Hessian 2/N XᵀX of enough calibration rows, or a larger damp") from e
  m_inv, status = scipy.linalg.lapack.dtrtri(m, lower=1)
  if status:
    raise ValueError(f"hessian: its Cholesky factor is singular (LAPACK dtrtri info={status})")
  return m_inv[::-1, ::-1]  # exact zeros below the diagonal: cholesky cleans, dtrtri keeps


@functools.partial(jax.jit, static_argnames=("spec", "block_size", "n_in", "group_size"))
def _quantize_rows(w: Array, u: Array, table: Array, row_group: Array, keep: Array, *,
                   spec: fq.QuantSpec, block_size: int, n_in: int, group_size: int
                   ) -> Tuple[Array, Array, Array]:
  """GPTQ's block loop over the rows of w [rows, out] (rows a multiple of block_size).

  Args:
    w: the (permuted, padded) weights.
    u: [rows, rows] the upper Cholesky factor of the inverse Hessian.
    table: [2, groups, out] scales and zero points.
    row_group: [rows] int32, the table entry each row is rounded with.
    keep: [rows, out] bool: weights outside it are rounded to 0 (a pruning mask kept).
    spec: the grid.
    block_size: rows per lazy-update block.
    n_in: the real rows (the rest is padding).
    group_size: > 0: table entry r // group_size is (re)computed from W at the start of
      the block when row r starts a group; 0: the table is fixed.

  Returns:
    (q [rows, out] on the grid, the final table, the summed OBQ loss).
  """
  n_rows, n_out = w.shape

  def refresh_group(table, w_start, r):
    rows = jax.lax.dynamic_slice_in_dim(w_start, r, group_size, axis=0)
    scale, zero = fq.scale_and_zero(rows, spec, axis=0)  # [1, out]
    return jax.lax.dynamic_update_slice(table, jnp.stack([scale, zero]), (0, r // group_size, 0))

  def block(carry, i1):
    w_all, table, error = carry
    w1 = jax.lax.dynamic_slice_in_dim(w_all, i1, block_size, axis=0)
    u_rows = jax.lax.dynamic_slice_in_dim(u, i1, block_size, axis=0)  # [block, rows]
    u1 = jax.lax.dynamic_slice_in_dim(u_rows, i1, block_size, axis=1)  # [block, block]

    def row(i, inner):
      w1, q1, err1, table, error = inner
      r = i1 + i
      if group_size:
        starts = (r % group_size == 0) & (r < n_in)
        table = jax.lax.cond(starts, lambda t: refresh_group(t, w_all, r), lambda t: t, table)
      g = row_group[r]
      wi = w1[i]
      qi = jnp.where(keep[r], fq.fake_quant_with(wi, table[0, g], table[1, g], spec), 0.0)
      d = u1[i, i]
      e = (wi - qi) / d
      w1 = w1 - u1[i][:, None] * e[None, :]  # u1[i, j] = 0 for j < i: only later rows move
      error = error + jnp.sum(jnp.square(wi - qi)) / (2 * d * d)
      return w1, q1.at[i].set(qi), err1.at[i].set(e), table, error

    zeros = jnp.zeros_like(w1)
    _, q1, err1, table, error = jax.lax.fori_loop(0, block_size, row,
                                                  (w1, zeros, zeros, table, error))
    # Lazy batch update; rows before the block get 0, rows inside it are already done.
    w_all = w_all - jnp.matmul(u_rows.T, err1, precision=jax.lax.Precision.HIGHEST)
    return (w_all, table, error), q1

  starts = jnp.arange(n_rows // block_size) * block_size
  (_, table, error), q = jax.lax.scan(block, (w, table, jnp.zeros((), jnp.float32)), starts)
  return q.reshape(n_rows, n_out), table, error


_weight_grid = jax.jit(fq.weight_scale_and_zero, static_argnums=1)


def _initial_table(w: np.ndarray, spec: fq.QuantSpec, static_groups: bool
                   ) -> Tuple[np.ndarray, Array, Array]:
  """[2, groups, out] starting table, and the fixed (scale, zero) in fake_quant's layout."""
  n_in, n_out = w.shape
  if spec.granularity == "group" and not static_groups:
    table = np.ones((2, -(-n_in // spec.group_size), n_out), np.float32)  # filled as groups start
    return table, None, None
  scale, zero = _weight_grid(w, spec)  # [groups, 1, out] or [1, 1, 1]
  table = np.stack([np.broadcast_to(np.asarray(a)[:, 0], (a.shape[0], n_out))
                    for a in (scale, zero)])
  return table, scale, zero


def gptq_quantize(w: Array, hessian: Array, spec: fq.QuantSpec, *, block_size: int = 128,
                  damp: float = 0.01, act_order: bool = False, static_groups: bool = False,
                  keep: Optional[Array] = None) -> Tuple[Array, Dict[str, Any]]:
  """GPTQ-quantizes kernel `w` [in, out] given its input Hessian [in, in].

  Args:
    w: the kernel, [in, out] (effcomp's layout).
    hessian: 2/N XᵀX of the layer's inputs (`hessian.py`), [in, in].
    spec: the weight grid (tensor, channel or group granularity).
    block_size: rows per lazy-update block (the reference's `blocksize`).
    damp: λ as a fraction of mean(diag H) (the reference's `percdamp`).
    act_order: quantize rows in order of descending diag H (the reference's `actorder`).
    static_groups: take all group grids from the original weights up front.
    keep: None, or a [in, out] bool pruning mask to preserve: the weights outside it are
      "quantized" to 0 and their error compensated like any other rounding error, the
      joint sparsification and quantization of SparseGPT (Frantar & Alistarh 2023, §3.5),
      so a pruned kernel stays exactly as sparse.

  Returns:
    (w_hat [in, out] float32, dequantized, on the grid; info) with info:
      'error': the summed OBQ losses (float);
      'scale', 'zero': fake_quant's layout, [groups, 1, out], [1, 1, out] (channel) or
        [1, 1, 1] (tensor);
      'g_idx': [in] int32, the group of each input row: row r of w_hat is
        `fake_quant_with(w_hat[r], scale[g_idx[r], 0], zero[g_idx[r], 0], spec)`. It is
        r // group_size except with act_order and dynamic groups (groups of the permuted
        order); 0 for channel/tensor.
  """
  w = np.array(w, np.float32)
  h = np.array(hessian, np.float64)
  _check_arguments(w, h, spec, block_size, damp, static_groups)
  n_in, n_out = w.shape
  group_size = spec.group_size if spec.granularity == "group" else 0
  dynamic_groups = bool(group_size) and not static_groups

  # As the reference: the channel/tensor grid comes from W before dead rows are zeroed
  # (`find_params(W)` first), static group grids after.
  if not group_size:
    table, scale, zero = _initial_table(w, spec, static_groups)
  dead = np.flatnonzero(np.diag(h) == 0)
  h[dead, dead] = 1.0
  w[dead] = 0.0
  if group_size:
    table, scale, zero = _initial_table(w, spec, static_groups)

  perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(n_in)
  inv_perm = np.argsort(perm)
  u = inverse_hessian_factor(h[perm][:, perm], damp)

  block = min(block_size, n_in)
  # A shorter last group reads zero padding past n_in (zeros change no range).
  padded_in = -(-n_in // group_size) * group_size if group_size else n_in
  n_rows = -(-padded_in // block) * block
  w_pad = np.zeros((n_rows, n_out), np.float32)
  w_pad[:n_in] = w[perm]
  u_pad = np.eye(n_rows, dtype=np.float32)
  u_pad[:n_in, :n_in] = u
  keep_pad = np.ones((n_rows, n_out), bool)
  if keep is not None:
    if np.shape(keep) != (n_in, n_out):
      raise ValueError(f"keep of shape {np.shape(keep)}: expected the kernel's {(n_in, n_out)}")
    keep_pad[:n_in] = np.asarray(keep, bool)[perm]
  row_group = np.zeros(n_rows, np.int32)  # padding rows (all zero) use group 0
  if dynamic_groups:
    row_group[:n_in] = np.arange(n_in) // group_size
  elif group_size:
    row_group[:n_in] = perm // group_size

  q, table, error = _quantize_rows(w_pad, u_pad, table, row_group, keep_pad, spec=spec,
                                   block_size=block, n_in=n_in,
                                   group_size=group_size if dynamic_groups else 0)
  if dynamic_groups:
    scale, zero = table[0][:, None], table[1][:, None]
  w_hat = jnp.asarray(np.asarray(q)[:n_in][inv_perm])
  info = {"error": float(error), "scale": scale, "zero": zero,
          "g_idx": jnp.asarray(row_group[:n_in][inv_perm])}
  return w_hat, info
