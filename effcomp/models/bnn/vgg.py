"""VGG-small (Zhang et al. 2018, LQ-Nets; the CIFAR BNN baseline of XNOR-Net/IR-Net/AdaBin).

FP conv(128) → [binary conv(128) → pool] → binary conv(256) → [binary conv(256) → pool]
→ binary conv(512) → [binary conv(512) → pool] → FP Dense, each conv followed by BN and the
method's nonlinearity (pooling before BN, as in IR-Net's vgg_small_1w1a). `width` scales
the channel counts (1.0 = the paper's 128/256/512).
x: [batch, height, width, channels] float → logits [batch, num_classes].
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.cnn import batch_norm, conv as fp_conv
from effcomp.nn.dense import dense
from effcomp.quant import binary
from effcomp.registry import MODELS


@MODELS.register("bnn_vgg_small")
class VGGSmall(nn.Module):
  num_classes: int = 10
  method: str = "adabin"
  weight_method: str = ""  # "" = `method`; "none": real weights, binary activations
  width: float = 1.0
  adabin_act_form: str = "paper"
  nonlinearity: str = ""  # "" = the method's own (binary.nonlinearity)
  progressive: bool = True  # False: estimators ignore progress (AdaBin code without --progressive)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, progress: Optional[jax.Array] = None):
    progress = progress if self.progressive else None
    c1, c2, c3 = (max(1, int(round(c * self.width))) for c in (128, 256, 512))
    x = x.astype(self.dtype)
    x = fp_conv(c1, self.dtype, "conv0")(x)
    x = binary.nonlinearity(self.method, self.nonlinearity)(batch_norm(train, self.dtype, "bn0")(x))
    for i, (features, pool) in enumerate(((c1, True), (c2, False), (c2, True), (c3, False), (c3, True)), 1):
      x = binary.BinaryConv(features, weight_method=self.weight_method or self.method,
                            act_method=self.method,
                            adabin_act_form=self.adabin_act_form, dtype=self.dtype,
                            name=f"conv{i}")(x, progress)
      if pool:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = binary.nonlinearity(self.method, self.nonlinearity)(batch_norm(train, self.dtype, f"bn{i}")(x))
    x = x.reshape((x.shape[0], -1))
    return dense(self.num_classes, "embed", "classes", self.dtype, name="head")(x).astype(jnp.float32)
