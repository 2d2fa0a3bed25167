"""GenImage's two tasks on mini-GenImage: effcomp's own generators vs the digits they learned.

mini-GenImage (`effcomp/runs/genimage.py`) is written afresh from trained class-conditional
generator runs (`--generators`, `<kind>=<workdir>`; by default the AR, AR + class VF and
DiT-T/2 flow runs that `benchmarks/ar_image.py` leaves in workdirs/bench_ar: run it first,
≈ 35 min), and from the runs of `--train_generators` (`<kind>=<config>`: by default DiT-T/2
with DiT's own ε objective and U-DiT-T with flow matching on the digits), which this script
trains into `--runs_dir`/generators when they are not there yet (≈ 5 + 10 min). Per
generator, `--num_train` samples beside as many real training digits of the same classes,
`--num_val` beside test digits, all 16×16 PNGs. Then every detector of
`configs/genimage_detect.py` (CPU size) trains on each generator for `--detector_steps`
steps (batch 64, same seed) and is tested on every generator's validation split:

- cross-generator matrix (GenImage's Tables 3–4): accuracy per (detector, train generator,
  test generator); `in-domain` = the diagonal's mean, `cross-domain` = the off-diagonal mean
  (the paper: detectors overfit to their training generator, in-domain ≫ cross-domain);
- degraded images (Table 5): each detector trained on the first generator, tested on its
  validation split under the paper's six degradations (`effcomp.data.genimage.degrade`,
  scaled from 224 to 16 pixels).
- AUC and AP of each in-domain test beside its accuracy.

  python benchmarks/genimage.py [--detector_steps=300 --num_train=600 --num_val=200]

Paper reference (GenImage, trained on SD 1.4, average over the 8 test generators): ResNet-50
72.1 %, CNNSpot 64.2 %, Spec 68.8 %, F3Net 68.7 %, GramNet 69.9 %, all ≥ 96 % in-domain;
degradations: most detectors fall to ≈ 50 % under low resolution and JPEG q 30.
"""

import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp import cli  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.data import genimage  # noqa: E402
from effcomp.runs import detection  # noqa: E402
from effcomp.runs import genimage as mini  # noqa: E402

BENCH_AR = os.path.join(ROOT, "workdirs", "bench_ar")
flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_genimage"),
                    "Where mini-GenImage, its datasets and the detectors are written (afresh).")
flags.DEFINE_list("generators", [f"ar={BENCH_AR}/ar", f"ar_vf={BENCH_AR}/ar_class_vf",
                                 f"flow={BENCH_AR}/dit_flow"],
                  "<kind>=<class-conditional run workdir>; kind from genimage.MINI_KINDS.")
flags.DEFINE_multi_string("train_generators", [
    "dit=configs/diffusion_digits.py:model=DiT-T/2,objective=eps,steps=1000",
    "udit=configs/diffusion_digits.py:model=U-DiT-T,objective=flow,steps=600"],
    "<kind>=<config> (repeat the flag): generators trained here when "
    "--runs_dir/generators/<kind> has no finished run.")
flags.DEFINE_list("detectors", ["resnet", "cnnspot", "spec", "f3net", "gramnet", "deit", "swin"],
                  "configs/genimage_detect.py detectors.")
flags.DEFINE_integer("num_train", 600, "Generated (and as many real) training images each.")
flags.DEFINE_integer("num_val", 200, "Generated (and as many real) validation images each.")
flags.DEFINE_integer("detector_steps", 300, "Training steps of every detector (batch 64).")
flags.DEFINE_integer("sampling_steps", 25, "Diffusion generators: Euler / DDIM steps.")
FLAGS = flags.FLAGS

NAMES = {"resnet": "ResNet-50-lite", "cnnspot": "CNNSpot (ResNet-50-lite + blur/JPEG aug.)",
         "spec": "Spec (log spectrum → ResNet-lite)", "f3net": "F3Net (FAD + LFS, small CNNs)",
         "gramnet": "GramNet-lite", "deit": "DeiT-lite (ViT)", "swin": "Swin-lite"}


def trained_generator(kind, spec):
  """The workdir of generator `kind` trained from config `spec` (trained if missing)."""
  workdir = os.path.join(FLAGS.runs_dir, "generators", kind)
  if not os.path.exists(os.path.join(workdir, "summary.json")):
    shutil.rmtree(workdir, ignore_errors=True)
    runs.train(config_lib.load(spec, **{"train.progress_bar": False}), workdir)
  return workdir


def write_mini(root, generators):
  """Writes mini-GenImage; returns {kind: provenance}."""
  shutil.rmtree(root, ignore_errors=True)
  out = {}
  for kind, workdir in generators:
    run = runs.open(workdir)
    steps = str(FLAGS.sampling_steps) if run.task == "diffusion" else "250"
    out[kind] = mini.write_generator(run, kind, root, num_train=FLAGS.num_train,
                                     num_val=FLAGS.num_val, steps=steps, seed=0)
    print(kind, out[kind], flush=True)
  return out


def train_detector(detector, kind, root):
  """Trains `detector` on generator `kind`: (opened run, minutes)."""
  workdir = os.path.join(FLAGS.runs_dir, "detectors", f"{detector}_{kind}")
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load(
      f"configs/genimage_detect.py:detector={detector},generator=mini_{kind},"
      f"steps={FLAGS.detector_steps}",
      **{"data.manual_dir": root, "data.data_dir": os.path.join(FLAGS.runs_dir, "data"),
         "train.progress_bar": False})
  start = time.time()
  runs.train(config, workdir)
  return runs.open(workdir, config), (time.time() - start) / 60


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.detectors) - set(NAMES))
  if unknown:
    raise ValueError(f"--detectors: unknown {unknown}; expected some of {sorted(NAMES)}")
  t_start = time.time()  # the wall time below includes training missing generators
  generators = cli.named_pairs("generators", FLAGS.generators, "<kind>=<run workdir>")
  if FLAGS.train_generators:
    generators += [(kind, trained_generator(kind, spec)) for kind, spec in cli.named_pairs(
        "train_generators", FLAGS.train_generators, "<kind>=<config>")]
  root = os.path.join(FLAGS.runs_dir, "mini")
  shutil.rmtree(os.path.join(FLAGS.runs_dir, "data"), ignore_errors=True)  # built from root
  provenance = write_mini(root, generators)
  kinds = [kind for kind, _ in generators]
  tests = [f"genimage_mini_{kind}" for kind in kinds]
  rows, degraded, matrix, labels = [], [], [], []
  for detector in FLAGS.detectors:
    for i, kind in enumerate(kinds):
      run, minutes = train_detector(detector, kind, root)
      result = detection.evaluate(run, [tests[i]] + tests[:i] + tests[i + 1:],
                                  degradations=i == 0)
      accuracy = [result[t]["accuracy"] for t in tests]
      matrix.append(accuracy)
      labels.append(f"{detector} / {kind}")
      row = {"detector": NAMES[detector], "train generator": kind,
             **{f"acc {t.removeprefix('genimage_mini_')}": a for t, a in zip(tests, accuracy)},
             "in-domain AUC": result[tests[i]]["auc"], "in-domain AP": result[tests[i]]["ap"],
             "cross-domain mean acc": float(np.mean([a for j, a in enumerate(accuracy)
                                                     if j != i])),
             "train min": minutes}
      rows.append(row)
      if i == 0:
        degraded.append({"detector": NAMES[detector], "clean": accuracy[0],
                         **{name: result[f"{tests[0]} | {name}"]["accuracy"]
                            for name in genimage.DEGRADATIONS}})
      print(row, flush=True)
  matrix = np.array(matrix)
  n = len(kinds)
  summary = []
  for d, detector in enumerate(FLAGS.detectors):
    block = matrix[d * n:(d + 1) * n]
    summary.append({"detector": NAMES[detector], "in-domain acc": float(np.mean(np.diag(block))),
                    "cross-domain acc": float(np.mean(block[~np.eye(n, dtype=bool)])),
                    "degraded mean acc": float(np.mean([degraded[d][k] for k in
                                                        genimage.DEGRADATIONS]))})
  png = os.path.join("docs", "results", "genimage_cross_generator.png")
  detection.heatmap(matrix, labels, [t.removeprefix("genimage_mini_") for t in tests],
                    os.path.join(ROOT, png), title="mini-GenImage accuracy (%)")
  notes = (
      f"mini-GenImage: {FLAGS.num_train} generated + {FLAGS.num_train} real training images and "
      f"{FLAGS.num_val} + {FLAGS.num_val} validation images per generator, 16×16 digits as RGB "
      "PNGs, the generated ones drawn for the classes of the real ones beside them; generators "
      f"(`--generators`): {', '.join(f'{k} = {w}' for k, w in generators)} (provenance in the "
      "JSON record). Detectors: `configs/genimage_detect.py` at CPU size, "
      f"{FLAGS.detector_steps} steps × 64 images, Adam 1e-3 cosine (DeiT, Swin: AdamW 1e-3, "
      "weight decay 0.05, 10 % warm-up), seed 0; accuracy at P(ai) ≥ "
      "0.5 on the validation split; AUC / AP of the in-domain test. `in-domain` = mean of the "
      "diagonal of a detector's train × test matrix, `cross-domain` = mean off the diagonal; "
      f"degraded rows: trained and tested on `{kinds[0]}` under the paper's degradations "
      "scaled from 224 to 16 pixels (LR (112) keeps 8×8 pixels of information, LR (64) 5×5; "
      f"blur σ × 16/224). Heat map: [{os.path.basename(png)}]({os.path.basename(png)}). "
      f"Wall time of the whole benchmark: {(time.time() - t_start) / 60:.1f} min.")
  columns = ["detector", "train generator", *[f"acc {k}" for k in kinds], "in-domain AUC",
             "in-domain AP", "cross-domain mean acc", "train min"]
  common.write_results(
      "genimage", summary, ["detector", "in-domain acc", "cross-domain acc",
                            "degraded mean acc"],
      title="AI-generated image detection on mini-GenImage (CPU scale, effcomp's generators)",
      notes=notes, extra={"provenance": provenance},
      tables=[("Cross-generator matrix", "Rows: detector and its training generator; "
               "columns: test generator.", rows, columns),
              ("Degraded images", f"Trained and tested on `{kinds[0]}`.", degraded,
               ["detector", "clean", *genimage.DEGRADATIONS])])


if __name__ == "__main__":
  app.run(main)
