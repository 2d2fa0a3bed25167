"""Weights from other code made an effcomp run, so every act on runs applies to them.

  convert.import_checkpoint("adabin", ".../resnet20_1w1a/model.th",
                            config_lib.load("configs/adabin_resnet20_cifar10.py:official=true"),
                            "workdirs/adabin_r20_official")
  convert.import_diffusers_vae("/data/sd-vae-ft-ema", "workdirs/sd_vae")

A converted run holds the config it was converted for (`config.json`), a step-0 checkpoint
of its variables (also as the EMA when the config evaluates one) and `converted.json`
(source, file, SHA-256, the converter's report). `runs.open`, `runs.evaluate`, sampling,
upscaling and export read it like a trained run; fine-tune it with
`--config.init.workdir=<it>`. An existing run is never overwritten.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Optional

import jax
import ml_collections
from etils import epath

from effcomp import config as config_lib
from effcomp.convert import adabin, basicsr, dit, ditsr, llamagen_vq, resshift, state_dict, udit
from effcomp.models.vae import AutoencoderKL, diffusers_weights
from effcomp.runs import build
from effcomp.runs.run import abstract_variables, init_variables
from effcomp.tasks import autoencoder
from effcomp.train import checkpoint, run_info, sharding

CONVERTED_FILE = "converted.json"
SINGLE_DEVICE_MESH = {"data": 1, "fsdp": 1, "tensor": 1}
# --source name → converter module (effcomp/convert/<format>.py).
SOURCES = {"adabin": adabin, "adabin_cifar": adabin, "adabin_imagenet": adabin,
           "basicsr": basicsr, "dit": dit, "udit": udit, "resshift": resshift, "ditsr": ditsr,
           "llamagen_vq": llamagen_vq}


def is_converted(workdir: str) -> bool:
  """Whether `workdir` is a run converted from other code (weights only, no train state)."""
  return (epath.Path(workdir) / CONVERTED_FILE).exists()


def _refuse_existing(workdir: str) -> None:
  path = epath.Path(workdir)
  if (path / "config.json").exists() or (path / "checkpoints").exists():
    raise FileExistsError(f"--workdir={workdir!r} already holds a run: choose a new workdir "
                          "(nothing is overwritten)")


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _write_run(workdir: str, config: ml_collections.ConfigDict, variables: Any,
               provenance: Dict[str, Any]) -> None:
  """The run's checkpoint (step 0), config.json and converted.json."""
  checkpoint.save_variables(workdir, variables, ema=config.eval.use_ema)
  run_info.write(workdir, config_lib.to_dict(config), SINGLE_DEVICE_MESH)
  if jax.process_index() == 0:
    (epath.Path(workdir) / CONVERTED_FILE).write_text(json.dumps(provenance, indent=2))


def import_checkpoint(source: str, path: str, config: ml_collections.ConfigDict,
                      workdir: str) -> state_dict.Report:
  """Converts the official checkpoint `path` (format `source`, a key of `SOURCES`) into the
  model of `config` and writes it as a run in `workdir`; returns the converter's report.

  Raises:
    ValueError: an unknown source, a model the source cannot fill, or tensors whose shapes
      disagree with the model (naming them).
    FileExistsError: `workdir` already holds a run.
  """
  if source not in SOURCES:
    raise ValueError(f"--source={source!r}: expected one of {sorted(SOURCES)}")
  config_lib.validate(config)
  _refuse_existing(workdir)
  converter = SOURCES[source]
  model = build.build_model(config.model, config.train.compute_dtype)
  name_map = converter.name_map(model)  # checks the model first
  tensors = state_dict.read(path, converter.CONTAINERS)
  if hasattr(converter, "check_tensors"):  # a format whose variants show in its keys
    converter.check_tensors(tensors)
  mesh = sharding.create_mesh(SINGLE_DEVICE_MESH, jax.devices()[:1])
  template = abstract_variables(config, model, mesh)
  is_fresh = lambda path: path[1] in getattr(converter, "FRESH", ())
  if any(map(is_fresh, state_dict.leaves(template))):
    # variables the format never holds (a discriminator): kept at initialization
    template = init_variables(config, model)
  variables, report = state_dict.from_state_dict(tensors, template, name_map,
                                                 fill_missing=is_fresh)
  _write_run(workdir, config, variables, {
      "source": source, "checkpoint": os.path.abspath(path), "sha256": _sha256(path),
      "unused": list(report.unused), "unfilled": list(report.unfilled)})
  return report


def import_diffusers_vae(folder: str, workdir: str, variant: Optional[str] = None
                         ) -> AutoencoderKL:
  """Writes the diffusers autoencoder in `folder` as a finished effcomp `autoencoder` run in
  `workdir`, the form a diffusion config's `config.teacher.workdir` takes; returns the
  model. Refuses to overwrite a run."""
  _refuse_existing(workdir)
  model, params = diffusers_weights.load(folder, variant=variant)
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.init and f.name not in ("parent", "name", "dtype")}
  config = config_lib.base_config()
  config.model = {"name": "autoencoder_kl", **fields}
  config.task = autoencoder.task_defaults()
  _write_run(workdir, config, {"params": params},
             {"source": "diffusers", "checkpoint": os.path.abspath(folder), "variant": variant})
  return model
