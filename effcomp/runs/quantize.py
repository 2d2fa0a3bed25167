"""`experiments/quantize.py`: quantize a trained effcomp LM run and evaluate it.

Opens the LM run in `config.source.workdir` (with the config it recorded), draws
`config.calib.num_samples` calibration sequences from the training split, quantizes with
`config.method` at `config.setting` (`effcomp.quant.ptq`), measures validation perplexity
before and after, and writes into the output workdir the quantized params (integer codes
packed with their scales, `effcomp.quant.pack_int`) and `ptq.json`.
"""

import dataclasses
import json
import os
from typing import Any, Dict

import jax
import ml_collections
import numpy as np
from etils import epath

from effcomp.data import packing, sources
from effcomp.quant import fake_quant, pack_int
from effcomp.quant.ptq import blocks, evaluate, quantize
from effcomp.runs.run import Run, open_run
from effcomp.tasks import lm


@dataclasses.dataclass
class LMSource:
  """A trained LM with its data: what every PTQ method is run on."""
  model: Any
  params: Any
  tokenizer: Any
  calib_rows: np.ndarray  # [num_samples, T + 1]
  eval_rows: np.ndarray  # the whole validation split, packed


def lm_source(run: Run, num_samples: int, split: str = "train", seed: int = 0) -> LMSource:
  """The opened LM `run` with its tokenizer and calibration/eval data (the splits of the
  dataset it was trained on, packed as in training)."""
  if run.task != "lm":
    raise ValueError(f"workdir={run.workdir!r}: a run of the {run.task!r} task; expected a "
                     "trained LM run ('lm')")
  tok = lm.load_tokenizer(run.workdir)
  d = run.config.data

  def rows(s):
    src = sources.get_source(d.name, s, data_dir=d.data_dir, manual_dir=d.manual_dir)
    return packing.packed_source(src, tok, run.config.task.seq_len).arrays["tokens"]

  train = rows(split)
  if not 0 < num_samples <= len(train):
    raise ValueError(f"config.calib.num_samples={num_samples}: expected 1 … {len(train)} "
                     f"(packed sequences in {d.name} {split})")
  pick = np.sort(np.random.default_rng(seed).choice(len(train), num_samples, replace=False))
  return LMSource(run.model, jax.device_get(run.params), tok, train[pick], rows(d.eval_split))


def quantize_lm(src: LMSource, method: str, setting: str, options: Dict[str, Any],
                batch_size: int = 32):
  """(quantized params, {kernel path: (scale, zero)}, result row) for one method × setting."""
  qconfig = fake_quant.QuantConfig.parse(setting)
  calib = [src.calib_rows[i:i + batch_size, :-1] for i in range(0, len(src.calib_rows), batch_size)]
  params, report = quantize.quantize_model(blocks.for_llama(src.model), src.params, calib,
                                           qconfig, method, options)
  scales = report.pop("scales")
  ppl = evaluate.perplexity(src.model, params, src.eval_rows, src.tokenizer.pad_id,
                            act=qconfig.act if method != "fp" else None, batch_size=batch_size)
  return params, scales, {**report, "perplexity": ppl}


def quantize_run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Quantizes per `config` (configs/ptq.py), writes the outputs, returns the result."""
  if not config.source.workdir:
    raise ValueError("config.source.workdir is empty: expected the workdir of a trained LM run")
  src = lm_source(open_run(config.source.workdir), config.calib.num_samples, config.calib.split,
                  config.seed)
  fp_ppl = evaluate.perplexity(src.model, src.params, src.eval_rows, src.tokenizer.pad_id,
                               batch_size=config.eval.batch_size)
  params, scales, result = quantize_lm(src, config.method, config.setting, config.options.to_dict(),
                                       config.eval.batch_size)
  result["fp_perplexity"] = fp_ppl
  if jax.process_index() == 0:
    out = epath.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    if scales:
      spec = fake_quant.QuantConfig.parse(config.setting).weight
      packed = pack_int.pack_tree(params, {p: spec for p in scales}, grids=scales)
      result["bytes"], result["float_bytes"] = pack_int.tree_nbytes(packed), pack_int.tree_nbytes(params)
      pack_int.save(os.path.join(workdir, "quantized.npz"), packed)
    (out / "ptq.json").write_text(json.dumps(
        {**result, "config": config.to_dict(), "source": config.source.workdir}, indent=2))
  return result
