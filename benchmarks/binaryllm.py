"""1-bit LLMs: progressive binarization against BitNet-style STE and XNOR, with ablations.

Every student is lm_tiny with 1-bit q/k/v/o and MLP weights, started from the same trained
full-precision lm_tiny (`--lm_workdir`, trained first by `configs/lm_tiny.py:tokenizer=byte`
if it holds no finished run) and distilled from it with the same data, steps, batch,
optimizer and loss (`configs/binaryllm_tiny.py`). The byte-level lm_tiny is used because
its blocks hold 95 % of its weights, as in large LLMs; with the 4,096-token BPE the
full-precision embeddings hold 42 % and every 1-bit method recovers to within 1 % of FP
(a run at commit bf5d419: 111.3–111.7 against 110.6), which ranks nothing. Measured: validation perplexity of the final 1-bit model,
the perplexity of its packed export reloaded from disk (`experiments/export.py`'s path),
the 1-bit perplexity before training (after the warm start), wall time, and the curves of
validation perplexity against step (docs/results/binaryllm_curves.png). Expected (Tu et
al. 2025, Tables 1–2): progressive with binary-aware initialization and dual scaling best
among the 1-bit methods, each ablation worse.

  python benchmarks/binaryllm.py [--lm_workdir=workdirs/bench_lm_tiny_byte] [--steps=240]
"""

import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402
from absl import app, flags  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.models.lm.llama import num_params  # noqa: E402
from effcomp.quant import binary_pack  # noqa: E402
from effcomp.quant.ptq import evaluate  # noqa: E402
from effcomp.runs import export as runs_export  # noqa: E402
from effcomp.runs import quantize  # noqa: E402
from effcomp.train import metrics_writer  # noqa: E402

flags.DEFINE_string("lm_workdir", os.path.join(ROOT, "workdirs", "bench_lm_tiny_byte"),
                    "The full-precision lm_tiny teacher (trained here first if unfinished).")
flags.DEFINE_string("tokenizer", "byte", "The teacher's tokenizer if it is trained here.")
flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_binaryllm"),
                    "Where the students train (each run starts from scratch).")
flags.DEFINE_integer("steps", 240, "Training steps of every student.")
FLAGS = flags.FLAGS

CURVES = "docs/results/binaryllm_curves.png"
# (name, configs/binaryllm_tiny.py arguments)
METHODS = (
    ("BitNet (STE, per-tensor mean|w|)", "method=bitnet"),
    ("XNOR (per-channel mean|w|)", "method=xnor"),
    ("progressive (full)", "method=progressive"),
    ("progressive w/o binary-aware init", "method=progressive,init=false"),
    ("progressive w/o dual scaling", "method=progressive,dual=false"),
)


def _eval_rows(workdir):
  return [r for r in metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "eval/perplexity" in r]


def train_student(name, args):
  """Trains one student from scratch; returns its result row and its eval curve."""
  workdir = os.path.join(FLAGS.runs_dir, args.replace("=", "_").replace(",", "_"))
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load(f"configs/binaryllm_tiny.py:teacher={FLAGS.lm_workdir},steps={FLAGS.steps},{args}",
                           **{"train.progress_bar": False, "eval.at_start": True})
  summary = runs.train(config, workdir)
  export = runs_export.export_binary_lm_and_check(workdir, os.path.join(workdir, "packed"))
  curve = _eval_rows(workdir)
  init = [r for r in metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "init/error_after" in r]
  row = {"method": name, "config": args, "steps": summary["steps"],
         "perplexity": summary["eval"]["perplexity_1bit"],
         "packed perplexity": export["packed_perplexity"],
         "perplexity at step 0": curve[0]["eval/perplexity_1bit"],
         "init layer error": (f"{init[0]['init/error_before']:.3f} → {init[0]['init/error_after']:.3f}"
                              if init else ""),
         "seconds": summary["seconds"]}
  print(row, flush=True)
  return row, curve


def plot(curves, teacher_ppl, path):
  fig, ax = plt.subplots(figsize=(8, 5))
  for (name, _), curve in zip(METHODS, curves):
    steps = [r["step"] for r in curve]
    line, = ax.plot(steps, [r["eval/perplexity_1bit"] for r in curve], marker="o", label=name)
    if "progressive" in name:  # what the model computes at that point of its schedule
      ax.plot(steps, [r["eval/perplexity"] for r in curve], ls=":", color=line.get_color())
  ax.axhline(teacher_ppl, color="black", ls="--", label=f"FP teacher ({teacher_ppl:.1f})")
  ax.set(xlabel="training step", ylabel="validation perplexity (log)", yscale="log",
         title="lm_tiny, 1-bit weights: solid = final 1-bit model, dotted = as trained")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  t_start = time.time()
  common.trained_lm_tiny(FLAGS.lm_workdir, FLAGS.tokenizer)
  teacher_seconds = time.time() - t_start
  teacher = quantize.lm_source(runs.open(FLAGS.lm_workdir), num_samples=1)
  teacher_ppl = evaluate.perplexity(teacher.model, teacher.params, teacher.eval_rows,
                                    teacher.tokenizer.pad_id)
  binarized = binary_pack.nbytes(binary_pack.pack_model(
      teacher.model.clone(binarizer="xnor"), teacher.params))[1] // 4
  rows = [{"method": "FP teacher (lm_tiny)", "config": f"tokenizer={FLAGS.tokenizer}", "steps": 0,
           "perplexity": teacher_ppl, "seconds": teacher_seconds}]
  curves = []
  for name, args in METHODS:
    row, curve = train_student(name, args)
    rows.append(row)
    curves.append(curve)
  notes = (f"lm_tiny with the {FLAGS.tokenizer} tokenizer ({num_params(teacher.params) / 1e6:.2f} M "
           f"parameters, {binarized / 1e6:.2f} M of them in the binarized q/k/v/o/MLP weights) "
           f"distilled from its FP version for {FLAGS.steps} steps of 16 × 128 tokens on "
           "python_docs (logit KL + normalized hidden-state MSE, AdamW 1e-3, 20 phases for the "
           "progressive schedule). `perplexity`: validation perplexity of the final 1-bit model; "
           "`packed perplexity`: the same model packed (1 bit per weight + 2 scale vectors per "
           "layer), saved, reloaded and unpacked; `perplexity at step 0`: the 1-bit model right "
           "after the warm start (teacher weights, plus binary-aware initialization where "
           "used); `init layer error`: mean relative output error of the binarized layers "
           "before → after binary-aware initialization; the teacher row's `seconds`: training it "
           f"(or checking it is finished). Curves: [{os.path.basename(CURVES)}]"
           f"({os.path.basename(CURVES)}).")
  common.write_results(
      "binaryllm", rows,
      ["method", "config", "steps", "perplexity", "packed perplexity", "perplexity at step 0",
       "init layer error", "seconds"],
      title="1-bit LLMs: progressive binarization and baselines", notes=notes,
      extra={"curves": dict(zip([m[0] for m in METHODS], curves))})
  plot(curves, teacher_ppl, os.path.join(ROOT, CURVES))  # after: the record's commit is clean


if __name__ == "__main__":
  app.run(main)
