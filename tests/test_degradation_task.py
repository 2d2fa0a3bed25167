"""The degradation-estimation task (`effcomp.tasks.degradation`) and the frozen scorer a
finished run gives MoR (`DEGRADATION_SCORERS` 'run')."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.registry import DEGRADATION_SCORERS
from effcomp.tasks import degradation

SMALL = {"train.progress_bar": False, "train.batch_size": 4, "task.patch_size": 32,
         "task.eval_patch": 32, "model.width": 8}


def _config(steps=2, **overrides):
  return config_lib.load(f"configs/degradation_estimator.py:steps={steps}",
                         **{**SMALL, **overrides})


def test_loss_is_the_mse_to_the_pipeline_severities():
  task = runs.build_task(_config())
  rng = np.random.default_rng(0)
  examples = [task.train_example_transform(task.train_source[i], rng) for i in range(3)]
  batch = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in ("hr", "lr", "severity")}
  assert batch["severity"].shape == (3, 4) and float(batch["severity"][:, 3].max()) > 0
  variables = task.init_fn(jax.random.key(0), batch)
  loss, (_, metrics) = task.loss_fn(variables["params"], {}, batch, jax.random.key(1), None,
                                    jnp.int32(0))
  y = jax.image.resize(batch["lr"] / 127.5 - 1.0, (3, 32, 32, 3), "cubic")
  want = task.model.apply(variables, y) - batch["severity"]
  np.testing.assert_allclose(loss, jnp.mean(jnp.square(want)), rtol=1e-5)
  np.testing.assert_allclose(metrics["mae_noise"], jnp.mean(jnp.abs(want[:, 1])), rtol=1e-5)


def test_bicubic_lrs_are_refused():
  with pytest.raises(ValueError, match="degradation='bicubic'"):
    runs.build_task(_config(**{"task.degradation": "bicubic"}))


def test_a_finished_run_scores_like_its_model(tmp_path):
  workdir = os.path.join(tmp_path, "estimator")
  runs.train(_config(), workdir)
  scorer = DEGRADATION_SCORERS.get("run")(workdir)
  run = runs.open(workdir)
  y = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  scores = scorer(y)
  assert scores.shape == (2, len(degradation.SEVERITIES))
  np.testing.assert_allclose(scores, run.model.apply(run.variables, y), atol=1e-6)
