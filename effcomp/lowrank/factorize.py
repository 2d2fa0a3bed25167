"""Low-rank factorization of every block linear of a model, block by block.

    fparams, report = factorize_model(blocks.for_llama(model), params, calib, "svdllm", 0.5)
    logits = apply_factorized(lambda: model.apply({"params": fparams}, tokens))

Each kernel '…/q/kernel' [in, out] of the blocks' linears becomes '…/q/kernel_a' [in, r] and
'…/q/kernel_b' [r, out] (bias, norms, embeddings and the LM head stay). Methods:

  * `svd`: truncated SVD of W (`svd.py`); needs no calibration data.
  * `asvd`: SVD of diag(s)·W with s = mean|X|^α (ASVD; `whitened.py`).
  * `svdllm`: SVD of SᵀW with S Sᵀ = XᵀX, the exact minimizer of ‖XW − XAB‖ (SVD-LLM;
    `whitened.py`).

Calibration batches enter block 0 as embeddings, as in `effcomp.quant.ptq.quantize`; the
inputs X of block i's linears are captured through the block view
(`effcomp.quant.ptq.sequential`, the pass GPTQ and the pruners share), one statistic per
group of linears sharing an input (H = 2/N XᵀX from `effcomp.quant.ptq.hessian`, or
mean|X|). With `sequential` (the default) block i sees the
output of the already factorized blocks 0 … i−1 (GPTQ's sequential pass), so its statistics
are those of the inputs it will see; otherwise every block sees the original model's
activations, as SVD-LLM's `profle_svdllm` and ASVD's `calib_input_distribution` do (they hook
the uncompressed model) — a deviation by default, asked for to match `quantize_model`.
All linears of one block are factorized from the inputs of the original block (no
within-block re-capture).

Ranks (`rank_allocation.py`): for `param_ratio` of the block linears' kernel parameters,
`allocation='uniform'` (every layer at that ratio, the references' rule, default) or
`'energy'` (a global threshold on normalized singular-value energy of the method's own
spectrum — W, diag(s)·W or SᵀW — taken on the original model's activations in a first pass);
or explicitly: `ranks` ({kernel path: rank} for the layers to factorize, or 'full'), or
`energy` = τ (each layer's smallest rank keeping ≥ τ of its spectrum's Σσ²).
"""

import time
from typing import Any, Dict, Mapping, Optional, Sequence

import jax
import numpy as np

from effcomp.lowrank import factorized_dense, rank_allocation
from effcomp.lowrank import svd as svd_lib
from effcomp.lowrank import whitened
from effcomp.quant.ptq import blocks as blocks_lib
from effcomp.quant.ptq import hessian, sequential

METHODS = ("svd", "asvd", "svdllm")
ALLOCATIONS = ("uniform", "energy")
OPTIONS = ("allocation", "ranks", "energy", "alpha", "damp", "sequential")


def _check(method: str, param_ratio: Optional[float], options: Mapping[str, Any], calib) -> None:
  if method not in METHODS:
    raise ValueError(f"method={method!r}: expected one of {METHODS}")
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise ValueError(f"options has unknown keys {unknown}: expected some of {OPTIONS}")
  if "ranks" in options and "energy" in options:
    raise ValueError("options names both 'ranks' and 'energy': expected one rank rule")
  if options.get("allocation", "uniform") not in ALLOCATIONS:
    raise ValueError(f"options['allocation']={options['allocation']!r}: expected one of "
                     f"{ALLOCATIONS}")
  if "energy" in options and not 0.0 < options["energy"] <= 1.0:
    raise ValueError(f"options['energy']={options['energy']}: expected a fraction τ in (0, 1]")
  explicit = "ranks" in options or "energy" in options
  if not explicit and (param_ratio is None or not 0.0 < param_ratio <= 1.0):
    raise ValueError(f"param_ratio={param_ratio}: expected a fraction in (0, 1]")
  if method != "svd" and not calib:
    raise ValueError(f"calib is empty: method={method!r} needs calibration batches")


def _explicit_ranks(ranks, shapes: Mapping[str, tuple]) -> Dict[str, int]:
  if ranks == "full":
    return {k: min(s) for k, s in shapes.items()}
  if not isinstance(ranks, Mapping):
    raise ValueError(f"options['ranks']={ranks!r}: expected {{kernel path: rank}} or 'full'")
  for k, r in ranks.items():
    if k not in shapes:
      raise ValueError(f"options['ranks'] names {k!r}: expected kernel paths of the blocks' "
                       f"linears, e.g. {next(iter(shapes))!r}")
    if not 1 <= r <= min(shapes[k]):
      raise ValueError(f"options['ranks'][{k!r}]={r}: expected 1 ≤ rank ≤ {min(shapes[k])}")
  return dict(ranks)


def _block_stats(method: str, bm: blocks_lib.BlockModel, i: int, block_params, hs, calib,
                 options) -> Dict[str, Any]:
  """{kernel path: its input statistic} for block i's linears: the whitening factor S
  (svdllm) or the scale s (asvd), once per group of linears sharing an input; {} for svd."""
  if method == "svd":
    return {}
  inputs = sequential.linear_inputs(bm, i, {bm.prefix(i): block_params}, hs, calib, None)
  stats = {}
  for group in bm.groups(i):
    xs = inputs[group.kernels[0]]
    if method == "svdllm":
      stat = whitened.whitening_factor(hessian.accumulate(xs).hessian,
                                       options.get("damp", 0.0))
    else:
      stat = whitened.activation_scale(whitened.abs_mean(xs),
                                       options.get("alpha", whitened.ASVD_ALPHA))
    stats.update({k: stat for k in group.kernels})
  return stats


def _transformed(method: str, w, stat) -> np.ndarray:
  """The kernel whose SVD the method truncates: W, diag(s)·W or SᵀW."""
  if method == "svdllm":
    return whitened.whitened_kernel(w, stat)
  if method == "asvd":
    return whitened.scaled_kernel(w, stat)
  return np.asarray(w, np.float64)


def _factors(method: str, w, stat, rank: int):
  if method == "svdllm":
    return whitened.svdllm_factors(w, stat, rank)
  if method == "asvd":
    return whitened.asvd_factors(w, stat, rank)
  return svd_lib.truncated_svd(w, rank)


def factorize_model(bm: blocks_lib.BlockModel, params, calib: Sequence[Any], method: str,
                    param_ratio: Optional[float] = 0.5,
                    options: Optional[Mapping[str, Any]] = None):
  """Factorizes every block linear of `params` into two low-rank factors.

  Args:
    bm: the model's block view (`blocks.for_llama`, `blocks.for_bert`).
    params: the model's parameters (unboxed), with dense kernels.
    calib: calibration batches in `bm`'s batch format (may be empty for 'svd').
    method: one of `METHODS`.
    param_ratio: the factors' share of the block linears' kernel parameters, in (0, 1];
      ignored when `options` names 'ranks' or 'energy'.
    options: `allocation` ('uniform' | 'energy'), `ranks` ({kernel path: rank} or 'full';
      unnamed layers stay dense), `energy` (τ in (0, 1]), `alpha` (ASVD's exponent, 0.5),
      `damp` (SVD-LLM's relative damping of XᵀX, 0), `sequential` (True; module docstring).

  Returns:
    `(params, report)`: the params with factor pairs in place of the factorized kernels (run
    them under `factorized_dense.apply_factorized`), and `{'method', 'ranks' {path: rank},
    'params_before', 'params_after'` (the block linears' kernels), `'model_params_before',
    'model_params_after', 'seconds'}`.
  """
  options = dict(options or {})
  _check(method, param_ratio, options, calib)
  start = time.perf_counter()
  paths = [k for i in range(bm.num_blocks) for k in bm.kernels(i)]
  shapes = {k: tuple(blocks_lib.get_path(params, k).shape) for k in paths}
  follow = options.get("sequential", True)  # block i sees the factorized blocks < i
  ranks = _explicit_ranks(options["ranks"], shapes) if "ranks" in options else None
  energy_allocation = ranks is None and "energy" not in options and (
      options.get("allocation", "uniform") == "energy")
  if ranks is None and "energy" not in options and not energy_allocation:
    ranks = rank_allocation.uniform_ranks(shapes, param_ratio)

  needs_data = method != "svd"
  hs = [bm.embed(params, b) for b in calib] if needs_data else []
  original_stats: Dict[str, Any] = {}
  if needs_data and (energy_allocation or not follow):  # a pass over the original model
    h0 = hs
    for i in range(bm.num_blocks):
      original_stats.update(_block_stats(method, bm, i, params[bm.prefix(i)], h0, calib, options))
      h0 = sequential.block_outputs(bm, i, params, h0, calib, None)
  if energy_allocation:
    spectra = {k: svd_lib.singular_values(
        _transformed(method, blocks_lib.get_path(params, k), original_stats.get(k))) for k in paths}
    ranks = rank_allocation.energy_ranks(spectra, shapes, param_ratio)

  out = params
  final_ranks: Dict[str, int] = {}
  for i in range(bm.num_blocks):
    prefix = bm.prefix(i)
    if not follow or not needs_data:
      stats = original_stats
    else:
      stats = _block_stats(method, bm, i, params[prefix], hs, calib, options)
    for k in bm.kernels(i):
      w = blocks_lib.get_path(params, k)
      if ranks is None:
        rank = svd_lib.energy_rank(svd_lib.singular_values(_transformed(method, w, stats.get(k))),
                                   options["energy"])
      elif k in ranks:
        rank = ranks[k]
      else:
        continue
      out = factorized_dense.replace_kernel(out, k, *_factors(method, w, stats.get(k), rank))
      final_ranks[k] = rank
    if follow and needs_data:
      merged = {prefix: factorized_dense.merge_factors(out[prefix])}
      hs = sequential.block_outputs(bm, i, merged, hs, calib, None)
  jax.block_until_ready(out)
  before = rank_allocation.dense_count(shapes)
  after = before + sum(svd_lib.factorized_params(*shapes[k], r) - svd_lib.dense_params(*shapes[k])
                       for k, r in final_ranks.items())
  return out, {"method": method, "ranks": final_ranks, "params_before": before,
               "params_after": after,
               "model_params_before": factorized_dense.count_params(params),
               "model_params_after": factorized_dense.count_params(out),
               "seconds": time.perf_counter() - start}
