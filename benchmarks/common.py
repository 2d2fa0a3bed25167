"""Writing benchmark results: `benchmarks/results/<topic>.json` and `docs/results/<topic>.md`.

Every result file records what was measured, the command, the commit, the date and
the machine. The files are only ever written by the benchmark scripts.
"""

import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402

from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.train import run_info  # noqa: E402


def machine() -> Dict[str, Any]:
  return {"host": platform.node(), "cpus": os.cpu_count(), "platform": jax.default_backend(),
          "devices": [d.device_kind for d in jax.devices()], "python": platform.python_version(),
          "jax": jax.__version__}


def _fmt(v: Any) -> str:
  text = f"{v:.4g}" if isinstance(v, float) else str(v)
  return text.replace("|", "\\|")  # a literal | would end the markdown cell


def _table(rows: List[Dict[str, Any]], columns: Sequence[str]) -> List[str]:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  return lines + ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]


def provenance() -> Dict[str, str]:
  """{'commit', 'date', 'command'} of this process: what every result records."""
  return {"commit": run_info.git_commit(ROOT), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}


def read_results(topic: str) -> Dict[str, Any] | None:
  """The JSON record `write_results` last wrote for `topic`, or None."""
  path = os.path.join(ROOT, "benchmarks", "results", f"{topic}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_results(topic: str, rows: List[Dict[str, Any]], columns: Sequence[str], *,
                  title: str, notes: str = "", extra: Dict[str, Any] | None = None,
                  tables: Sequence[Tuple[str, str, List[Dict[str, Any]], Sequence[str]]] = ()
                  ) -> Dict[str, Any]:
  """Writes the JSON record and the markdown table for `topic`; returns the record.

  `extra` adds fields to the JSON record (e.g. the per-seed raw numbers). `tables`: more
  tables after the first, each (heading, notes, rows, columns); their rows are recorded
  in the JSON under "tables" by heading.
  """
  record = {"topic": topic, **provenance(), "machine": machine(), "rows": rows,
            **(extra or {})}
  if tables:
    record["tables"] = {heading: table_rows for heading, _, table_rows, _ in tables}
  os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
  os.makedirs(os.path.join(ROOT, "docs", "results"), exist_ok=True)
  with open(os.path.join(ROOT, "benchmarks", "results", f"{topic}.json"), "w") as f:
    json.dump(record, f, indent=2)
  m = record["machine"]
  lines = [f"# {title}", "",
           f"Written by `{record['command']}` at commit `{record['commit']}` on {record['date']} "
           f"({m['cpus']} CPUs, {m['platform']}, jax {m['jax']}). Do not edit by hand.", ""]
  if notes:
    lines += [notes, ""]
  lines += _table(rows, columns)
  for heading, table_notes, table_rows, table_columns in tables:
    lines += ["", f"## {heading}", ""] + ([table_notes, ""] if table_notes else [])
    lines += _table(table_rows, table_columns)
  with open(os.path.join(ROOT, "docs", "results", f"{topic}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return record


def trained_lm_tiny(workdir: str, tokenizer: str = "bpe", attention: str = "softmax") -> str:
  """The lm_tiny run in `workdir`, trained to its full budget by
  `configs/lm_tiny.py:tokenizer=<tokenizer>,attention=<attention>` (resumed if cut short; a
  no-op if finished): the model the LLM-compression benchmarks start from."""
  config = config_lib.load(f"configs/lm_tiny.py:tokenizer={tokenizer},attention={attention}",
                           **{"train.progress_bar": False})
  runs.train(config, workdir)
  return workdir
