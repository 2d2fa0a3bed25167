"""U-DiT against DiT on the embedded digits: equal and lower FLOPs, the same training budget.

Every model trains with `configs/diffusion_digits.py` (pixel space, digits upsampled to
16×16, ε prediction with learned σ, 1000-step linear schedule, AdamW 1e-3, EMA 0.999
with warm-up, batch 64) for the same number of steps from the same seed, then samples
`--samples_per_class` images per class from its EMA weights without guidance (DDIM,
η = 0; U-DiT with its re-parameterized FFN), and as many with classifier-free guidance
for a second class-accuracy column. Measured per model: forward GFLOPs per
sample (multiply-adds, the papers' convention, `effcomp.metrics.flops.analytic_macs`, and
XLA's cost analysis), parameters, the final eval loss (fixed noise draws), training
steps/s, sampling seconds, and two scores from a small CNN trained on the same 16×16
digits (`configs/demo.py`, `task.resize=16`):

  * proxy-FID: the Fréchet distance between the classifier's penultimate features of
    the samples and of the training images (`effcomp.metrics.proxy`). THIS IS NOT FID:
    it ranks models evaluated with this one classifier and nothing else;
  * class accuracy: how often the classifier reads the conditioning label in a sample.

A reference row scores the real test images the same way. Expected (U-DiT, Tian et al.
2024, Tables 1–2): U-DiT better than DiT at equal FLOPs, and still competitive at a
fraction of them. Sample grids (one row per class) are written next to the table.

  python benchmarks/udit.py [--steps=600] [--runs_dir=workdirs/bench_udit]
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
from PIL import Image  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.data import sources  # noqa: E402
from effcomp.metrics import fid, flops, proxy  # noqa: E402
from effcomp.models.dit import udit  # noqa: E402
from effcomp.tasks import diffusion  # noqa: E402
from effcomp.train import metrics_writer  # noqa: E402

flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_udit"),
                    "Where the classifier and the diffusion models train (from scratch).")
flags.DEFINE_integer("steps", 600, "Training steps of every diffusion model (batch 64).")
flags.DEFINE_integer("classifier_steps", 400, "Training steps of the proxy classifier.")
flags.DEFINE_integer("samples_per_class", 30, "Samples per class for the scores.")
flags.DEFINE_float("guidance_scale", 4.0, "Classifier-free guidance of the extra class-accuracy "
                   "column (the other scores are unguided, as U-DiT's main tables).")
flags.DEFINE_string("sample_steps", "ddim25", "Sampling steps (respacing) of the DDIM sampler.")
flags.DEFINE_list("models", ["DiT-T/2", "U-DiT-T", "U-DiT-T/small"], "Sizes to compare "
                  "(configs/diffusion_digits.py); the first is the baseline of the ratios.")
FLAGS = flags.FLAGS

GUIDED = "class accuracy (guided)"
RESIZE = 16  # the classifier sees digits as the diffusion models do: bilinear 8×8 → 16×16
ROLES = {"DiT-T/2": "DiT baseline", "U-DiT-T": "U-DiT at DiT-T/2's FLOPs",
         "U-DiT-T/small": "U-DiT at a fraction of DiT-T/2's FLOPs"}


def _slug(name):
  return name.lower().replace("/", "_").replace("-", "")


def digits(split):
  """uint8 images [N, 8, 8, 1] and labels [N] of the digits `split`."""
  source = sources.get_source("digits", split)
  examples = [source[i] for i in range(len(source))]
  return (np.stack([e["image"] for e in examples]),
          np.asarray([e["label"] for e in examples], np.int32))


def train_classifier():
  """The proxy's classifier: (test accuracy, features_fn, logits_fn)."""
  config = config_lib.load(f"configs/demo.py:model=cnn,steps={FLAGS.classifier_steps}",
                           **{"task.resize": RESIZE, "train.progress_bar": False})
  workdir = os.path.join(FLAGS.runs_dir, "classifier")
  shutil.rmtree(workdir, ignore_errors=True)
  summary = runs.train(config, workdir)
  run = runs.open(workdir, config)
  model, variables = run.model, run.variables
  return (summary["eval"]["accuracy"], proxy.proxy_features_fn(model, variables, RESIZE),
          proxy.proxy_logits_fn(model, variables, RESIZE))


def scores(images, labels, real_stats, features_fn, logits_fn):
  return {"proxy-FID": fid.frechet_distance(*fid.feature_statistics(features_fn(images)),
                                            *real_stats),
          "class accuracy": proxy.class_accuracy(logits_fn, images, labels)}


def train_and_sample(name):
  """Trains one model from scratch and samples it: (row fields, samples, labels)."""
  workdir = os.path.join(FLAGS.runs_dir, _slug(name))
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load(f"configs/diffusion_digits.py:model={name},steps={FLAGS.steps}",
                           **{"train.progress_bar": False, "train.eval_every": 0})
  summary = runs.train(config, workdir)
  rates = [r["train/steps_per_second"] for r in
           metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
           if "train/steps_per_second" in r][1:]  # the first window includes compilation
  run = runs.open(workdir, config)
  model, params = run.model, run.params
  macs = flops.analytic_macs(model)
  row = {"model": name, "params (M)": flops.count_params(model) / 1e6,
         "GFLOPs": macs.total / 1e9,
         "XLA GFLOPs": flops.xla_flops(lambda *a: model.apply({"params": params}, *a),
                                       *flops.example_inputs(model)) / 1e9,
         "eval loss": summary["eval"]["loss"], "train steps/s": float(np.median(rates))}
  if isinstance(model, udit.UDiT) and model.ffn == "rep":  # inference form, as the reference
    model, params = model.clone(ffn="dwconv"), udit.reparameterize(params)
  labels = jnp.repeat(jnp.arange(model.num_classes), FLAGS.samples_per_class)

  def sample_all(guidance_scale):
    fn = lambda rng, y: diffusion.sample_images(model, params, y, rng, config=config,
                                                sampler="ddim", steps=FLAGS.sample_steps,
                                                guidance_scale=guidance_scale)
    jax.block_until_ready(fn(jax.random.key(1), labels[:100]))  # compile outside the timing
    start = time.time()
    out = np.concatenate([np.asarray(fn(jax.random.fold_in(jax.random.key(0), i),
                                        labels[i:i + 100]))
                          for i in range(0, len(labels), 100)])
    return out, (time.time() - start) / len(labels)

  samples, row["sampling s/image"] = sample_all(1.0)
  guided, _ = sample_all(FLAGS.guidance_scale)
  return row, samples, guided, np.asarray(labels)


def save_grid(samples, labels, path, per_class=10):
  picked = np.concatenate([samples[labels == c][:per_class] for c in np.unique(labels)])
  grid = diffusion.image_grid(picked, rows=len(np.unique(labels)))[..., 0]
  image = Image.fromarray(grid)
  image.resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def main(argv):
  del argv
  t_start = time.time()
  accuracy, features_fn, logits_fn = train_classifier()
  train_images, _ = digits("train")
  test_images, test_labels = digits("test")
  real_stats = fid.feature_statistics(features_fn(train_images))
  rows = [{"model": "real test images (reference)", "role": "",
           **scores(test_images, test_labels, real_stats, features_fn, logits_fn)}]
  grids = {}
  for name in FLAGS.models:
    role = ROLES.get(name, "")
    row, samples, guided, labels = train_and_sample(name)
    row.update(role=role, **scores(samples, labels, real_stats, features_fn, logits_fn))
    row[GUIDED] = proxy.class_accuracy(logits_fn, guided, labels)
    path = os.path.join("docs", "results", f"udit_samples_{_slug(name)}.png")
    grids[path] = (samples, labels)
    row["samples"] = f"[grid]({os.path.basename(path)})"
    rows.append(row)
    print(row, flush=True)
  base = rows[1]
  for row in rows[1:]:
    row["GFLOPs vs DiT"] = row["GFLOPs"] / base["GFLOPs"]
    row["steps/s vs DiT"] = row["train steps/s"] / base["train steps/s"]
  notes = (f"Embedded digits upsampled to 16×16 (pixel space), class-conditional; every model "
           f"trained {FLAGS.steps} steps of batch 64 from seed 0 (`configs/diffusion_digits.py`), "
           f"then {FLAGS.samples_per_class} samples per class from the EMA weights, DDIM "
           f"{FLAGS.sample_steps} (η = 0), no guidance. `GFLOPs`: forward multiply-adds per "
           "sample as the papers count them; `XLA GFLOPs`: XLA's cost analysis (a multiply-add "
           "is 2 FLOPs). `eval loss`: the training loss on the test split with fixed noise. "
           "Scores from a CNN trained on the same 16×16 digits "
           f"({FLAGS.classifier_steps} steps, test accuracy {accuracy:.3f}): `proxy-FID` = "
           "Fréchet distance of its penultimate features, samples vs the training images — a "
           "proxy, NOT comparable with any published FID; `class accuracy` = share of samples "
           "the classifier reads as their conditioning class; `(guided)`: the same with "
           f"classifier-free guidance {FLAGS.guidance_scale:g}. Timings on 2 CPU cores, one run: "
           "XLA's CPU backend runs U-DiT's many small ops (depthwise convs, sub-map reshapes) "
           "at a lower rate per FLOP than DiT's few large matmuls, so compare the FLOPs for "
           f"cost and the steps/s for this machine only. Wall time of the whole benchmark: "
           f"{(time.time() - t_start) / 60:.1f} min.")
  common.write_results(
      "udit", rows,
      ["model", "role", "params (M)", "GFLOPs", "GFLOPs vs DiT", "XLA GFLOPs", "eval loss",
       "proxy-FID", "class accuracy", GUIDED, "train steps/s", "steps/s vs DiT", "sampling s/image",
       "samples"],
      title="U-DiT vs DiT on the embedded digits (CPU scale)", notes=notes,
      extra={"classifier_accuracy": accuracy})
  for path, (samples, labels) in grids.items():  # after: the record's commit is clean
    save_grid(samples, labels, os.path.join(ROOT, path))


if __name__ == "__main__":
  app.run(main)
