"""SIGTERM (preemption) → save a checkpoint at the next step boundary and exit cleanly.

One process: a signal handler sets a flag the loop polls. Several processes: JAX's
preemption sync manager (started by `jax.distributed.initialize`, it listens for
SIGTERM itself) agrees on one step at which every process saves.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionGuard:
  """Context manager; `reached(step)` is True at the step the run must stop at."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    self._multiprocess = jax.process_count() > 1

  def __enter__(self):
    if not self._multiprocess and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False

  def reached(self, step: int) -> bool:
    if self._multiprocess:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._event.is_set()
