"""ElasticDiT at equal training compute: one elastic model trained with the multiply-adds
the six fixed models of `benchmarks/elasticdit.py` took together, against those fixed
models (→ benchmarks/results/elasticdit_compute.json, docs/results/elasticdit_compute.md).

`benchmarks/elasticdit.py` gives the elastic model and each fixed model the same number of
steps, so the elastic model, which serves six configurations, trains with fewer
multiply-adds than the six fixed models together. Here its steps are
`round(fixed_steps · Σ_c MACs(c) / (MACs(largest) + MACs(smallest) + mean MACs(others)))`:
each fixed model's forward MACs per sample times its steps, against the sandwich rule's
three configurations per step (the largest, the smallest and one of the others at random);
batch size and backward cost scale both sides alike. The fixed rows are read from
`benchmarks/results/elasticdit.json` (the same digits, sampler, seeds and proxy classifier,
which is retrained here with the same seed and steps), so run `benchmarks/elasticdit.py`
first. Paper expectation: one elastic model outperforms the task-specific baselines.

  python benchmarks/elasticdit_compute.py
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import app  # noqa: E402

from benchmarks import common, digits_common  # noqa: E402
from benchmarks import elasticdit as bench  # noqa: E402  (its flags: runs_dir, steps, …)
from effcomp.metrics import fid  # noqa: E402

FLAGS = bench.FLAGS


def equal_steps(fixed_rows, fixed_steps: int) -> int:
  """Sandwich steps with the fixed models' total forward MACs (module docstring); the rows
  are the largest configuration first, the smallest last."""
  macs = [r["GMACs / call"] for r in fixed_rows]
  per_step = macs[0] + macs[-1] + float(np.mean(macs[1:-1]))
  return int(round(fixed_steps * sum(macs) / per_step))


def main(argv):
  del argv
  start = time.time()
  previous = common.read_results("elasticdit")
  if previous is None:
    raise FileNotFoundError("benchmarks/results/elasticdit.json is missing: run "
                            "benchmarks/elasticdit.py first")
  fixed = [r for r in previous["rows"] if r["model"].startswith("fixed d=")
           and "SSBA" not in r["model"]]
  fixed_steps = int(previous["command"].split("--fixed_steps=")[1].split()[0]) if (
      "--fixed_steps=" in previous["command"]) else 800
  steps = equal_steps(fixed, fixed_steps)
  accuracy, features_fn, logits_fn = digits_common.train_classifier(
      os.path.join(FLAGS.runs_dir, "classifier"), FLAGS.classifier_steps)
  real_stats = fid.feature_statistics(features_fn(digits_common.digits("train")[0]))
  run, minutes = bench.train("elastic_equal_compute", f"{bench.DIGITS}:model=ElasticDiT-T,"
                             f"objective=flow,steps={steps}", steps)
  generators = [bench.Generator(f"elastic d={d} p={p}, {steps} steps", run.model, run.params,
                                bench.with_configuration(run.config, d, p), minutes)
                for d, p in run.model.configurations()]
  grids = {}
  rows = bench.score_generators(generators, real_stats, features_fn, logits_fn, grids)
  for row, f in zip(rows, fixed):
    row["fixed model"] = f["model"]
    row["fixed proxy-FID"] = f["proxy-FID"]
    row["proxy-FID vs fixed"] = row["proxy-FID"] - f["proxy-FID"]
    row["fixed class accuracy"] = f["class accuracy"]
    row["class accuracy vs fixed"] = row["class accuracy"] - f["class accuracy"]
    row["samples"] = f"[grid](elasticdit_compute_samples_{bench._slug(row['model'])}.png)"
  fixed_min = sum(f["train min"] for f in fixed)
  notes = (
      f"ElasticDiT-T as in `benchmarks/elasticdit.py` (its notes), trained {steps} steps: "
      f"the forward multiply-adds of the six fixed models' {fixed_steps} steps each "
      f"(Σ {sum(r['GMACs / call'] for r in fixed):.4f} GMACs per sample) over the sandwich "
      "rule's per step (the largest + the smallest + the mean of the others). Fixed rows: "
      f"`benchmarks/results/elasticdit.json` (commit `{previous['commit'][:12]}`, "
      f"{previous['date']}; their training took {fixed_min:.1f} min together there, this "
      f"model {minutes:.1f} min here). Scores: the same proxy classifier (retrained, test "
      f"accuracy {accuracy:.3f}), {FLAGS.samples_per_class} unguided Euler-{FLAGS.flow_steps} "
      "samples per class, the same seeds. Not FID. Wall time "
      f"{(time.time() - start) / 60:.1f} min.")
  common.write_results(
      "elasticdit_compute", rows,
      ["model", "GMACs / call", "CPU s / sample", "proxy-FID", "fixed proxy-FID",
       "proxy-FID vs fixed", "class accuracy", "fixed class accuracy",
       "class accuracy vs fixed", "train min", "samples"],
      title="ElasticDiT at the fixed models' total training compute (digits, CPU scale)",
      notes=notes, extra={"steps": steps, "fixed_steps": fixed_steps})
  for name, (samples, labels) in grids.items():
    digits_common.save_grid(samples, labels, os.path.join(
        ROOT, "docs", "results", f"elasticdit_compute_samples_{bench._slug(name)}.png"))


if __name__ == "__main__":
  app.run(main)
