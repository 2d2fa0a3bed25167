"""experiments/convert.py (effcomp.runs.convert): an official-layout AdaBin checkpoint
(written here with torch) becomes a run that evaluate.py and export.py read; errors name
what does not fit; existing runs are never overwritten."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from effcomp import config as config_lib
from effcomp import runs
from effcomp.convert import adabin, basicsr, dit, state_dict
from effcomp.data import pipeline
from effcomp.runs import convert, sample, upscale
from effcomp.runs.run import abstract_variables
from effcomp.tasks import classification, sr
from tests.conftest import run_python
from tests.test_data_builders import _fake_cifar_batches, _write_fake_cifar

CONFIG = "configs/adabin_resnet20_cifar10.py:official=true"


@pytest.fixture
def official(tmp_path, data_dir):
  """(checkpoint path, overrides): random ResNet-20 weights in the official file layout
  ({'state_dict': DataParallel keys, 'best_prec1'}) and fake CIFAR-10 files."""
  del data_dir
  _write_fake_cifar(tmp_path / "manual", _fake_cifar_batches(np.random.default_rng(0)),
                    as_archive=True)
  overrides = {"data.data_dir": str(tmp_path / "data"), "data.manual_dir": str(tmp_path / "manual"),
               "eval.batch_size": 6}
  config = config_lib.load(CONFIG, **overrides)
  model = runs.build_model(config.model, "float32")
  variables = nn.unbox(model.init(jax.random.key(3), jnp.zeros((1, 32, 32, 3))))
  variables = jax.tree.map(lambda v: v + 0.05 * jax.random.normal(jax.random.key(4), v.shape),
                           variables)  # BatchNorm away from the identity
  tensors = state_dict.to_state_dict(variables, adabin.name_map(model))
  tensors.update({k.replace("running_var", "num_batches_tracked"): np.array(100)
                  for k in list(tensors) if k.endswith("running_var")})  # as PyTorch saves
  path = tmp_path / "model.th"
  torch.save({"state_dict": {f"module.{k}": torch.from_numpy(np.array(v)) for k, v in tensors.items()},
              "best_prec1": torch.tensor(50.0)}, path)
  return str(path), overrides, variables


def _flags(overrides):
  return [f"--config.{k}={v}" for k, v in overrides.items()]


@pytest.mark.slow  # end to end, ≈ 55 s: make test-slow
def test_converted_checkpoint_is_a_run_that_evaluates_and_exports(tmp_path, official):
  path, overrides, variables = official
  workdir = str(tmp_path / "run")
  args = ["experiments/convert.py", "--source=adabin", f"--checkpoint={path}",
          f"--config={CONFIG}", f"--workdir={workdir}", *_flags(overrides)]
  out = run_python(args).stdout
  assert "unused official tensors (20)" in out and "unfilled effcomp leaves (0)" in out
  provenance = json.loads((tmp_path / "run" / convert.CONVERTED_FILE).read_text())
  assert provenance["source"] == "adabin" and len(provenance["sha256"]) == 64
  run = runs.open(workdir)
  for a, b in zip(jax.tree.leaves(run.variables), jax.tree.leaves(variables)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  # evaluate.py reads the converted run: its accuracy is the model's on the test split,
  # with the official input normalization.
  result = run_python(["experiments/evaluate.py", f"--config={CONFIG}", f"--workdir={workdir}",
                       *_flags(overrides)]).stdout
  accuracy = json.loads(result[result.index("{"):])["eval"]["accuracy"]
  config = config_lib.load(CONFIG, **overrides)
  source = runs.build_task(config).eval_source
  batch = pipeline.read_batch(source, list(range(len(source))), None)
  logits = run.model.apply(run.variables, classification.inputs_fn(config)(batch["image"]))
  assert accuracy == pytest.approx(float(np.mean(np.argmax(logits, -1) == batch["label"])))
  # export.py packs the converted binary network.
  out = run_python(["experiments/export.py", f"--config={CONFIG}", f"--workdir={workdir}",
                    *_flags(overrides)]).stdout
  assert "argmax agreement  1.0000" in out
  # Never overwritten.
  again = run_python(args, check=False)
  assert again.returncode == 2 and "already holds a run" in again.stderr


def test_bad_sources_models_and_mismatched_checkpoints_are_errors(tmp_path, official):
  path, overrides, _ = official
  config = lambda spec=CONFIG, **extra: config_lib.load(spec, **overrides, **extra)
  with pytest.raises(ValueError, match="adabin_act_form='official'"):
    convert.import_checkpoint("adabin", path, config(**{"model.adabin_act_form": "paper"}),
                              str(tmp_path / "a"))
  with pytest.raises(ValueError, match=r"bnn_resnet20 \(CIFAR\)"):
    convert.import_checkpoint("adabin", path, config("configs/adabin_vggsmall_cifar10.py"),
                              str(tmp_path / "b"))
  with pytest.raises(ValueError, match="--source='nope': expected one of"):
    convert.import_checkpoint("nope", path, config(), str(tmp_path / "c"))
  with pytest.raises(ValueError, match=r"linear.weight \(10, 64\) → \(64, 10\) ≠ "
                                       r"params/head/kernel \(64, 7\)"):
    convert.import_checkpoint("adabin", path, config(**{"model.num_classes": 7}),
                              str(tmp_path / "d"))
  assert not any((tmp_path / n).exists() for n in "abcd")  # nothing written on failure


def _official_file(tmp_path, converter, config, name="official.pth"):
  """(path, variables): random variables of `config`'s model in `converter`'s official file
  layout, as a bare state dict."""
  model = runs.build_model(config.model, "float32")
  template = abstract_variables(config, model)
  leaves, tree = jax.tree.flatten(nn.unbox(template))
  keys = jax.random.split(jax.random.key(5), len(leaves))
  variables = jax.tree.unflatten(tree, [0.1 * jax.random.normal(k, x.shape)
                                        for k, x in zip(keys, leaves)])
  tensors = state_dict.to_state_dict(variables, converter.name_map(model))
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, tmp_path / name)
  return str(tmp_path / name), variables


def test_converted_sr_and_diffusion_runs_upscale_and_sample(tmp_path, data_dir):
  """upscale.py's and sample.py's acts read converted runs (BasicSR EDSR, official DiT)."""
  del data_dir
  sr_config = config_lib.load("configs/sr_photos.py:model=edsr",
                              **{"model.n_resblocks": 1, "model.n_feats": 8})
  path, variables = _official_file(tmp_path, basicsr, sr_config)
  convert.import_checkpoint("basicsr", path, sr_config, str(tmp_path / "edsr"))
  upscale_fn, scale = upscale.upscaler(runs.open(str(tmp_path / "edsr")))
  lr = np.random.default_rng(0).integers(0, 256, (9, 11, 3), np.uint8)
  model = runs.build_model(sr_config.model, "float32")
  expected = sr.upscale(model, variables, lr)
  np.testing.assert_array_equal(upscale_fn(lr), expected)
  assert expected.shape == (9 * scale, 11 * scale, 3)
  dit_config = config_lib.load("configs/diffusion_digits.py:model=DiT-T/2",
                               **{"model.hidden_size": 32, "model.depth": 1,
                                  "model.num_heads": 2})
  path, _ = _official_file(tmp_path, dit, dit_config, "dit.pt")
  convert.import_checkpoint("dit", path, dit_config, str(tmp_path / "dit"))
  grid = sample.class_grid(runs.open(str(tmp_path / "dit")), str(tmp_path / "grid.png"),
                           num_samples=1, steps="4")
  assert np.asarray(Image.open(grid)).shape == (10 * 16, 16)
