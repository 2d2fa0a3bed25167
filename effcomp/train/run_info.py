"""What every run records in its workdir: resolved config, seed, versions, commit."""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict

import jax
from etils import epath

PACKAGES = ("effcomp", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "ml-collections", "clu", "numpy")


COMMIT_FILE = ".effcomp_commit"  # written by launch/tpu_pod.sh into copies without .git


def git_commit(path: str | None = None) -> str:
  """The commit of the effcomp checkout (with '+dirty' if it has changes); in a copy
  without .git, the one a launch script recorded in `COMMIT_FILE`; else 'unknown'."""
  path = path or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return commit + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    recorded = os.path.join(path, COMMIT_FILE)
    if os.path.isfile(recorded):
      with open(recorded) as f:
        return f.read().strip() or "unknown"
    return "unknown"


def versions() -> Dict[str, str]:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def collect(config_dict: Dict[str, Any], mesh_shape: Dict[str, int]) -> Dict[str, Any]:
  return {
      "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "command": " ".join(sys.argv),
      "seed": config_dict.get("seed"),
      "commit": git_commit(),
      "versions": versions(),
      "platform": jax.default_backend(),
      "devices": jax.device_count(),
      "processes": jax.process_count(),
      "mesh": mesh_shape,
      "host": platform.node(),
  }


def write(workdir: str, config_dict: Dict[str, Any], mesh_shape: Dict[str, int]) -> None:
  """Writes `config.json` and appends this launch to `runs.jsonl` (process 0 only)."""
  if jax.process_index() != 0:
    return
  workdir = epath.Path(workdir)  # local paths and gs:// alike
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
  with (workdir / "runs.jsonl").open("a") as f:
    f.write(json.dumps(collect(config_dict, mesh_shape)) + "\n")
