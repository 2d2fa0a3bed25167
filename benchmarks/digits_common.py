"""What the digit-generation benchmarks (`udit.py`, `elasticdit.py`) share: the embedded
digits, the proxy classifier that scores samples, and sample grids."""

import os
import shutil

import numpy as np
from PIL import Image

from effcomp import config as config_lib
from effcomp import runs
from effcomp.data import sources
from effcomp.metrics import fid, proxy
from effcomp.tasks import diffusion

RESIZE = 16  # the classifier sees digits as the diffusion models do: bilinear 8×8 → 16×16


def digits(split):
  """uint8 images [N, 8, 8, 1] and labels [N] of the digits `split`."""
  source = sources.get_source("digits", split)
  examples = [source[i] for i in range(len(source))]
  return (np.stack([e["image"] for e in examples]),
          np.asarray([e["label"] for e in examples], np.int32))


def train_classifier(workdir: str, steps: int):
  """The proxy's classifier (`configs/demo.py` CNN on 16×16 digits), trained afresh in
  `workdir`: (test accuracy, features_fn, logits_fn)."""
  config = config_lib.load(f"configs/demo.py:model=cnn,steps={steps}",
                           **{"task.resize": RESIZE, "train.progress_bar": False})
  shutil.rmtree(workdir, ignore_errors=True)
  summary = runs.train(config, workdir)
  run = runs.open(workdir, config)
  return (summary["eval"]["accuracy"], proxy.proxy_features_fn(run.model, run.variables, RESIZE),
          proxy.proxy_logits_fn(run.model, run.variables, RESIZE))


def scores(images, labels, real_stats, features_fn, logits_fn):
  """proxy-FID against `real_stats` and class accuracy of (generated) images."""
  return {"proxy-FID": fid.frechet_distance(*fid.feature_statistics(features_fn(images)),
                                            *real_stats),
          "class accuracy": proxy.class_accuracy(logits_fn, images, labels)}


def save_grid(samples, labels, path, per_class=10):
  """One row per class, `per_class` samples each, 2× nearest-upscaled, as a PNG."""
  picked = np.concatenate([samples[labels == c][:per_class] for c in np.unique(labels)])
  grid = diffusion.image_grid(picked, rows=len(np.unique(labels)))[..., 0]
  image = Image.fromarray(grid)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  image.resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)
