"""Training a VQ image tokenizer (`vq_model`, LlamaGen's VQGAN) on images.

Images are cut and scaled as the `autoencoder` task does (`crop_size` patches of
variable-size photos, `image_size` resizing of the digits; [−1, 1]). Loss, as LlamaGen's
`tokenizer/tokenizer_image/vq_loss.py` without its GAN term:

  reconstruction_weight · (L1 or L2 of recon − x)
  + codebook + commitment (β) + entropy_loss_ratio · entropy   (`nn.vector_quantize`)
  + perceptual_weight · mean_f mean_pos (1 − cos(φ_f(recon), φ_f(x)))

The perceptual term uses a frozen image encoder from `FEATURE_ENCODERS`
(`perceptual_encoder = '<kind>:<path>'`: a 'run:' classifier, 'clip:' CLIP), LlamaGen's LPIPS
being out of reach without downloaded weights; off by default.

The adversarial term (`gan_weight` > 0; LlamaGen's `disc_weight` 0.5, off by default):
LlamaGen's PatchGAN (`effcomp.models.vq.patchgan`, `disc_dim`, `disc_layers`) judges the
images and the reconstructions; from step `disc_start` on (its `adopt_weight`; 20000 in
LlamaGen) the tokenizer adds gan_weight · (−mean D(recon)) and the discriminator learns
gan_weight · ½ (mean relu(1 − D(x)) + mean relu(1 + D(recon))), the hinge losses of
`vq_loss.py` (`effcomp.losses.adversarial.hinge_gan_terms`: one loss, each network moved
by its own term). Before `disc_start` both terms weigh zero but the discriminator still runs,
as in LlamaGen (its BatchNorm statistics move). Its parameters sit beside the tokenizer's
under 'patchgan_discriminator' (`split_params`), its BatchNorm statistics in the model state;
`init_variables` makes both (`MODEL_INITS`, so `runs.open` restores such runs). Deviation:
one optimizer (AdamW with the same settings) over both networks where LlamaGen steps two,
so gradient clipping (`config.optimizer`) is over their joint norm, not each network's.
LlamaGen's adaptive weight (`disc_adaptive_weight`, off in its training script) is not
implemented.

Evaluation: reconstruction loss, MSE, PSNR of the [−1, 1] images rescaled to [0, 1], and the
codebook statistics of the whole split: `usage` (fraction of codes used at least once, as
LlamaGen reports it) and `perplexity` (exp of the code-frequency entropy).
"""

from typing import Any, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
from clu import metrics as clu_metrics

from effcomp.losses import adversarial, semantic
from effcomp.models.vq import patchgan
from effcomp.nn import vector_quantize
from effcomp.registry import FEATURE_ENCODERS, MODEL_INITS, MODEL_INPUTS, TASKS
from effcomp.tasks.autoencoder import example_transforms, psnr
from effcomp.tasks.base import Task, task_config
from effcomp.tasks.diffusion import to_model_space

RECONSTRUCTIONS = ("l1", "l2")
DISCRIMINATOR = patchgan.KEY  # its variables' key beside the tokenizer's


@flax.struct.dataclass
class CodeCounts(clu_metrics.Metric):
  """How often each code was chosen over the evaluated split (summed over batches)."""
  counts: jax.Array

  @classmethod
  def empty(cls):
    return cls(counts=jnp.zeros((1,), jnp.float32))

  @classmethod
  def from_model_output(cls, *, counts, **_):
    return cls(counts=counts)

  def merge(self, other):
    if self.counts.shape != other.counts.shape:  # the empty start
      return other if self.counts.shape == (1,) else self
    return type(self)(counts=self.counts + other.counts)

  def reduce(self):
    return self

  def compute(self):
    return self.counts


@flax.struct.dataclass
class CodebookUsage(CodeCounts):
  def compute(self):
    return vector_quantize.usage(self.counts)


@flax.struct.dataclass
class CodebookPerplexity(CodeCounts):
  def compute(self):
    return vector_quantize.perplexity(self.counts)


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  mse: clu_metrics.Average.from_output("mse")
  psnr: clu_metrics.Average.from_output("psnr")
  usage: CodebookUsage
  perplexity: CodebookPerplexity


def task_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": "vq", "image_size": 0, "crop_size": 0, "reconstruction": "l2",
      "reconstruction_weight": 1.0, "perceptual_weight": 0.0, "perceptual_encoder": "",
      "gan_weight": 0.0, "disc_start": 20_000, "disc_dim": 64, "disc_layers": 3})


def discriminator(c) -> patchgan.PatchGANDiscriminator:
  """The PatchGAN of the task's config."""
  return patchgan.PatchGANDiscriminator(c.disc_dim, c.disc_layers)


def split_params(params: Dict[str, Any]) -> Tuple[Dict[str, Any], Any]:
  """(the tokenizer's parameters, the discriminator's or None)."""
  return ({k: v for k, v in params.items() if k != DISCRIMINATOR}, params.get(DISCRIMINATOR))


def tokenizer_variables(variables: Dict[str, Any]) -> Dict[str, Any]:
  """The tokenizer's own variables of a `vq` run's (without its discriminator)."""
  return {"params": split_params(variables["params"])[0]}


def init_variables(c, model, rng: jax.Array, x: jax.Array) -> Dict[str, Any]:
  """The tokenizer's variables and, with a GAN term, the discriminator's parameters
  ('patchgan_discriminator') and BatchNorm statistics."""
  r_model, r_disc = jax.random.split(rng)
  variables = model.init(r_model, x)
  if not c.gan_weight:
    return variables
  d = discriminator(c).init(r_disc, x)
  return {"params": {**variables["params"], DISCRIMINATOR: d["params"]},
          "batch_stats": {DISCRIMINATOR: d["batch_stats"]}}


@TASKS.register("vq")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A VQ-tokenizer `Task` for `model` (x → (recon, indices, losses))."""
  c = task_config(config, task_defaults())
  if teacher_model is not None:
    raise ValueError("config.teacher.workdir is set: the vq task trains without a teacher")
  if c.reconstruction not in RECONSTRUCTIONS:
    raise ValueError(f"config.task.reconstruction={c.reconstruction!r}: expected one of "
                     f"{RECONSTRUCTIONS}")
  encoder = None
  if c.perceptual_weight:
    if ":" not in c.perceptual_encoder:
      raise ValueError(f"config.task.perceptual_encoder={c.perceptual_encoder!r}: expected "
                       f"'<kind>:<path>' with kind one of {FEATURE_ENCODERS.names()}")
    kind, path = c.perceptual_encoder.split(":", 1)
    encoder = FEATURE_ENCODERS.get(kind)(path)
  if c.gan_weight < 0 or c.disc_start < 0:
    raise ValueError(f"config.task.gan_weight={c.gan_weight}, disc_start={c.disc_start}: "
                     "expected both ≥ 0")
  disc = discriminator(c) if c.gan_weight else None

  def images(batch):
    return to_model_space(jnp.asarray(batch["image"]), c.image_size)

  def init_fn(rng, batch):
    return init_variables(c, model, rng, images(batch))

  def reconstruction(recon, x):
    """Per-example reconstruction error [B] (mean over pixels)."""
    err = jnp.abs(recon - x) if c.reconstruction == "l1" else jnp.square(recon - x)
    return jnp.mean(err, axis=tuple(range(1, x.ndim)))

  def perceptual(recon, x):
    if encoder is None:
      return jnp.zeros(x.shape[:1])
    rgb = lambda y: jnp.repeat(y, 3, axis=-1) if y.shape[-1] == 1 else y
    return semantic.ess_loss(encoder(rgb(recon)), encoder(rgb(x)))

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del rng, teacher_variables
    x = images(batch)
    tokenizer_params, disc_params = split_params(params)
    recon, _, vq_losses = model.apply({"params": tokenizer_params}, x)
    terms = {"reconstruction": jnp.mean(reconstruction(recon, x)),
             "perceptual": jnp.mean(perceptual(recon, x)), **vq_losses}
    loss = (c.reconstruction_weight * terms["reconstruction"] + c.perceptual_weight
            * terms["perceptual"] + vq_losses["codebook"] + vq_losses["commitment"]
            + vq_losses["entropy"])
    model_state = dict(model_state)
    if disc is not None:
      gen, d_loss, stats, logits = adversarial.hinge_gan_terms(
          disc, disc_params, model_state["batch_stats"][DISCRIMINATOR], x, recon)
      terms.update(gan=jnp.mean(gen), disc=0.5 * jnp.mean(d_loss), **logits)
      weight = jnp.where(step >= c.disc_start, c.gan_weight, 0.0)  # LlamaGen's adopt_weight
      terms["gan_weight"] = weight
      loss = loss + weight * (terms["gan"] + terms["disc"])
      model_state["batch_stats"] = {DISCRIMINATOR: stats}
    return loss, (model_state, terms)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step, teacher_variables
    x = images(batch)
    recon, indices, _ = model.apply({"params": split_params(params)[0]}, x)
    counts = vector_quantize.code_counts(indices, model.codebook_size, batch["mask"])
    return EvalMetrics.single_from_model_output(
        loss=c.reconstruction_weight * reconstruction(recon, x),
        mse=jnp.mean(jnp.square(recon - x), axis=tuple(range(1, x.ndim))),
        psnr=psnr(recon, x), counts=counts, mask=batch["mask"])

  return Task(model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn,
              eval_metrics=EvalMetrics, train_source=train_source, eval_source=eval_source,
              summary_metric="psnr", **example_transforms(c))


@MODEL_INPUTS.register("vq")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """An image of twice the downsampling factor, or as large as the discriminator needs (the
  weights do not depend on its size)."""
  c = task_config(config, task_defaults())
  side = 2 * model.downsampling_factor
  if c.gan_weight:
    side = max(side, 3 * 2 ** c.disc_layers)
  return (jnp.zeros((1, side, side, model.in_channels)),)


@MODEL_INITS.register("vq")
def run_variables(config: ml_collections.ConfigDict, model, rng, x) -> Dict[str, Any]:
  """`init_variables` for `effcomp.runs.open`."""
  return init_variables(task_config(config, task_defaults()), model, rng, x)
