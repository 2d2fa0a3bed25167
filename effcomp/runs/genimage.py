"""mini-GenImage: one effcomp generator's samples beside the real images it learned from, in
GenImage's folder layout, so `genimage_mini_<kind>` datasets (`effcomp.data.genimage`) and
the detectors read them as they read the real benchmark.

  run = runs.open("workdirs/bench_ar/ar")
  genimage.write_generator(run, "ar", "data/mini_genimage", num_train=500, num_val=200)
  # → data/mini_genimage/effcomp_ar/{train,val}/{ai,nature}/*.png + provenance.json

As GenImage pairs each generator's images with ImageNet images of the same classes, the
generated images here are drawn for the labels of the real images beside them (a random
subset of the run's training split for `train`, of its evaluation split for `val`). Real
images are resized to the generated size the way the generator's training saw them
(`diffusion.to_model_space`, bilinear) and every image is written as PNG, so neither size
nor compression tells the classes apart. `provenance.json` records the run, its task and
model, the sampler, steps, guidance, seed, the effcomp commit and the date.
"""

import datetime
import json
import os
from typing import Any, Dict, Optional

import numpy as np
from PIL import Image

from effcomp.data import genimage, sources
from effcomp.data.pipeline import read_batch
from effcomp.runs import sample
from effcomp.runs.run import Run
from effcomp.tasks import diffusion
from effcomp.train import run_info

CLASS_CONDITIONAL_TASKS = ("diffusion", "ar_image")
SPLITS = (("train", "train_split"), ("val", "eval_split"))  # folder, config.data field


def _write_pngs(folder: str, images: np.ndarray, start: int) -> None:
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        os.path.join(folder, f"{start + i:06d}.png"))


def write_generator(run: Run, kind: str, root: str, *, num_train: int, num_val: int,
                    guidance_scale: float = 1.0, sampler: Optional[str] = None,
                    steps: str = "250", seed: int = 0, batch_size: int = 250,
                    **ar_options) -> Dict[str, Any]:
  """Writes `<root>/effcomp_<kind>/` from the class-conditional image `run` (see the module
  docstring); returns the provenance it records. Never overwrites: the folder must not
  exist. `ar_options`: `sample.class_images`' (temperature, top_k, top_p, vf_source)."""
  if kind not in genimage.MINI_KINDS:
    raise ValueError(f"kind={kind!r}: expected one of {genimage.MINI_KINDS}")
  if run.task not in CLASS_CONDITIONAL_TASKS:
    raise ValueError(f"run {run.workdir!r} trained task {run.task!r}: mini-GenImage samples "
                     f"class-conditional image runs ({', '.join(CLASS_CONDITIONAL_TASKS)})")
  if min(num_train, num_val, batch_size) < 1:
    raise ValueError(f"num_train={num_train}, num_val={num_val}, batch_size={batch_size}: "
                     "expected ≥ 1")
  out = os.path.join(root, genimage.GENERATORS[f"mini_{kind}"][0])
  if os.path.exists(out):
    raise FileExistsError(f"{out} exists: choose another root (nothing is overwritten)")
  context = sample.sampling_context(run)
  d = run.config.data
  rng = np.random.default_rng(seed)
  written = 0
  for (folder, field), count in zip(SPLITS, (num_train, num_val)):
    split = d[field]
    source = sources.get_source(d.name, split, data_dir=d.data_dir, manual_dir=d.manual_dir)
    if len(source) < count:
      raise ValueError(f"{d.name}:{split} has {len(source)} images; {count} requested")
    chosen = np.sort(rng.permutation(len(source))[:count])
    for start in range(0, count, batch_size):
      real = read_batch(source, chosen[start:start + batch_size])
      fake = sample.class_images(run, real["label"], guidance_scale=guidance_scale,
                                 sampler=sampler, steps=steps, seed=seed + written,
                                 context=context, **ar_options)
      written += len(fake)
      side = fake.shape[1]
      real_images = np.asarray(diffusion.to_uint8(diffusion.to_model_space(
          np.asarray(real["image"]), side)))
      if real_images.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real images {real_images.shape[1:]} vs generated "
                         f"{fake.shape[1:]}: expected one shape")
      _write_pngs(os.path.join(out, folder, "ai"), fake, start)
      _write_pngs(os.path.join(out, folder, "nature"), real_images, start)
  provenance = {
      "kind": kind, "run": os.path.abspath(run.workdir), "task": run.task,
      "model": run.config.model.name, "real": f"{d.name}:{d.train_split}/{d.eval_split}",
      "num_train": num_train, "num_val": num_val, "guidance_scale": guidance_scale,
      "sampler": sampler, "steps": steps, "seed": seed, **ar_options,
      "effcomp_commit": run_info.git_commit(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  with open(os.path.join(out, "provenance.json"), "w") as f:
    json.dump(provenance, f, indent=2)
  return provenance
