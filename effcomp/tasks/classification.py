"""Image classification: cross-entropy (with optional label smoothing and a frozen
teacher for knowledge distillation), accuracy and loss as eval metrics.

Models whose `__call__` takes `progress` receive step / train.steps ∈ [0, 1] (binary
layers anneal their estimators with it). `task.resize > 0` resizes images on the device
(bilinear), e.g. 8×8 digits to the 16×16/32×32 inputs CIFAR networks expect.
`task.augment`: 'flip_crop' (CIFAR's flip and padded crop) or 'cnnspot' (CNNSpot's blur
and JPEG, then a flip: AI-generated-image detectors, `effcomp.data.genimage`).
`task.mean` / `task.std` (per channel, on [0, 1] images) normalize as reference codes do
(torchvision `Normalize`; the official AdaBin code uses ImageNet's statistics for CIFAR-10
too), so converted official checkpoints see their inputs. `task.image_size > 0` crops
variable-size photos on the host per image (ImageNet: random-resized crop + flip for
training, resize-256/center-224 for evaluation). `task.rotation_pretext` makes the label
the number of quarter turns (0–3) the crop was rotated by, the source's labels unused
(Gidaris et al. 2018, "Unsupervised representation learning by predicting image
rotations"): how effcomp trains a stand-in image encoder on unlabelled photos
(`configs/stand_in_encoder.py`, VPD-SR's semantic loss at CPU scale); evaluation rotates
each crop by a turn drawn from its bytes.

Knowledge distillation follows Hinton et al. 2015, "Distilling the Knowledge in a
Neural Network": loss = (1 − w)·CE(y, s) + w·T²·KL(softmax(t/T) ‖ softmax(s/T)).
"""

import functools
import inspect
import zlib
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics

from effcomp.data import crops, genimage, sources
from effcomp.data.image_inputs import model_inputs
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks.base import Task, task_config

AUGMENTATIONS = ("none", "flip_crop", "cnnspot")


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  accuracy: clu_metrics.Accuracy


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Each image of [N, H, W, C] flipped horizontally with probability 0.5."""
  flip = rng.random(len(images)) < 0.5
  return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def flip_crop(batch, rng: np.random.Generator, pad: int = 4):
  """Per-example random horizontal flip and a random crop after zero-padding by `pad`
  (the CIFAR recipe of He et al. 2016), vectorized over `batch['image']` [N, H, W, C]."""
  images = random_flip(batch["image"], rng)
  n, h, w = images.shape[:3]
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ys, xs = rng.integers(0, 2 * pad + 1, size=(2, n))
  rows = ys[:, None] + np.arange(h)[None]  # [N, H]
  cols = xs[:, None] + np.arange(w)[None]  # [N, W]
  cropped = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
  return {**batch, "image": cropped}


def cnnspot_flip(batch, rng: np.random.Generator):
  """CNNSpot's training augmentation (`genimage.cnnspot_augment`: blur and JPEG, each with
  probability 0.5) per image, then a random horizontal flip (its recipe at a fixed input
  size; its 256 → 224 random crop is left to `image_size`)."""
  images = np.stack([genimage.cnnspot_augment(np.asarray(image), rng)
                     for image in batch["image"]])
  return {**batch, "image": random_flip(images, rng)}


def distillation_loss(student_logits, teacher_logits, temperature: float):
  """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), mean over the batch."""
  t = jax.nn.log_softmax(teacher_logits / temperature)
  s = jax.nn.log_softmax(student_logits / temperature)
  return temperature ** 2 * jnp.mean(jnp.sum(jnp.exp(t) * (t - s), axis=-1))


def task_defaults() -> ml_collections.ConfigDict:
  """Fields `config.task` may hold for this task (set them in the config file)."""
  return ml_collections.ConfigDict({
      "name": "classification", "label_smoothing": 0.0, "augment": "none", "resize": 0,
      "image_size": 0, "distill_weight": 0.0, "distill_temperature": 4.0, "mean": (), "std": (),
      "rotation_pretext": False})


def inputs_fn(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
  """The task's device-side image transform for `config`: uint8 [N, H, W, C] → [0, 1] →
  `resize` → (x − `mean`) / `std`."""
  c = task_config(config, task_defaults())
  return functools.partial(model_inputs, resize=c.resize, mean=tuple(c.mean), std=tuple(c.std))


@TASKS.register("classification")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A classification `Task` for `model` on image/label sources."""
  c = task_config(config, task_defaults())
  if c.rotation_pretext and not c.image_size:
    raise ValueError("config.task.rotation_pretext needs config.task.image_size > 0 (square "
                     "crops, which rotate to the same shape)")
  if c.augment not in AUGMENTATIONS:
    raise ValueError(f"config.task.augment={c.augment!r}: expected one of {AUGMENTATIONS}")
  if c.distill_weight and teacher_model is None:
    raise ValueError("config.task.distill_weight > 0 needs a teacher: set config.teacher.workdir")

  transform = inputs_fn(config)

  def inputs(batch):
    return transform(batch["image"])

  def init_fn_for(module):
    return lambda rng, batch: module.init({"params": rng, "dropout": rng}, inputs(batch),
                                          train=False)

  takes_progress = "progress" in inspect.signature(type(model).__call__).parameters

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    images = inputs(batch)
    extra = {"progress": step / config.train.steps} if takes_progress else {}
    logits, new_state = model.apply(
        {"params": params, **model_state}, images, train=True,
        rngs={"dropout": rng}, mutable=list(model_state), **extra)
    labels = optax.smooth_labels(jax.nn.one_hot(batch["label"], logits.shape[-1]),
                                 c.label_smoothing)
    ce = jnp.mean(optax.softmax_cross_entropy(logits, labels))
    loss, metrics = ce, {"cross_entropy": ce}
    if teacher_model is not None and c.distill_weight:
      teacher_logits = teacher_model.apply(teacher_variables, images, train=False)
      kd = distillation_loss(logits, jax.lax.stop_gradient(teacher_logits), c.distill_temperature)
      loss = (1 - c.distill_weight) * ce + c.distill_weight * kd
      metrics["distillation"] = kd
    metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (dict(new_state), metrics)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del step, teacher_variables
    logits = model.apply({"params": params, **model_state}, inputs(batch), train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return EvalMetrics.single_from_model_output(
        loss=loss, logits=logits, labels=batch["label"], mask=batch["mask"])

  def labelled(image, example, turns):
    if not c.rotation_pretext:
      return {"image": image, "label": example["label"]}
    return {"image": np.ascontiguousarray(np.rot90(image, turns)), "label": np.int32(turns)}

  def train_crop(example, rng):
    image = crops.random_resized_crop(np.asarray(example["image"]), c.image_size, rng)
    return labelled(image, example, int(rng.integers(0, 4)))

  def eval_crop(example, rng):
    del rng
    image = crops.center_crop(np.asarray(example["image"]), c.image_size)
    return labelled(image, example, zlib.crc32(image.tobytes()) % 4)

  return Task(
      model=model, init_fn=init_fn_for(model), loss_fn=loss_fn, eval_fn=eval_fn,
      eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source,
      train_transform={"flip_crop": flip_crop, "cnnspot": cnnspot_flip}.get(c.augment),
      train_example_transform=train_crop if c.image_size else None,
      eval_example_transform=eval_crop if c.image_size else None,
      summary_metric="accuracy",
      teacher_init_fn=init_fn_for(teacher_model) if teacher_model is not None else None)


@MODEL_INPUTS.register("classification")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """The first example of the config's eval split as the model sees it in evaluation (the
  input size of a classifier depends on its data)."""
  del model
  c = task_config(config, task_defaults())
  d = config.data
  source = sources.get_source(d.name, d.eval_split, data_dir=d.data_dir, manual_dir=d.manual_dir)
  image = np.asarray(source[0]["image"])
  if c.image_size:
    image = crops.center_crop(image, c.image_size)
  return (inputs_fn(config)(jnp.asarray(image)[None]),)
