"""Two-level minimization (effcomp.hw.minimize) and the PWL baseline (effcomp.hw.pwl)."""

import re

import numpy as np
import pytest

pytest.importorskip("pyeda", reason="PyEDA (espresso) is not installed: pip install 'effcomp[hw]'")

from effcomp.hw import fixed_point as fp  # noqa: E402
from effcomp.hw import minimize, pwl  # noqa: E402

# ActivationFunctionDemo's verilog_file/tanh_1_6_4.v: x[0] is the input's MSB, y[0] the
# integer bit and y[6] the 2^-6 bit.
DEMO_TANH_1_6_4 = """
assign y[0]=0;
assign y[1]=(x[1]&x[3])|(x[1]&x[2])|(x[0]);
assign y[2]=(~x[1]&x[2]&x[3])|(x[1]&~x[2]&~x[3])|(x[0]);
assign y[3]=(~x[0]&x[2]&~x[3])|(x[1]&~x[3])|(x[1]&x[2])|(x[0]&x[2]&x[3])|(x[0]&x[1]);
assign y[4]=(~x[0]&~x[1]&x[3])|(~x[0]&x[1]&~x[2]&~x[3])|(~x[1]&x[2]&~x[3])|(x[1]&x[2]&x[3])|(x[0]&x[2]&~x[3]);
assign y[5]=(~x[2]&x[3])|(~x[1]&x[2]&~x[3])|(~x[0]&~x[1]&x[3]);
assign y[6]=(~x[2]&x[3])|(~x[0]&~x[1]&x[2]&~x[3])|(x[1]&~x[2])|(x[1]&x[3]);
"""


@pytest.mark.parametrize("af", ["tanh", "selu", "sigmoid", "gelu", "silu", "hard_silu"])
@pytest.mark.parametrize("bits", [4, 6])
def test_sop_equals_the_table_on_every_input(af, bits):
  d = fp.design(af, bits)
  cover = minimize.minimize(d)
  assert len(minimize.mismatches(cover, d)) == 0
  np.testing.assert_array_equal(cover.evaluate(np.arange(1 << bits)), d.out.patterns(d.table()))


def test_minimization_shrinks_the_canonical_sop():
  d = fp.design("tanh", 6)
  cover = minimize.minimize(d)
  ones = sum(bin(int(p)).count("1") for p in d.out.patterns(d.table()))  # one minterm per 1
  assert cover.products < ones / 3


def test_mismatches_finds_a_wrong_cover():
  d = fp.design("tanh", 5)
  cover = minimize.minimize(d)
  broken = minimize.Cover(cover.in_bits, ((),) + cover.bits[1:])  # bit 0 forced to 0
  expected = np.flatnonzero(d.out.patterns(d.table()) & 1)
  np.testing.assert_array_equal(minimize.mismatches(broken, d), expected)


def test_dont_cares_merge_products():
  on = np.array([False, False, False, True])  # x1 & x0
  assert minimize.minimize_bit(on, np.zeros(4, bool)) == ((3, 3),)
  assert minimize.minimize_bit(on, np.array([False, True, False, False])) == ((1, 1),)  # x0


def test_constant_bits():
  assert minimize.minimize_bit(np.zeros(8, bool), np.zeros(8, bool)) == ()
  assert minimize.minimize_bit(np.ones(8, bool), np.zeros(8, bool)) == ((0, 0),)


def test_symmetric_design_is_exact_on_the_care_set():
  d = fp.design("selu", 6, symmetric=True)
  cover = minimize.minimize(d)
  assert len(minimize.mismatches(cover, d)) == 0
  assert cover.products <= minimize.minimize(fp.design("selu", 6)).products


def _demo_function(text):
  """Output patterns of the demo's SOP over its 4 inputs, in effcomp's bit order."""
  out = np.zeros(16, np.int64)
  for p in range(16):
    x = [(p >> (3 - i)) & 1 for i in range(4)]  # the demo's x[0] is the MSB
    for j, expr in re.findall(r"assign y\[(\d)\]=(.*);", text):
      expr = re.sub(r"~x\[(\d)\]", lambda m: str(1 - x[int(m.group(1))]), expr)
      expr = re.sub(r"x\[(\d)\]", lambda m: str(x[int(m.group(1))]), expr)
      out[p] |= eval(expr) << (6 - int(j))  # pylint: disable=eval-used
  return out


def test_sop_matches_the_demo_circuit():
  d = fp.parse("tanh_i1f3u_o1f6u_rtz")
  cover = minimize.minimize(d)
  np.testing.assert_array_equal(cover.evaluate(np.arange(16)), _demo_function(DEMO_TANH_1_6_4))
  demo_products = sum(len(e.split("|")) for e in re.findall(r"=(\(.*);", DEMO_TANH_1_6_4))
  assert cover.products <= demo_products


@pytest.mark.parametrize("name", ["tanh_i3f5_o1f7", "sigmoid_i4f4_o0f8u", "selu_i3f5_o3f5_rnd"])
def test_pwl_stays_close_to_the_af(name):
  d = fp.parse(name)
  fit = pwl.fit(d)
  y = fit.evaluate(np.arange(256))
  f = d.function.numpy(d.inputs()) / d.out.lsb
  inside = (f >= d.out.min_code) & (f <= d.out.max_code)
  assert np.abs(y - f)[inside].max() < 3
  assert len(fit.k) == 32


def test_pwl_integer_model_is_exact_on_segment_starts():
  d = fp.design("tanh", 6, rounding="round")
  fit = pwl.fit(d, seg_bits=3, coef_frac=4)
  starts = np.arange(0, 64, 8) ^ 32  # ranks 0, 8, … → signed patterns
  expected = np.clip(pwl.shift(np.asarray(fit.b), 4, "round"), d.out.min_code, d.out.max_code)
  np.testing.assert_array_equal(fit.evaluate(starts), expected)
