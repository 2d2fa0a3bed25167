"""Dropout with Flax's masks, bit for bit, drawn several times faster on CPUs.

`flax.linen.Dropout` draws its mask with `jax.random.bernoulli`, whose Threefry-2x32 hash
JAX lowers on CPU as a rolled loop (`jax._src.random.threefry2x32`, `use_rolled_loops`
on CPU, to keep compile times down): five passes over the whole mask-sized state, each
through memory. In DiT-SR's train step, whose blocks drop out three activations each
(the recipe's dropout 0.1), that made the masks 0.43 s of a 4.5 s step on 2 cores
(issue 22's profile). Here the same hash is written out round by round in jnp ops
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011: Threefry-2x32
with 20 rounds, the rotation constants and key schedule of JAX's `_threefry2x32_lowering`),
so that XLA fuses counter, hash, the uniform draw and the mask into one loop.

The bits equal `jax.random.bits(key, shape)` (the default threefry2x32 key under
`jax_threefry_partitionable`, JAX's default: counter n of a C-order iota hashed as the
pair (n >> 32, n mod 2³²), the two output words xor-ed) and the mask equals
`jax.random.bernoulli(key, 1 - rate, shape)`, so `Dropout` computes exactly what
`nn.Dropout` computes with the same key (tested). Keys of another PRNG implementation, or
`jax_threefry_partitionable` off, draw through `jax.random` itself.

The backward pass keeps the boolean mask alone (`keep`): autodiff of Flax's `lax.select`
also keeps a float zeros tensor of the input's shape for every dropout in the step.
"""

import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(v: jax.Array, r: int) -> jax.Array:
  return lax.shift_left(v, np.uint32(r)) | lax.shift_right_logical(v, np.uint32(32 - r))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array):
  """Threefry-2x32 (20 rounds) of the counter pairs (x1, x2) under the key (k1, k2), all
  uint32: the function of JAX's `threefry2x32_p`, unrolled."""
  ks = (k1, k2, k1 ^ k2 ^ _PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, r) ^ x1
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def _threefry_words(key: jax.Array) -> Optional[jax.Array]:
  """The key's two uint32 words when its bits are JAX's partitionable Threefry (a typed
  threefry2x32 key or a raw uint32[2] one); None for any other key or setting."""
  if not jax.config.jax_threefry_partitionable:
    return None
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key) if "threefry2x32" in str(jax.random.key_impl(key)) else None
  return key if key.dtype == jnp.uint32 and key.shape == (2,) else None


def random_bits(key: jax.Array, shape: Sequence[int]) -> jax.Array:
  """uint32 bits of `shape`, equal to `jax.random.bits(key, shape)` for a threefry key
  (module docstring); other keys go to `jax.random.bits` itself."""
  shape = tuple(shape)
  size = math.prod(shape)
  words = _threefry_words(key)
  if words is None or size >= 2 ** 32 or not shape:
    return jax.random.bits(key, shape)
  counts = lax.iota(jnp.uint32, size).reshape(shape)  # n < 2³²: the high words are 0
  b1, b2 = threefry2x32(words[0], words[1], jnp.zeros(shape, jnp.uint32), counts)
  return b1 ^ b2


def bernoulli(key: jax.Array, p: float, shape: Sequence[int]) -> jax.Array:
  """`jax.random.bernoulli(key, p, shape)` (float32 uniforms from the bits' top 23 bits,
  `jax.random.uniform`'s construction, compared with p)."""
  bits = random_bits(key, shape)
  one = np.array(1.0, np.float32).view(np.uint32)
  floats = lax.bitcast_convert_type(lax.shift_right_logical(bits, np.uint32(9)) | one,
                                    jnp.float32) - np.float32(1.0)
  return floats < np.float32(p)


class Dropout(nn.Module):
  """`flax.linen.Dropout` (same fields, same masks for the same key), faster on CPU."""
  rate: float
  broadcast_dims: Sequence[int] = ()
  deterministic: Optional[bool] = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: Optional[bool] = None,
               rng: Optional[jax.Array] = None) -> jax.Array:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    rng = self.make_rng(self.rng_collection) if rng is None else rng
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    mask = jnp.broadcast_to(bernoulli(rng, keep_prob, shape), inputs.shape)
    return keep(inputs, mask, keep_prob)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def keep(x: jax.Array, mask: jax.Array, keep_prob: float) -> jax.Array:
  """x / keep_prob where the boolean `mask` is set, 0 elsewhere (Flax's `lax.select`).

  The backward keeps only the mask (1 byte an element): autodiff of the select also keeps
  a float zeros tensor of x's shape, 4 bytes an element, for each dropout of the step."""
  return lax.select(mask, x / keep_prob, jnp.zeros_like(x))


def _keep_fwd(x, mask, keep_prob):
  return keep(x, mask, keep_prob), mask


def _keep_bwd(keep_prob, mask, g):
  return keep(g, mask, keep_prob), None  # a masked scaling is its own transpose


keep.defvjp(_keep_fwd, _keep_bwd)
