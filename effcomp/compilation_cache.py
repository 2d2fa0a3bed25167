"""JAX's persistent compilation cache for effcomp's entry points.

XLA compiles a train step once per process: 40–70 s for U-DiT-S and DiT-SR's steps on
2 CPU cores (`docs/results/speed.md`, first call). With the cache on, a later process
that compiles the same program (a resumed or preempted run, an evaluation, the same
config launched again) loads the executable from disk instead. The cache key covers the
program, the compile options, the backend and the JAX version, so a changed model or
flag compiles afresh.

`enable()` is called by the entry points (`effcomp.cli`, `experiments/demo.py`), not on
import: a notebook or a test runner keeps JAX's own setting unless it calls it. The folder:
`$EFFCOMP_COMPILATION_CACHE`, else `~/.cache/effcomp/jax`; `EFFCOMP_COMPILATION_CACHE=off`
turns it off. Entries that took under a second to compile are not kept; the folder is
capped at `MAX_BYTES` (least recently used entries go first).
"""

import os
from typing import Optional

import jax

ENV = "EFFCOMP_COMPILATION_CACHE"
DEFAULT = os.path.join("~", ".cache", "effcomp", "jax")
MAX_BYTES = 4 * 2 ** 30


def folder(environ=os.environ) -> Optional[str]:
  """The cache folder the environment asks for, or None when it is 'off'."""
  value = environ.get(ENV, DEFAULT)
  return None if value.strip().lower() in ("off", "0", "") else os.path.expanduser(value)


def enable(path: Optional[str] = None) -> Optional[str]:
  """Turns the persistent cache on at `path` (None: `folder()`); returns the folder used
  (None: left off)."""
  path = path or folder()
  if path is None:
    return None
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return path
