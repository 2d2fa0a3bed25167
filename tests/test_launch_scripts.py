"""launch/tpu_pod.sh and launch/slurm.sbatch, run against stand-ins for `gcloud`, `srun`
and the venv's python: the commands they issue, what reaches the workers, and their
usage errors. Nothing here calls the real gcloud or SLURM."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import ROOT

TPU_POD = os.path.join(ROOT, "launch", "tpu_pod.sh")
SLURM = os.path.join(ROOT, "launch", "slurm.sbatch")
TRAIN_ARGS = ["--config=configs/demo.py", "--workdir=gs://b/x"]

# Records each call's argv as a JSON line; `scp` also keeps a copy of what it would send,
# `describe` exits $FAKE_DESCRIBE_STATUS (1: no such TPU VM).
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, shutil, sys
out = os.environ["FAKE_OUT"]
with open(os.path.join(out, "gcloud_calls.jsonl"), "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
if "scp" in sys.argv:
  shutil.copy(sys.argv[sys.argv.index("scp") + 1], os.path.join(out, "scp_copy.tar.gz"))
if "describe" in sys.argv:
  sys.exit(int(os.environ.get("FAKE_DESCRIBE_STATUS", "1")))
"""

# Prints what the training process would get: its arguments, directory and environment.
FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {{
    k: os.environ.get(k) for k in ("EFFCOMP_DISTRIBUTED", "JAX_LOCAL_DEVICE_IDS", "FOO")}}}}))
"""


def _executable(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)
  return str(path)


@pytest.fixture
def fake_gcloud(tmp_path):
  """PATH with a recording `gcloud` first; returns a function listing its calls."""
  _executable(tmp_path / "bin" / "gcloud", FAKE_GCLOUD)
  env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
         "FAKE_OUT": str(tmp_path), "NAME": "pod", "ZONE": "us-central2-b"}
  for key in ("DRY_RUN", "PROJECT", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "SPOT", "TRAIN_ENV",
              "REMOTE_DIR"):
    env.pop(key, None)

  def calls():
    path = tmp_path / "gcloud_calls.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []

  return env, calls


def _run(args, env, script=TPU_POD, cwd=ROOT):
  return subprocess.run(["bash", script, *args], env=env, cwd=cwd, capture_output=True,
                        text=True, timeout=60)


def _flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, argv
  return values[0]


@pytest.mark.parametrize("script", [TPU_POD, SLURM])
def test_scripts_parse_as_bash(script):
  subprocess.run(["bash", "-n", script], check=True)


@pytest.mark.parametrize("script", [TPU_POD, SLURM])
def test_scripts_pass_shellcheck(script):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed")
  result = subprocess.run(["shellcheck", "--shell=bash", script], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


def test_dry_run_prints_training_command_for_all_workers_and_runs_nothing(fake_gcloud):
  env, calls = fake_gcloud
  result = _run(["run", "--", *TRAIN_ARGS], {**env, "DRY_RUN": "1"})
  assert result.returncode == 0, result.stderr
  [line] = result.stdout.splitlines()
  assert line.startswith("gcloud compute tpus tpu-vm ssh pod ")
  for expected in ("--worker=all", "--zone=us-central2-b", "EFFCOMP_DISTRIBUTED=1",
                   "experiments/train.py", "--config=configs/demo.py", "--workdir=gs://b/x"):
    assert expected in line
  assert calls() == []
  # The printed line is a command one can paste: it parses back into the same call.
  argv = shlex.split(line)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert _flag(argv, "command").startswith("cd ~/effcomp && EFFCOMP_DISTRIBUTED=1 ")


def test_run_hands_train_args_unchanged_to_every_worker(fake_gcloud, tmp_path):
  env, calls = fake_gcloud
  tricky = ["--config=configs/demo.py:model=mlp", "--workdir=gs://b/x y",
            "--config.data.name=it's", "--config.train.steps=5;echo pwned"]
  result = _run(["run", "--", *tricky], {**env, "TRAIN_ENV": "FOO=bar"})
  assert result.returncode == 0, result.stderr
  [call] = calls()
  assert call[:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in call
  # Run the remote command as a worker's shell would, with a stand-in for the venv's python.
  home = tmp_path / "home"
  _executable(home / "effcomp" / ".venv" / "bin" / "python", FAKE_PYTHON)
  worker = subprocess.run(["bash", "-c", _flag(call, "command")], env={**env, "HOME": str(home)},
                          capture_output=True, text=True, check=True)
  seen = json.loads(worker.stdout)
  assert seen["argv"] == ["experiments/train.py", *tricky]
  assert seen["cwd"] == str(home / "effcomp")
  assert seen["env"]["EFFCOMP_DISTRIBUTED"] == "1" and seen["env"]["FOO"] == "bar"


def test_create_makes_the_slice_only_when_missing(fake_gcloud):
  env, calls = fake_gcloud
  assert _run(["create"], env).returncode == 0
  describe, create = calls()
  assert describe[:5] == ["compute", "tpus", "tpu-vm", "describe", "pod"]
  assert create[:5] == ["compute", "tpus", "tpu-vm", "create", "pod"]
  assert {"--zone=us-central2-b", "--accelerator-type=v4-32",
          "--version=tpu-ubuntu2204-base"} <= set(create)

  result = _run(["--accelerator-type=v5p-16", "--project=proj", "create"],
                {**env, "FAKE_DESCRIBE_STATUS": "0"})
  assert result.returncode == 0 and "reusing" in result.stderr
  assert calls()[2:] == [["compute", "tpus", "tpu-vm", "describe", "pod", "--zone=us-central2-b",
                          "--project=proj", "--format=value(state)"]]


def test_setup_copies_the_working_tree_and_installs_jax_tpu_on_all_workers(fake_gcloud, tmp_path):
  env, calls = fake_gcloud
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  shutil.copy(TPU_POD, repo / "launch" / "tpu_pod.sh")
  (repo / "train.py").write_text("committed\n")
  git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)
  git("init", "-q")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
      "commit", "-q", "-m", "init")
  (repo / "train.py").write_text("changed, not committed\n")
  (repo / "scratch.txt").write_text("untracked\n")

  result = _run(["setup"], env, script=str(repo / "launch" / "tpu_pod.sh"))
  assert result.returncode == 0, result.stderr
  assert "1 untracked file" in result.stderr
  scp, ssh = calls()
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
  assert "pip install -q -c constraints.txt -e . 'jax[tpu]==0.10.2'" in _flag(ssh, "command")
  head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                        text=True, check=True).stdout.strip()
  assert f"echo {head}-dirty > .effcomp_commit" in _flag(ssh, "command")  # the runs' record
  with tarfile.open(tmp_path / "scp_copy.tar.gz") as tar:
    assert tar.extractfile("train.py").read() == b"changed, not committed\n"
    assert "scratch.txt" not in tar.getnames()
  assert not os.path.exists(scp[4])  # the local tarball is removed afterwards


@pytest.mark.parametrize("args, env_update, message", [
    ([], {}, "missing subcommand"),
    (["run", "--", *TRAIN_ARGS], {"NAME": ""}, "missing --name"),
    (["create"], {"ZONE": ""}, "missing --zone"),
    (["run", "--", "--config=configs/demo.py"], {}, "needs --workdir"),
    (["run", "--", "--workdir=gs://b/x"], {}, "needs --config"),
    (["start"], {}, "unknown argument 'start'"),
    (["create", "--", "--config=x"], {}, "for 'run' only"),
])
def test_missing_or_wrong_arguments_are_usage_errors(fake_gcloud, args, env_update, message):
  env, calls = fake_gcloud
  result = _run(args, {**env, **env_update, "DRY_RUN": "1"})
  assert result.returncode == 2
  assert message in result.stderr and "usage: launch/tpu_pod.sh" in result.stderr
  assert result.stdout == "" and calls() == []


def test_help_lists_subcommands():
  result = subprocess.run(["bash", TPU_POD, "--help"], capture_output=True, text=True)
  assert result.returncode == 0
  for word in ("create", "setup", "run", "delete", "DRY_RUN", "ACCELERATOR_TYPE"):
    assert word in result.stdout


def test_slurm_script_asks_for_two_nodes_of_eight_gpus_and_uses_srun():
  text = open(SLURM).read()
  directives = [l for l in text.splitlines() if l.startswith("#SBATCH")]
  for expected in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8"):
    assert any(expected in d for d in directives), expected
  assert "\nsrun " in text and "EFFCOMP_DISTRIBUTED=1" in text
  assert "'jax[cuda12]==0.10.2'" in text and "sbatch launch/slurm.sbatch" in text


def test_slurm_task_runs_train_py_with_all_node_gpus(tmp_path):
  # A stand-in `srun` starts the job step's command once, as one task of a node with 8 GPUs.
  bin_dir = tmp_path / "bin"
  _executable(bin_dir / "srun", '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                                'SLURM_GPUS_ON_NODE=8 exec "$@"\n')
  python = _executable(tmp_path / "python", FAKE_PYTHON)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": python,
         "SLURM_SUBMIT_DIR": ROOT}
  result = _run(["--config=configs/demo.py", "--workdir=/shared/x y"], env, script=SLURM,
                cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr
  seen = json.loads(result.stdout)
  assert seen["argv"] == ["experiments/train.py", "--config=configs/demo.py",
                          "--workdir=/shared/x y"]
  assert seen["cwd"] == ROOT
  # jax would otherwise keep only GPU SLURM_LOCALID (= 0) in a one-task-per-node job.
  assert seen["env"] == {"EFFCOMP_DISTRIBUTED": "1", "JAX_LOCAL_DEVICE_IDS": "0,1,2,3,4,5,6,7",
                         "FOO": None}


def test_slurm_script_without_train_args_is_a_usage_error(tmp_path):
  result = _run([], {**os.environ, "SLURM_SUBMIT_DIR": ROOT}, script=SLURM, cwd=str(tmp_path))
  assert result.returncode == 2 and "usage: sbatch launch/slurm.sbatch" in result.stderr
