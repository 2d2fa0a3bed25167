"""ResShift's U-Net (zsyOAOA/ResShift `models/unet.py` `UNetModelSwin`) and DiT-SR (the
published code as carried by MateoBodon/DiT-SR, `models/unet.py` `DiTSRModel`) against
effcomp's `resshift_unet` and `dit_sr` at the recipes' sizes (ResShift
configs/realsr_swinunet_realesrgan256_journal.yaml; DiT-SR configs/realsr_DiT.yaml as
published, 64² latents of 3 channels), random weights, converted by `effcomp.convert`.

Inputs as the official forward takes them: x_t and the LR condition (already at x_t's
size, lq_size = image_size), timesteps fixed. Two settings per model: normal(0, 0.02)
weights on 2 samples of 64² (the models' training size); and the same weights with the
attention sharpened (qkv ×10) and, for DiT-SR, AdaFM's raw scale moved to ≈ 1 (biases + 1,
as a trained model's; at ≈ 0 it mutes every transformer block) on 1 sample of 128²
(larger than the official model was built for, as in ResShift's chopped inference). Only
the second tells the shifted-window masks apart: its note gives effcomp's error with
Swin's mask instead of the reference code's. The fork's `DiTSRModel` counts the LR
channels in `in_channels` (the published code adds them itself) and resizes the condition
only when its size differs from x_t's: with in_channels = 3 + 3 it is the published model,
keys and forward.
"""

import importlib
import os
from typing import Any, Dict, List

import jax
import ml_collections
import numpy as np
import torch

from benchmarks import interop_common as ic
from effcomp import runs
from effcomp.convert import ditsr, resshift, state_dict

# The recipes' model.params (the official configs), as the official constructors take them.
RESSHIFT = dict(image_size=64, in_channels=3, model_channels=160, out_channels=3,
                attention_resolutions=[64, 32, 16, 8], dropout=0, channel_mult=[1, 2, 2, 4],
                num_res_blocks=[2, 2, 2, 2], conv_resample=True, dims=2, use_fp16=False,
                num_head_channels=32, use_scale_shift_norm=True, resblock_updown=False,
                swin_depth=2, swin_embed_dim=192, window_size=8, mlp_ratio=4, cond_lq=True,
                lq_size=64)
DITSR = dict(image_size=64, in_channels=3 + 3, model_channels=160, out_channels=3,
             attention_resolutions=[64, 32, 16, 8], dropout=0.1, channel_mult=[1, 2, 2, 4],
             conv_resample=True, dims=2, use_fp16=False, num_head_channels=32, swin_depth=6,
             swin_embed_dim=192, window_size=8, mlp_ratio=4, cond_lq=True, lq_size=64)
# The same models in effcomp, with the compatibility fields the converters need.
COMPAT = dict(image_size=64, window_mask="reference")
EFFCOMP = {"resshift": dict(name="resshift_unet", num_res_blocks=2, **COMPAT),
           "ditsr": dict(name="dit_sr", swin_depth=6, dropout=0.1, **COMPAT)}
CONVERTERS = {"resshift": resshift, "ditsr": ditsr}
CASES = (("resshift", "ResShift", "UNetModelSwin", RESSHIFT, "ResShift U-Net"),
         ("ditsr", "DiT-SR-fork", "DiTSRModel", DITSR, "DiT-SR"))
QKV_GAIN = 10.0  # the sharpened setting's qkv weights: std 0.2


def _official(root: str, repo: str, cls: str, kwargs: Dict[str, Any]) -> torch.nn.Module:
  with ic.official_modules(os.path.join(root, repo)):
    return getattr(importlib.import_module("models.unet"), cls)(**kwargs)


def _sharpen_(module: torch.nn.Module) -> None:
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith("attn.qkv.weight"):
        p.mul_(QKV_GAIN)
      if "adaLN_scale_" in name and name.endswith("bias"):
        p.add_(1.0)


def _effcomp(system: str, tensors: Dict[str, np.ndarray]):
  """The converted effcomp model (the recipe's at 64²) and its variables."""
  model = runs.build_model(ml_collections.ConfigDict(EFFCOMP[system]), "float32")
  x, t = np.zeros((1, 64, 64, 3), np.float32), np.zeros((1,), np.int32)
  template = jax.eval_shape(model.init, jax.random.key(0), x, t, x)
  variables, report = state_dict.from_state_dict(tensors, template,
                                                 CONVERTERS[system].name_map(model))
  if set(report.unused) != set(CONVERTERS[system].recomputed(model)) or report.unfilled:
    raise ValueError(f"{system}: unexpected conversion report\n{report.lines()}")
  return model, variables


def _row(system: str, label: str, official: torch.nn.Module, batch: int, size: int,
         weights: str, note: str) -> Dict[str, Any]:
  rng = np.random.default_rng(size)
  x, lq = (rng.normal(size=(batch, size, size, 3)).astype(np.float32) for _ in range(2))
  t = np.array([3, 11][:batch], np.int32)
  model, variables = _effcomp(system, ic.state_dict_numpy(official))
  forward = jax.jit(lambda v, x_t, steps, cond, m=model: m.apply(v, x_t, steps, cond))
  with torch.no_grad():
    theirs = ic.nhwc(official(ic.nchw(x), torch.from_numpy(t).long(), ic.nchw(lq)))
  return ic.row(
      label, f"{label} (recipe size, {batch} × {size}²×3 + LR {size}²×3)", weights,
      forward(variables, x, t, lq), theirs,
      params=(ic.torch_params(official), ic.effcomp_params(variables)),
      gmacs=(ic.torch_gmacs(official, ic.nchw(x[:1]), torch.from_numpy(t[:1]).long(),
                            ic.nchw(lq[:1])),
             ic.effcomp_gmacs(forward, variables, x[:1], t[:1], lq[:1])), note=note)


def _swin_mask_error(system: str, official: torch.nn.Module, size: int) -> float:
  """effcomp's error on the sharpened setting with Swin's shifted-window mask instead."""
  rng = np.random.default_rng(size)
  x, lq = (rng.normal(size=(1, size, size, 3)).astype(np.float32) for _ in range(2))
  t = np.array([3], np.int32)
  model, variables = _effcomp(system, ic.state_dict_numpy(official))
  with torch.no_grad():
    theirs = ic.nhwc(official(ic.nchw(x), torch.from_numpy(t).long(), ic.nchw(lq)))
  ours = jax.jit(model.clone(window_mask="swin").apply)(variables, x, t, lq)
  return ic.relative_max_diff(ours, theirs)


def rows(root: str, timing: bool = True) -> List[Dict[str, Any]]:
  del timing  # forward equivalence only: no train-step timing for these models
  torch.set_num_threads(ic.THREADS)
  out = []
  for system, repo, cls, kwargs, label in CASES:
    official = _official(root, repo, cls, kwargs).eval()
    initial = ic.state_dict_numpy(official)  # as built (randomize_ perturbs float masks)
    recomputed = CONVERTERS[system].recomputed(
        runs.build_model(ml_collections.ConfigDict(EFFCOMP[system]), "float32"))
    same = all(np.array_equal(initial[k], v) for k, v in recomputed.items())
    note = (f"official buffers as built (relative_position_index, attn_mask: "
            f"{len(recomputed)}) {'equal' if same else 'DIFFER from'} effcomp's; effcomp "
            "image_size=64, window_mask='reference'")
    if system == "ditsr":
      note += ("; MateoBodon/DiT-SR fork at HEAD with in_channels=6 (= published 3 + LR 3); "
               "GMACs (official) leave out AdaFM's FFTs, effcomp counts its DFT matmuls")
    ic.randomize_(official)
    out.append(_row(system, label, official, 2, 64, f"random (normal, std {ic.STD})", note))
    _sharpen_(official)
    swin = _swin_mask_error(system, official, 128)
    out.append(_row(system, label, official, 1, 128,
                    f"random (std {ic.STD}), qkv ×{QKV_GAIN:g}"
                    + (", AdaFM biases + 1" if system == "ditsr" else ""),
                    f"{note}; with Swin's mask (window_mask='swin') instead: {swin:.2g}"))
  return out
