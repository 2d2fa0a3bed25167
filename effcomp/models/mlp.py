"""A multi-layer perceptron classifier with logically named (shardable) weights."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from effcomp.nn import activations
from effcomp.nn.dense import dense
from effcomp.registry import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
  """Flatten → [Dense(width) → activation] × depth → Dense(num_classes).

  x: [batch, ...] → logits [batch, num_classes] (float32). `activation`: a name for
  `effcomp.nn.activations.get` (relu, tanh, …, or circuit:<design>).
  """
  num_classes: int = 10
  widths: Sequence[int] = (256, 256)
  dtype: str = "float32"
  activation: str = "relu"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    act = activations.get(self.activation)
    for i, w in enumerate(self.widths):
      x = act(dense(w, "embed", "mlp", self.dtype, name=f"hidden_{i}")(x))
    logits = dense(self.num_classes, "mlp", "classes", self.dtype, name="head")(x)
    return logits.astype(jnp.float32)
