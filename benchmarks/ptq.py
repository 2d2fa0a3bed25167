"""Post-training quantization: CBQ against RTN, GPTQ, SmoothQuant and AWQ.

1. lm_tiny (trained by this script with `configs/lm_tiny.py` unless `--lm_workdir` holds
   a run): validation perplexity of FP and of every method at W4A16g128, W3A16,
   W2A16g64, W4A8 and W4A4, with each method's quantization wall time; and the CBQ
   ablation (without CFP / cross-block / LoRA-Rounding) at W4A4.
2. all-MiniLM-L6-v2 (real pretrained weights): mean cosine similarity of the quantized
   encoder's sentence embeddings to full precision, same methods, at W4A16g128, W4A8
   and W4A4 (the settings that keep a 6-layer encoder usable; a CPU-time budget).
The paper (Ding et al., CBQ, Tables 1–3) expects CBQ best, with the largest margins at
W4A4 and W2A16; the tables below say what reproduces at this scale.

  python benchmarks/ptq.py [--lm_workdir=workdirs/lm_tiny] [--part=all|lm|minilm]
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from configs import ptq as ptq_config  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.quant import fake_quant  # noqa: E402
from effcomp.quant.ptq import evaluate, quantize  # noqa: E402
from effcomp.runs import quantize as runs_quantize  # noqa: E402

flags.DEFINE_string("lm_workdir", os.path.join(ROOT, "workdirs", "bench_lm_tiny"),
                    "lm_tiny run to quantize (trained here first if it has no checkpoint).")
flags.DEFINE_enum("part", "all", ["all", "lm", "minilm"], "What to measure.")
flags.DEFINE_integer("calib_samples", 64, "Calibration sequences.")
FLAGS = flags.FLAGS

METHODS = ("rtn", "gptq", "smoothquant", "awq", "cbq")
SETTINGS = ("w4a16g128", "w3a16", "w2a16g64", "w4a8", "w4a4")
ABLATION_SETTINGS = ("w4a4",)
MINILM_SETTINGS = ("w4a16g128", "w4a8", "w4a4")
ABLATIONS = {"cbq w/o CFP": {"cfp": False}, "cbq w/o cross-block": {"cross_block": False},
             "cbq w/o LoRA-Rounding": {"lora_rounding": False}}


def _options(method, **extra):
  return {**ptq_config.OPTIONS[method], **extra}


def lm_rows():
  src = runs_quantize.lm_source(runs.open(common.trained_lm_tiny(FLAGS.lm_workdir)),
                                FLAGS.calib_samples)
  _, _, fp = runs_quantize.quantize_lm(src, "fp", "w16a16", {})
  rows = [{"model": "lm_tiny", "setting": "fp", "method": "fp", "perplexity": fp["perplexity"],
           "seconds": 0.0}]
  jobs = [(s, m, m, _options(m)) for s in SETTINGS for m in METHODS]
  jobs += [(s, name, "cbq", _options("cbq", **extra)) for s in ABLATION_SETTINGS
           for name, extra in ABLATIONS.items()]
  for setting, name, method, options in jobs:
    _, _, r = runs_quantize.quantize_lm(src, method, setting, options)
    rows.append({"model": "lm_tiny", "setting": setting, "method": name,
                 "perplexity": r["perplexity"], "seconds": r["seconds"]})
    print(rows[-1], flush=True)
  return rows


def minilm_rows():
  src = runs_quantize.encoder_source(FLAGS.calib_samples)
  encoder, bm, calib, eval_batches = src.encoder, src.block_model, src.calib, src.eval_batches
  rows = []
  for setting in MINILM_SETTINGS:
    qconfig = fake_quant.QuantConfig.parse(setting)
    for method in METHODS:
      params, report = quantize.quantize_model(bm, encoder.params, calib, qconfig, method,
                                               _options(method))
      cosine = evaluate.embedding_cosine(bm, encoder.params, params, eval_batches, qconfig.act)
      rows.append({"model": "all-MiniLM-L6-v2", "setting": setting, "method": method,
                   "cosine": cosine, "seconds": report["seconds"]})
      print(rows[-1], flush=True)
  return rows


def main(argv):
  del argv
  rows = []
  if FLAGS.part in ("all", "lm"):
    rows += lm_rows()
  if FLAGS.part in ("all", "minilm"):
    rows += minilm_rows()
  common.write_results(
      "ptq", rows, ["model", "setting", "method", "perplexity", "cosine", "seconds"],
      title="Post-training quantization: CBQ and baselines",
      notes=("Validation perplexity of lm_tiny (python_docs validation split; lower is better) "
             "and mean cosine similarity of all-MiniLM-L6-v2 sentence embeddings to full "
             "precision (python_docs validation first paragraphs; higher is better). "
             "`seconds`: quantization wall time on this machine."))


if __name__ == "__main__":
  app.run(main)
