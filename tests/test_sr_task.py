"""The super-resolution task: aligned bicubic pairs, augmentation, tiled upscaling, training
through the trainer (with and without a distillation teacher), and the 8-device step."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import run_python, train_losses_on_one_and_eight_devices
from effcomp import config as config_lib
from effcomp import runs
from effcomp.data import imresize
from effcomp.models.sr import EDSR
from effcomp.tasks import sr
from effcomp.train import metrics_writer

TINY = {"model.n_resblocks": 1, "model.n_feats": 8}
RUN = {"train.batch_size": 4, "train.progress_bar": False, "train.log_every": 5,
       "train.eval_every": 0, "checkpoint.async_save": False, "task.patch_size": 24,
       "task.eval_patch": 48, "eval.batch_size": 3}


def _image(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_pair_is_the_window_of_the_whole_images_lr(scale):
  image = _image(61, 75)
  whole = imresize.bicubic_degrade(sr.modcrop(image, scale), scale)
  size = 12 * scale
  h, w = whole.shape[0] * scale, whole.shape[1] * scale
  for top, left in [(0, 0), (scale, 2 * scale), (h - size, 0), (2 * scale, w - size),
                    (h - size, w - size)]:
    pair = sr.bicubic_pair(image, top, left, size, scale)
    np.testing.assert_array_equal(pair["hr"], image[top:top + size, left:left + size])
    np.testing.assert_array_equal(
        pair["lr"], whole[top // scale:(top + size) // scale, left // scale:(left + size) // scale])


def test_bicubic_pair_rejects_unaligned_or_outside_patches():
  with pytest.raises(ValueError, match="multiples of scale"):
    sr.bicubic_pair(_image(20, 20), 1, 0, 8, 2)
  with pytest.raises(ValueError, match="does not fit"):
    sr.bicubic_pair(_image(21, 20), 14, 0, 8, 2)


def test_dihedral_gives_eight_distinct_transforms_that_commute_with_bicubic():
  hr = _image(16, 16)
  outs = {sr.dihedral(hr, k).tobytes() for k in range(8)}
  assert len(outs) == 8
  for k in range(8):  # LR of the transformed HR = the transformed LR (symmetric kernel)
    np.testing.assert_array_equal(imresize.bicubic_degrade(sr.dihedral(hr, k), 2),
                                  sr.dihedral(imresize.bicubic_degrade(hr, 2), k))


def _task_config(**changes):
  c = sr.task_defaults()
  c.update({"patch_size": 24, **changes})
  return c


@pytest.mark.parametrize("degradation", ["bicubic", "realesrgan"])
def test_random_pairs_are_shaped_and_reproducible(degradation):
  c = _task_config(scale=4, degradation=degradation)
  image = _image(70, 90)
  a = sr.random_pair(image, np.random.default_rng(3), c)
  b = sr.random_pair(image, np.random.default_rng(3), c)
  assert a["hr"].shape == (24, 24, 3) and a["lr"].shape == (6, 6, 3)
  assert a["hr"].dtype == a["lr"].dtype == np.uint8
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  other = sr.random_pair(image, np.random.default_rng(4), c)
  assert not np.array_equal(a["hr"], other["hr"])


def test_center_pair_and_errors():
  c = _task_config(scale=3, eval_patch=30)
  pair = sr.center_pair(_image(50, 41), c)
  assert pair["hr"].shape == (30, 30, 3) and pair["lr"].shape == (10, 10, 3)
  whole = sr.center_pair(_image(50, 41), _task_config(scale=3, eval_patch=0))
  assert whole["hr"].shape == (48, 39, 3) and whole["lr"].shape == (16, 13, 3)
  with pytest.raises(ValueError, match="patch_size"):
    sr.random_pair(_image(20, 20), np.random.default_rng(0), _task_config(patch_size=30))
  with pytest.raises(ValueError, match="patch_size"):
    sr.check_config(_task_config(scale=4, patch_size=30))
  with pytest.raises(ValueError, match="degradation"):
    sr.check_config(_task_config(degradation="jpeg"))


def test_tiled_upscale_equals_one_pass():
  model = EDSR(scale=2, n_resblocks=1, n_feats=8)
  lr = _image(37, 29)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  whole = sr.upscale(model, variables, lr)
  tiled = sr.upscale(model, variables, lr, tile=16, overlap=6)  # overlap ≥ receptive radius
  assert whole.shape == (74, 58, 3) and whole.dtype == np.uint8
  np.testing.assert_array_equal(tiled, whole)
  with pytest.raises(ValueError, match="overlap"):
    sr.upscale(model, variables, lr, tile=16, overlap=8)


def test_quantize_is_tensor2img():
  x = jnp.array([-0.2, 0.0, 0.6 / 255, 0.9999, 1.3])  # round half to even, as numpy
  np.testing.assert_array_equal(sr.quantize(x), [0, 0, 1, 255, 255])


def _config(steps, **overrides):
  return config_lib.load(f"configs/sr_photos.py:model=edsr,steps={steps}",
                         **{**TINY, **RUN, **overrides})


@pytest.mark.slow  # two minutes of training on 2 cores: `make test-slow`
def test_training_improves_psnr_and_distillation_runs(tmp_path, data_dir):
  del data_dir
  teacher = str(tmp_path / "teacher")
  start = runs.train(_config(1, **{"optimizer.lr": 0.0}), str(tmp_path / "init"))
  trained = runs.train(_config(60, **{"optimizer.lr": 2e-3}), teacher)
  assert trained["eval"]["psnr"] > start["eval"]["psnr"] + 3, (start, trained)
  assert 0 < trained["eval"]["ssim"] <= 1
  # The entry points: whole-image PSNR/SSIM of the test photos, and upscaling a file.
  out = run_python(["experiments/evaluate.py", "--config=configs/sr_photos.py:model=edsr",
                    f"--workdir={teacher}", "--test_sets=photos", "--tile=64",
                    *[f"--config.{k}={v}" for k, v in TINY.items()]])
  result = json.loads(out.stdout[out.stdout.index("{"):])["photos"]
  assert result["images"] == 3 and 20 < result["psnr"] < 60 and 0 < result["ssim"] <= 1
  photo, upscaled, side = (str(tmp_path / n) for n in ("in.jpg", "out.png", "side.png"))
  Image.fromarray(_image(30, 41)).save(photo)
  run_python(["experiments/upscale.py", f"--workdir={teacher}", f"--input={photo}",
              f"--output={upscaled}", f"--compare={side}", "--tile=24", "--overlap=4"])
  assert Image.open(upscaled).size == (82, 60) and Image.open(side).size == (164, 60)
  student = runs.train(
      _config(5, **{"task.kd": "output", "teacher.workdir": teacher}), str(tmp_path / "student"))
  rows = metrics_writer.read_jsonl(os.path.join(tmp_path, "student", "metrics.jsonl"))
  assert any("train/kd" in r for r in rows) and np.isfinite(student["eval"]["psnr"])
  # DUKD into a LIPT student, whose training form keeps BatchNorm statistics.
  config = config_lib.load("configs/sr_photos.py:model=lipt,steps=3,kd=dukd",
                           **{**RUN, "model.channels": 8, "model.depth": 2,
                              "teacher.workdir": teacher, "train.log_every": 1})
  lipt = runs.train(config, str(tmp_path / "lipt"))
  rows = metrics_writer.read_jsonl(os.path.join(tmp_path, "lipt", "metrics.jsonl"))
  assert any("train/zoom_in_kd" in r for r in rows) and np.isfinite(lipt["eval"]["psnr"])
  variables = runs.open(str(tmp_path / "lipt")).variables
  means = [v for path, v in flax.traverse_util.flatten_dict(variables["batch_stats"]).items()
           if path[-1] == "mean"]
  assert means and any(float(jnp.abs(m).max()) > 0 for m in means)  # updated from 0


def test_kd_without_a_teacher_is_an_error(tmp_path, data_dir):
  del data_dir
  with pytest.raises(ValueError, match="teacher"):
    runs.train(_config(1, **{"task.kd": "output"}), str(tmp_path / "x"))


@pytest.mark.slow  # end to end, 8 devices, ≈ 35 s: make test-slow
def test_eight_devices_train_sr_like_one(tmp_path, data_dir):
  del data_dir
  overrides = [f"--config.{k}={v}" for k, v in {
      **TINY, **RUN, "train.batch_size": 8, "optimizer.name": "sgd", "optimizer.lr": 0.05,
      "train.log_every": 1}.items()]
  one, eight = train_losses_on_one_and_eight_devices(tmp_path, "configs/sr_photos.py:model=edsr,steps=3", *overrides)
  np.testing.assert_allclose(eight, one, rtol=2e-5)
  assert len(one) == 3
