"""Single-image super-resolution: LR → HR regression, optionally distilled from a teacher.

Training pairs are made on the host from HR images (BasicSR's `PairedImageDataset` with
LR generated from the HR, as its DIV2K recipes do offline):

  * a random `patch_size`² HR patch (BasicSR `gt_size`) at an offset that is a multiple
    of `scale`, so the LR patch is exactly the matching window of the LR of the whole
    image — the bicubic LR is computed from the patch plus a `scale`·4-pixel margin
    (more than the antialiased cubic kernel's reach of 2·`scale`), then cropped
    (`bicubic_pair`; tested equal to degrading the whole image, as BasicSR's pre-made LR
    sets are);
  * random flips and 90° rotations of the pair (`augment`: BasicSR `augment(hflip=True,
    rotation=True)`, the 8 dihedral transforms);
  * the LR: `degradation='bicubic'` — MATLAB `imresize` (`effcomp.data.imresize`), or
    'realesrgan' — Real-ESRGAN's random second-order pipeline on the HR patch
    (`effcomp.data.degradations`, `realesrgan_*` fields), quantised to uint8 as the
    reference does.

The model maps LR float [B, h, w, 3] in [0, 1] to [B, h·s, w·s, 3]; the loss is L1 to the
HR in [0, 1] (BasicSR `L1Loss`, reduction mean). Distillation (`kd`, with
`config.teacher.workdir` naming a finished SR run, frozen): 'output' adds
`kd_weight`·L1(student, teacher) on the same LR (the plain output KD of DUKD's baseline);
'dukd' is Data Upcycling KD (`effcomp.losses.dukd.dukd_loss`: the reference EDSR weights,
zoom-in tiles (`dukd_tiles` per image) with invertible augmentations, and zoom-out). Evaluation (in the training loop): a centred `eval_patch`²
crop of every eval image (fixed shapes; 0 = the whole image, for equal-size sets),
output clipped to [0, 1] and rounded to 8 bits as BasicSR's `tensor2img`, PSNR and SSIM on
the Y channel with `scale` border pixels cropped (`effcomp.metrics.image`). Whole-image
numbers per test set: `experiments/evaluate.py` (`evaluate_images`).
"""

from typing import Any, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metrics as clu_metrics

from effcomp.data import degradations, imresize, sources
from effcomp.data.image_inputs import images_to_float
from effcomp.losses import dukd
from effcomp.metrics import image as image_metrics
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks.base import Task, task_config

DEGRADATIONS = ("bicubic", "realesrgan")
KD_METHODS = ("none", "output", "dukd")


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  psnr: clu_metrics.Average.from_output("psnr")
  ssim: clu_metrics.Average.from_output("ssim")


def task_defaults() -> ml_collections.ConfigDict:
  """Fields `config.task` may hold for this task (set them in the config file)."""
  return ml_collections.ConfigDict({
      "name": "sr", "scale": 2, "patch_size": 96, "augment": True, "degradation": "bicubic",
      "eval_patch": 192, "kd": "none", "kd_weight": 1.0, "dukd_tiles": 1})


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
  """The image cropped to height and width multiples of `scale` (BasicSR `mod_crop`)."""
  h, w = image.shape[:2]
  return image[:h - h % scale, :w - w % scale]


def bicubic_pair(image: np.ndarray, top: int, left: int, size: int, scale: int
                 ) -> Dict[str, np.ndarray]:
  """HR patch [size, size, 3] at (top, left) (multiples of `scale`) and its MATLAB-bicubic
  LR [size/s, size/s, 3], equal to the window of `bicubic_degrade(modcrop(image))`."""
  if top % scale or left % scale or size % scale:
    raise ValueError(f"top={top}, left={left}, size={size}: expected multiples of "
                     f"scale={scale}")
  image = modcrop(image, scale)
  h, w = image.shape[:2]
  if top < 0 or left < 0 or top + size > h or left + size > w:
    raise ValueError(f"patch top={top}, left={left}, size={size} does not fit in the "
                     f"modcropped {h}×{w} image")
  margin = 4 * scale
  y0, x0 = max(0, top - margin), max(0, left - margin)
  y1, x1 = min(h, top + size + margin), min(w, left + size + margin)
  lr = imresize.bicubic_degrade(image[y0:y1, x0:x1], scale)
  ly, lx, n = (top - y0) // scale, (left - x0) // scale, size // scale
  return {"hr": image[top:top + size, left:left + size], "lr": lr[ly:ly + n, lx:lx + n]}


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
  """Transform k in 0..7 of the square's symmetry group: k & 3 quarter turns, then a
  horizontal flip when k ≥ 4 (the 8 outcomes of BasicSR's hflip/vflip/rot90 augment)."""
  image = np.rot90(image, k & 3)
  return np.ascontiguousarray(image[:, ::-1] if k >= 4 else image)


def random_pair(image: np.ndarray, rng: np.random.Generator, c: ml_collections.ConfigDict
                ) -> Dict[str, np.ndarray]:
  """A training pair (uint8 `hr` [P, P, 3], `lr` [P/s, P/s, 3]) from an HR image, and the
  LR's `severity` [3] (`degradations.degradation_severity`; zeros for bicubic)."""
  s, size = c.scale, c.patch_size
  image = modcrop(np.asarray(image), s)
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f"config.task.patch_size={size} is larger than an image of {h}×{w}")
  top = int(rng.integers(0, (h - size) // s + 1)) * s
  left = int(rng.integers(0, (w - size) // s + 1)) * s
  record = {}
  if c.degradation == "bicubic":
    pair = bicubic_pair(image, top, left, size, s)
  else:
    pair = real_esrgan_pair(image[top:top + size, left:left + size], rng, s, record)
  if c.augment:
    k = int(rng.integers(0, 8))
    pair = {name: dihedral(x, k) for name, x in pair.items()}
  return {**pair, "severity": degradations.degradation_severity(record)}


def real_esrgan_pair(hr: np.ndarray, rng, scale: int, record: dict) -> Dict[str, np.ndarray]:
  """{'hr', 'lr'} uint8 with Real-ESRGAN's degradation; `record` gets what it drew."""
  lr = degradations.real_esrgan_degrade(hr, rng, degradations.RealESRGANConfig(scale=scale),
                                        record)
  return {"hr": hr, "lr": np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8)}


def center_pair(image: np.ndarray, c: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """The eval pair: the centred `eval_patch`² HR crop (the whole modcropped image when 0)
  and its bicubic LR."""
  s = c.scale
  image = modcrop(np.asarray(image), s)
  h, w = image.shape[:2]
  if not c.eval_patch:
    return {"hr": image, "lr": imresize.bicubic_degrade(image, s)}
  size = c.eval_patch
  if h < size or w < size:
    raise ValueError(f"config.task.eval_patch={size} is larger than an image of {h}×{w}")
  top, left = (h - size) // 2 // s * s, (w - size) // 2 // s * s
  return bicubic_pair(image, top, left, size, s)


def quantize(x: jax.Array) -> jax.Array:
  """Model output → the 8-bit image BasicSR measures (`tensor2img`: clip to [0, 1],
  ×255, round), as float32 in [0, 255]."""
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0)


def check_config(c: ml_collections.ConfigDict) -> None:
  if c.scale not in (2, 3, 4):
    raise ValueError(f"config.task.scale={c.scale!r}: expected 2, 3 or 4")
  if c.patch_size <= 0 or c.patch_size % c.scale:
    raise ValueError(f"config.task.patch_size={c.patch_size}: expected a positive multiple "
                     f"of scale={c.scale}")
  if c.eval_patch < 0 or c.eval_patch % c.scale:
    raise ValueError(f"config.task.eval_patch={c.eval_patch}: expected 0 or a multiple of "
                     f"scale={c.scale}")
  if c.degradation not in DEGRADATIONS:
    raise ValueError(f"config.task.degradation={c.degradation!r}: expected one of "
                     f"{DEGRADATIONS}")


def check_model_scale(model, scale: int) -> None:
  if getattr(model, "scale", scale) != scale:
    raise ValueError(f"config.model.scale={model.scale} must equal config.task.scale={scale}")


@TASKS.register("sr")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """An SR `Task` for `model` on sources of HR `image`s (module docstring)."""
  c = task_config(config, task_defaults())
  check_config(c)
  check_model_scale(model, c.scale)
  if c.kd not in KD_METHODS:
    raise ValueError(f"config.task.kd={c.kd!r}: expected one of {KD_METHODS}")
  if c.kd != "none" and teacher_model is None:
    raise ValueError(f"config.task.kd={c.kd!r} needs a teacher: set config.teacher.workdir")
  if teacher_model is not None:
    check_model_scale(teacher_model, c.scale)
  s = c.scale

  def init_fn(rng, batch):
    return model.init({"params": rng, "dropout": rng}, images_to_float(jnp.asarray(batch["lr"])))

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del step
    lr, hr = images_to_float(batch["lr"]), images_to_float(batch["hr"])
    rng_student, rng_kd = jax.random.split(rng)
    new_state = {}

    def student(x):  # BatchNorm statistics (LIPT's training form) come from the last call
      out, updates = model.apply({"params": params, **model_state}, x, train=True,
                                 rngs={"dropout": rng_student}, mutable=list(model_state))
      new_state.update(updates)
      return out

    teacher = lambda x: teacher_model.apply(teacher_variables, x)  # stop_gradient in dukd
    if c.kd == "dukd":
      loss, metrics = dukd.dukd_loss(student, teacher, hr, lr, rng_kd, s,
                                     num_tiles=c.dukd_tiles)
    elif c.kd == "output":
      loss, metrics = dukd.plain_kd_loss(student, teacher, hr, lr,
                                         weights={"pix": 1.0, "kd": c.kd_weight})
    else:
      loss, metrics = dukd.l1_loss(student, hr, lr)
    return loss, ({**model_state, **new_state},
                  {k: v for k, v in metrics.items() if k != "loss"})

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del step, teacher_variables
    sr = model.apply({"params": params, **model_state}, images_to_float(batch["lr"]))
    hr = images_to_float(batch["hr"])
    loss = jnp.mean(jnp.abs(sr - hr), axis=(1, 2, 3))
    sr8, hr8 = quantize(sr), hr * 255.0
    return EvalMetrics.single_from_model_output(
        loss=loss, psnr=image_metrics.psnr_y_batch(sr8, hr8, s),
        ssim=image_metrics.ssim_y_batch(sr8, hr8, s), mask=batch["mask"])

  def train_pair(example, rng):
    return random_pair(example["image"], rng, c)

  def eval_pair(example, rng):
    del rng
    return center_pair(example["image"], c)

  return Task(
      model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn, eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source, summary_metric="psnr",
      train_example_transform=train_pair, eval_example_transform=eval_pair,
      teacher_init_fn=(None if teacher_model is None else
                       lambda rng, batch: teacher_model.init(
                           {"params": rng, "dropout": rng}, images_to_float(jnp.asarray(batch["lr"])))))


def upscale(model, variables, lr: np.ndarray, tile: int = 0, overlap: int = 8) -> np.ndarray:
  """The uint8 SR [H·s, W·s, 3] of one uint8 LR image [H, W, 3], whole or in tiles.

  tile > 0: the LR is cut into tile×tile windows overlapping by `overlap` pixels (the
  last ones shifted inside the image), each upscaled alone and the centres kept (the
  overlaps split evenly), so memory stays bounded for large photos; 0: in one pass.
  Each distinct window shape compiles once.
  """
  fn = jax.jit(model.apply)
  run = lambda x: np.asarray(quantize(fn(variables, images_to_float(jnp.asarray(x)[None])))[0]
                             ).astype(np.uint8)
  return tiled_upscale(run, lr, model.scale, tile, overlap)


def tiled_upscale(run, lr: np.ndarray, s: int, tile: int = 0, overlap: int = 8
                  ) -> np.ndarray:
  """`run(window) -> uint8 SR of the window` over a uint8 LR [H, W, 3], in tiles as
  `upscale` describes (any upscaler: a regression model, a diffusion sampler)."""
  lr = np.asarray(lr)
  if lr.ndim != 3 or lr.shape[-1] != 3 or lr.dtype != np.uint8:
    raise ValueError(f"lr: {lr.dtype} {lr.shape}; expected uint8 [H, W, 3]")
  h, w = lr.shape[:2]
  if tile <= 0 or (h <= tile and w <= tile):
    return run(lr)
  if overlap < 0 or 2 * overlap >= tile:
    raise ValueError(f"overlap={overlap}: expected 0 ≤ 2·overlap < tile={tile}")
  out = np.zeros((h * s, w * s, 3), np.uint8)
  step = tile - 2 * overlap
  starts = lambda n: sorted({min(i, max(n - tile, 0)) for i in range(0, max(n - 2 * overlap, 1),
                                                                     step)})
  for y in starts(h):
    for x in starts(w):
      window = lr[y:y + tile, x:x + tile]
      sr = run(window)
      # Keep the window's centre: drop `overlap` pixels on every side that has a neighbour.
      top = 0 if y == 0 else overlap
      left = 0 if x == 0 else overlap
      out[(y + top) * s:(y + window.shape[0]) * s, (x + left) * s:(x + window.shape[1]) * s] = \
          sr[top * s:, left * s:]
  return out



def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
  """The bicubic baseline: MATLAB `imresize(lr, scale)` of a uint8 image, as uint8."""
  up = imresize.imresize(np.asarray(lr) / 255.0, scale=scale)
  return np.floor(np.clip(up, 0, 1) * 255 + 0.5).astype(np.uint8)


def evaluate_images(upscale_fn, images, scale: int) -> Dict[str, Any]:
  """PSNR / SSIM (Y, `scale` border pixels cropped) of `upscale_fn(lr) -> sr` (uint8) over
  HR `images` (uint8 [H, W, 3]; modcropped, LR = MATLAB bicubic), as BasicSR's test
  script measures a set: the per-image values and their means."""
  psnrs, ssims = [], []
  for image in images:
    hr = modcrop(np.asarray(image), scale)
    out = upscale_fn(imresize.bicubic_degrade(hr, scale))
    if out.shape != hr.shape:
      raise ValueError(f"upscale_fn returned {out.shape} for an HR of {hr.shape}")
    psnrs.append(image_metrics.psnr(out, hr, scale))
    ssims.append(image_metrics.ssim(out, hr, scale))
  return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "images": len(psnrs),
          "psnr_per_image": psnrs, "ssim_per_image": ssims}


@MODEL_INPUTS.register("sr")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """A 16×16 LR image (SR models are fully convolutional or windowed: any size restores)."""
  del config, model
  return (jnp.zeros((1, 16, 16, 3)),)


def evaluate_sets(upscale_fn, scale: int, names, *, data_dir: Optional[str] = None,
                  manual_dir: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
  """{set name: `evaluate_images` result} of `upscale_fn(lr) -> sr` (uint8, whole images)
  on each dataset in `names` (its last split: 'test', or DIV2K's 'validation')."""
  results = {}
  for name in names:
    if name not in sources.DATASETS:
      raise ValueError(f"test set {name!r}: expected one of {sorted(sources.DATASETS)}")
    source = sources.get_source(name, sources.DATASETS[name][1][-1], data_dir=data_dir,
                                manual_dir=manual_dir)
    images = (source[i]["image"] for i in range(len(source)))
    results[name] = evaluate_images(upscale_fn, images, scale)
  return results
