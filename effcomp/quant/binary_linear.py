"""A linear layer with 1-bit weights and full-precision activations (1-bit LLMs).

Same parameter names, shapes, logical axes and initializer as the `nn.Dense` it replaces
(`kernel` [in, out], `bias` [out]), so a full-precision checkpoint's weights load into it
by path; progressive binarization with dual scaling adds `in_scale` [in] and `out_scale`
[out] (a and l of `effcomp.quant.progressive`, initialized to 1).
"""

import dataclasses
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.quant import progressive


@dataclasses.dataclass(frozen=True)
class BinarizeSpec:
  """Which binarizer (`progressive.METHODS`), its number of phases, dual scaling or not."""
  method: str = "progressive"
  num_phases: int = progressive.NUM_PHASES
  dual_scaling: bool = True

  @property
  def has_scales(self) -> bool:
    return self.method == "progressive" and self.dual_scaling


class BinaryLinear(nn.Module):
  """y = x @ w_b + bias with w_b = `progressive.binarize_weight(kernel, …)`.

  x: [..., in] → [..., features]. `progress` ∈ [0, 1] is the binarization schedule's
  position (None: the final 1-bit weights, as used for evaluation and export).
  """
  features: int
  axes: Tuple[str, str]
  spec: BinarizeSpec
  use_bias: bool = False
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array, progress: Optional[jax.Array] = None) -> jax.Array:
    n_in, (in_axis, out_axis) = x.shape[-1], self.axes
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (n_in, self.features), jnp.float32)
    in_scale = out_scale = None
    if self.spec.has_scales:
      ones = nn.initializers.ones
      in_scale = self.param("in_scale", nn.with_logical_partitioning(ones, (in_axis,)),
                            (n_in,), jnp.float32)
      out_scale = self.param("out_scale", nn.with_logical_partitioning(ones, (out_axis,)),
                             (self.features,), jnp.float32)
    w = progressive.binarize_weight(kernel, self.spec.method, progress, self.spec.num_phases,
                                    in_scale, out_scale)
    y = jnp.dot(x.astype(self.dtype), w.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (out_axis,)),
                        (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y
