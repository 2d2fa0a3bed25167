"""The paper-recipe configs run end to end on small fake CIFAR-10 / ImageNet files."""

import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.train import metrics_writer
from tests.test_data_builders import _fake_cifar_batches, _write_fake_cifar, _write_fake_imagenet

FAST = {"train.progress_bar": False, "train.log_every": 1, "train.eval_every": 0,
        "checkpoint.async_save": False}


@pytest.fixture
def cifar_dirs(tmp_path):
  _write_fake_cifar(tmp_path / "manual", _fake_cifar_batches(np.random.default_rng(0)),
                    as_archive=True)
  return {"data.data_dir": str(tmp_path / "data"), "data.manual_dir": str(tmp_path / "manual")}


@pytest.mark.parametrize("spec", ["configs/adabin_resnet20_cifar10.py",
                                  "configs/adabin_vggsmall_cifar10.py:method=reactnet"])
def test_cifar10_recipes_train_on_fake_cifar(tmp_path, cifar_dirs, spec):
  config = config_lib.load(spec, **FAST, **cifar_dirs, **{
      "train.steps": 2, "train.batch_size": 8, "eval.batch_size": 4,
      "checkpoint.every_steps": 2})
  assert config.optimizer.name == "sgd" and config.optimizer.lr == 0.1
  assert config.task.augment == "flip_crop"
  summary = runs.train(config, str(tmp_path / "run"))
  assert summary["steps"] == 2 and 0.0 <= summary["eval"]["accuracy"] <= 1.0


@pytest.mark.slow  # three chained runs, over a minute on 2 cores: `make test-slow`
def test_imagenet_two_step_recipe_chains_teacher_step1_step2(tmp_path):
  _write_fake_imagenet(tmp_path / "manual", np.random.default_rng(0))
  common = {**FAST, "data.data_dir": str(tmp_path / "data"), "data.manual_dir": str(tmp_path / "manual"),
            "data.num_workers": 0, "train.steps": 2, "train.batch_size": 4, "eval.batch_size": 2,
            "task.image_size": 32, "checkpoint.every_steps": 2}
  base = "configs/adabin_resnet18_imagenet.py"
  teacher = runs.train(config_lib.load(f"{base}:method=none", **common),
                                       str(tmp_path / "teacher"))
  step1 = runs.train(
      config_lib.load(f"{base}:stage=1", **common, **{"teacher.workdir": str(tmp_path / "teacher")}),
      str(tmp_path / "step1"))
  config2 = config_lib.load(f"{base}:stage=2", **common, **{  # another seed: another fresh init
      "teacher.workdir": str(tmp_path / "teacher"), "init.workdir": str(tmp_path / "step1"),
      "seed": 1})
  step2 = runs.train(config2, str(tmp_path / "step2"))
  assert teacher["steps"] == step1["steps"] == step2["steps"] == 2
  # Step 2 starts from step 1's weights: after two small Adam updates it is still far closer
  # to them than its own fresh initialization is.
  p1 = step1["state"].params["stage0_block0"]["conv1"]["kernel"]
  p2 = step2["state"].params["stage0_block0"]["conv1"]["kernel"]
  fresh = runs.setup(config2).state.params["stage0_block0"]["conv1"]["kernel"]
  assert float(np.abs(p2 - p1).mean()) < 0.2 * float(np.abs(fresh - p1).mean())
  rows = metrics_writer.read_jsonl(str(tmp_path / "step2" / "metrics.jsonl"))
  assert all("train/distillation" in r for r in rows if "train/loss" in r)


def test_recipe_arguments_are_checked():
  with pytest.raises(ValueError, match="method='ternary'"):
    config_lib.load("configs/adabin_resnet20_cifar10.py:method=ternary")
  with pytest.raises(ValueError, match="depth=50"):
    config_lib.load("configs/adabin_resnet18_imagenet.py:depth=50")
