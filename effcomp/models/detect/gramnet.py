"""GramNet (Liu et al., CVPR 2020, "Global Texture Enhancement for Fake Face Detection in
the Wild"): a ResNet whose input and intermediate maps also feed "Gram blocks", global
texture statistics the detector concatenates with the backbone's pooled feature.

Follows the official `stylegan-celeba/resnet18_gram.py` (github.com/liuzhengzhe/
Global_Texture_Enhancement_for_Fake_Face_Detection_in_the-Wild, commit a416145; the
three copies in the repository are identical):
- `gram_matrix`: `GramMatrix` (lines 70–86), G = F Fᵀ / (C·H·W) with F = [B, C, H·W]
  (their `G.div(b*c*d)`, b = channels: Ulyanov's normalization, not Gatys' 1/(H·W)).
- `GramBlock`: `conv_inter*_0` (lines 183–205: 3×3/1 conv to 32 channels → BN → ReLU)
  → Gram → the Gram as a 1-channel [C, C] image through `g*_fc1`, `g*_fc2` (lines
  208–237: 3×3/2 conv 1 → 16 → BN → ReLU, 3×3/2 conv 16 → 32 → BN → ReLU) → global
  average pool (forward, lines 299–348) → [B, 32].
- Where: on the image (`gi`, the forward's x3), the stem's ReLU output (`g0`, x4), the
  max-pool's output (`g1`, x5) and layers 1–3 (`g2`–`g4`, x6–x8); none after layer4
  (forward, lines 280–290). `gram_at` names them by the backbone's map names.
- One `ScaleLayer` (lines 87–94), a single learned scalar (init 1) shared by all six
  Gram features (`self.scale` is one module applied six times, lines 349–354).
- Head `fcnewr` (lines 176–180, applied at 365–366): cat(pooled, gi, g0, …, g4)
  (704 = 512 + 6·32 for ResNet-18) → Linear 512 → ReLU → Dropout 0.5 → Linear 2.
- Init (lines 239–244): every conv kaiming-normal fan-out, BN scale 1 / bias 0.
Deviations: the head returns logits, not the official `LogSoftmax` (log_softmax of these
logits is the official output; softmax cross-entropy is the same loss as their NLLLoss);
Dense layers use effcomp's lecun-normal init, not PyTorch's uniform; the backbone is
`resnet.ResNetBackbone` of any size (official: torchvision's ResNet-18, `GRAMNET`), so
with `small_input` (no max-pool) the 'stem' and 'maxpool' blocks read the same map;
`GRAMNET_LITE` scales every width down for CPU runs on 32×32 images.

x: [batch, height, width, 3] (uint8 or float, normalized by the task) → logits
[batch, num_classes] float32.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.detect.resnet import RESNET18, RESNET50_LITE, ResNetBackbone, batch_norm, conv
from effcomp.nn.dense import dense
from effcomp.nn.dropout import Dropout
from effcomp.registry import MODELS


def gram_matrix(x: jax.Array) -> jax.Array:
  """Per-example Gram matrix of a feature map, normalized as the official `GramMatrix`:
  G[b, c, d] = Σ_{h,w} x[b, h, w, c] · x[b, h, w, d] / (C·H·W).

  x: [B, H, W, C] → [B, C, C] float32 (accumulated in float32 for low-precision x).
  """
  _, h, w, c = x.shape
  g = jnp.einsum("bhwc,bhwd->bcd", x, x, preferred_element_type=jnp.float32)
  return g / (c * h * w)


class GramBlock(nn.Module):
  """conv 3×3 → BN → ReLU → `gram_matrix` → two 3×3/2 conv → BN → ReLU on the Gram as a
  1-channel image → global average pool. x: [B, H, W, C] → [B, channels]."""
  channels: int = 32
  hidden: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    def conv_bn_relu(x, features, strides, conv_name, bn_name):
      x = conv(features, self.dtype, conv_name, 3, strides)(x)
      return nn.relu(batch_norm(train, self.dtype, bn_name)(x))
    x = conv_bn_relu(x, self.channels, 1, "conv_in", "bn_in")
    g = gram_matrix(x)[..., None].astype(self.dtype)  # [B, C, C, 1]
    g = conv_bn_relu(g, self.hidden, 2, "conv1", "bn1")
    g = conv_bn_relu(g, self.channels, 2, "conv2", "bn2")
    return jnp.mean(g, axis=(1, 2))


@MODELS.register("gramnet")
class GramNet(nn.Module):
  """ResNet backbone + a `GramBlock` on each map in `gram_at`, scaled by one shared
  learned scalar, concatenated after the pooled feature → Dense(head_hidden) → ReLU →
  Dropout → Dense(num_classes). With `return_features`, also returns
  {'pooled': [B, C], 'gram': [B, len(gram_at) · gram_channels], **the backbone's maps}.
  Dropout draws from the 'dropout' RNG when `train`."""
  num_classes: int = 2
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  block: str = "basic"
  small_input: bool = False
  zero_init_residual: bool = False
  gram_at: Sequence[str] = ("input", "stem", "maxpool", "layer1", "layer2", "layer3")
  gram_channels: int = 32
  gram_hidden: int = 16
  head_hidden: int = 512
  dropout_rate: float = 0.5
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    pooled, maps = ResNetBackbone(
        self.stage_sizes, self.width, self.block, self.small_input, self.zero_init_residual,
        self.dtype, name="backbone")(x, train)
    unknown = sorted(set(self.gram_at) - set(maps))
    if unknown:
      raise ValueError(f"gram_at: no map(s) {', '.join(unknown)}; valid: {', '.join(maps)}")
    blocks = {at: GramBlock(self.gram_channels, self.gram_hidden, self.dtype, name=f"gram_{at}")
              for at in self.gram_at}
    grams = jnp.concatenate([blocks[at](maps[at], train) for at in self.gram_at], axis=-1)
    ones = nn.with_logical_partitioning(nn.initializers.ones, ("norm",))
    scale = self.param("gram_scale", ones, (1,), jnp.float32)  # the official ScaleLayer
    grams = grams * scale.astype(grams.dtype)
    h = jnp.concatenate([pooled, grams], axis=-1)
    h = nn.relu(dense(self.head_hidden, "embed", "mlp", self.dtype, name="head_hidden")(h))
    h = Dropout(self.dropout_rate, deterministic=not train)(h)
    logits = dense(self.num_classes, "mlp", "classes", self.dtype, name="head")(h)
    logits = logits.astype(jnp.float32)
    if return_features:
      return logits, {"pooled": pooled, "gram": grams, **maps}
    return logits


# The official model: torchvision's ResNet-18 with six Gram blocks, 11,734,723 parameters.
GRAMNET = dict(RESNET18, gram_channels=32, gram_hidden=16, head_hidden=512)
# CPU size for 32×32 images: a one-block-per-stage bottleneck backbone of base width 16
# (`resnet.RESNET50_LITE`) and narrower Gram blocks and head.
GRAMNET_LITE = dict(RESNET50_LITE, gram_channels=16, gram_hidden=8, head_hidden=128)
