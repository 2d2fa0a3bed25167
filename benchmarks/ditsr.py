"""Diffusion SR at CPU scale: DiT-SR vs its adaLN ablation vs ResShift's U-Net, ×4 with
Real-ESRGAN degradations (→ benchmarks/results/ditsr.json, docs/results/ditsr.md, and a
before/after grid docs/results/ditsr_samples.png).

Every denoiser of `configs/ditsr_photos.py` (CPU sizes) trains from seed 0 for the same
budget (`--steps` of `--batch` `--patch`² HR patches, Real-ESRGAN LR, the residual-shifting
process with DiT-SR's 15 steps), then samples the `--eval_patch`² centre crops of the
three test photos (degraded with fixed seeds, as the task's evaluation) with the full
15-step chain from a fixed noise: PSNR / SSIM on Y (4 border pixels cropped), the
denoiser's x_0 error on the same crops at every timestep (`test_loss`) and LPIPS
(AlexNet) when `--lpips_weights` (and `--lpips_backbone`) name local files; parameters;
multiply-adds of one denoiser call at a 256² output (and ×15 for a whole sample); CPU
seconds per sampled 256² output (jitted, median of interleaved runs, so the ratios hold).
Defaults fit 45 min on 2 cores: 1400 steps of 8 × 32² patches (DiT-SR ~0.54 s a step, about
19 s per 256² sample).
Bicubic upsampling of the degraded LR is the floor row.
Expected (DiT-SR, Tables 1 and 4): DiT-SR ahead of the U-Net at similar cost, and AdaFM
ahead of adaLN.

  python benchmarks/ditsr.py [--steps=…] [--lpips_weights=alex.npz]
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
from effcomp.diffusion import resshift  # noqa: E402
from effcomp.metrics import flops  # noqa: E402
from effcomp.metrics import image as image_metrics  # noqa: E402
from effcomp.metrics import lpips as lpips_lib  # noqa: E402
from effcomp.quant import pack  # noqa: E402
from effcomp.tasks import diffusion_sr, sr  # noqa: E402

flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_ditsr"),
                    "Where the runs train (each from scratch).")
flags.DEFINE_integer("steps", 1400, "Training steps of every model.")
flags.DEFINE_integer("batch", 8, "HR patches per step.")
flags.DEFINE_integer("patch", 32, "HR side of the training patches (multiple of 32).")
flags.DEFINE_list("models", ["dit_sr", "dit_sr_adaln", "resshift_unet"],
                  "configs/ditsr_photos.py models.")
flags.DEFINE_integer("eval_patch", 256, "HR side of the test crops.")
flags.DEFINE_string("lpips_weights", None, "LPIPS weights (.npz from convert_lpips, or the "
                    "official lin .pth with --lpips_backbone); absent: no LPIPS column.")
flags.DEFINE_string("lpips_backbone", None, "torchvision AlexNet .pth for a lin-only .pth.")
FLAGS = flags.FLAGS

SAMPLES_PNG = os.path.join("docs", "results", "ditsr_samples.png")
LABELS = {"dit_sr": "DiT-SR (AdaFM)", "dit_sr_adaln": "DiT-SR (adaLN)",
          "resshift_unet": "ResShift U-Net"}


def train(model):
  """Trains one run from scratch; returns (workdir, seconds)."""
  workdir = os.path.join(FLAGS.runs_dir, model)
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load(
      f"configs/ditsr_photos.py:model={model},steps={FLAGS.steps},batch={FLAGS.batch},"
      f"patch={FLAGS.patch}", **{"train.progress_bar": False, "train.eval_every": FLAGS.steps})
  start = time.time()
  runs.train(config, workdir)
  return workdir, time.time() - start


def test_pairs():
  """The degraded centre crops of the test photos, as the task evaluates them."""
  c = diffusion_sr.task_defaults()
  c.eval_patch = FLAGS.eval_patch
  source = sources.get_source("photos", "test")
  return [diffusion_sr.eval_pair(source[i]["image"], c) for i in range(len(source))]


def scores(outputs, pairs, lpips):
  """Mean PSNR / SSIM (Y, 4-pixel border) and LPIPS of uint8 outputs against the HR."""
  row = {"PSNR": float(np.mean([image_metrics.psnr(o, p["hr"], 4)
                                for o, p in zip(outputs, pairs)])),
         "SSIM": float(np.mean([image_metrics.ssim(o, p["hr"], 4)
                                for o, p in zip(outputs, pairs)]))}
  if lpips is not None:
    to = lambda a: np.asarray(a, np.float32)[None] / 127.5 - 1.0
    row["LPIPS"] = float(np.mean([float(lpips(to(o), to(p["hr"]))[0])
                                  for o, p in zip(outputs, pairs)]))
  return row


def test_loss(teacher, pairs):
  """The denoiser's x_0 error on the test crops: MSE (model space, [−1, 1]) of its x_0
  prediction from q_sample(x_0, y, t, ε), ε fixed per t, averaged over all timesteps —
  the training objective on held-out data, a lower-variance measure than one sample."""
  errors = []
  for p in pairs:
    x0, y = diffusion_sr.model_pair(jnp.asarray(p["hr"])[None], jnp.asarray(p["lr"])[None],
                                    teacher.scale)
    for t in range(teacher.schedule.num_timesteps):
      noise = jax.random.normal(jax.random.key(t), x0.shape)
      tt = jnp.full((1,), t, jnp.int32)
      pred = teacher.predict_x0(resshift.q_sample(teacher.schedule, x0, y, tt, noise), y, tt)
      errors.append(float(jnp.mean((pred - x0) ** 2)))
  return float(np.mean(errors))


def main(argv):
  del argv
  lpips = None
  if FLAGS.lpips_weights:
    lpips = lpips_lib.lpips_fn(lpips_lib.load_lpips_weights(FLAGS.lpips_weights,
                                                            FLAGS.lpips_backbone))
  pairs = test_pairs()
  bicubic = [sr.bicubic_upscale(p["lr"], 4) for p in pairs]
  rows = [{"model": "bicubic (degraded LR)", **scores(bicubic, pairs, lpips)}]
  teachers, outputs = [], {}
  for name in FLAGS.models:
    workdir, seconds = train(name)
    run = runs.open(workdir)
    teacher = diffusion_sr.make_teacher(run.model, run.params, run.config)
    key = jax.random.key(0)
    outputs[name] = [teacher.upscale(p["lr"], key) for p in pairs]
    x = jnp.zeros((1, 256, 256, 3))
    t = jnp.zeros((1,), jnp.int32)
    macs = flops.jaxpr_macs(lambda a: teacher.model.apply({"params": teacher.params}, a, t, a), x)
    steps = teacher.schedule.num_timesteps
    rows.append({"model": LABELS.get(name, name),
                 "params (K)": sum(int(np.prod(p.shape))
                                   for p in jax.tree.leaves(teacher.params)) / 1e3,
                 "GMACs / step (256²)": macs / 1e9, f"GMACs / image ({steps} steps)":
                 steps * macs / 1e9, **scores(outputs[name], pairs, lpips),
                 "test x0 MSE": test_loss(teacher, pairs), "train s": seconds})
    teachers.append(teacher)
    print(rows[-1], flush=True)
  # Sampling time of one 256² output (64² LR), all models interleaved.
  y = jnp.zeros((1, 256, 256, 3))
  fns = [(tr.sample, (y, jax.random.key(0))) for tr in teachers]
  times = pack.median_times(fns, repeats=3)
  for row, seconds in zip(rows[1:], times):
    row["CPU s / 256² image"] = seconds
    row[f"time vs {LABELS.get(FLAGS.models[0])}"] = seconds / times[0]
  lpips_note = ("LPIPS: AlexNet with the official v0.1 lin weights." if lpips is not None else
                "LPIPS: not measured — its weights (the official lin layers and torchvision's "
                "AlexNet) cannot be downloaded on this machine; pass --lpips_weights.")
  notes = (f"×4, embedded photos (train 7 / test 3), Real-ESRGAN second-order degradation "
           f"(train: random; test: {FLAGS.eval_patch}² centre crops degraded with fixed seeds). "
           f"Every denoiser: `configs/ditsr_photos.py` CPU size, {FLAGS.steps} steps × "
           f"{FLAGS.batch} HR patches of {FLAGS.patch}², seed 0, residual-shifting process of "
           "DiT-SR (15 steps, κ = 2, x_0 prediction, pixel space), EMA weights; samples: the whole "
           "15-step chain from a fixed noise. PSNR / SSIM: Y channel, 4 border pixels cropped. "
           "Test x0 MSE: the training objective on the test crops (x_0 predicted from "
           "q_sample at each of the 15 timesteps with a fixed ε, model space [−1, 1], mean). "
           f"{lpips_note} GMACs: one denoiser call at a 256² output (AdaFM's "
           "8×8 DFTs counted as the complex matrix products run here, one MAC each); "
           "CPU s: one whole sample, jitted, median of 3 interleaved runs on this machine "
           f"(compare the ratios). Grid: [{os.path.basename(SAMPLES_PNG)}]"
           f"({os.path.basename(SAMPLES_PNG)}) — per test crop: bicubic of the degraded LR, "
           + ", ".join(LABELS.get(n, n) for n in FLAGS.models) + ", HR.")
  columns = ["model", "params (K)", "GMACs / step (256²)", "GMACs / image (15 steps)", "PSNR",
             "SSIM", *(["LPIPS"] if lpips is not None else []), "test x0 MSE",
             "CPU s / 256² image",
             f"time vs {LABELS.get(FLAGS.models[0])}", "train s"]
  common.write_results("ditsr", rows, columns,
                       title="Diffusion SR (×4, real-world degradations): DiT-SR vs adaLN vs "
                             "ResShift's U-Net", notes=notes)
  grid = np.concatenate([np.concatenate([bicubic[i], *(outputs[n][i] for n in FLAGS.models),
                                         pairs[i]["hr"]], axis=1) for i in range(len(pairs))])
  Image.fromarray(grid).save(os.path.join(ROOT, SAMPLES_PNG))


if __name__ == "__main__":
  app.run(main)
