"""Uniform fake quantization: the primitives every post-training quantizer builds on.

A quantizer maps x to `(clip(round(x / s) + z, qmin, qmax) − z) · s` — integer codes `q`
with a step size (scale) `s` and a zero point `z` (Jacob et al. 2018, eq. 1–3):
  * asymmetric: codes 0 … 2ᵇ−1, `s = (max − min) / (2ᵇ − 1)`, `z = round(−min / s)`;
  * symmetric: codes −2ᵇ⁻¹ … 2ᵇ⁻¹−1, `s = max|x| / (2ᵇ⁻¹ − 1)`, `z = 0`.
Ranges are min–max over the granularity's reduction set, optionally shrunk by a clip
ratio (AWQ/OmniQuant clipping search):
  * weights (kernels `[in, out]`, effcomp's layout): per tensor, per output channel, or
    per group of `group_size` consecutive input rows of each output channel (GPTQ's
    and AWQ's "g128");
  * activations: per token, dynamic — the range of each row `x[..., :]` at run time
    (SmoothQuant/OmniQuant's W·A· settings), or per tensor.

Gradients: `round_ste` is round with an identity backward (straight-through), so
`fake_quant_with` is differentiable in x and, LSQ-style (Esser et al. 2020), in the step
size: d x̂ / d s = round(x/s) − x/s inside the range and the clipping bound outside it.
`grad_scale` multiplies a step size's gradient by LSQ's g = 1/√(N·qmax).

`QuantConfig.parse('w4a16g128')` names a setting the way the papers' tables do:
`w<bits>a<bits>[g<group>][_sym]`, 16 bits meaning "not quantized".
"""

import dataclasses
import re
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
FULL_BITS = 16  # "a16" / "w16": left in floating point
GRANULARITIES = ("tensor", "channel", "group", "token")


@jax.custom_vjp
def round_ste(x: Array) -> Array:
  """round(x) (half to even) forward; identity backward (straight-through)."""
  return jnp.round(x)


round_ste.defvjp(lambda x: (jnp.round(x), None), lambda _, g: (g,))


@jax.custom_vjp
def grad_scale(x: Array, scale: float) -> Array:
  """x forward; backward g · scale (LSQ's step-size gradient scaling)."""
  return x


grad_scale.defvjp(lambda x, scale: (x, scale), lambda scale, g: (g * scale, None))


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  """How one tensor is quantized.

  Attributes:
    bits: 2–8, or 16 for "not quantized".
    symmetric: symmetric (zero point 0) or asymmetric codes.
    granularity: 'tensor', 'channel' (weights: per output column), 'group' (weights:
      `group_size` input rows per output column) or 'token' (activations: per row).
    group_size: rows per group for 'group'.
  """
  bits: int = FULL_BITS
  symmetric: bool = False
  granularity: str = "channel"
  group_size: int = 0

  def __post_init__(self):
    if self.bits != FULL_BITS and not 2 <= self.bits <= 8:
      raise ValueError(f"bits={self.bits}: expected 2–8, or {FULL_BITS} for no quantization")
    if self.granularity not in GRANULARITIES:
      raise ValueError(f"granularity={self.granularity!r}: expected one of {GRANULARITIES}")
    if (self.granularity == "group") != (self.group_size > 0):
      raise ValueError(f"granularity={self.granularity!r} with group_size={self.group_size}: "
                       "a group size goes with (and only with) granularity 'group'")

  @property
  def enabled(self) -> bool:
    return self.bits != FULL_BITS

  @property
  def qmin(self) -> int:
    return -(2 ** (self.bits - 1)) if self.symmetric else 0

  @property
  def qmax(self) -> int:
    return 2 ** (self.bits - 1) - 1 if self.symmetric else 2 ** self.bits - 1


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """A weight and an activation quantizer, e.g. `QuantConfig.parse('w4a8')`."""
  weight: QuantSpec
  act: QuantSpec
  name: str = ""

  @classmethod
  def parse(cls, name: str) -> "QuantConfig":
    """'w4a16g128', 'w3a16', 'w2a16g64', 'w4a8', 'w4a4', 'w8a8_sym' → a QuantConfig.

    Weights are per output channel (per group with g<size>), activations per token;
    both asymmetric unless `_sym`.
    """
    m = re.fullmatch(r"w(\d+)a(\d+)(?:g(\d+))?(_sym)?", name.strip().lower())
    if not m:
      raise ValueError(f"quantization setting {name!r}: expected 'w<bits>a<bits>[g<group>][_sym]', "
                       "e.g. 'w4a16g128', 'w4a8', 'w2a16'")
    wbits, abits, group, sym = int(m[1]), int(m[2]), int(m[3] or 0), bool(m[4])
    weight = QuantSpec(wbits, sym, "group" if group else "channel", group)
    return cls(weight=weight, act=QuantSpec(abits, sym, "token"), name=name)


def _weight_view(w: Array, spec: QuantSpec) -> Array:
  """`w` [in, out] reshaped so that axis 1 is what one (scale, zero) pair covers.

  Groups: [ceil(in / group_size), group_size, out]; when `in` is not a multiple of the
  group size the last group is shorter, padded here with zeros, which change no range
  (every range includes 0) and are sliced off again by the callers.
  """
  if w.ndim != 2:
    raise ValueError(f"weight of shape {w.shape}: expected a 2-D kernel [in, out]")
  n_in, n_out = w.shape
  if spec.granularity == "group":
    pad = -n_in % spec.group_size
    w = jnp.pad(w, ((0, pad), (0, 0))) if pad else w
    return w.reshape(-1, spec.group_size, n_out)
  if spec.granularity == "channel":
    return w[None]  # [1, in, out]: reduce over in
  if spec.granularity == "tensor":
    return w.reshape(1, -1, 1)
  raise ValueError(f"granularity {spec.granularity!r} is for activations, not weights")


def scale_and_zero(x: Array, spec: QuantSpec, axis, clip_ratio: Array | float = 1.0
                   ) -> Tuple[Array, Array]:
  """Min–max step size and zero point of `x` reduced over `axis` (kept as size-1 dims)."""
  x = x.astype(jnp.float32)
  if spec.symmetric:
    absmax = jnp.max(jnp.abs(x), axis=axis, keepdims=True) * clip_ratio
    scale = absmax / spec.qmax
    zero = jnp.zeros_like(scale)
  else:
    hi = jnp.maximum(jnp.max(x, axis=axis, keepdims=True) * clip_ratio, 0.0)
    lo = jnp.minimum(jnp.min(x, axis=axis, keepdims=True) * clip_ratio, 0.0)
    scale = (hi - lo) / (spec.qmax - spec.qmin)
    scale_safe = jnp.where(scale > 0, scale, 1.0)
    zero = jnp.round(-lo / scale_safe)
  scale = jnp.where(scale > 0, scale, 1e-8)  # an all-zero slice: any step reproduces it
  return scale, zero


def quantize(x: Array, scale: Array, zero: Array, spec: QuantSpec) -> Array:
  """Integer codes (as int32) of `x`."""
  return jnp.clip(jnp.round(x / scale) + zero, spec.qmin, spec.qmax).astype(jnp.int32)


def dequantize(q: Array, scale: Array, zero: Array) -> Array:
  return (q.astype(jnp.float32) - zero) * scale


def fake_quant_with(x: Array, scale: Array, zero: Array, spec: QuantSpec,
                    rounding: Optional[Array] = None) -> Array:
  """(clip(⌊x/s⌉ + z) − z)·s with straight-through rounding; differentiable in x and s.

  `rounding`, if given, replaces round-to-nearest by floor(x/s) + rounding with
  `rounding` ∈ [0, 1] (AdaRound / LoRA-Rounding's learned up/down decision).
  """
  v = x.astype(jnp.float32) / scale
  if rounding is None:
    v = round_ste(v)
  else:  # floor with a straight-through backward, then the learned 0/1 decision
    v = v + jax.lax.stop_gradient(jnp.floor(v) - v) + rounding
  q = jnp.clip(v + zero, spec.qmin, spec.qmax)
  return ((q - zero) * scale).astype(x.dtype)


def weight_scale_and_zero(w: Array, spec: QuantSpec, clip_ratio: Array | float = 1.0
                          ) -> Tuple[Array, Array]:
  """Step sizes and zero points of kernel `w` [in, out] in `_weight_view`'s grouping:
  [ceil(in / group_size), 1, out] (group; row r uses group r // group_size),
  [1, 1, out] (channel) or [1, 1, 1] (tensor)."""
  return scale_and_zero(_weight_view(w, spec), spec, axis=1, clip_ratio=clip_ratio)


def quantize_weight(w: Array, spec: QuantSpec, clip_ratio: Array | float = 1.0) -> Array:
  """Round-to-nearest fake quantization of kernel `w` [in, out] (RTN); same shape/dtype."""
  if not spec.enabled:
    return w
  view = _weight_view(w, spec)
  scale, zero = scale_and_zero(view, spec, axis=1, clip_ratio=clip_ratio)
  w_hat = fake_quant_with(view, scale, zero, spec).reshape(-1, w.shape[1])
  return w_hat[:w.shape[0]].astype(w.dtype)


def quantize_activation(x: Array, spec: QuantSpec) -> Array:
  """Dynamic fake quantization of activations `x` [..., features]: per token or tensor."""
  if not spec.enabled:
    return x
  if spec.granularity == "token":
    axis = -1
  elif spec.granularity == "tensor":
    axis = tuple(range(x.ndim))
  else:
    raise ValueError(f"activation granularity {spec.granularity!r}: expected 'token' or 'tensor'")
  scale, zero = scale_and_zero(jax.lax.stop_gradient(x), spec, axis=axis)
  return fake_quant_with(x, scale, zero, spec)
