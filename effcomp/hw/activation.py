"""A JAX activation that computes a design's combinational circuit bit for bit.

x (float) → input code c = round(x·2^f_in) saturated to the input format (to its symmetric
range for `_sym` designs: the quantizer in front of the circuit) → bit pattern → circuit →
output pattern → output code y_c → y = y_c·2^-f_out. Only integer operations touch the codes;
y is exact in float32 (in bfloat16 for outputs of at most 8 significant bits).

The circuit, two ways that agree on every input (`tests/test_hw_activation.py`):
- "gates": every product term as (pattern & mask) == value, ORed per output bit, the
  bits shifted into the output pattern: the SOP of `effcomp.hw.minimize` itself;
  memory [..., products] booleans.
- "table" (default): a gather from the same SOP evaluated once on all 2^n patterns
  (`Cover.evaluate`, which includes what the circuit does on don't-care inputs).

Gradient: straight-through (Bengio et al. 2013): the float AF's derivative where x lies
inside the input format's range and 0 outside it (the clipping), so a network can be
trained or fine-tuned through the circuit.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from effcomp.hw import fixed_point, minimize

MODES = ("table", "gates")


def _gates(cover: minimize.Cover, out_bits: int) -> Callable[[jax.Array], jax.Array]:
  """Input patterns (int32) → output patterns, by evaluating the products."""
  cubes = [(mask, value, j) for j, bit in enumerate(cover.bits) for mask, value in bit]
  if not cubes:
    return jnp.zeros_like
  # NumPy constants: the activation may be built inside a trace (a model's __call__).
  masks, values, owner = (np.array(c, np.int32) for c in zip(*cubes))
  onehot = np.eye(out_bits, dtype=np.float32)[owner]  # [products, out_bits]
  weights = (1 << np.arange(out_bits)).astype(np.int32)

  def circuit(patterns):
    hits = (jnp.bitwise_and(patterns[..., None], masks) == values).astype(jnp.float32)
    bits = (hits @ onehot > 0).astype(jnp.int32)  # [..., out_bits]: OR of each bit's products
    return jnp.sum(bits * weights, axis=-1)
  return circuit


def circuit_activation(design: fixed_point.Design | str, *, mode: str = "table",
                       cover: minimize.Cover | None = None) -> Callable[[jax.Array], jax.Array]:
  """The elementwise activation x [...] → y [...] (x's dtype) of `design`'s SOP circuit."""
  if isinstance(design, str):
    design = fixed_point.parse(design)
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}: expected one of {MODES}")
  cover = minimize.minimize(design) if cover is None else cover
  inp, out = design.inp, design.out
  lo, hi = inp.min_code + int(design.symmetric), inp.max_code
  if mode == "table":
    table = cover.evaluate(np.arange(1 << inp.bits)).astype(np.int32)
    circuit = lambda patterns: jnp.asarray(table)[patterns]
  else:
    circuit = _gates(cover, out.bits)

  def forward(x):
    codes = jnp.clip(jnp.floor(x.astype(jnp.float32) * 2.0 ** inp.frac_bits + 0.5), lo, hi)
    y = circuit(jnp.bitwise_and(codes.astype(jnp.int32), (1 << inp.bits) - 1))
    if out.signed:  # two's complement pattern → code
      y = y - jnp.right_shift(y, out.bits - 1) * (1 << out.bits)
    return (y.astype(jnp.float32) * out.lsb).astype(x.dtype)

  @jax.custom_vjp
  def activation(x):
    return forward(x)

  def fwd(x):
    return forward(x), x

  def bwd(x, g):
    inside = (x >= lo * inp.lsb) & (x <= hi * inp.lsb)
    _, vjp = jax.vjp(design.function.jax, x)
    return (jnp.where(inside, vjp(g)[0], 0).astype(x.dtype),)

  activation.defvjp(fwd, bwd)
  return activation
