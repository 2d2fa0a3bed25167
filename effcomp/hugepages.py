"""Huge pages and tcmalloc for XLA's per-step buffers on Linux CPUs (entry points only),
and freed memory handed back to the OS after compiling (`release_free_memory`).

XLA's CPU runtime allocates each step's temporaries afresh (U-DiT-S's train step: 3.2 GiB)
with glibc's malloc, which maps blocks that large with mmap and unmaps them when freed, so
every step faults its temporaries in again, 4 KiB at a time: 0.9 million page faults and
1.6 s of kernel time per U-DiT-S step on 2 cores (benchmarks/speed.py's worker, measured
with getrusage). Where the kernel's transparent huge pages are in `madvise` mode (the
common default), glibc ≥ 2.35's tunable `glibc.malloc.hugetlb=1` makes malloc ask for
huge pages on those mappings: 2 thousand faults, 0.3 s of kernel time, and the step 3.8 →
2.9 s. Tunables are read when a process starts, so an entry point re-executes itself once
with the tunable set (`reexec_with_hugepages`, before it parses flags or starts JAX).

Huge pages still leave each step mapping its temporaries anew, and the kernel must find
free huge pages for them each time: where another process has just freed memory (the
PyTorch side of benchmarks/speed.py) it compacts memory first, and U-DiT-S's step took
3.1–3.3 s (8–11 s for the first step after the other side ran) against 2.6–2.8 s alone.
tcmalloc keeps freed blocks in the process and hands them out again, so a step reuses
the previous step's pages: 2.3–2.8 s beside the PyTorch process, and the first call
(tracing + compilation) 35 s instead of 47–57 s. Where gperftools' tcmalloc is installed
(`libtcmalloc_minimal.so.4`: Debian/Ubuntu `libtcmalloc-minimal4`; or the path in
`$EFFCOMP_TCMALLOC`), the re-executed process preloads it (`LD_PRELOAD`).

Not done in a library import (a notebook kernel or a test runner must not re-exec) and
not when `EFFCOMP_HUGEPAGES=0`; `make` exports the tunable for everything it runs.
"""

import ctypes
import os
import platform
import sys
from typing import Dict, Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb=1"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"
TCMALLOC = "libtcmalloc_minimal.so.4"
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
             "/usr/lib", "/usr/local/lib")


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


def find_tcmalloc(environ: Mapping[str, str]) -> Optional[str]:
  """`$EFFCOMP_TCMALLOC`, else the first `TCMALLOC` in the usual library folders, or None."""
  candidates = [environ.get("EFFCOMP_TCMALLOC", "")] + [os.path.join(d, TCMALLOC)
                                                      for d in _LIB_DIRS]
  return next((path for path in candidates if path and os.path.isfile(path)), None)


def hugepage_environ(environ: Mapping[str, str], thp_mode: str, glibc_ok: bool,
                     tcmalloc: Optional[str] = None) -> Optional[Dict[str, str]]:
  """The environment to re-execute with, or None when there is nothing to gain (or
  `EFFCOMP_HUGEPAGES=0`). The huge-page tunable where huge pages come only on request
  (`madvise`), glibc knows the tunable and it is not set yet; `tcmalloc` (a library path)
  preloaded where it is not yet."""
  if environ.get("EFFCOMP_HUGEPAGES") == "0":
    return None
  out = dict(environ)
  tunables = environ.get("GLIBC_TUNABLES", "")
  if thp_mode == "madvise" and glibc_ok and "glibc.malloc.hugetlb" not in tunables:
    out["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
  preload = environ.get("LD_PRELOAD", "")
  if tcmalloc and tcmalloc not in preload.replace(":", " ").split():
    out["LD_PRELOAD"] = f"{tcmalloc} {preload}".strip()
  return out if out != dict(environ) else None


def reexec_with_hugepages() -> None:
  """Replaces this process by itself with the tunable set, where that helps (module
  docstring); returns without doing anything otherwise. Call first thing in a program."""
  if not sys.platform.startswith("linux"):
    return
  environ = hugepage_environ(os.environ, _thp_mode(), _glibc_supports_hugetlb(),
                             find_tcmalloc(os.environ))
  if environ is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)


def release_free_memory() -> Optional[str]:
  """Hands the allocator's free memory back to the OS; the allocator's call that did it
  (tcmalloc's `MallocExtension_ReleaseFreeMemory` where tcmalloc is preloaded, else
  glibc's `malloc_trim`), or None where neither exists (not Linux).

  XLA's compiler frees gigabytes when it finishes, but the allocator keeps them, and the
  step's temporaries (one large block) then come on top: U-DiT-S's train step peaked at
  5.9 GiB of resident memory on 2 cores, 4.4 GiB with this called between compiling the
  step and running it (`effcomp.train.steps.compile_ahead`).
  """
  if not sys.platform.startswith("linux"):
    return None
  process = ctypes.CDLL(None)  # the symbols of this process, preloaded libraries first
  for name, args in (("MallocExtension_ReleaseFreeMemory", ()), ("malloc_trim", (0,))):
    call = getattr(process, name, None)
    if call is not None:
      call(*args)
      return name
  return None
