"""effcomp.hugepages: when an entry point re-executes itself with glibc's huge-page tunable
and tcmalloc preloaded."""

import os
import subprocess
import sys
import textwrap

from effcomp import hugepages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_environ_adds_the_tunable_only_where_it_helps():
  base = {"PATH": "/bin"}
  assert hugepages.hugepage_environ(base, "madvise", True) == {
      "PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  kept = hugepages.hugepage_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", True)
  assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert hugepages.hugepage_environ(base, "always", True) is None  # huge pages already
  assert hugepages.hugepage_environ(base, "never", True) is None
  assert hugepages.hugepage_environ(base, "madvise", False) is None  # glibc < 2.35
  assert hugepages.hugepage_environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise",
                                    True) is None  # the user's own choice stands
  assert hugepages.hugepage_environ({"EFFCOMP_HUGEPAGES": "0"}, "madvise", True) is None


def test_environ_preloads_tcmalloc_once_and_keeps_other_preloads(tmp_path):
  lib = "/opt/lib/libtcmalloc_minimal.so.4"
  assert hugepages.hugepage_environ({}, "never", True, lib) == {"LD_PRELOAD": lib}
  both = hugepages.hugepage_environ({"LD_PRELOAD": "/x/libother.so"}, "madvise", True, lib)
  assert both == {"LD_PRELOAD": f"{lib} /x/libother.so", "GLIBC_TUNABLES": hugepages.TUNABLE}
  assert hugepages.hugepage_environ(both, "madvise", True, lib) is None  # the re-executed run
  assert hugepages.hugepage_environ({"EFFCOMP_HUGEPAGES": "0"}, "never", True, lib) is None
  fake = tmp_path / "libtcmalloc_custom.so"
  fake.write_bytes(b"")
  assert hugepages.find_tcmalloc({"EFFCOMP_TCMALLOC": str(fake)}) == str(fake)
  found = hugepages.find_tcmalloc({"EFFCOMP_TCMALLOC": str(tmp_path / "missing.so")})
  assert found is None or found.endswith(hugepages.TCMALLOC)


def test_reexec_runs_the_program_again_with_the_tunable(tmp_path):
  script = tmp_path / "program.py"
  script.write_text(textwrap.dedent(f"""
      import os, sys
      sys.path.insert(0, {ROOT!r})
      print("start", sys.argv[1:], flush=True)
      from effcomp import hugepages
      hugepages.reexec_with_hugepages()
      print("tunables", os.environ.get("GLIBC_TUNABLES", ""))
      print("preload", os.environ.get("LD_PRELOAD", ""))
  """))
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "EFFCOMP_HUGEPAGES", "LD_PRELOAD")}
  out = subprocess.run([sys.executable, str(script), "--flag=1"], env=env, capture_output=True,
                       text=True, check=True).stdout.splitlines()
  wanted = hugepages.hugepage_environ(env, hugepages._thp_mode(),
                                      hugepages._glibc_supports_hugetlb(),
                                      hugepages.find_tcmalloc(env))
  if wanted is None:  # nothing to gain on this machine: no second start
    assert out == ["start ['--flag=1']", "tunables ", "preload "]
  else:  # started twice, with its arguments, the second time with the tunable / preload
    assert out == ["start ['--flag=1']", "start ['--flag=1']",
                   f"tunables {wanted.get('GLIBC_TUNABLES', '')}",
                   f"preload {wanted.get('LD_PRELOAD', '')}"]


def test_release_free_memory_returns_freed_heap_pages():
  """64 KiB blocks interleaved with kept 2 KiB ones, then the large ones freed: holes glibc
  keeps in its heap until `malloc_trim` (in a fresh process without tcmalloc)."""
  code = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {ROOT!r})
      from effcomp import hugepages
      def rss_mib():
        with open("/proc/self/status") as f:
          return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))
      kept, freed = [], []
      for _ in range(4000):
        freed.append(b"1" * 65536)
        kept.append(b"2" * 2048)
      del freed
      before = rss_mib()
      print(hugepages.release_free_memory(), before - rss_mib())
  """)
  env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
  name, released_mib = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                      text=True, check=True).stdout.split()
  assert name == "malloc_trim"
  assert int(released_mib) > 100  # of the 250 MiB freed (without it: ~20)
