"""Pruning scores without weight updates: Wanda's |W|·‖X‖ and the magnitude |W|.

Wanda (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large Language
Models", eq. 1): S_ij = |W_ij| · ‖X_j‖₂, the weight's magnitude times the ℓ2 norm of its
input feature over the calibration tokens, compared among the weights of one output
(`masks.per_output`). Following locuslab/wanda `lib/layerwrapper.py` (`WrappedGPT.add_batch`:
`scaler_row`, the running mean of squared input norms) and `lib/prune.py` (`prune_wanda`:
`W_metric = |W| · sqrt(scaler_row)`). Our kernels are [in, out], so ‖X_j‖ scales row j.

Deviation: the running mean counts tokens (rows of x.reshape(-1, in)), as
`effcomp.quant.ptq.hessian` does, where `scaler_row` divides by sequences; the two differ
by the constant seq_len, which changes no comparison within an output.

The magnitude baseline (`prune_magnitude`) scores |W| alone, compared over the whole layer.
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from effcomp.quant.ptq import hessian

Array = jax.Array


class NormState(NamedTuple):
  """Running mean of squared input norms of one layer (Wanda's `scaler_row`).

  Attributes:
    sq_norm: [in] float32, Σ_tokens x_j² / N over the N rows seen so far.
    count: [] int32, N.
  """
  sq_norm: Array
  count: Array


def init(n_in: int) -> NormState:
  """An empty accumulator for a layer with `n_in` input features."""
  if n_in < 1:
    raise ValueError(f"n_in={n_in}: expected a positive number of input features")
  return NormState(jnp.zeros((n_in,), jnp.float32), jnp.zeros((), jnp.int32))


@jax.jit
def update(state: NormState, x: Array) -> NormState:
  """Adds the rows of `x` [..., in] to the running mean (WrappedGPT.add_batch: the old
  mean rescaled by N_old/N_new, plus Σ x²/N_new)."""
  rows, count, safe = hessian.batch_rows(x, state.sq_norm.shape[0], state.count)
  sq_norm = state.sq_norm * (state.count / safe) + jnp.sum(jnp.square(rows), axis=0) / safe
  return NormState(sq_norm, count)


def accumulate(xs: Sequence[Array]) -> NormState:
  """The state after `update` with each of `xs` (each [..., in])."""
  return hessian.fold(init, update, xs)


def from_inputs(x: Array) -> Array:
  """Σ x_j² / N [in] of the rows of `x` [..., in] in one go."""
  return accumulate([x]).sq_norm


def wanda_score(w: Array, sq_norm: Array) -> Array:
  """S = |W| · ‖X_j‖ [in, out] for kernel `w` [in, out] and `sq_norm` [in] (eq. 1)."""
  if w.ndim != 2 or sq_norm.shape != (w.shape[0],):
    raise ValueError(f"sq_norm of shape {sq_norm.shape}: expected ({w.shape[0]},) for w of "
                     f"shape {w.shape} ([in, out])")
  return jnp.abs(w) * jnp.sqrt(sq_norm)[:, None]


def magnitude_score(w: Array) -> Array:
  """S = |W| [in, out] (`prune_magnitude`'s `W_metric`)."""
  return jnp.abs(w)
