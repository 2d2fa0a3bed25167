"""Huge pages for XLA's per-step buffers on Linux CPUs (entry points only).

XLA's CPU runtime allocates each step's temporaries afresh (U-DiT-S's train step: 3.2 GiB)
with glibc's malloc, which maps blocks that large with mmap and unmaps them when freed, so
every step faults its temporaries in again, 4 KiB at a time: 0.9 million page faults and
1.6 s of kernel time per U-DiT-S step on 2 cores (benchmarks/speed.py's worker, measured
with getrusage). Where the kernel's transparent huge pages are in `madvise` mode (the
common default), glibc ≥ 2.35's tunable `glibc.malloc.hugetlb=1` makes malloc ask for
huge pages on those mappings: 2 thousand faults, 0.3 s of kernel time, and the step 3.8 →
2.9 s. Tunables are read when a process starts, so an entry point re-executes itself once
with the tunable set (`reexec_with_hugepages`, before it parses flags or starts JAX).

Not done in a library import (a notebook kernel or a test runner must not re-exec) and
not when `EFFCOMP_HUGEPAGES=0`; `make` exports the tunable for everything it runs.
"""

import os
import platform
import sys
from typing import Dict, Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb=1"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _thp_mode() -> str:
  """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'; '' if unknown)."""
  try:
    with open(_THP) as f:
      text = f.read()
  except OSError:
    return ""
  return text[text.find("[") + 1:text.find("]")] if "[" in text else ""


def _glibc_supports_hugetlb() -> bool:
  name, version = platform.libc_ver()
  try:
    return name == "glibc" and tuple(int(v) for v in version.split(".")[:2]) >= (2, 35)
  except ValueError:
    return False


def hugepage_environ(environ: Mapping[str, str], thp_mode: str, glibc_ok: bool
                     ) -> Optional[Dict[str, str]]:
  """The environment to re-execute with, or None when there is nothing to gain: not opted
  out, huge pages only on request (`madvise`), a glibc that knows the tunable, and the
  tunable not set yet."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if (environ.get("EFFCOMP_HUGEPAGES") == "0" or thp_mode != "madvise" or not glibc_ok
      or "glibc.malloc.hugetlb" in tunables):
    return None
  return {**environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def reexec_with_hugepages() -> None:
  """Replaces this process by itself with the tunable set, where that helps (module
  docstring); returns without doing anything otherwise. Call first thing in a program."""
  if not sys.platform.startswith("linux"):
    return
  environ = hugepage_environ(os.environ, _thp_mode(), _glibc_supports_hugetlb())
  if environ is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)
