"""Post-training quantization of a whole model, block by block.

    qparams, report = quantize_model(blocks.for_llama(model), params, calib_batches,
                                     QuantConfig.parse("w4a16g128"), method="gptq")

The calibration batches enter block 0 as embeddings; each block is quantized by the
chosen method and its *quantized* output (activations fake-quantized as the setting
says) feeds the next block, as in GPTQ's sequential pass. Only one block's activations
for the calibration set are alive at a time. Methods:

  * `rtn`: round-to-nearest (min–max per channel/group).
  * `gptq` (Frantar et al. 2023): the linears of a block in execution order, each group's
    Hessian 2XᵀX/N taken from its inputs with the block's earlier groups already
    quantized ("true sequential"); `effcomp.quant.ptq.gptq`.
  * `smoothquant` (Xiao et al. 2023): per-input-channel scales s = max|X|^α / max|W|^(1−α)
    folded into the producing norm/linear, then RTN; groups without an exact fold are RTN.
  * `awq` (Lin et al. 2024): activation-aware scale search, folded like SmoothQuant, then a
    per-channel/group clipping search, then RTN.
  * `cbq` (Ding et al. 2023): CFP outlier pre-processing, then cross-block reconstruction
    over sliding windows with learned step sizes and LoRA-Rounding
    (`effcomp.quant.ptq.cbq`); `options` switch each part off for the ablation.

Weights of every linear in the blocks are quantized; embeddings, norms and the LM head
stay in floating point (the papers' setting). Activations are quantized where the
setting asks (W4A8, W4A4: per-token dynamic) at the input of every block linear.
"""

import time
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from effcomp.quant import fake_quant
from effcomp.quant.ptq import blocks as blocks_lib
from effcomp.quant.ptq import awq, cbq, cfp, gptq, hessian, sequential, smoothquant

METHODS = ("fp", "rtn", "gptq", "smoothquant", "awq", "cbq")
MAX_AWQ_TOKENS = 4096  # calibration tokens the AWQ searches look at per group


def _check(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"method={method!r}: expected one of {METHODS}")


_quantize_weight = jax.jit(fake_quant.quantize_weight, static_argnums=1)
_weight_scale_and_zero = jax.jit(fake_quant.weight_scale_and_zero, static_argnums=1)


def _tokens(xs: Sequence[jax.Array], limit: int) -> jax.Array:
  """Inputs of all batches as [tokens, in], evenly subsampled to ≤ `limit` tokens."""
  x = jnp.concatenate([v.reshape(-1, v.shape[-1]) for v in xs])
  if x.shape[0] > limit:
    x = x[np.linspace(0, x.shape[0] - 1, limit).astype(int)]
  return x.astype(jnp.float32)


def _smooth_group(method: str, params, group: blocks_lib.LinearGroup, xs, spec, options):
  """(params with `group`'s input channels rescaled, the rescaled inputs): SmoothQuant's
  migration scales or AWQ's searched ones, folded into the group's producers."""
  kernels = [blocks_lib.get_path(params, k) for k in group.kernels]
  if method == "smoothquant":
    act_max = jnp.max(jnp.stack([smoothquant.act_absmax(x) for x in xs]), axis=0)
    s = smoothquant.smooth_scales(act_max, kernels, alpha=options.get("alpha", 0.5))
  else:
    s, _ = awq.search_scale(_tokens(xs, MAX_AWQ_TOKENS), kernels, spec)
  return blocks_lib.fold_scales(params, group, s), [x / s for x in xs]


def _quantize_kernels(method: str, params, group: blocks_lib.LinearGroup, xs, spec, options,
                      scales: Dict[str, Any], keep: Dict[str, Any]):
  """`params` with `group`'s kernels quantized by `method` given their inputs `xs`; each
  kernel's (scale, zero) goes into `scales` (for packing the integer codes); GPTQ keeps
  the pruning masks in `keep` ({kernel path: [in, out] bool}) inside its loop."""
  for path in group.kernels:
    w = blocks_lib.get_path(params, path)
    if method == "gptq":
      h = hessian.accumulate(xs).hessian
      act_order = options.get("act_order", False)
      # With act_order, groups of consecutive rows (static_groups) keep the codes packable
      # without a per-row group index.
      w_hat, info = gptq.gptq_quantize(w, h, spec, act_order=act_order,
                                       static_groups=act_order and spec.granularity == "group",
                                       keep=keep.get(path))
      scales[path] = (info["scale"], info["zero"])
    else:
      clip = awq.search_clip(_tokens(xs, MAX_AWQ_TOKENS), w, spec) if method == "awq" else 1.0
      w_hat = _quantize_weight(w, spec, clip)
      scales[path] = _weight_scale_and_zero(w, spec, clip)
    params = blocks_lib.set_path(params, path, jnp.asarray(w_hat, w.dtype))
  return params


def quantize_model(bm: blocks_lib.BlockModel, params, calib: Sequence[Any],
                   qconfig: fake_quant.QuantConfig, method: str,
                   options: Optional[Dict[str, Any]] = None):
  """Quantizes every block linear of `params`; returns `(params, report)`.

  Args:
    bm: the model's block view (`blocks.for_llama`, `blocks.for_bert`).
    params: full-precision parameters (unboxed).
    calib: calibration batches in `bm`'s batch format.
    qconfig: weight and activation quantizers.
    method: one of `METHODS`.
    options: method options (smoothquant `alpha`; gptq `act_order`; cbq: the fields of
      `cbq.CBQConfig` and `cfp` (bool)); any method: `keep` {kernel path: [in, out] bool},
      pruning masks the quantized kernels keep (GPTQ rounds the pruned weights to 0 inside
      its loop and compensates, SparseGPT's joint mode; the others zero them after).

  Returns:
    The params with dequantized (fake-quant) kernels — evaluate them with activations
    quantized by `blocks.apply_with_act_quant` — and `{'method', 'setting', 'seconds',
    'scales'}`, `scales` mapping each kernel path to the (scale, zero) its integer codes
    are stored with (`fake_quant.weight_scale_and_zero`'s layout).
  """
  _check(method)
  options = dict(options or {})
  keep_masks = options.pop("keep", {})
  start = time.perf_counter()
  scales: Dict[str, Any] = {}
  if method == "fp":
    return params, {"method": method, "setting": qconfig.name, "seconds": 0.0, "scales": scales}
  if method == "cbq":
    params = _cbq(bm, params, calib, qconfig, options, scales)
  else:
    hs = [bm.embed(params, b) for b in calib]
    stats_act = None if method in ("smoothquant", "awq") else qconfig.act
    for i in range(bm.num_blocks):
      inputs = sequential.linear_inputs(bm, i, params, hs, calib, stats_act)
      groups = bm.groups(i)
      if method in ("smoothquant", "awq"):  # all scales first: a fold may touch an earlier
        for group in groups:               # group's kernel (down's scale lands in up)
          if group.producers:
            params, xs = _smooth_group(method, params, group, inputs[group.kernels[0]],
                                       qconfig.weight, options)
            inputs.update({k: xs for k in group.kernels})
      for group in groups:
        if method == "gptq":  # sequential: inputs after the block's earlier groups are quantized
          inputs = sequential.linear_inputs(bm, i, params, hs, calib, stats_act)
        params = _quantize_kernels(method, params, group, inputs[group.kernels[0]],
                                   qconfig.weight, options, scales, keep_masks)
      hs = sequential.block_outputs(bm, i, params, hs, calib, qconfig.act)
  for path, keep in keep_masks.items():
    w = blocks_lib.get_path(params, path)
    params = blocks_lib.set_path(params, path, jnp.where(keep, w, jnp.zeros((), w.dtype)))
  jax.block_until_ready(params)
  return params, {"method": method, "setting": qconfig.name,
                  "seconds": time.perf_counter() - start, "scales": scales}


def _cbq(bm, params, calib, qconfig, options, scales):
  """CBQ: CFP on weights and activations, block by block, then cross-block reconstruction.

  The calibration batches are concatenated and the window functions see slices of the
  samples, so batch entries other than the hidden states (BERT's attention mask) must be
  the same for every sample: calibrate BERT on unpadded, equal-length sequences.
  """
  use_cfp = options.pop("cfp", True)
  config = cbq.CBQConfig(**options)
  batch = jax.tree.map(lambda *x: jnp.concatenate(x), *calib)
  h0 = bm.embed(params, batch)
  if use_cfp:
    hs = h0
    for i in range(bm.num_blocks):
      inputs = sequential.linear_inputs(bm, i, params, [hs], [batch], None)
      for group in bm.groups(i):
        kernels = [blocks_lib.get_path(params, k) for k in group.kernels]
        if group.producers:
          act_max = smoothquant.act_absmax(inputs[group.kernels[0]][0])
          params = blocks_lib.fold_scales(params, group, cfp.activation_scales(act_max, kernels))
        for path in group.kernels:
          w, _ = cfp.preprocess_weight(blocks_lib.get_path(params, path))
          params = blocks_lib.set_path(params, path, w)
      hs = bm.block(i, params, hs, batch)

  def block_fn(i):
    def apply(block_params, h, act_quant):
      b = jax.tree.map(lambda x: x[:h.shape[0]], batch)
      return bm.block(i, {**params, bm.prefix(i): block_params}, h, b,
                      act=qconfig.act if act_quant else None)
    return apply

  fp_blocks = [params[bm.prefix(i)] for i in range(bm.num_blocks)]
  kernel_paths = [[k[len(bm.prefix(i)) + 1:] for k in bm.kernels(i)] for i in range(bm.num_blocks)]
  result = cbq.reconstruct([block_fn(i) for i in range(bm.num_blocks)], fp_blocks, h0, config,
                           qconfig, kernel_paths=kernel_paths)
  for i, block_scales in enumerate(result.scales):
    scales.update({f"{bm.prefix(i)}/{path}": grid for path, grid in block_scales.items()})
  return {**params, **{bm.prefix(i): bp for i, bp in enumerate(result.params)}}
