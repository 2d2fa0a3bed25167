"""The diffusion and autoencoder tasks through the trainer: pixel and latent DiT/U-DiT runs,
sampling to a PNG grid, and the 8-device sharded step."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import run_python, train_args
from effcomp import config as config_lib
from effcomp import runs
from effcomp.models.vae import AutoencoderKL, diffusers_weights
from effcomp.runs import convert
from effcomp.tasks import autoencoder, diffusion
from effcomp.train import metrics_writer

TINY = {"DiT-T/2": {"model.hidden_size": 32, "model.depth": 2, "model.num_heads": 2},
        # The plain MLP FFN compiles in a fraction of the re-parameterized one's time.
        "U-DiT-T": {"model.hidden_size": 16, "model.depth": (1, 1, 1, 1, 1),
                    "model.num_heads": 2, "model.ffn": "mlp"}}
RUN = {"train.batch_size": 32, "eval.batch_size": 40, "train.progress_bar": False,
       "train.log_every": 5, "train.eval_every": 0, "checkpoint.async_save": False,
       "optimizer.lr": 2e-3}


def _config(model, steps, autoencoder_dir="", **overrides):
  arg = f"model={model},steps={steps}" + (f",autoencoder={autoencoder_dir}" if autoencoder_dir else "")
  return config_lib.load(f"configs/diffusion_digits.py:{arg}", **{**TINY[model], **RUN, **overrides})


def _losses(workdir):
  rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return np.array([r["train/loss"] for r in rows if "train/loss" in r])


def test_images_map_to_minus_one_one_and_back():
  images = jnp.asarray(np.arange(0, 256, 5, dtype=np.uint8).reshape(1, 4, 13, 1))
  x = diffusion.to_model_space(images, 0)
  assert float(x.min()) == -1.0 and float(x.max()) == pytest.approx(1.0)
  np.testing.assert_array_equal(diffusion.to_uint8(x), images)
  assert diffusion.to_model_space(images[:, :, :4], 16).shape == (1, 16, 16, 1)


def test_image_grid_places_samples_row_major():
  images = np.stack([np.full((2, 3, 1), i, np.uint8) for i in range(5)])
  grid = diffusion.image_grid(images, rows=2)
  assert grid.shape == (4, 9, 1)
  assert grid[0, 3, 0] == 1 and grid[2, 6, 0] == 0 and grid[3, 0, 0] == 3  # (1,2) is padding


@pytest.mark.parametrize("model", ["DiT-T/2", pytest.param("U-DiT-T", marks=pytest.mark.slow)])
def test_pixel_diffusion_learns_and_samples_a_grid(tmp_path, data_dir, model):
  del data_dir
  summary = runs.train(_config(model, 40), str(tmp_path))
  losses = _losses(str(tmp_path))
  assert losses[-2:].mean() < 0.8 * losses[0], losses  # zero-initialized output: mse 1 at start
  assert np.isfinite(summary["eval"]["loss"]) and summary["eval"]["mse"] < 1.0
  out = str(tmp_path / "grid.png")
  run_python(["experiments/sample.py", f"--config=configs/diffusion_digits.py:model={model}",
              f"--workdir={tmp_path}", "--num_samples=3", "--steps=10", f"--output={out}",
              "--guidance_scale=2", *[f"--config.{k}={v}" for k, v in TINY[model].items()]])
  grid = np.asarray(Image.open(out))
  assert grid.shape == (10 * 16, 3 * 16) and grid.dtype == np.uint8 and grid.std() > 0


def test_flow_objective_trains_and_samples_with_its_own_samplers(tmp_path, data_dir):
  """objective=flow from the same config: velocity loss falls, the model sees t·1000, the
  default sampler is Euler, and a diffusion sampler is refused by name."""
  del data_dir
  config = config_lib.load("configs/diffusion_digits.py:model=DiT-T/2,objective=flow,steps=40",
                           **{**TINY["DiT-T/2"], **RUN})
  assert not config.model.learn_sigma and config.task.flow_time_distribution == "logit_normal"
  runs.train(config, str(tmp_path))
  losses = _losses(str(tmp_path))
  assert losses[-2:].mean() < 0.8 * losses[0], losses  # zero output: E‖ε − x_0‖² ≈ 1.3 at start
  run = runs.open(str(tmp_path))
  seen = []
  spy = type("Spy", (), {"apply": lambda self, v, x, t, y, **kw: seen.append(t) or x})()
  diffusion.denoiser(spy, {}, config.task, jnp.zeros(2, jnp.int32))(
      jnp.zeros((2, 1)), jnp.asarray([0.25, 1.0]))
  np.testing.assert_allclose(seen[0], [250.0, 1000.0])
  labels = jnp.arange(4) % 10
  images = diffusion.sample_images(run.model, run.params, labels, jax.random.key(0),
                                   config=config, steps=6, guidance_scale=2.0)
  heun = diffusion.sample_images(run.model, run.params, labels, jax.random.key(0),
                                 config=config, sampler="heun", steps=3, guidance_scale=2.0)
  assert images.shape == heun.shape == (4, 16, 16, 1) and images.dtype == np.uint8
  assert np.abs(images.astype(int) - heun.astype(int)).mean() < 40  # one ODE, two solvers
  with pytest.raises(ValueError, match="sampler='ddim'.*objective='flow'"):
    diffusion.sample_images(run.model, run.params, labels, jax.random.key(0), config=config,
                            sampler="ddim", steps=4)


def test_learn_sigma_must_agree_between_model_and_task(tmp_path, data_dir):
  del data_dir
  with pytest.raises(ValueError, match="learn_sigma"):
    runs.setup(_config("DiT-T/2", 2, **{"task.learn_sigma": False}))
  with pytest.raises(ValueError, match="flow_time_distribution='beta'"):
    runs.setup(config_lib.load("configs/diffusion_digits.py:model=DiT-T/2,objective=flow",
                               **{**TINY["DiT-T/2"], "task.flow_time_distribution": "beta"}))


@pytest.mark.slow  # end to end, ≈ 45 s: make test-slow
def test_latent_diffusion_trains_on_a_frozen_autoencoder(tmp_path, data_dir):
  del data_dir
  ae_dir, run_dir = str(tmp_path / "ae"), str(tmp_path / "latent")
  ae = runs.train(config_lib.load(
      "configs/autoencoder_small.py:data=digits,steps=30",
      **{**RUN, "train.batch_size": 16, "eval.batch_size": 40, "optimizer.lr": 3e-3}), ae_dir)
  assert ae["eval"]["psnr"] > 8.0, ae["eval"]  # [−1, 1] images: a blank guess is ≈ 6 dB
  config = _config("DiT-T/2", 20, ae_dir)
  summary = runs.train(config, run_dir)
  assert np.isfinite(summary["eval"]["loss"])
  run = runs.open(run_dir)
  vae = run.teacher()
  assert run.model.in_channels == 4 and run.model.input_size == 8 and vae.task == "autoencoder"
  images = diffusion.sample_images(run.model, run.params, jnp.arange(4),
                                   jnp.asarray([0, 1], jnp.uint32), config=config, steps=5,
                                   autoencoder=vae.model, autoencoder_variables=vae.variables)
  assert images.shape == (4, 16, 16, 1) and images.dtype == jnp.uint8


def test_autoencoder_patches():
  image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
  patch = autoencoder.random_patch(image, 4, np.random.default_rng(0))
  assert patch.shape == (4, 4, 3)
  np.testing.assert_array_equal(autoencoder.center_patch(image, 4), image[3:7, 4:8])
  with pytest.raises(ValueError, match="crop_size=11"):
    autoencoder.random_patch(image, 11, np.random.default_rng(0))


@pytest.mark.slow  # 8 devices, 40–90 s: make test-slow (keeps make test under 20 minutes)
def test_eight_devices_train_diffusion_like_one(tmp_path, data_dir):
  del data_dir
  # Without the learned-variance VLB term: its t = 0 likelihood (log of CDF differences)
  # turns float reduction-order noise into visible loss differences after a few steps.
  overrides = [f"--config.{k}={v}" for k, v in {
      **TINY["DiT-T/2"], **RUN, "optimizer.name": "sgd", "optimizer.lr": 0.05,
      "train.log_every": 1, "model.learn_sigma": False, "task.learn_sigma": False}.items()]
  config = "configs/diffusion_digits.py:model=DiT-T/2,steps=4"
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  run_python(train_args(one, config, *overrides), devices=1)
  run_python(train_args(eight, config, *overrides, "--config.mesh.data=2", "--config.mesh.fsdp=2",
                        "--config.mesh.tensor=2"), devices=8)
  np.testing.assert_allclose(_losses(eight), _losses(one), rtol=2e-5)
  assert len(_losses(one)) == 4


@pytest.mark.slow  # end to end, ≈ 30 s: make test-slow (loading: tests/test_vae.py)
def test_imported_diffusers_autoencoder_is_a_latent_teacher(tmp_path, data_dir):
  """experiments/import_vae.py: a diffusers folder becomes a run a diffusion config uses."""
  del data_dir
  vae = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 8),
                      layers_per_block=1, latent_channels=4, norm_num_groups=4,
                      scaling_factor=0.5)
  params = vae.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
  folder, ae_dir = str(tmp_path / "diffusers"), str(tmp_path / "imported")
  diffusers_weights.save(folder, vae, params)
  run_python(["experiments/import_vae.py", f"--diffusers={folder}", f"--workdir={ae_dir}"])
  with pytest.raises(FileExistsError, match="already holds a run"):
    convert.import_diffusers_vae(folder, ae_dir)
  run_dir = str(tmp_path / "latent")
  runs.train(_config("DiT-T/2", 2, ae_dir), run_dir)
  restored = runs.open(run_dir).teacher()
  assert restored.model.scaling_factor == 0.5
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
