"""A CPU-scale proxy for FID: features of a small classifier trained on the same data.

THIS IS NOT FID. FID (`effcomp.metrics.fid` with `effcomp.metrics.inception`) measures
the Fréchet distance between InceptionV3 pool3 features of 299×299 ImageNet-like
images; its numbers are comparable across papers only with pytorch-fid's weights. For
small generative experiments that run on a CPU (8×8 `digits`, 32×32 crops) we instead
compute the same Fréchet distance on the *penultimate* features of an effcomp
classifier (e.g. `models/cnn.py`'s `CNN`, trained by the `classification` task on the
same dataset), in the spirit of the "FID with a domain classifier" used for MNIST-like
data. Such numbers rank models trained and evaluated with the same classifier; they
are not comparable with published FIDs or across classifiers.

  features = proxy_features_fn(model, variables, resize=16)   # images → [B, width]
  fid.fid_from_batches(features, real_batches, generated_batches)
  class_accuracy(proxy_logits_fn(model, variables, resize=16), samples, labels)

The penultimate features are the input of the classifier's last layer (`layer`, by
default the submodule named "head": `CNN`'s globally pooled conv features, `MLP`'s last
hidden layer), captured with `flax.linen.intercept_methods`, so the model code stays
as it is (as `quant/export.py` and `quant/ptq/blocks.py` do).
"""

from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effcomp.data.image_inputs import model_inputs


def classifier_inputs(images: jax.Array, resize: int = 0) -> jax.Array:
  """Images as the classifier saw them in training (`effcomp.data.image_inputs.model_inputs`):
  integer images [N, H, W, C] in 0..255 go through exactly that transform; float images
  are taken to be in [0, 1] already (generated samples) and only resized."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return model_inputs(images, resize)
  x = images.astype(jnp.float32)
  if resize:
    x = jax.image.resize(x, (x.shape[0], resize, resize, x.shape[-1]), "bilinear")
  return x


def capture_input(layer: str, captured: Dict[str, Any]):
  """An interceptor recording the first positional input of submodule `layer`'s __call__."""
  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and "/".join(context.module.path) == layer:
      captured["x"] = args[0]
    return next_fun(*args, **kwargs)
  return interceptor


def penultimate_features(model: nn.Module, variables, images: jax.Array,
                         layer: str = "head") -> jax.Array:
  """The input of submodule `layer` when `model` (eval mode) runs on `images`, flattened
  to [B, D]. Pure and jittable; `ValueError` if `layer` is never called."""
  captured: Dict[str, Any] = {}
  with nn.intercept_methods(capture_input(layer, captured)):
    model.apply(variables, images)
  if "x" not in captured:
    raise ValueError(f"layer={layer!r}: {type(model).__name__} has no submodule at that path "
                     "that is called; expected the path of its last layer (e.g. 'head')")
  x = captured["x"]
  return x.reshape((x.shape[0], -1)).astype(jnp.float32)


def proxy_features_fn(model: nn.Module, variables, resize: int = 0,
                      layer: str = "head") -> Callable[[jax.Array], jax.Array]:
  """A jitted `images [B, H, W, C] -> features [B, D]`: the classifier's penultimate
  features (D = the width feeding `layer`, e.g. `CNN.widths[-1]`). `resize` must be the
  classification task's `task.resize` the classifier was trained with. A proxy, not FID."""
  fn = jax.jit(lambda v, images: penultimate_features(model, v, classifier_inputs(images, resize),
                                                      layer))
  return lambda images: fn(variables, images)


def proxy_logits_fn(model: nn.Module, variables, resize: int = 0
                    ) -> Callable[[jax.Array], jax.Array]:
  """A jitted `images -> logits [B, num_classes]` of the classifier (for `class_accuracy`)."""
  fn = jax.jit(lambda v, images: model.apply(v, classifier_inputs(images, resize)))
  return lambda images: fn(variables, images)


def class_accuracy(logits_fn: Callable[[Any], Any], images, labels) -> float:
  """Fraction of (generated) images whose classifier argmax equals their conditioning
  label: the class-conditional generator's "does it draw the asked class" score.

  logits_fn: `images [N, ...] -> logits [N, num_classes]`; labels: [N] integers.
  """
  logits = np.asarray(logits_fn(images))
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"logits.shape={logits.shape}, labels.shape={labels.shape}: expected "
                     "logits [N, num_classes] and labels [N]")
  return float(np.mean(np.argmax(logits, axis=-1) == labels))
