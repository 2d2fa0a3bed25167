"""Diffusion SR at CPU scale: DiT-SR vs its adaLN ablation vs ResShift's U-Net, ×4, on two
tracks (→ benchmarks/results/ditsr.json, docs/results/ditsr.md, and a before/after grid
per track docs/results/ditsr_samples_<track>.png).

  * clean (`--track=bicubic`): LR = MATLAB bicubic ×4 of the HR, the classic SR setting;
    the goal (issue 21) is DiT-SR ≥ bicubic + 1 dB PSNR-Y on the test crops within 45
    minutes of training, visibly sharper than bicubic;
  * real-world (`--track=realesrgan`): Real-ESRGAN's second-order degradation, the
    papers' setting.

Each invocation runs one track and rewrites that track's table, keeping the other
track's table and its own provenance (command, commit, date) from the JSON record.
Every denoiser of `configs/ditsr_photos.py` (CPU sizes) trains from seed 0 for the same
budget (`--steps` of `--batch` `--patch`² HR patches cropped at random from the seven
training photos with flips and rotations, the residual-shifting process with DiT-SR's 15
steps), then samples the `--eval_patch`² centre crops of the three test photos
(degraded with fixed seeds, as the task's evaluation) with the full 15-step chain from a
fixed noise: PSNR / SSIM on Y (4 border pixels cropped); sharpness = mean Y gradient
magnitude over the HR's (`effcomp.metrics.image.sharpness_ratio`: 1 is as sharp as the
HR, bicubic sits far below), a measure that needs no downloaded weights; the denoiser's
x_0 error on the same crops at every timestep (`test_loss`); LPIPS (AlexNet) when
`--lpips_weights` (and `--lpips_backbone`) name local files; parameters; multiply-adds of
one denoiser call at a 256² output (and ×15 for a whole sample); CPU seconds per sampled
256² output (jitted, median of interleaved runs, so the ratios hold). The trained runs
stay in `--runs_dir/<track>/<model>` (`runs.open` and `diffusion_sr.make_teacher` open
them; the one-step distillation starts from them). Bicubic upsampling of the LR is the floor row.
Expected (DiT-SR, Tables 1 and 4): DiT-SR ahead of the U-Net at similar cost, and AdaFM
ahead of adaLN.

  python benchmarks/ditsr.py --track=bicubic [--steps=…] [--models=dit_sr]
  python benchmarks/ditsr.py --track=realesrgan [--lpips_weights=alex.npz]
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import common, sr_common  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.diffusion import resshift  # noqa: E402
from effcomp.metrics import flops  # noqa: E402
from effcomp.quant import pack  # noqa: E402
from effcomp.tasks import diffusion_sr, sr  # noqa: E402


flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_ditsr"),
                    "Where the runs train (each from scratch).")
flags.DEFINE_enum("track", "realesrgan", list(sr_common.TRACKS), "Degradation of the LR: 'bicubic' "
                  "(the clean track) or 'realesrgan' (the real-world track).")
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
LABELS = {"dit_sr": "DiT-SR (AdaFM)", "dit_sr_adaln": "DiT-SR (adaLN)",
          "resshift_unet": "ResShift U-Net"}


def train(model):
  """Trains one run from scratch; returns (workdir, seconds)."""
  workdir = os.path.join(FLAGS.runs_dir, FLAGS.track, model)
  return workdir, sr_common.train_fresh(
      f"configs/ditsr_photos.py:model={model},steps={FLAGS.steps},batch={FLAGS.batch},"
      f"patch={FLAGS.patch},degradation={FLAGS.track}", workdir, FLAGS.steps)


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


def samples_png(track):
  return os.path.join("docs", "results", f"ditsr_samples_{track}.png")


def main(argv):
  del argv
  lpips = sr_common.lpips_or_none(FLAGS.lpips_weights, FLAGS.lpips_backbone)
  start = time.time()
  pairs = sr_common.test_pairs(FLAGS.track, FLAGS.eval_patch)
  bicubic = [sr.bicubic_upscale(p["lr"], 4) for p in pairs]
  rows = [{"model": "bicubic (of the LR)", **sr_common.scores(bicubic, pairs, lpips)}]
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
    rows.append({"model": LABELS.get(name, name), "workdir": os.path.relpath(workdir, ROOT),
                 "params (K)": sum(int(np.prod(p.shape))
                                   for p in jax.tree.leaves(teacher.params)) / 1e3,
                 "GMACs / step (256²)": macs / 1e9, f"GMACs / image ({steps} steps)":
                 steps * macs / 1e9, **sr_common.scores(outputs[name], pairs, lpips),
                 "test x0 MSE": test_loss(teacher, pairs), "train min": seconds / 60})
    rows[-1]["PSNR vs bicubic"] = rows[-1]["PSNR"] - rows[0]["PSNR"]
    teachers.append(teacher)
    print(rows[-1], flush=True)
  # Sampling time of one 256² output (64² LR), all models interleaved.
  y = jnp.zeros((1, 256, 256, 3))
  fns = [(tr.sample, (y, jax.random.key(0))) for tr in teachers]
  times = pack.median_times(fns, repeats=3)
  first = LABELS.get(FLAGS.models[0], FLAGS.models[0])
  for row, seconds in zip(rows[1:], times):
    row["CPU s / 256² image"] = seconds
    row["time vs first"] = seconds / times[0]
  lpips_note = ("LPIPS: AlexNet with the official v0.1 lin weights." if lpips is not None else
                sr_common.LPIPS_MISSING)
  png = samples_png(FLAGS.track)
  degradation = ("MATLAB bicubic ×4" if FLAGS.track == "bicubic" else
                 "Real-ESRGAN second-order degradation")
  record = common.provenance()
  notes = (f"Measured by `{record['command']}` at commit `{record['commit']}` on "
           f"{record['date']}. ×4, embedded photos (train 7 / test 3), LR: {degradation} "
           f"(train: random; test: {FLAGS.eval_patch}² centre crops, degraded with fixed "
           f"seeds). Every denoiser: `configs/ditsr_photos.py` CPU size, {FLAGS.steps} steps "
           f"× {FLAGS.batch} random HR patches of {FLAGS.patch}² (flips, rotations), seed 0, "
           "residual-shifting process of DiT-SR (15 steps, κ = 2, x_0 prediction, pixel "
           "space), EMA weights; samples: the whole 15-step chain from a fixed noise. PSNR / "
           "SSIM: Y channel, 4 border pixels cropped; `PSNR vs bicubic` in dB. Sharpness vs "
           "HR: mean Y gradient magnitude of the output over the HR's (1 = as sharp as the "
           "HR). Test x0 MSE: the training objective on the test crops (x_0 predicted from "
           "q_sample at each of the 15 timesteps with a fixed ε, model space [−1, 1], mean). "
           f"{lpips_note} GMACs: one denoiser call at a 256² output (AdaFM's "
           "8×8 DFTs counted as the complex matrix products run here, one MAC each); "
           f"CPU s: one whole sample, jitted, median of 3 interleaved runs on this machine "
           f"(`time vs first`: over {first}). Grid: [{os.path.basename(png)}]"
           f"({os.path.basename(png)}) — per test crop: bicubic of the LR, "
           + ", ".join(LABELS.get(n, n) for n in FLAGS.models) + ", HR. Wall time "
           f"{(time.time() - start) / 60:.1f} min.")
  columns = ["model", "params (K)", "GMACs / step (256²)", "GMACs / image (15 steps)", "PSNR",
             "PSNR vs bicubic", "SSIM", "sharpness vs HR", *(["LPIPS"] if lpips else []),
             "test x0 MSE", "CPU s / 256² image", "time vs first", "train min", "workdir"]
  sr_common.write_track("ditsr", FLAGS.track,
                        "Diffusion SR (×4): DiT-SR vs adaLN vs ResShift's U-Net", record, notes,
                        rows, columns)
  grid = np.concatenate([np.concatenate([bicubic[i], *(outputs[n][i] for n in FLAGS.models),
                                         pairs[i]["hr"]], axis=1) for i in range(len(pairs))])
  Image.fromarray(grid).save(os.path.join(ROOT, png))


if __name__ == "__main__":
  app.run(main)
