"""The trainer end to end, in process: outputs, NaN guard, corrupt checkpoints,
evaluation from a checkpoint, and a frozen teacher."""

import json
import os

import jax
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.train import checkpoint, metrics_writer, trainer


def _config(steps=12, **overrides):
  base = {"train.progress_bar": False, "train.log_every": 1, "train.eval_every": 0,
          "checkpoint.every_steps": 4, "checkpoint.async_save": False}
  return config_lib.load(f"configs/demo.py:model=mlp,steps={steps}", **{**base, **overrides})


def test_run_writes_every_output_and_learns(tmp_path, data_dir):
  summary = runs.train(_config(steps=60), str(tmp_path))
  assert summary["steps"] == 60 and summary["eval"]["accuracy"] > 0.85
  for name in ("config.json", "runs.jsonl", "metrics.jsonl", "curves.png", "summary.json"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  run = json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[0])
  assert run["seed"] == 0 and run["versions"]["jax"] == jax.__version__ and run["commit"]
  rows = metrics_writer.read_jsonl(str(tmp_path / "metrics.jsonl"))
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 60 and losses[-1] < losses[0] / 3
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [52, 56, 60]


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, data_dir):
  # lr 1e38: step 1's update is finite but enormous, so step 2's loss overflows.
  config = _config(**{"optimizer.lr": 1e38, "optimizer.schedule": "constant",
                      "optimizer.warmup_steps": 0, "checkpoint.every_steps": 1})
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step 2 .*last good checkpoint: step 1"):
    runs.train(config, str(tmp_path))
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [1]


def test_nonfinite_skip_policy_finishes_and_counts_skipped_steps(tmp_path, data_dir):
  config = _config(**{"optimizer.lr": 1e38, "optimizer.schedule": "constant",
                      "optimizer.warmup_steps": 0, "train.nonfinite": "skip"})
  summary = runs.train(config, str(tmp_path))
  assert summary["steps"] == 12 and summary["skipped_steps"] == 11


def _corrupt(step_dir):
  """Truncates every array data file of a checkpoint step to half its size."""
  corrupted = 0
  for root, _, files in os.walk(step_dir / "state"):
    for f in files:
      path = os.path.join(root, f)
      if "d" == os.path.basename(root) or f.startswith("ocdbt") or "manifest" in f:
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
          fh.truncate(size // 2)
        corrupted += 1
  assert corrupted, f"no array files found under {step_dir}"


def test_corrupt_checkpoint_is_an_error_naming_the_step_then_falls_back_if_asked(tmp_path, data_dir):
  runs.train(_config(steps=8), str(tmp_path))
  step_dir = tmp_path / "checkpoints" / "8"
  _corrupt(step_dir)
  before = sorted((p.relative_to(step_dir), p.read_bytes()) for p in step_dir.rglob("*") if p.is_file())
  with pytest.raises(checkpoint.CorruptCheckpointError, match="checkpoint step 8 .*fallback_to_previous"):
    runs.train(_config(steps=12), str(tmp_path))
  after = sorted((p.relative_to(step_dir), p.read_bytes()) for p in step_dir.rglob("*") if p.is_file())
  assert before == after  # the bad step is never overwritten
  summary = runs.train(
      _config(steps=12, **{"checkpoint.fallback_to_previous": True}), str(tmp_path))
  assert summary["resumed_from"] == 4 and summary["steps"] == 12
  quarantined = tmp_path / "checkpoints" / "8.corrupt"
  assert sorted((p.relative_to(quarantined), p.read_bytes())
                for p in quarantined.rglob("*") if p.is_file()) == before


def test_evaluate_checkpoint_matches_the_final_eval(tmp_path, data_dir, monkeypatch):
  config = _config(steps=20)
  monkeypatch.chdir(tmp_path)  # a relative workdir (orbax itself needs absolute paths)
  summary = runs.train(config, "run")
  result = runs.evaluate(config, "run")
  tmp_path = tmp_path / "run"
  assert result["step"] == 20
  np.testing.assert_allclose(result["eval"]["accuracy"], summary["eval"]["accuracy"])
  assert (tmp_path / "eval_step20.json").exists()


def test_distillation_uses_a_frozen_teacher(tmp_path, data_dir):
  teacher_dir = tmp_path / "teacher"
  teacher = runs.train(_config(steps=40), str(teacher_dir))
  config = _config(steps=30, **{"task.distill_weight": 1.0, "teacher.workdir": str(teacher_dir)})
  config.unlock()
  config.teacher.model = config.model.copy_and_resolve_references()
  config.model.widths = (32,)
  config.lock()
  student = runs.train(config, str(tmp_path / "student"))
  rows = metrics_writer.read_jsonl(str(tmp_path / "student" / "metrics.jsonl"))
  kd = [r["train/distillation"] for r in rows if "train/distillation" in r]
  assert len(kd) == 30 and np.mean(kd[-5:]) < 0.9 * np.mean(kd[:5])
  # The teacher's checkpoint is read, not trained: its files are unchanged.
  assert checkpoint.Checkpointer(str(teacher_dir / "checkpoints")).all_steps()[-1] == 40
  assert student["steps"] == 30 and teacher["steps"] == 40


def test_run_records_fall_back_to_the_launch_scripts_commit_file(tmp_path):
  from effcomp.train import run_info
  assert run_info.git_commit(str(tmp_path)) == "unknown"  # no .git, no record
  (tmp_path / run_info.COMMIT_FILE).write_text("abc123-dirty\n")
  assert run_info.git_commit(str(tmp_path)) == "abc123-dirty"
  assert len(run_info.git_commit().split("+")[0]) == 40  # this checkout: a real commit


def test_restore_variables_missing_ok_reads_the_stored_part_and_checks_shapes(tmp_path):
  stored = {"params": {"a": {"k": np.arange(6.0).reshape(2, 3)}, "b": np.ones(4)}}
  checkpoint.save_variables(str(tmp_path / "run"), stored, ema=True)
  abstract = lambda shape: jax.ShapeDtypeStruct(shape, np.float32)
  target = {"params": {"a": {"k": abstract((2, 3)), "new": abstract((5,))}, "b": abstract((4,)),
                       "c": {"d": abstract((1,))}}}
  with pytest.raises(ValueError, match="lacks 2 of the variables asked for: /params/a/new, "
                     "/params/c"):
    checkpoint.restore_variables(str(tmp_path / "run"), target)
  got = checkpoint.restore_variables(str(tmp_path / "run"), target, ema=True, missing_ok=True)
  assert jax.tree.structure(got) == jax.tree.structure(stored)
  np.testing.assert_array_equal(got["params"]["a"]["k"], stored["params"]["a"]["k"])
  target["params"]["b"] = abstract((3,))
  with pytest.raises(ValueError, match="/b at shape \\(4,\\); expected \\(3,\\)"):
    checkpoint.restore_variables(str(tmp_path / "run"), target, missing_ok=True)
