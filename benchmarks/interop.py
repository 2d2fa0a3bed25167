"""effcomp against the official PyTorch code, model by model, on the same weights.

  python benchmarks/interop.py --official_root=/work/official [--systems=adabin,dit,...]

`--official_root` holds the official repositories, cloned beforehand under their GitHub
names: Efficient-Computing (huawei-noah, AdaBin), DiT (facebookresearch), U-DiT
(YuchuanTian), BasicSR (XPixelGroup: EDSR, SwinIR), ResShift (zsyOAOA), DiT-SR (the
published DiT-SR code: MateoBodon/DiT-SR, since kunncheng/DiT-SR holds only its README),
pytorch-fid (mseitzer). For each model the benchmark builds the official PyTorch model
from that code, loads the released checkpoint where the repository ships one (AdaBin
ResNet-20 1w1a) or else sets every parameter to normal(0, 0.02) (so zero-initialized
layers do not make the check trivial), converts the weights with `effcomp.convert`, and
runs both on the same fixed inputs (float32, CPU). Columns: the largest |Δ| relative to the
official output's largest |value|, argmax agreement for classifiers, parameters and
forward GMACs on both sides (effcomp's jaxpr count vs `torch.utils.flop_counter`), and for
DiT-S/2, U-DiT-S and AdaBin ResNet-20 the train-step time ratio effcomp / PyTorch (2
threads, medians of interleaved runs; batch 8 of 32×32×4 latents, batch 128 of 32×32×3).

Needs PyTorch and the official code's own dependencies (timm for DiT / U-DiT, which needs
torchvision: `pip install torch==2.14.1 torchvision==0.29.1 timm` in a separate venv with
effcomp installed). Writes benchmarks/results/interop.json and docs/results/interop.md.
"""

import concurrent.futures
import multiprocessing
import os
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import (interop_adabin, interop_basicsr, interop_dit,  # noqa: E402
                        interop_inception, interop_resshift)

SYSTEMS = {"adabin": interop_adabin, "dit": interop_dit, "basicsr": interop_basicsr,
           "resshift": interop_resshift, "inception": interop_inception}
GOAL = 1e-4  # relative max |Δ| every converted model must reach

flags.DEFINE_string("official_root", None, "Folder of the official repositories.", required=True)
flags.DEFINE_list("systems", list(SYSTEMS), f"Which of {sorted(SYSTEMS)} to compare.")
flags.DEFINE_bool("timing", True, "Also time the train steps (DiT-S/2, U-DiT-S, ResNet-20).")
FLAGS = flags.FLAGS

COLUMNS = ["system", "model", "weights", "max |Δ|", "max |Δ| / max |y|", "argmax agreement",
           "params (official)", "params (effcomp)", "GMACs (official)", "GMACs (effcomp)",
           "train step effcomp / PyTorch", "note"]


def _system_rows(name: str, root: str, timing: bool) -> List[Dict[str, Any]]:
  return SYSTEMS[name].rows(root, timing=timing)


def _in_own_process(name: str, root: str, timing: bool) -> List[Dict[str, Any]]:
  """One system's rows, computed in a fresh process: each frees its memory (the U-DiT-S
  train step alone peaks near 20 GB on a CPU) before the next starts."""
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
    return pool.submit(_system_rows, name, root, timing).result()


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.systems) - set(SYSTEMS))
  if unknown:
    raise app.UsageError(f"--systems: unknown {unknown}; expected some of {sorted(SYSTEMS)}")
  start = time.time()
  rows = []
  for name in FLAGS.systems:
    for row in _in_own_process(name, FLAGS.official_root, FLAGS.timing):
      row["meets goal"] = row["max |Δ| / max |y|"] <= GOAL
      rows.append(row)
      print(row, flush=True)
  missed = [f"{r['system']} {r['model']}" for r in rows if not r["meets goal"]]
  notes = (f"Official code from the repositories in --official_root, same weights and inputs "
           f"on both sides, float32 on {common.machine()['platform']}. Goal: relative max "
           f"|Δ| ≤ {GOAL:g} for every model"
           + (f"; missed by {', '.join(missed)} (see the note column)." if missed else
              " — met by every row.")
           + " GMACs: forward multiply-adds of one call on the inputs shown in the model "
           "column. Train step: one forward + backward + optimizer step, effcomp (jax.jit) "
           "over PyTorch (eager), 2 threads, median of 7 interleaved runs after warm-up. "
           f"Wall time {(time.time() - start) / 60:.1f} min.")
  common.write_results("interop", rows, COLUMNS + ["meets goal"],
                       title="Equivalence with the official PyTorch code", notes=notes,
                       extra={"torch": torch.__version__})


if __name__ == "__main__":
  app.run(main)
