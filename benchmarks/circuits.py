"""Activation functions as combinational circuits: SOP against LUT and PWL, and in a network.

1. Circuits: every AF of `--afs` at every width of `--bits` (the default formats of
   `effcomp.hw.fixed_point.design`, e.g. tanh at 8 bits is tanh_i3f5_o1f7) is minimized
   (espresso, one SOP per output bit), checked against its truth table in Python,
   simulated exhaustively with iverilog together with its LUT and PWL baselines, and all
   three are synthesized by yosys; area in NAND2 equivalents (`effcomp/hw/tools.py`).
   The paper (Yang, Wei, Tu et al. 2018, Synopsys Design Compiler, 28 nm) reports the SOP
   circuit 3.13–7.69× smaller than the LUT/memory implementation for tanh and 4.45–8.45×
   for SELU.
2. Network: the digits MLP (`configs/demo.py:model=mlp,activation=<af>`, 2 × 256 hidden
   units) trained in float, then evaluated with its activations replaced by the circuits
   (`activation=circuit:<design>`, bit-exact, `effcomp.hw.activation`), and trained from
   scratch through the circuit (straight-through gradient): test accuracy and its change.
   The paper (and the demo's README) report MNIST changes within ±0.4 points.

  python benchmarks/circuits.py [--afs=tanh,selu,sigmoid,gelu,silu] [--bits=4,6,8,10]
      [--network_afs=tanh,selu] [--network_bits=4,6,8] [--part=all|circuits|network]
"""

import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.hw import fixed_point, report  # noqa: E402

flags.DEFINE_list("afs", ["tanh", "selu", "sigmoid", "gelu", "silu"], "AFs to build circuits of.")
flags.DEFINE_list("bits", ["4", "6", "8", "10"], "Input (= output) bit widths of the circuits.")
flags.DEFINE_list("network_afs", ["tanh", "selu"], "AFs of the digits MLP.")
flags.DEFINE_list("network_bits", ["4", "6", "8"], "Circuit widths in the digits MLP.")
flags.DEFINE_integer("steps", 400, "Training steps of each MLP (batch 64).")
flags.DEFINE_enum("part", "all", ["all", "circuits", "network"], "What to measure.")
flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_circuits"),
                    "Where the MLPs train (from scratch) and the circuits are written.")
FLAGS = flags.FLAGS

CIRCUIT_COLUMNS = ["af", "design", "products", "literals", "table_err_lsb", "pwl_err_lsb",
                   "sim_mismatches", "sop_cells", "sop_ge", "lut_cells", "lut_ge", "pwl_cells",
                   "pwl_ge", "lut/sop", "pwl/sop", "sop_ge_noabc", "lut_ge_noabc",
                   "pwl_ge_noabc", "lut/sop_noabc", "pwl/sop_noabc", "seconds"]
NETWORK_COLUMNS = ["af", "activation", "accuracy (float-trained)", "change",
                   "accuracy (circuit-trained)", "change (circuit-trained)"]


def circuit_rows():
  rows = []
  for af in FLAGS.afs:
    for bits in map(int, FLAGS.bits):
      design = fixed_point.design(af, bits)
      start = time.time()
      row = report.build(design, os.path.join(FLAGS.runs_dir, "verilog", design.name))
      row.pop("log")
      row["seconds"] = round(time.time() - start, 1)
      rows.append(row)
      print({c: row.get(c) for c in CIRCUIT_COLUMNS}, flush=True)
  return rows


def _train(activation: str, name: str) -> tuple:
  """(test accuracy, config, workdir) of the digits MLP trained from scratch with `activation`."""
  workdir = os.path.join(FLAGS.runs_dir, name)
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load(f"configs/demo.py:model=mlp,steps={FLAGS.steps}",
                           **{"model.activation": activation, "train.progress_bar": False})
  return runs.train(config, workdir)["eval"]["accuracy"], config, workdir


def network_rows():
  rows = []
  for af in FLAGS.network_afs:
    float_acc, config, workdir = _train(af, f"mlp_{af}")
    rows.append({"af": af, "activation": af, "accuracy (float-trained)": float_acc})
    for bits in map(int, FLAGS.network_bits):
      activation = f"circuit:{fixed_point.design(af, bits).name}"
      with config.unlocked():
        config.model.activation = activation
      swapped = runs.evaluate(config, workdir)["eval"]["accuracy"]
      trained, _, _ = _train(activation, f"mlp_{af}_{bits}bit")
      rows.append({"af": af, "activation": activation, "accuracy (float-trained)": swapped,
                   "change": swapped - float_acc, "accuracy (circuit-trained)": trained,
                   "change (circuit-trained)": trained - float_acc})
      print(rows[-1], flush=True)
  return rows


def main(argv):
  del argv
  start = time.time()
  circuits = circuit_rows() if FLAGS.part in ("all", "circuits") else []
  network = network_rows() if FLAGS.part in ("all", "network") else []
  notes = (
      "One row per design (name: AF, input and output formats, `effcomp.hw.fixed_point`). "
      "`products`/`literals`: the espresso SOPs of all output bits. `table_err_lsb`: the "
      "truth table's largest error against the float AF, in output LSBs (outside saturation); "
      "`pwl_err_lsb` the same for the piecewise-linear baseline (2^(n//2+1) chord segments). "
      "`sim_mismatches`: exhaustive iverilog simulation of the SOP, LUT and PWL modules "
      "against their Python functions (0 = all verified). Cells and areas: yosys `synth; abc "
      "-g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX; stat`, area in NAND2 equivalents of the "
      "Nangate 45 nm X1 cells (`effcomp/hw/tools.py`). `lut/sop`: how many times larger the "
      "LUT is than the SOP circuit (paper, Design Compiler 28 nm: 3.13–7.69 tanh, 4.45–8.45 "
      "SELU). Yosys optimizes the LUT's constant `case` into logic as well, so this ratio "
      "measures the minimizer against yosys/ABC, not against a ROM macro. `*_noabc`: the "
      "modules as written (`synth -noabc`: constants folded, gates mapped, no ABC), the SOP "
      "as its two levels and the LUT as a mux tree of constants. Wall time: "
      f"{time.time() - start:.0f} s on this machine.")
  network_notes = (
      f"The digits MLP (2 × 256 hidden units, {FLAGS.steps} steps of batch 64) trained in float with "
      "the AF, then evaluated with both hidden activations replaced by the bit-exact circuit "
      "(`accuracy (float-trained)`), and trained from scratch through the circuit with a "
      "straight-through gradient (`accuracy (circuit-trained)`); changes against the float "
      "model's test accuracy, as fractions (the digits test split: 360 images, one image = "
      "0.0028).")
  tables = [("Network accuracy with the circuit activation", network_notes, network,
             NETWORK_COLUMNS)] if network else []
  common.write_results("circuits", circuits, CIRCUIT_COLUMNS,
                       title="Activation functions as combinational circuits", notes=notes,
                       tables=tables)


if __name__ == "__main__":
  app.run(main)
