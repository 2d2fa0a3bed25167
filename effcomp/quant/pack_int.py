"""Integer weights packed into uint32 words: storage and matmul for weight-only PTQ.

A post-training-quantized kernel w [in, out] (RTN, GPTQ, AWQ, CBQ, …) is stored as its
integer codes q ∈ [qmin, qmax] with one step size s and zero point z per group of
`group_size` consecutive input rows of each output column (`fake_quant`'s granularity;
'channel' and 'tensor' are one group of all `in` rows), and computes with

  ŵ[i, o] = (q[i, o] − z[g(i), o]) · s[g(i), o],   g(i) = i // group_size,

the same numbers as `fake_quant.dequantize(fake_quant.quantize(w, s, z))` (Jacob et al.
2018, eq. 1–3; GPTQ/AWQ's "w4a16g128" storage).

Bit layout (`PackedWeight.packed`: uint32 [ceil(in / c), out], c = 32 // bits codes per
word): code i of a column goes to bits [b·(i % c), b·(i % c) + b) of word i // c of that
column (little-endian, as `pack.pack_bits`). So 2, 4 and 8 bits fill a word with 16, 8 and
4 codes; 3 bits put 10 codes in a word and leave its top 2 bits 0 (3.2 bits per weight
instead of 3: a word never splits a code, so unpacking is one shift and mask per code).
Codes are stored unsigned, q − qmin (symmetric codes −2ᵇ⁻¹ … 2ᵇ⁻¹−1 become 0 … 2ᵇ−1).
`in` need not be a multiple of c: the last word is padded with code 0 and the true shape
is kept as a static field. Words may straddle group boundaries (3 bits, g128: 12.8 words a
group); only the element-wise dequantization knows about groups.

Storage: scale as float32 (default: dequantization equals fake-quant RTN bit for bit) or
float16 (GPTQ's checkpoints; codes are then chosen with the float16-rounded step, so
ŵ = dequantize(quantize(w, s16, z), s16, z)); zero as uint8 (asymmetric) or int8
(symmetric) codes, or as a float (`zero_dtype`) for methods with fractional zero points.
Memory relative to float16, with S, Z the scale's and zero's bytes and c codes a word:

  nbytes / float16 bytes = (32 / c) / 16 + (S + Z) / (2 · group_size)   (c divides in),

e.g. int4 g128, float16 scale and zero: 0.25 + 4/256 = 0.25 + 1/64.

`matmul` dequantizes inside jit and calls one dot. On XLA CPU the dot is a library call,
so the dequantized kernel is materialized: the packed form saves memory, not time
(2-core CPU, int4 g128, jitted, medians; see the docstring of `matmul`).
"""

import math
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from effcomp.quant import fake_quant as fq

WORD_BITS = 32
WEIGHT_GRANULARITIES = ("tensor", "channel", "group")


def codes_per_word(bits: int) -> int:
  """Codes of `bits` bits in one uint32 word: 16, 10, 8, 6, 5, 4, 4 for 2 … 8 bits."""
  return WORD_BITS // bits


@flax.struct.dataclass
class PackedWeight:
  """A quantized kernel [in, out] with its codes packed along `in` (see module docstring).

  packed: uint32 [ceil(in / codes_per_word(bits)), out], unsigned codes q − qmin.
  scale: float16 or float32 [groups, 1, out], groups = ceil(in / group_size).
  zero: uint8 / int8 codes or float [groups, 1, out], in the codes' signed domain (as
    `fake_quant.scale_and_zero`'s zero point: 0 for symmetric min–max).
  """
  packed: jax.Array
  scale: jax.Array
  zero: jax.Array
  bits: int = flax.struct.field(pytree_node=False)
  symmetric: bool = flax.struct.field(pytree_node=False)
  shape: Tuple[int, int] = flax.struct.field(pytree_node=False)
  group_size: int = flax.struct.field(pytree_node=False)

  @property
  def qmin(self) -> int:
    return -(2 ** (self.bits - 1)) if self.symmetric else 0

  @property
  def groups(self) -> int:
    return -(-self.shape[0] // self.group_size)


def _pack_codes(codes: jax.Array, bits: int) -> jax.Array:
  """Unsigned codes [n, out] (< 2**bits) → uint32 [ceil(n / c), out]; padded with 0."""
  per = codes_per_word(bits)
  n, out = codes.shape
  words = -(-n // per)
  codes = jnp.pad(codes.astype(jnp.uint32), ((0, words * per - n), (0, 0)))
  shifts = (jnp.arange(per, dtype=jnp.uint32) * bits)[:, None]
  # The fields are disjoint, so their sum is their OR.
  return jnp.sum(codes.reshape(words, per, out) << shifts, axis=1, dtype=jnp.uint32)


def _unpack_codes(packed: jax.Array, bits: int, n: int) -> jax.Array:
  """Inverse of `_pack_codes`: uint32 [words, out] → unsigned codes, int32 [n, out]."""
  per = codes_per_word(bits)
  shifts = (jnp.arange(per, dtype=jnp.uint32) * bits)[None, :, None]
  codes = (packed[:, None, :] >> shifts) & jnp.uint32(2 ** bits - 1)
  return codes.reshape(-1, packed.shape[-1])[:n].astype(jnp.int32)


def _per_group(x: Any, groups: int, out: int, name: str) -> jax.Array:
  """`x` broadcast to [groups, 1, out], or a ValueError naming the expected shape."""
  x = jnp.asarray(x)
  target = (groups, 1, out)
  try:
    ok = np.broadcast_shapes(x.shape, target) == target
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(f"{name} of shape {x.shape}: expected [groups, 1, out] = {list(target)} "
                     "or a shape that broadcasts to it")
  return jnp.broadcast_to(x, target)


def _stored_zero(zero: jax.Array, spec: fq.QuantSpec, zero_dtype: Any) -> jax.Array:
  """Zero points in their storage dtype: int8/uint8 codes unless `zero_dtype` is a float."""
  default = jnp.int8 if spec.symmetric else jnp.uint8
  dtype = jnp.dtype(default if zero_dtype is None else zero_dtype)
  if jnp.issubdtype(dtype, jnp.floating):
    return zero.astype(dtype)
  if not isinstance(zero, jax.core.Tracer):  # values known: refuse a lossy cast
    z, info = np.asarray(zero, np.float64), np.iinfo(dtype)
    if not (np.array_equal(z, np.round(z)) and info.min <= z.min() and z.max() <= info.max):
      raise ValueError(f"zero points in [{z.min()}, {z.max()}] are not all integers in "
                       f"[{info.min}, {info.max}] ({dtype.name}): pass zero_dtype=jnp.float32 "
                       "(or float16) to store fractional zero points")
  return zero.astype(dtype)


def pack_weight(w: jax.Array, spec: fq.QuantSpec, scale: Optional[jax.Array] = None,
                zero: Optional[jax.Array] = None, clip_ratio: Any = 1.0,
                scale_dtype: Any = jnp.float32, zero_dtype: Any = None) -> PackedWeight:
  """Quantizes kernel `w` [in, out] with `spec` and packs its codes.

  Args:
    w: the float kernel [in, out].
    spec: bits 2–8; granularity 'tensor', 'channel' or 'group' (the last group may be shorter).
    scale, zero: step sizes and zero points chosen by the caller (GPTQ, CBQ, a clipping
      search), shaped [groups, 1, out] or broadcastable to it (as `weight_scale_and_zero`
      returns them). Without them: min–max with `clip_ratio`, as `weight_scale_and_zero`.
      `zero` may be left out for a symmetric spec (then 0).
    clip_ratio: the min–max range's shrink factor; used only when `scale` is None.
    scale_dtype: float32 (exact RTN) or float16; the codes use the stored step size,
      at least the dtype's smallest normal number (float16: 6.1e-5).
    zero_dtype: None (uint8 for asymmetric, int8 for symmetric codes; a ValueError if the
      zero points are not such integers) or a float dtype.

  Returns:
    A PackedWeight whose `dequantize_weight` equals
    `fake_quant.dequantize(fake_quant.quantize(w, s, z, spec), s, z)` with the stored s, z —
    for the default float32 min–max path exactly `fake_quant.quantize_weight(w, spec)`.
  """
  if not spec.enabled:
    raise ValueError(f"bits={spec.bits}: a {fq.FULL_BITS}-bit spec means 'not quantized'; "
                     "there is nothing to pack")
  if spec.granularity not in WEIGHT_GRANULARITIES:
    raise ValueError(f"granularity={spec.granularity!r}: weights take one of "
                     f"{WEIGHT_GRANULARITIES}")
  if w.ndim != 2:
    raise ValueError(f"weight of shape {w.shape}: expected a 2-D kernel [in, out]")
  n_in, out = w.shape
  group_size = spec.group_size if spec.granularity == "group" else n_in
  groups = -(-n_in // group_size)  # a shorter last group, as in fake_quant
  if scale is None:
    if zero is not None:
      raise ValueError("zero was given without scale: give both, or neither for min–max")
    scale, zero = fq.weight_scale_and_zero(w, spec, clip_ratio)
  elif zero is None:
    if not spec.symmetric:
      raise ValueError("an asymmetric spec needs zero points along with the given scale")
    zero = jnp.zeros_like(jnp.asarray(scale, jnp.float32))
  # Floored at the storage dtype's smallest normal number: an all-zero group's step (1e-8)
  # would round to 0 in float16, and x / 0 has no code.
  scale = _per_group(scale, groups, out, "scale").astype(jnp.float32)
  scale = jnp.maximum(scale, jnp.finfo(scale_dtype).tiny).astype(scale_dtype)
  zero = _stored_zero(_per_group(zero, groups, out, "zero"), spec, zero_dtype)
  view = _grouped(w.astype(jnp.float32), groups, group_size)
  q = fq.quantize(view, scale.astype(jnp.float32), zero.astype(jnp.float32), spec)
  packed = _pack_codes((q - spec.qmin).reshape(-1, out)[:n_in], spec.bits)
  return PackedWeight(packed, scale, zero, bits=spec.bits, symmetric=spec.symmetric,
                      shape=(n_in, out), group_size=group_size)


def _grouped(x: jax.Array, groups: int, group_size: int) -> jax.Array:
  """[in, out] → [groups, group_size, out], the last group zero-padded when shorter."""
  pad = groups * group_size - x.shape[0]
  return jnp.pad(x, ((0, pad), (0, 0))).reshape(groups, group_size, x.shape[1])


def unpack_codes(pw: PackedWeight) -> jax.Array:
  """The integer codes q ∈ [qmin, qmax] (signed for symmetric specs): int32 [in, out]."""
  return _unpack_codes(pw.packed, pw.bits, pw.shape[0]) + pw.qmin


def dequantize_weight(pw: PackedWeight) -> jax.Array:
  """ŵ = (q − z)·s per group: float32 [in, out] (`fake_quant.dequantize`)."""
  q = _grouped(unpack_codes(pw), pw.groups, pw.group_size)
  w = fq.dequantize(q, pw.scale.astype(jnp.float32), pw.zero.astype(jnp.float32))
  return w.reshape(-1, pw.shape[1])[:pw.shape[0]]


def matmul(x: jax.Array, pw: PackedWeight, dtype: Any = jnp.float32) -> jax.Array:
  """x [..., in] @ ŵ [in, out] → dtype [..., out], unpacking inside the caller's jit.

  The scale is applied per group while dequantizing (element-wise, fused by XLA with the
  unpacking), then one dot runs in `dtype`; equals `x @ dequantize_weight(pw)` to float
  rounding. Against float32 jnp.dot on the dequantized kernel (2-core CPU, int4, jitted,
  medians of 20): 704×256 g64 0.08 vs 0.03 ms at batch 1, 0.49 vs 0.45 ms at batch 64;
  4096×4096 g128 36 vs 5 ms at batch 1, 62 vs 31 ms at batch 64 — unpacking 16M codes
  costs ~30 ms. The grouped form Σ_g s_g·(x_g @ (q_g − z_g)) (G batched dots, the scale
  after the dot) was no better: as fast at batch 1, 2–4x slower at batch 64.
  """
  if x.shape[-1] != pw.shape[0]:
    raise ValueError(f"x of shape {x.shape} @ packed kernel {pw.shape}: the last dim of x "
                     f"must be in={pw.shape[0]}")
  return jnp.dot(x.astype(dtype), dequantize_weight(pw).astype(dtype))


def nbytes(pw: PackedWeight) -> int:
  """Bytes stored: packed words + scales + zero points (works on `jax.eval_shape` output)."""
  return sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize
             for a in (pw.packed, pw.scale, pw.zero))


def float_nbytes(shape: Sequence[int], dtype: Any) -> int:
  """Bytes of a dense tensor of `shape` and `dtype` (the unquantized reference)."""
  return math.prod(shape) * jnp.dtype(dtype).itemsize


def pack_tree(params: Mapping[str, Any], specs_by_path: Mapping[str, fq.QuantSpec],
              scale_dtype: Any = jnp.float32,
              grids: Optional[Mapping[str, Tuple[jax.Array, jax.Array]]] = None) -> dict:
  """Replaces the kernels named in `specs_by_path` by `pack_weight(kernel, spec)`.

  params: a nested dict of (unboxed, `nn.unbox`) arrays; specs_by_path: '/'-joined paths
  such as 'layers_0/attn/q/kernel' → QuantSpec; grids: optional path → (scale, zero) that
  a quantizer chose (GPTQ, AWQ, CBQ), else min–max. Other leaves are returned as they are.
  """
  grids = grids or {}
  flat = traverse_util.flatten_dict(params, sep="/")
  missing = sorted(set(specs_by_path) - set(flat))
  if missing:
    raise ValueError(f"no parameter at {missing}; paths look like {sorted(flat)[:3]}")
  for path, spec in specs_by_path.items():
    if not hasattr(flat[path], "ndim"):
      raise ValueError(f"{path}: {type(flat[path]).__name__} is not an array (unbox boxed "
                       "params with nn.unbox first)")
    scale, zero = grids.get(path, (None, None))
    flat[path] = pack_weight(flat[path], spec, scale, zero, scale_dtype=scale_dtype)
  return traverse_util.unflatten_dict(flat, sep="/")


def tree_nbytes(tree: Any) -> int:
  """Bytes of a tree holding PackedWeights and plain arrays."""
  leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, PackedWeight))
  return sum(nbytes(x) if isinstance(x, PackedWeight) else x.nbytes for x in leaves)


def save(path: str, tree: Mapping[str, Any]) -> None:
  """Writes a (packed) param tree as one .npz: arrays under '/'-joined paths, each
  PackedWeight as '<path>.packed|.scale|.zero' with its static fields in '<path>.meta'.
  Written to a temporary name and renamed, so a failed save leaves no partial file."""
  flat = traverse_util.flatten_dict(tree, sep="/")
  arrays = {}
  for key, value in flat.items():
    if isinstance(value, PackedWeight):
      arrays.update({f"{key}.packed": value.packed, f"{key}.scale": value.scale,
                     f"{key}.zero": value.zero,
                     f"{key}.meta": np.array([value.bits, value.symmetric, *value.shape,
                                              value.group_size], np.int64)})
    else:
      arrays[key] = value
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
  os.replace(tmp, path)


def load(path: str) -> dict:
  """The tree `save` wrote, PackedWeights rebuilt."""
  data = np.load(path)
  flat = {}
  for key in data.files:
    if key.endswith(".meta"):
      base = key[:-len(".meta")]
      bits, symmetric, n_in, n_out, group_size = (int(v) for v in data[key])
      flat[base] = PackedWeight(jnp.asarray(data[f"{base}.packed"]), jnp.asarray(data[f"{base}.scale"]),
                                jnp.asarray(data[f"{base}.zero"]), bits=bits,
                                symmetric=bool(symmetric), shape=(n_in, n_out),
                                group_size=group_size)
    elif not key.endswith((".packed", ".scale", ".zero")):
      flat[key] = jnp.asarray(data[key])
  return traverse_util.unflatten_dict(flat, sep="/")


def unpack_tree(params: Any, dtype: Any = jnp.float32) -> Any:
  """Replaces every PackedWeight in `params` by its dequantized kernel in `dtype`."""
  is_packed = lambda x: isinstance(x, PackedWeight)
  return jax.tree.map(lambda x: dequantize_weight(x).astype(dtype) if is_packed(x) else x,
                      params, is_leaf=is_packed)
