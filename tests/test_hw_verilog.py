"""Emitted Verilog: exhaustive iverilog simulation and yosys synthesis (effcomp.hw)."""

import re

import numpy as np
import pytest

pytest.importorskip("pyeda", reason="PyEDA (espresso) is not installed: pip install 'effcomp[hw]'")

from effcomp.hw import fixed_point as fp  # noqa: E402
from effcomp.hw import minimize, pwl, report, tools, verilog  # noqa: E402

needs_iverilog = pytest.mark.skipif(
    bool(tools.missing("iverilog", "vvp")),
    reason=f"iverilog/vvp not found on PATH: {tools.INSTALL_HINT}")
needs_yosys = pytest.mark.skipif(
    bool(tools.missing("yosys")), reason=f"yosys not found on PATH: {tools.INSTALL_HINT}")

DESIGNS = ["tanh_i3f3_o1f5", "selu_i3f3_o3f3_rnd", "sigmoid_i4f2_o0f6u", "tanh_i1f3u_o1f6u_rtz",
           "gelu_i2f3_o2f3_sym", "silu_i3f2_o3f3_rtz"]


def test_sop_module_has_one_assign_per_output_bit():
  d = fp.parse("tanh_i2f2_o1f3")
  text = verilog.sop_module(d, minimize.minimize(d))
  assert "module tanh_i2f2_o1f3 (" in text and text.rstrip().endswith("endmodule")
  assert [f"assign y[{j}] =" in text for j in range(4)] == [True] * 4


def test_lut_module_lists_every_input():
  d = fp.parse("tanh_i2f2_o1f3")
  text = verilog.lut_module(d)
  assert len(re.findall(r"^ +\S+: y = ", text, re.MULTILINE)) == 16 + 1  # patterns + default
  assert "4'h1: y = 4'h1;" in text  # tanh(0.25) = 0.245 → 1/8 truncated


@needs_iverilog
@pytest.mark.parametrize("name", DESIGNS)
def test_all_three_modules_pass_exhaustive_simulation(name):
  row = report.build(fp.parse(name), simulate=True, synthesize=False)
  assert row["python_mismatches"] == 0
  assert row["sim_mismatches"] == 0
  simulated = [line for line in row["log"] if line.startswith("iverilog:")]
  assert len(simulated) == 4 and all(line.endswith(" 0 mismatches") or ", 0 mismatches vs" in line
                                     for line in simulated)


@needs_iverilog
def test_simulation_catches_a_wrong_module():
  d = fp.parse("tanh_i3f3_o1f5")
  cover = minimize.minimize(d)
  text = re.sub(r"assign y\[2\] = (.*);", r"assign y[2] = ~(\1);", verilog.sop_module(d, cover))
  sim = tools.simulate({"sop.v": text}, verilog.testbench([d.name], 6, 6), 1)
  np.testing.assert_array_equal(sim[:, 0], np.arange(64))
  np.testing.assert_array_equal(sim[:, 1] ^ cover.evaluate(np.arange(64)), np.full(64, 4))


@needs_iverilog
def test_pwl_module_handles_negative_accumulators():
  d = fp.parse("selu_i3f3_o3f3_rtz")  # negative SELU side: negative b, rounding toward zero
  fit = pwl.fit(d, seg_bits=2)
  sim = tools.simulate({"pwl.v": verilog.pwl_module(fit)},
                       verilog.testbench([f"{d.name}_pwl"], 6, 6), 1)
  np.testing.assert_array_equal(sim[:, 1], d.out.patterns(fit.evaluate(np.arange(64))))
  assert min(fit.b) < 0


@needs_yosys
def test_yosys_counts_cells_and_weights_them():
  src = "module g (input wire [1:0] x, output wire [0:0] y);\n  assign y[0] = x[0] & x[1];\nendmodule\n"
  s = tools.synthesize(src, "g")
  assert s["cells"] == {"AND": 1} and s["area_ge"] == round(tools.AREA_GE["AND"], 2)


@needs_yosys
def test_sop_is_smaller_than_the_pwl_baseline():
  row = report.build(fp.parse("tanh_i3f3_o1f5"), simulate=False, synthesize=True)
  assert 0 < row["sop_cells"] < row["pwl_cells"]
  assert row["lut_cells"] > 0 and row["lut/sop"] == round(row["lut_ge"] / row["sop_ge"], 2)


@pytest.mark.slow
@needs_iverilog
@needs_yosys
@pytest.mark.parametrize("af", ["tanh", "selu", "sigmoid", "gelu", "silu", "elu", "hard_tanh",
                                "hard_sigmoid", "hard_silu"])
def test_eight_bit_designs_verify_and_synthesize(af, tmp_path):
  d = fp.design(af, 8)
  row = report.build(d, str(tmp_path))
  assert row["python_mismatches"] == 0 and row["sim_mismatches"] == 0
  assert row["sop_ge"] > 0 and row["lut_ge"] > 0 and row["pwl_ge"] > 0
  assert (tmp_path / f"{d.name}.v").exists() and (tmp_path / "area.json").exists()
