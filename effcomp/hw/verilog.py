"""Verilog for a design: the SOP circuit, the LUT and PWL baselines, and a testbench.

Every module has the same ports: `input wire [n-1:0] x` (the input's bit pattern, two's
complement where signed) and `output [m-1:0] y` (the output's bit pattern).
- `sop_module`: one `assign` per output bit, the OR of its minimized products; follows
  the demo's `generate_verilog` (`implementation/implement.py`), which writes
  `assign y[i]=(x[1]&x[3])|(x[0]);`. The demo's x[0] is the input's MSB and y[0] the
  output's integer bit; here bit 0 is the LSB of both, as usual in Verilog.
- `lut_module`: the ROM baseline, a `case` over all 2^n inputs (the demo writes the same
  table as a Xilinx `y.coe` memory file instead).
- `pwl_module`: the piecewise-linear baseline of `effcomp.hw.pwl`: a case statement for the
  segment's slope and intercept, one multiply-add, a shift and saturation.
- `testbench`: drives every input pattern into one or more modules and prints one line
  `x y_1 … y_k` (unsigned decimals) per input, for `effcomp.hw.tools.simulate`.
"""

from typing import Sequence

from effcomp.hw import fixed_point, minimize, pwl as pwl_lib


def _header(design: fixed_point.Design, what: str) -> str:
  i, o = design.inp, design.out
  kind = lambda f: f"{'signed' if f.signed else 'unsigned'} Q{f.int_bits}.{f.frac_bits}"
  return (f"// {design.name}: y = {design.af}(x), x {kind(i)} ({i.bits} bits), y {kind(o)} "
          f"({o.bits} bits), {design.rounding}.\n// {what}. Written by effcomp.hw.verilog.\n")


def _ports(name: str, n: int, m: int, y_kind: str) -> str:
  return (f"module {name} (\n  input  wire [{n - 1}:0] x,\n"
          f"  output {y_kind} [{m - 1}:0] y\n);\n")


def _product(mask: int, value: int, n: int) -> str:
  literals = [f"{'' if (value >> i) & 1 else '~'}x[{i}]" for i in reversed(range(n))
              if (mask >> i) & 1]
  return "(" + " & ".join(literals) + ")" if literals else "1'b1"


def sop_module(design: fixed_point.Design, cover: minimize.Cover) -> str:
  """The minimized circuit: `assign y[j] = (…) | (…);` per output bit."""
  n = design.inp.bits
  lines = [_header(design, f"Two-level SOP per output bit (espresso): {cover.products} "
                            f"products, {cover.literals} literals"),
           _ports(design.name, n, design.out.bits, "wire")]
  for j, cubes in enumerate(cover.bits):
    terms = " | ".join(_product(mask, value, n) for mask, value in cubes) or "1'b0"
    lines.append(f"  assign y[{j}] = {terms};\n")
  lines.append("endmodule\n")
  return "".join(lines)


def _hex(value: int, bits: int) -> str:
  return f"{bits}'h{value & ((1 << bits) - 1):0{(bits + 3) // 4}x}"


def lut_module(design: fixed_point.Design) -> str:
  """The look-up table: `case (x)` with one entry per input pattern."""
  n, m = design.inp.bits, design.out.bits
  table = design.out.patterns(design.table())
  lines = [_header(design, f"LUT/ROM baseline: {1 << n} entries of {m} bits"),
           _ports(f"{design.name}_lut", n, m, "reg"), "  always @* begin\n    case (x)\n"]
  lines += [f"      {_hex(p, n)}: y = {_hex(int(v), m)};\n" for p, v in enumerate(table)]
  lines.append(f"      default: y = {_hex(0, m)};\n    endcase\n  end\nendmodule\n")
  return "".join(lines)


def _signed_width(*values: int) -> int:
  """Bits of the smallest two's complement number holding every value."""
  return max((v if v >= 0 else ~v).bit_length() + 1 for v in (0, *values))


def pwl_module(fit: pwl_lib.PiecewiseLinear) -> str:
  """The piecewise-linear approximation b[s] + k[s]·t (see `effcomp.hw.pwl`)."""
  design = fit.design
  n, m, sb, tb, cf = design.inp.bits, design.out.bits, fit.seg_bits, fit.offset_bits, fit.coef_frac
  if not (1 <= sb < n):
    raise ValueError(f"seg_bits={sb}: the PWL module needs 1 to {n - 1} segment bits")
  wk, wb = _signed_width(*fit.k), _signed_width(*fit.b)
  lo, hi = fit.accumulator_range()
  t_max = (1 << tb) - 1
  # One bit of headroom for the rounding constant or the negation of toward_zero.
  wa = _signed_width(lo, hi, *(k * t_max for k in fit.k), *fit.b, design.out.min_code,
                     design.out.max_code) + 1
  flip = f" ^ {_hex(1 << (n - 1), n)}" if design.inp.signed else ""
  lines = [_header(design, f"Piecewise-linear baseline: {1 << sb} segments, "
                            f"coefficients with {cf} extra fraction bits"),
           _ports(f"{design.name}_pwl", n, m, "wire"),
           f"  wire [{n - 1}:0] u = x{flip};  // the input's rank\n",
           f"  wire [{sb - 1}:0] s = u[{n - 1}:{tb}];\n",
           f"  wire [{tb - 1}:0] t = u[{tb - 1}:0];\n",
           f"  reg signed [{wk - 1}:0] k;\n  reg signed [{wb - 1}:0] b;\n",
           "  always @* begin\n    case (s)\n"]
  lines += [f"      {_hex(i, sb)}: begin k = {_hex(k, wk)}; b = {_hex(b, wb)}; end\n"
            for i, (k, b) in enumerate(zip(fit.k, fit.b))]
  lines.append(f"      default: begin k = {_hex(0, wk)}; b = {_hex(0, wb)}; end\n"
               "    endcase\n  end\n")
  lines.append(f"  wire signed [{wa - 1}:0] acc = b + k * $signed({{1'b0, t}});\n")
  if design.rounding == "truncate" or cf == 0:
    q = f"acc >>> {cf}"
  elif design.rounding == "round":
    q = f"(acc + {wa}'sd{1 << (cf - 1)}) >>> {cf}"
  else:
    q = f"acc < 0 ? -((-acc) >>> {cf}) : acc >>> {cf}"
  lines.append(f"  wire signed [{wa - 1}:0] q = {q};\n")
  ymin, ymax = design.out.min_code, design.out.max_code
  lines.append(f"  localparam signed [{wa - 1}:0] YMIN = {'-' if ymin < 0 else ''}{wa}'sd{abs(ymin)};\n"
               f"  localparam signed [{wa - 1}:0] YMAX = {wa}'sd{ymax};\n")
  lines.append(f"  assign y = q > YMAX ? {_hex(ymax, m)} : q < YMIN ? {_hex(ymin, m)} : "
               f"q[{m - 1}:0];\nendmodule\n")
  return "".join(lines)


def testbench(module_names: Sequence[str], in_bits: int, out_bits: int) -> str:
  """A testbench `tb` printing `x y_1 … y_k` for every input x of the named modules."""
  lines = ["`timescale 1ns/1ps\nmodule tb;\n", f"  reg [{in_bits - 1}:0] x;\n  integer i;\n"]
  for k, name in enumerate(module_names):
    lines.append(f"  wire [{out_bits - 1}:0] y{k};\n  {name} dut{k} (.x(x), .y(y{k}));\n")
  fmt = " ".join(["%0d"] * (len(module_names) + 1))
  ys = ", ".join(f"y{k}" for k in range(len(module_names)))
  lines.append(f"  initial begin\n    for (i = 0; i < {1 << in_bits}; i = i + 1) begin\n"
               f"      x = i;\n      #1 $display(\"{fmt}\", x, {ys});\n    end\n"
               "    $finish;\n  end\nendmodule\n")
  return "".join(lines)
