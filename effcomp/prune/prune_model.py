"""Unstructured and N:M pruning of a whole model, block by block.

    params, masks, report = prune_model(blocks.for_llama(model), params, calib, "wanda",
                                        sparsity=0.5)            # or nm="2:4"

The pass is `effcomp.quant.ptq.sequential`'s, as in locuslab/wanda `lib/prune.py`
(`prune_wanda`, `prune_sparsegpt`): the calibration batches enter block 0 as embeddings;
for block i the inputs of all its linears are recorded in one forward of the block as it
stands, every linear of the block is pruned, and the *pruned* block's output feeds block
i + 1. Methods:

  * `magnitude`: |W|, compared over the whole layer (`prune_magnitude`; needs no data);
  * `wanda` (Sun et al. 2024): |W|·‖X_j‖, compared per output (`wanda.py`);
  * `sparsegpt` (Frantar & Alistarh 2023): OBS updates with H = 2/N XᵀX, the GPTQ Hessian
    code (`effcomp.quant.ptq.hessian`, `sparsegpt.py`).

Unstructured at `sparsity`, or N:M (`nm='2:4'`, '4:8'). Every linear kernel of the blocks
is pruned; embeddings, norms, biases and the LM head stay dense (the papers' setting).
Options: `comparison` ('output' | 'layer', magnitude's and Wanda's comparison group;
default: the reference's, 'layer' for magnitude, 'output' for Wanda); sparsegpt
`block_size` (128), `damp` (0.01); `true_sequential` (default False, as the references):
when True, the inputs of a block's later linear groups are recorded again after its
earlier groups are pruned, as GPTQ's `--true-sequential` (and effcomp's GPTQ) does.
"""

import time
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from effcomp.prune import masks as masks_lib
from effcomp.prune import sparsegpt, wanda
from effcomp.quant.ptq import blocks as blocks_lib
from effcomp.quant.ptq import hessian, sequential

METHODS = ("magnitude", "wanda", "sparsegpt")
_COMPARISON = {"magnitude": "layer", "wanda": "output"}  # the references' groups
_OPTIONS = {"magnitude": ("comparison",), "wanda": ("comparison", "true_sequential"),
            "sparsegpt": ("block_size", "damp", "true_sequential")}

_wanda_score = jax.jit(wanda.wanda_score)
_magnitude_score = jax.jit(wanda.magnitude_score)
_select = jax.jit(masks_lib.select, static_argnames=("sparsity", "nm", "comparison"))


def _check(method: str, options: Dict[str, Any], calib: Optional[Sequence[Any]]) -> None:
  if method not in METHODS:
    raise ValueError(f"method={method!r}: expected one of {METHODS}")
  unknown = sorted(set(options) - set(_OPTIONS[method]))
  if unknown:
    raise ValueError(f"options={options!r}: {unknown} not understood by {method!r} (expected "
                     f"some of {_OPTIONS[method]})")
  if method != "magnitude" and not calib:
    raise ValueError(f"calib is empty: {method!r} needs calibration batches")


def _prune_group(method: str, params, group: blocks_lib.LinearGroup, xs: Sequence[jax.Array],
                 sparsity: float, nm: Optional[Tuple[int, int]], options: Dict[str, Any],
                 keep: Dict[str, np.ndarray]):
  """`params` with the kernels of `group` pruned given their shared inputs `xs`
  ([N, T, in] per batch, or None for magnitude); their keep masks go into `keep`."""
  if method == "wanda":
    state = wanda.accumulate(xs)
  elif method == "sparsegpt":
    state = hessian.accumulate(xs)
  for path in group.kernels:
    w = blocks_lib.get_path(params, path)
    w32 = jnp.asarray(w, jnp.float32)
    if method == "sparsegpt":
      w_hat, mask, _ = sparsegpt.sparsegpt_prune(
          w32, state.hessian, sparsity, nm, block_size=options.get("block_size", 128),
          damp=options.get("damp", 0.01))
    else:
      score = _magnitude_score(w32) if method == "magnitude" else _wanda_score(w32, state.sq_norm)
      mask = _select(score, sparsity=sparsity, nm=nm,
                     comparison=options.get("comparison", _COMPARISON[method]))
      w_hat = jnp.where(mask, w32, 0.0)
    keep[path] = np.asarray(mask)
    params = blocks_lib.set_path(params, path, jnp.asarray(w_hat, w.dtype))
  return params


def prune_model(bm: blocks_lib.BlockModel, params, calib: Optional[Sequence[Any]], method: str,
                sparsity: float = 0.5, nm: Optional[masks_lib.NM] = None,
                options: Optional[Dict[str, Any]] = None
                ) -> Tuple[Any, Dict[str, masks_lib.PackedMask], Dict[str, Any]]:
  """Prunes every block linear of `params` (module docstring).

  Args:
    bm: the model's block view (`blocks.for_llama`, `blocks.for_bert`).
    params: the dense parameters (unboxed).
    calib: calibration batches in `bm`'s batch format (unused by magnitude).
    method: one of `METHODS`.
    sparsity: fraction of each kernel's weights pruned, in [0, 1) (ignored with `nm`).
    nm: 'N:M' or (N, M): N kept of every M consecutive inputs of each output.
    options: method options (module docstring).

  Returns:
    (params with pruned kernels, {kernel path: its packed keep mask}, report) with report
    {'method', 'setting' ('unstructured50', '2:4'), 'seconds', 'sparsity' (pruned fraction
    of all block kernels' weights), 'kernel_sparsity' {kernel path: its pruned fraction}}.
  """
  options = dict(options or {})
  _check(method, options, calib)
  nm = masks_lib.parse_nm(nm) if nm is not None else None
  sparsity = masks_lib.check_sparsity(sparsity)
  setting = masks_lib.setting(sparsity, nm)
  start = time.perf_counter()
  keep: Dict[str, np.ndarray] = {}
  if method == "magnitude":  # data-free: each layer by its own weights
    for i in range(bm.num_blocks):
      for group in bm.groups(i):
        params = _prune_group(method, params, group, None, sparsity, nm, options, keep)
  else:
    hs = [bm.embed(params, b) for b in calib]
    for i in range(bm.num_blocks):
      inputs = sequential.linear_inputs(bm, i, params, hs, calib, None)
      for group in bm.groups(i):
        if options.get("true_sequential", False):
          inputs = sequential.linear_inputs(bm, i, params, hs, calib, None)
        params = _prune_group(method, params, group, inputs[group.kernels[0]], sparsity, nm,
                              options, keep)
      hs = sequential.block_outputs(bm, i, params, hs, calib, None)
  jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  pruned = sum(m.size - np.count_nonzero(m) for m in keep.values())
  report = {"method": method, "setting": setting, "seconds": seconds,
            "sparsity": float(pruned / max(sum(m.size for m in keep.values()), 1)),
            "kernel_sparsity": {p: masks_lib.sparsity_of(m) for p, m in keep.items()}}
  return params, {p: masks_lib.pack(m) for p, m in keep.items()}, report


def apply_masks(params, masks: Dict[str, masks_lib.PackedMask]):
  """`params` with every kernel named in `masks` zeroed where its mask is False."""
  for path, packed in masks.items():
    w = blocks_lib.get_path(params, path)
    mask = masks_lib.unpack(packed)
    if mask.shape != tuple(w.shape):
      raise ValueError(f"masks[{path!r}] of shape {mask.shape}: expected {tuple(w.shape)}, the "
                       "kernel's")
    params = blocks_lib.set_path(params, path, jnp.where(mask, w, jnp.zeros((), w.dtype)))
  return params
