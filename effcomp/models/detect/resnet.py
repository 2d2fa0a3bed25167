"""A float ResNet in torchvision's layout (He et al. 2016, "v1.5"), the backbone of the
GenImage detectors.

Follows torchvision/models/resnet.py: a 7×7/2 stem conv → BN → ReLU → 3×3/2 max-pool
(`small_input`: a 3×3/1 stem conv and no max-pool, for 32×32 images); stages of blocks
with base widths `width`·2^i, the first block of stages 2–4 strided; a block's shortcut is
a 1×1 conv → BN projection wherever its stride or width changes; global average pool →
Dense head. `block='bottleneck'`: 1×1 → 3×3 (the stride, as v1.5) → 1×1 with ×4 expansion
(ResNet-50: `stage_sizes=(3, 4, 6, 3)`); `block='basic'`: two 3×3 (ResNet-18: (2, 2, 2, 2)).
Convs are kaiming-normal fan-out (torchvision's init); BN scale 1, bias 0, or scale 0 on
each block's last BN with `zero_init_residual` (torchvision's flag); the head is effcomp's
`dense` (lecun-normal, where torchvision keeps PyTorch's uniform Linear init). Padding is
PyTorch's (k // 2 on each side, `tests/test_padding.py`).

`ResNetBackbone` returns the pooled feature and the named maps that texture detectors
(GramNet) read; `ResNet(x, train, return_features=True)` returns them beside the logits.
x: [batch, height, width, 3] (uint8 or float, normalized by the task) → logits
[batch, num_classes] float32.
"""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.nn.dense import dense
from effcomp.registry import MODELS

# torchvision's `kaiming_normal_(mode='fan_out', nonlinearity='relu')`: N(0, 2 / (k·k·out)).
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Output channels per base width of each block kind.
EXPANSION = {"basic": 1, "bottleneck": 4}


def conv(features: int, dtype, name: str, kernel_size: int = 3, strides: int = 1) -> nn.Conv:
  """A bias-free k×k conv padded k // 2 on every side (PyTorch's `padding=k//2`), kernel
  [k, k, in, out] with torchvision's init and logical axis names."""
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(strides, strides),
      padding=((kernel_size // 2,) * 2,) * 2, use_bias=False, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(
          KAIMING_FAN_OUT, ("height", "width", "conv_in", "conv_out")))


def batch_norm(train: bool, dtype, name: str, zero_scale: bool = False) -> nn.BatchNorm:
  """PyTorch's BatchNorm2d (momentum 0.1 = flax 0.9, eps 1e-5); `zero_scale` starts the
  scale at 0 (torchvision's `zero_init_residual` on a block's last BN)."""
  scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(scale_init, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class Block(nn.Module):
  """One residual block: relu(branch(x) + shortcut(x)); x: [B, H, W, C_in] →
  [B, H / strides, W / strides, features · EXPANSION[kind]]."""
  features: int
  strides: int = 1
  kind: str = "bottleneck"
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    out_features = self.features * EXPANSION[self.kind]
    bn = lambda name, zero=False: batch_norm(train, self.dtype, name, zero)
    if self.kind == "bottleneck":
      y = nn.relu(bn("bn1")(conv(self.features, self.dtype, "conv1", 1)(x)))
      y = nn.relu(bn("bn2")(conv(self.features, self.dtype, "conv2", 3, self.strides)(y)))
      y = bn("bn3", self.zero_init_residual)(conv(out_features, self.dtype, "conv3", 1)(y))
    elif self.kind == "basic":
      y = nn.relu(bn("bn1")(conv(self.features, self.dtype, "conv1", 3, self.strides)(x)))
      y = bn("bn2", self.zero_init_residual)(conv(out_features, self.dtype, "conv2", 3)(y))
    else:
      raise ValueError(f"block {self.kind!r}: expected one of {', '.join(EXPANSION)}")
    if self.strides != 1 or x.shape[-1] != out_features:
      x = bn("down_bn")(conv(out_features, self.dtype, "down_conv", 1, self.strides)(x))
    return nn.relu(y + x)


class ResNetBackbone(nn.Module):
  """The ResNet without its head: returns (pooled [B, C_last], maps), maps named
  'input' (x as `dtype`), 'stem' (after the stem's ReLU), 'maxpool' (after the max-pool;
  the stem's map with `small_input`) and 'layer1'…'layerN' (each stage's output,
  torchvision's names)."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  block: str = "bottleneck"
  small_input: bool = False
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    maps = {"input": x.astype(self.dtype)}
    if self.small_input:
      x = conv(self.width, self.dtype, "stem_conv", 3)(maps["input"])
    else:
      x = conv(self.width, self.dtype, "stem_conv", 7, 2)(maps["input"])
    maps["stem"] = x = nn.relu(batch_norm(train, self.dtype, "stem_bn")(x))
    if not self.small_input:  # torch's MaxPool2d(3, stride=2, padding=1), -inf padding
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    maps["maxpool"] = x
    for s, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        x = Block(self.width * 2**s, strides=2 if (b == 0 and s > 0) else 1, kind=self.block,
                  zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                  name=f"layer{s + 1}_block{b}")(x, train)
      maps[f"layer{s + 1}"] = x
    return jnp.mean(x, axis=(1, 2)), maps


@MODELS.register("resnet")
class ResNet(nn.Module):
  """`ResNetBackbone` → Dense head (logits [B, num_classes] float32). With
  `return_features`, returns (logits, {'pooled': [B, C], **maps}) (see the backbone)."""
  num_classes: int = 2
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  block: str = "bottleneck"
  small_input: bool = False
  zero_init_residual: bool = False
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    pooled, maps = ResNetBackbone(
        self.stage_sizes, self.width, self.block, self.small_input, self.zero_init_residual,
        self.dtype, name="backbone")(x, train)
    logits = dense(self.num_classes, "embed", "classes", self.dtype, name="head")(pooled)
    logits = logits.astype(jnp.float32)
    return (logits, {"pooled": pooled, **maps}) if return_features else logits


# torchvision's resnet50 with a real/fake head: 23,512,130 parameters.
RESNET50 = dict(stage_sizes=(3, 4, 6, 3), width=64, block="bottleneck", small_input=False)
# torchvision's resnet18 layout (GramNet's official backbone): 11,177,538 parameters.
RESNET18 = dict(stage_sizes=(2, 2, 2, 2), width=64, block="basic", small_input=False)
# A CPU-size bottleneck ResNet for 32×32 images: one block per stage, base width 16.
RESNET50_LITE = dict(stage_sizes=(1, 1, 1, 1), width=16, block="bottleneck", small_input=True)
