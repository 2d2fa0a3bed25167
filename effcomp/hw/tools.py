"""Icarus Verilog simulation, Yosys synthesis and the area model.

`make hw-tools` installs both from Debian's packages (`apt-get install iverilog yosys`);
where they are missing, `require` raises `ToolMissingError` naming the tool.

Area model. Each module is synthesized alone by Yosys to a generic gate library,

  read_verilog M.v; synth -flatten -top M;
  abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX; opt_clean; stat

and its area is the weighted cell count in NAND2 equivalents (GE), the weights being the
X1 cell areas of the Nangate 45 nm Open Cell Library divided by NAND2_X1's 0.798 µm²:
NOT 0.532 → 0.67, BUF / NAND / NOR 0.798 → 1, AND / OR 1.064 → 1.33, XOR / XNOR
1.596 → 2, MUX 1.862 → 2.33; that library has no and-not / or-not cell, so ANDNOT and
ORNOT count as AND / OR (1.33). The paper synthesizes with Synopsys Design Compiler to a
28 nm SVT library and compares µm²; the GE ratio is this model's stand-in for that ratio.
`synthesize(..., optimize=False)` sizes a module as written instead (`synth -flatten
-noabc`: constants folded and gates mapped, no multi-level optimization by ABC).
"""

import os
import re
import shutil
import subprocess
import tempfile
from typing import Dict, Sequence

import numpy as np

GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"
AREA_GE = {"NOT": 0.532 / 0.798, "BUF": 1.0, "NAND": 1.0, "NOR": 1.0, "AND": 1.064 / 0.798,
           "OR": 1.064 / 0.798, "ANDNOT": 1.064 / 0.798, "ORNOT": 1.064 / 0.798,
           "XOR": 2.0, "XNOR": 2.0, "MUX": 1.862 / 0.798}
INSTALL_HINT = "install it with `make hw-tools` (Debian/Ubuntu: apt-get install iverilog yosys)"


class ToolMissingError(FileNotFoundError):
  """An external EDA program (iverilog, vvp, yosys) is not on PATH."""


def missing(*tools: str) -> list:
  """The named programs that are not on PATH."""
  return [t for t in tools if shutil.which(t) is None]


def require(*tools: str) -> None:
  gone = missing(*tools)
  if gone:
    raise ToolMissingError(f"{', '.join(gone)} not found on PATH: {INSTALL_HINT}")


def _run(args: Sequence[str], cwd: str, timeout: int) -> str:
  result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(args)} failed (exit {result.returncode}):\n"
                       f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
  return result.stdout


def simulate(sources: Dict[str, str], testbench: str, outputs: int, *,
             timeout: int = 600) -> np.ndarray:
  """Compiles `sources` (file name → Verilog) with the testbench by iverilog, runs vvp.

  Returns int64 [inputs, 1 + outputs]: each line `x y_1 … y_k` the testbench printed.
  """
  require("iverilog", "vvp")
  with tempfile.TemporaryDirectory(prefix="effcomp_iverilog_") as tmp:
    for name, text in {**sources, "tb.v": testbench}.items():
      with open(os.path.join(tmp, name), "w") as f:
        f.write(text)
    _run(["iverilog", "-g2005", "-o", "sim.vvp", "tb.v", *sources], tmp, timeout)
    stdout = _run(["vvp", "-n", "sim.vvp"], tmp, timeout)
  rows = [list(map(int, line.split())) for line in stdout.splitlines()
          if re.fullmatch(r"\d+( \d+)*", line.strip())]
  rows = [r for r in rows if len(r) == 1 + outputs]
  return np.asarray(rows, np.int64).reshape(-1, 1 + outputs)


def synthesize(source: str, top: str, *, optimize: bool = True,
               timeout: int = 600) -> Dict[str, object]:
  """Yosys synthesis of module `top` (script in the module docstring).

  optimize=False: the circuit as written, `synth -flatten -noabc` (constants folded and
  gates mapped, no multi-level logic optimization by ABC).
  Returns {"cells": {gate: count}, "cell_count": total, "area_ge": NAND2 equivalents}.
  """
  require("yosys")
  with tempfile.TemporaryDirectory(prefix="effcomp_yosys_") as tmp:
    with open(os.path.join(tmp, "design.v"), "w") as f:
      f.write(source)
    mapping = f"synth -flatten -top {top}; abc -g {GATES}" if optimize else (
        f"synth -flatten -noabc -top {top}")
    script = f"read_verilog design.v; {mapping}; opt_clean; tee -q -o stat.txt stat"
    _run(["yosys", "-q", "-p", script], tmp, timeout)
    with open(os.path.join(tmp, "stat.txt")) as f:
      text = f.read()
  cells = {m.group(1): int(m.group(2))
           for m in re.finditer(r"^\s+\$_(\w+?)_\s+(\d+)\s*$", text, re.MULTILINE)}
  unknown = sorted(set(cells) - set(AREA_GE))
  if unknown:
    raise RuntimeError(f"yosys stat of {top}: cells {unknown} have no area in the model")
  return {"cells": cells, "cell_count": sum(cells.values()),
          "area_ge": round(sum(AREA_GE[c] * k for c, k in cells.items()), 2)}
