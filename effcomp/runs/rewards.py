"""Model-based rewards for RL fine-tuning (`effcomp.registry.REWARDS`; the model-free ones
live in `effcomp.rl.rewards`).

  'classifier:<workdir>'  the probability an effcomp `classification` run gives the
                          prompted class: softmax(logits)[label]. The CPU-scale reward of
                          `configs/flow_grpo_digits.py`, with the proxy CNN that
                          `benchmarks/udit.py` scores class accuracy with.

Images arrive in [−1, 1] and are scored as `benchmarks/udit.py` scores samples: rounded to
uint8 (`tasks.diffusion.to_uint8`), then the classification task's own input transform
(`effcomp.data.image_inputs.model_inputs` with the run's `resize`, `mean`, `std`), so the
reward's argmax is `effcomp.metrics.proxy.class_accuracy`'s reading. The classifier's
variables are closed over (constants of the jitted step), as the feature encoders'.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from effcomp.data.image_inputs import model_inputs
from effcomp.registry import REWARDS
from effcomp.runs.run import open_frozen
from effcomp.tasks import classification, diffusion
from effcomp.tasks.base import task_config


def classifier_logits_fn(workdir: str) -> Callable[[jax.Array], jax.Array]:
  """logits_fn(images [B, H, W, C] in [−1, 1]) → logits [B, classes] of the classifier run."""
  run, variables = open_frozen(workdir, "classification", f"reward classifier:{workdir}",
                               "configs/demo.py:model=cnn with task.resize=16")
  c = task_config(run.config, classification.task_defaults())

  def logits(images):
    x = model_inputs(diffusion.to_uint8(images), c.resize, tuple(c.mean), tuple(c.std))
    return run.model.apply(variables, x)

  return logits


@REWARDS.register("classifier")
def load_classifier_reward(workdir: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """reward_fn(images in [−1, 1], labels [B]) → p(label | image) [B]."""
  if not workdir:
    raise ValueError("reward 'classifier:<workdir>': the workdir of a classification run is "
                     "missing")
  logits_fn = classifier_logits_fn(workdir)

  def reward(images, labels):
    p = jax.nn.softmax(logits_fn(images).astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(p, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]

  return reward
