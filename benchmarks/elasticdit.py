"""ElasticDiT at CPU scale on the embedded digits (flow matching, pixel space, 16×16):
one elastic model against fixed models of each size, SSBA against dense attention, the
T-DVAE against its teacher autoencoder, and Flow-GRPO
(→ benchmarks/results/elasticdit.json, docs/results/elasticdit.md, the latency-fidelity
curve docs/results/elasticdit_curve.png and a sample grid per configuration).

  * Elastic vs fixed: `configs/diffusion_digits.py:model=ElasticDiT-T,objective=flow`
    (DiT-T/2's width at 6, 4 or 2 blocks × patch 2 or 4, sandwich rule) trains `--steps`;
    each configuration is sampled from the one parameter set. Each configuration also
    trains as a plain DiT of that depth and patch (`--fixed_steps`). Per row: forward
    GMACs per sample (`flops.jaxpr_macs`, as run), CPU seconds per sample (a batch of 100,
    `--flow_steps` Euler steps, jitted; every row's sampler timed interleaved in one loop,
    so the ratios hold), proxy-FID and class accuracy of `--samples_per_class` unguided
    samples per class (the CNN proxy of `benchmarks/udit.py`: NOT FID).
  * SSBA: DiT-T/2 (flow) with `attention=ssba:<--ssba_block>` trained `--fixed_steps`,
    beside the dense fixed DiT-T/2: average sparsity over its layers, time and quality;
    plus attention alone at 256 … 4096 tokens (`benchmarks/ssba.py`'s `scaling_rows`).
  * T-DVAE: `configs/autoencoder_small.py:data=digits` (the teacher, `--ae_steps`) and
    `configs/tiny_vae.py:data=digits` distilled from it (`--tiny_steps`):
    reconstruction PSNR / SSIM on the test digits and encode + decode GMACs
    (`effcomp.runs.reconstruction.compare`; goal ≤ 1/8 of the teacher's).
  * Flow-GRPO: `configs/flow_grpo_digits.py` fine-tunes a fixed model (`--grpo_from`: the
    2-block patch-4 one, the "lite" end) for `--grpo_steps` with the proxy classifier's
    probability of the asked class as the reward; class accuracy (and proxy-FID) of 40-step
    ODE samples before → after.

Paper expectations (ElasticDiT): one elastic model covers the trade-off and matches or beats
the fixed models of each size; SSBA keeps quality at high sparsity; T-DVAE reconstructs
close to the teacher at ≤ 1/8 of its compute; Flow-GRPO raises prompt alignment (GenEval
66.93 → 73.62).

  python benchmarks/elasticdit.py [--steps=800] [--fixed_steps=800] [--grpo_steps=120]
"""

import dataclasses
import os
import re
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
import ml_collections  # noqa: E402

from benchmarks import common, digits_common, ssba  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.metrics import fid, flops  # noqa: E402
from effcomp.nn import sparse_block_attention  # noqa: E402
from effcomp.quant.pack import median_times  # noqa: E402
from effcomp.runs import reconstruction  # noqa: E402
from effcomp.tasks import diffusion, flow_grpo  # noqa: E402
from effcomp.tasks.base import task_config  # noqa: E402

flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_elasticdit"),
                    "Where every run of the benchmark trains (from scratch).")
flags.DEFINE_integer("steps", 800, "Training steps of the elastic model (batch 64).")
flags.DEFINE_integer("fixed_steps", 800, "Training steps of each fixed model (batch 64).")
flags.DEFINE_integer("classifier_steps", 400, "Training steps of the proxy classifier.")
flags.DEFINE_integer("samples_per_class", 20, "Samples per class for the scores.")
flags.DEFINE_integer("flow_steps", 20, "Euler steps of every sampler.")
flags.DEFINE_integer("ssba_block", 4, "SSBA block side (tokens) of the SSBA DiT.")
flags.DEFINE_list("ssba_grids", ["16", "32", "64"], "Token grid sides of the attention-only "
                  "scaling table.")
flags.DEFINE_integer("ae_steps", 2000, "Training steps of the teacher autoencoder.")
flags.DEFINE_integer("tiny_steps", 6000, "Distillation steps of the T-DVAE.")
flags.DEFINE_integer("grpo_steps", 120, "Flow-GRPO steps.")
flags.DEFINE_string("grpo_from", "fixed_d2_p4", "The fixed model (its run name) Flow-GRPO "
                    "fine-tunes: by default the cheapest, whose class accuracy leaves room.")
FLAGS = flags.FLAGS

DIGITS = "configs/diffusion_digits.py"
QUIET = {"train.progress_bar": False}


@dataclasses.dataclass
class Generator:
  """One row: a flow model, its parameters and the config whose task picks the
  configuration it samples (`elastic_depth` / `elastic_patch`)."""
  name: str
  model: object
  params: object
  config: object
  train_min: float = 0.0

  def sampler(self):
    """jitted (rng, labels) → uint8 samples (Euler, --flow_steps, unguided)."""
    return jax.jit(lambda rng, labels: diffusion.sample_images(
        self.model, self.params, labels, rng, config=self.config, sampler="euler",
        steps=FLAGS.flow_steps))

  def gmacs(self) -> float:
    """Forward multiply-adds of one denoiser call on one sample, as run (billions)."""
    shape = (1, self.model.input_size, self.model.input_size, self.model.in_channels)
    labels = jnp.zeros((1,), jnp.int32)
    kwargs = diffusion.inference_configuration(self.model, self.config.task)
    return flops.jaxpr_macs(lambda x, t: self.model.apply(
        {"params": self.params}, x, t, labels, **kwargs), jnp.zeros(shape),
        jnp.zeros((1,))) / 1e9


def train(name: str, spec: str, steps: int, **overrides):
  """Trains `spec` afresh into runs_dir/name: (the opened run, minutes)."""
  workdir = os.path.join(FLAGS.runs_dir, name)
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load(spec, **{**QUIET, "train.eval_every": steps, **overrides})
  start = time.time()
  runs.train(config, workdir)
  return runs.open(workdir, config), (time.time() - start) / 60


def with_configuration(config, depth: int, patch: int) -> ml_collections.ConfigDict:
  """A copy of `config` whose task samples the (depth, patch) configuration."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.task.elastic_depth, config.task.elastic_patch = depth, patch
  return config


def elastic_and_fixed():
  """Generators: each configuration of the elastic model, then the fixed model of each."""
  run, minutes = train("elastic", f"{DIGITS}:model=ElasticDiT-T,objective=flow,"
                       f"steps={FLAGS.steps}", FLAGS.steps)
  model = run.model
  elastic = [Generator(f"elastic d={d} p={p}", model, run.params,
                       with_configuration(run.config, d, p), minutes)
             for d, p in model.configurations()]
  fixed = []
  for d, p in model.configurations():
    fixed_run, minutes = train(f"fixed_d{d}_p{p}", f"{DIGITS}:model=DiT-T/{p},objective=flow,"
                               f"steps={FLAGS.fixed_steps}", FLAGS.fixed_steps,
                               **{"model.depth": d})
    fixed.append(Generator(f"fixed d={d} p={p}", fixed_run.model, fixed_run.params,
                           fixed_run.config, minutes))
  ssba_run, minutes = train("ssba", f"{DIGITS}:model=DiT-T/2,objective=flow,attention=ssba:"
                            f"{FLAGS.ssba_block},steps={FLAGS.fixed_steps}", FLAGS.fixed_steps)
  ssba_gen = Generator(f"fixed d=6 p=2, SSBA {FLAGS.ssba_block}×{FLAGS.ssba_block}",
                       ssba_run.model, ssba_run.params, ssba_run.config, minutes)
  return elastic, fixed, ssba_gen


def ssba_sparsity(model) -> float:
  """Mean sparsity over the layers of an SSBA DiT (shift 0 and b/2 alternating)."""
  grid = model.input_size // model.patch_size
  block = sparse_block_attention.parse_attention(model.attention)
  return float(np.mean([sparse_block_attention.sparsity(
      grid, grid, block, sparse_block_attention.layer_shift(block, i))
      for i in range(model.depth)]))


def score_generators(generators, real_stats, features_fn, logits_fn, grids):
  """A row per generator: GMACs, CPU s / sample (interleaved), proxy-FID, class accuracy."""
  labels = jnp.repeat(jnp.arange(10), FLAGS.samples_per_class)
  samplers = [g.sampler() for g in generators]
  batch = jnp.arange(100) % 10
  times = median_times([(fn, (jax.random.key(1), batch)) for fn in samplers], repeats=3)
  rows = []
  for g, fn, seconds in zip(generators, samplers, times):
    samples = np.concatenate([np.asarray(fn(jax.random.fold_in(jax.random.key(0), i),
                                            labels[i:i + 100]))
                              for i in range(0, len(labels), 100)])
    row = {"model": g.name, "GMACs / call": g.gmacs(), "CPU s / sample": seconds / 100,
           **digits_common.scores(samples, np.asarray(labels), real_stats, features_fn,
                                  logits_fn), "train min": g.train_min}
    grids[g.name] = (samples, np.asarray(labels))
    rows.append(row)
    print(row, flush=True)
  return rows


def tiny_vae_rows():
  """The teacher autoencoder and the T-DVAE distilled from it: reconstruction and GMACs."""
  teacher, ae_min = train("ae", f"configs/autoencoder_small.py:data=digits,steps={FLAGS.ae_steps}",
                          FLAGS.ae_steps)
  student, tiny_min = train("tiny_vae", f"configs/tiny_vae.py:data=digits,teacher="
                            f"{teacher.workdir},steps={FLAGS.tiny_steps}", FLAGS.tiny_steps)
  rows = reconstruction.compare(teacher.workdir, student.workdir)
  names = ("teacher: KL autoencoder (autoencoder_small)", "T-DVAE (tiny_vae), distilled")
  return [{"model": name, "params (M)": r["params"] / 1e6, "GMACs (encode + decode)": r["gmacs"],
           "GMACs vs teacher": r["macs_ratio"], "PSNR": r["psnr"], "PSNR vs teacher": r["psnr_gap"],
           "SSIM": r["ssim"], "train min": minutes}
          for name, r, minutes in zip(names, rows, (ae_min, tiny_min))]


def grpo_rows(classifier_dir, real_stats, features_fn, logits_fn, grids):
  """Flow-GRPO from the --grpo_from fixed model: class accuracy of ODE samples before →
  after."""
  teacher = runs.open(os.path.join(FLAGS.runs_dir, FLAGS.grpo_from))
  tuned, minutes = train("flow_grpo", f"configs/flow_grpo_digits.py:teacher={teacher.workdir},"
                         f"reward=classifier:{classifier_dir},steps={FLAGS.grpo_steps}",
                         FLAGS.grpo_steps)
  labels = jnp.repeat(jnp.arange(10), FLAGS.samples_per_class)
  steps = task_config(tuned.config, flow_grpo.task_defaults()).eval_steps
  rows = []
  for name, model, params, config, train_min in (
      (f"before: {FLAGS.grpo_from}", teacher.model, teacher.params, teacher.config, 0.0),
      (f"after: + Flow-GRPO, {FLAGS.grpo_steps} steps", tuned.model, tuned.params, tuned.config,
       minutes)):
    samples = np.asarray(diffusion.to_uint8(flow_grpo.generate(
        model, params, labels, jax.random.key(0), config, steps=steps)))
    rows.append({"model": name, "ODE steps": steps, **digits_common.scores(
        samples, np.asarray(labels), real_stats, features_fn, logits_fn), "train min": train_min})
    grids[name] = (samples, np.asarray(labels))
  return rows


def curve_png(elastic_rows, fixed_rows, path):
  """Proxy-FID and class accuracy against CPU seconds per sample, elastic vs fixed."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for rows, style, label in ((elastic_rows, "o-", "ElasticDiT (one set of weights)"),
                             (fixed_rows, "s--", "fixed DiTs (one per size)")):
    ms = [1000 * r["CPU s / sample"] for r in rows]
    for ax, key in zip(axes, ("proxy-FID", "class accuracy")):
      order = np.argsort(ms)
      ax.plot(np.asarray(ms)[order], np.asarray([r[key] for r in rows])[order], style,
              label=label)
      for x, r in zip(ms, rows):
        ax.annotate(r["model"].split(" ", 1)[1], (x, r[key]), fontsize=7)
  for ax, key in zip(axes, ("proxy-FID (lower is better)", "class accuracy")):
    ax.set_xlabel(f"CPU ms per sample ({FLAGS.flow_steps} Euler steps)")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle("ElasticDiT on the digits: latency vs fidelity")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _slug(name):
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


ELASTIC_COLUMNS = ["model", "GMACs / call", "GMACs vs largest", "CPU s / sample",
                   "speed-up vs largest", "proxy-FID", "class accuracy", "train min", "samples"]


def main(argv):
  del argv
  start = time.time()
  classifier_dir = os.path.join(FLAGS.runs_dir, "classifier")
  accuracy, features_fn, logits_fn = digits_common.train_classifier(classifier_dir,
                                                                    FLAGS.classifier_steps)
  real_stats = fid.feature_statistics(features_fn(digits_common.digits("train")[0]))
  test_images, test_labels = digits_common.digits("test")
  reference = {"model": "real test images (reference)", **digits_common.scores(
      test_images, test_labels, real_stats, features_fn, logits_fn)}
  grids = {}
  elastic, fixed, ssba_gen = elastic_and_fixed()
  rows = score_generators(elastic + fixed + [ssba_gen], real_stats, features_fn, logits_fn,
                          grids)
  for row in rows:
    row["GMACs vs largest"] = row["GMACs / call"] / rows[0]["GMACs / call"]
    row["speed-up vs largest"] = rows[0]["CPU s / sample"] / row["CPU s / sample"]
    row["samples"] = f"[grid](elasticdit_samples_{_slug(row['model'])}.png)"
  n = len(elastic)
  elastic_rows, fixed_rows, ssba_row = rows[:n], rows[n:2 * n], rows[-1]
  for e, f in zip(elastic_rows, fixed_rows):
    e["proxy-FID vs fixed"] = e["proxy-FID"] - f["proxy-FID"]
    e["class accuracy vs fixed"] = e["class accuracy"] - f["class accuracy"]
  dense = fixed_rows[0]
  ssba_rows = [
      {"model": dense["model"] + ", dense attention", "avg sparsity": 0.0, **{
          k: dense[k] for k in ("GMACs / call", "CPU s / sample", "proxy-FID",
                                "class accuracy")}},
      {"model": ssba_row["model"], "avg sparsity": ssba_sparsity(ssba_gen.model), **{
          k: ssba_row[k] for k in ("GMACs / call", "CPU s / sample", "proxy-FID",
                                   "class accuracy")},
       "speed-up vs dense": dense["CPU s / sample"] / ssba_row["CPU s / sample"]}]
  scaling = ssba.pair_rows(ssba.scaling_rows(grids=[int(g) for g in FLAGS.ssba_grids],
                                             blocks=(8, 16), repeats=5))
  vae_rows = tiny_vae_rows()
  grpo = grpo_rows(classifier_dir, real_stats, features_fn, logits_fn, grids)
  notes = (
      "Embedded digits upsampled to 16×16, pixel space, class-conditional rectified flow "
      f"(`configs/diffusion_digits.py`, batch 64, AdamW 1e-3, EMA 0.999). ElasticDiT-T "
      f"(`effcomp/models/dit/elastic.py`: DiT-T/2's width, depths 6 / 4 / 2, patch 2 / 4, "
      f"one parameter set, coarse tokens PI-resized at the fine grid's area-resized positions"
      f"{'' if elastic[0].model.merge_positions else ' (off: their own grid positions)'}, "
      f"sandwich rule: the largest, the smallest and one random "
      f"configuration a step, in-place distillation from the largest) trained {FLAGS.steps} "
      f"steps; each fixed DiT of the same depth and patch trained {FLAGS.fixed_steps} "
      f"steps from scratch. Samples: {FLAGS.samples_per_class} per class, Euler "
      f"{FLAGS.flow_steps} steps, no guidance, EMA weights. GMACs / call: one denoiser "
      "forward on one sample, as run (`flops.jaxpr_macs`). CPU s / sample: a batch of 100 "
      "samples, jitted, every row timed interleaved in one loop (medians of 3), divided by "
      f"100. Scores from a CNN trained on the same 16×16 digits ({FLAGS.classifier_steps} "
      f"steps, test accuracy {accuracy:.3f}): proxy-FID (its penultimate features, samples vs "
      "the training images: NOT FID, a ranking among these rows) and class accuracy (how "
      f"often it reads the asked class). Real test images: proxy-FID "
      f"{reference['proxy-FID']:.3f}, class accuracy {reference['class accuracy']:.3f}. "
      "Curve: [elasticdit_curve.png](elasticdit_curve.png). Wall time of the whole "
      f"benchmark: {(time.time() - start) / 60:.1f} min.")
  tables = [
      ("SSBA vs dense attention in DiT-T/2",
       f"The fixed dense DiT-T/2 beside the same model with Shift Sparse Block Attention "
       f"({FLAGS.ssba_block}×{FLAGS.ssba_block}-token blocks of its 8×8 token grid, shift 0 / "
       f"{FLAGS.ssba_block // 2} alternating), trained alike; timings from the main table's "
       "loop. At 64 tokens attention is a small share of the cost; the table after it shows "
       "attention alone as the token count grows.", ssba_rows,
       ["model", "avg sparsity", "GMACs / call", "CPU s / sample", "speed-up vs dense",
        "proxy-FID", "class accuracy"]),
      ("SSBA vs dense attention alone, 256 to 4096 tokens",
       "`benchmarks/ssba.py`'s `scaling_rows` (hidden 256, 4 heads, batch 1): a shift-0 and a "
       "shift-b/2 layer averaged, each timed interleaved with dense attention on the same "
       "input.", scaling, ssba.PAIR_COLUMNS),
      ("T-DVAE vs its teacher autoencoder",
       f"`configs/autoencoder_small.py:data=digits` ({FLAGS.ae_steps} steps) and "
       f"`configs/tiny_vae.py:data=digits` distilled from it ({FLAGS.tiny_steps} steps, "
       "DWT-domain losses); reconstruction of the test digits from the posterior mean, "
       "PSNR / SSIM on the 8-bit images; GMACs of encode + decode of one 16×16 digit "
       "(`effcomp.runs.reconstruction`). Goal: ≤ 1/8 of the teacher's GMACs.", vae_rows,
       ["model", "params (M)", "GMACs (encode + decode)", "GMACs vs teacher", "PSNR",
        "PSNR vs teacher", "SSIM", "train min"]),
      ("Flow-GRPO",
       f"`configs/flow_grpo_digits.py` from the fixed `{FLAGS.grpo_from}` model (flow) for "
       f"{FLAGS.grpo_steps} steps, reward: the proxy classifier's probability of the asked "
       f"class; scores of {FLAGS.samples_per_class} ODE samples per class (the task's "
       "evaluation steps, same noise) before and after.", grpo,
       ["model", "ODE steps", "proxy-FID", "class accuracy", "train min"]),
  ]
  common.write_results("elasticdit", [reference] + rows,
                       ELASTIC_COLUMNS[:6] + ["proxy-FID vs fixed", "class accuracy vs fixed"]
                       + ELASTIC_COLUMNS[6:], title="ElasticDiT on the embedded digits (CPU "
                       "scale)", notes=notes, extra={"classifier_accuracy": accuracy},
                       tables=tables)
  curve_png(elastic_rows, fixed_rows, os.path.join(ROOT, "docs", "results",
                                                   "elasticdit_curve.png"))
  for name, (samples, labels) in grids.items():
    digits_common.save_grid(samples, labels, os.path.join(
        ROOT, "docs", "results", f"elasticdit_samples_{_slug(name)}.png"))


if __name__ == "__main__":
  app.run(main)
