"""One-step diffusion SR at CPU scale: students distilled from `benchmarks/ditsr.py`'s saved
DiT-SR teacher vs the teacher's 15 steps (→ benchmarks/results/onestep_sr.json,
docs/results/onestep_sr.md, and a before/after grid docs/results/onestep_sr_samples_<track>.png).

Each method of `configs/onestep_sr.py` trains a student from the teacher's weights for
the same budget (`--steps` of `--batch` `--patch`² HR patches of the seven training photos,
the teacher's degradation), then upscales the `--eval_patch`² centre crops of the three
test photos (degraded with fixed seeds, as the tasks evaluate) in one call from a fixed
noise. Rows: bicubic (the floor), the teacher's whole 15-step chain from a fixed noise,
and each student: PSNR / SSIM on Y (4 border pixels cropped), sharpness = mean Y gradient
magnitude over the HR's (`effcomp.metrics.image.sharpness_ratio`), LPIPS (AlexNet) when
`--lpips_weights` names local files, multiply-adds of a 256² output, CPU seconds per 256²
output (jitted, medians of interleaved runs, so the ratios hold) and the speed-up over the
teacher (goal ≥ 10×). Paper expectation (SinSR, TAD-SR): the one-step students match or
beat their teacher. Each invocation rewrites its track's table and keeps the other's.

  python benchmarks/onestep_sr.py [--teacher=workdirs/bench_ditsr/bicubic/dit_sr] \\
      [--methods=regress,hr,tadsr] [--steps=300]
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
from configs import onestep_sr as onestep_config  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.metrics import flops  # noqa: E402
from effcomp.quant import pack  # noqa: E402
from effcomp.tasks import diffusion_sr, onestep_sr, sr  # noqa: E402

flags.DEFINE_string("teacher", onestep_config.DEFAULT_TEACHER,
                    "The diffusion_sr teacher's workdir (benchmarks/ditsr.py's runs).")
flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_onestep"),
                    "Where the students train (each from its teacher's weights).")
flags.DEFINE_list("methods", list(onestep_config.METHODS), "configs/onestep_sr.py methods.")
flags.DEFINE_integer("steps", 300, "Training steps of every student.")
flags.DEFINE_integer("batch", 8, "HR patches per step.")
flags.DEFINE_integer("patch", 32, "HR side of the training patches.")
flags.DEFINE_float("lr", 5e-5, "AdamW learning rate (TAD-SR's and SinSR's).")
flags.DEFINE_integer("eval_patch", 256, "HR side of the test crops.")
flags.DEFINE_string("lpips_weights", None, "LPIPS weights (see benchmarks/ditsr.py).")
flags.DEFINE_string("lpips_backbone", None, "torchvision AlexNet .pth for a lin-only .pth.")
FLAGS = flags.FLAGS
LABELS = {"regress": "one-step: regression to the teacher (SinSR-style)",
          "hr": "one-step: regression to HR", "tadsr": "one-step: TAD-SR"}


def train(method, track):
  """Trains one student from its teacher; returns (workdir, seconds)."""
  workdir = os.path.join(FLAGS.runs_dir, track, method)
  return workdir, sr_common.train_fresh(
      f"configs/onestep_sr.py:method={method},teacher={FLAGS.teacher},steps={FLAGS.steps},"
      f"batch={FLAGS.batch},patch={FLAGS.patch},lr={FLAGS.lr}", workdir, FLAGS.steps)


def samples_png(track):
  return os.path.join("docs", "results", f"onestep_sr_samples_{track}.png")


def main(argv):
  del argv
  start = time.time()
  master = runs.open(FLAGS.teacher)
  track = master.config.task.degradation
  lpips = sr_common.lpips_or_none(FLAGS.lpips_weights, FLAGS.lpips_backbone)
  pairs = sr_common.test_pairs(track, FLAGS.eval_patch)
  key = jax.random.key(0)
  teacher = diffusion_sr.make_teacher(master.model, master.params, master.config)
  x, t = jnp.zeros((1, 256, 256, 3)), jnp.zeros((1,), jnp.int32)
  macs = flops.jaxpr_macs(lambda a: master.model.apply({"params": master.params}, a, t, a), x)
  steps = teacher.schedule.num_timesteps
  bicubic = [sr.bicubic_upscale(p["lr"], 4) for p in pairs]
  outputs = {"teacher": [teacher.upscale(p["lr"], key) for p in pairs]}
  rows = [{"model": "bicubic (of the LR)", **sr_common.scores(bicubic, pairs, lpips)},
          {"model": f"teacher: DiT-SR, {steps} steps", "calls": steps,
           "GMACs / image (256²)": steps * macs / 1e9,
           **sr_common.scores(outputs["teacher"], pairs, lpips),
           "workdir": os.path.relpath(FLAGS.teacher, ROOT)}]
  samplers = [teacher.sample]
  for method in FLAGS.methods:
    workdir, seconds = train(method, track)
    run = runs.open(workdir)
    student = onestep_sr.make_student(run.model, run.params, run.config)
    outputs[method] = [student.upscale(p["lr"], key) for p in pairs]
    rows.append({"model": LABELS.get(method, method), "calls": 1, "GMACs / image (256²)":
                 macs / 1e9, **sr_common.scores(outputs[method], pairs, lpips),
                 "train min": seconds / 60, "workdir": os.path.relpath(workdir, ROOT)})
    samplers.append(student)
    print(rows[-1], flush=True)
  for row in rows[1:]:
    row["PSNR vs teacher"] = row["PSNR"] - rows[1]["PSNR"]
  y = jnp.zeros((1, 256, 256, 3))
  times = pack.median_times([(fn, (y, key)) for fn in samplers], repeats=3)
  for row, seconds in zip(rows[1:], times):
    row["CPU s / 256² image"] = seconds
    row["speed-up vs teacher"] = times[0] / seconds
  png = samples_png(track)
  record = common.provenance()
  config = master.config
  notes = (
      f"Measured by `{record['command']}` at commit `{record['commit']}` on {record['date']}. "
      f"×4, embedded photos (train 7 / test 3), LR: {sr_common.TRACKS[track]} (test: "
      f"{FLAGS.eval_patch}² centre crops, degraded with fixed seeds). Teacher: the DiT-SR "
      f"run in `{os.path.relpath(FLAGS.teacher, ROOT)}` ({config.train.steps} steps of "
      "`benchmarks/ditsr.py`, EMA weights), sampled by its whole chain from a fixed noise. "
      f"Students (`configs/onestep_sr.py`): the teacher's network started from its weights, "
      f"{FLAGS.steps} steps × {FLAGS.batch} HR patches of {FLAGS.patch}², AdamW lr "
      f"{FLAGS.lr}, EMA, one call at t = T − 1 from a fixed noise. PSNR / SSIM: Y channel, 4 "
      "border pixels cropped. Sharpness vs HR: mean Y gradient magnitude over the HR's. "
      f"{sr_common.LPIPS_MISSING if lpips is None else 'LPIPS: AlexNet, official lin weights.'}"
      " GMACs: denoiser calls × one call at a 256² output. CPU s: one 256² output, jitted, "
      "median of 3 interleaved runs (speed-up: the teacher's over each row's). Grid: "
      f"[{os.path.basename(png)}]({os.path.basename(png)}) — per test crop: bicubic, the "
      f"teacher, {', '.join(LABELS.get(m, m) for m in FLAGS.methods)}, HR. Wall time "
      f"{(time.time() - start) / 60:.1f} min.")
  columns = ["model", "calls", "GMACs / image (256²)", "PSNR", "PSNR vs teacher", "SSIM",
             "sharpness vs HR", *(["LPIPS"] if lpips else []), "CPU s / 256² image",
             "speed-up vs teacher", "train min", "workdir"]
  sr_common.write_track("onestep_sr", track,
                        "One-step diffusion SR (×4): distilled students vs their teacher",
                        record, notes, rows, columns)
  grid = np.concatenate([np.concatenate(
      [bicubic[i], outputs["teacher"][i], *(outputs[m][i] for m in FLAGS.methods),
       pairs[i]["hr"]], axis=1) for i in range(len(pairs))])
  Image.fromarray(grid).save(os.path.join(ROOT, png))


if __name__ == "__main__":
  app.run(main)
