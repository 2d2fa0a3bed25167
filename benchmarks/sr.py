"""Super-resolution at CPU scale: EDSR, SwinIR, IPT-V2 and LIPT at comparable parameter
counts, and DUKD against plain output distillation.

Part `models` (→ benchmarks/results/sr.json, docs/results/sr.md): for each scale, every
model of `configs/sr_photos.py` (CPU sizes, 0.14–0.16 M parameters in inference form)
trained from the same seed for the same budget (`--steps` of `--batch` LR patches of
16×16, MATLAB-bicubic LR, L1, Adam), then measured on the three embedded test photos as
BasicSR's test script does (whole images modcropped, Y channel, `scale` border pixels
cropped, 8-bit output): PSNR, SSIM; with parameters and multiply-adds for a 1280×720
output (the SR papers' "Multi-Adds") of the inference form (IPT-V2's FFN and LIPT's HRM
re-parameterized: it gives the same PSNR, checked) and the CPU latency of one 128×128 LR
image (jitted, median of interleaved runs, so the ratios hold on this machine).
Bicubic interpolation is the floor row. Expected (IPT-V2, LIPT papers): both ahead of
SwinIR and EDSR at their size.

Part `dukd` (→ benchmarks/results/sr_dukd.json, docs/results/sr_dukd.md): at ×`--dukd_scale`
a larger EDSR teacher, and the CPU-size EDSR student trained with no KD, plain output KD
and DUKD (`effcomp/losses/dukd.py`), same budget.
Expected (DUKD, Zhang et al., Tables 1–3): DUKD > plain KD > no KD.

  python benchmarks/sr.py [--part=all|models|dukd] [--steps=1200] [--scales=2,4]
"""

import math
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.data import sources  # noqa: E402
from effcomp.metrics import flops  # noqa: E402
from effcomp.models.sr import iptv2, lipt  # noqa: E402
from effcomp.quant import pack  # noqa: E402
from effcomp.tasks import sr  # noqa: E402

flags.DEFINE_enum("part", "all", ["all", "models", "dukd"], "What to measure.")
flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_sr"),
                    "Where the runs train (each from scratch).")
flags.DEFINE_integer("steps", 1200, "Training steps of every model.")
flags.DEFINE_integer("batch", 16, "Patches per step.")
flags.DEFINE_list("scales", ["2", "4"], "Upscaling factors of part `models`.")
flags.DEFINE_list("models", ["edsr", "swinir", "iptv2", "lipt"], "configs/sr_photos.py models.")
flags.DEFINE_integer("dukd_scale", 2, "Upscaling factor of part `dukd`.")
flags.DEFINE_integer("teacher_steps", 1500, "Training steps of the DUKD teacher.")
FLAGS = flags.FLAGS

LR_PATCH = 16  # LR side: 4× cheaper steps than 32², so 4× more of them in the budget
OUTPUT_HW = (720, 1280)  # the SR papers' Multi-Adds convention: a 1280×720 output
LATENCY_LR = 128
TEACHER = {"model.n_resblocks": 8, "model.n_feats": 48}  # ~2.8× the student's MACs


def train(model, scale, name, **overrides):
  """Trains one run from scratch; returns (workdir, config, seconds)."""
  workdir = os.path.join(FLAGS.runs_dir, name)
  shutil.rmtree(workdir, ignore_errors=True)
  args = overrides.pop("args", "")
  config = config_lib.load(
      f"configs/sr_photos.py:model={model},scale={scale},steps={FLAGS.steps},"
      f"batch={FLAGS.batch},patch={LR_PATCH * scale}{args}",
      **{"train.progress_bar": False, **overrides})
  start = time.time()
  runs.train(config, workdir)
  return workdir, config, time.time() - start


def inference_form(model, variables):
  """(model, variables) with re-parameterized blocks folded (IPT-V2 FFN, LIPT HRM)."""
  if isinstance(model, iptv2.IPTV2) and model.ffn == "rep":
    return model.clone(ffn="dwconv"), {"params": iptv2.reparameterize(variables["params"])}
  if isinstance(model, lipt.LIPT) and not model.fused:
    return model.clone(fused=True), {"params": lipt.fuse(variables["params"],
                                                         variables["batch_stats"])}
  return model, variables


def test_images():
  source = sources.get_source("photos", "test")
  return [source[i]["image"] for i in range(len(source))]


def measure(workdir, config, images):
  """Row fields of one trained run: PSNR/SSIM of both forms, params, GMACs, the model."""
  run = runs.open(workdir, config)
  model, variables = run.model, run.variables
  scale = model.scale
  trained = sr.evaluate_images(lambda lr: sr.upscale(model, variables, lr), images, scale)
  model, variables = inference_form(model, variables)
  result = sr.evaluate_images(lambda lr: sr.upscale(model, variables, lr), images, scale)
  lr_shape = (1, OUTPUT_HW[0] // scale, OUTPUT_HW[1] // scale, 3)
  macs = flops.jaxpr_macs(lambda x: model.apply(variables, x), jnp.zeros(lr_shape))
  return {"PSNR": result["psnr"], "SSIM": result["ssim"],
          "PSNR (training form)": trained["psnr"],
          "params (K)": sum(math.prod(v.shape) for v in jax.tree.leaves(variables["params"])) / 1e3,
          "GMACs (720p out)": macs / 1e9}, (model, variables)


def latencies(models):
  """Median seconds of one LATENCY_LR² LR image through each jitted (model, variables)."""
  x = jnp.asarray(jax.random.uniform(jax.random.key(0), (1, LATENCY_LR, LATENCY_LR, 3)))
  fns = [(jax.jit(m.apply), (v, x)) for m, v in models]
  return pack.median_times(fns, repeats=10)


def part_models(images, common):
  rows = []
  for scale in map(int, FLAGS.scales):
    bicubic = sr.evaluate_images(lambda lr, s=scale: sr.bicubic_upscale(lr, s), images, scale)
    rows.append({"scale": f"×{scale}", "model": "bicubic", "PSNR": bicubic["psnr"],
                 "SSIM": bicubic["ssim"]})
    forms, scale_rows = [], []
    for name in FLAGS.models:
      workdir, config, seconds = train(name, scale, f"{name}_x{scale}")
      row, form = measure(workdir, config, images)
      scale_rows.append({"scale": f"×{scale}", "model": name, **row, "train s": seconds})
      forms.append(form)
      print(scale_rows[-1], flush=True)
    times = latencies(forms)
    for row, seconds in zip(scale_rows, times):
      row["CPU ms/image"] = 1e3 * seconds
      row[f"latency vs {FLAGS.models[0]}"] = seconds / times[0]
    rows += scale_rows
  notes = (f"Embedded photos (train 7, test 3: astronaut, coffee, flower), MATLAB-bicubic LR; "
           f"every model {FLAGS.steps} steps × {FLAGS.batch} LR patches of {LR_PATCH}², "
           "seed 0, `configs/sr_photos.py` (CPU sizes). PSNR / SSIM: Y channel, `scale` "
           "border pixels cropped, whole test images, inference form (IPT-V2's FFN and "
           "LIPT's HRM folded; `PSNR (training form)` is the unfolded model, equal up to "
           "rounding). `GMACs (720p out)`: multiply-adds of the inference form for a "
           f"1280×720 output; `CPU ms/image`: one {LATENCY_LR}×{LATENCY_LR} LR image, jitted, "
           "median of 10 interleaved runs on this machine (compare the ratios).")
  common.write_results("sr", rows, ["scale", "model", "params (K)", "GMACs (720p out)", "PSNR",
                                    "SSIM", "PSNR (training form)", "CPU ms/image",
                                    f"latency vs {FLAGS.models[0]}", "train s"],
                       title="Super-resolution at CPU scale: EDSR, SwinIR, IPT-V2, LIPT",
                       notes=notes)


def part_dukd(images, common):
  s = FLAGS.dukd_scale
  teacher_dir, teacher_config, teacher_s = train(
      "edsr", s, f"dukd_teacher_x{s}", **TEACHER, **{"train.steps": FLAGS.teacher_steps})
  teacher, _ = measure(teacher_dir, teacher_config, images)
  rows = [{"model": "teacher (EDSR 8×48)", "kd": "", **teacher, "train s": teacher_s}]
  for kd in ("none", "output", "dukd"):
    args = f",teacher={teacher_dir},kd={kd}" if kd != "none" else ""
    workdir, config, seconds = train("edsr", s, f"dukd_student_{kd}_x{s}", args=args)
    row, _ = measure(workdir, config, images)
    rows.append({"model": "student (EDSR 6×32)", "kd": {"none": "no KD", "output": "plain KD",
                                                       "dukd": "DUKD"}[kd],
                 **row, "train s": seconds})
    print(rows[-1], flush=True)
  notes = (f"×{s}, embedded photos, MATLAB-bicubic LR. Teacher: EDSR with 8 blocks of 48 "
           f"features, {FLAGS.teacher_steps} steps; students: the CPU-size EDSR (6 blocks of "
           f"32), {FLAGS.steps} steps × {FLAGS.batch} LR patches of {LR_PATCH}², seed 0. "
           "`plain KD`: L1 to HR + L1 to the teacher's output on the same LR; `DUKD`: the "
           "reference's EDSR weights (5 × L1 to HR), zoom-in HR tiles as extra LR inputs "
           "with invertible augmentations (label consistency) and zoom-out LR, all "
           "labelled by the teacher (`effcomp/losses/dukd.py`). PSNR / SSIM as in "
           "[sr.md](sr.md).")
  common.write_results("sr_dukd", rows, ["model", "kd", "params (K)", "PSNR", "SSIM",
                                         "train s"],
                       title=f"DUKD: data-upcycling distillation vs plain output KD (×{s})",
                       notes=notes)


def main(argv):
  del argv
  images = test_images()
  if FLAGS.part in ("all", "models"):
    part_models(images, common)
  if FLAGS.part in ("all", "dukd"):
    part_dukd(images, common)


if __name__ == "__main__":
  app.run(main)
