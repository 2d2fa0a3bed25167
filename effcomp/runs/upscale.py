"""Upscale with an opened super-resolution run: a regression model ('sr'), the whole
sampling chain of a residual-shifting diffusion model ('diffusion_sr') or its distilled
one-step student ('onestep_sr').

  upscale_fn, scale = upscale.upscaler(runs.open("workdirs/sr_swinir_x2"), tile=128)
  sr_image = upscale_fn(lr_image)        # uint8 [H, W, 3] → uint8 [H·scale, W·scale, 3]
"""

from typing import Callable, Tuple

import jax
import numpy as np

from effcomp.runs.run import Run
from effcomp.tasks import diffusion_sr, onestep_sr, sr

TASKS = ("sr", "diffusion_sr", "onestep_sr")


def upscaler(run: Run, *, tile: int = 0, overlap: int = 8, seed: int = 0
             ) -> Tuple[Callable[..., np.ndarray], int]:
  """(`lr -> sr` on uint8 images, the scale) of the run, in `tile`-pixel LR windows
  overlapping by `overlap` (0: whole images); diffusion runs sample from noise `seed`, or
  from the key `upscale_fn(lr, rng=key)` is given (one draw per image)."""
  if run.task in ("diffusion_sr", "onestep_sr"):
    make = diffusion_sr.make_teacher if run.task == "diffusion_sr" else onestep_sr.make_student
    model = make(run.model, run.params, run.config)
    default = jax.random.key(seed)
    return (lambda lr, rng=default: model.upscale(lr, rng, tile=tile, overlap=overlap),
            model.scale)
  if run.task == "sr":
    return (lambda lr, rng=None: sr.upscale(run.model, run.variables, lr, tile=tile,
                                            overlap=overlap),
            run.model.scale)
  raise ValueError(f"workdir={run.workdir!r}: a {run.task!r} run, expected one of {TASKS}")
