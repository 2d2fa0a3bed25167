"""Open a run from its workdir: the config it recorded, its model and the variables of its
newest checkpoint, restored by shape (reading no data, except a classifier's one example).

  run = open_run("workdirs/udit_digits")          # effcomp.runs.open
  images = run.model.apply(run.variables, ...)     # params: the EMA when evaluation used it
  autoencoder = run.teacher()                      # a latent diffusion run's autoencoder

Every later act on a run (evaluate, sample, export, quantize, upscale, convert) starts
here; `effcomp.train` restores only its own train state (resume, `init.workdir`) and the
frozen teacher of the task it trains.
"""

import dataclasses
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh

from effcomp import config as config_lib
from effcomp.registry import MODEL_INITS, MODEL_INPUTS
from effcomp.runs import build
from effcomp.train import checkpoint, sharding, state

# Every PRNG stream a model may ask for when initialized (unused ones are ignored).
RNG_NAMES = ("params", "dropout", "sample")


@dataclasses.dataclass
class Run:
  """An opened run.

  Attributes:
    workdir: where it lives (checkpoints, config.json, the task's files).
    config: its config (the one it recorded, unless `open_run` was given one).
    model: the Flax module, built from `config.model` in `config.train.compute_dtype`.
    variables: {'params': ..., other collections (e.g. 'batch_stats')} of the newest
      checkpoint, sharded over the mesh it was opened on.
  """
  workdir: str
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: Dict[str, Any]

  @property
  def params(self) -> Any:
    return self.variables["params"]

  @property
  def task(self) -> str:
    """The name of the task it trained (`config.task.name`)."""
    return self.config.task.name

  def teacher(self) -> "Run":
    """The frozen teacher it trained with (`config.teacher`: a distillation teacher, or a
    latent diffusion run's autoencoder), opened on the same mesh as this run."""
    if not self.config.teacher.workdir:
      raise ValueError(f"workdir={self.workdir!r}: its config has no teacher "
                       "(config.teacher.workdir is empty)")
    mesh = jax.tree.leaves(self.variables)[0].sharding.mesh
    return open_run(self.config.teacher.workdir,
                    model_config=build.teacher_model_config(self.config), mesh=mesh)


def abstract_variables(config: ml_collections.ConfigDict, model: nn.Module,
                       mesh: Optional[Mesh] = None) -> Any:
  """`model`'s variables as sharded `jax.ShapeDtypeStruct`s, from the example inputs of
  `config`'s task (`MODEL_INPUTS`); `mesh` None: `config.mesh` over all devices."""
  return state.abstract_variables(*_init(config, model), mesh or sharding.create_mesh(config.mesh))


def init_variables(config: ml_collections.ConfigDict, model: nn.Module, seed: int = 0) -> Any:
  """`model`'s freshly initialized variables (unboxed, on the default device), as
  `abstract_variables` shapes them."""
  init, inputs = _init(config, model)
  return nn.unbox(jax.jit(init)(jax.random.PRNGKey(seed), inputs))


def _init(config: ml_collections.ConfigDict, model: nn.Module) -> tuple:
  """(init(rng, inputs) of every variable of `config`'s task, its example inputs)."""
  inputs = MODEL_INPUTS.get(config.task.name)(config, model)
  if config.task.name in MODEL_INITS:
    return (lambda rng, x: MODEL_INITS.get(config.task.name)(config, model, rng, *x)), inputs
  return (lambda rng, x: model.init({name: rng for name in RNG_NAMES}, *x)), inputs


def open_run(workdir: str, config: Optional[ml_collections.ConfigDict] = None, *,
             model_config: Optional[ml_collections.ConfigDict] = None,
             mesh: Optional[Mesh] = None, ema: Optional[bool] = None) -> Run:
  """The run in `workdir` at its newest checkpoint.

  Args:
    workdir: a run's workdir (`checkpoints/`, and `config.json` unless `config` is given).
    config: the run's config; None: the one it recorded. Its task gives the model's
      example inputs (`effcomp.registry.MODEL_INPUTS`), which fix the variables' shapes.
    model_config: the model to build instead of `config.model` (a teacher named by
      another run's `config.teacher.model`).
    mesh: where to place the variables; None: `config.mesh` over all devices.
    ema: whether 'params' are the run's EMA; None: what its evaluation used
      (`config.eval.use_ema`).

  Raises:
    FileNotFoundError: no config.json (and no `config`) or no checkpoint in `workdir`.
    ValueError: the checkpoint does not fit the model of the config.
  """
  config = config or config_lib.from_workdir(workdir)
  model_config = model_config or config.model
  model = build.build_model(model_config, config.train.compute_dtype)
  abstract = abstract_variables(config, model, mesh)
  try:
    variables = checkpoint.restore_variables(
        workdir, abstract, ema=config.eval.use_ema if ema is None else ema)
  except ValueError as e:  # orbax: the stored shapes differ from the model's
    raise ValueError(f"workdir={workdir!r}: its checkpoint does not fit the model "
                     f"{model_config.name!r} of the config") from e
  return Run(workdir, config, model, variables)


def open_frozen(workdir: str, task: str, role: str, example: str) -> tuple:
  """(run, its variables on the host) of a finished `task` run that another run uses
  frozen (an encoder, a scorer, a reward); a ValueError naming `role` ('reward
  classifier:<workdir>', …) and an `example` config otherwise."""
  run = open_run(workdir)
  if run.task != task:
    raise ValueError(f"{role}: expected a {task} run (e.g. {example}), got task {run.task!r}")
  return run, jax.device_get(run.variables)
