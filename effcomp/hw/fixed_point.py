"""Fixed-point formats, activation functions and a design's exhaustive truth table.

A *design* is an activation function (AF) with an input and an output fixed-point format
and a rounding rule. Its truth table holds, for every one of the 2^in_bits input bit
patterns, the output bit pattern of the AF of that input, quantized to the output format.

Follows ActivationFunctionDemo's `implementation/implement.py` (`aproxi_AF`, which samples
the AF at 2^i_bits inputs, and `trans_value`, which truncates each output to `int_bits`
integer and `float_bits` fraction bits). Where effcomp deviates, and why:
- Inputs are the exact grid of a fixed-point format: x = code·2^-f for every code, two's
  complement (signed) or unsigned. The demo samples rang_l + k·(rang_r − rang_l)/2^i_bits
  over a user range (for SELU's [−3.875, 0] not a binary grid) and covers one sign only, the
  other restored by symmetry outside the circuit. A signed format puts the whole AF into one
  circuit; the demo's one-sided tanh_1_6_4 (4 input bits over [0, 2), 1 + 6 output bits,
  magnitude truncated) is the design `tanh_i1f3u_o1f6u_rtz`.
- Outputs are saturated at the format's ends (the demo lets the integer part wrap).
- Rounding: 'truncate' (floor: dropping the low bits of a two's complement number, the
  default), 'round' (to nearest, ties up) or 'toward_zero' (the demo's sign-magnitude
  truncation of |y|).

Names: the demo's `AF_int_frac_inbits` (tanh_1_6_4) names the output only; effcomp names
both formats, `tanh_i3f5_o1f7`: an input of 3 integer bits (the sign included) and 5
fraction bits, an output of 1 integer bit (the sign) and 7 fraction bits. A `u` after a
format: unsigned. Suffixes: `_rnd` / `_rtz` (rounding other than truncation), `_sym` (a
symmetric input quantizer never produces the most negative code: it is a don't-care).
"""

import dataclasses
import re
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

ROUNDINGS = ("truncate", "round", "toward_zero")
_ROUNDING_SUFFIX = {"truncate": "", "round": "_rnd", "toward_zero": "_rtz"}
_SELU_ALPHA = 1.6732632423543772848170429916717  # Klambauer et al. 2017, eq. 2
_SELU_SCALE = 1.0507009873554804934193349852946


@dataclasses.dataclass(frozen=True)
class Format:
  """A fixed-point number of `int_bits` + `frac_bits` bits: value = code · 2^-frac_bits.

  Signed formats are two's complement and count the sign among `int_bits` (Q3.5 holds
  [−4, 4) in steps of 1/32); unsigned ones hold [0, 2^int_bits).
  """
  int_bits: int
  frac_bits: int
  signed: bool = True

  def __post_init__(self):
    if self.int_bits < int(self.signed) or self.frac_bits < 0:
      raise ValueError(f"format {self}: expected int_bits >= {int(self.signed)} (the sign "
                       "counts as an integer bit) and frac_bits >= 0")
    if not 1 <= self.bits <= 16:
      raise ValueError(f"format {self}: expected 1 to 16 bits, got {self.bits}")

  @property
  def bits(self) -> int:
    return self.int_bits + self.frac_bits

  @property
  def lsb(self) -> float:
    return 2.0 ** -self.frac_bits

  @property
  def min_code(self) -> int:
    return -(1 << (self.bits - 1)) if self.signed else 0

  @property
  def max_code(self) -> int:
    return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

  def tag(self, letter: str) -> str:
    """`i3f5` / `o1f6u`: the format as it appears in a design name."""
    return f"{letter}{self.int_bits}f{self.frac_bits}{'' if self.signed else 'u'}"

  def codes(self, patterns: np.ndarray) -> np.ndarray:
    """Bit patterns (unsigned ints < 2^bits) → codes (two's complement if signed)."""
    patterns = np.asarray(patterns, np.int64)
    if not self.signed:
      return patterns
    return patterns - ((patterns >> (self.bits - 1)) & 1) * (1 << self.bits)

  def patterns(self, codes: np.ndarray) -> np.ndarray:
    """Codes → bit patterns (the low `bits` bits of the two's complement)."""
    return np.asarray(codes, np.int64) & ((1 << self.bits) - 1)

  def quantize(self, values: np.ndarray, rounding: str = "truncate") -> np.ndarray:
    """Real values → codes: scaled by 2^frac_bits, rounded, saturated to the format."""
    scaled = np.asarray(values, np.float64) * 2.0 ** self.frac_bits
    if rounding == "truncate":
      q = np.floor(scaled)
    elif rounding == "round":
      q = np.floor(scaled + 0.5)
    elif rounding == "toward_zero":
      q = np.trunc(scaled)
    else:
      raise ValueError(f"rounding={rounding!r}: expected one of {ROUNDINGS}")
    return np.clip(q, self.min_code, self.max_code).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ActivationFunction:
  """An AF in float64 NumPy (for tables) and JAX (for networks), with the default formats:
  the input's integer bits and the output's integer bits and sign."""
  numpy: Callable[[np.ndarray], np.ndarray]
  jax: Callable[[jax.Array], jax.Array]
  in_int_bits: int
  out_int_bits: int
  out_signed: bool = True


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_relu6(x):
  return np.clip(x, 0.0, 6.0)


ACTIVATIONS: Dict[str, ActivationFunction] = {
    "tanh": ActivationFunction(np.tanh, jnp.tanh, 3, 1),
    "sigmoid": ActivationFunction(_np_sigmoid, jax.nn.sigmoid, 4, 0, out_signed=False),
    # The output range is the input's: SELU saturates above x = 3.81 (SELU > 4), where its
    # 1.05 slope leaves the range, rather than spend a bit on it.
    "selu": ActivationFunction(
        lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
        jax.nn.selu, 3, 3),
    "elu": ActivationFunction(lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
                              jax.nn.elu, 3, 3),
    "gelu": ActivationFunction(lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))),
                               lambda x: jax.nn.gelu(x, approximate=False), 3, 3),
    "silu": ActivationFunction(lambda x: x * _np_sigmoid(x), jax.nn.silu, 3, 3),
    "hard_tanh": ActivationFunction(lambda x: np.clip(x, -1.0, 1.0), jax.nn.hard_tanh, 2, 2),
    "hard_sigmoid": ActivationFunction(lambda x: _np_relu6(x + 3.0) / 6.0, jax.nn.hard_sigmoid,
                                       3, 1, out_signed=False),
    "hard_silu": ActivationFunction(lambda x: x * _np_relu6(x + 3.0) / 6.0, jax.nn.hard_silu,
                                    3, 3),
}


def activation_function(name: str) -> ActivationFunction:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation function {name!r}: expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class Design:
  """AF `af` from input format `inp` to output format `out` (see the module docstring)."""
  af: str
  inp: Format
  out: Format
  rounding: str = "truncate"
  symmetric: bool = False

  def __post_init__(self):
    activation_function(self.af)
    if self.rounding not in ROUNDINGS:
      raise ValueError(f"rounding={self.rounding!r}: expected one of {ROUNDINGS}")
    if self.symmetric and not self.inp.signed:
      raise ValueError(f"design {self.name}: symmetric=True needs a signed input format")

  @property
  def name(self) -> str:
    return (f"{self.af}_{self.inp.tag('i')}_{self.out.tag('o')}"
            f"{_ROUNDING_SUFFIX[self.rounding]}{'_sym' if self.symmetric else ''}")

  @property
  def function(self) -> ActivationFunction:
    return activation_function(self.af)

  def inputs(self) -> np.ndarray:
    """The real input of every bit pattern 0 … 2^in_bits − 1 (in that order)."""
    return self.inp.codes(np.arange(1 << self.inp.bits)) * self.inp.lsb

  def table(self) -> np.ndarray:
    """Output codes [2^in_bits], indexed by the input bit pattern."""
    return self.out.quantize(self.function.numpy(self.inputs()), self.rounding)

  def care(self) -> np.ndarray:
    """bool [2^in_bits]: False for input patterns that never occur (don't-cares)."""
    care = np.ones(1 << self.inp.bits, bool)
    if self.symmetric:
      care[self.inp.patterns(self.inp.min_code)] = False
    return care


_NAME = re.compile(r"^(?P<af>[a-z_]+?)_i(\d+)f(\d+)(u?)_o(\d+)f(\d+)(u?)(_rnd|_rtz)?(_sym)?$")


def parse(name: str) -> Design:
  """`tanh_i3f5_o1f7` (see the module docstring) → `Design`."""
  m = _NAME.match(name)
  if not m:
    raise ValueError(f"design name {name!r}: expected AF_i<int>f<frac>[u]_o<int>f<frac>[u]"
                     "[_rnd|_rtz][_sym], e.g. tanh_i3f5_o1f7")
  g = m.groups()
  rounding = {None: "truncate", "_rnd": "round", "_rtz": "toward_zero"}[g[7]]
  return Design(g[0], Format(int(g[1]), int(g[2]), not g[3]), Format(int(g[4]), int(g[5]), not g[6]),
                rounding, g[8] is not None)


def design(af: str, in_bits: int = 8, *, in_int_bits: int | None = None,
           out_bits: int | None = None, out_int_bits: int | None = None,
           in_signed: bool = True, out_signed: bool | None = None,
           rounding: str = "truncate", symmetric: bool = False) -> Design:
  """A design from bit widths, with the AF's default integer bits where not given.

  `design("tanh", 8)` is `tanh_i3f5_o1f7`; `out_bits` defaults to `in_bits`.
  """
  f = activation_function(af)
  in_int = f.in_int_bits if in_int_bits is None else in_int_bits
  out_int = f.out_int_bits if out_int_bits is None else out_int_bits
  out_bits = in_bits if out_bits is None else out_bits
  if not in_int <= in_bits:
    raise ValueError(f"in_int_bits={in_int}: expected at most in_bits={in_bits}")
  if not out_int <= out_bits:
    raise ValueError(f"out_int_bits={out_int}: expected at most out_bits={out_bits}")
  return Design(af, Format(in_int, in_bits - in_int, in_signed),
                Format(out_int, out_bits - out_int, f.out_signed if out_signed is None else out_signed),
                rounding, symmetric)
