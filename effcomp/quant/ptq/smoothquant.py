"""SmoothQuant: migrate activation outliers into the weights (Xiao et al. 2023).

A linear layer `y = x @ W` (kernel `W: [in, out]`) is rewritten, exactly, as
`y = (x / s) @ (diag(s) · W)` with a per-input-channel smoothing factor (eq. 3–4)

    s_j = max|X_j|^α / max|W_j|^(1−α),

where `max|X_j|` is the calibration maximum of input channel j over all tokens and
`max|W_j|` is the maximum of row j of the kernel over its outputs. `x / s` is folded into
the op that produces x (the preceding LayerNorm/RMSNorm scale and bias, or a preceding
Dense's output columns), so the model computes the same function with activations whose
channel ranges are flattened (α = 0.5 for OPT/BLOOM in the paper) and are therefore
easier to quantize per token.

Follows mit-han-lab/smoothquant:
  * `act_absmax` / `update_act_absmax` ← `calibration.get_act_scales` (running max of
    |x| per channel over all calibration tokens);
  * `smooth_scales` ← `smooth.smooth_ln_fcs`: the weight maximum is taken over the
    output dim of *all* kernels that share the input (q, k, v), clamped at 1e-5, and s is
    clamped at 1e-5;
  * `apply_smoothing` ← the in-place `ln.weight.div_(s)`, `ln.bias.div_(s)`,
    `fc.weight.mul_(s)` of `smooth_ln_fcs`, as a pure function.
Deviations: kernels are effcomp's `[in, out]` (PyTorch's weight transposed), so s
multiplies kernel rows; the "norm" is any pytree of arrays whose last axis is `in` (an
RMSNorm scale, a LayerNorm {'scale', 'bias'}, or a preceding Dense {'kernel', 'bias'},
which the reference handles only in AWQ's `scale_fc_fc`), every leaf divided by s.
"""

from typing import Any, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def act_absmax(x: Array) -> Array:
  """max |x| per input channel over all tokens.

  Args:
    x: activations [..., in].

  Returns:
    [in] float32.
  """
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(f"x of shape {x.shape}: expected activations [..., in]")
  return jnp.max(jnp.abs(x.astype(jnp.float32)).reshape(-1, x.shape[-1]), axis=0)


def update_act_absmax(running: Optional[Array], x: Array) -> Array:
  """Streaming `act_absmax`: the running maximum after one more calibration batch.

  Args:
    running: [in] from earlier batches, or None for the first batch.
    x: activations [..., in].

  Returns:
    [in] float32, max(running, act_absmax(x)).
  """
  current = act_absmax(x)
  if running is None:
    return current
  if running.shape != current.shape:
    raise ValueError(f"running of shape {running.shape}: expected {current.shape} "
                     f"(one entry per input channel of x {x.shape})")
  return jnp.maximum(running.astype(jnp.float32), current)


def check_kernels(kernels: Sequence[Array], n_in: int, what: str = "channels") -> List[Array]:
  """`kernels` as a list of float32 [n_in, out_k] arrays; a ValueError otherwise."""
  if isinstance(kernels, (jax.Array, np.ndarray)) or not len(kernels):
    raise ValueError("kernels: expected a non-empty sequence of 2-D kernels [in, out_k] "
                     "(the linears sharing one input)")
  out = []
  for k, w in enumerate(kernels):
    w = jnp.asarray(w)
    if w.ndim != 2 or w.shape[0] != n_in:
      raise ValueError(f"kernels[{k}] of shape {w.shape}: expected [{n_in}, out] "
                       f"({n_in} input {what})")
    out.append(w.astype(jnp.float32))
  return out


def weight_absmax(kernels: Sequence[Array]) -> Array:
  """max |W_kj| per input row j over the outputs of all kernels: [in]."""
  return jnp.max(jnp.stack([jnp.max(jnp.abs(w), axis=1) for w in kernels]), axis=0)


def smooth_scales(act_max: Array, kernels: Sequence[Array], alpha: float = 0.5,
                  eps: float = 1e-5) -> Array:
  """SmoothQuant's per-input-channel factor s (eq. 4), as `smooth_ln_fcs`.

  Args:
    act_max: [in], max |X_j| over the calibration tokens (`act_absmax`).
    kernels: the kernels [in, out_k] that consume X (e.g. q, k, v).
    alpha: migration strength in [0, 1]; 0 leaves the activations as they are (s
      depends only on the weights), 1 moves all of the range into the weights.
    eps: lower clamp of the weight maximum and of s (the reference's 1e-5).

  Returns:
    s: [in] float32, max|X_j|^α / max_k max|W_kj|^(1−α), clamped at eps.
  """
  act_max = jnp.asarray(act_max, jnp.float32)
  if act_max.ndim != 1:
    raise ValueError(f"act_max of shape {act_max.shape}: expected [in]")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha={alpha}: expected a migration strength in [0, 1]")
  if eps <= 0:
    raise ValueError(f"eps={eps}: expected a positive clamp")
  kernels = check_kernels(kernels, act_max.shape[0])
  w_max = jnp.maximum(weight_absmax(kernels), eps)
  return jnp.maximum(act_max ** alpha / w_max ** (1.0 - alpha), eps)


def apply_smoothing(norm: Any, kernels: Sequence[Array], s: Array
                    ) -> Tuple[Any, List[Array]]:
  """Folds s into the producer of x and the kernels: output-preserving.

  `(x / s) @ (diag(s) · W) = x @ W`; `x / s` is obtained by dividing the producer's
  parameters along the channel axis.

  Args:
    norm: what produces x, each leaf's last axis being `in`: an RMSNorm scale [in], a
      LayerNorm {'scale': [in], 'bias': [in]}, a preceding Dense {'kernel': [·, in],
      'bias': [in]}; or None when the caller divides x by s itself. Pass the effective
      multiplier (not, e.g., Gemma's `scale` of `1 + scale`).
    kernels: kernels [in, out_k] consuming x.
    s: [in] positive factors (`smooth_scales`, or AWQ's `search_scale`).

  Returns:
    (norm with every leaf divided by s — None if norm is None, [W_k · s[:, None]]).
  """
  s = jnp.asarray(s, jnp.float32)
  if s.ndim != 1:
    raise ValueError(f"s of shape {s.shape}: expected [in]")
  dtypes = [jnp.asarray(w).dtype for w in kernels]
  kernels = check_kernels(kernels, s.shape[0])
  scaled = [(w * s[:, None]).astype(dtype) for w, dtype in zip(kernels, dtypes)]

  def fold(leaf):
    leaf = jnp.asarray(leaf)
    if leaf.ndim < 1 or leaf.shape[-1] != s.shape[0]:
      raise ValueError(f"norm leaf of shape {leaf.shape}: expected last axis {s.shape[0]} "
                       "(one entry per input channel of the kernels)")
    return (leaf / s).astype(leaf.dtype)

  folded = None if norm is None else jax.tree_util.tree_map(fold, norm)
  return folded, scaled
