"""The CPU-fast depthwise conv: same function, gradients and parameters as nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.nn import depthwise_conv
from effcomp.nn.depthwise_conv import DepthwiseConv, auto_impl, depthwise_conv2d


@pytest.mark.parametrize("k", [1, 3, 5])
def test_shifted_equals_grouped_conv_and_gradients(k):
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 8))
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 8))
  loss = lambda impl: lambda x, w: jnp.sum(jnp.sin(depthwise_conv2d(x, w, impl)))
  np.testing.assert_allclose(depthwise_conv2d(x, kernel, "shifted"),
                             depthwise_conv2d(x, kernel, "conv"), atol=1e-5)
  g_shift = jax.grad(loss("shifted"), argnums=(0, 1))(x, kernel)
  g_conv = jax.grad(loss("conv"), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_shift, g_conv):
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("block_bytes", [1, 2000, 10 ** 6])
def test_kernel_gradient_is_the_same_for_any_row_blocking(block_bytes, monkeypatch):
  """The kernel gradient scans blocks of rows (1 row, a few rows, whole images): each
  blocking gives autodiff's gradient of the grouped convolution."""
  monkeypatch.setattr(depthwise_conv, "_BLOCK_BYTES", block_bytes)
  x = jax.random.normal(jax.random.key(0), (3, 12, 7, 8))
  kernel = jax.random.normal(jax.random.key(1), (5, 5, 1, 8))
  loss = lambda impl: lambda w: jnp.sum(jnp.sin(depthwise_conv2d(x, w, impl)))
  np.testing.assert_allclose(jax.grad(loss("shifted"))(kernel), jax.grad(loss("conv"))(kernel),
                             rtol=1e-5, atol=1e-4)


def test_shifted_against_naive_loop():
  x = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype(np.float32)
  w = np.random.default_rng(1).normal(size=(3, 3, 1, 2)).astype(np.float32)
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.zeros_like(x)
  for i in range(4):
    for j in range(4):
      want[0, i, j] = np.einsum("hwc,hwc->c", padded[0, i:i + 3, j:j + 3], w[:, :, 0])
  np.testing.assert_allclose(depthwise_conv2d(jnp.asarray(x), jnp.asarray(w), "shifted"), want,
                             atol=1e-5)


def test_module_has_nn_conv_parameters_and_output():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
  ref = nn.Conv(6, (5, 5), padding="SAME", feature_group_count=6)
  params = ref.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias too
  ours = DepthwiseConv(5)
  assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x))
          == jax.tree.map(jnp.shape, params))
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)


def test_bad_arguments_are_named():
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="odd"):
    depthwise_conv2d(x, jnp.zeros((2, 2, 1, 3)))
  with pytest.raises(ValueError, match="kernel shape"):
    depthwise_conv2d(x, jnp.zeros((3, 3, 1, 4)))
  with pytest.raises(ValueError, match="impl"):
    depthwise_conv2d(x, jnp.zeros((3, 3, 1, 3)), "fft")


def test_auto_impl_picks_the_traced_form():
  x, w = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 2))
  prims = lambda: {e.primitive.name  # a fresh function: jax caches traces by function
                   for e in jax.make_jaxpr(lambda x, w: depthwise_conv2d(x, w))(x, w).eqns}
  with auto_impl("conv"):
    assert "conv_general_dilated" in prims()
  with auto_impl("shifted"):
    assert "conv_general_dilated" not in prims()
  with pytest.raises(ValueError, match="impl"):
    with auto_impl("auto"):
      pass
