"""Degradation estimation: an LR image → what its degradation pipeline drew and did.

Trains `effcomp.models.sr.degradation_estimator.DegradationEstimator` (config.model
'degradation_estimator') by regression (MSE) to `degradations.degradation_severity` — blur,
noise, JPEG and the LR's measured distortion in [0, 1] — of Real-ESRGAN LRs made on the host
from HR crops as the `sr` task makes its pairs (`sr.random_pair`: `patch_size`² HR, dihedral
augmentation). The estimator reads the LR as the one-step SR student is given it:
bicubic-upsampled to the HR size in [−1, 1] (`diffusion_sr.model_pair`). A finished run is a
frozen degradation scorer for MoR's routing (`effcomp.runs.encoders`:
`mor_estimator=run:<workdir>`), the CPU-scale stand-in for the paper's frozen CLIP scores.

Evaluation: the centred `eval_patch`² crop of each eval image with a degradation seeded by
its bytes (`diffusion_sr.eval_pair`): MSE and the mean absolute error per severity.
"""

import flax
import jax.numpy as jnp
import ml_collections
from clu import metrics as clu_metrics

from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks import diffusion_sr, sr
from effcomp.tasks.base import Task, task_config

SEVERITIES = ("blur", "noise", "jpeg", "distortion")  # `degradation_severity`'s order


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  mae_blur: clu_metrics.Average.from_output("mae_blur")
  mae_noise: clu_metrics.Average.from_output("mae_noise")
  mae_jpeg: clu_metrics.Average.from_output("mae_jpeg")
  mae_distortion: clu_metrics.Average.from_output("mae_distortion")


def task_defaults() -> ml_collections.ConfigDict:
  """Fields `config.task` may hold (the `sr` pair fields; Real-ESRGAN's degradation)."""
  return ml_collections.ConfigDict({
      "name": "degradation", "scale": 4, "patch_size": 64, "augment": True,
      "degradation": "realesrgan", "eval_patch": 128, "eval_seed": 0})


def model_input(batch) -> jnp.ndarray:
  """y: the batch's LR bicubic-upsampled to the HR size, in [−1, 1]."""
  return diffusion_sr.model_pair(batch["hr"], batch["lr"], batch["hr"].shape[1] //
                                 batch["lr"].shape[1])[1]


@TASKS.register("degradation")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A degradation-estimation `Task` for `model` on sources of HR `image`s."""
  del teacher_model
  c = task_config(config, task_defaults())
  sr.check_config(c)
  if c.degradation != "realesrgan":
    raise ValueError(f"config.task.degradation={c.degradation!r}: expected 'realesrgan' "
                     "(bicubic LRs have no severity to estimate)")
  if getattr(model, "outputs", len(SEVERITIES)) != len(SEVERITIES):
    raise ValueError(f"config.model.outputs={model.outputs}: expected {len(SEVERITIES)} "
                     f"{SEVERITIES}")

  def init_fn(rng, batch):
    return model.init(rng, model_input(batch))

  def errors(params, batch):
    return model.apply({"params": params}, model_input(batch)) - batch["severity"]

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del rng, teacher_variables, step
    err = errors(params, batch)
    return jnp.mean(jnp.square(err)), (model_state, {
        f"mae_{name}": jnp.mean(jnp.abs(err[:, i])) for i, name in enumerate(SEVERITIES)})

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step, teacher_variables
    err = errors(params, batch)
    return EvalMetrics.single_from_model_output(
        loss=jnp.mean(jnp.square(err), axis=-1), mask=batch["mask"],
        **{f"mae_{name}": jnp.abs(err[:, i]) for i, name in enumerate(SEVERITIES)})

  return Task(
      model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn, eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source, summary_metric="loss",
      train_example_transform=lambda example, rng: sr.random_pair(example["image"], rng, c),
      eval_example_transform=lambda example, rng: diffusion_sr.eval_pair(example["image"], c))


@MODEL_INPUTS.register("degradation")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """(y,) of one eval-sized crop."""
  del model
  c = task_config(config, task_defaults())
  return (jnp.zeros((1, c.eval_patch, c.eval_patch, 3), jnp.float32),)
