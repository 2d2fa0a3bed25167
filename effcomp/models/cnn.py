"""A small VGG-style CNN (conv–BN–ReLU blocks, pooling) with shardable weights.

The image classifier the demo and trainer tests use; BatchNorm makes it exercise
mutable model state (`batch_stats`) through the trainer.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from effcomp.nn import activations
from effcomp.nn.dense import dense
from effcomp.registry import MODELS


def conv(features: int, dtype, name: str, kernel_size=(3, 3), strides=(1, 1)) -> nn.Conv:
  """A bias-free conv with logically named kernel [kh, kw, in, out], zero-padded k // 2 on
  every side as PyTorch's `nn.Conv2d(..., padding=k//2)` (XLA's 'SAME' pads stride-2
  convs asymmetrically)."""
  return nn.Conv(
      features, kernel_size, strides=strides, padding=tuple((k // 2, k // 2) for k in kernel_size),
      use_bias=False, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.kaiming_normal(), ("height", "width", "conv_in", "conv_out")))


def batch_norm(train: bool, dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


@MODELS.register("cnn")
class CNN(nn.Module):
  """Stages of `convs_per_stage` × (conv3×3 → BN → activation), 2×2 max-pool between
  stages, global average pool, Dense head.

  x: [batch, height, width, channels] (uint8 or float) → logits [batch, num_classes].
  `activation`: a name for `effcomp.nn.activations.get` (relu, tanh, …, circuit:<design>).
  """
  num_classes: int = 10
  widths: Sequence[int] = (32, 64)
  convs_per_stage: int = 1
  dtype: str = "float32"
  activation: str = "relu"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    act = activations.get(self.activation)
    for s, w in enumerate(self.widths):
      if s:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for c in range(self.convs_per_stage):
        x = conv(w, self.dtype, f"conv_{s}_{c}")(x)
        x = act(batch_norm(train, self.dtype, f"bn_{s}_{c}")(x))
    x = jnp.mean(x, axis=(1, 2))
    return dense(self.num_classes, "embed", "classes", self.dtype, name="head")(x).astype(jnp.float32)
