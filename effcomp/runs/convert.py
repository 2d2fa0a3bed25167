"""Weights from another framework made an effcomp run, so every act on runs applies.

  convert.import_diffusers_vae("/data/sd-vae-ft-ema", "workdirs/sd_vae")
  # a diffusion config then sets config.teacher.workdir = "workdirs/sd_vae"
"""

import dataclasses
from typing import Optional

from effcomp import config as config_lib
from effcomp.models.vae import AutoencoderKL, diffusers_weights
from effcomp.tasks import autoencoder
from effcomp.train import checkpoint, run_info

SINGLE_DEVICE_MESH = {"data": 1, "fsdp": 1, "tensor": 1}


def import_diffusers_vae(folder: str, workdir: str, variant: Optional[str] = None
                         ) -> AutoencoderKL:
  """Writes the diffusers autoencoder in `folder` as a finished effcomp `autoencoder` run in
  `workdir` (its `config.json` and a step-0 checkpoint), the form a diffusion config's
  `config.teacher.workdir` takes; returns the model. Refuses to overwrite checkpoints."""
  model, params = diffusers_weights.load(folder, variant=variant)
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.init and f.name not in ("parent", "name", "dtype")}
  config = config_lib.base_config()
  config.model = {"name": "autoencoder_kl", **fields}
  config.task = autoencoder.task_defaults()
  checkpoint.save_variables(workdir, {"params": params})
  run_info.write(workdir, config_lib.to_dict(config), SINGLE_DEVICE_MESH)
  return model
