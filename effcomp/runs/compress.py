"""Compression recipes: pruning, low-rank factorization and quantization chained on one model.

    steps = parse_recipe("wanda:2:4+gptq:w4a16g128")
    out = apply_recipe(blocks.for_llama(model), params, calib, steps)
    ppl = evaluate.perplexity(model, out.params, rows, pad_id, act=out.act, wrap=WRAP)

A recipe is `+`-joined steps `<method>:<setting>`, at most one of each kind, in this order:

  structured  wanda_sp | taylor            (`effcomp.prune.structured`, LLaMA only) share of
                                           each layer's heads and MLP channels removed '0.25'
  prune    magnitude | wanda | sparsegpt   (`effcomp.prune`)   sparsity '0.5' or N:M '2:4'
  lowrank  svd | asvd | svdllm             (`effcomp.lowrank`) share of the kernels' params '0.5'
  quant    rtn | gptq | smoothquant | awq | cbq  (`effcomp.quant.ptq`) setting 'w4a16g128'

Composition rules. Quantizing a pruned model keeps its masks (`quantize_model`'s `keep`: GPTQ
rounds the pruned weights to 0 inside its loop and compensates, SparseGPT's joint mode §3.5;
the others zero them after). After low-rank factorization only `rtn` quantizes: the two
factors of each layer, each with the setting's weight grid (data-free; the block view's
Hessians are those of whole kernels, which a factorized model no longer has). Pruning and
low-rank do not combine (a factor pair has no mask to keep): an error says so. Every step
runs on the output of the one before (the survey's §7 "relation between methods": order
matters, sparsity first as SparseGPT and Wanda then quantize).

Evaluation runs the compressed params under `WRAP` (factor pairs computed as x·A·B) with
activations quantized as the setting says; `storage_bytes` counts what the compressed model
needs on disk (kept values at their bits, mask bits, quantization grids, factor pairs).
"""

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from effcomp.lowrank import factorize, factorized_dense
from effcomp.models.lm import llama as llama_lib
from effcomp.prune import masks as masks_lib
from effcomp.prune import prune_model, storage, structured
from effcomp.quant import fake_quant, pack
from effcomp.quant.ptq import blocks as blocks_lib
from effcomp.quant.ptq import evaluate, quantize
from effcomp.runs import quantize as runs_quantize
from effcomp.runs import run as run_lib

KINDS = {"structured": structured.SCORES, "prune": prune_model.METHODS,
         "lowrank": factorize.METHODS,
         "quant": tuple(m for m in quantize.METHODS if m != "fp")}
WRAP = factorized_dense.apply_factorized  # evaluate.perplexity / embedding_cosine `wrap`
GRID_BYTES = 4 + 1  # per group and output: a float32 scale and a uint8 zero (`pack_int`)


@dataclasses.dataclass(frozen=True)
class Step:
  kind: str
  method: str
  setting: str


@dataclasses.dataclass
class Compressed:
  """A compressed model: `params` (pruned weights 0, quantized ones dequantized on their
  grid, factorized layers as 'kernel_a'/'kernel_b'), the pruning `masks` ({kernel path:
  packed keep mask}), the quantization setting `qconfig` (None: float) and the kernels it
  quantized, one report per step, and the `model` that runs the params (a structurally
  pruned LLaMA is a smaller model; None: the original)."""
  params: Any
  masks: Dict[str, masks_lib.PackedMask]
  qconfig: Optional[fake_quant.QuantConfig]
  quantized: Tuple[str, ...]
  reports: List[Dict[str, Any]]
  model: Any = None

  @property
  def act(self) -> Optional[fake_quant.QuantSpec]:
    return self.qconfig.act if self.qconfig is not None else None


def parse_recipe(recipe: str) -> Tuple[Step, ...]:
  """Steps of `recipe` ('wanda:2:4+gptq:w4a16g128'), checked (module docstring)."""
  expected = ("expected '+'-joined <method>:<setting> steps, e.g. 'wanda:2:4+gptq:w4a16g128'; "
              f"methods {KINDS}")
  steps = []
  for part in filter(None, (recipe or "").split("+")):
    method, _, setting = part.partition(":")
    kind = next((k for k, methods in KINDS.items() if method in methods), None)
    if kind is None or not setting:
      raise ValueError(f"recipe={recipe!r}: step {part!r} not understood; {expected}")
    steps.append(Step(kind, method, setting))
  kinds = [s.kind for s in steps]
  order = [k for k in KINDS if k in kinds]
  if not steps or kinds != order:
    raise ValueError(f"recipe={recipe!r}: {expected}, at most one per kind, in the order "
                     f"{' → '.join(KINDS)}")
  if "prune" in kinds and "lowrank" in kinds:
    raise ValueError(f"recipe={recipe!r}: prune and lowrank do not combine (a factor pair has "
                     "no mask to keep)")
  if "lowrank" in kinds and steps[-1].kind == "quant" and steps[-1].method != "rtn":
    raise ValueError(f"recipe={recipe!r}: after lowrank only rtn quantizes (the factor pairs, "
                     "data-free)")
  return tuple(steps)


def _prune_args(setting: str) -> Dict[str, Any]:
  if ":" in setting:
    return {"nm": setting}
  try:
    return {"sparsity": float(setting)}
  except ValueError:
    raise ValueError(f"prune setting {setting!r}: expected a sparsity ('0.5') or N:M "
                     "('2:4')") from None


def _ratio(setting: str) -> float:
  try:
    return float(setting)
  except ValueError:
    raise ValueError(f"setting {setting!r}: expected a fraction (lowrank: the factors' share "
                     "of the kernels' parameters; structured: the share of heads and channels "
                     "removed), e.g. '0.5'") from None


_rtn = jax.jit(fake_quant.quantize_weight, static_argnums=1)


def _rtn_factors(params, qconfig: fake_quant.QuantConfig) -> Tuple[Any, Tuple[str, ...]]:
  """`params` with every factor ('kernel_a', 'kernel_b') round-to-nearest quantized."""
  flat = traverse_util.flatten_dict(params, sep="/")
  done = tuple(k for k in flat if k.rsplit("/", 1)[-1] in factorized_dense.FACTORS)
  for key in done:
    flat[key] = _rtn(flat[key], qconfig.weight)
  return traverse_util.unflatten_dict(flat, sep="/"), done


def apply_recipe(bm: blocks_lib.BlockModel, params, calib: Sequence[Any], steps: Sequence[Step],
                 options: Optional[Dict[str, Dict[str, Any]]] = None,
                 model: Any = None) -> Compressed:
  """Runs `steps` (`parse_recipe`) on `params` with calibration batches `calib` (`bm`'s
  format); `options` maps a method to its options (e.g. {'cbq': {...}}); `model`: the
  `Llama` that `bm` views, needed by a structured step."""
  options = options or {}
  out = Compressed(params, {}, None, (), [])
  for step in steps:
    opts = dict(options.get(step.method, {}))
    if step.kind == "structured":
      if not isinstance(model, llama_lib.Llama):
        raise ValueError(f"recipe step {step.method}:{step.setting}: structured pruning needs "
                         "the LLaMA model (model=...)")
      ratio = _ratio(step.setting)
      out.model, out.params, report = structured.prune_structured(
          model, out.params, calib, step.method, heads_ratio=ratio, mlp_ratio=ratio,
          options=opts)
      report = {k: v for k, v in report.items() if k != "selection"}
      bm = blocks_lib.for_llama(out.model)
    elif step.kind == "prune":
      out.params, out.masks, report = prune_model.prune_model(
          bm, out.params, calib, step.method, options=opts, **_prune_args(step.setting))
    elif step.kind == "lowrank":
      out.params, report = factorize.factorize_model(bm, out.params, calib, step.method,
                                                     _ratio(step.setting), opts)
    else:
      out.qconfig = fake_quant.QuantConfig.parse(step.setting)
      start = time.perf_counter()
      if any(s.kind == "lowrank" for s in steps):
        out.params, out.quantized = _rtn_factors(out.params, out.qconfig)
        report = {"method": "rtn", "setting": step.setting}
      else:
        keep = {p: masks_lib.unpack(m) for p, m in out.masks.items()}
        out.params, report = quantize.quantize_model(bm, out.params, calib, out.qconfig,
                                                     step.method, {**opts, "keep": keep})
        out.quantized = tuple(report.pop("scales"))
      jax.block_until_ready(out.params)
      report["seconds"] = time.perf_counter() - start
    out.reports.append({"step": f"{step.method}:{step.setting}", **report})
  return out


def storage_bytes(c: Compressed) -> int:
  """Bytes the compressed model needs: every array at 32 bits, except the quantized kernels
  (and factors) at the setting's bits plus a scale and zero per group and output, and the
  pruned kernels as their kept values plus one mask bit per weight."""
  total = 0
  spec = c.qconfig.weight if c.qconfig is not None else None
  for key, x in traverse_util.flatten_dict(c.params, sep="/").items():
    values = int(np.count_nonzero(masks_lib.unpack(c.masks[key]))) if key in c.masks else x.size
    bits = spec.bits if key in c.quantized else 32
    total += values * bits / 8 + (x.size / 8 if key in c.masks else 0)
    if key in c.quantized:
      groups = -(-x.shape[0] // spec.group_size) if spec.granularity == "group" else 1
      total += groups * x.shape[1] * GRID_BYTES
  return int(np.ceil(total))


def float32_bytes(params) -> int:
  """Bytes of `params` stored as float32: the uncompressed model's size."""
  return sum(x.size * 4 for x in jax.tree.leaves(params))


def latency_ratio(dense_fn, dense_args: Sequence[Any], compressed_fn, compressed_args:
                  Sequence[Any], repeats: int = 7) -> float:
  """Median seconds of `compressed_fn(*compressed_args)` over `dense_fn(*dense_args)`, both
  jitted, timed in alternation after warm-up calls (`pack.median_times`: noise on a shared
  CPU hits both alike)."""
  dense, compressed = pack.median_times(
      [(jax.jit(dense_fn), tuple(dense_args)), (jax.jit(compressed_fn), tuple(compressed_args))],
      repeats)
  return compressed / dense


def forward(model):
  """`(params, *inputs) -> model.apply(...)`, factor pairs computed as x·A·B. Latency is
  measured on this: weights as stored in float (fake-quantized weights and zeros included),
  no activation fake-quantization; CPU kernels here are dense, so only a smaller shape
  (factor pairs, removed heads) can be faster."""
  return lambda params, *inputs: WRAP(lambda: model.apply({"params": params}, *inputs))


def _row(steps, c: Compressed, dense_params, seconds: float, latency: float) -> Dict[str, Any]:
  stored = storage_bytes(c)
  return {"recipe": "+".join(f"{s.method}:{s.setting}" for s in steps),
          "MB": stored / 2**20, "size ratio": stored / float32_bytes(dense_params),
          "compress s": seconds, "latency ratio": latency, "steps": c.reports}


def measure_lm(src: runs_quantize.LMSource, steps: Sequence[Step],
               options: Optional[Dict[str, Dict[str, Any]]] = None, batch_size: int = 32,
               latency_batch: int = 8) -> Tuple[Compressed, Dict[str, Any]]:
  """Compresses an LM source (`runs.quantize.lm_source`) by `steps`: (the result, a row with
  its validation perplexity, size, compression seconds and CPU latency ratio)."""
  calib = [src.calib_rows[i:i + batch_size, :-1]
           for i in range(0, len(src.calib_rows), batch_size)]
  start = time.perf_counter()
  c = apply_recipe(blocks_lib.for_llama(src.model), src.params, calib, steps, options,
                   src.model)
  seconds = time.perf_counter() - start
  model = c.model or src.model
  ppl = evaluate.perplexity(model, c.params, src.eval_rows, src.tokenizer.pad_id,
                            act=c.act, batch_size=batch_size, wrap=WRAP)
  tokens = jnp.asarray(src.eval_rows[:latency_batch, :-1])
  latency = latency_ratio(forward(src.model), (src.params, tokens), forward(model),
                          (c.params, tokens))
  return c, {**_row(steps, c, src.params, seconds, latency), "perplexity": ppl}


def measure_encoder(src: runs_quantize.EncoderSource, steps: Sequence[Step],
                    options: Optional[Dict[str, Dict[str, Any]]] = None
                    ) -> Tuple[Compressed, Dict[str, Any]]:
  """As `measure_lm` for a sentence encoder (`runs.quantize.encoder_source`): the row has
  the mean cosine of its sentence embeddings to the original model's."""
  bm, params = src.block_model, src.encoder.params
  start = time.perf_counter()
  c = apply_recipe(bm, params, src.calib, steps, options)
  seconds = time.perf_counter() - start
  cosine = evaluate.embedding_cosine(bm, params, c.params, src.eval_batches, c.act, wrap=WRAP)
  batch = tuple(jnp.asarray(x) for x in src.eval_batches[0])
  model = src.encoder.model
  latency = latency_ratio(forward(model), (params, *batch), forward(model), (c.params, *batch))
  return c, {**_row(steps, c, params, seconds, latency), "cosine": cosine}


def compress_run(config, workdir: str) -> Dict[str, Any]:
  """`experiments/compress.py`: compresses the source of `config` (configs/compress.py) by
  its recipe, writes `<workdir>/compressed.npz` (`effcomp.prune.storage`: the params with
  factor pairs, pruned kernels as kept values + packed masks) and `compress.json` (the row
  and the config), returns the row (with the uncompressed model's metric beside it)."""
  steps = parse_recipe(config.recipe)
  options = config.options.to_dict()
  if config.source.kind == "minilm":
    src = runs_quantize.encoder_source(config.calib.num_samples)
    c, row = measure_encoder(src, steps, options)
  else:
    if not config.source.workdir:
      raise ValueError("config.source.workdir is empty: expected the workdir of a trained LM "
                       "run (or config.source.kind='minilm')")
    src = runs_quantize.lm_source(run_lib.open_run(config.source.workdir),
                                  config.calib.num_samples, config.calib.split, config.seed)
    c, row = measure_lm(src, steps, options, config.eval.batch_size)
    row["dense perplexity"] = evaluate.perplexity(src.model, src.params, src.eval_rows,
                                                  src.tokenizer.pad_id,
                                                  batch_size=config.eval.batch_size)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    storage.save(os.path.join(workdir, "compressed.npz"), c.params, c.masks)
    widths = {} if c.model is None else {  # what builds the pruned model from the source's
        f: getattr(c.model, f) for f in ("layer_heads", "layer_mlp", "layer_head_ids")}
    with open(os.path.join(workdir, "compress.json"), "w") as f:
      json.dump({**row, "model_widths": widths, "config": config.to_dict()}, f, indent=2,
                default=str)
  return row
