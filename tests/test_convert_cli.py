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

from effcomp import config as config_lib
from effcomp import runs
from effcomp.convert import adabin, state_dict
from effcomp.data import pipeline
from effcomp.runs import convert
from effcomp.tasks import classification
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
