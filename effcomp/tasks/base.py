"""The contract between a task and the trainer.

A task is a model plus four pure functions and its data. The trainer owns everything
else (mesh, sharding, optimizer, checkpoints, metrics, the loop); no paper writes a
loop of its own, and distillation is a task whose `loss_fn` uses the frozen teacher.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple, Type

import flax.linen as nn
import ml_collections
import jax
from clu import metrics as clu_metrics

Batch = Dict[str, Any]
Variables = Dict[str, Any]


# loss_fn(params, model_state, batch, rng, teacher_variables, step)
#   -> (loss, (new_model_state, {name: scalar})); `step` (int32 scalar) lets schedules
#   (e.g. estimator annealing) be functions of the step, never hidden state.
LossFn = Callable[[Any, Any, Batch, jax.Array, Optional[Variables], jax.Array],
                  Tuple[jax.Array, Tuple[Any, Dict[str, jax.Array]]]]
# eval_fn(params, model_state, batch, step, teacher_variables) -> clu Collection (masked by
#   batch['mask']); `step` (int32 scalar) is the train state's, for models whose forward
#   follows a schedule; `teacher_variables` as for loss_fn (e.g. a frozen autoencoder).
EvalFn = Callable[[Any, Any, Batch, jax.Array, Optional[Variables]], clu_metrics.Collection]
# warm_start(params, teacher_variables) -> (params, {name: float}): run once when a run
#   starts fresh (no checkpoint to resume), e.g. a student initialized from its teacher.
WarmStartFn = Callable[[Any, Optional[Variables]], Tuple[Any, Dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class Task:
  """Everything task-specific the trainer needs.

  Attributes:
    model: the Flax module being trained.
    init_fn: `(rng, batch) -> variables` ({'params': ..., other collections}).
    loss_fn: see `LossFn`; `model_state` is every non-'params' collection.
    eval_fn: see `EvalFn`.
    eval_metrics: the clu `Collection` type `eval_fn` returns (for an empty start).
    train_source / eval_source: random-access sources (`len`, `__getitem__`).
    train_transform: vectorized host-side `(batch, np.random.Generator) -> batch`
      (augmentation); None for none. Batches hold the source's dtypes (uint8
      images): normalize on the device, in `loss_fn`/`eval_fn`.
    eval_transform: vectorized `batch -> batch`, or None.
    train_example_transform / eval_example_transform: `(example, rng) -> example` run on
      each record before batching (variable-size images → fixed crops), or None.
    summary_metric: the eval metric the run summary reports (e.g. 'accuracy').
    teacher_init_fn: for distillation, `(rng, batch) -> variables` of the frozen
      teacher; the trainer restores them from `config.teacher.workdir` and passes them
      to every `loss_fn` call as `teacher_variables` (never updated).
    files: {file name: text} the run needs later (e.g. the tokenizer that sampling
      reads); the trainer writes them into the workdir and refuses to resume or evaluate
      a workdir whose copies differ.
    warm_start: see `WarmStartFn`, or None; its numbers are logged at step 0.
  """
  model: nn.Module
  init_fn: Callable[[jax.Array, Batch], Variables]
  loss_fn: LossFn
  eval_fn: EvalFn
  eval_metrics: Type[clu_metrics.Collection]
  train_source: Any
  eval_source: Any
  train_transform: Optional[Callable] = None
  eval_transform: Optional[Callable] = None
  train_example_transform: Optional[Callable] = None
  eval_example_transform: Optional[Callable] = None
  summary_metric: str = "loss"
  teacher_init_fn: Optional[Callable[[jax.Array, Batch], Variables]] = None
  files: Dict[str, str] = dataclasses.field(default_factory=dict)
  warm_start: Optional[WarmStartFn] = None


def task_config(config: ml_collections.ConfigDict,
                defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`defaults` (a task's fields) updated with `config.task`; unknown fields are an error."""
  unknown = set(config.task) - set(defaults)
  if unknown:
    raise ValueError(f"config.task: {defaults.name} has no field(s) {', '.join(sorted(unknown))}; "
                     f"valid: {', '.join(sorted(defaults))}")
  defaults.update(config.task)
  return defaults
