"""pytorch-fid's FID InceptionV3 (mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`)
against `effcomp.metrics.inception.InceptionV3`: pool3 features, random weights (the
released `pt_inception-2015-12-05` file is a download this machine cannot make)."""

import contextlib
import importlib
import os
from typing import Any, Dict, List

import jax
import numpy as np
import torch

from benchmarks import interop_common as ic
from effcomp.convert import pt_inception, state_dict
from effcomp.metrics import inception


@contextlib.contextmanager
def _without_download(module):
  """`fid_inception_v3` builds the network and then loads FID_WEIGHTS_URL; here the load is
  skipped (the weights are randomized afterwards) and the inner torchvision network, whose
  state-dict keys are the released file's, is kept."""
  build, fetch = module.fid_inception_v3, module.load_state_dict_from_url
  kept = {}
  module.load_state_dict_from_url = lambda *args, **kwargs: None
  module.fid_inception_v3 = lambda: kept.setdefault("net", build())
  load = torch.nn.Module.load_state_dict
  torch.nn.Module.load_state_dict = lambda self, *args, **kwargs: None
  try:
    yield kept
  finally:
    module.fid_inception_v3, module.load_state_dict_from_url = build, fetch
    torch.nn.Module.load_state_dict = load


def rows(root: str, timing: bool = True) -> List[Dict[str, Any]]:
  del timing
  with ic.official_modules(os.path.join(root, "pytorch-fid", "src")):
    module = importlib.import_module("pytorch_fid.inception")
    with _without_download(module) as kept:
      official = module.InceptionV3([module.InceptionV3.DEFAULT_BLOCK_INDEX])
  net = ic.randomize_(kept["net"])  # shares its parameters with `official`'s blocks
  official.eval()
  x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = official(ic.nchw(x))[0][:, :, 0, 0].numpy()
  model = inception.InceptionV3()
  variables, report = state_dict.from_state_dict(
      ic.state_dict_numpy(net), inception.abstract_variables(model), pt_inception.name_map(model))
  forward = jax.jit(model.apply)
  fc = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]["fc"]))
  return [ic.row("pytorch-fid", "FID InceptionV3 pool3 (2 × 64² → 299²)",
                 f"random (normal, std {ic.STD})", forward(variables, x), theirs,
                 params=(ic.torch_params(official), ic.effcomp_params(variables)),
                 gmacs=(ic.torch_gmacs(official, ic.nchw(x[:1])),
                        ic.effcomp_gmacs(model.apply, variables, x[:1])),
                 note=f"effcomp also holds the classifier fc ({fc:,} params, for logits) and "
                      "counts the bilinear resize to 299² (matmuls) in its MACs; "
                      f"{len(report.unused)} num_batches_tracked unused")]
