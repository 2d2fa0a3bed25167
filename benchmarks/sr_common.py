"""What the diffusion-SR benchmarks (`ditsr.py`, `onestep_sr.py`) share: the degraded test
crops, their scores, and LPIPS when its weights are given."""

import json
import os
import shutil
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from benchmarks import common
from effcomp import config as config_lib
from effcomp import runs
from effcomp.data import sources
from effcomp.metrics import image as image_metrics
from effcomp.metrics import lpips as lpips_lib
from effcomp.tasks import diffusion_sr

TRACKS = {"bicubic": "clean ×4 (bicubic LR)",
          "realesrgan": "real-world ×4 (Real-ESRGAN degradation)"}
LPIPS_MISSING = ("LPIPS: not measured — its weights (the official lin layers and torchvision's "
                 "AlexNet) cannot be downloaded on this machine; pass --lpips_weights.")


def bench_config(spec: str, steps: int):
  """Config `spec` (path:args) as the benchmarks train it: no progress bar, one eval at
  the end."""
  return config_lib.load(spec, **{"train.progress_bar": False, "train.eval_every": steps})


def train_fresh(spec: str, workdir: str, steps: int) -> float:
  """Trains config `spec` from scratch in `workdir` (emptied first), evaluating once at
  the end; returns the seconds it took."""
  shutil.rmtree(workdir, ignore_errors=True)
  config = bench_config(spec, steps)
  start = time.time()
  runs.train(config, workdir)
  return time.time() - start


def finished_run(spec: str, workdir: str, steps: int) -> bool:
  """Whether `workdir` holds a run of exactly config `spec` that trained all `steps`."""
  summary = os.path.join(workdir, "summary.json")
  if not os.path.isfile(summary):
    return False
  with open(summary) as f:
    done = json.load(f).get("steps") == steps
  recorded = config_lib.from_workdir(workdir).to_dict()
  wanted = json.loads(bench_config(spec, steps).to_json_best_effort())
  return done and json.loads(json.dumps(recorded)) == wanted


def test_pairs(track: str, eval_patch: int) -> List[Dict[str, np.ndarray]]:
  """The degraded centre crops of the test photos, as the task evaluates them."""
  c = diffusion_sr.task_defaults()
  c.eval_patch = eval_patch
  c.degradation = track
  source = sources.get_source("photos", "test")
  return [diffusion_sr.eval_pair(source[i]["image"], c) for i in range(len(source))]


def lpips_or_none(weights: Optional[str], backbone: Optional[str]) -> Optional[Callable]:
  if not weights:
    return None
  return lpips_lib.lpips_fn(lpips_lib.load_lpips_weights(weights, backbone))


def scores(outputs, pairs, lpips) -> Dict[str, float]:
  """Mean PSNR / SSIM (Y, 4-pixel border), sharpness vs HR and LPIPS of uint8 outputs."""
  mean = lambda metric: float(np.mean([metric(o, p["hr"], 4) for o, p in zip(outputs, pairs)]))
  row = {"PSNR": mean(image_metrics.psnr), "SSIM": mean(image_metrics.ssim),
         "sharpness vs HR": mean(image_metrics.sharpness_ratio)}
  if lpips is not None:
    to = lambda a: np.asarray(a, np.float32)[None] / 127.5 - 1.0
    row["LPIPS"] = float(np.mean([float(lpips(to(o), to(p["hr"]))[0])
                                  for o, p in zip(outputs, pairs)]))
  return row


def write_track(topic: str, track: str, title: str, record: Dict[str, str], notes: str,
                rows: List[Dict[str, object]], columns: List[str]) -> None:
  """Writes `topic`'s results with this invocation's `track` table replaced and the other
  track's kept (each table with its own provenance, in its notes); `title` gets the
  first table's heading."""
  previous = common.read_results(topic) or {}
  tracks = {**previous.get("tracks", {}),
            track: {**record, "notes": notes, "rows": rows, "columns": columns}}
  tables = [(TRACKS[name], tracks[name]["notes"], tracks[name]["rows"], tracks[name]["columns"])
            for name in TRACKS if name in tracks]
  heading, first_notes, first_rows, first_columns = tables[0]
  common.write_results(
      topic, first_rows, first_columns, title=f"{title} — {heading}",
      notes=("Each track written by its own invocation (its provenance in its notes; the "
             "header names the latest). " + first_notes),
      extra={"tracks": tracks}, tables=tables[1:])
