"""The bit-exact JAX circuit activation (effcomp.hw.activation) and its use in models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("pyeda", reason="PyEDA (espresso) is not installed: pip install 'effcomp[hw]'")

from effcomp import models  # noqa: E402
from effcomp.hw import activation, fixed_point as fp, minimize  # noqa: E402
from effcomp.nn import activations  # noqa: E402


@pytest.mark.parametrize("name", ["tanh_i3f5_o1f7", "sigmoid_i4f2_o0f6u", "selu_i3f3_o3f3_rnd_sym"])
@pytest.mark.parametrize("mode", activation.MODES)
def test_activation_reproduces_the_table_on_every_input(name, mode):
  d = fp.parse(name)
  act = activation.circuit_activation(d, mode=mode)
  x = jnp.asarray(d.inputs(), jnp.float32)
  y = np.asarray(jax.jit(act)(x))
  expected = d.table() * d.out.lsb
  np.testing.assert_array_equal(y[d.care()], expected[d.care()])


def test_gates_and_table_modes_agree_including_dont_cares():
  d = fp.parse("gelu_i2f4_o2f4_sym")
  cover = minimize.minimize(d)
  x = jnp.asarray(d.inputs(), jnp.float32)
  gates = activation.circuit_activation(d, mode="gates", cover=cover)(x)
  table = activation.circuit_activation(d, mode="table", cover=cover)(x)
  np.testing.assert_array_equal(gates, table)


def test_inputs_are_rounded_to_the_nearest_code_and_clipped():
  d = fp.parse("hard_tanh_i2f2_o2f2")  # identity on [-1, 1]: y shows the quantized input
  act = activation.circuit_activation(d)
  x = jnp.array([0.3, 0.374, 0.376, -0.6, 9.0, -9.0])
  np.testing.assert_array_equal(act(x), [0.25, 0.25, 0.5, -0.5, 1.0, -1.0])


def test_gradient_is_the_float_derivative_inside_the_range_and_zero_outside():
  act = activation.circuit_activation("tanh_i3f5_o1f7")
  x = jnp.array([-5.0, -1.0, 0.0, 0.5, 3.9, 4.5])
  g = jax.grad(lambda v: jnp.sum(act(v)))(x)
  inside = np.array([0, 1, 1, 1, 1, 0], bool)
  np.testing.assert_allclose(g, np.where(inside, 1 - np.tanh(x) ** 2, 0), rtol=1e-4, atol=1e-6)


def test_mlp_takes_a_circuit_activation_with_the_same_parameters():
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  relu = models.build("mlp", widths=(16,))
  variables = relu.init(jax.random.key(1), x)
  outs = {a: models.build("mlp", widths=(16,), activation=a).apply(variables, x)
          for a in ("relu", "tanh", "circuit:tanh_i3f5_o1f7")}
  np.testing.assert_array_equal(outs["relu"], relu.apply(variables, x))  # default unchanged
  diff = float(jnp.max(jnp.abs(outs["tanh"] - outs["circuit:tanh_i3f5_o1f7"])))
  assert 0 < diff < 0.2


def test_circuit_activation_built_inside_jit_does_not_leak_tracers():
  x = jnp.ones((2, 4))
  model = models.build("mlp", widths=(8,), activation="circuit:silu_i3f2_o3f2_rnd")  # not cached yet
  variables = jax.jit(model.init)(jax.random.key(0), x)  # the activation is built in this trace
  np.testing.assert_array_equal(jax.jit(model.apply)(variables, x), model.apply(variables, x))
  np.testing.assert_array_equal(jax.jit(model.apply)(variables, 2 * x), model.apply(variables, 2 * x))


def test_unknown_activation_names_raise():
  with pytest.raises(ValueError, match="activation='swish'"):
    activations.get("swish")
  with pytest.raises(ValueError, match="design name"):
    activations.get("circuit:tanh8")
