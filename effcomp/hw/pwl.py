"""The piecewise-linear (PWL) baseline: y ≈ b[s] + k[s]·t per input segment, in integers.

The paper's second baseline (besides the LUT): the demo's `generate_coe` stores one slope
k and intercept b per segment (`k.coe`, `b.coe`), both from the chord through the AF at the
segment's ends, k = (y1 − y0)/(x1 − x0), and computes y = k·x + b. effcomp keeps the chord
but writes it as b[s] + k[s]·t, t the input's offset inside its segment, so the multiplier
takes only the low input bits (the same line, a narrower multiplier), and uses
2^seg_bits equal segments selected by the input's top bits (the demo uses one segment per
two input steps, which makes the PWL larger than the LUT it is compared with).

Integer arithmetic (what the Verilog computes, bit for bit), input n bits, output code y:
  u = pattern XOR 2^(n−1) (signed inputs; the pattern itself if unsigned): the input's rank,
  s = u >> (n − seg_bits), t = u mod 2^(n − seg_bits), acc = B[s] + K[s]·t,
  y = saturate(shift(acc, coef_frac)), shift the design's rounding applied to acc / 2^coef_frac;
with B[s] = round(f(x0)·2^(out_frac + coef_frac)) and
K[s] = round((f(x1) − f(x0))·2^(out_frac + coef_frac) / 2^(n − seg_bits)), x0 the segment's
first input and x1 the next segment's.
"""

import dataclasses
from typing import Tuple

import numpy as np

from effcomp.hw import fixed_point


@dataclasses.dataclass(frozen=True)
class PiecewiseLinear:
  """Integer slopes `k` and intercepts `b` of 2^seg_bits segments (see the module docstring)."""
  design: fixed_point.Design
  seg_bits: int
  coef_frac: int
  k: Tuple[int, ...]
  b: Tuple[int, ...]

  @property
  def offset_bits(self) -> int:
    return self.design.inp.bits - self.seg_bits

  def accumulator_range(self) -> Tuple[int, int]:
    """The smallest and largest acc = B + K·t over all segments and offsets."""
    t_max = (1 << self.offset_bits) - 1
    k, b = np.asarray(self.k), np.asarray(self.b)
    ends = np.stack([b, b + k * t_max])
    return int(ends.min()), int(ends.max())

  def evaluate(self, patterns: np.ndarray) -> np.ndarray:
    """Input bit patterns → output codes, in the integer arithmetic of the Verilog module."""
    inp, out = self.design.inp, self.design.out
    u = np.asarray(patterns, np.int64) ^ ((1 << (inp.bits - 1)) if inp.signed else 0)
    s, t = u >> self.offset_bits, u & ((1 << self.offset_bits) - 1)
    acc = np.asarray(self.b, np.int64)[s] + np.asarray(self.k, np.int64)[s] * t
    return np.clip(shift(acc, self.coef_frac, self.design.rounding), out.min_code, out.max_code)


def shift(acc: np.ndarray, bits: int, rounding: str) -> np.ndarray:
  """acc / 2^bits rounded as `rounding` says, in integers (arithmetic shifts)."""
  if rounding == "truncate":
    return acc >> bits
  if rounding == "round":
    return (acc + ((1 << bits) >> 1)) >> bits
  return np.where(acc < 0, -((-acc) >> bits), acc >> bits)  # toward_zero


def fit(design: fixed_point.Design, seg_bits: int | None = None,
        coef_frac: int | None = None) -> PiecewiseLinear:
  """Chords through the AF at the segment ends, quantized to integers.

  seg_bits defaults to n // 2 + 1 (16 segments at 6 input bits, 32 at 8), coef_frac to the
  offset's bits, so that the slope's rounding adds at most half an output LSB at a
  segment's end.
  """
  n = design.inp.bits
  seg_bits = n // 2 + 1 if seg_bits is None else seg_bits
  if not 0 <= seg_bits <= n:
    raise ValueError(f"seg_bits={seg_bits}: expected 0 to the input's {n} bits")
  coef_frac = n - seg_bits if coef_frac is None else coef_frac
  steps = 1 << (n - seg_bits)
  ranks = np.arange(0, (1 << n) + 1, steps)  # segment starts and the end of the last one
  x = (design.inp.min_code + ranks) * design.inp.lsb
  y = design.function.numpy(x) * 2.0 ** (design.out.frac_bits + coef_frac)
  b = np.floor(y[:-1] + 0.5).astype(np.int64)
  k = np.floor((y[1:] - y[:-1]) / steps + 0.5).astype(np.int64)
  return PiecewiseLinear(design, seg_bits, coef_frac, tuple(int(v) for v in k),
                         tuple(int(v) for v in b))
