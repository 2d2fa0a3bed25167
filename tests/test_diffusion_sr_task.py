"""The diffusion SR task: training through the trainer, the teacher API, upscaling a file,
and the 8-device step."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import train_losses_on_one_and_eight_devices, upscaled_size
from effcomp import config as config_lib
from effcomp import runs
from effcomp.tasks import diffusion_sr
from effcomp.train import metrics_writer

TINY = {"model.model_channels": 8, "model.channel_mult": (1, 2), "model.swin_embed_dim": 16,
        "model.swin_depth": 1, "model.num_head_channels": 8, "model.norm_groups": 4,
        "model.window_size": 4}
RUN = {"train.batch_size": 4, "train.progress_bar": False, "train.log_every": 1,
       "train.eval_every": 0, "checkpoint.async_save": False, "task.patch_size": 32,
       "task.eval_patch": 32, "task.steps": 4, "eval.batch_size": 3}


def _config(steps, model="dit_sr", **overrides):
  return config_lib.load(f"configs/ditsr_photos.py:model={model},steps={steps}",
                         **{**TINY, **RUN, **overrides})


def test_eval_pairs_are_fixed_per_image_and_config_errors():
  c = diffusion_sr.task_defaults()
  c.eval_patch = 32
  image = np.random.default_rng(0).integers(0, 256, (50, 60, 3), np.uint8)
  a, b = diffusion_sr.eval_pair(image, c), diffusion_sr.eval_pair(image, c)
  assert a["hr"].shape == (32, 32, 3) and a["lr"].shape == (8, 8, 3)
  np.testing.assert_array_equal(a["lr"], b["lr"])
  c.degradation = "bicubic"
  assert not np.array_equal(diffusion_sr.eval_pair(image, c)["lr"], a["lr"])
  with pytest.raises(ValueError, match="patch_size"):
    runs.setup(_config(1, **{"task.patch_size": 36}))
  with pytest.raises(ValueError, match="prediction"):
    runs.setup(_config(1, **{"task.prediction": "v"}))


@pytest.mark.slow  # ≈ 1 min each: make test-slow (keeps make test under 20 minutes)
@pytest.mark.parametrize("model", ["dit_sr", "resshift_unet"])
def test_training_runs_and_the_teacher_api(tmp_path, data_dir, model):
  del data_dir
  workdir = str(tmp_path / model)
  extra = {"model.num_res_blocks": 1} if model == "resshift_unet" else {}
  summary = runs.train(_config(3, model, **extra), workdir)
  assert 5 < summary["eval"]["psnr"] < 40 and 0 < summary["eval"]["ssim"] <= 1
  rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert sum("train/mse" in r for r in rows) == 3
  run = runs.open(workdir)
  teacher = diffusion_sr.make_teacher(run.model, run.params, run.config)
  assert teacher.scale == 4 and teacher.schedule.num_timesteps == 4
  lr = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), np.uint8)
  y = diffusion_sr.upsample_lr(diffusion_sr.to_model_space(jnp.asarray(lr)), 4)
  traj = teacher.trajectory(y, jax.random.key(0))
  assert traj["x_t"].shape == (5, 2, 32, 32, 3) and traj["pred_x0"].shape == (4, 2, 32, 32, 3)
  # The trajectory's x_0 predictions are the teacher's predict_x0 at the visited states
  # (clipped to [−1, 1] by the sampler).
  for i, t in enumerate(np.asarray(traj["t"])):
    np.testing.assert_allclose(
        traj["pred_x0"][i], jnp.clip(teacher.predict_x0(traj["x_t"][i], y, t), -1, 1),
        atol=2e-5)
  np.testing.assert_allclose(traj["x0"], traj["x_t"][-1])
  if model == "dit_sr":  # upscaling a file with the diffusion run, tiled and padded
    assert upscaled_size(tmp_path, workdir, (13, 21)) == (84, 52)


@pytest.mark.slow  # 8 devices, 40–90 s: make test-slow (keeps make test under 20 minutes)
def test_eight_devices_train_like_one(tmp_path, data_dir):
  del data_dir
  overrides = [f"--config.{k}={v}" for k, v in {
      **TINY, **RUN, "train.batch_size": 8, "optimizer.name": "sgd", "optimizer.lr": 0.05,
      "train.ema_decay": 0.0, "eval.use_ema": False}.items()]
  one, eight = train_losses_on_one_and_eight_devices(tmp_path, "configs/ditsr_photos.py:steps=3", *overrides)
  np.testing.assert_allclose(eight, one, rtol=2e-5)
  assert len(one) == 3
