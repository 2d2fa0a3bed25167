"""Bit-packed 1-bit inference (effcomp.quant.pack) against plain float references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from effcomp.quant import pack

DN = ("NHWC", "HWIO", "NHWC")


def _signs(rng, shape):
  return np.where(rng.normal(size=shape) >= 0, 1.0, -1.0).astype(np.float32)


def _pads(padding):
  return [(padding, padding)] * 2 if isinstance(padding, int) else padding


def _float_conv(a, k, stride, padding):
  return lax.conv_general_dilated(a, k, (stride, stride), _pads(padding), dimension_numbers=DN,
                                  precision=lax.Precision.HIGHEST)


def _adabin_params(rng, channels, out):
  return dict(alpha_w=rng.uniform(0.2, 2.0, out).astype(np.float32),
              beta_w=(0.3 * rng.normal(size=out)).astype(np.float32),
              alpha_a=np.float32(1.7), beta_a=np.float32(-0.4),
              threshold=(0.3 * rng.normal(size=channels)).astype(np.float32))


def _binarized(x, w, p):
  """The training graph's a_b = α_a·sign(x − θ) + β_a and w_b = α_w·sign(w − β_w) + β_w."""
  sign = lambda v: np.where(v >= 0, 1.0, -1.0)
  a_b = p["alpha_a"] * sign(x - p["threshold"]) + p["beta_a"]
  w_b = p["alpha_w"] * sign(w - p["beta_w"]) + p["beta_w"]
  return a_b.astype(np.float32), w_b.astype(np.float32)


@pytest.mark.parametrize("length", [1, 31, 32, 33, 100])
def test_pack_unpack_round_trip(length):
  s = _signs(np.random.default_rng(length), (3, length, 2))
  words = pack.pack_bits(s, axis=1)
  assert words.dtype == jnp.uint32 and words.shape == (3, -(-length // 32), 2)
  np.testing.assert_array_equal(pack.unpack_bits(words, length, axis=1), s)


def test_bit_order_is_little_endian_and_zero_is_plus_one():
  x = -np.ones(70, np.float32)
  x[0], x[5], x[33], x[69] = 1.0, 0.0, 2.5, 1.0  # 0.0 counts as +1
  words = np.asarray(pack.pack_bits(x))
  # Padding (bits 70..95) is bit 0, i.e. sign −1.
  np.testing.assert_array_equal(words, [(1 << 0) | (1 << 5), 1 << 1, 1 << 5])
  np.testing.assert_array_equal(pack.popcount(words), [2, 1, 1])


@pytest.mark.parametrize("k,out", [(70, 5), (1000, 33), (4100, 600)])
def test_binary_dense_equals_sign_matmul(k, out):
  # 4100: more than one block of words (scan) and more than one output tile (map).
  rng = np.random.default_rng(k)
  s_a, s_w = _signs(rng, (4, k)), _signs(rng, (out, k))
  got = jax.jit(pack.binary_dense, static_argnums=2)(pack.pack_bits(s_a), pack.pack_bits(s_w), k)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, (s_a.astype(np.int64) @ s_w.T.astype(np.int64)))


@pytest.mark.parametrize("stride,padding,kernel", [
    (1, "SAME", 3), (1, "VALID", 3), (2, "SAME", 3), (2, "VALID", 3), (1, "SAME", 5),
    (2, ((1, 2), (0, 1)), 3), (1, 2, 3)])
def test_binary_conv2d_equals_float_conv_with_zero_padding(stride, padding, kernel):
  rng = np.random.default_rng(stride)
  a, k = _signs(rng, (2, 9, 8, 40)), _signs(rng, (kernel, kernel, 40, 6))
  got = pack.binary_conv2d(a, k, stride, padding)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, _float_conv(a, k, stride, padding).astype(np.int32))


def test_binary_conv2d_padded_border_counts_zero_not_minus_one():
  a, k = -np.ones((1, 4, 4, 32), np.float32), -np.ones((3, 3, 32, 1), np.float32)
  got = np.asarray(pack.binary_conv2d(a, k, 1, "SAME"))[0, :, :, 0]
  assert got[0, 0] == 4 * 32 and got[0, 1] == 6 * 32 and got[1, 1] == 9 * 32


def test_apply_packed_dense_matches_adabin_float_reference():
  rng = np.random.default_rng(0)
  x, w = rng.normal(size=(5, 300)).astype(np.float32), rng.normal(size=(300, 7)).astype(np.float32)
  p = _adabin_params(rng, 300, 7)
  layer = pack.pack_dense(w, **p)
  got = jax.jit(pack.apply_packed_dense)(layer, x)
  a_b, w_b = _binarized(x, w, p)
  ref = np.dot(a_b.astype(np.float64), w_b.astype(np.float64))
  np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max(), rtol=0)


def test_apply_packed_dense_accepts_binarized_weights():
  rng = np.random.default_rng(1)
  x, w = rng.normal(size=(3, 64)).astype(np.float32), rng.normal(size=(64, 4)).astype(np.float32)
  p = _adabin_params(rng, 64, 4)
  _, w_b = _binarized(x, w, p)
  from_latent = pack.apply_packed_dense(pack.pack_dense(w, **p), x)
  np.testing.assert_array_equal(pack.apply_packed_dense(pack.pack_dense(w_b, **p), x), from_latent)


def test_apply_packed_dense_bnn_case_is_exact():
  rng = np.random.default_rng(2)
  x, w = rng.normal(size=(6, 77)).astype(np.float32), rng.normal(size=(77, 9)).astype(np.float32)
  got = pack.apply_packed_dense(pack.pack_dense(w), x)
  np.testing.assert_array_equal(got, np.where(x >= 0, 1.0, -1.0) @ np.where(w >= 0, 1.0, -1.0))


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "SAME"), (1, "VALID"), (2, 1)])
def test_apply_packed_conv2d_matches_adabin_float_reference(stride, padding):
  rng = np.random.default_rng(stride)
  x = rng.normal(size=(2, 9, 10, 36)).astype(np.float32)
  w = rng.normal(size=(3, 3, 36, 5)).astype(np.float32)
  p = _adabin_params(rng, 36, 5)
  layer = pack.pack_conv2d(w, **p)
  apply = jax.jit(pack.apply_packed_conv2d, static_argnums=(2, 3))
  got = apply(layer, x, stride, padding)
  a_b, w_b = _binarized(x, w, p)
  ref = np.asarray(_float_conv(a_b, w_b, stride, padding))
  np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max(), rtol=0)


def test_apply_packed_conv2d_bnn_case_is_exact():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 7, 7, 50)).astype(np.float32)
  w = rng.normal(size=(3, 3, 50, 4)).astype(np.float32)
  got = pack.apply_packed_conv2d(pack.pack_conv2d(w), x, 1, "SAME")
  ref = _float_conv(np.where(x >= 0, 1.0, -1.0).astype(np.float32),
                    np.where(w >= 0, 1.0, -1.0).astype(np.float32), 1, "SAME")
  np.testing.assert_array_equal(got, ref)


def test_packed_weights_are_32x_smaller():
  dense = pack.pack_dense(jnp.ones((256, 64)))
  conv = pack.pack_conv2d(jnp.ones((3, 3, 64, 16)))
  assert pack.float_size_bytes((256, 64)) / pack.packed_size_bytes(dense) == 32
  assert pack.float_size_bytes((3, 3, 64, 16)) / pack.packed_size_bytes(conv) == 32
  assert pack.packed_size_bytes(dense, include_scales=True) == 256 * 64 // 8 + 2 * 64 * 4


def test_benchmark_reports_times_and_sizes():
  result = pack.benchmark_dense(8, 64, 32, repeats=2)
  assert result["packed_s"] > 0 and result["float_s"] > 0
  assert result["speedup"] == pytest.approx(result["float_s"] / result["packed_s"])
  assert result["float_bytes"] == 32 * result["packed_bytes"]


def test_binary_conv2d_wide_layer_computed_in_tiles():
  rng = np.random.default_rng(4)
  a, k = _signs(rng, (1, 4, 3, 520)), _signs(rng, (3, 3, 520, 500))  # 153 words × 500 outputs
  assert pack._weight_layout(pack.pack_bits(k, axis=2), 3 * 3 * 17).shape[0] > 1
  np.testing.assert_array_equal(pack.binary_conv2d(a, k, 1, "SAME"),
                                _float_conv(a, k, 1, "SAME").astype(np.int32))
