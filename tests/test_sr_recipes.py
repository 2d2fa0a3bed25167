"""The papers' SR and diffusion-SR recipe configs: fields, a DIV2K run on fake files, and
the cost estimate the docstrings quote."""

import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from tests.test_sr_data import _pixels, _save

FAST = {"train.progress_bar": False, "train.log_every": 1, "train.eval_every": 0,
        "checkpoint.async_save": False}


def test_div2k_recipe_trains_on_fake_div2k_files(tmp_path):
  rng = np.random.default_rng(0)
  manual = tmp_path / "manual"
  for folder, name in [("DIV2K_train_HR", "0001"), ("DIV2K_train_HR", "0002"),
                       ("DIV2K_valid_HR", "0801")]:
    _save(manual / folder / f"{name}.png", _pixels(rng, height=120, width=130))
  config = config_lib.load("configs/sr_div2k.py:model=edsr,scale=2", **FAST, **{
      "data.manual_dir": str(manual), "data.data_dir": str(tmp_path / "data"),
      "data.num_workers": 0, "train.steps": 2, "train.batch_size": 2, "eval.batch_size": 1,
      "task.eval_patch": 96, "checkpoint.every_steps": 2, "model.n_resblocks": 1,
      "model.n_feats": 8, "optimizer.milestones": (1,)})
  assert config.task.patch_size == 96 and config.optimizer.schedule == "multistep"
  summary = runs.train(config, str(tmp_path / "run"))
  assert summary["steps"] == 2 and 5 < summary["eval"]["psnr"] < 60


def test_recipe_fields_and_the_quoted_cost():
  swinir = config_lib.load("configs/sr_div2k.py:model=swinir,scale=4")
  assert (swinir.task.patch_size, swinir.train.batch_size, swinir.optimizer.lr) == (256, 64, 2e-4)
  assert swinir.optimizer.milestones == (250_000, 400_000, 450_000, 475_000)
  ditsr = config_lib.load("configs/ditsr_realsr.py:model=resshift_unet")
  assert ditsr.model.name == "resshift_unet" and ditsr.task.patch_size == 256
  assert ditsr.optimizer.lr * ditsr.optimizer.end_lr_factor == pytest.approx(2e-5)
  import importlib.util
  spec = importlib.util.spec_from_file_location("sr_div2k", "configs/sr_div2k.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cost = module.cost("edsr")
  # EDSR-baseline ×2 on a 48² LR patch: 32 body convs + the one after the body (64 → 64),
  # the head (3 → 64), the upsampler (64 → 256) and the tail (64 → 3 at 96²).
  lr, hr = 48 * 48 * 9, 96 * 96 * 9
  macs = 33 * lr * 64 * 64 + lr * 3 * 64 + lr * 64 * 256 + hr * 64 * 3
  assert cost["GMACs / patch"] * 1e9 == pytest.approx(macs, rel=1e-9)
  assert cost["training FLOP"] == pytest.approx(6 * cost["GMACs / patch"] * 1e9 * 16 * 300_000)
  with pytest.raises(ValueError, match="model"):
    config_lib.load("configs/sr_div2k.py:model=vdsr")
