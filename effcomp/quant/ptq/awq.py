"""AWQ: activation-aware weight scaling and clipping (Lin et al. 2024, §3.2–3.3).

Salient weight rows — those multiplying input channels with a large mean |x| — lose the
most output accuracy to weight rounding. AWQ multiplies them by s > 1 before quantizing
and divides the input by s, `(x / s) @ Q(diag(s) · W)`, which shrinks their relative
rounding error; s is searched per linear group (§3.3, eq. 5):

    s = s_X^α,   α* = argmin_α ‖X·W − (X / s)·Q(diag(s)·W)‖²,   α ∈ {0, 1/grid, …},

with s_X = mean |X_j| per input channel. After scaling, each output channel's (and
group's) range is shrunk by a searched clip ratio that minimizes the group's output error.

Follows mit-han-lab/llm-awq:
  * `search_scale` ← `auto_scale.auto_scale_block._search_module_scale`: s_X =
    `get_act_scale(x)` (mean |x|), `s = s_X.pow(α).clamp(min=1e-4)`, normalized by
    `sqrt(max(s) · min(s))`, the first α with the smallest mean squared error kept;
  * `search_clip` ← `auto_clip.auto_clip_layer`: tokens subsampled with stride
    `n // n_sample_tokens`, candidates `1 − i/grid` for `i < max_shrink · grid`, the
    error `mean_tokens (X_g·W_g − X_g·Q(W_g))²` per output channel and group, channels
    processed in batches of 256 (`oc_batch_size`) to bound memory;
  * `apply_scale` ← `scale_ln_fcs` / `scale_fc_fc` (= SmoothQuant's `apply_smoothing`).
Deviations:
  * The scale loss is the mean squared error of the *concatenated outputs of the
    linears that share the input* (e.g. q, k, v), not of the block that consumes them
    (`module2inspect`, e.g. the whole attention or MLP). This keeps the search local to
    the linears and model-agnostic (no attention/MLP forward in the loop); for the
    single-linear groups (o_proj, down_proj, fc2) the reference measures the same thing.
  * Weights are quantized with effcomp's `quantize_weight`, whose asymmetric range
    always contains 0 (the reference's `pseudo_quantize_tensor` uses the raw min/max),
    and clipping is its `clip_ratio` — both ends of the range scaled by the ratio —
    where the reference clamps the weights to ±ratio · max|w| before min/max. The
    returned ratio is what `quantize_weight(w, spec, clip_ratio)` consumes.
  * The reference skips clipping q/k (their outputs meet in q·kᵀ); that choice, like
    which linears share an input, belongs to the caller.
"""

import functools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from effcomp.quant.fake_quant import QuantSpec, quantize_weight
from effcomp.quant.ptq.smoothquant import apply_smoothing, check_kernels

Array = jax.Array
MIN_SCALE = 1e-4  # `x_max.pow(ratio).clamp(min=1e-4)` in `_search_module_scale`


def _tokens(x: Array, n_in: int) -> Array:
  """x [..., in] as float32 [tokens, in]."""
  x = jnp.asarray(x)
  if x.ndim < 2 or x.shape[-1] != n_in:
    raise ValueError(f"x of shape {x.shape}: expected calibration inputs [tokens, {n_in}]")
  return x.reshape(-1, n_in).astype(jnp.float32)


def awq_scales(act_mean: Array, alpha: Array | float) -> Array:
  """s = mean|x|^α clamped at 1e-4, normalized by sqrt(max(s) · min(s)): [in].

  α = 0 gives s = 1 exactly (plain round-to-nearest).
  """
  s = jnp.maximum(jnp.asarray(act_mean, jnp.float32) ** alpha, MIN_SCALE)
  return s / jnp.sqrt(jnp.max(s) * jnp.min(s))


def scaled_output_error(x: Array, kernels: Sequence[Array], s: Array, spec: QuantSpec
                        ) -> Array:
  """mean (X·W_cat − (X / s)·Q(diag(s)·W_cat))², each kernel quantized on its own.

  Args:
    x: [tokens, in]; kernels: [in, out_k]; s: [in]; spec: the weight quantizer.
  """
  exact = jnp.concatenate(kernels, axis=1)
  quant = jnp.concatenate([quantize_weight(w * s[:, None], spec) / s[:, None]
                           for w in kernels], axis=1)
  return jnp.mean(jnp.square(x @ (exact - quant)))


@functools.partial(jax.jit, static_argnames=("spec", "grid"))
def _search_scale(x, kernels, act_mean, spec, grid):
  alphas = jnp.arange(grid, dtype=jnp.float32) / grid
  errors = jax.lax.map(lambda a: scaled_output_error(x, kernels, awq_scales(act_mean, a), spec),
                       alphas)
  best = jnp.argmin(jnp.where(jnp.isnan(errors), jnp.inf, errors))
  return awq_scales(act_mean, alphas[best]), alphas[best], errors


def search_scale(x: Array, kernels: Sequence[Array], spec: QuantSpec, grid: int = 20,
                 act_mean: Optional[Array] = None) -> Tuple[Array, Dict[str, Array]]:
  """AWQ's grid search of the per-input-channel scale for linears sharing input x.

  Args:
    x: calibration inputs [tokens, in] (or [..., in]).
    kernels: kernels [in, out_k] that consume x (e.g. q, k, v; or gate, up).
    spec: weight quantizer, e.g. `QuantConfig.parse('w4a16g128').weight`.
    grid: number of α candidates 0, 1/grid, …, (grid − 1)/grid (reference: 20).
    act_mean: [in] mean |x| per channel if accumulated elsewhere (e.g. over more
      tokens than `x` holds); by default computed from x.

  Returns:
    (s [in], {'ratio': the chosen α, 'errors': [grid] mean squared output errors}).
    Fold s with `apply_scale`; α = 0 (s = 1) is plain RTN.
  """
  if not isinstance(grid, int) or grid < 1:
    raise ValueError(f"grid={grid!r}: expected a positive number of α candidates")
  n_in = jnp.shape(x)[-1] if jnp.ndim(x) else 0
  x = _tokens(x, n_in)
  kernels = check_kernels(kernels, n_in, "channels of x")
  if act_mean is None:
    act_mean = jnp.mean(jnp.abs(x), axis=0)
  act_mean = jnp.asarray(act_mean, jnp.float32)
  if act_mean.shape != (n_in,):
    raise ValueError(f"act_mean of shape {act_mean.shape}: expected ({n_in},)")
  s, ratio, errors = _search_scale(x, tuple(kernels), act_mean, spec, grid)
  return s, {"ratio": ratio, "errors": errors}


def clip_candidates(grid: int, max_shrink: float) -> Array:
  """Clip ratios 1 − i/grid for i < max_shrink · grid (always including 1.0)."""
  steps = max(1, math.floor(max_shrink * grid + 1e-9))  # 1e-9: 0.29·100 is 28.99…
  return 1.0 - jnp.arange(steps, dtype=jnp.float32) / grid


@functools.partial(jax.jit, static_argnames=("spec", "group_size", "batch_size"))
def _search_clip(x, w, ratios, spec, group_size, batch_size):
  n_in = w.shape[0]
  xg = x.reshape(x.shape[0], n_in // group_size, group_size)  # [tokens, groups, group]

  def best_ratio(w_col):  # one output channel [in] → its best ratio per group
    def errors(r):
      d = (quantize_weight(w_col[:, None], spec, r)[:, 0] - w_col).reshape(xg.shape[1:])
      return jnp.mean(jnp.square(jnp.einsum("tgi,gi->tg", xg, d)), axis=0)

    errs = jax.lax.map(errors, ratios)  # [candidates, groups]
    return ratios[jnp.argmin(jnp.where(jnp.isnan(errs), jnp.inf, errs), axis=0)]

  best = jax.lax.map(best_ratio, w.T, batch_size=batch_size)  # [out, groups]
  return best.T[:, None, :]


def search_clip(x: Array, w: Array, spec: QuantSpec, grid: int = 20, max_shrink: float = 0.5,
                n_sample_tokens: Optional[int] = 512, out_batch_size: int = 256) -> Array:
  """AWQ's clipping search: per output channel and group, the range shrink that
  minimizes that group's output error (`auto_clip_layer`).

  Run it after `apply_scale`, on the scaled inputs and kernel (x / s, diag(s)·W).

  Args:
    x: calibration inputs [tokens, in] (or [..., in]).
    w: one kernel [in, out].
    spec: weight quantizer with granularity 'channel' or 'group'.
    grid: ratio step 1/grid (reference: 20).
    max_shrink: the largest shrink, ratios ≥ 1 − max_shrink, in [0, 1).
    n_sample_tokens: tokens kept, by stride `tokens // n_sample_tokens` (None: all).
    out_batch_size: output channels searched at once (memory ∝ tokens · in · batch).

  Returns:
    clip_ratio [groups, 1, out] (groups = 1 for 'channel') in [1 − max_shrink, 1], for
    `quantize_weight(w, spec, clip_ratio)`.
  """
  w = jnp.asarray(w)
  if w.ndim != 2:
    raise ValueError(f"w of shape {w.shape}: expected one kernel [in, out]")
  n_in = w.shape[0]
  if spec.granularity not in ("channel", "group"):
    raise ValueError(f"spec.granularity={spec.granularity!r}: expected 'channel' or 'group' "
                     "(a clip ratio per output channel and group)")
  group_size = spec.group_size if spec.granularity == "group" else n_in
  if not isinstance(grid, int) or grid < 1:
    raise ValueError(f"grid={grid!r}: expected a positive number of ratio steps")
  if not 0.0 <= max_shrink < 1.0:
    raise ValueError(f"max_shrink={max_shrink}: expected a fraction in [0, 1)")
  if n_sample_tokens is not None and n_sample_tokens < 1:
    raise ValueError(f"n_sample_tokens={n_sample_tokens}: expected a positive count or None")
  if out_batch_size < 1:
    raise ValueError(f"out_batch_size={out_batch_size}: expected a positive count")
  x = _tokens(x, n_in)
  if n_sample_tokens is not None:
    x = x[::max(1, x.shape[0] // n_sample_tokens)]
  pad = -n_in % group_size  # a shorter last group: zero rows/columns change no range or output
  w, x = jnp.pad(w, ((0, pad), (0, 0))), jnp.pad(x, ((0, 0), (0, pad)))
  return _search_clip(x, w.astype(jnp.float32), clip_candidates(grid, max_shrink), spec,
                      group_size, min(out_batch_size, w.shape[1]))


def apply_scale(norm: Any, kernels: Sequence[Array], s: Array) -> Tuple[Any, List[Array]]:
  """Folds AWQ's s: norm (or preceding Dense) leaves ÷ s, kernels' rows × s.

  The same output-preserving rewrite as SmoothQuant's `apply_smoothing` (AWQ's
  `scale_ln_fcs` / `scale_fc_fc`); see there for what `norm` may be.
  """
  return apply_smoothing(norm, kernels, s)
