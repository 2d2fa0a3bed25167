"""Killed and preempted runs resume to the bitwise-identical final state."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import ROOT, run_python, subprocess_env, train_args

STEPS = 600
OVERRIDES = (f"--config.checkpoint.every_steps=100", "--config.train.log_every=1",
             "--config.train.eval_every=0")
CONFIG = f"configs/demo.py:model=mlp,steps={STEPS}"


def _final_state(workdir):
  path = os.path.join(workdir, "checkpoints", str(STEPS))
  state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
  data = open(os.path.join(path, "data", "process_0-of-1.json")).read()
  return state, data


def _assert_bitwise_equal(a, b):
  import jax
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("reference"))
  run_python(train_args(workdir, CONFIG, *OVERRIDES))
  return _final_state(workdir)


def _start_and_interrupt(workdir, sig):
  """Starts a run, sends `sig` once checkpoint 100 is committed; returns the process."""
  proc = subprocess.Popen([sys.executable, *train_args(workdir, CONFIG, *OVERRIDES)], cwd=ROOT,
                          env=subprocess_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  committed = os.path.join(workdir, "checkpoints", "100")
  deadline = time.time() + 300
  while not os.path.isdir(committed) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  proc.send_signal(sig)
  stdout, stderr = proc.communicate(timeout=120)
  return proc.returncode, stdout, stderr


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_kill_and_resume_is_bitwise_equal(tmp_path, reference):
  workdir = str(tmp_path)
  code, _, stderr = _start_and_interrupt(workdir, signal.SIGKILL)
  assert code == -signal.SIGKILL, stderr[-2000:]
  assert _steps(workdir) and _steps(workdir)[-1] < STEPS  # really interrupted mid-run
  out = run_python(train_args(workdir, CONFIG, *OVERRIDES)).stdout
  assert f"steps            {STEPS}" in out
  state, data = _final_state(workdir)
  _assert_bitwise_equal(state, reference[0])
  assert json.loads(data) == json.loads(reference[1])  # data iterator at the same position


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, reference):
  workdir = str(tmp_path)
  code, stdout, stderr = _start_and_interrupt(workdir, signal.SIGTERM)
  assert code == 0, stderr[-2000:]
  assert "preempted: checkpoint saved" in stdout
  stopped_at = json.load(open(os.path.join(workdir, "summary.json")))["steps"]
  assert 100 <= stopped_at < STEPS and _steps(workdir)[-1] == stopped_at
  run_python(train_args(workdir, CONFIG, *OVERRIDES))
  _assert_bitwise_equal(_final_state(workdir)[0], reference[0])
