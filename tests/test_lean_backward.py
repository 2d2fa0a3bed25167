"""effcomp.nn.lean_backward: the same functions and gradients as JAX's, fewer residuals."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from effcomp.nn import lean_backward


def _full_size_residuals(f, x):
  """How many arrays of x's size, not x itself, the backward of Σ f(x)·c keeps in x and c
  (a consumer that needs f's output, as a matmul does)."""
  return sum(aval.size == x.size and not why.startswith("from the argument")
             for aval, why in saved_residuals(lambda v, c: jnp.sum(f(v) * c), x, x))


@pytest.mark.parametrize("approximate", [True, False])
def test_gelu_equals_jax_gelu_and_keeps_only_its_input(approximate):
  x = jax.random.normal(jax.random.key(0), (4, 9, 33)) * 3
  g = jax.random.normal(jax.random.key(1), x.shape)
  ours = lambda v: jnp.sum(lean_backward.gelu(v, approximate) * g)
  ref = lambda v: jnp.sum(jax.nn.gelu(v, approximate) * g)
  np.testing.assert_allclose(lean_backward.gelu(x, approximate), jax.nn.gelu(x, approximate),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(ref)(x), rtol=1e-5, atol=1e-6)
  # Beside the output its consumer keeps, JAX's autodiff keeps two or three tensors of x's
  # shape; this keeps x alone.
  assert _full_size_residuals(lambda v: jax.nn.gelu(v, approximate), x) >= 3
  assert _full_size_residuals(lambda v: lean_backward.gelu(v, approximate), x) == 1


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_equals_jax_softmax_and_keeps_only_its_output(axis):
  x = jax.random.normal(jax.random.key(0), (3, 7, 11)) * 4
  x = x.at[0, :, 2].set(-1e4)  # a masked-out column, as the shifted-window mask makes
  g = jax.random.normal(jax.random.key(1), x.shape)
  ours = lambda v: jnp.sum(lean_backward.softmax(v, axis) * g)
  ref = lambda v: jnp.sum(jax.nn.softmax(v, axis=axis) * g)
  np.testing.assert_allclose(lean_backward.softmax(x, axis), jax.nn.softmax(x, axis=axis),
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(ref)(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(ours))(x), jax.grad(ref)(x), rtol=1e-5, atol=1e-6)
  # JAX's keeps the exponentials beside the output; this, the output alone.
  assert _full_size_residuals(lambda v: jax.nn.softmax(v, axis=axis), x) == 2
  assert _full_size_residuals(lambda v: lean_backward.softmax(v, axis), x) == 1


@pytest.mark.parametrize("shape,groups", [((2, 8, 8, 64), 32), ((3, 5, 7, 12), 4), ((2, 9, 6), 3)])
def test_group_norm_equals_flax_group_norm_with_fewer_residuals(shape, groups):
  x = jax.random.normal(jax.random.key(0), shape) * 2 + 0.5
  g = jax.random.normal(jax.random.key(1), shape)
  flax_norm = nn.GroupNorm(num_groups=groups, epsilon=1e-5, dtype=jnp.float32,
                           use_fast_variance=False)
  params = {"scale": jax.random.normal(jax.random.key(2), shape[-1:]) + 1,
            "bias": jax.random.normal(jax.random.key(3), shape[-1:])}
  ours = lean_backward.GroupNorm(groups, 1e-5)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)["params"]) == \
      jax.tree.map(jnp.shape, flax_norm.init(jax.random.key(0), x)["params"])
  np.testing.assert_allclose(ours.apply({"params": params}, x),
                             flax_norm.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, v: jnp.sum(m.apply({"params": p}, v) * g), (0, 1))(params, x)
           for m in (ours, flax_norm)]
  for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  f = lambda m: (lambda v: m.apply({"params": params}, v))
  assert _full_size_residuals(f(ours), x) == 1  # the output (c's): x itself is the argument
  assert _full_size_residuals(f(flax_norm), x) >= 3
  with pytest.raises(ValueError, match="num_groups=5"):
    lean_backward.GroupNorm(5).init(jax.random.key(0), x)
