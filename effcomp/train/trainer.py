"""The one training loop every effcomp task runs through.

`train_and_evaluate(config, workdir, task)` builds the mesh and the sharded state of the
`Task` it is given, resumes from the newest checkpoint in `workdir`, trains with a
progress bar, logs to TensorBoard and `metrics.jsonl`, evaluates, checkpoints, and on the
way out plots the curves and returns a summary. The structure follows the flax examples'
`train.train_and_evaluate`. The trainer knows no task, model or dataset by name:
`effcomp.runs` builds the task from a config (`runs.train(config, workdir)`).
"""

import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import traverse_util
from jax.sharding import Mesh
from tqdm.auto import tqdm

from effcomp import config as config_lib
from effcomp.data import pipeline
from effcomp.tasks.base import Task
from effcomp.train import checkpoint as checkpoint_lib
from effcomp.train import metrics_writer, optim, preemption, run_info
from effcomp.train import sharding as sharding_lib
from effcomp.train import state as state_lib
from effcomp.train import steps as steps_lib


class NonFiniteLossError(RuntimeError):
  """The loss or gradient became NaN/inf and `config.train.nonfinite == 'stop'`."""


@dataclasses.dataclass
class Experiment:
  """A configured, initialized run: everything but the loop."""
  config: ml_collections.ConfigDict
  mesh: Mesh
  task: Task
  state: state_lib.TrainState
  state_shardings: Any
  abstract_state: Any
  schedule: Any
  train_step: Any
  eval_step: Any
  teacher_variables: Optional[Any]


def _init_batch(task: Task) -> Dict[str, np.ndarray]:
  """The first eval example as a batch of 1 (only shapes matter for init)."""
  batch = pipeline.read_batch(task.eval_source, [0], task.eval_example_transform)
  return task.eval_transform(batch) if task.eval_transform else batch


def setup(config: ml_collections.ConfigDict, task: Task) -> Experiment:
  """Validates `config` and builds the mesh, the sharded state of `task` and jitted steps;
  restores the frozen teacher's variables from `config.teacher.workdir`, if set."""
  config_lib.validate(config)
  mesh = sharding_lib.create_mesh(config.mesh)
  shards = sharding_lib.num_batch_shards(mesh)
  for name, size in (("train.batch_size", config.train.batch_size // config.train.grad_accum_steps),
                     ("eval.batch_size", config.eval.batch_size)):
    if size % shards:
      raise ValueError(f"config.{name} (per micro-batch: {size}) is not divisible by the "
                       f"{shards} batch shards of mesh {dict(mesh.shape)}")
  tx, schedule = optim.create_optimizer(config.optimizer, config.train.steps)
  batch = _init_batch(task)
  state, shardings, abstract = state_lib.create(
      task.init_fn, tx, batch, config.seed, mesh, use_ema=config.train.ema_decay > 0)

  teacher_variables, teacher_shardings = None, None
  if config.teacher.workdir:
    if task.teacher_init_fn is None:
      raise ValueError(f"config.teacher.workdir={config.teacher.workdir!r}: the "
                       f"{config.task.name!r} task of this config uses no teacher")
    target = state_lib.abstract_variables(task.teacher_init_fn, batch, mesh)
    teacher_variables = checkpoint_lib.restore_variables(config.teacher.workdir, target,
                                                         ema=config.teacher.ema)
    teacher_shardings = jax.tree.map(lambda x: x.sharding, target)

  batch_sharding = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated(mesh)
  train_step = jax.jit(
      steps_lib.make_train_step(task, tx, grad_accum_steps=config.train.grad_accum_steps,
                                ema_decay=config.train.ema_decay,
                                ema_warmup=config.train.ema_warmup),
      in_shardings=(shardings, batch_sharding, teacher_shardings),
      out_shardings=(shardings, replicated), donate_argnums=(0,))
  eval_step = jax.jit(steps_lib.make_eval_step(task, use_ema=config.eval.use_ema),
                      in_shardings=(shardings, batch_sharding, teacher_shardings),
                      out_shardings=replicated)
  return Experiment(config, mesh, task, state, shardings, abstract, schedule, train_step,
                    eval_step, teacher_variables)


def sync_task_files(workdir: str, files: Dict[str, str]) -> None:
  """Writes the task's `files` into `workdir` (process 0), or checks the copies there.

  Raises:
    ValueError: `workdir` holds a different version of one of them (e.g. a tokenizer
      trained differently), so its checkpoints do not belong to this configuration.
  """
  for name, text in files.items():
    path = epath.Path(workdir) / name
    if path.exists():
      if path.read_text() != text:
        raise ValueError(f"--workdir={workdir!r}: its {name} differs from the one this config "
                         f"builds; use a fresh workdir or the config that wrote it")
    elif jax.process_index() == 0:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.parent / f".{name}.tmp"
      tmp.write_text(text)
      tmp.rename(path)


def _with_params(state: state_lib.TrainState, params, **changes) -> state_lib.TrainState:
  """`state` with new `params`, and its EMA (if kept) restarted from them."""
  ema = jax.tree.map(jnp.copy, params) if state.ema_params is not None else None
  return state.replace(params=params, ema_params=ema, **changes)


def _init_from(state: state_lib.TrainState, exp: Experiment, init) -> state_lib.TrainState:
  """`state` with params (and EMA) and model state restored from `init.workdir`'s newest
  step (its EMA params with `init.ema`); with `init.partial`, the leaves that run lacks
  keep their fresh initialization."""
  target = {"params": exp.abstract_state.params, **exp.abstract_state.model_state}
  variables = checkpoint_lib.restore_variables(init.workdir, target, ema=init.ema,
                                               missing_ok=init.partial)
  if init.partial:
    flat = traverse_util.flatten_dict({"params": state.params, **state.model_state}, sep="/")
    stored = traverse_util.flatten_dict(variables, sep="/")
    logging.info("Fresh (not in %s): %s", init.workdir, sorted(set(flat) - set(stored)))
    variables = traverse_util.unflatten_dict({**flat, **stored}, sep="/")
  params = variables.pop("params")
  logging.info("Initialized params from %s", init.workdir)
  return _with_params(state, params, model_state=variables)


def _warm_start(state: state_lib.TrainState, exp: Experiment):
  """`state` with params from the task's `warm_start`, placed in their shardings."""
  t = time.time()
  params, info = exp.task.warm_start(state.params, exp.teacher_variables)
  params = jax.device_put(params, exp.state_shardings.params)
  logging.info("Warm start in %.1f s: %s", time.time() - t, info)
  return _with_params(state, params), info


def evaluate(exp: Experiment, state: state_lib.TrainState) -> Dict[str, float]:
  """The task's eval metrics over the whole eval split (each example once)."""
  total = None
  for batch in pipeline.eval_batches(
      exp.task.eval_source, global_batch_size=exp.config.eval.batch_size,
      transform=exp.task.eval_transform, example_transform=exp.task.eval_example_transform, process_index=jax.process_index(),
      process_count=jax.process_count()):
    metrics = exp.eval_step(state, sharding_lib.global_batch(batch, exp.mesh),
                            exp.teacher_variables)
    total = metrics if total is None else total.merge(metrics)
  return {k: float(v) for k, v in total.compute().items()}


def _train_iterator(exp: Experiment):
  c = exp.config
  return pipeline.train_iterator(
      exp.task.train_source, global_batch_size=c.train.batch_size, seed=c.seed,
      transform=exp.task.train_transform, example_transform=exp.task.train_example_transform, process_index=jax.process_index(),
      process_count=jax.process_count(), num_workers=c.data.num_workers,
      prefetch=c.data.prefetch)


class _IntervalMeans:
  """Host-side running means of the step metrics between two log points."""

  def __init__(self):
    self.sums, self.count = {}, 0

  def add(self, metrics: Dict[str, float]) -> None:
    for k, v in metrics.items():
      self.sums[k] = self.sums.get(k, 0.0) + v
    self.count += 1

  def pop(self) -> Dict[str, float]:
    means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
    self.sums, self.count = {}, 0
    return means


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       task: Task) -> Dict[str, Any]:
  """Trains `task` with `config` in `workdir` (resuming if it holds checkpoints); returns a
  summary.

  The summary holds the final eval metrics, `steps`, `seconds`, `steps_per_second`,
  `preempted` and the output paths; process 0 also writes it to `summary.json`.
  """
  t_start = time.time()
  exp = setup(config, task)
  c = config
  is_main = jax.process_index() == 0
  run_info.write(workdir, config_lib.to_dict(config), dict(exp.mesh.shape))
  sync_task_files(workdir, exp.task.files)
  writer = metrics_writer.MetricWriter(workdir, enabled=is_main)
  writer.write_text("config", f"```\n{config}\n```")
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), keep=c.checkpoint.keep,
      async_save=c.checkpoint.async_save, fallback_to_previous=c.checkpoint.fallback_to_previous)
  train_iter = _train_iterator(exp)
  start_step, restored = checkpointer.restore(exp.abstract_state, train_iter)
  state = restored if restored is not None else exp.state
  start_step = start_step or 0
  if restored is not None:
    logging.info("Resumed from step %d in %s", start_step, checkpointer.directory)
  elif c.init.workdir:
    state = _init_from(state, exp, c.init)
  if restored is None and exp.task.warm_start is not None:
    state, info = _warm_start(state, exp)
    writer.write_scalars(0, info)
  if restored is None and c.eval.at_start:
    writer.write_scalars(0, {f"eval/{k}": v for k, v in evaluate(exp, state).items()})
  exp.state = None  # `state` is donated to the train step; keep no stale reference.

  interval = _IntervalMeans()
  eval_metrics: Dict[str, float] = {}
  preempted = False
  step = start_step
  pending = None  # (step, device metrics) fetched one step late to keep the device busy
  t_interval, steps_in_interval = time.time(), 0

  def drain():
    """Fetches the pending step's metrics; handles a non-finite loss."""
    nonlocal pending
    if pending is None:
      return
    s, m = pending
    pending = None
    values = {k: float(v) for k, v in jax.device_get(m).items()}
    if not values.pop("finite"):
      last = checkpointer.latest_step()
      message = (f"non-finite loss or gradient at step {s} (loss={values['loss']}); "
                 f"last good checkpoint: {'none' if last is None else f'step {last}'} in "
                 f"{checkpointer.directory}")
      if c.train.nonfinite == "stop":
        checkpointer.wait()
        raise NonFiniteLossError(message + ". Set --config.train.nonfinite=skip to skip such steps.")
      logging.warning("%s; the update was skipped", message)
      writer.write_scalars(s, {"train/skipped_step": 1.0})
      return
    interval.add(values)

  bar = tqdm(total=c.train.steps, initial=start_step, disable=not (is_main and c.train.progress_bar),
             desc="train", unit="step", dynamic_ncols=True,
             mininterval=0.5 if sys.stderr.isatty() else 30)  # logs and CI: a line per 30 s
  try:
    with preemption.PreemptionGuard() as guard:
      while step < c.train.steps:
        batch = sharding_lib.global_batch(next(train_iter), exp.mesh)
        if step == start_step:
          seconds = steps_lib.compile_ahead(exp.train_step, state, batch, exp.teacher_variables)
          logging.info("compiled the train step in %.1f s", seconds)
        state, metrics = exp.train_step(state, batch, exp.teacher_variables)
        drain()
        step += 1
        steps_in_interval += 1
        pending = (step, metrics)
        bar.update(1)
        is_last = step == c.train.steps
        stop = guard.reached(step)
        log_now = step % c.train.log_every == 0 or is_last
        eval_now = (c.train.eval_every and step % c.train.eval_every == 0) or is_last
        save_now = step % c.checkpoint.every_steps == 0 or is_last or stop
        if log_now or eval_now or save_now:
          drain()  # Never log, evaluate or save past an undetected non-finite step.
        if log_now and interval.count:
          now = time.time()
          scalars = {f"train/{k}": v for k, v in interval.pop().items()}
          scalars["train/lr"] = float(exp.schedule(step - 1))
          scalars["train/steps_per_second"] = steps_in_interval / max(now - t_interval, 1e-9)
          t_interval, steps_in_interval = now, 0
          writer.write_scalars(step, scalars)
          bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
        if save_now:
          checkpointer.save(step, state, train_iter)
        if eval_now:
          eval_metrics = evaluate(exp, state)
          writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
          logging.info("step %d eval %s", step, eval_metrics)
        if stop and not is_last:
          logging.warning("Preemption signal: saved step %d, exiting", step)
          preempted = True
          break
    checkpointer.wait()
  finally:
    bar.close()
    checkpointer.close()
    writer.close()

  seconds = time.time() - t_start
  workdir = workdir if "://" in workdir else os.path.abspath(workdir)
  summary = {
      "workdir": workdir, "steps": step, "preempted": preempted,
      "resumed_from": start_step, "seconds": seconds,
      "steps_per_second": (step - start_step) / seconds,
      "skipped_steps": int(jax.device_get(state.skipped_steps)),
      "eval": eval_metrics, "summary_metric": exp.task.summary_metric,
      "checkpoints": os.path.join(workdir, "checkpoints"),
      "tensorboard": os.path.join(workdir, "tensorboard"),
  }
  if is_main:
    summary["curves"] = metrics_writer.plot_curves(
        writer.jsonl_path, os.path.join(workdir, "curves.png"),
        title=f"{c.model.name} on {c.data.name}")
    (epath.Path(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
  summary["state"] = state
  return summary


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, task: Task,
                        step: Optional[int] = None) -> Dict[str, Any]:
  """Restores `step` (default: newest) of the train state in `workdir` and evaluates `task`
  with it."""
  exp = setup(config, task)
  sync_task_files(workdir, exp.task.files)
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), fallback_to_previous=config.checkpoint.fallback_to_previous)
  try:
    restored_step, state = checkpointer.restore(exp.abstract_state, None, step=step)
  finally:
    checkpointer.close()
  if state is None:
    raise FileNotFoundError(f"--workdir={workdir!r}: no checkpoint in {checkpointer.directory}")
  return _write_eval(exp, state, workdir, restored_step)


def evaluate_variables(config: ml_collections.ConfigDict, workdir: str, task: Task,
                       variables: Dict[str, Any], step: int = 0) -> Dict[str, Any]:
  """Evaluates `task` with `variables` ({'params': ..., other collections}; also the EMA
  when `config.eval.use_ema`) in place of a train state: the weights of a run converted
  from other code, which has no optimizer state."""
  exp = setup(config, task)
  sync_task_files(workdir, exp.task.files)
  variables = dict(variables)
  params = jax.device_put(variables.pop("params"), exp.state_shardings.params)
  model_state = jax.device_put(variables, exp.state_shardings.model_state)
  return _write_eval(exp, _with_params(exp.state, params, model_state=model_state), workdir, step)


def _write_eval(exp: Experiment, state: state_lib.TrainState, workdir: str, step: int
                ) -> Dict[str, Any]:
  metrics = evaluate(exp, state)
  result = {"step": step, "eval": metrics, "summary_metric": exp.task.summary_metric}
  if jax.process_index() == 0:
    (epath.Path(workdir) / f"eval_step{step}.json").write_text(json.dumps(result, indent=2))
  return result
