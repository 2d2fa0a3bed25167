"""mini-GenImage: one effcomp generator's samples beside the real images it learned from, in
GenImage's folder layout, so `genimage_mini_<kind>` datasets (`effcomp.data.genimage`) and
the detectors read them as they read the real benchmark.

  run = runs.open("workdirs/bench_ar/ar")
  genimage.write_generator(run, "ar", "data/mini_genimage", num_train=500, num_val=200)
  # → data/mini_genimage/effcomp_ar/{train,val}/{ai,nature}/*.png + provenance.json
  genimage.write_sr_generator(runs.open("workdirs/ditsr"), "diffusion_sr", "data/mini_genimage",
                              num_train=500, num_val=200)   # SR output vs HR patches

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

import jax
import ml_collections
import numpy as np
from PIL import Image

from effcomp.data import genimage, sources
from effcomp.data.pipeline import read_batch
from effcomp.runs import sample, upscale
from effcomp.runs.run import Run
from effcomp.tasks import diffusion, sr
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
  out = _new_folder(run, kind, root, CLASS_CONDITIONAL_TASKS, num_train, num_val, batch_size)
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
  return _write_provenance(run, kind, out, num_train=num_train, num_val=num_val,
                           guidance_scale=guidance_scale, sampler=sampler, steps=steps,
                           seed=seed, **ar_options)


def write_sr_generator(run: Run, kind: str, root: str, *, num_train: int, num_val: int,
                       seed: int = 0, tile: int = 0) -> Dict[str, Any]:
  """Writes `<root>/effcomp_<kind>/` from the super-resolution `run` (a `diffusion_sr`,
  `onestep_sr` or `sr` run): `nature` = HR patches of the run's own data, drawn as its
  training draws them (`sr.random_pair`: a `task.patch_size`² patch at a random place of a
  random image, no flips), `ai` = the run's upscaling of that patch's LR (the run's own
  degradation: bicubic or Real-ESRGAN's), one noise draw per image. Both are the same
  size, so the detectors see SR output against the real pixels it stands for (GenImage's
  real/fake pairing, with SR in place of text-to-image). Returns the provenance."""
  out = _new_folder(run, kind, root, upscale.TASKS, num_train, num_val, 1)
  upscale_fn, _ = upscale.upscaler(run, tile=tile, seed=seed)
  c = ml_collections.ConfigDict(run.config.task.to_dict())
  c.augment = False
  d = run.config.data
  rng, key = np.random.default_rng(seed), jax.random.key(seed)
  for (folder, field), count in zip(SPLITS, (num_train, num_val)):
    source = sources.get_source(d.name, d[field], data_dir=d.data_dir, manual_dir=d.manual_dir)
    for i, index in enumerate(rng.integers(0, len(source), count)):
      pair = sr.random_pair(np.asarray(source[int(index)]["image"]), rng, c)
      fake = np.asarray(upscale_fn(pair["lr"], rng=jax.random.fold_in(key, i)))
      if fake.shape != pair["hr"].shape:
        raise ValueError(f"upscaled {fake.shape} vs HR {pair['hr'].shape}: expected one shape")
      _write_pngs(os.path.join(out, folder, "ai"), fake[None], i)
      _write_pngs(os.path.join(out, folder, "nature"), pair["hr"][None], i)
    key = jax.random.fold_in(key, count)
  return _write_provenance(run, kind, out, num_train=num_train, num_val=num_val, seed=seed,
                           patch_size=c.patch_size, degradation=c.get("degradation", "bicubic"))


def _new_folder(run: Run, kind: str, root: str, tasks, num_train: int, num_val: int,
                batch_size: int) -> str:
  """`<root>/effcomp_<kind>`, checked: a known kind, a run of one of `tasks`, counts ≥ 1, and
  no such folder yet (nothing is overwritten)."""
  if kind not in genimage.MINI_KINDS:
    raise ValueError(f"kind={kind!r}: expected one of {genimage.MINI_KINDS}")
  if run.task not in tasks:
    raise ValueError(f"run {run.workdir!r} trained task {run.task!r}: expected a run of "
                     f"{', '.join(tasks)}")
  if min(num_train, num_val, batch_size) < 1:
    raise ValueError(f"num_train={num_train}, num_val={num_val}, batch_size={batch_size}: "
                     "expected ≥ 1")
  out = os.path.join(root, genimage.GENERATORS[f"mini_{kind}"][0])
  if os.path.exists(out):
    raise FileExistsError(f"{out} exists: choose another root (nothing is overwritten)")
  return out


def _write_provenance(run: Run, kind: str, out: str, **settings) -> Dict[str, Any]:
  d = run.config.data
  provenance = {
      "kind": kind, "run": os.path.abspath(run.workdir), "task": run.task,
      "model": run.config.model.name, "real": f"{d.name}:{d.train_split}/{d.eval_split}",
      **settings, "effcomp_commit": run_info.git_commit(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  with open(os.path.join(out, "provenance.json"), "w") as f:
    json.dump(provenance, f, indent=2)
  return provenance
