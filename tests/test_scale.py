"""The same training on 1 device, 8 devices (data × fsdp) and 2 processes."""

import json
import os
import subprocess

import numpy as np
import pytest

from effcomp.train import metrics_writer
from tests.conftest import ROOT, run_python, subprocess_env, train_args

STEPS = 12
OVERRIDES = ("--config.train.log_every=1", "--config.train.eval_every=0",
             "--config.checkpoint.every_steps=6", "--config.train.batch_size=32",
             "--config.eval.batch_size=64",
             # SGD: Adam's m/√v turns float reduction-order noise (≈1e-7) in near-zero
             # gradients into O(lr) update differences (5e-5 relative loss after 12 steps).
             "--config.optimizer.name=sgd", "--config.optimizer.lr=0.05")


def _losses(workdir):
  rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return np.array([r["train/loss"] for r in rows if "train/loss" in r])


def _summary(workdir):
  return json.load(open(os.path.join(workdir, "summary.json")))


@pytest.fixture(scope="module")
def single_device(tmp_path_factory, data_dir):
  """The CNN (BatchNorm: statistics over the global batch) on one device."""
  workdir = str(tmp_path_factory.mktemp("one_device"))
  run_python(train_args(workdir, f"configs/demo.py:steps={STEPS}", *OVERRIDES), devices=1)
  return workdir


@pytest.mark.parametrize("mesh", [  # one mesh in make test, the others in make test-slow
    ("2", "4", "1"), pytest.param(("8", "1", "1"), marks=pytest.mark.slow),
    pytest.param(("1", "4", "2"), marks=pytest.mark.slow)])
def test_eight_devices_give_the_same_losses_as_one(tmp_path, single_device, mesh):
  data, fsdp, tensor = mesh
  run_python(train_args(str(tmp_path), f"configs/demo.py:steps={STEPS}", *OVERRIDES,
                        f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}",
                        f"--config.mesh.tensor={tensor}"), devices=8)
  one, eight = _losses(single_device), _losses(str(tmp_path))
  assert len(one) == len(eight) == STEPS
  np.testing.assert_allclose(eight, one, rtol=1e-5)
  run = json.loads(open(tmp_path / "runs.jsonl").readline())
  assert run["devices"] == 8 and run["mesh"] == {"data": int(data), "fsdp": int(fsdp),
                                                 "tensor": int(tensor)}
  np.testing.assert_allclose(_summary(str(tmp_path))["eval"]["accuracy"],
                             _summary(single_device)["eval"]["accuracy"], atol=1 / 360 + 1e-9)


def test_two_processes_train_checkpoint_and_resume(tmp_path, single_device):
  """launch/local_multiprocess.sh: 2 jax.distributed processes on 127.0.0.1, 2 devices each."""
  workdir = str(tmp_path)

  def launch(steps):
    return subprocess.run(
        ["bash", "launch/local_multiprocess.sh", "2",
         *train_args(workdir, f"configs/demo.py:steps={steps}", *OVERRIDES)[1:]],
        cwd=ROOT, env=subprocess_env(1, DEVICES_PER_PROCESS=2), capture_output=True, text=True,
        timeout=600)

  result = launch(STEPS)
  assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
  assert "effcomp run summary" in result.stdout
  # Same global batches by construction: the losses match the single-device run.
  np.testing.assert_allclose(_losses(workdir), _losses(single_device), rtol=1e-5)
  data_dir = os.path.join(workdir, "checkpoints", str(STEPS), "data")
  assert sorted(os.listdir(data_dir)) == ["commit_success.txt", "process_0-of-2.json",
                                          "process_1-of-2.json"]
  states = [json.load(open(os.path.join(data_dir, f"process_{i}-of-2.json"))) for i in range(2)]
  assert states[0] == states[1]  # both at the same position of their own slice
  result = launch(STEPS + 6)  # resumes from step 12 in both processes
  assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
  assert _summary(workdir)["resumed_from"] == STEPS and _summary(workdir)["steps"] == STEPS + 6
