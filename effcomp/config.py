"""The config schema every experiment starts from, and its validation.

An experiment is a `configs/<name>.py` file whose `get_config(arg=None)` starts from
`base_config()`, changes a few fields and returns `lock(config)`. Locked configs
reject unknown keys, and `ConfigDict` rejects values of the wrong type, so a typo in
`--config.optimizer.lrr=1e-3` fails at once instead of being silently ignored.
"""

import importlib.util
import json
import os
from typing import Any, Dict

import ml_collections
from etils import epath
from ml_collections import config_dict

NONFINITE_POLICIES = ("stop", "skip")
COMPUTE_DTYPES = ("float32", "bfloat16")


def base_config() -> ml_collections.ConfigDict:
  """All trainer fields with their defaults; model/task/data fields are set per file."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Model: `name` is looked up in effcomp.registry.MODELS; the other fields are passed
  # to the model constructor as keyword arguments.
  c.model = ml_collections.ConfigDict({"name": ""})
  # Task: the loss and eval metrics (effcomp.registry.TASKS); other fields are task options.
  c.task = ml_collections.ConfigDict({"name": "classification"})

  c.data = ml_collections.ConfigDict()
  c.data.name = ""
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.data_dir = config_dict.placeholder(str)  # None: $EFFCOMP_DATA_DIR or ~/tensorflow_datasets
  c.data.manual_dir = config_dict.placeholder(str)  # for datasets that need files (CIFAR-10, ImageNet)
  c.data.cache_in_memory = False  # read the splits into host RAM once (small datasets)
  c.data.num_workers = 0  # grain worker processes; 0 reads in the main process
  c.data.prefetch = 2  # host batches prefetched by a grain thread pool

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.batch_size = 128  # global, over all processes and devices
  c.train.grad_accum_steps = 1  # micro-batches per optimizer step
  c.train.compute_dtype = "float32"  # or "bfloat16"; parameters stay float32
  c.train.ema_decay = 0.0  # 0 disables the EMA of parameters
  c.train.ema_warmup = False  # decay min(ema_decay, (1+t)/(10+t)) at step t (short runs)
  c.train.nonfinite = "stop"  # non-finite loss: "stop" the run, or "skip" the step
  c.train.log_every = 50
  c.train.eval_every = 500  # 0: evaluate only at the end
  c.train.progress_bar = True

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256
  c.eval.use_ema = False
  c.eval.at_start = False  # also evaluate a fresh run before its first step (step 0)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # sgd | adam | adamw | lamb
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"  # constant | cosine | linear | multistep
  c.optimizer.milestones = ()  # multistep: steps at which the lr is multiplied by gamma
  c.optimizer.gamma = 0.5  # multistep
  c.optimizer.warmup_steps = 0
  c.optimizer.end_lr_factor = 0.0  # final lr = lr * end_lr_factor
  c.optimizer.weight_decay = 0.0
  c.optimizer.momentum = 0.9  # sgd
  c.optimizer.nesterov = False  # sgd
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.grad_clip_norm = 0.0  # 0 disables clipping

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True
  # A checkpoint that cannot be read is an error naming its step; with this set, the
  # run resumes from the newest readable one instead (the bad one is kept, renamed).
  c.checkpoint.fallback_to_previous = False

  # Mesh axes (data, fsdp, tensor); -1 takes the devices the others leave.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})

  # Start from another run's newest params (and model state), e.g. step 2 of a two-step
  # recipe; used only when this workdir has no checkpoint yet. `ema`: its EMA params;
  # `partial`: leaves it lacks keep their fresh initialization (an elastic model started
  # from a plain one).
  c.init = ml_collections.ConfigDict({"workdir": "", "ema": False, "partial": False})

  # A frozen teacher for distillation tasks: the workdir of a finished run and its model
  # (an empty model name: the model that run recorded in its config.json).
  c.teacher = ml_collections.ConfigDict()
  c.teacher.workdir = ""
  c.teacher.ema = False  # the teacher's EMA of its parameters (it must have kept one)
  c.teacher.model = ml_collections.ConfigDict({"name": ""})
  return c


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks `config` so that setting a key it does not have is an error."""
  config.lock()
  return config


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `configs/x.py:key=value,flag` (big_vision style) over typed `defaults`.

  `parse_arg("size=S,bits=1", size="M", bits=32)` → {size: "S", bits: 1}. A bare key
  sets a bool to True. Unknown keys and values of the wrong type are `ValueError`s.
  """
  result = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, raw = item.partition("=")
    if key not in defaults:
      raise ValueError(
          f"config argument {key!r} unknown; valid: {', '.join(sorted(defaults)) or '(none)'}")
    default = defaults[key]
    if not raw and isinstance(default, bool):
      result[key] = True
      continue
    try:
      if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
          raise ValueError(raw)
        result[key] = raw.lower() in ("true", "1")
      else:
        result[key] = type(default)(raw)
    except ValueError:
      raise ValueError(
          f"config argument {key}={raw!r}: expected {type(default).__name__}") from None
  return ml_collections.ConfigDict(result)


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values the type system cannot; raises ValueError naming the field."""
  t, o = config.train, config.optimizer
  _check(bool(config.model.name), "config.model.name is empty; set it to a registered model")
  _check(bool(config.data.name), "config.data.name is empty; set it to a dataset name")
  _check(t.steps > 0, f"config.train.steps={t.steps}: expected a positive integer")
  _check(t.batch_size > 0, f"config.train.batch_size={t.batch_size}: expected > 0")
  _check(t.grad_accum_steps > 0,
         f"config.train.grad_accum_steps={t.grad_accum_steps}: expected > 0")
  _check(t.batch_size % t.grad_accum_steps == 0,
         f"config.train.batch_size={t.batch_size} is not divisible by "
         f"config.train.grad_accum_steps={t.grad_accum_steps}")
  _check(t.nonfinite in NONFINITE_POLICIES,
         f"config.train.nonfinite={t.nonfinite!r}: expected one of {NONFINITE_POLICIES}")
  _check(t.compute_dtype in COMPUTE_DTYPES,
         f"config.train.compute_dtype={t.compute_dtype!r}: expected one of {COMPUTE_DTYPES}")
  _check(0.0 <= t.ema_decay < 1.0, f"config.train.ema_decay={t.ema_decay}: expected in [0, 1)")
  _check(t.log_every > 0, f"config.train.log_every={t.log_every}: expected > 0")
  _check(t.eval_every >= 0, f"config.train.eval_every={t.eval_every}: expected >= 0")
  _check(config.eval.batch_size > 0, f"config.eval.batch_size={config.eval.batch_size}: expected > 0")
  _check(not config.eval.use_ema or t.ema_decay > 0,
         "config.eval.use_ema=True needs config.train.ema_decay > 0")
  _check(o.lr >= 0, f"config.optimizer.lr={o.lr}: expected >= 0")
  _check(0 <= o.warmup_steps <= t.steps,
         f"config.optimizer.warmup_steps={o.warmup_steps}: expected in [0, train.steps]")
  _check(config.checkpoint.every_steps > 0,
         f"config.checkpoint.every_steps={config.checkpoint.every_steps}: expected > 0")
  _check(config.checkpoint.keep > 0, f"config.checkpoint.keep={config.checkpoint.keep}: expected > 0")
  for axis in ("data", "fsdp", "tensor"):
    size = config.mesh[axis]
    _check(size == -1 or size > 0, f"config.mesh.{axis}={size}: expected -1 or a positive size")


def to_dict(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """A JSON-ready copy of `config` (what runs write into their workdir)."""
  return config.to_dict()


def load(spec: str, **overrides: Any) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` like `--config=` does, then applies overrides.

  `load("configs/demo.py:model=mlp", **{"train.steps": 10})` is the notebook/test
  equivalent of `--config=configs/demo.py:model=mlp --config.train.steps=10`.
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location(
      f"effcomp_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ValueError(f"config override {key!r}: no such field")
    node[leaf] = value
  return config


def from_workdir(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run recorded in `workdir/config.json`, locked."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"workdir={workdir!r}: no config.json (not the workdir of an effcomp run)")
  return lock(ml_collections.ConfigDict(json.loads(path.read_text())))
