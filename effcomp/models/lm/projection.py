"""The LLaMA-style decoder's linear projections: float, or 1-bit with `BinaryLinear`."""

from typing import Optional, Tuple

import flax.linen as nn
import jax

from effcomp.quant.binary_linear import BinarizeSpec, BinaryLinear

INIT_STD = 0.02  # HF `initializer_range`: normal(0, 0.02) for every weight matrix.


def linear(features: int, axes: Tuple[str, str], use_bias: bool, dtype, name: str) -> nn.Dense:
  """A Dense layer with kernel [in, out] named by `axes`, normal(0.02) init, zero bias."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def project(x: jax.Array, features: int, axes: Tuple[str, str], use_bias: bool, dtype, name: str,
            binarize: Optional[BinarizeSpec] = None, progress: Optional[jax.Array] = None
            ) -> jax.Array:
  """`linear(...)(x)`, or the same projection with 1-bit weights when `binarize` is set
  (`BinaryLinear`: same param names and axes, plus its scales); call inside a compact
  method."""
  if binarize is None:
    return linear(features, axes, use_bias, dtype, name)(x)
  return BinaryLinear(features, axes, binarize, use_bias, dtype, name=name,
                      kernel_init=nn.initializers.normal(INIT_STD))(x, progress)
