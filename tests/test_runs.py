"""The runs floor: a trainer that runs the Task it is given, and opening a run from its
workdir (config, model, newest variables; the EMA where evaluation used it; its teacher)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.data import pipeline
from effcomp.data.image_inputs import model_inputs
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.train import metrics_writer, trainer


def _config(steps=8, **overrides):
  base = {"train.progress_bar": False, "train.log_every": 4, "train.eval_every": 0,
          "checkpoint.every_steps": 4, "checkpoint.async_save": False}
  return config_lib.load(f"configs/demo.py:model=mlp,steps={steps}", **{**base, **overrides})


def _assert_trees_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  """A demo MLP trained with an EMA of its weights (evaluated with the raw ones)."""
  del data_dir
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = runs.train(_config(**{"train.ema_decay": 0.5}), workdir)
  return workdir, summary


def test_every_task_says_how_to_restore_its_model():
  assert TASKS.names() == MODEL_INPUTS.names()


def test_open_restores_the_final_state_from_the_recorded_config(trained):
  workdir, summary = trained
  run = runs.open(workdir)
  state = summary["state"]
  assert run.task == "classification" and run.config.train.steps == 8
  assert run.model == runs.build_model(run.config.model, "float32")
  _assert_trees_equal(run.params, state.params)
  ema = runs.open(workdir, ema=True)
  _assert_trees_equal(ema.params, state.ema_params)
  assert not np.array_equal(jax.tree.leaves(ema.params)[0], jax.tree.leaves(run.params)[0])
  # The opened model computes what the trainer evaluated.
  source = runs.build_task(run.config).eval_source
  batch = pipeline.read_batch(source, list(range(len(source))), None)
  logits = run.model.apply(run.variables, model_inputs(jnp.asarray(batch["image"])))
  accuracy = float(np.mean(np.argmax(logits, -1) == batch["label"]))
  assert accuracy == pytest.approx(summary["eval"]["accuracy"], abs=1e-6)


def test_open_uses_the_ema_when_evaluation_did(trained):
  workdir, summary = trained
  config = runs.open(workdir).config.copy_and_resolve_references()
  config.eval.use_ema = True
  _assert_trees_equal(runs.open(workdir, config).params, summary["state"].ema_params)


def test_open_errors_name_the_workdir(trained, tmp_path):
  workdir, _ = trained
  with pytest.raises(FileNotFoundError, match="no config.json"):
    runs.open(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    runs.open(str(tmp_path), _config())
  other = _config(**{"model.widths": (32,)})
  with pytest.raises(ValueError, match=r"its checkpoint does not fit the model 'mlp'"):
    runs.open(workdir, other)
  with pytest.raises(ValueError, match="has no teacher"):
    runs.open(workdir).teacher()


def test_teacher_is_opened_as_its_own_run(trained, tmp_path):
  teacher_dir, summary = trained
  config = _config(steps=2, **{"task.distill_weight": 0.5, "teacher.workdir": teacher_dir})
  runs.train(config, str(tmp_path))
  teacher = runs.open(str(tmp_path)).teacher()
  assert teacher.workdir == teacher_dir and teacher.task == "classification"
  _assert_trees_equal(teacher.params, summary["state"].params)


def test_the_trainer_runs_a_task_it_is_given_without_a_registry(tmp_path, data_dir):
  """A Task built by hand (here: classification with a squared-error loss) is trained as is."""
  del data_dir
  config = _config(steps=6)
  base = runs.build_task(config)

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del rng, teacher_variables, step
    logits = base.model.apply({"params": params, **model_state}, model_inputs(batch["image"]))
    loss = jnp.mean(jnp.square(jax.nn.softmax(logits) - jax.nn.one_hot(batch["label"], 10)))
    return loss, (model_state, {})

  task = dataclasses.replace(base, loss_fn=loss_fn)
  summary = trainer.train_and_evaluate(config, str(tmp_path), task)
  assert summary["steps"] == 6 and 0 <= summary["eval"]["accuracy"] <= 1
  losses = [r["train/loss"] for r in metrics_writer.read_jsonl(str(tmp_path / "metrics.jsonl"))
            if "train/loss" in r]
  assert losses and max(losses) < 0.2  # squared error of probabilities, not cross-entropy (≈ 2.3)


def test_a_teacher_for_a_task_without_one_is_an_error(tmp_path, data_dir, trained):
  del data_dir
  config = _config(steps=2, **{"teacher.workdir": trained[0]})
  task = dataclasses.replace(runs.build_task(_config(steps=2)), teacher_init_fn=None)
  with pytest.raises(ValueError, match="uses no teacher"):
    trainer.setup(config, task)


def test_build_model_gives_unset_dtype_the_compute_dtype():
  config = _config()
  assert runs.build_model(config.model, "bfloat16").dtype == "bfloat16"
  config.unlock()
  config.model.dtype = "float32"
  assert runs.build_model(config.model, "bfloat16").dtype == "float32"


def test_classification_example_inputs_are_an_eval_example(data_dir):
  del data_dir
  (x,) = MODEL_INPUTS.get("classification")(_config(**{"task.resize": 16}), None)
  assert x.shape == (1, 16, 16, 1) and x.dtype == jnp.float32
  (x,) = MODEL_INPUTS.get("classification")(_config(), None)
  first = runs.build_task(_config()).eval_source[0]["image"]
  np.testing.assert_allclose(x[0], first / 255.0, rtol=1e-6)
