"""Name → constructor registries, so a config names its model and task by string.

Follows big_vision's "models looked up by name" pattern. Unknown names fail with a
one-line `ValueError` listing the valid choices.
"""

from typing import Any, Callable, Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A mapping from names to constructors, filled by the `register` decorator."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str) -> T:
    if name not in self._entries:
      raise ValueError(
          f"unknown {self.kind} {name!r}; valid choices: {', '.join(sorted(self._entries))}")
    return self._entries[name]

  def names(self) -> list:
    return sorted(self._entries)

  def __contains__(self, name: Any) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))


MODELS: Registry = Registry("model")
# Task name → `build(config, model, train_source, eval_source, teacher_model=None) -> Task`.
TASKS: Registry = Registry("task")
# Task name → `example_inputs(config, model) -> tuple`: arguments of `model.init` with the
# shapes of the task's model inputs (zeros), so a run's variables are restored by shape
# without building the task (`effcomp.runs.open`).
MODEL_INPUTS: Registry = Registry("task's model inputs")
# Task name → `init(config, model, rng, *inputs) -> variables`, for tasks whose trained
# variables hold more than `model.init`'s (a discriminator, adapters beside the model's
# parameters), so `effcomp.runs.open` restores all of them. Absent: `model.init`.
MODEL_INITS: Registry = Registry("task's variable init")
# Frozen image encoders for perceptual losses, by kind → `load(path) -> features_fn`, with
# features_fn(images in [−1, 1], NHWC) → a list of feature arrays [B, …, C]
# (`effcomp.tasks.onestep_sr`'s ESS term; `config.task.ess_encoder = '<kind>:<path>'`).
FEATURE_ENCODERS: Registry = Registry("feature encoder")
# Frozen image tokenizers for autoregressive image generation, by kind →
# `load(path) -> ImageTokenizer` (`effcomp/runs/tokenizers.py`: 'run:<workdir>' of a `vq`
# run): images ↔ code grids, with a cache of a dataset's codes (`effcomp.tasks.ar_image`'s
# `config.task.tokenizer = '<kind>:<path>'`).
IMAGE_TOKENIZERS: Registry = Registry("image tokenizer")
# Frozen degradation scorers, by kind → `load(path) -> scores_fn(images in [−1, 1]) -> [B, K]`
# in [0, 1] (MoR's routing input; `config.task.mor_estimator = '<kind>:<path>'`).
DEGRADATION_SCORERS: Registry = Registry("degradation scorer")
# Rewards for RL fine-tuning, by kind → `load(arg) -> reward_fn(images, labels) -> [B]`
# float32, jittable, with images [B, H, W, C] in [−1, 1] and labels int [B] (the prompts);
# `config.task.reward = '<kind>'` or '<kind>:<arg>' (`effcomp.tasks.flow_grpo`).
REWARDS: Registry = Registry("reward")
