"""Emit, verify and size an activation function circuit (Yang, Wei, Tu et al. 2018).

  python experiments/circuits.py --af=tanh --in_bits=8 --out=workdirs/circuits/tanh8
  python experiments/circuits.py --design=selu_i3f5_o4f4 --out=workdirs/circuits/selu8
  python experiments/circuits.py --af=sigmoid --in_bits=6 --rounding=round --nosynthesize ...

Writes into `--out`: the minimized SOP module `<design>.v`, the baselines `<design>_lut.v`
and `<design>_pwl.v`, the testbench `<design>_tb.v`, `verification.log` (the Python
check of the SOP against the truth table and the exhaustive iverilog simulation of all
three modules) and `area.json` (Yosys cell counts and NAND2-equivalent areas; the model is
in `effcomp/hw/tools.py`). Prints the row as JSON; exits 1 if any check found a mismatch.
Simulation and synthesis need iverilog and yosys (`make hw-tools`); `--nosimulate
--nosynthesize` only writes and checks in Python.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (one-line errors)
from effcomp.hw import fixed_point, report  # noqa: E402

flags.DEFINE_string("design", None, "A design name, e.g. tanh_i3f5_o1f7 (overrides --af and "
                    "the format flags).")
flags.DEFINE_string("af", "tanh", "Activation function: tanh, sigmoid, selu, elu, gelu, silu, "
                    "hard_tanh, hard_sigmoid, hard_silu.")
flags.DEFINE_integer("in_bits", 8, "Input bits.")
flags.DEFINE_integer("in_int_bits", None, "Input integer bits, sign included (default: the AF's).")
flags.DEFINE_integer("out_bits", None, "Output bits (default: --in_bits).")
flags.DEFINE_integer("out_int_bits", None, "Output integer bits (default: the AF's).")
flags.DEFINE_bool("in_signed", True, "Two's complement input (else unsigned).")
flags.DEFINE_enum("out_signed", "default", ["default", "true", "false"],
                  "Two's complement output (default: the AF's: unsigned for sigmoid).")
flags.DEFINE_enum("rounding", "truncate", ["truncate", "round", "toward_zero"],
                  "How outputs are quantized.")
flags.DEFINE_bool("symmetric", False, "The input's most negative code never occurs (don't-care).")
flags.DEFINE_integer("pwl_seg_bits", None, "PWL baseline: log2 of the segments (default n//2+1).")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_bool("simulate", True, "Simulate all three modules exhaustively with iverilog.")
flags.DEFINE_bool("synthesize", True, "Synthesize all three modules with yosys.")
FLAGS = flags.FLAGS


def _design():
  if FLAGS.design:
    return fixed_point.parse(FLAGS.design)
  out_signed = None if FLAGS.out_signed == "default" else FLAGS.out_signed == "true"
  return fixed_point.design(
      FLAGS.af, FLAGS.in_bits, in_int_bits=FLAGS.in_int_bits, out_bits=FLAGS.out_bits,
      out_int_bits=FLAGS.out_int_bits, in_signed=FLAGS.in_signed, out_signed=out_signed,
      rounding=FLAGS.rounding, symmetric=FLAGS.symmetric)


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)
  if not FLAGS.out:
    cli.fail("error", ValueError("--out is required: the folder for the Verilog and reports"), 2)
  try:
    row = report.build(_design(), FLAGS.out, seg_bits=FLAGS.pwl_seg_bits,
                       simulate=FLAGS.simulate, synthesize=FLAGS.synthesize)
  except (*cli.USER_ERRORS, ImportError) as e:
    cli.fail("error", e, 2)
  print("\n".join(row.pop("log")))
  print(json.dumps(row, indent=2))
  if row["python_mismatches"] or row.get("sim_mismatches", 0):
    cli.fail("verification failed", RuntimeError(f"see {FLAGS.out}/verification.log"), 1)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
