"""Class-conditional diffusion (DiT, U-DiT, …) on images or on autoencoder latents.

The model is `model(x_t, t, y, train=…) -> output` (NHWC; learned sigma doubles the
channels). Variable-size images (ImageNet) are center-cropped to `crop_size` on the host
(ADM/DiT `center_crop_arr`: shorter side resized to the size, then the center; bicubic
here), and flipped left-right at random in training when `flip` (DiT's augmentation).
Images (uint8 [B, H, W, C]) become x_0 on the device:
[0, 255] → [−1, 1], resized to `image_size` (bilinear with antialiasing; 0 keeps them) and,
in latent mode, encoded by a frozen autoencoder. The loss is
`effcomp.diffusion.objectives.training_loss` (DiT: ε prediction with learned sigma on the
linear 1000-step schedule, L_simple + L_vlb); label dropout for classifier-free guidance
happens inside the model (`class_dropout_prob`).

`objective='flow'`: rectified flow (`effcomp.diffusion.flow`; SD3, Esser et al. 2024):
the model predicts the velocity ε − x_0 (no learned sigma), training times t ∈ [0, 1]
from `flow_time_distribution` ('logit_normal' with `flow_logit_mean` / `flow_logit_std`,
SD3's choice and default here: m = 0, s = 1; or 'uniform'), shifted by `flow_shift` (SD3
eq. 23; also the sampling grid's shift). The model sees t · `flow_time_scale` (1000, as
SD3's diffusers pipeline feeds its DiT σ·1000): DiT's sinusoidal timestep embedding was
built for 0…1000 and is nearly constant over [0, 1]. Sampling: 'euler' or 'heun'.

Latent mode: `config.teacher.workdir` names a finished `autoencoder` run (its recorded
model, e.g. `autoencoder_kl`); the trainer restores it frozen, as it does a distillation
teacher, and x_0 = scale · mean of the encoder's posterior, scale = `latent_scale` (0: the
autoencoder's `scaling_factor`). Sampling decodes with the same autoencoder
(`decode_to_images`).

Elastic models (`effcomp.models.dit.elastic.ElasticDiT`, with `configurations()`): each
step trains by the sandwich rule (Yu & Huang, "Universally Slimmable Networks", 2019;
BigNAS's in-place distillation, Yu et al. 2020): the largest configuration on the
objective, then the smallest and `elastic_random` configurations drawn at random, each on
the objective plus `elastic_distill` · MSE to the largest's prediction (stop-gradient) on the
same x_t and t; the loss is their sum. `elastic_depth` / `elastic_patch` (0: the largest)
pick the configuration that evaluation and `sample_images` run.

Evaluation: the same loss, with a fixed noise and timestep draw per eval batch (so runs
and checkpoints compare on equal terms); sample quality is measured by the benchmark and
`experiments/sample.py` (`sample_images`).
"""

from typing import Any, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metrics as clu_metrics

from effcomp.data import crops
from effcomp.diffusion import flow, guidance, objectives, samplers, schedules
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks.base import Task, task_config


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  mse: clu_metrics.Average.from_output("mse")


def task_defaults() -> ml_collections.ConfigDict:
  """Fields `config.task` may hold for this task (set them in the config file)."""
  return ml_collections.ConfigDict({
      "name": "diffusion", "image_size": 0, "objective": "eps", "learn_sigma": True,
      "noise_schedule": "linear", "num_timesteps": 1000, "latent_scale": 0.0,
      "crop_size": 0, "flip": False, "eval_seed": 0, "flow_time_distribution": "logit_normal",
      "flow_logit_mean": 0.0, "flow_logit_std": 1.0, "flow_shift": 1.0,
      "flow_time_scale": 1000.0, "elastic_random": 1, "elastic_distill": 1.0,
      "elastic_depth": 0, "elastic_patch": 0})


def _is_flow(c) -> bool:
  return c.objective == "flow"


def denoiser(model, variables, c, labels: jax.Array, **kwargs):
  """`model_fn(x_t, t)` of the objectives and samplers for the conditional `model`: flow
  times are scaled by `flow_time_scale` (module docstring). kwargs go to `model.apply`."""
  scale = c.flow_time_scale if _is_flow(c) else 1
  return lambda x_t, t, y=labels: model.apply(variables, x_t, t * scale, y, **kwargs)


def is_elastic(model) -> bool:
  return hasattr(model, "configurations")


def inference_configuration(model, c) -> Dict[str, int]:
  """The `model.apply` keywords of the configuration `elastic_depth` / `elastic_patch`
  pick ({} for a plain model)."""
  if not is_elastic(model):
    if c.elastic_depth or c.elastic_patch:
      raise ValueError(f"config.task.elastic_depth={c.elastic_depth}, elastic_patch="
                       f"{c.elastic_patch}: the model {type(model).__name__} is not elastic")
    return {}
  return {"depth": c.elastic_depth or model.depth, "patch_size": c.elastic_patch or
          model.patch_size}


def _schedule(c):
  return None if _is_flow(c) else schedules.create(c.noise_schedule, c.num_timesteps)


def _loss_kwargs(c) -> Dict[str, Any]:
  if not _is_flow(c):
    return {}
  return {"t_distribution": c.flow_time_distribution, "logit_mean": c.flow_logit_mean,
          "logit_std": c.flow_logit_std, "shift": c.flow_shift}


def to_model_space(images: jax.Array, image_size: int) -> jax.Array:
  """uint8 [B, H, W, C] → float32 in [−1, 1], resized to image_size² (0: unchanged)."""
  x = images.astype(jnp.float32) / 127.5 - 1.0
  if image_size and x.shape[1:3] != (image_size, image_size):
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), "bilinear")
  return x


def to_uint8(x: jax.Array) -> jax.Array:
  """[−1, 1] → uint8 [0, 255] (clipped)."""
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def latent_scale(c, autoencoder) -> float:
  return c.latent_scale or float(getattr(autoencoder, "scaling_factor", 1.0))


def encode(autoencoder, variables, x: jax.Array, scale: float) -> jax.Array:
  """scale · posterior mean of the frozen autoencoder: [B, H, W, C] → [B, h, w, latent]."""
  mean, _ = autoencoder.apply(variables, x, method="encode")
  return jax.lax.stop_gradient(mean) * scale


def decode_to_images(autoencoder, variables, z: jax.Array, scale: float) -> jax.Array:
  """Latents (scaled as in training) → uint8 images."""
  return to_uint8(autoencoder.apply(variables, z / scale, method="decode"))


@TASKS.register("diffusion")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A diffusion `Task` for `model`; `teacher_model` is the frozen autoencoder (latent mode)."""
  c = task_config(config, task_defaults())
  if c.objective not in objectives.OBJECTIVES:
    raise ValueError(f"config.task.objective={c.objective!r}: expected one of "
                     f"{objectives.OBJECTIVES}")
  if bool(getattr(model, "learn_sigma", False)) != bool(c.learn_sigma and not _is_flow(c)):
    raise ValueError(f"config.model.learn_sigma={getattr(model, 'learn_sigma', None)} must equal "
                     f"config.task.learn_sigma={c.learn_sigma} (False for objective='flow')")
  if _is_flow(c) and c.flow_time_distribution not in flow.TIME_DISTRIBUTIONS:
    raise ValueError(f"config.task.flow_time_distribution={c.flow_time_distribution!r}: "
                     f"expected one of {flow.TIME_DISTRIBUTIONS}")
  schedule, loss_kwargs = _schedule(c), _loss_kwargs(c)
  elastic = is_elastic(model)
  if elastic and c.elastic_random < 0:
    raise ValueError(f"config.task.elastic_random={c.elastic_random}: expected ≥ 0")
  chosen = inference_configuration(model, c)
  autoencoder = teacher_model
  scale = latent_scale(c, autoencoder) if autoencoder is not None else 1.0

  def x0_of(batch, frozen):
    x = to_model_space(jnp.asarray(batch["image"]), c.image_size)
    return x if autoencoder is None else encode(autoencoder, frozen, x, scale)

  def init_fn(rng, batch):
    del batch  # the model declares its input shape (and checks the data's in training)
    shape = (1, model.input_size, model.input_size, model.in_channels)
    return model.init({"params": rng, "dropout": rng}, jnp.zeros(shape, jnp.float32),
                      jnp.zeros(shape[:1], jnp.int32), jnp.zeros(shape[:1], jnp.int32))

  def losses(params, batch, rng, frozen, train, configuration=None, x0=None):
    """(loss [B], metrics, the model's output) of one configuration (default: the
    inference one); the same rng gives the same t and noise in every configuration."""
    x0 = x0_of(batch, frozen) if x0 is None else x0
    rng_loss, rng_drop = jax.random.split(rng)
    kept = {}

    def model_fn(x_t, t, y=batch["label"]):
      kept["out"] = denoiser(model, {"params": params}, c, y, train=train,
                             rngs={"dropout": rng_drop},
                             **(chosen if configuration is None else configuration))(x_t, t)
      return kept["out"]

    loss, metrics = objectives.training_loss(rng_loss, model_fn, x0, schedule, c.objective,
                                             c.learn_sigma and not _is_flow(c), **loss_kwargs)
    return loss, metrics, kept["out"]

  def sandwich(params, batch, rng, frozen):
    """The sandwich rule (module docstring): loss [B] and metrics."""
    configurations = model.configurations()
    x0 = x0_of(batch, frozen)
    rng, rng_pick = jax.random.split(rng)
    largest = dict(zip(("depth", "patch_size"), configurations[0]))
    loss, metrics, target = losses(params, batch, rng, frozen, True, largest, x0)
    target = jax.lax.stop_gradient(target)
    picks = [jnp.asarray(len(configurations) - 1)] + list(jax.random.randint(
        rng_pick, (c.elastic_random,), 1, len(configurations)))

    def branch(configuration):
      def run(params):
        sub, _, out = losses(params, batch, rng, frozen, True, configuration, x0)
        return sub + c.elastic_distill * jnp.mean(jnp.square(out - target),
                                                  axis=tuple(range(1, out.ndim)))
      return run

    branches = [branch(dict(zip(("depth", "patch_size"), k))) for k in configurations]
    for pick in picks:
      loss = loss + jax.lax.switch(pick, branches, params)
    return loss, metrics

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del step
    if elastic:
      loss, metrics = sandwich(params, batch, rng, teacher_variables)
    else:
      loss, metrics, _ = losses(params, batch, rng, teacher_variables, True)
    out = {"mse": jnp.mean(metrics["mse"])}
    if "vb" in metrics:
      out["vb"] = jnp.mean(metrics["vb"])
    return jnp.mean(loss), (dict(model_state), out)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step
    loss, metrics, _ = losses(params, batch, jax.random.key(c.eval_seed), teacher_variables,
                              False)
    return EvalMetrics.single_from_model_output(loss=loss, mse=metrics["mse"], mask=batch["mask"])

  def crop(example, rng):
    del rng
    return {"image": crops.center_crop(np.asarray(example["image"]), c.crop_size, 1.0),
            "label": example["label"]}

  def flip(batch, rng):
    images = np.asarray(batch["image"])
    mirrored = rng.random(images.shape[0]) < 0.5
    return {**batch, "image": np.where(mirrored[:, None, None, None], images[:, :, ::-1], images)}

  return Task(
      model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn, eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source, summary_metric="loss",
      train_transform=flip if c.flip else None,
      train_example_transform=crop if c.crop_size else None,
      eval_example_transform=crop if c.crop_size else None,
      teacher_init_fn=(None if autoencoder is None else
                       lambda rng, batch: autoencoder.init(
                           {"params": rng, "sample": rng},
                           to_model_space(jnp.asarray(batch["image"]), c.image_size))))


@MODEL_INPUTS.register("diffusion")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """(x_t, t, y) of one example: the denoiser's size is its own `input_size`."""
  del config
  labels = jnp.zeros((1,), jnp.int32)
  return jnp.zeros((1, model.input_size, model.input_size, model.in_channels)), labels, labels


FLOW_SAMPLERS = ("euler", "heun")


def sample_images(model, params, labels: jax.Array, rng: jax.Array, *,
                  config: ml_collections.ConfigDict, sampler: Optional[str] = None,
                  steps: Any = 250, guidance_scale: float = 1.0,
                  autoencoder=None, autoencoder_variables: Optional[Dict] = None) -> jax.Array:
  """uint8 samples [B, H, W, C] of `model` (trained with `config`) for `labels` [B].

  sampler / steps: `effcomp.diffusion.samplers.sample` ('ddpm' with 250 steps is DiT's
  evaluation; 'ddim' with fewer; 'euler' / 'heun' for flow models, steps an int); None:
  'ddpm', or 'euler' for a flow model. guidance_scale ≠ 1: classifier-free guidance (the
  null label is `model.num_classes`).
  """
  c = task_config(config, task_defaults())
  is_flow = _is_flow(c)
  sampler = sampler or ("euler" if is_flow else "ddpm")
  if is_flow != (sampler in FLOW_SAMPLERS):
    expected = FLOW_SAMPLERS if is_flow else tuple(s for s in samplers.SAMPLERS
                                                if s not in FLOW_SAMPLERS)
    raise ValueError(f"sampler={sampler!r}: a model trained with objective={c.objective!r} "
                     f"samples with one of {expected}")
  learn_sigma = c.learn_sigma and not is_flow
  model_fn = denoiser(model, {"params": params}, c, labels, **inference_configuration(model, c))
  if guidance_scale != 1.0:
    model_fn = guidance.classifier_free_guidance(model_fn, labels, model.num_classes,
                                                 guidance_scale, learn_sigma=learn_sigma)
  shape = (labels.shape[0], model.input_size, model.input_size, model.in_channels)
  x = samplers.sample(rng, model_fn, shape, _schedule(c), sampler, steps,
                      prediction="eps" if is_flow else c.objective, learn_sigma=learn_sigma,
                      shift=c.flow_shift)
  if autoencoder is None:
    return to_uint8(x)
  return decode_to_images(autoencoder, autoencoder_variables, x, latent_scale(c, autoencoder))


def image_grid(images: np.ndarray, rows: int) -> np.ndarray:
  """[N, H, W, C] uint8 → one [rows·H, cols·W, C] image (row-major, padded with black)."""
  n, h, w, ch = images.shape
  cols = -(-n // rows)
  grid = np.zeros((rows * h, cols * w, ch), np.uint8)
  for i, image in enumerate(np.asarray(images)):
    r, col = divmod(i, cols)
    grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
  return grid
