"""Image classification: cross-entropy (with optional label smoothing and a frozen
teacher for knowledge distillation), accuracy and loss as eval metrics.

Knowledge distillation follows Hinton et al. 2015, "Distilling the Knowledge in a
Neural Network": loss = (1 − w)·CE(y, s) + w·T²·KL(softmax(t/T) ‖ softmax(s/T)).
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics

from effcomp.registry import TASKS
from effcomp.tasks.base import Task

AUGMENTATIONS = ("none", "flip_crop")


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  accuracy: clu_metrics.Accuracy


def _to_float(image: np.ndarray) -> np.ndarray:
  return image.astype(np.float32) / 255.0


def _eval_transform(example):
  return {"image": _to_float(example["image"]), "label": np.int32(example["label"])}


def _plain(example, rng: np.random.Generator):
  del rng
  return _eval_transform(example)


def _flip_crop(example, rng: np.random.Generator, pad: int = 4):
  """Random horizontal flip and a random crop after `pad`-pixel zero padding (CIFAR recipe)."""
  image = example["image"]
  if rng.random() < 0.5:
    image = image[:, ::-1]
  h, w = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  y, x = rng.integers(0, 2 * pad + 1, size=2)
  return _eval_transform({"image": padded[y:y + h, x:x + w], "label": example["label"]})


def distillation_loss(student_logits, teacher_logits, temperature: float):
  """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), mean over the batch."""
  t = jax.nn.log_softmax(teacher_logits / temperature)
  s = jax.nn.log_softmax(student_logits / temperature)
  return temperature ** 2 * jnp.mean(jnp.sum(jnp.exp(t) * (t - s), axis=-1))


def task_defaults() -> ml_collections.ConfigDict:
  """Fields `config.task` may hold for this task (set them in the config file)."""
  return ml_collections.ConfigDict({
      "name": "classification", "label_smoothing": 0.0, "augment": "none",
      "distill_weight": 0.0, "distill_temperature": 4.0})


@TASKS.register("classification")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A classification `Task` for `model` on image/label sources."""
  c = task_defaults()
  unknown = set(config.task) - set(c)
  if unknown:
    raise ValueError(f"config.task: classification has no field(s) {', '.join(sorted(unknown))}; "
                     f"valid: {', '.join(sorted(c))}")
  c.update(config.task)
  if c.augment not in AUGMENTATIONS:
    raise ValueError(f"config.task.augment={c.augment!r}: expected one of {AUGMENTATIONS}")
  if c.distill_weight and teacher_model is None:
    raise ValueError("config.task.distill_weight > 0 needs a teacher: set config.teacher.workdir")

  def init_fn_for(module):
    return lambda rng, batch: module.init({"params": rng, "dropout": rng}, batch["image"],
                                          train=False)

  def loss_fn(params, model_state, batch, rng, teacher_variables):
    logits, new_state = model.apply(
        {"params": params, **model_state}, batch["image"], train=True,
        rngs={"dropout": rng}, mutable=list(model_state))
    labels = optax.smooth_labels(jax.nn.one_hot(batch["label"], logits.shape[-1]),
                                 c.label_smoothing)
    ce = jnp.mean(optax.softmax_cross_entropy(logits, labels))
    loss, metrics = ce, {"cross_entropy": ce}
    if teacher_model is not None and c.distill_weight:
      teacher_logits = teacher_model.apply(teacher_variables, batch["image"], train=False)
      kd = distillation_loss(logits, jax.lax.stop_gradient(teacher_logits), c.distill_temperature)
      loss = (1 - c.distill_weight) * ce + c.distill_weight * kd
      metrics["distillation"] = kd
    metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (dict(new_state), metrics)

  def eval_fn(params, model_state, batch):
    logits = model.apply({"params": params, **model_state}, batch["image"], train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return EvalMetrics.single_from_model_output(
        loss=loss, logits=logits, labels=batch["label"], mask=batch["mask"])

  return Task(
      model=model, init_fn=init_fn_for(model), loss_fn=loss_fn, eval_fn=eval_fn, eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source,
      train_transform=_plain if c.augment == "none" else _flip_crop,
      eval_transform=_eval_transform, summary_metric="accuracy",
      teacher_init_fn=init_fn_for(teacher_model) if teacher_model is not None else None)
