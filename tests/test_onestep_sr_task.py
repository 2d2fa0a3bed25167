"""One-step diffusion SR distilled from a diffusion_sr teacher: the student starts as the
teacher, each method's loss terms train, upscaling, config errors, and the 8-device step."""

import os

import jax
import numpy as np
import pytest

from conftest import train_losses_on_one_and_eight_devices, upscaled_size
from effcomp import config as config_lib
from effcomp import runs
from effcomp.tasks import onestep_sr
from effcomp.train import metrics_writer

TINY = {"model.model_channels": 8, "model.channel_mult": (1, 2), "model.swin_embed_dim": 16,
        "model.swin_depth": 1, "model.num_head_channels": 8, "model.norm_groups": 4,
        "model.window_size": 4}
RUN = {"train.batch_size": 4, "train.progress_bar": False, "train.log_every": 1,
       "train.eval_every": 0, "checkpoint.async_save": False, "task.patch_size": 32,
       "task.eval_patch": 32, "eval.batch_size": 3}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_dir):
  """A tiny DiT-SR diffusion_sr run (4 steps of the process) to distill."""
  del data_dir
  workdir = str(tmp_path_factory.mktemp("teacher") / "dit_sr")
  runs.train(config_lib.load("configs/ditsr_photos.py:steps=2",
                             **{**TINY, **RUN, "task.steps": 4}), workdir)
  return workdir


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
  """A stand-in ESS encoder run (configs/stand_in_encoder.py, 2 steps)."""
  workdir = str(tmp_path_factory.mktemp("encoder") / "cnn")
  runs.train(config_lib.load("configs/stand_in_encoder.py:steps=2,size=32",
                             **{"train.progress_bar": False, "train.batch_size": 4}), workdir)
  return "run:" + workdir


def _config(teacher, method, steps, **overrides):
  return config_lib.load(f"configs/onestep_sr.py:method={method},teacher={teacher},steps={steps}",
                         **{**RUN, **overrides})


def test_the_student_starts_as_the_teacher(tmp_path, teacher):
  workdir = str(tmp_path / "regress")
  runs.train(_config(teacher, "regress", 1, **{"optimizer.lr": 0.0, "train.ema_decay": 0.0,
                                               "eval.use_ema": False}), workdir)
  student, master = runs.open(workdir), runs.open(teacher)
  assert student.task == "onestep_sr"
  jax.tree.map(np.testing.assert_array_equal, student.params, master.params)


TERMS = {"teacher", "hr", "hsd", "gan", "disc", "ess", "hfp", "estimator", "balance"}


@pytest.mark.parametrize("method,terms", [
    pytest.param("regress", {"teacher"}, marks=pytest.mark.slow),
    pytest.param("hr", {"hr"}, marks=pytest.mark.slow),
    ("tadsr", {"teacher", "hsd", "gan", "disc"}),
    ("vpdsr", {"teacher", "ess", "hfp", "gan", "disc"}),
    ("mor", {"hr", "hsd", "estimator", "balance"})])
def test_each_method_trains_its_terms_and_upscales(tmp_path, teacher, encoder, method, terms):
  workdir = str(tmp_path / method)
  summary = runs.train(_config(teacher, method, 2, **{"task.ess_encoder": encoder}), workdir)
  assert 5 < summary["eval"]["psnr"] < 40 and 0 < summary["eval"]["ssim"] <= 1
  rows = [r for r in metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train/loss" in r]
  logged = {k[len("train/"):] for k in rows[0]} & TERMS
  assert logged == terms and len(rows) == 2
  assert all(np.isfinite(r["train/loss"]) for r in rows)
  if method in ("tadsr", "mor"):  # the student alone upscales (the discriminator rides along)
    assert upscaled_size(tmp_path, workdir, (13, 21)) == (84, 52)
  if method == "mor":
    run = runs.open(workdir)
    student = onestep_sr.make_student(run.model, run.params, run.config)
    y = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
    out, info = student.with_info(y, jax.random.key(1))
    assert out.shape == y.shape and info["severity"].shape == (2, 3)
    c = run.config.task
    assert np.all((c.mor_shared + 1 <= info["active"]) & (info["active"] <= c.mor_shared
                                                           + c.mor_top_k))
    master = runs.open(teacher)  # the base stays the teacher's (up to the EMA's rounding)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7),
                 {k: v for k, v in run.params.items() if k != "mor"}, master.params)


def test_config_errors_name_the_field(tmp_path, teacher):
  with pytest.raises(ValueError, match="kappa"):
    runs.setup(_config(teacher, "regress", 1, **{"task.kappa": 1.0}))
  with pytest.raises(ValueError, match="hsd_target"):
    runs.setup(_config(teacher, "tadsr", 1, **{"task.hsd_target": "noise"}))
  with pytest.raises(ValueError, match="method"):
    _config(teacher, "sinsr", 1)
  with pytest.raises(FileNotFoundError, match="config.json"):
    _config(str(tmp_path / "nothing"), "regress", 1)


@pytest.mark.slow  # ≈ 2.5 min each: make test-slow (keeps make test under 20 minutes)
@pytest.mark.parametrize("method", ["tadsr", "mor"])
def test_eight_devices_train_like_one(tmp_path, teacher, method):
  overrides = [f"--config.{k}={v}" for k, v in {
      **RUN, "train.batch_size": 8, "optimizer.name": "sgd", "optimizer.lr": 0.05,
      "train.ema_decay": 0.0, "eval.use_ema": False}.items()]
  one, eight = train_losses_on_one_and_eight_devices(
      tmp_path, f"configs/onestep_sr.py:method={method},teacher={teacher},steps=2", *overrides)
  np.testing.assert_allclose(eight, one, rtol=2e-5)
  assert len(one) == 2
