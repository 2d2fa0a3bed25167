"""effcomp.nn.dropout: Flax's dropout masks, bit for bit, from an unrolled Threefry."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from effcomp.nn import dropout


@pytest.mark.parametrize("shape", [(7,), (3, 5, 7), (2, 16, 16, 40)])
def test_bits_equal_jax_random_bits(shape):
  for seed in (0, 1, 12345):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(dropout.random_bits(key, shape), jax.random.bits(key, shape))
    raw = jax.random.PRNGKey(seed)  # a raw uint32[2] key
    np.testing.assert_array_equal(jax.jit(dropout.random_bits, static_argnums=1)(raw, shape),
                                  jax.random.bits(raw, shape))
  bits = np.asarray(dropout.random_bits(jax.random.key(0), (64, 1024)), np.uint64)
  # Every bit position is a fair coin (4σ band of 65536 draws).
  ones = ((bits[..., None] >> np.arange(32, dtype=np.uint64)) & 1).mean(axis=(0, 1))
  assert np.all(np.abs(ones - 0.5) < 4 * 0.5 / 256)


class _Net(nn.Module):
  """Two dropouts in a module tree (their keys fold in the module path)."""
  cls: type
  rate: float
  broadcast_dims: tuple = ()

  @nn.compact
  def __call__(self, x, train):
    x = self.cls(self.rate, self.broadcast_dims, deterministic=not train)(jnp.sin(x))
    return self.cls(self.rate, deterministic=not train)(x * 2.0)


@pytest.mark.parametrize("rate,dims", [(0.1, ()), (0.5, (1, -1)), (0.0, ()), (1.0, ())])
def test_dropout_equals_flax_dropout_with_gradients(rate, dims):
  x = jax.random.normal(jax.random.key(0), (4, 6, 8, 10))
  for key in (jax.random.key(1), jax.random.PRNGKey(2)):
    outs = []
    for cls in (nn.Dropout, dropout.Dropout):
      net = _Net(cls, rate, dims)
      f = lambda x: net.apply({}, x, True, rngs={"dropout": key})
      outs.append(jax.jit(lambda x: (f(x), jax.grad(lambda x: jnp.sum(f(x) ** 2))(x)))(x))
      np.testing.assert_array_equal(net.apply({}, x, False), jnp.sin(x) * 2.0)
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-6)
  if 0 < rate < 1:
    kept = np.mean(np.asarray(outs[1][0]) != 0)  # through both dropouts
    assert abs(kept - (1 - rate) ** 2) < 0.05


def test_other_prng_keys_take_jax_random():
  key = jax.random.key(0, impl="rbg")
  np.testing.assert_array_equal(dropout.random_bits(key, (5, 6)), jax.random.bits(key, (5, 6)))
  np.testing.assert_array_equal(dropout.bernoulli(key, 0.7, (5, 6)),
                                jax.random.bernoulli(key, 0.7, (5, 6)))


def test_backward_keeps_the_mask_alone():
  x = jax.random.normal(jax.random.key(0), (4, 6, 8, 10))

  def residuals(cls):
    drop = lambda v: cls(0.1, deterministic=False).apply({}, v, rngs={"dropout": jax.random.key(1)})
    f = lambda v: jnp.sum(drop(v))
    return [aval.dtype for aval, _ in saved_residuals(f, x) if aval.shape == x.shape]

  assert residuals(nn.Dropout) == [jnp.bool_, jnp.float32]  # the mask and a float zeros
  assert residuals(dropout.Dropout) == [jnp.bool_]
