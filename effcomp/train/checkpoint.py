"""Checkpoints with orbax: train state + data-iterator state, saved atomically.

orbax writes each step into a temporary directory and renames it when complete, so a
killed run never leaves a half-written step that looks finished, and the last good
step is never overwritten. The data iterator's state is saved with grain's orbax
handler (one file per process), so resuming continues the exact data stream.

A step that cannot be read is a `CorruptCheckpointError` naming it; with
`fallback_to_previous=True` that step is renamed `<step>.corrupt` (kept for
inspection, never overwritten) and the newest readable step is used instead.
"""

import json
import os
from collections.abc import Mapping
from typing import Any, Optional, Tuple

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils


def _absolute(path: str) -> epath.Path:
  """orbax needs absolute paths; URLs (gs://…) are absolute already."""
  path = str(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


class CorruptCheckpointError(RuntimeError):
  """A checkpoint step exists but cannot be restored."""


class _IteratorSnapshot:
  """The iterator's state captured *now*, for grain's handler to write later (async)."""

  def __init__(self, iterator: grain.DatasetIterator):
    self._state = json.dumps(iterator.get_state(), indent=2).encode()

  def get_state(self) -> bytes:
    return self._state


class Checkpointer:
  """Saves and restores `(train_state, data_iterator)` under `directory`."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True,
               fallback_to_previous: bool = False):
    self.directory = _absolute(directory)
    self.fallback_to_previous = fallback_to_previous
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data"))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Optional[grain.DatasetIterator]) -> bool:
    """Starts saving `step` (asynchronously if configured); returns whether it saves."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iterator))
    return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, data_iterator: Optional[grain.DatasetIterator] = None,
              step: Optional[int] = None) -> Tuple[Optional[int], Any]:
    """Restores `step` (default: the latest) into the shardings of `abstract_state`.

    Returns `(step, state)`, or `(None, None)` when there is no checkpoint. The
    iterator, if given, is set to its saved position in place.
    """
    step = self.latest_step() if step is None else step
    while step is not None:
      try:
        return step, self._restore_step(step, abstract_state, data_iterator)
      except Exception as e:  # orbax/tensorstore raise many types for unreadable files.
        path = self.directory / str(step)
        message = (f"checkpoint step {step} in {self.directory} cannot be restored "
                   f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        if not self.fallback_to_previous:
          raise CorruptCheckpointError(
              message + "; it is left untouched. Set --config.checkpoint.fallback_to_previous=True "
              "to resume from the newest readable earlier step.") from e
        logging.warning("%s; renaming it to %s.corrupt and trying an earlier step", message, path)
        self._quarantine(path)
        step = self.latest_step()
    return None, None

  def _restore_step(self, step, abstract_state, data_iterator):
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def _quarantine(self, path: epath.Path) -> None:
    if jax.process_index() == 0 and path.exists():
      os.replace(path, f"{path}.corrupt")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"quarantine {path}")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def restore_variables(workdir: str, abstract_variables: Any, ema: bool = False,
                      missing_ok: bool = False) -> Any:
  """The newest `params` and model state of the run in `workdir` (a teacher, an init).

  `abstract_variables` is `{'params': ..., <collection>: ...}` of `jax.ShapeDtypeStruct`s
  with the shardings to restore into; optimizer state and the rest are not read. With
  `ema`, 'params' are the run's EMA of the parameters (it must have trained with one).
  A leaf the run lacks is a ValueError naming it, or, with `missing_ok`, left out of the
  result (a larger model started from a smaller one's weights); a leaf it holds at another
  shape is a ValueError naming it.
  """
  directory = _absolute(workdir) / "checkpoints"
  if not directory.exists():
    raise FileNotFoundError(f"workdir={workdir!r}: no checkpoints in {directory}")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                                  item_names=("state", "data"))
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"workdir={workdir!r}: {directory} holds no checkpoint")
    key = "ema_params" if ema else "params"
    model_state = {k: v for k, v in abstract_variables.items() if k != "params"}
    target = {key: abstract_variables["params"]}
    if model_state:  # (an empty one would not match a run that kept some, e.g. a GAN's)
      target["model_state"] = model_state
    # orbax's partial restore would hand back a leaf the run lacks as its placeholder.
    stored = ocp.PyTreeCheckpointer().metadata(directory / str(step) / "state")
    missing = []
    target = _stored_part(target, stored.item_metadata.tree, workdir, "", missing)
    if missing and not missing_ok:
      raise ValueError(f"workdir={workdir!r} lacks {len(missing)} of the variables asked "
                       f"for: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)))["state"]
  finally:
    manager.close()
  return {"params": restored.get(key, {}), **restored.get("model_state", {})}


def _stored_part(target: Any, stored: Any, workdir: str, path: str, missing: list) -> Any:
  """The part of the nested dict `target` that `stored` (a checkpoint's metadata tree)
  also holds; the paths it lacks are appended to `missing`; a shared leaf of another
  shape is a ValueError naming it."""
  if not isinstance(target, Mapping):
    if tuple(target.shape) != tuple(stored.shape):
      raise ValueError(f"workdir={workdir!r} holds {path} at shape {tuple(stored.shape)}; "
                       f"expected {tuple(target.shape)}")
    return target
  part = {}
  for name, value in target.items():
    if isinstance(stored, dict) and name in stored:
      kept = _stored_part(value, stored[name], workdir, f"{path}/{name}", missing)
      if not isinstance(kept, dict) or kept:
        part[name] = kept
    else:
      missing.append(f"{path}/{name}")
  return part


def save_variables(workdir: str, variables: Any, step: int = 0, ema: bool = False) -> None:
  """Writes `variables` ({'params': ..., other collections}) as checkpoint `step` of
  `workdir`, readable by `restore_variables` (e.g. weights imported from another
  framework); `ema`: the params are also the EMA (`restore_variables(ema=True)`). An
  existing checkpoint there is an error: nothing is overwritten."""
  directory = _absolute(workdir) / "checkpoints"
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"workdir={workdir!r}: {directory} already holds checkpoints")
  checkpointer = Checkpointer(str(directory), async_save=False)
  try:
    state = {"params": variables["params"],
             "model_state": {k: v for k, v in variables.items() if k != "params"}}
    if ema:
      state["ema_params"] = variables["params"]
    checkpointer.save(step, state, None)
    checkpointer.wait()
  finally:
    checkpointer.close()
