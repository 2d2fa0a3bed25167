"""Activation functions by name, for models whose config names one (`activation="tanh"`).

- `relu` and the float AFs of `effcomp.hw.fixed_point.ACTIVATIONS`: tanh, sigmoid, selu,
  elu, gelu (exact, erf), silu, hard_tanh, hard_sigmoid, hard_silu.
- `circuit:<design>`, e.g. `circuit:tanh_i3f5_o1f7`: the design's minimized combinational
  circuit, bit-exact in integer arithmetic with a straight-through gradient
  (`effcomp.hw.activation`; Yang, Wei, Tu et al. 2018).
"""

import functools
from typing import Callable

import jax

from effcomp.hw import activation, fixed_point

CIRCUIT_PREFIX = "circuit:"


@functools.lru_cache(maxsize=None)
def get(name: str) -> Callable[[jax.Array], jax.Array]:
  """The elementwise activation called `name` (see the module docstring)."""
  if name == "relu":
    return jax.nn.relu
  if name.startswith(CIRCUIT_PREFIX):
    return activation.circuit_activation(name[len(CIRCUIT_PREFIX):])
  if name in fixed_point.ACTIVATIONS:
    return fixed_point.ACTIVATIONS[name].jax
  raise ValueError(f"activation={name!r}: expected relu, one of {sorted(fixed_point.ACTIVATIONS)} "
                   "or circuit:<design> (e.g. circuit:tanh_i3f5_o1f7)")
