"""Config files, overrides, and the one-line errors for bad values and names."""

import pytest

from effcomp import config as config_lib
from effcomp import models, runs  # noqa: F401  (runs: every task registered)
from effcomp.registry import MODELS, TASKS, Registry
from tests.conftest import run_python, train_args


def _demo(arg=None):
  return config_lib.load("configs/demo.py" + (f":{arg}" if arg else ""))


def test_demo_config_is_locked_and_valid():
  c = _demo()
  config_lib.validate(c)
  with pytest.raises(AttributeError, match="lrr"):
    c.optimizer.lrr = 1.0


def test_config_arg_string_sets_typed_fields():
  c = _demo("model=mlp,steps=7")
  assert c.model.name == "mlp" and c.train.steps == 7


@pytest.mark.parametrize("arg, message", [("size=S", "unknown"), ("steps=abc", "expected int")])
def test_config_arg_errors(arg, message):
  with pytest.raises(ValueError, match=message):
    _demo(arg)


@pytest.mark.parametrize("field, value, message", [
    ("train.steps", 0, "train.steps=0"),
    ("train.nonfinite", "ignore", "nonfinite='ignore'"),
    ("train.grad_accum_steps", 3, "not divisible"),
    ("train.compute_dtype", "float16", "compute_dtype"),
    ("mesh.fsdp", 0, "mesh.fsdp=0"),
])
def test_validate_names_the_bad_field(field, value, message):
  c = _demo()
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(c)


def test_registry_unknown_name_lists_choices():
  with pytest.raises(ValueError, match=r"unknown model 'resnet9000'; valid choices: .*cnn.*mlp"):
    MODELS.get("resnet9000")
  assert "classification" in TASKS.names()
  r = Registry("thing")
  r.register("a")(1)
  with pytest.raises(ValueError, match="twice"):
    r.register("a")(2)


def test_model_unknown_field_lists_valid_fields():
  with pytest.raises(ValueError, match=r"has no field\(s\) depth; valid: .*widths"):
    models.build("mlp", depth=3)


def test_cli_override_applies(tmp_path, data_dir):
  """--config.x=y overrides reach the run (recorded in config.json)."""
  import json
  run_python(train_args(str(tmp_path), "configs/demo.py:model=mlp,steps=3",
                        "--config.optimizer.lr=0.01", "--config.train.eval_every=0"))
  recorded = json.load(open(tmp_path / "config.json"))
  assert recorded["train"]["steps"] == 3 and recorded["optimizer"]["lr"] == 0.01
  assert recorded["model"]["name"] == "mlp"


@pytest.mark.parametrize("override, message", [
    ("--config.optimizer.lrr=1e-3", "lrr"),
    ("--config.train.steps=abc", "steps"),
    ("--config.model.name=resnet9000", "unknown model 'resnet9000'; valid choices: autoencoder_kl, bnn_resnet18,"),
    ("--config.data.name=mnist9000", "mnist9000"),
    ("--config.train.nonfinite=ignore", "nonfinite"),
])
def test_cli_errors_are_one_line(tmp_path, data_dir, override, message):
  result = run_python(train_args(str(tmp_path), "configs/demo.py", override), check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.strip().splitlines() if l.startswith("effcomp: error")]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
