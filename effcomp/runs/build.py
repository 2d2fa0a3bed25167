"""A config made into its model and its `Task`: where the model and task registries are
read, so every model and task is registered here (importing `effcomp.models` and each task
module)."""

import dataclasses

import flax.linen as nn
import ml_collections

from effcomp import config as config_lib
from effcomp import models
from effcomp.data import pipeline, sources
from effcomp.registry import TASKS
from effcomp.tasks import (ar_image, autoencoder, classification, degradation,  # noqa: F401
                           diffusion, diffusion_sr, flow_grpo, lm, onestep_sr, sr,
                           vq)  # (registration)
from effcomp.tasks.base import Task


def build_model(model_config: ml_collections.ConfigDict, compute_dtype: str) -> nn.Module:
  """The registered model `model_config.name` with the other fields as keyword arguments;
  a `dtype` field the config leaves unset takes `compute_dtype`."""
  kwargs = {k: v for k, v in model_config.items() if k != "name"}
  if "dtype" in {f.name for f in dataclasses.fields(models.MODELS.get(model_config.name))}:
    kwargs.setdefault("dtype", compute_dtype)
  return models.build(model_config.name, **kwargs)


def teacher_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The frozen teacher's model: `config.teacher.model`, or (its name empty) the model the
  run in `config.teacher.workdir` recorded."""
  if config.teacher.model.name:
    return config.teacher.model
  return config_lib.from_workdir(config.teacher.workdir).model


def build_task(config: ml_collections.ConfigDict) -> Task:
  """The `Task` of `config`: its model, the teacher's model when `config.teacher.workdir` is
  set, and the train and eval splits of `config.data` (prepared on first use)."""
  config_lib.validate(config)
  model = build_model(config.model, config.train.compute_dtype)
  teacher = (build_model(teacher_model_config(config), config.train.compute_dtype)
             if config.teacher.workdir else None)
  d = config.data
  train_source, eval_source = (
      sources.get_source(d.name, split, data_dir=d.data_dir, manual_dir=d.manual_dir)
      for split in (d.train_split, d.eval_split))
  if d.cache_in_memory:
    train_source, eval_source = map(pipeline.ArraySource.from_source, (train_source, eval_source))
  return TASKS.get(config.task.name)(config, model, train_source, eval_source,
                                     teacher_model=teacher)
