"""Packed integer weights (effcomp.quant.pack_int) against fake_quant's reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from effcomp.quant import fake_quant as fq
from effcomp.quant import pack_int

BITS = (2, 3, 4, 8)
GRANULARITIES = {"channel": ("channel", 0), "g32": ("group", 32), "g64": ("group", 64),
                 "g128": ("group", 128)}
SHAPE = (256, 16)  # one kernel shape for most tests: fewer XLA compilations


def _kernel(shape, seed=0):
  return jnp.asarray(0.05 * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _spec(bits, symmetric, granularity):
  kind, size = GRANULARITIES[granularity]
  return fq.QuantSpec(bits, symmetric, kind, size)


def _reference(w, spec, scale, zero):
  """dequantize(quantize(w, s, z)) in `fake_quant`'s per-group view of w [in, out]."""
  group = spec.group_size or w.shape[0]
  view = w.reshape(w.shape[0] // group, group, w.shape[1])
  return fq.dequantize(fq.quantize(view, scale, zero, spec), scale, zero).reshape(w.shape)


@pytest.mark.parametrize("granularity", list(GRANULARITIES))
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", BITS)
def test_dequantized_weight_equals_rtn_fake_quant(bits, symmetric, granularity):
  w = _kernel(SHAPE)
  spec = _spec(bits, symmetric, granularity)
  pw = pack_int.pack_weight(w, spec)
  groups = 256 // (spec.group_size or 256)
  assert pw.packed.dtype == jnp.uint32
  assert pw.packed.shape == (-(-256 // pack_int.codes_per_word(bits)), 16)
  assert pw.scale.shape == pw.zero.shape == (groups, 1, 16)
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw), fq.quantize_weight(w, spec))
  scale, zero = fq.weight_scale_and_zero(w, spec)
  codes = fq.quantize(w.reshape(groups, -1, 16), scale, zero, spec).reshape(w.shape)
  np.testing.assert_array_equal(pack_int.unpack_codes(pw), codes)


def test_tensor_granularity_equals_rtn_fake_quant():
  w, spec = _kernel(SHAPE), fq.QuantSpec(4, True, "tensor")
  pw = pack_int.pack_weight(w, spec)
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw), fq.quantize_weight(w, spec))


@pytest.mark.parametrize("bits", BITS)
def test_codes_fill_words_little_endian_and_pad_the_last_word_with_zero(bits):
  per = pack_int.codes_per_word(bits)
  codes = (np.arange(per + 3) * 7) % 2 ** bits  # one full word and 3 codes of the next
  w = jnp.asarray(codes[:, None], jnp.float32)
  pw = pack_int.pack_weight(w, fq.QuantSpec(bits, False, "channel"), scale=1.0, zero=0.0)
  word = lambda cs: sum(int(c) << (bits * i) for i, c in enumerate(cs))
  assert [int(v) for v in pw.packed[:, 0]] == [word(codes[:per]), word(codes[per:])]


def test_three_bits_pack_ten_codes_and_leave_the_top_two_bits_zero():
  w = jnp.full((20, 3), 7.0)  # code 7 = 0b111 everywhere
  pw = pack_int.pack_weight(w, fq.QuantSpec(3, False, "channel"), scale=1.0, zero=0.0)
  assert pw.packed.shape == (2, 3)
  assert np.all(np.asarray(pw.packed) == 2 ** 30 - 1)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", BITS)
def test_input_size_not_a_multiple_of_the_codes_per_word_is_padded(bits, symmetric):
  w = _kernel((37, 5), seed=1)
  spec = fq.QuantSpec(bits, symmetric, "channel")
  pw = pack_int.pack_weight(w, spec)
  assert pw.packed.shape == (-(-37 // pack_int.codes_per_word(bits)), 5)
  assert pack_int.unpack_codes(pw).shape == (37, 5)
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw), fq.quantize_weight(w, spec))


def test_a_shorter_last_group_round_trips_like_fake_quant():
  w = _kernel((100, 4))
  spec = fq.QuantSpec(4, False, "group", 32)
  pw = pack_int.pack_weight(w, spec)
  assert pw.groups == 4 and pw.scale.shape == (4, 1, 4)
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw), fq.quantize_weight(w, spec))


@pytest.mark.parametrize("symmetric", [False, True])
def test_given_scale_and_zero_are_used(symmetric):
  w, spec = _kernel(SHAPE), fq.QuantSpec(4, symmetric, "group", 64)
  scale, zero = fq.weight_scale_and_zero(w, spec)
  scale = 0.8 * scale  # a clipped range: the largest weights saturate
  zero = zero if symmetric else zero + 1
  pw = pack_int.pack_weight(w, spec, scale, zero)
  expected = _reference(w, spec, scale, zero)
  assert not np.array_equal(expected, fq.quantize_weight(w, spec))
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw), expected)
  np.testing.assert_array_equal(pw.scale, scale)
  np.testing.assert_array_equal(pw.zero, zero)


def test_given_scale_of_a_symmetric_spec_needs_no_zero():
  w, spec = _kernel(SHAPE), fq.QuantSpec(3, True, "group", 32)
  scale = 1.1 * fq.weight_scale_and_zero(w, spec)[0]
  pw = pack_int.pack_weight(w, spec, scale)
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw), _reference(w, spec, scale, 0.0))


def test_given_scale_and_zero_are_checked():
  w, spec = _kernel(SHAPE), fq.QuantSpec(4, False, "group", 64)
  scale, zero = fq.weight_scale_and_zero(w, spec)
  with pytest.raises(ValueError, match="needs zero points"):
    pack_int.pack_weight(w, spec, scale)
  with pytest.raises(ValueError, match="without scale"):
    pack_int.pack_weight(w, spec, zero=zero)
  with pytest.raises(ValueError, match=r"scale of shape \(3, 1, 16\)"):
    pack_int.pack_weight(w, spec, jnp.ones((3, 1, 16)), zero)


def test_fractional_zero_points_need_a_float_zero_dtype():
  w, spec = _kernel(SHAPE), fq.QuantSpec(4, False, "group", 64)
  scale, zero = fq.weight_scale_and_zero(w, spec)
  zero = zero + 0.5
  with pytest.raises(ValueError, match="zero_dtype"):
    pack_int.pack_weight(w, spec, scale, zero)
  pw = pack_int.pack_weight(w, spec, scale, zero, zero_dtype=jnp.float32)
  assert pw.zero.dtype == jnp.float32
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw), _reference(w, spec, scale, zero))


def test_float16_scale_chooses_codes_with_the_stored_step():
  w, spec = _kernel(SHAPE), fq.QuantSpec(4, False, "group", 32)
  pw = pack_int.pack_weight(w, spec, scale_dtype=jnp.float16)
  scale, zero = fq.weight_scale_and_zero(w, spec)
  scale16 = scale.astype(jnp.float16).astype(jnp.float32)
  assert pw.scale.dtype == jnp.float16 and pw.zero.dtype == jnp.uint8
  np.testing.assert_array_equal(pack_int.dequantize_weight(pw),
                                _reference(w, spec, scale16, zero))


def test_float16_scale_of_an_all_zero_group_stays_positive():
  w = _kernel(SHAPE).at[:32, 1].set(0.0)
  pw = pack_int.pack_weight(w, fq.QuantSpec(4, True, "group", 32), scale_dtype=jnp.float16)
  assert float(pw.scale[0, 0, 1]) > 0
  w_hat = pack_int.dequantize_weight(pw)
  np.testing.assert_array_equal(w_hat[:32, 1], 0.0)
  np.testing.assert_allclose(w_hat, w, atol=float(jnp.max(pw.scale)))


def test_unquantized_spec_is_an_error():
  with pytest.raises(ValueError, match="not quantized"):
    pack_int.pack_weight(_kernel((32, 4)), fq.QuantSpec(16))


@pytest.mark.parametrize("bits", [3, 4])
def test_jitted_matmul_equals_fake_quant_matmul(bits):
  w, spec = _kernel(SHAPE), fq.QuantSpec(bits, False, "group", 64)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 256)), jnp.float32)
  y = jax.jit(pack_int.matmul)(x, pack_int.pack_weight(w, spec))
  assert y.shape == (2, 5, 16) and y.dtype == jnp.float32
  np.testing.assert_allclose(y, jnp.dot(x, fq.quantize_weight(w, spec)), rtol=1e-5, atol=1e-6)


def test_matmul_computes_in_the_given_dtype_and_checks_shapes():
  pw = pack_int.pack_weight(_kernel(SHAPE), fq.QuantSpec(4, True, "channel"))
  assert pack_int.matmul(jnp.ones((3, 256)), pw, jnp.bfloat16).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="in=256"):
    pack_int.matmul(jnp.ones((3, 32)), pw)


def test_pack_weight_traces_under_jit():
  w, spec = _kernel(SHAPE), fq.QuantSpec(2, True, "group", 32)
  jitted = jax.jit(lambda w: pack_int.pack_weight(w, spec))(w)
  eager = pack_int.pack_weight(w, spec)
  np.testing.assert_array_equal(jitted.packed, eager.packed)
  np.testing.assert_array_equal(jax.jit(pack_int.dequantize_weight)(jitted),
                                pack_int.dequantize_weight(eager))


@pytest.mark.parametrize("bits", BITS)
def test_nbytes_counts_words_scales_and_zero_points(bits):
  spec = fq.QuantSpec(bits, False, "group", 128)
  pw = pack_int.pack_weight(_kernel(SHAPE), spec)
  words = -(-256 // pack_int.codes_per_word(bits))
  assert pack_int.nbytes(pw) == words * 16 * 4 + 2 * 16 * (4 + 1)  # float32 scale, uint8 zero
  assert pack_int.float_nbytes(SHAPE, jnp.float32) == 256 * 16 * 4


def test_int4_g128_is_a_quarter_of_float16_plus_scale_and_zero_per_group():
  spec, shape = fq.QuantSpec(4, False, "group", 128), (4096, 4096)
  abstract = jax.ShapeDtypeStruct(shape, jnp.float16)
  ratio = lambda **kw: pack_int.nbytes(jax.eval_shape(
      lambda w: pack_int.pack_weight(w, spec, scale_dtype=jnp.float16, **kw), abstract)
      ) / pack_int.float_nbytes(shape, jnp.float16)
  # bits / 16 + (scale bytes + zero bytes) / (2 · group_size)
  assert ratio(zero_dtype=jnp.float16) == 0.25 + (2 + 2) / (2 * 128) == 0.25 + 1 / 64
  assert ratio() == 0.25 + (2 + 1) / (2 * 128)


def _llama_like(d=64, mlp=128, vocab=50, layers=1):
  rng = np.random.default_rng(3)
  dense = lambda n_in, n_out: {"kernel": jnp.asarray(0.02 * rng.normal(size=(n_in, n_out)),
                                                     jnp.float32)}
  params = {"embed": {"embedding": jnp.asarray(rng.normal(size=(vocab, d)), jnp.float32)},
            "final_norm": {"scale": jnp.ones(d)}}
  for i in range(layers):
    params[f"layers_{i}"] = {
        "attn": {name: dense(d, d) for name in ("q", "k", "v", "o")},
        "attn_norm": {"scale": jnp.ones(d)},
        "mlp": {"gate": dense(d, mlp), "up": dense(d, mlp), "down": dense(mlp, d)},
        "mlp_norm": {"scale": jnp.ones(d)}}
  return params


def test_pack_tree_packs_named_kernels_and_unpack_tree_restores_rtn():
  params, spec = _llama_like(), fq.QuantSpec(4, False, "group", 32)
  names = ("attn/q", "attn/k", "attn/v", "attn/o", "mlp/gate", "mlp/up", "mlp/down")
  paths = [f"layers_0/{name}/kernel" for name in names]
  packed = pack_int.pack_tree(params, {path: spec for path in paths})
  flat, before = (traverse_util.flatten_dict(t, sep="/") for t in (packed, params))
  assert all(isinstance(flat[path], pack_int.PackedWeight) for path in paths)
  assert flat["embed/embedding"] is before["embed/embedding"]
  after = traverse_util.flatten_dict(jax.jit(pack_int.unpack_tree)(packed), sep="/")
  assert set(after) == set(before)
  for path, value in before.items():
    expected = fq.quantize_weight(value, spec) if path in paths else value
    np.testing.assert_array_equal(after[path], expected, err_msg=path)


def test_pack_tree_names_a_missing_path():
  with pytest.raises(ValueError, match="layers_0/attn/qq/kernel"):
    pack_int.pack_tree(_llama_like(), {"layers_0/attn/qq/kernel": fq.QuantSpec(4)})


def test_save_and_load_round_trip_a_packed_tree(tmp_path):
  params = {"layer": {"kernel": _kernel((64, 8)), "bias": jnp.arange(8.0)}}
  spec = fq.QuantSpec(3, False, "group", 32)
  packed = pack_int.pack_tree(params, {"layer/kernel": spec})
  pack_int.save(str(tmp_path / "q.npz"), packed)
  loaded = pack_int.load(str(tmp_path / "q.npz"))
  np.testing.assert_array_equal(pack_int.dequantize_weight(loaded["layer"]["kernel"]),
                                fq.quantize_weight(params["layer"]["kernel"], spec))
  np.testing.assert_array_equal(loaded["layer"]["bias"], params["layer"]["bias"])
  assert pack_int.tree_nbytes(packed) < pack_int.tree_nbytes(params) / 4
