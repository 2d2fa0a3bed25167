"""Evaluate AI-generated-image detectors as GenImage does: per test generator (accuracy, ROC
AUC, average precision), the cross-generator matrix, and accuracy per degradation.

  run = runs.open("workdirs/detect_cnnspot_sd14")
  scores, labels = detection.scores(run, "genimage_sd14")              # P(ai), 0/1
  row = detection.evaluate(run, ["genimage_sd14", "genimage_adm"], degradations=True)
  detection.heatmap(matrix, train_names, test_names, "matrix.png")

A detector run is a `classification` run with two classes (0 nature, 1 ai): its images go
through the task's own evaluation path (`image_size` center crop, then `inputs_fn`: [0, 1],
resize, mean / std), the degradation (`effcomp.data.genimage.degrade`) applied to the
uint8 image first, as the paper degrades the test images. Scores are softmax P(ai); the
accuracy thresholds them at 0.5 (argmax), as the paper reports; AUC and AP use
scikit-learn's `roc_auc_score` and `average_precision_score`.
"""

from typing import Callable, Dict, List, Optional, Sequence

import jax
import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from effcomp.data import crops, genimage, sources
from effcomp.data.pipeline import read_batch
from effcomp.runs.run import Run
from effcomp.tasks import classification
from effcomp.tasks.base import task_config


def _check_detector(run: Run) -> None:
  if run.task != "classification" or getattr(run.model, "num_classes", 2) != 2:
    raise ValueError(f"run {run.workdir!r}: expected a two-class classification run (a "
                     "detector of configs/genimage_detect.py), got task "
                     f"{run.task!r}")


def predictor(run: Run) -> Callable[[np.ndarray], jax.Array]:
  """The detector's jitted P(ai) of a batch of uint8 images (after its crop)."""
  _check_detector(run)
  inputs = classification.inputs_fn(run.config)
  apply = jax.jit(lambda v, x: jax.nn.softmax(run.model.apply(v, inputs(x), train=False))[:, 1])
  return lambda images: apply(run.variables, images)


def scores(run: Run, dataset: str, split: str = "validation", *,
           degradation: Optional[str] = None, batch_size: int = 256,
           data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
           predict: Optional[Callable] = None) -> tuple:
  """(P(ai) [N], labels [N]) of the detector `run` on `dataset`'s `split`, each uint8
  image degraded by `genimage.DEGRADATIONS[degradation]` first when given. `data_dir` /
  `manual_dir` default to the run's `config.data`; `predict`: `predictor(run)`, when at
  hand."""
  c = task_config(run.config, classification.task_defaults())
  d = run.config.data
  source = sources.get_source(dataset, split, data_dir=data_dir or d.data_dir,
                              manual_dir=manual_dir or d.manual_dir)
  predict = predict or predictor(run)

  def prepare(example, rng):
    del rng
    image = np.asarray(example["image"])
    if degradation:
      image = genimage.degrade(image, degradation)
    if c.image_size:
      image = crops.center_crop(image, c.image_size)
    return {"image": image, "label": example["label"]}

  probs, labels = [], []
  for start in range(0, len(source), batch_size):
    batch = read_batch(source, range(start, min(start + batch_size, len(source))), prepare)
    probs.append(np.asarray(predict(batch["image"])))
    labels.append(np.asarray(batch["label"]))
  return np.concatenate(probs), np.concatenate(labels)


def summarize(probs: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """{'accuracy', 'auc', 'ap'} of P(ai) scores against 0/1 labels ('auc', 'ap' NaN when
  only one class is present)."""
  one_class = len(np.unique(labels)) < 2
  return {"accuracy": float(np.mean((probs >= 0.5) == (labels == 1))),
          "auc": np.nan if one_class else float(sk_metrics.roc_auc_score(labels, probs)),
          "ap": np.nan if one_class else float(sk_metrics.average_precision_score(labels, probs))}


def evaluate(run: Run, datasets: Sequence[str], *, degradations: bool = False,
             **options) -> Dict[str, Dict[str, float]]:
  """{dataset: summary} for each test dataset (GenImage's cross-generator row of the run)
  and, with `degradations`, {'<first dataset> | <degradation>': summary} for each of the
  paper's degradations of the first dataset (its degraded-image row)."""
  predict = predictor(run)
  out = {name: summarize(*scores(run, name, predict=predict, **options)) for name in datasets}
  if degradations:
    for name in genimage.DEGRADATIONS:
      out[f"{datasets[0]} | {name}"] = summarize(*scores(
          run, datasets[0], degradation=name, predict=predict, **options))
  return out


def heatmap(matrix: np.ndarray, rows: List[str], columns: List[str], path: str,
            title: str = "accuracy (%)") -> str:
  """Writes the cross-generator matrix (train generator × test generator) as an annotated
  PNG heat map to `path`; returns `path`."""
  matrix = np.asarray(matrix, np.float64)
  if matrix.shape != (len(rows), len(columns)):
    raise ValueError(f"matrix of shape {matrix.shape}: expected ({len(rows)}, {len(columns)}) "
                     "for the row and column names")
  percent = 100 * matrix
  fig = Figure(figsize=(2.5 + 1.1 * len(columns), 2.2 + 0.7 * len(rows)))
  ax = fig.add_subplot()
  im = ax.imshow(percent, cmap="viridis", vmin=50 if np.nanmin(percent) >= 50 else 0, vmax=100)
  ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
  ax.set_yticks(range(len(rows)), rows)
  ax.set_xlabel("test generator")
  ax.set_ylabel("train generator")
  for i in range(len(rows)):
    for j in range(len(columns)):
      ax.text(j, i, f"{percent[i, j]:.1f}", ha="center", va="center",
              color="white" if percent[i, j] < 75 else "black", fontsize=9)
  fig.colorbar(im, ax=ax)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path
