"""Uniform fake quantization: error bounds, grids, granularities, gradients, settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.quant import fake_quant as fq


def _w(shape=(256, 64), seed=0):
  return jax.random.normal(jax.random.key(seed), shape) * 0.05


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("granularity,group", [("tensor", 0), ("channel", 0), ("group", 64)])
def test_round_trip_error_is_at_most_half_a_step(bits, symmetric, granularity, group):
  spec = fq.QuantSpec(bits, symmetric, granularity, group)
  w = _w()
  w_hat = fq.quantize_weight(w, spec)
  scale, zero = fq.weight_scale_and_zero(w, spec)
  step = jnp.broadcast_to(scale, fq._weight_view(w, spec).shape).reshape(w.shape)
  # Inside the range the error is ≤ half a step; min–max ranges leave nothing outside,
  # except the symmetric grid's unused most-negative code (|x| ≤ qmax·s always).
  assert float(jnp.max(jnp.abs(w - w_hat) / step)) <= 0.5 + 1e-4
  codes = fq.quantize(fq._weight_view(w, spec), scale, zero, spec)
  assert int(codes.min()) >= spec.qmin and int(codes.max()) <= spec.qmax
  levels = len(np.unique(np.asarray(codes)))
  assert levels <= 2 ** bits
  np.testing.assert_allclose(fq.dequantize(codes, scale, zero).reshape(w.shape), w_hat, atol=1e-6)


def test_finer_granularity_and_more_bits_reduce_error():
  w = _w() * jnp.exp(jax.random.normal(jax.random.key(3), (1, 64)))  # per-channel ranges differ
  err = lambda spec: float(jnp.mean((w - fq.quantize_weight(w, spec)) ** 2))
  assert err(fq.QuantSpec(4, granularity="tensor")) > err(fq.QuantSpec(4)) > err(
      fq.QuantSpec(4, granularity="group", group_size=32))
  assert err(fq.QuantSpec(2)) > err(fq.QuantSpec(3)) > err(fq.QuantSpec(4)) > err(fq.QuantSpec(8))


def test_partial_last_group_equals_quantizing_it_alone():
  w = _w((100, 8))
  spec = fq.QuantSpec(4, granularity="group", group_size=64)
  w_hat = fq.quantize_weight(w, spec)
  assert w_hat.shape == (100, 8)
  assert fq.weight_scale_and_zero(w, spec)[0].shape == (2, 1, 8)
  alone = fq.quantize_weight(w[64:], fq.QuantSpec(4))
  np.testing.assert_allclose(w_hat[64:], alone, atol=1e-7)


def test_activation_quantization_is_per_token():
  x = jax.random.normal(jax.random.key(1), (2, 5, 32)) * jnp.array([1.0, 100.0])[:, None, None]
  spec = fq.QuantSpec(8, granularity="token")
  x_hat = fq.quantize_activation(x, spec)
  rel = jnp.max(jnp.abs(x - x_hat), axis=-1) / jnp.max(jnp.abs(x), axis=-1)
  assert float(rel.max()) < 1 / 255 + 1e-6  # each token at its own scale
  assert fq.quantize_activation(x, fq.QuantSpec(16)) is x
  with pytest.raises(ValueError, match="activation granularity"):
    fq.quantize_activation(x, fq.QuantSpec(8, granularity="channel"))


def test_gradients_are_straight_through_and_lsq_for_the_step():
  spec = fq.QuantSpec(4)
  x = jnp.array([0.1, 0.26, -0.4, 3.0])
  scale, zero = jnp.float32(0.1), jnp.float32(8.0)  # range [-0.8, 0.7]: 3.0 is clipped
  g_x = jax.grad(lambda x: fq.fake_quant_with(x, scale, zero, spec).sum())(x)
  np.testing.assert_allclose(g_x, [1, 1, 1, 0])  # STE through round, 0 where clipped (LSQ)
  g_s = jax.grad(lambda s: fq.fake_quant_with(x, s, zero, spec).sum())(scale)
  v = x / scale
  inside = np.round(v[:3]) - v[:3]
  expected = inside.sum() + (spec.qmax - 8.0)  # clipped: (qmax − z)
  assert float(g_s) == pytest.approx(float(expected), rel=1e-4)
  g = jax.grad(lambda x: fq.grad_scale(x, 0.5).sum())(x)
  np.testing.assert_allclose(g, 0.5)


def test_learned_rounding_replaces_round_to_nearest():
  spec = fq.QuantSpec(4)
  x = jnp.array([0.12, 0.17])
  scale, zero = jnp.float32(0.1), jnp.float32(8.0)
  down = fq.fake_quant_with(x, scale, zero, spec, rounding=jnp.zeros(2))
  up = fq.fake_quant_with(x, scale, zero, spec, rounding=jnp.ones(2))
  np.testing.assert_allclose(down, [0.1, 0.1], atol=1e-6)
  np.testing.assert_allclose(up, [0.2, 0.2], atol=1e-6)
  g = jax.grad(lambda r: fq.fake_quant_with(x, scale, zero, spec, rounding=r).sum())(jnp.full(2, 0.5))
  np.testing.assert_allclose(g, [0.1, 0.1], rtol=1e-5)  # d x̂ / d rounding = step


def test_settings_parse_like_the_papers_tables():
  c = fq.QuantConfig.parse("w4a16g128")
  assert (c.weight.bits, c.weight.granularity, c.weight.group_size) == (4, "group", 128)
  assert not c.act.enabled and c.weight.enabled
  c = fq.QuantConfig.parse("W4A4")
  assert c.act.bits == 4 and c.act.granularity == "token" and c.weight.granularity == "channel"
  assert fq.QuantConfig.parse("w8a8_sym").weight.symmetric
  for bad in ("w4", "int4", "w1a16", "w4a16g"):
    with pytest.raises(ValueError, match="w<bits>a<bits>|bits=1"):
      fq.QuantConfig.parse(bad)
  with pytest.raises(ValueError, match="group_size"):
    fq.QuantSpec(4, granularity="group")
  with pytest.raises(ValueError, match="2-D"):
    fq.quantize_weight(jnp.zeros((2, 3, 4)), fq.QuantSpec(4))
