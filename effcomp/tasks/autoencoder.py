"""Training an autoencoder (`autoencoder_kl`, `tiny_vae`) on images, for latent diffusion;
or distilling one from a frozen autoencoder (ElasticDiT's T-DVAE).

Variable-size images (the embedded photos) are cut into `crop_size` patches at their own
scale on the host: a random patch (flipped left-right at random) in training, the center one
in evaluation. Images (uint8 [B, H, W, C]) are then mapped to [−1, 1] and resized to
`image_size` as the diffusion task does (`diffusion.to_model_space`), so a latent diffusion
run on the same data sees exactly these inputs. Loss:
`effcomp.models.vae.losses.reconstruction_kl_loss` (LDM's pixel L1 + kl_weight · KL, without
the perceptual and GAN terms). Evaluation: the same loss with the posterior mean (no
sampling), plus per-element L1/MSE and PSNR in dB of the [−1, 1] images rescaled to [0, 1].

`distill=True` (ElasticDiT's Tiny DWT-Distilled VAE, `effcomp.models.vae.tiny`): the
trainer restores the teacher, a finished `autoencoder` run named by
`config.teacher.workdir`, frozen; the student (same latent channels, downsampling factor
and image channels) learns, per example, with the terms of `effcomp.losses.wavelet`:

  distill_latent_weight  · latent_l2(μ_s(x), μ_t(x); teacher scaling_factor)   encoder
  + distill_teacher_weight · wavelet_l1(D_s(μ_t(x)), D_t(μ_t(x)))              decoder
  + distill_image_weight   · wavelet_l1(D_s(z_s), x),  z_s ~ q_s(z | x)        end to end
  + kl_weight · KL(q_s(z | x) ‖ N(0, I))

(batch means; `wavelet_levels` Haar levels, `wavelet_weights` = (LL, LH, HL, HH)). The
decoder term feeds the teacher's latents, so the student decodes what a diffusion model
trained on the teacher produces (TAESD trains its decoder on the SD VAE's latents); the
image term lets it correct the teacher's own errors; the KL keeps the student's logvar a
posterior like the teacher's. Evaluation (posterior means): the loss, the student's and the
teacher's PSNR against the image, and the mean squared latent difference.
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metrics as clu_metrics

from effcomp.losses import wavelet
from effcomp.models.vae import losses
from effcomp.models.vae.autoencoder_kl import sample_latent
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks.base import Task, task_config
from effcomp.tasks.diffusion import to_model_space


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  mse: clu_metrics.Average.from_output("mse")
  psnr: clu_metrics.Average.from_output("psnr")


@flax.struct.dataclass
class DistillEvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  mse: clu_metrics.Average.from_output("mse")
  psnr: clu_metrics.Average.from_output("psnr")
  teacher_psnr: clu_metrics.Average.from_output("teacher_psnr")
  latent_mse: clu_metrics.Average.from_output("latent_mse")


def task_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": "autoencoder", "image_size": 0, "crop_size": 0, "kl_weight": 1e-6,
      "reconstruction": "l1", "distill": False, "distill_latent_weight": 1.0,
      "distill_teacher_weight": 1.0, "distill_image_weight": 1.0, "wavelet_levels": 2,
      "wavelet_weights": wavelet.WEIGHTS})


def psnr(recon: jax.Array, x: jax.Array) -> jax.Array:
  """PSNR in dB [B] of [−1, 1] images (peak-to-peak 2), i.e. of both rescaled to [0, 1]."""
  mse = jnp.mean(jnp.square(recon - x), axis=tuple(range(1, x.ndim)))
  return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))


def check_student(model, teacher_model) -> None:
  """ValueError naming the field unless `model` has the latent API of `teacher_model`."""
  for field in ("in_channels", "out_channels", "latent_channels", "downsampling_factor"):
    mine, theirs = getattr(model, field), getattr(teacher_model, field)
    if mine != theirs:
      raise ValueError(f"config.model.{field}={mine} differs from the teacher's {theirs}: a "
                       "distilled autoencoder keeps its teacher's latents and images")


def random_patch(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A size×size patch at a random position, mirrored with probability ½."""
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f"config.task.crop_size={size} is larger than an image of {h}×{w}")
  y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
  patch = image[y:y + size, x:x + size]
  return patch[:, ::-1] if rng.random() < 0.5 else patch


def center_patch(image: np.ndarray, size: int) -> np.ndarray:
  h, w = image.shape[:2]
  y, x = (h - size) // 2, (w - size) // 2
  return image[y:y + size, x:x + size]


@TASKS.register("autoencoder")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """An autoencoder `Task` for `model` (x → (recon, mean, logvar)); with `distill`, its
  distillation from the frozen `teacher_model` (module docstring)."""
  c = task_config(config, task_defaults())
  if c.reconstruction not in losses.RECONSTRUCTIONS:
    raise ValueError(f"config.task.reconstruction={c.reconstruction!r}: expected one of "
                     f"{losses.RECONSTRUCTIONS}")

  def images(batch):
    return to_model_space(jnp.asarray(batch["image"]), c.image_size)

  def init_fn(rng, batch):
    return model.init({"params": rng, "sample": rng}, images(batch))

  if c.distill or teacher_model is not None:
    return _distillation_task(c, model, teacher_model, images, init_fn, train_source,
                              eval_source)

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del teacher_variables, step
    x = images(batch)
    recon, mean, logvar = model.apply({"params": params}, x, rngs={"sample": rng})
    loss, metrics = losses.reconstruction_kl_loss(recon, x, mean, logvar, c.kl_weight,
                                                  c.reconstruction)
    return loss, (dict(model_state), {k: v for k, v in metrics.items() if k != "loss"})

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step, teacher_variables
    x = images(batch)
    recon, mean, logvar = model.apply({"params": params}, x, sample_posterior=False)
    axes = tuple(range(1, x.ndim))
    rec = jnp.abs(recon - x) if c.reconstruction == "l1" else jnp.square(recon - x)
    kl = losses.kl_divergence(mean, logvar)
    mse = jnp.mean(jnp.square(recon - x), axis=axes)
    return EvalMetrics.single_from_model_output(
        loss=jnp.sum(rec, axis=axes) + c.kl_weight * kl, mse=mse, psnr=psnr(recon, x),
        mask=batch["mask"])

  return Task(model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn,
              eval_metrics=EvalMetrics, train_source=train_source, eval_source=eval_source,
              summary_metric="psnr", **example_transforms(c))


def example_transforms(c) -> dict:
  """The Task fields of the example transforms: random / center `crop_size` patches for
  training / evaluation (0: none)."""
  if not c.crop_size:
    return {"train_example_transform": None, "eval_example_transform": None}

  def train_crop(example, rng):
    return {"image": random_patch(np.asarray(example["image"]), c.crop_size, rng)}

  def eval_crop(example, rng):
    del rng
    return {"image": center_patch(np.asarray(example["image"]), c.crop_size)}

  return {"train_example_transform": train_crop, "eval_example_transform": eval_crop}


def _distillation_task(c, model, teacher_model, images, init_fn, train_source,
                       eval_source) -> Task:
  """The `distill` Task (module docstring): the student `model` learns from the frozen
  `teacher_model`, whose variables the trainer passes to every step."""
  if not c.distill:
    raise ValueError("config.teacher.workdir is set but config.task.distill=False: set "
                     "distill=True to distill from it, or clear the teacher")
  if teacher_model is None:
    raise ValueError("config.task.distill=True needs a teacher: set config.teacher.workdir to "
                     "a finished autoencoder run")
  check_student(model, teacher_model)
  scale = float(getattr(teacher_model, "scaling_factor", 1.0))

  def teacher(frozen, x):
    """The teacher's posterior mean and its decoding, without gradients."""
    mean, _ = teacher_model.apply(frozen, x, method="encode")
    recon = teacher_model.apply(frozen, mean, method="decode")
    return jax.lax.stop_gradient(mean), jax.lax.stop_gradient(recon)

  def objective(params, x, frozen, rng):
    """Per-example terms; rng None: the student's posterior mean instead of a sample."""
    t_mean, t_recon = teacher(frozen, x)
    variables = {"params": params}
    mean, logvar = model.apply(variables, x, method="encode")
    z = mean if rng is None else sample_latent(rng, mean, logvar)
    # One decoder call on [own latents; teacher's latents].
    decoded = model.apply(variables, jnp.concatenate([z, t_mean]), method="decode")
    recon, from_teacher = jnp.split(decoded, 2)
    terms = {
        "latent": wavelet.latent_l2(mean, t_mean, scale),
        "teacher": wavelet.wavelet_l1(from_teacher, t_recon, c.wavelet_levels,
                                      c.wavelet_weights),
        "image": wavelet.wavelet_l1(recon, x, c.wavelet_levels, c.wavelet_weights),
        "kl": losses.kl_divergence(mean, logvar)}
    loss = (c.distill_latent_weight * terms["latent"] + c.distill_teacher_weight
            * terms["teacher"] + c.distill_image_weight * terms["image"]
            + c.kl_weight * terms["kl"])
    return loss, terms, recon, t_recon, mean, t_mean

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del step
    x = images(batch)
    loss, terms, recon, _, _, _ = objective(params, x, teacher_variables, rng)
    metrics = {k: jnp.mean(v) for k, v in terms.items()}
    metrics["mse"] = jnp.mean(jnp.square(recon - x))
    return jnp.mean(loss), (dict(model_state), metrics)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step
    x = images(batch)
    loss, _, recon, t_recon, mean, t_mean = objective(params, x, teacher_variables, None)
    axes = tuple(range(1, x.ndim))
    return DistillEvalMetrics.single_from_model_output(
        loss=loss, mse=jnp.mean(jnp.square(recon - x), axis=axes), psnr=psnr(recon, x),
        teacher_psnr=psnr(t_recon, x),
        latent_mse=jnp.mean(jnp.square(scale * (mean - t_mean)), axis=axes),
        mask=batch["mask"])

  return Task(model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn,
              eval_metrics=DistillEvalMetrics, train_source=train_source,
              eval_source=eval_source, summary_metric="psnr", **example_transforms(c),
              teacher_init_fn=lambda rng, batch: teacher_model.init(
                  {"params": rng, "sample": rng}, images(batch)))


@MODEL_INPUTS.register("autoencoder")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """An image of twice the downsampling factor: the parameters of a convolutional
  autoencoder do not depend on the image size."""
  del config
  side = 2 * model.downsampling_factor
  return (jnp.zeros((1, side, side, model.in_channels)),)
