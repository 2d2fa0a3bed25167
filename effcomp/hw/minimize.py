"""Two-level logic minimization: one sum of products (SOP) per output bit.

Follows ActivationFunctionDemo's `get_expressions` (`implementation/implement.py`): every
output bit of the truth table is minimized on its own, from the list of inputs where it is
1, into a sum of products; an all-zero bit is the constant 0. The demo drives a Windows GUI
program ("Logic Functions Minimization.exe") through pywinauto; effcomp calls espresso
(Brayton, Hachtel, McMullen, Sangiovanni-Vincentelli 1984, "Logic Minimization Algorithms
for VLSI Synthesis"; the Berkeley espresso-IIc sources) through PyEDA's C extension,
`pyeda.boolalg.espresso.espresso`, the same call `pyeda.boolalg.minimization.espresso_tts`
makes, with the design's don't-care inputs as espresso's D-set.

A cube is `(mask, value)` over the input bits (bit i of both is input bit i, LSB first):
the product of x_i (value bit set) or ~x_i (clear) for every i in `mask`. A bit with no
cubes is the constant 0; a cube with mask 0 is the constant 1.
"""

import dataclasses
import functools
from typing import Tuple

import numpy as np

from effcomp.hw import fixed_point

Cube = Tuple[int, int]

# PyEDA's own settings for espresso_tts (`pyeda.boolalg.minimization.CONFIG`).
_ESPRESSO_CONFIG = dict(single_expand=False, remove_essential=True, force_irredundant=True,
                        unwrap_onset=True, recompute_onset=False, use_super_gasp=False)


@dataclasses.dataclass(frozen=True)
class Cover:
  """Per output bit (LSB first), the cubes whose OR is that bit: an SOP per bit."""
  in_bits: int
  bits: Tuple[Tuple[Cube, ...], ...]

  @property
  def products(self) -> int:
    """Product terms over all bits (a product used by two bits counts twice)."""
    return sum(len(b) for b in self.bits)

  @property
  def literals(self) -> int:
    return sum(bin(mask).count("1") for b in self.bits for mask, _ in b)

  def evaluate(self, patterns: np.ndarray) -> np.ndarray:
    """Input bit patterns [...] → output bit patterns [...] (unsigned), gate by gate."""
    patterns = np.asarray(patterns, np.int64)
    out = np.zeros_like(patterns)
    for j, cubes in enumerate(self.bits):
      bit = np.zeros(patterns.shape, bool)
      for mask, value in cubes:
        bit |= (patterns & mask) == value
      out |= bit.astype(np.int64) << j
    return out


def _espresso():
  try:
    from pyeda.boolalg import espresso  # optional: the hw extra (a C extension)
  except ImportError as e:
    raise ImportError("logic minimization needs PyEDA (espresso): pip install 'effcomp[hw]'") from e
  return espresso


def minimize_bit(on: np.ndarray, dc: np.ndarray) -> Tuple[Cube, ...]:
  """The espresso-minimized cubes of one output bit.

  on, dc: bool [2^n], indexed by the input pattern: where the bit is 1, and the don't-care
  inputs (`on` is ignored there). Cubes come sorted, so the result is deterministic.
  """
  n = int(len(on)).bit_length() - 1
  on, dc = np.asarray(on, bool) & ~np.asarray(dc, bool), np.asarray(dc, bool)
  if not on.any():
    return ()
  if (on | dc).all():
    return ((0, 0),)
  espresso = _espresso()
  # espresso's input codes: 1 = the variable is 0, 2 = it is 1; outputs: 1 = on, 2 = dc.
  rows = set()
  for p in np.flatnonzero(on | dc):
    rows.add((tuple(2 if (p >> i) & 1 else 1 for i in range(n)), (2 if dc[p] else 1,)))
  espresso.set_config(**_ESPRESSO_CONFIG)
  result = espresso.espresso(n, 1, rows, intype=espresso.FTYPE | espresso.DTYPE)
  cubes = []
  for invec, _ in result:
    mask = sum(1 << i for i, v in enumerate(invec) if v in (1, 2))
    value = sum(1 << i for i, v in enumerate(invec) if v == 2)
    cubes.append((mask, value))
  return tuple(sorted(cubes))


@functools.lru_cache(maxsize=256)
def minimize(design: fixed_point.Design) -> Cover:
  """The design's table as one minimized SOP per output bit, don't-cares used.

  espresso keeps state between calls: the products chosen for a bit (never the function
  on the care set) can depend on earlier calls in the process. Cached per design, so that
  everything in one process (Verilog, activation, report) uses the same circuit.
  """
  patterns = design.out.patterns(design.table())
  dc = ~design.care()
  return Cover(design.inp.bits, tuple(minimize_bit((patterns >> j) & 1 == 1, dc)
                                      for j in range(design.out.bits)))


def mismatches(cover: Cover, design: fixed_point.Design) -> np.ndarray:
  """Input patterns (care set only) where the SOP's output differs from the table."""
  patterns = np.arange(1 << design.inp.bits)
  wrong = (cover.evaluate(patterns) != design.out.patterns(design.table())) & design.care()
  return np.flatnonzero(wrong)

