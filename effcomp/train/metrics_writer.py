"""Metric writers: TensorBoard event files, a JSONL log, and a PNG of the curves.

clu's metric writers import TensorFlow, which effcomp does not install (TFDS and grain
run without it); `tensorboardX` writes the same TensorBoard event files. Only process 0
writes; other processes get a writer that does nothing. Files go through `etils.epath`,
so a `gs://` workdir works where gcsfs and google-cloud-storage are installed.
"""

import json
import math
import os
from collections import defaultdict
from typing import Any, Mapping

import numpy as np
from etils import epath
from matplotlib.figure import Figure
from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard/` and `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    if enabled:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = epath.Path(self.jsonl_path).open("a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    for k, v in values.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self._jsonl.flush()

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, step)

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def read_jsonl(path: str) -> list:
  with epath.Path(path).open() as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_curves(jsonl_path: str, png_path: str, *, title: str = "") -> str:
  """One panel per metric (train/… and eval/… of one name share a panel); returns png_path.

  A resumed run appends to the log; the newest value of each (metric, step) wins.
  """
  # A Figure without pyplot: no global backend switch (notebooks keep inline plots).
  series = defaultdict(dict)
  for row in read_jsonl(jsonl_path):
    for key, value in row.items():
      if key != "step" and math.isfinite(value):
        series[key][row["step"]] = value
  panels = defaultdict(list)
  for key in sorted(series):
    panels[key.split("/", 1)[-1]].append(key)
  names = [n for n in ("loss", "accuracy") if n in panels] + sorted(
      n for n in panels if n not in ("loss", "accuracy"))
  cols = min(3, max(len(names), 1))
  rows = math.ceil(len(names) / cols) or 1
  fig = Figure(figsize=(4.5 * cols, 3.2 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, name in zip(axes.flat, names):
    for key in panels[name]:
      steps = sorted(series[key])
      ax.plot(steps, [series[key][s] for s in steps], marker="o" if len(steps) < 20 else None,
              markersize=3, label=key)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  with epath.Path(png_path).open("wb") as f:
    fig.savefig(f, format="png", dpi=100)
  return png_path
