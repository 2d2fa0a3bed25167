"""Training a KL autoencoder (`autoencoder_kl`) on images, for latent diffusion.

Variable-size images (the embedded photos) are cut into `crop_size` patches at their own
scale on the host: a random patch (flipped left-right at random) in training, the center
one in evaluation. Images (uint8 [B, H, W, C]) are then mapped to [−1, 1] and resized to
`image_size` as the diffusion task does (`diffusion.to_model_space`), so a latent diffusion run on the same
data sees exactly these inputs. Loss: `effcomp.models.vae.losses.reconstruction_kl_loss`
(LDM's pixel L1 + kl_weight · KL, without the perceptual and GAN terms). Evaluation: the
same loss with the posterior mean (no sampling), plus per-element L1/MSE and PSNR in dB
of the [−1, 1] images rescaled to [0, 1].
"""

import flax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metrics as clu_metrics

from effcomp.models.vae import losses
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks.base import Task, task_config
from effcomp.tasks.diffusion import to_model_space


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  mse: clu_metrics.Average.from_output("mse")
  psnr: clu_metrics.Average.from_output("psnr")


def task_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"name": "autoencoder", "image_size": 0, "crop_size": 0,
                                    "kl_weight": 1e-6, "reconstruction": "l1"})


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
  """An autoencoder `Task` for `model` (x → (recon, mean, logvar))."""
  del teacher_model
  c = task_config(config, task_defaults())
  if c.reconstruction not in losses.RECONSTRUCTIONS:
    raise ValueError(f"config.task.reconstruction={c.reconstruction!r}: expected one of "
                     f"{losses.RECONSTRUCTIONS}")

  def images(batch):
    return to_model_space(jnp.asarray(batch["image"]), c.image_size)

  def init_fn(rng, batch):
    return model.init({"params": rng, "sample": rng}, images(batch))

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
    psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))  # peak-to-peak 2 in [−1, 1]
    return EvalMetrics.single_from_model_output(
        loss=jnp.sum(rec, axis=axes) + c.kl_weight * kl, mse=mse, psnr=psnr, mask=batch["mask"])

  def train_crop(example, rng):
    return {"image": random_patch(np.asarray(example["image"]), c.crop_size, rng)}

  def eval_crop(example, rng):
    del rng
    return {"image": center_patch(np.asarray(example["image"]), c.crop_size)}

  return Task(model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn,
              eval_metrics=EvalMetrics, train_source=train_source, eval_source=eval_source,
              summary_metric="psnr",
              train_example_transform=train_crop if c.crop_size else None,
              eval_example_transform=eval_crop if c.crop_size else None)


@MODEL_INPUTS.register("autoencoder")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """An image of twice the downsampling factor: the parameters of a convolutional
  autoencoder do not depend on the image size."""
  del config
  side = 2 * model.downsampling_factor
  return (jnp.zeros((1, side, side, model.in_channels)),)
