"""U-DiT against DiT on the embedded digits: equal and lower FLOPs, the same training budget.

Every variant (`VARIANTS`: a `configs/diffusion_digits.py` argument plus overrides) trains
in pixel space on the digits upsampled to 16×16 (AdamW 1e-3, EMA 0.999 with warm-up,
batch 64, label dropout 0.1) for the steps shown from the same seed, then samples
`--samples_per_class` images per class from its EMA weights without guidance (DDIM, η = 0,
for ε / v / x0 models; Euler for rectified-flow models; U-DiT with its re-parameterized
FFN), and as many with classifier-free guidance for a second class-accuracy column.
Measured per model: forward GFLOPs per sample (multiply-adds, the papers' convention,
`effcomp.metrics.flops.analytic_macs`, and XLA's cost analysis), parameters, the final
eval loss (fixed noise draws), training steps/s and minutes, sampling seconds, and two
scores from a small CNN trained on the same 16×16 digits (`configs/demo.py`,
`task.resize=16`):

  * proxy-FID: the Fréchet distance between the classifier's penultimate features of
    the samples and of the training images (`effcomp.metrics.proxy`). THIS IS NOT FID:
    it ranks models evaluated with this one classifier and nothing else;
  * class accuracy: how often the classifier reads the conditioning label in a sample.

A reference row scores the real test images the same way; `meets targets` checks issue
21's goals (`TARGETS`). `--ablations` adds a second table of one-change variants of
DiT-T/2. Expected (U-DiT, Tian et al. 2024, Tables 1–2): U-DiT better than DiT at equal
FLOPs, and still competitive at a fraction of them. Sample grids (one row per class) are
written next to the table.

  python benchmarks/udit.py [--steps=1000] [--models=…] [--ablations=…]
"""

import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common, digits_common  # noqa: E402
from benchmarks.digits_common import digits, save_grid, scores  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.metrics import fid, flops, proxy  # noqa: E402
from effcomp.models.dit import udit  # noqa: E402
from effcomp.tasks import diffusion  # noqa: E402
from effcomp.train import metrics_writer  # noqa: E402

flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_udit"),
                    "Where the classifier and the diffusion models train (from scratch).")
flags.DEFINE_integer("steps", 1000, "Training steps of every diffusion model (batch 64).")
flags.DEFINE_list("steps_of", [], "Per-variant step counts overriding --steps, as "
                  "name=steps (e.g. 'U-DiT-T=1200').")
flags.DEFINE_integer("classifier_steps", 400, "Training steps of the proxy classifier.")
flags.DEFINE_integer("samples_per_class", 30, "Samples per class for the scores.")
flags.DEFINE_float("guidance_scale", 4.0, "Classifier-free guidance of the extra class-accuracy "
                   "column (the other scores are unguided, as U-DiT's main tables).")
flags.DEFINE_string("sample_steps", "ddim25", "Sampling steps (respacing) of the DDIM sampler "
                    "(ε / v / x0 models).")
flags.DEFINE_integer("flow_steps", 25, "Euler steps of the flow-matching models.")
flags.DEFINE_list("models", ["DiT-T/2 flow", "U-DiT-T flow", "U-DiT-T/small flow", "DiT-T/2"],
                  "Variants of the main table; the first is the baseline of the ratios.")
flags.DEFINE_list("ablations", ["DiT-T/2 fixed σ", "DiT-T/2 v"],
                  "Variants of a second table (ablations of the recipe).")
FLAGS = flags.FLAGS

GUIDED = "class accuracy (guided)"
# name: (configs/diffusion_digits.py argument, config overrides, role)
VARIANTS = {
    "DiT-T/2": ("model=DiT-T/2", {}, "DiT's recipe (ε, learned σ)"),
    "U-DiT-T": ("model=U-DiT-T", {}, "U-DiT at DiT-T/2's FLOPs"),
    "U-DiT-T/small": ("model=U-DiT-T/small", {}, "U-DiT at a fraction of DiT-T/2's FLOPs"),
    "DiT-T/2 flow": ("model=DiT-T/2,objective=flow", {}, "DiT, rectified flow"),
    "U-DiT-T flow": ("model=U-DiT-T,objective=flow", {}, "U-DiT at DiT-T/2's FLOPs, flow"),
    "U-DiT-T/small flow": ("model=U-DiT-T/small,objective=flow", {},
                           "U-DiT at a fraction of DiT-T/2's FLOPs, flow"),
    "DiT-T/2 flow uniform t": ("model=DiT-T/2,objective=flow",
                               {"task.flow_time_distribution": "uniform"},
                               "ablation: flow with uniform instead of logit-normal times"),
    "DiT-T/2 fixed σ": ("model=DiT-T/2,sigma=fixed", {}, "ablation: ε with fixed variance"),
    "DiT-T/2 v": ("model=DiT-T/2,objective=v", {}, "ablation: v prediction"),
    "DiT-T/2 x0": ("model=DiT-T/2,objective=x0", {}, "ablation: x0 prediction"),
    "DiT-T/2 no label dropout": ("model=DiT-T/2", {"model.class_dropout_prob": 0.0},
                                 "ablation: no classifier-free training"),
    "DiT-T/2 lr 3e-4": ("model=DiT-T/2,lr=3e-4", {}, "ablation: learning rate"),
    "DiT-T/2 no EMA": ("model=DiT-T/2", {"eval.use_ema": False}, "ablation: raw weights"),
}


def variant_config(name):
  if name not in VARIANTS:
    raise app.UsageError(f"variant {name!r}: expected one of {sorted(VARIANTS)}")
  steps = dict(s.split("=", 1) for s in FLAGS.steps_of).get(name, FLAGS.steps)
  arg, overrides, _ = VARIANTS[name]
  return config_lib.load(f"configs/diffusion_digits.py:{arg},steps={steps}",
                         **{"train.progress_bar": False, "train.eval_every": 0, **overrides})


def _slug(name):
  return (name.lower().replace("/", "_").replace("-", "").replace(" ", "_")
          .replace("σ", "sigma"))


def train_classifier():
  """The proxy's classifier: (test accuracy, features_fn, logits_fn)."""
  return digits_common.train_classifier(os.path.join(FLAGS.runs_dir, "classifier"),
                                        FLAGS.classifier_steps)


def train_and_sample(name):
  """Trains one model from scratch and samples it: (row fields, samples, labels)."""
  workdir = os.path.join(FLAGS.runs_dir, _slug(name))
  shutil.rmtree(workdir, ignore_errors=True)
  config = variant_config(name)
  start = time.time()
  summary = runs.train(config, workdir)
  train_minutes = (time.time() - start) / 60
  rates = [r["train/steps_per_second"] for r in
           metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
           if "train/steps_per_second" in r][1:]  # the first window includes compilation
  run = runs.open(workdir, config)
  model, params = run.model, run.params
  macs = flops.analytic_macs(model)
  row = {"model": name, "params (M)": flops.count_params(model) / 1e6,
         "GFLOPs": macs.total / 1e9,
         "XLA GFLOPs": flops.xla_flops(lambda *a: flops.unrolled(model).apply(
             {"params": params}, *a), *flops.example_inputs(model)) / 1e9,
         "objective": config.task.objective, "steps": config.train.steps,
         "eval loss": summary["eval"]["loss"], "train steps/s": float(np.median(rates)),
         "train min": train_minutes}
  if isinstance(model, udit.UDiT) and model.ffn == "rep":  # inference form, as the reference
    model, params = model.clone(ffn="dwconv"), udit.reparameterize(params)
  labels = jnp.repeat(jnp.arange(model.num_classes), FLAGS.samples_per_class)

  def sample_all(guidance_scale):
    flow = config.task.objective == "flow"
    fn = lambda rng, y: diffusion.sample_images(
        model, params, y, rng, config=config, sampler="euler" if flow else "ddim",
        steps=FLAGS.flow_steps if flow else FLAGS.sample_steps, guidance_scale=guidance_scale)
    jax.block_until_ready(fn(jax.random.key(1), labels[:100]))  # compile outside the timing
    start = time.time()
    out = np.concatenate([np.asarray(fn(jax.random.fold_in(jax.random.key(0), i),
                                        labels[i:i + 100]))
                          for i in range(0, len(labels), 100)])
    return out, (time.time() - start) / len(labels)

  samples, row["sampling s/image"] = sample_all(1.0)
  guided, _ = sample_all(FLAGS.guidance_scale)
  return row, samples, guided, np.asarray(labels)


TARGETS = {"class accuracy": 0.6, GUIDED: 0.9, "proxy-FID": 1.0}  # issue 21's goals
COLUMNS = ["model", "role", "objective", "steps", "params (M)", "GFLOPs", "GFLOPs vs DiT",
           "XLA GFLOPs", "eval loss", "proxy-FID", "class accuracy", GUIDED, "meets targets",
           "train steps/s", "steps/s vs DiT", "train min", "sampling s/image", "samples"]


def evaluate_variants(names, real_stats, features_fn, logits_fn, grids):
  """Rows of the variants `names` (trained, sampled, scored); grids collects the PNGs."""
  rows = []
  for name in names:
    row, samples, guided, labels = train_and_sample(name)
    row.update(role=VARIANTS[name][2],
               **scores(samples, labels, real_stats, features_fn, logits_fn))
    row[GUIDED] = proxy.class_accuracy(logits_fn, guided, labels)
    row["meets targets"] = (row["class accuracy"] >= TARGETS["class accuracy"]
                            and row[GUIDED] >= TARGETS[GUIDED]
                            and row["proxy-FID"] <= TARGETS["proxy-FID"])
    path = os.path.join("docs", "results", f"udit_samples_{_slug(name)}.png")
    grids[path] = (samples, labels)
    row["samples"] = f"[grid]({os.path.basename(path)})"
    rows.append(row)
    print(row, flush=True)
  return rows


def main(argv):
  del argv
  for name in FLAGS.models + FLAGS.ablations:
    variant_config(name)  # unknown names fail before any training
  t_start = time.time()
  accuracy, features_fn, logits_fn = train_classifier()
  train_images, _ = digits("train")
  test_images, test_labels = digits("test")
  real_stats = fid.feature_statistics(features_fn(train_images))
  reference = {"model": "real test images (reference)",
               **scores(test_images, test_labels, real_stats, features_fn, logits_fn)}
  grids = {}
  rows = evaluate_variants(FLAGS.models, real_stats, features_fn, logits_fn, grids)
  ablations = evaluate_variants(FLAGS.ablations, real_stats, features_fn, logits_fn, grids)
  base = rows[0]
  for row in rows + ablations:
    row["GFLOPs vs DiT"] = row["GFLOPs"] / base["GFLOPs"]
    row["steps/s vs DiT"] = row["train steps/s"] / base["train steps/s"]
  notes = (f"Embedded digits upsampled to 16×16 (pixel space), class-conditional; every model "
           f"trained the steps shown, batch 64, from seed 0 (`configs/diffusion_digits.py`), "
           f"then {FLAGS.samples_per_class} samples per class from the EMA weights: DDIM "
           f"{FLAGS.sample_steps} (η = 0) for ε / v / x0 models, Euler with {FLAGS.flow_steps} "
           "steps for flow models; no guidance. `GFLOPs`: forward multiply-adds per "
           "sample as the papers count them; `XLA GFLOPs`: XLA's cost analysis (a multiply-add "
           "is 2 FLOPs). `eval loss`: the training loss on the test split with fixed noise "
           "(its scale depends on the objective). Scores from a CNN trained on the same 16×16 "
           f"digits ({FLAGS.classifier_steps} steps, test accuracy {accuracy:.3f}): `proxy-FID` = "
           "Fréchet distance of its penultimate features, samples vs the training images — a "
           "proxy, NOT comparable with any published FID; `class accuracy` = share of samples "
           "the classifier reads as their conditioning class; `(guided)`: the same with "
           f"classifier-free guidance {FLAGS.guidance_scale:g}. Targets (issue 21): class "
           f"accuracy ≥ {TARGETS['class accuracy']}, guided ≥ {TARGETS[GUIDED]}, proxy-FID ≤ "
           f"{TARGETS['proxy-FID']} (the real test images: {reference['proxy-FID']:.3f}) within "
           "30 minutes of training. Timings on 2 CPU cores, one run: XLA's CPU backend runs "
           "U-DiT's many small ops (depthwise convs, sub-map reshapes) at a lower rate per "
           "FLOP than DiT's few large matmuls, so compare the FLOPs for cost and the steps/s "
           f"for this machine only. Wall time of the whole benchmark: "
           f"{(time.time() - t_start) / 60:.1f} min.")
  tables = [("Ablations", "Each row changes one thing of a row of the main table (same "
             "steps unless shown, same sampling and scores).", ablations, COLUMNS)
            ] if ablations else []
  common.write_results("udit", [reference] + rows, COLUMNS,
                       title="U-DiT vs DiT on the embedded digits (CPU scale)", notes=notes,
                       extra={"classifier_accuracy": accuracy, "targets": TARGETS},
                       tables=tables)
  for path, (samples, labels) in grids.items():  # after: the record's commit is clean
    save_grid(samples, labels, os.path.join(ROOT, path))


if __name__ == "__main__":
  app.run(main)
