"""PatchGAN discriminator (pix2pix's `NLayerDiscriminator`), as LlamaGen trains its VQGAN with.

Follows FoundationVision/LlamaGen `tokenizer/tokenizer_image/discriminator_patchgan.py`
(from taming-transformers), NHWC:

  Conv4×4/2(ndf) → LReLU(0.2)
  for n in 1 … n_layers − 1:  Conv4×4/2(ndf·min(2ⁿ, 8), no bias) → BatchNorm → LReLU(0.2)
  Conv4×4/1(ndf·min(2^n_layers, 8), no bias) → BatchNorm → LReLU(0.2)
  Conv4×4/1(1)                                    → one logit per patch

every conv padded by 1; weights drawn from N(0, 0.02), BatchNorm scales from N(1, 0.02)
and biases zero (its `_init_weights`). A 256² image gives 30×30 logits (70×70-pixel
receptive fields), a 16² digit 2×2 with n_layers 2. BatchNorm as torch's (eps 1e-5,
running statistics moved by 0.1 per training call) in the 'batch_stats' collection; one
difference: torch moves the running variance toward the unbiased batch variance, flax
toward the biased one (the training forward, which uses the batch's own statistics, is
the same). LlamaGen's ActNorm option (`use_actnorm`, off in its configs) is not implemented.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.vae.autoencoder_kl import CONV_AXES

INIT_STD = 0.02
# Where a tokenizer run keeps the discriminator's variables, beside the tokenizer's
# ('params' and 'batch_stats'; `effcomp.tasks.vq`, `effcomp.convert.llamagen_vq`).
KEY = "patchgan_discriminator"


def _scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  return 1.0 + INIT_STD * jax.random.normal(key, shape, dtype)


class PatchGANDiscriminator(nn.Module):
  """Patch logits [B, h, w, 1] of images [B, H, W, C] (module docstring).

  Attributes:
    ndf: width of the first conv (LlamaGen `disc_dim`, 64).
    n_layers: strided convs (LlamaGen `disc_num_layers`, 3): logits on a grid of side
      ⌊H / 2^n_layers⌋ − 2 (H even), so images need a side of at least 3 · 2^n_layers.
  """
  ndf: int = 64
  n_layers: int = 3
  dtype: Any = jnp.float32

  def _conv(self, features: int, stride: int, bias: bool, name: str) -> nn.Conv:
    return nn.Conv(features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)),
                   use_bias=bias, dtype=self.dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(
                       nn.initializers.normal(INIT_STD), CONV_AXES),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))

  def _norm(self, train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=self.dtype, name=name,
                        scale_init=nn.with_logical_partitioning(_scale_init, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if self.ndf < 1 or self.n_layers < 1:
      raise ValueError(f"ndf={self.ndf}, n_layers={self.n_layers}: expected both ≥ 1")
    smallest = 3 * 2 ** self.n_layers
    if x.ndim != 4 or min(x.shape[1:3]) < smallest:
      raise ValueError(f"x of shape {x.shape}: expected [B, H, W, C] images of side at least "
                       f"{smallest} for n_layers={self.n_layers}")
    h = nn.leaky_relu(self._conv(self.ndf, 2, True, "conv_0")(x), 0.2)
    for n in range(1, self.n_layers + 1):
      stride = 2 if n < self.n_layers else 1
      h = self._conv(self.ndf * min(2 ** n, 8), stride, False, f"conv_{n}")(h)
      h = nn.leaky_relu(self._norm(train, f"norm_{n}")(h), 0.2)
    return self._conv(1, 1, True, "logits")(h).astype(jnp.float32)
