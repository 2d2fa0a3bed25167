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
teacher (goal ≥ 10×). VPD-SR's semantic loss uses the stand-in encoder of
`configs/stand_in_encoder.py` (trained here first when `--ess_encoder`'s run is absent), a
proxy for CLIP; MoR routes from the frozen degradation estimator of
`configs/degradation_estimator.py` (likewise), a proxy for its CLIP scores. MoR rows add the
mean active LoRA ranks per adapted layer on `--probe` random 64² crops of each test photo
with the track's degradation, by tercile of the LR's measured distortion (mild / medium /
severe), and the correlation of the estimated distortion with it; their GMACs count the
adapters at the mean active ranks (the routed-but-idle ranks are masked, not skipped, in the
jitted graph: static shapes).
Paper expectation (SinSR, TAD-SR, VPD-SR, MoR): the one-step students match or beat their
teacher; MoR gives severe degradations more active ranks. Each invocation rewrites its
track's table and keeps the other's.

  python benchmarks/onestep_sr.py [--teacher=workdirs/bench_ditsr/bicubic/dit_sr] \\
      [--methods=regress,hr,tadsr,vpdsr] [--steps=120]
  python benchmarks/onestep_sr.py --teacher=workdirs/bench_ditsr/realesrgan/dit_sr
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
from effcomp.data import sources  # noqa: E402
from effcomp.tasks import diffusion_sr, onestep_sr, sr  # noqa: E402
from effcomp.train import metrics_writer  # noqa: E402

flags.DEFINE_string("teacher", onestep_config.DEFAULT_TEACHER,
                    "The diffusion_sr teacher's workdir (benchmarks/ditsr.py's runs).")
flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_onestep"),
                    "Where the students train (each from its teacher's weights).")
flags.DEFINE_list("methods", [], "configs/onestep_sr.py methods; default: the track's "
                  "(TRACK_METHODS).")
flags.DEFINE_string("ess_encoder", onestep_config.DEFAULT_ENCODER,
                    "VPD-SR's frozen encoder ('run:<workdir>' trained here if absent).")
flags.DEFINE_string("mor_estimator", "run:" + os.path.join("workdirs", "degradation_estimator"),
                    "MoR's frozen degradation scorer ('run:<workdir>' of "
                    "configs/degradation_estimator.py, trained here if absent; 'clip:<folder>'; "
                    "'' trains one beside each MoR student).")
flags.DEFINE_bool("reuse", False, "Keep a student whose workdir holds a finished run of the "
                  "same config, timed by this track's previous results (its row says so).")
flags.DEFINE_integer("probe", 8, "Random crops per test photo for MoR's active ranks.")
flags.DEFINE_integer("steps", 120, "Training steps of every student.")
flags.DEFINE_integer("batch", 8, "HR patches per step.")
flags.DEFINE_integer("patch", 32, "HR side of the training patches.")
flags.DEFINE_float("lr", 0.0, "AdamW learning rate; 0: the method's (configs/onestep_sr.py LR).")
flags.DEFINE_integer("eval_patch", 256, "HR side of the test crops.")
flags.DEFINE_string("lpips_weights", None, "LPIPS weights (see benchmarks/ditsr.py).")
flags.DEFINE_string("lpips_backbone", None, "torchvision AlexNet .pth for a lin-only .pth.")
FLAGS = flags.FLAGS
DISTORTION = 3  # `degradations.degradation_severity`: the LR's measured distortion
LABELS = {"regress": "one-step: regression to the teacher (SinSR-style)",
          "hr": "one-step: regression to HR", "tadsr": "one-step: TAD-SR",
          "vpdsr": "one-step: VPD-SR (stand-in encoder)", "mor": "one-step: MoR",
          "mor_fixed": "MoR, fixed experts (dense LoRA)", "mor_nozero": "MoR, no zero experts",
          "mor_nobalance": "MoR, no balancing loss", "mor_v2": "MoR, conventional balance"}
TRACK_METHODS = {"bicubic": ["regress", "hr", "tadsr", "vpdsr"],
                 "realesrgan": ["regress", "tadsr", "vpdsr", "mor", "mor_fixed", "mor_nozero",
                                "mor_nobalance"]}


def train(method, track, previous_rows):
  """Trains one student from its teacher; returns (workdir, seconds, reused). With
  --reuse, a finished run of the same config whose training the previous results of this
  track timed is kept, with that time."""
  workdir = os.path.join(FLAGS.runs_dir, track, method)
  spec = (f"configs/onestep_sr.py:method={method},teacher={FLAGS.teacher},steps={FLAGS.steps},"
          f"batch={FLAGS.batch},patch={FLAGS.patch},lr={FLAGS.lr},"
          f"ess_encoder={FLAGS.ess_encoder},mor_estimator={FLAGS.mor_estimator}")
  timed = {r.get("workdir"): r.get("train min") for r in previous_rows}
  minutes = timed.get(os.path.relpath(workdir, ROOT))
  if FLAGS.reuse and minutes and sr_common.finished_run(spec, workdir, FLAGS.steps):
    return workdir, 60 * minutes, True
  return workdir, sr_common.train_fresh(spec, workdir, FLAGS.steps), False


def stand_in(spec: str, config: str, steps: int, metric: str) -> dict:
  """Trains `config` into the workdir of `spec` ('run:<workdir>') unless it holds a run;
  its last logged row with `metric`."""
  workdir = spec.split(":", 1)[1]
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    sr_common.train_fresh(config, workdir, steps)
  return [r for r in metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if metric in r][-1]


def stand_in_encoder() -> str:
  """The notes line of --ess_encoder (trained first when a missing run)."""
  if not FLAGS.ess_encoder.startswith("run:"):
    return f"ESS encoder: `{FLAGS.ess_encoder}`."
  row = stand_in(FLAGS.ess_encoder, "configs/stand_in_encoder.py", 600, "train/accuracy")
  return (f"ESS encoder (a proxy for CLIP): the rotation-prediction CNN in "
          f"`{FLAGS.ess_encoder[4:]}` (`configs/stand_in_encoder.py`, {row['step']} steps, "
          f"last train accuracy {row['train/accuracy']:.2f} on 4 rotations).")


def degradation_scorer() -> str:
  """The notes line of --mor_estimator (trained first when a missing run)."""
  if not FLAGS.mor_estimator.startswith("run:"):
    return (f"MoR's degradation scores: `{FLAGS.mor_estimator}`." if FLAGS.mor_estimator
            else "MoR's degradation estimator: trained beside each student.")
  row = stand_in(FLAGS.mor_estimator, "configs/degradation_estimator.py", 1500, "eval/loss")
  return (f"MoR's degradation scores (a proxy for the paper's frozen CLIP): the estimator in "
          f"`{FLAGS.mor_estimator[4:]}` (`configs/degradation_estimator.py`, {row['step']} "
          f"steps, frozen; eval MSE {row['eval/loss']:.3f}, distortion MAE "
          f"{row['eval/mae_distortion']:.3f}).")


def probe_pairs(track: str, per_photo: int) -> list:
  """Random 64² HR crops of the test photos, degraded with fixed seeds, with their
  severities (`degradations.degradation_severity`)."""
  c = diffusion_sr.task_defaults()
  c.update(degradation=track, patch_size=64, augment=False)
  source = sources.get_source("photos", "test")
  rng = np.random.default_rng(1)
  return [sr.random_pair(source[i]["image"], rng, c) for i in range(len(source))
          for _ in range(per_photo)]


def mor_columns(student, probes, key) -> dict:
  """Mean active ranks per adapted layer by severity tercile; the estimator's r."""
  lr = diffusion_sr.to_model_space(jnp.stack([p["lr"] for p in probes]))
  y = diffusion_sr.upsample_lr(lr, student.scale)
  _, info = student.with_info(y, key)
  truth = np.asarray([p["severity"][DISTORTION] for p in probes])
  active = np.asarray(info["active"])
  order = np.argsort(truth)
  thirds = np.array_split(order, 3)
  row = {f"active ranks ({name})": float(active[idx].mean())
         for name, idx in zip(("mild", "medium", "severe"), thirds)}
  scores = np.asarray(info["severity"])  # a CLIP scorer's K scores: their mean
  estimate = scores[:, DISTORTION] if scores.shape[-1] == 4 else scores.mean(-1)
  row["estimator r"] = float(np.corrcoef(estimate, truth)[0, 1])
  return row


def mor_macs(student) -> float:
  """A 256² call's MACs with every adapter rank computed (routing masks, not skips)."""
  y = jnp.zeros((1, 256, 256, 3))
  t = jnp.zeros((1,), jnp.int32)

  def call(a):
    fn, _ = onestep_sr.denoiser(student.model, student.params, a, student.config)
    return fn(a, t)

  return flops.jaxpr_macs(call, y)


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
  methods = FLAGS.methods or TRACK_METHODS[track]
  encoder_note = stand_in_encoder() if any(
      onestep_config.METHODS[m].get("ess_weight") for m in methods) else ""
  if any(onestep_config.METHODS[m].get("adapter") == "mor" for m in methods):
    encoder_note += " " + degradation_scorer()
  probes = probe_pairs(track, FLAGS.probe)
  previous = (common.read_results("onestep_sr") or {}).get("tracks", {}).get(track, {})
  reused = []
  for method in methods:
    workdir, seconds, kept = train(method, track, previous.get("rows", []))
    if kept:
      reused.append(LABELS.get(method, method))
    run = runs.open(workdir)
    student = onestep_sr.make_student(run.model, run.params, run.config)
    outputs[method] = [student.upscale(p["lr"], key) for p in pairs]
    row = {"model": LABELS.get(method, method), "calls": 1, "GMACs / image (256²)": macs / 1e9,
           **sr_common.scores(outputs[method], pairs, lpips), "train min": seconds / 60,
           "workdir": os.path.relpath(workdir, ROOT)}
    if onestep_sr.MOR in student.params:
      row.update(mor_columns(student, probes, key))
      active = np.mean([row[f"active ranks ({n})"] for n in ("mild", "medium", "severe")])
      adapters = mor_macs(student) - macs  # (and the estimator and routers)
      row["GMACs / image (256²)"] = (macs + adapters * active
                                     / onestep_sr.mor_ranks(student.config)) / 1e9
    rows.append(row)
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
      f"{FLAGS.lr or 'as configs/onestep_sr.py LR (full 5e-5, MoR adapters 1e-3)'}, EMA, one "
      f"call at t = T − 1 from a fixed noise. {encoder_note} MoR (CPU size: 2 shared + 8 "
      "routed rank-1 experts, 4 zero slots, top-2, on 68 Dense layers; teacher weights "
      f"frozen): active ranks = shared + chosen routed ranks per adapted layer, mean over "
      f"layers, on {FLAGS.probe} random 64² crops per test photo split into terciles of their "
      "distortion ((35 − PSNR of the LR against the clean bicubic LR) / 25 dB, in [0, 1]); "
      "estimator r: Pearson correlation of the estimated distortion with it; GMACs of MoR "
      "rows: the adapters at the mean active ranks. PSNR / SSIM: Y channel, 4 "
      "border pixels cropped. Sharpness vs HR: mean Y gradient magnitude over the HR's. "
      f"{sr_common.LPIPS_MISSING if lpips is None else 'LPIPS: AlexNet, official lin weights.'}"
      " GMACs: denoiser calls × one call at a 256² output. CPU s: one 256² output, jitted, "
      "median of 3 interleaved runs (speed-up: the teacher's over each row's). Grid: "
      f"[{os.path.basename(png)}]({os.path.basename(png)}) — per test crop: bicubic, the "
      f"teacher, {', '.join(LABELS.get(m, m) for m in methods)}, HR. Wall time "
      f"{(time.time() - start) / 60:.1f} min" + (
          f"; kept from the previous invocation (`{previous['command']}` at "
          f"`{previous['commit'][:12]}`, same configs, its train min): {', '.join(reused)}"
          if reused else "") + ".")
  columns = ["model", "calls", "GMACs / image (256²)", "PSNR", "PSNR vs teacher", "SSIM",
             "sharpness vs HR", *(["LPIPS"] if lpips else []), "CPU s / 256² image",
             "speed-up vs teacher",
             *([f"active ranks ({n})" for n in ("mild", "medium", "severe")] + ["estimator r"]
               if any("active ranks (mild)" in r for r in rows) else []),
             "train min", "workdir"]
  sr_common.write_track("onestep_sr", track,
                        "One-step diffusion SR (×4): distilled students vs their teacher",
                        record, notes, rows, columns)
  grid = np.concatenate([np.concatenate(
      [bicubic[i], outputs["teacher"][i], *(outputs[m][i] for m in methods),
       pairs[i]["hr"]], axis=1) for i in range(len(pairs))])
  Image.fromarray(grid).save(os.path.join(ROOT, png))


if __name__ == "__main__":
  app.run(main)
