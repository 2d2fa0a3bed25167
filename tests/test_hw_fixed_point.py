"""Fixed-point formats, design names and truth tables (effcomp.hw.fixed_point)."""

import numpy as np
import pytest

from effcomp.hw import fixed_point as fp


def test_default_design_names_follow_the_issue_example():
  assert fp.design("tanh", 8).name == "tanh_i3f5_o1f7"
  assert fp.design("sigmoid", 6).name == "sigmoid_i4f2_o0f6u"
  assert fp.design("selu", 8, rounding="round", symmetric=True).name == "selu_i3f5_o3f5_rnd_sym"


@pytest.mark.parametrize("name", ["tanh_i3f5_o1f7", "hard_sigmoid_i3f3_o1f5u_rtz",
                                  "tanh_i1f3u_o1f6u_rtz", "gelu_i2f2_o2f2_rnd_sym"])
def test_names_round_trip(name):
  assert fp.parse(name).name == name


def test_parse_reads_formats_rounding_and_symmetry():
  d = fp.parse("tanh_i1f3u_o1f6u_rtz")
  assert d.inp == fp.Format(1, 3, signed=False) and d.out == fp.Format(1, 6, signed=False)
  assert d.rounding == "toward_zero" and not d.symmetric


@pytest.mark.parametrize("bad", ["tanh", "tanh_i3f5", "relu_i3f5_o1f7", "tanh_i3f5_o1f7_sym_rnd",
                                 "tanh_i0f5_o1f7", "tanh_i3f5u_o1f7_sym"])
def test_bad_names_raise_value_errors(bad):
  with pytest.raises(ValueError):
    fp.parse(bad)


def test_signed_format_codes_and_patterns_are_twos_complement():
  f = fp.Format(3, 5)
  assert (f.min_code, f.max_code, f.lsb) == (-128, 127, 1 / 32)
  patterns = np.arange(256)
  codes = f.codes(patterns)
  assert codes[127] == 127 and codes[128] == -128 and codes[255] == -1
  np.testing.assert_array_equal(f.patterns(codes), patterns)


def test_quantize_rounds_and_saturates():
  f = fp.Format(1, 2)  # [-1, 0.75] in quarters
  x = np.array([-3.0, -0.3, 0.3, 0.375, 5.0])
  np.testing.assert_array_equal(f.quantize(x, "truncate"), [-4, -2, 1, 1, 3])
  np.testing.assert_array_equal(f.quantize(x, "round"), [-4, -1, 1, 2, 3])
  np.testing.assert_array_equal(f.quantize(x, "toward_zero"), [-4, -1, 1, 1, 3])


@pytest.mark.parametrize("af", sorted(fp.ACTIVATIONS))
@pytest.mark.parametrize("rounding", fp.ROUNDINGS)
def test_table_is_within_one_lsb_of_the_float_af(af, rounding):
  d = fp.design(af, 7, rounding=rounding)
  f = d.function.numpy(d.inputs())
  lsb = d.out.lsb
  inside = (f >= d.out.min_code * lsb) & (f <= d.out.max_code * lsb)
  assert inside.mean() > 0.5  # the formats cover most of the AF
  err = (d.table() * lsb - f)[inside] / lsb
  if rounding == "truncate":
    assert err.max() <= 1e-9 and err.min() > -1
  elif rounding == "round":
    assert np.abs(err).max() <= 0.5 + 1e-9
  else:
    assert np.abs(err).max() < 1 and np.all(np.abs(d.table()[inside] * lsb) <= np.abs(f[inside]) + 1e-9)
  outside = d.table()[~inside]
  assert np.all((outside == d.out.min_code) | (outside == d.out.max_code))  # saturated


def test_tanh_table_equals_the_demo_rom():
  # ActivationFunctionDemo's coe_file/tanh_1_6_4/y.coe: tanh on [0, 2) in steps of 1/8,
  # magnitude truncated to 1 + 6 bits (its last input, 1.875, has no entry there).
  demo = [0, 7, 15, 22, 29, 35, 40, 45, 48, 51, 54, 56, 57, 59, 60]
  np.testing.assert_array_equal(fp.parse("tanh_i1f3u_o1f6u_rtz").table()[:15], demo)


def test_symmetric_input_makes_the_most_negative_code_a_dont_care():
  d = fp.design("tanh", 5, symmetric=True)
  assert np.flatnonzero(~d.care()).tolist() == [16]  # pattern 10000 = −2^4 codes
  assert fp.design("tanh", 5).care().all()
