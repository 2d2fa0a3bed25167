"""Binary ResNets with a real-valued shortcut around every binary conv (Bi-Real style).

Block (AdaBin code, BinaryNetworks/AdaBin/cifar10/nets/resnet20.py and
imagenet/nets/resnet18.py): out = act(BN(bconv1(x)) + shortcut(x));
out = act(BN(bconv2(out)) + out).
- `ResNet20` (CIFAR, He et al. 2016): 3×3 FP stem with 16 channels, stages of 3 blocks
  with 16/32/64 channels; downsample shortcut "option A" (stride-2 subsampling and zero
  channel padding, real-valued and parameter-free); global pool → BN → Dense.
- `ResNet18`/`ResNet34` (ImageNet): 7×7/2 FP stem + 3×3/2 max-pool, stages of [2,2,2,2] /
  [3,4,6,3] blocks with 64…512 channels; downsample shortcut AvgPool(2) → FP 1×1 conv →
  BN (the code's `avg_down`); global pool → BN → Dense.
Padding is the reference's PyTorch padding, not XLA's 'SAME' (which pads stride-2 layers
0 before and 1 after): every conv k // 2 on each side (`binary.BinaryConv`, `cnn.conv`),
the stem's MaxPool2d(3, 2, padding=1), the shortcut's AvgPool2d(ceil_mode=True,
count_include_pad=False); tests/test_padding.py checks each against torch.
x: [batch, height, width, channels] float → logits [batch, num_classes].
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.cnn import batch_norm, conv as fp_conv
from effcomp.nn.dense import dense
from effcomp.quant import binary
from effcomp.registry import MODELS


def stem_max_pool(x: jax.Array) -> jax.Array:
  """The ImageNet stem's `nn.MaxPool2d(3, stride=2, padding=1)` (-inf padding)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def shortcut_avg_pool(x: jax.Array, s: int) -> jax.Array:
  """The `avg_down` shortcut's `nn.AvgPool2d(s, s, ceil_mode=True, count_include_pad=False)`:
  a last partial window (odd sizes) averages its pixels only."""
  return nn.avg_pool(x, (s, s), (s, s), padding="SAME", count_include_pad=False)


class BinaryBasicBlock(nn.Module):
  features: int
  strides: int = 1
  method: str = "adabin"
  weight_method: str = ""  # "" = `method`; "none" keeps weights real (ReActNet step 1)
  shortcut: str = "A"  # "A" (CIFAR) or "avgpool_conv" (ImageNet)
  adabin_act_form: str = "paper"
  nonlinearity: str = ""  # "" = the method's own (binary.nonlinearity)
  dtype: Any = jnp.float32

  def _conv(self, strides, name):
    return binary.BinaryConv(
        self.features, strides=(strides, strides), weight_method=self.weight_method or self.method,
        act_method=self.method, adabin_act_form=self.adabin_act_form, dtype=self.dtype, name=name)

  def _shortcut(self, x, train):
    if self.strides == 1 and x.shape[-1] == self.features:
      return x
    if self.shortcut == "A":
      x = x[:, ::self.strides, ::self.strides]
      pad = self.features - x.shape[-1]
      return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
    x = shortcut_avg_pool(x, self.strides)
    x = fp_conv(self.features, self.dtype, "down_conv", kernel_size=(1, 1))(x)
    return batch_norm(train, self.dtype, "down_bn")(x)

  @nn.compact
  def __call__(self, x, train: bool = False, progress: Optional[jax.Array] = None):
    out = batch_norm(train, self.dtype, "bn1")(self._conv(self.strides, "conv1")(x, progress))
    out = binary.nonlinearity(self.method, self.nonlinearity)(out + self._shortcut(x, train))
    out2 = batch_norm(train, self.dtype, "bn2")(self._conv(1, "conv2")(out, progress))
    return binary.nonlinearity(self.method, self.nonlinearity)(out2 + out)


class _BinaryResNet(nn.Module):
  num_classes: int = 10
  method: str = "adabin"
  weight_method: str = ""  # "" = `method`; "none": real weights, binary activations
  adabin_act_form: str = "paper"
  nonlinearity: str = ""  # "" = the method's own (binary.nonlinearity)
  progressive: bool = True  # False: estimators ignore progress (AdaBin code without --progressive)
  dtype: Any = jnp.float32
  # Set by subclasses:
  stage_sizes: Sequence[int] = ()
  widths: Sequence[int] = ()
  imagenet_stem: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False, progress: Optional[jax.Array] = None):
    progress = progress if self.progressive else None
    x = x.astype(self.dtype)
    if self.imagenet_stem:
      x = fp_conv(self.widths[0], self.dtype, "stem_conv", kernel_size=(7, 7), strides=(2, 2))(x)
    else:
      x = fp_conv(self.widths[0], self.dtype, "stem_conv")(x)
    x = binary.nonlinearity(self.method, self.nonlinearity)(batch_norm(train, self.dtype, "stem_bn")(x))
    if self.imagenet_stem:
      x = stem_max_pool(x)
    for s, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for b in range(blocks):
        x = BinaryBasicBlock(
            width, strides=2 if (b == 0 and s > 0) else 1, method=self.method,
            weight_method=self.weight_method, nonlinearity=self.nonlinearity,
            shortcut="avgpool_conv" if self.imagenet_stem else "A",
            adabin_act_form=self.adabin_act_form, dtype=self.dtype, name=f"stage{s}_block{b}",
        )(x, train, progress)
    x = batch_norm(train, self.dtype, "head_bn")(jnp.mean(x, axis=(1, 2)))
    return dense(self.num_classes, "embed", "classes", self.dtype, name="head")(x).astype(jnp.float32)


@MODELS.register("bnn_resnet20")
class ResNet20(_BinaryResNet):
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)


@MODELS.register("bnn_resnet18")
class ResNet18(_BinaryResNet):
  num_classes: int = 1000
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  imagenet_stem: bool = True


@MODELS.register("bnn_resnet34")
class ResNet34(ResNet18):
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
