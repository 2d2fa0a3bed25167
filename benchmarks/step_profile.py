"""Where a step's time goes, on each side: a JAX step's per-HLO-op times from a
`jax.profiler` trace, grouped by the model code they came from, and a PyTorch step's
per-operator times from `torch.profiler` (used by `benchmarks/speed.py --profile`).

JAX: the trace's device events name the HLO instruction they ran (`hlo_module`, `hlo_op`);
XLA's optimized-HLO dump (the worker runs with `--xla_dump_to`, `effcomp_env`) maps each
instruction to the `op_name` metadata of the JAX operation it came from, e.g.
`jit(step)/transpose(jvp(UDiT))/stage_1/layers_0/attn/dot_general`. An op is grouped by
its pass (forward: under `jvp(...)` only; backward: under `transpose(...)`; otherwise the
optimizer and glue), the Flax module that ran it (the last path component before the
primitive that is not a transformation such as `closed_call` or a scan's `body`, layer
indices dropped) and the primitive. Fusions carry their root's metadata.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Callable, Dict, List

import jax
import torch

_DUMP = "speed_hlo_dump"
_INSTR = re.compile(r"^\s*(ROOT )?%([\w.\-]+) = .*? ([\w\-]+)\(")
_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%([\w.\-]+)")
# Path components that name a JAX transformation or control flow, not a module.
DENSE, OTHER = "(all matmuls and convolutions)", "(all other ops)"
_TRANSFORMS = {"closed_call", "body", "checkpoint", "remat", "rematted_computation", "while",
               "cond", "scan", "pjit", "custom_jvp_call", "custom_vjp_call", "branch"}


def effcomp_env(folder: str) -> Dict[str, str]:
  """Environment of a JAX worker whose compiled modules `jax_profile` can read."""
  env = dict(os.environ)
  dump = os.path.join(folder, _DUMP)
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_dump_to={dump} --xla_dump_hlo_as_text"
  env["SPEED_PROFILE_DIR"] = folder
  return env


def _op_names(dump: str) -> Dict[str, Dict[str, str]]:
  """{module name: {instruction: op_name}} from the dumped optimized HLO. An instruction
  without metadata (XLA drops it on some rewritten ops, e.g. kernel-gradient convolutions
  inside fusions) takes its called computation's root's, or else '?/<root opcode>'."""
  out: Dict[str, Dict[str, str]] = collections.defaultdict(dict)
  for path in glob.glob(os.path.join(dump, "*after_optimizations.txt")):
    module = re.sub(r"^module_\d+\.", "", os.path.basename(path)).split(".")[0]
    roots: Dict[str, str] = {}  # computation: op_name of its root (or '?/opcode')
    pending: Dict[str, str] = {}  # instruction without metadata: the computation it calls
    computation = ""
    with open(path) as f:
      for line in f:
        if line.startswith("%") or line.startswith("ENTRY"):
          computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
          continue
        m = _INSTR.match(line)
        if not m:
          continue
        name = _NAME.search(line)
        calls = _CALLS.search(line)
        if name:
          out[module].setdefault(m.group(2), name.group(1))
        elif calls:
          pending[m.group(2)] = calls.group(1)
        if m.group(1):
          roots[computation] = name.group(1) if name else f"?/{m.group(3)}"
    for instruction, called in pending.items():
      out[module].setdefault(instruction, roots.get(called, "?/?"))
  return out


def group_of(op_name: str) -> str:
  """'bwd · attn · dot_general' for one op_name (see the module docstring)."""
  parts = [p for p in op_name.split("/") if p and not p.startswith("jit(")]
  if parts[:1] == ["?"]:
    return f"? (no metadata) · {parts[-1]}"
  stage = "opt/other"
  if any(p.startswith("transpose(") for p in parts):
    stage = "bwd"
  elif any(p.startswith("jvp(") for p in parts):
    stage = "fwd"
  primitive = parts[-1]
  modules = [re.sub(r"_\d+$", "", re.sub(r"^\w+\((\w+)\)+$", r"\1", p)) for p in parts[:-1]]
  modules = [m for m in modules if m not in _TRANSFORMS]
  return f"{stage} · {modules[-1] if modules else '-'} · {primitive}"


def _aggregate(totals: Dict[str, float], steps: int, top: int,
               is_dense: Callable[[str], bool]) -> List[Dict[str, float]]:
  """The `top` groups, then all matmuls and convolutions (`is_dense` of a group's name), all
  other ops, and everything, in ms per step and shares of the step."""
  everything = sum(totals.values())
  dense = sum(us for name, us in totals.items() if is_dense(name))
  row = lambda name, us: {"op group": name, "ms per step": us / steps / 1e3,
                          "share": us / everything}
  return ([row(name, us) for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]
          + [row(DENSE, dense), row(OTHER, everything - dense), row("(all)", everything)])


def jax_profile(fn: Callable[[], None], steps: int = 2, top: int = 12) -> List[Dict[str, float]]:
  """The `top` op groups of `fn`'s device time per step (fn already compiled, in a worker
  started with `effcomp_env`)."""
  folder = os.environ["SPEED_PROFILE_DIR"]
  with tempfile.TemporaryDirectory(dir=folder) as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(steps):
      fn()
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  names = _op_names(os.path.join(folder, _DUMP))
  totals: Dict[str, float] = collections.defaultdict(float)
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") == "X" and "hlo_op" in args:
      op_name = names.get(args.get("hlo_module", ""), {}).get(args["hlo_op"], "?/?")
      totals[group_of(op_name)] += e["dur"]
  return _aggregate(totals, steps, top, lambda group: group.rsplit(" · ", 1)[-1] in (
      "dot_general", "conv_general_dilated", "convolution"))


def torch_profile(fn: Callable[[], None], steps: int = 2, top: int = 12
                  ) -> List[Dict[str, float]]:
  """The `top` PyTorch operators by self CPU time per step of `fn`."""
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      fn()
  totals = {a.key: a.self_cpu_time_total for a in prof.key_averages()}
  return _aggregate(totals, steps, top, lambda op: "mm" in op or "conv" in op)
