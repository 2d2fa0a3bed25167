"""The trainer on a config: build its `Task` (`build.build_task`) and hand it over.

  summary = training.train(config, workdir)        # train (resuming), evaluate, summarize
  result = training.evaluate(config, workdir)      # the newest (or `step`) checkpoint's eval
"""

from typing import Any, Dict, Optional

import ml_collections

from effcomp.runs import build, convert
from effcomp.runs.run import open_run
from effcomp.train import trainer


def setup(config: ml_collections.ConfigDict) -> trainer.Experiment:
  """The trainer's `Experiment` (mesh, task, sharded state, jitted steps) of `config`."""
  return trainer.setup(config, build.build_task(config))


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`trainer.train_and_evaluate` of `config`'s task in `workdir`: the run summary."""
  return trainer.train_and_evaluate(config, workdir, build.build_task(config))


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             step: Optional[int] = None) -> Dict[str, Any]:
  """The eval metrics of checkpoint `step` (default: newest) of the run in `workdir` (a run
  converted from other code: its weights)."""
  task = build.build_task(config)
  if convert.is_converted(workdir):
    if step not in (None, 0):
      raise ValueError(f"--step={step}: {workdir} is a converted run; it has step 0 only")
    return trainer.evaluate_variables(config, workdir, task, open_run(workdir, config).variables)
  return trainer.evaluate_checkpoint(config, workdir, task, step)
