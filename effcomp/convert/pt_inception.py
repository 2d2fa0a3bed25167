"""pytorch-fid's FID Inception weights (`pt_inception-2015-12-05-6726825d.pth`, its
`FID_WEIGHTS_URL`, downloaded by you) → `effcomp.metrics.inception.InceptionV3`.

The Flax modules carry the PyTorch module names (mseitzer/pytorch-fid
`src/pytorch_fid/inception.py`, torchvision `Inception3`), so the name map is the generic
one (`state_dict.module_names`): `Mixed_5b.branch5x5_2.conv.weight` ↔
`params/Mixed_5b/branch5x5_2/conv/kernel`, BatchNorm running statistics ↔ batch_stats.
`num_batches_tracked` is reported unused.

  convert_pt_inception("pt_inception-2015-12-05-6726825d.pth", "fid_inception.npz")  # torch, once
  variables = load_fid_weights("fid_inception.npz")                                 # no torch
"""

from typing import Any, Dict

import numpy as np

from effcomp.convert import state_dict
from effcomp.metrics import inception

CONTAINERS = ()


def check_model(model) -> None:
  if not isinstance(model, inception.InceptionV3):
    raise ValueError(f"model: {type(model).__name__}; pytorch-fid's weights are an "
                     "effcomp.metrics.inception.InceptionV3")


def name_map(model) -> state_dict.NameMap:
  check_model(model)
  return state_dict.module_names


def _convert(tensors: Dict[str, np.ndarray], source: str) -> Dict[str, Any]:
  model = inception.InceptionV3()
  try:
    variables, _ = state_dict.from_state_dict(tensors, inception.abstract_variables(model),
                                              name_map(model))
  except ValueError as e:
    raise ValueError(f"{source} is not pytorch-fid's FID Inception: {e}") from e
  return variables


def load_fid_weights(path: str) -> Dict[str, Any]:
  """Flax variables for `InceptionV3` from an `.npz` whose names are the PyTorch state-dict
  keys (`convert_pt_inception` writes it) or from the `.pth` itself (needs torch).

  Raises `FileNotFoundError` for a missing file and `ValueError` naming the misshapen or
  missing tensors.
  """
  try:
    tensors = state_dict.read(path, CONTAINERS)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"path={path!r} does not exist: expected an .npz made from "
                            f"pytorch-fid's {inception.FID_WEIGHTS_FILE} by "
                            "convert_pt_inception") from e
  return _convert(tensors, f"path={path!r}")


def convert_pt_inception(pth_path: str, npz_path: str) -> str:
  """pytorch-fid's `.pth` state dict → an `.npz` of the same names (float32) that
  `load_fid_weights` reads without torch, after checking it converts. Returns `npz_path`."""
  tensors = state_dict.read(pth_path, CONTAINERS)
  _convert(tensors, f"pth_path={pth_path!r}")
  np.savez(npz_path, **tensors)
  return npz_path
