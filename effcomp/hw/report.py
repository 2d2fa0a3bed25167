"""One design end to end: the three circuits' Verilog, their verification and their area.

`build(design, out_dir)` minimizes the truth table (`minimize`), fits the PWL baseline
(`pwl`), writes the SOP, LUT and PWL modules and a testbench (`verilog`), checks the SOP
against the table in Python, simulates all three modules exhaustively with Icarus Verilog
against their Python functions (SOP and LUT: the table; PWL: `PiecewiseLinear.evaluate`),
synthesizes each with Yosys (`tools`: optimized by ABC, and as written: `*_noabc`) and
returns one row of numbers. In `out_dir`:
`<name>.v`, `<name>_lut.v`, `<name>_pwl.v`, `<name>_tb.v`, `verification.log` and
`area.json`.
"""

import json
import os
from typing import Any, Dict

import numpy as np

from effcomp.hw import fixed_point, minimize, pwl as pwl_lib, tools, verilog

KINDS = ("sop", "lut", "pwl")
AGAINST = {"sop": "the SOP evaluated in Python", "lut": "the truth table",
           "pwl": "the PWL integer model"}


def error_lsb(design: fixed_point.Design, codes: np.ndarray) -> float:
  """Largest |codes·lsb − f(x)| in output LSBs over the care inputs whose f(x) lies in
  the output format's range (outside it every design saturates)."""
  f = design.function.numpy(design.inputs())
  out = design.out
  inside = design.care() & (f >= out.min_code * out.lsb) & (f <= out.max_code * out.lsb)
  return float(np.max(np.abs(codes * out.lsb - f)[inside], initial=0.0) / out.lsb)


def build(design: fixed_point.Design, out_dir: str | None = None, *, seg_bits: int | None = None,
          simulate: bool = True, synthesize: bool = True) -> Dict[str, Any]:
  """Writes and checks the three circuits of `design` (module docstring); returns the row."""
  n, m = design.inp.bits, design.out.bits
  patterns = np.arange(1 << n)
  cover = minimize.minimize(design)
  fit = pwl_lib.fit(design, seg_bits)
  names = {"sop": design.name, "lut": f"{design.name}_lut", "pwl": f"{design.name}_pwl"}
  sources = {"sop": verilog.sop_module(design, cover), "lut": verilog.lut_module(design),
             "pwl": verilog.pwl_module(fit)}
  care, table = design.care(), design.out.patterns(design.table())
  expected = {"sop": cover.evaluate(patterns), "lut": table,
              "pwl": design.out.patterns(fit.evaluate(patterns))}
  wrong = minimize.mismatches(cover, design)
  log = [f"{design.name}: {1 << n} inputs, {int((~care).sum())} don't-care",
         f"python: SOP ({cover.products} products, {cover.literals} literals) vs table: "
         f"{len(wrong)} mismatches on the care set"]
  row = {"af": design.af, "design": design.name, "in_bits": n, "out_bits": m,
         "products": cover.products, "literals": cover.literals, "python_mismatches": len(wrong),
         "table_err_lsb": round(error_lsb(design, design.table()), 3),
         "pwl_err_lsb": round(error_lsb(design, fit.evaluate(patterns)), 3),
         "pwl_segments": 1 << fit.seg_bits}
  testbench = verilog.testbench([names[k] for k in KINDS], n, m)
  if simulate:
    sim = tools.simulate({f"{names[k]}.v": sources[k] for k in KINDS}, testbench, len(KINDS))
    if sim.shape[0] != 1 << n or not np.array_equal(sim[:, 0], patterns):
      raise RuntimeError(f"{design.name}: the testbench printed {sim.shape[0]} of {1 << n} inputs")
    total = 0
    for i, kind in enumerate(KINDS, start=1):
      bad = np.flatnonzero(sim[:, i] != expected[kind])
      log.append(f"iverilog: {names[kind]}: {1 << n} inputs simulated, {len(bad)} mismatches "
                 f"vs {AGAINST[kind]}"
                 + (f" (first at x={bad[0]})" if len(bad) else ""))
      total += len(bad)
    sop_vs_table = np.flatnonzero((sim[:, 1] != table) & care)
    log.append(f"iverilog: {names['sop']} vs the table on the care set: {len(sop_vs_table)} mismatches")
    row["sim_mismatches"] = total + len(sop_vs_table)
  if synthesize:
    for kind in KINDS:
      s = tools.synthesize(sources[kind], names[kind])
      row[f"{kind}_cells"], row[f"{kind}_ge"] = s["cell_count"], s["area_ge"]
      row[f"{kind}_cell_types"] = s["cells"]
      as_written = tools.synthesize(sources[kind], names[kind], optimize=False)
      row[f"{kind}_ge_noabc"] = as_written["area_ge"]
    for kind in ("lut", "pwl"):
      for suffix in ("", "_noabc"):
        ratio = row[f"{kind}_ge{suffix}"] / max(row[f"sop_ge{suffix}"], 1e-9)
        row[f"{kind}/sop{suffix}"] = round(ratio, 2)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    for kind in KINDS:
      with open(os.path.join(out_dir, f"{names[kind]}.v"), "w") as f:
        f.write(sources[kind])
    with open(os.path.join(out_dir, f"{design.name}_tb.v"), "w") as f:
      f.write(testbench)
    with open(os.path.join(out_dir, "verification.log"), "w") as f:
      f.write("\n".join(log) + "\n")
    with open(os.path.join(out_dir, "area.json"), "w") as f:
      json.dump({**row, "area_model": tools.__doc__.split("Area model.")[1].strip()}, f, indent=2)
  row["log"] = log
  return row
