"""GPTQ's layer Hessian H = 2/N Σᵢ xᵢxᵢᵀ, accumulated over calibration batches.

For a linear layer y = x W, the layer-wise objective ‖X W − X Ŵ‖²/N has Hessian
H = 2/N XᵀX in each output column of W (Frantar et al. 2023, eq. 1–2). We follow the
reference IST-DASLab/gptq `gptq.py` `GPTQ.add_batch`: on each batch the running H is
rescaled by N_old/N_new, then (√(2/N_new)·X)ᵀ(√(2/N_new)·X) is added, so that after any
sequence of batches H = 2/N XᵀX over all rows seen. The matmul runs at full float32
precision (the reference turns TF32 off).

Deviation: N counts rows — tokens of `x.reshape(-1, in)` — where the reference counts
`inp.shape[0]` (sequences of a [batch, seq, in] input; 1 for a 2-D input), which makes
its H seq_len times ours. GPTQ's result does not depend on that scale (its damping is
relative to mean diag H), but its reported error does: with N counting tokens, the error
of `gptq.gptq_quantize` is the mean squared output error per token, ‖X W − X Ŵ‖²/N
(plus the damping term).
"""

from typing import Any, Callable, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array


class HessianState(NamedTuple):
  """Running GPTQ Hessian of one layer's inputs.

  Attributes:
    hessian: [in, in] float32, 2/N XᵀX over the N rows seen so far.
    count: [] int32, N.
  """
  hessian: Array
  count: Array


def init(n_in: int) -> HessianState:
  """An empty accumulator for a layer with `n_in` input features."""
  if n_in < 1:
    raise ValueError(f"n_in={n_in}: expected a positive number of input features")
  return HessianState(jnp.zeros((n_in, n_in), jnp.float32), jnp.zeros((), jnp.int32))


@jax.jit
def update(state: HessianState, x: Array) -> HessianState:
  """Adds the rows of `x` [..., in] to the running H = 2/N Σᵢ xᵢxᵢᵀ (pure; jitted).

  Args:
    state: from `init` or a previous `update`.
    x: the layer's inputs, any leading shape (e.g. [batch, tokens, in]).

  Returns:
    The new state: H rescaled by N_old/N_new, plus 2/N_new · XᵀX.
  """
  rows, count, safe = batch_rows(x, state.hessian.shape[0], state.count)
  rows = jnp.sqrt(2.0 / safe) * rows
  hessian = (state.hessian * (state.count / safe)
             + jnp.matmul(rows.T, rows, precision=jax.lax.Precision.HIGHEST))
  return HessianState(hessian, count)


def batch_rows(x: Array, n_in: int, count: Array) -> Tuple[Array, Array, Array]:
  """A running mean's view of one calibration batch `x` [..., n_in]: its rows as float32
  [rows, n_in], the new row count, and that count floored at 1 (the divisor: no rows seen
  yet and an empty batch leave the mean 0). Shared with `effcomp.prune.wanda`."""
  if x.shape[-1:] != (n_in,):
    raise ValueError(f"x of shape {x.shape}: expected [..., {n_in}] (the layer's inputs)")
  rows = x.reshape(-1, n_in).astype(jnp.float32)
  count = count + rows.shape[0]
  return rows, count, jnp.maximum(count, 1)


def fold(init_fn: Callable[[int], Any], update_fn: Callable[[Any, Array], Any],
         xs: Sequence[Array]) -> Any:
  """`init_fn(in)` then `update_fn` with each of `xs` (a layer's inputs per calibration
  batch, each [..., in]): the state after all of them."""
  if not len(xs):
    raise ValueError("xs is empty: expected the layer's inputs of at least one batch")
  state = init_fn(xs[0].shape[-1])
  for x in xs:
    state = update_fn(state, x)
  return state


def accumulate(xs: Sequence[Array]) -> HessianState:
  """The state after `update` with each of `xs` (each [..., in])."""
  return fold(init, update, xs)


def from_inputs(x: Array) -> Array:
  """H = 2/N XᵀX [in, in] of the rows of `x` [..., in] in one go."""
  return accumulate([x]).hessian
