"""Diffusion super-resolution (ResShift process; DiT-SR or ResShift U-Net denoisers).

Pairs come from HR images as in the `sr` task (`effcomp.tasks.sr.random_pair`: a random
`patch_size`² HR patch, dihedral augmentation, LR from MATLAB bicubic or — the real-world
setting, the default — Real-ESRGAN's second-order degradation). On the device, in pixel
space (the images in [−1, 1], ResShift's `mean 0.5, std 0.5`): x_0 = HR, y = the LR
upsampled to the HR size (bicubic; the reference's F.interpolate(mode='bicubic')), and the
loss is `effcomp.diffusion.resshift.training_loss` with the model
`model(x_t_scaled, t, y, train)` — the LR condition is y itself, concatenated to x_t
(DiT-SR's `cond_lq` with lq_size = image_size).

Evaluation: a centred `eval_patch`² crop of each eval image, degraded the same way with a
seed derived from the crop's bytes (the same LR in every run), sampled by the full T-step
chain from a fixed noise (`eval_seed`); PSNR / SSIM on Y with `scale` border pixels
cropped, 8-bit output as BasicSR; plus the x_0 MSE at a fixed (t, ε) draw.

The run's samplers and its teacher API for distillation: `ResShiftTeacher`
(`make_teacher(model, params, config)` of an opened run): `predict_x0(x_t, y, t)` at any
timestep, `sample(y, rng)`, `trajectory(y, rng)` — the whole chain (states and x_0
predictions) — and `upscale(lr, rng, tile)` for uint8 images.
Latent-space training (ResShift's and DiT-SR's VQ-f4 latents) is not wired in here: the
process functions support it (`latent=True`), the task trains in pixel space.
"""

import dataclasses
import functools
import zlib
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from effcomp.data import degradations
from effcomp.diffusion import resshift
from effcomp.metrics import image as image_metrics
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks import sr
from effcomp.tasks.base import Task, task_config


EvalMetrics = sr.EvalMetrics  # loss, PSNR, SSIM


def task_defaults() -> ml_collections.ConfigDict:
  """Fields `config.task` may hold (defaults: DiT-SR's process; CPU-size patches)."""
  return ml_collections.ConfigDict({
      "name": "diffusion_sr", "scale": 4, "patch_size": 64, "augment": True,
      "degradation": "realesrgan", "eval_patch": 128, "steps": 15, "kappa": 2.0,
      "min_noise_level": 0.04, "etas_end": 0.99, "power": 0.3, "prediction": "xstart",
      "weighted_mse": False, "normalize_input": True, "eval_seed": 0})


def schedule_of(c: ml_collections.ConfigDict) -> resshift.ResShiftSchedule:
  return resshift.create(c.steps, c.kappa, c.min_noise_level, c.etas_end, c.power)


def process_args(c: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The `resshift` keyword arguments of the task fields (pixel space)."""
  return dict(prediction=c.prediction, normalize_input=c.normalize_input, latent=False)


def to_model_space(images: jax.Array) -> jax.Array:
  """uint8 → float32 in [−1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def upsample_lr(lr: jax.Array, scale: int) -> jax.Array:
  """y: the LR [B, h, w, C] in model space, bicubic-upsampled to [B, h·s, w·s, C]."""
  b, h, w, ch = lr.shape
  return jax.image.resize(lr, (b, h * scale, w * scale, ch), "cubic")


def model_pair(hr: jax.Array, lr: jax.Array, scale: int) -> Tuple[jax.Array, jax.Array]:
  """(x_0, y) in model space from uint8 HR [B, H, W, C] and LR [B, H/s, W/s, C]."""
  return to_model_space(hr), upsample_lr(to_model_space(lr), scale)


def to_uint8(x: jax.Array) -> jax.Array:
  """[−1, 1] → uint8 (clipped, rounded)."""
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def pad_multiple(model) -> int:
  """The HR side multiple a U-shaped denoiser needs: 2^(levels−1)·window_size."""
  return 2 ** (len(model.channel_mult) - 1) * model.window_size


def eval_pair(image: np.ndarray, c: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """The centred eval crop and its LR, bicubic or Real-ESRGAN with a seed from its bytes."""
  record = {}
  if c.degradation == "bicubic":
    pair = sr.center_pair(image, c)
  else:
    hr = sr.center_pair(image, c)["hr"]
    seed = zlib.crc32(np.ascontiguousarray(hr).tobytes()) + c.eval_seed
    pair = sr.real_esrgan_pair(hr, np.random.default_rng(seed), c.scale, record)
  return {**pair, "severity": degradations.degradation_severity(record)}


def check_config(c: ml_collections.ConfigDict, model) -> None:
  sr.check_config(c)
  sr.check_model_scale(model, c.scale)
  if c.prediction not in resshift.PREDICTIONS:
    raise ValueError(f"config.task.prediction={c.prediction!r}: expected one of "
                     f"{resshift.PREDICTIONS}")
  m = pad_multiple(model)
  for name in ("patch_size", "eval_patch"):
    if c[name] % m:
      raise ValueError(f"config.task.{name}={c[name]}: expected a multiple of {m} "
                       f"(2^(levels−1)·window_size of config.model)")


@TASKS.register("diffusion_sr")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A residual-shifting diffusion SR `Task` for `model` (module docstring)."""
  del teacher_model
  c = task_config(config, task_defaults())
  check_config(c, model)
  schedule = schedule_of(c)
  process = process_args(c)

  def init_fn(rng, batch):
    x = to_model_space(jnp.asarray(batch["hr"]))
    return model.init({"params": rng, "dropout": rng}, x, jnp.zeros(x.shape[:1], jnp.int32), x)

  def denoiser(params, y, train, rng):
    return lambda x_t, t: model.apply({"params": params}, x_t, t, y, train=train,
                                      rngs={"dropout": rng})

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del teacher_variables, step
    x0, y = model_pair(batch["hr"], batch["lr"], c.scale)
    rng_loss, rng_drop = jax.random.split(rng)
    loss, metrics = resshift.training_loss(rng_loss, denoiser(params, y, True, rng_drop), x0,
                                           y, schedule, weighted=c.weighted_mse, **process)
    return jnp.mean(loss), (model_state, {"mse": jnp.mean(metrics["mse"])})

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step, teacher_variables
    x0, y = model_pair(batch["hr"], batch["lr"], c.scale)
    key = jax.random.key(c.eval_seed)
    fn = denoiser(params, y, False, key)
    loss, _ = resshift.training_loss(key, fn, x0, y, schedule, weighted=c.weighted_mse,
                                     **process)
    out = resshift.sample(key, fn, y, schedule, clip=True, **process)
    sr8 = to_uint8(out).astype(jnp.float32)
    hr8 = batch["hr"].astype(jnp.float32)
    return EvalMetrics.single_from_model_output(
        loss=loss, psnr=image_metrics.psnr_y_batch(sr8, hr8, c.scale),
        ssim=image_metrics.ssim_y_batch(sr8, hr8, c.scale), mask=batch["mask"])

  return Task(
      model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn, eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source, summary_metric="psnr",
      train_example_transform=lambda example, rng: sr.random_pair(example["image"], rng, c),
      eval_example_transform=lambda example, rng: eval_pair(example["image"], c))


@dataclasses.dataclass(frozen=True)
class ResShiftTeacher:
  """A trained residual-shifting SR model as a teacher (for one-step distillation).

  All arrays are in model space ([−1, 1], NHWC); `y` is the LR upsampled to the HR size
  (`upsample_lr`). The methods compile once per input shape.
  """
  model: Any
  params: Any
  schedule: resshift.ResShiftSchedule
  config: ml_collections.ConfigDict  # the task fields

  @property
  def scale(self) -> int:
    return self.config.scale

  def _fn(self, y):
    return lambda x, t: self.model.apply({"params": self.params}, x, t, y)

  @functools.cached_property
  def _predict_x0(self):
    return jax.jit(lambda x_t, y, t: resshift.denoise(self._fn(y), x_t, y, t, self.schedule,
                                                      **process_args(self.config)))

  def _sampler(self, trajectory: bool):
    return jax.jit(lambda y, rng: resshift.sample(rng, self._fn(y), y, self.schedule, clip=True,
                                                  return_trajectory=trajectory,
                                                  **process_args(self.config)))

  @functools.cached_property
  def _sample_fn(self):
    return self._sampler(False)

  @functools.cached_property
  def _trajectory(self):
    return self._sampler(True)

  def predict_x0(self, x_t: jax.Array, y: jax.Array, t: jax.Array) -> jax.Array:
    """The teacher's x_0 at timesteps t ([B] or a scalar, 0 … T−1) from the unscaled state
    x_t."""
    return self._predict_x0(x_t, y, jnp.broadcast_to(jnp.asarray(t, jnp.int32), x_t.shape[:1]))

  def sample(self, y: jax.Array, rng: jax.Array) -> jax.Array:
    """x_0 sampled by the whole chain from the prior at y (clipped to [−1, 1])."""
    return self._sample_fn(y, rng)

  def trajectory(self, y: jax.Array, rng: jax.Array) -> Dict[str, jax.Array]:
    """The full chain from the prior at y: {'x0', 'x_t' [T+1, …], 'pred_x0' [T, …], 't'}."""
    x0, traj = self._trajectory(y, rng)
    return {"x0": x0, **traj}

  def upscale(self, lr: np.ndarray, rng: jax.Array, tile: int = 0, overlap: int = 8
              ) -> np.ndarray:
    """uint8 SR [H·s, W·s, 3] of a uint8 LR [H, W, 3], sampled in `tile`-pixel LR windows
    (0: whole), each reflect-padded to the denoiser's size multiple."""
    return tiled_sample(self.sample, self.model, self.scale, lr, rng, tile, overlap)


def tiled_sample(sample: Callable[[jax.Array, jax.Array], jax.Array], model, scale: int,
                 lr: np.ndarray, rng: jax.Array, tile: int = 0, overlap: int = 8) -> np.ndarray:
  """uint8 SR [H·s, W·s, 3] of a uint8 LR [H, W, 3] by `sample(y, rng)` → x_0 in model
  space, in `tile`-pixel LR windows (0: whole), each reflect-padded to `model`'s size
  multiple (`pad_multiple`)."""
  s, m = scale, pad_multiple(model)

  def run(window: np.ndarray) -> np.ndarray:
    h, w = window.shape[:2]
    y = upsample_lr(to_model_space(jnp.asarray(window)[None]), s)
    pad = ((0, 0), (0, -h * s % m), (0, -w * s % m), (0, 0))
    out = sample(jnp.pad(y, pad, mode="reflect"), rng)[:, :h * s, :w * s]
    return np.asarray(to_uint8(out)[0])

  return sr.tiled_upscale(run, lr, s, tile, overlap)


def make_teacher(model, params, config: ml_collections.ConfigDict) -> ResShiftTeacher:
  """The `ResShiftTeacher` of a denoiser trained with `config` (its run's config), e.g. of
  `effcomp.runs.open(workdir)`'s model and params (the EMA when the run kept one)."""
  c = task_config(config, task_defaults())
  return ResShiftTeacher(model, params, schedule_of(c), c)


@MODEL_INPUTS.register("diffusion_sr")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """(x_t, t, y) of one eval-sized crop."""
  del model
  return eval_crop_inputs(task_config(config, task_defaults()))


def eval_crop_inputs(c: ml_collections.ConfigDict) -> tuple:
  """(x_t, t, y) zeros of one eval-sized crop of task fields `c` (a denoiser's call)."""
  side = c.eval_patch or c.patch_size
  x = jnp.zeros((1, side, side, 3))
  return x, jnp.zeros((1,), jnp.int32), x
