"""BasicSR (XPixelGroup) against effcomp's SR models: EDSR-baseline ×2
(options/train/EDSR/train_EDSR_Mx2.yml) and SwinIR-light ×2 (SwinIR's lightweight_sr
setting: embed_dim 60, depths / heads 4 × 6, window 8, mlp_ratio 2, 'pixelshuffledirect',
img_range 1), random weights, 2 LR images of 48² in [0, 1].

The official arch files are imported as they are (`basicsr/archs/arch_util.py`,
`edsr_arch.py`, `swinir_arch.py`, `basicsr/utils/registry.py`), but not through
`basicsr/__init__.py` and `basicsr/archs/__init__.py`, which import the whole package
(data, models, losses: cv2, lmdb, ...) and the `version.py` that only `setup.py` writes:
`_stand_in_packages` registers bare package modules for `basicsr`, `basicsr.archs` and
`basicsr.utils` whose `__path__` is the real folder, so the submodules load from there.
"""

import importlib
import os
import sys
import types
from typing import Any, Dict, List

import jax
import ml_collections
import numpy as np
import torch

from benchmarks import interop_common as ic
from effcomp import runs
from effcomp.convert import basicsr, state_dict
from effcomp.models.sr import DIV2K_RGB_MEAN, swinir

REPO = "BasicSR"
SIZE, BATCH = 48, 2  # LR side (EDSR's training patch) and images per forward
EDSR_X2 = ({"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "upscale": 2,
            "res_scale": 1, "img_range": 255.0, "rgb_mean": (0.4488, 0.4371, 0.4040)},
           {"name": "edsr", "scale": 2, "n_resblocks": 16, "n_feats": 64, "res_scale": 1.0,
            "rgb_range": 255.0})
# img_size = the input side, so the forward uses the stored attn_mask buffers.
SWINIR_LIGHT_X2 = ({"upscale": 2, "in_chans": 3, "img_size": SIZE, "window_size": 8,
                    "img_range": 1.0, "depths": [6, 6, 6, 6], "embed_dim": 60,
                    "num_heads": [6, 6, 6, 6], "mlp_ratio": 2, "upsampler": "pixelshuffledirect",
                    "resi_connection": "1conv"},
                   {"name": "swinir", "scale": 2, "embed_dim": 60, "depths": (6, 6, 6, 6),
                    "num_heads": (6, 6, 6, 6), "window_size": 8, "mlp_ratio": 2.0,
                    "img_range": 1.0, "upsampler": "pixelshuffledirect"})


def _stand_in_packages(package_dir: str) -> None:
  """Bare `basicsr`, `basicsr.archs`, `basicsr.utils` packages over the real folders
  (their `__init__.py` not run); `basicsr.utils.get_root_logger`, which arch_util.py
  imports from the package, is the real one from `basicsr/utils/logger.py`."""
  for name in ("basicsr", "basicsr.archs", "basicsr.utils"):
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(package_dir, *name.split(".")[1:])]
    sys.modules[name] = module
  sys.modules["basicsr"].archs = sys.modules["basicsr.archs"]
  sys.modules["basicsr"].utils = sys.modules["basicsr.utils"]
  logger = importlib.import_module("basicsr.utils.logger")
  sys.modules["basicsr.utils"].get_root_logger = logger.get_root_logger


def _official(root: str, module: str, cls: str, kwargs: Dict[str, Any]) -> torch.nn.Module:
  repo_dir = os.path.join(root, REPO)
  with ic.official_modules(repo_dir):
    _stand_in_packages(os.path.join(repo_dir, "basicsr"))
    return getattr(importlib.import_module(f"basicsr.archs.{module}"), cls)(**kwargs)


def _randomized(official: torch.nn.Module) -> torch.nn.Module:
  """`ic.randomize_` for the parameters only: SwinIR's float buffer `attn_mask` is a
  constant of the architecture (its -100 mask), not state to perturb."""
  buffers = {k: b.clone() for k, b in official.named_buffers()}
  ic.randomize_(official)
  with torch.no_grad():
    for k, b in official.named_buffers():
      b.copy_(buffers[k])
  return official.eval()


def _forward(model):
  return lambda variables, images: model.apply(variables, images, train=False)


def _effcomp(fields: Dict[str, Any], tensors: Dict[str, np.ndarray], x: np.ndarray):
  model = runs.build_model(ml_collections.ConfigDict(fields), "float32")
  template = jax.eval_shape(model.init, jax.random.key(0), x[:1])
  basicsr.check_tensors(tensors)
  variables, report = state_dict.from_state_dict(tensors, template, basicsr.name_map(model))
  return model, variables, report


def _check_constants(official: torch.nn.Module) -> List[str]:
  """Asserts that what effcomp computes instead of reading equals the official values: the
  mean shift (`self.mean`, an attribute) and every SwinIR relative_position_index /
  attn_mask buffer (`swinir.relative_position_index`, `swinir.shifted_window_mask`);
  returns the buffers' keys."""
  np.testing.assert_array_equal(official.mean.numpy().reshape(-1),
                                np.asarray(DIV2K_RGB_MEAN, np.float32))
  checked = []
  for key, value in official.state_dict().items():
    if key.endswith("relative_position_index"):
      expected = swinir.relative_position_index(int(round(value.shape[0] ** 0.5)))
    elif key.endswith("attn_mask"):
      ws = int(round(value.shape[1] ** 0.5))
      expected = swinir.shifted_window_mask(SIZE, SIZE, ws, ws // 2)
    else:
      continue
    np.testing.assert_array_equal(value.numpy(), expected, err_msg=key)
    checked.append(key)
  return checked


def rows(root: str, timing: bool = True) -> List[Dict[str, Any]]:
  del timing  # no train step timed for BasicSR's models
  x = np.random.default_rng(0).uniform(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32)
  cases = [("EDSR-baseline ×2 (2 × 48²)", "edsr_arch", "EDSR", *EDSR_X2),
           ("SwinIR-light ×2 (2 × 48²)", "swinir_arch", "SwinIR", *SWINIR_LIGHT_X2)]
  out = []
  for label, module, cls, kwargs, fields in cases:
    official = _randomized(_official(root, module, cls, kwargs))
    model, variables, report = _effcomp(fields, ic.state_dict_numpy(official), x)
    forward = _forward(model)
    with torch.no_grad():
      theirs = ic.nhwc(official(ic.nchw(x)))
    buffers = _check_constants(official)
    if sorted(buffers) != sorted(report.unused):
      raise AssertionError(f"{label}: unused official tensors {report.unused}")
    note = (f"the {len(buffers)} buffers relative_position_index / attn_mask are recomputed "
            "by effcomp (checked equal)" if buffers else "")
    out.append(ic.row("BasicSR", label, f"random (normal, std {ic.STD})", forward(variables, x),
                      theirs, params=(ic.torch_params(official), ic.effcomp_params(variables)),
                      gmacs=(ic.torch_gmacs(official, ic.nchw(x[:1])),
                             ic.effcomp_gmacs(forward, variables, x[:1])), note=note))
  return out
