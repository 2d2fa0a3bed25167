"""experiments/circuits.py: the folder it writes and its one-line errors."""

import json
import os

import pytest

from conftest import run_python

pytest.importorskip("pyeda", reason="PyEDA (espresso) is not installed: pip install 'effcomp[hw]'")

from effcomp.hw import tools  # noqa: E402


def test_cli_writes_verilog_logs_and_area(tmp_path):
  out = str(tmp_path / "tanh5")
  tools_flags = [] if not tools.missing("iverilog", "vvp", "yosys") else [
      "--nosimulate", "--nosynthesize"]
  result = run_python(["experiments/circuits.py", "--af=tanh", "--in_bits=5", f"--out={out}",
                       *tools_flags])
  name = "tanh_i3f2_o1f4"
  for suffix in ("", "_lut", "_pwl", "_tb"):
    assert os.path.isfile(os.path.join(out, f"{name}{suffix}.v"))
  log = open(os.path.join(out, "verification.log")).read()
  assert "0 mismatches on the care set" in log
  area = json.load(open(os.path.join(out, "area.json")))
  assert area["design"] == name and area["python_mismatches"] == 0
  if not tools_flags:
    assert area["sim_mismatches"] == 0 and area["sop_ge"] > 0
    assert "iverilog: tanh_i3f2_o1f4_lut: 32 inputs simulated, 0 mismatches" in result.stdout


def test_cli_user_errors_are_one_line(tmp_path):
  result = run_python(["experiments/circuits.py", "--design=tanh8", f"--out={tmp_path}"],
                      check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "effcomp: error: design name 'tanh8': expected AF_i<int>f<frac>[u]_o<int>f<frac>[u]"
      "[_rnd|_rtz][_sym], e.g. tanh_i3f5_o1f7"]
