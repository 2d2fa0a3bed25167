"""effcomp.compilation_cache: the folder the environment asks for, and a second process
that compiles the same program loads it from the cache."""

import os
import textwrap

from conftest import run_python
from effcomp import compilation_cache


def test_folder_follows_the_environment(tmp_path):
  assert compilation_cache.folder({}) == os.path.expanduser("~/.cache/effcomp/jax")
  assert compilation_cache.folder({"EFFCOMP_COMPILATION_CACHE": str(tmp_path)}) == str(tmp_path)
  assert compilation_cache.folder({"EFFCOMP_COMPILATION_CACHE": "off"}) is None


def test_a_second_process_hits_the_cache(tmp_path):
  program = textwrap.dedent(f"""
      import jax, jax.numpy as jnp
      from effcomp import compilation_cache
      hits = []
      jax.monitoring.register_event_listener(
          lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
      assert compilation_cache.enable({str(tmp_path)!r}) == {str(tmp_path)!r}
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
      f = jax.jit(lambda x: jnp.sin(x @ x.T).sum())
      print(float(f(jnp.ones((8, 8)))), len(hits))
  """)
  first = run_python(program).stdout.split()
  assert first[1] == "0" and os.listdir(tmp_path)  # compiled, and written to the cache
  second = run_python(program).stdout.split()
  assert second[0] == first[0] and int(second[1]) >= 1  # the same result, from the cache
