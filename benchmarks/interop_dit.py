"""DiT (facebookresearch/DiT, `models.py`) and U-DiT (YuchuanTian/U-DiT, `udit_models.py`)
against effcomp's `DiT` and `UDiT`: DiT-S/2 (`DiT_S_2`) and U-DiT-S (`U_DiT_S`) at the
ImageNet-256 latent (32×32×4, 1000 classes, learn_sigma) with random weights, in eval
mode; U-DiT-S also in its folded inference form (`reparameterize`, the official
`add_buffer`). The train steps (AdamW, lr 1e-4, no weight decay, as DiT trains; MSE on
the output) are timed on both sides."""

import importlib
import os
from typing import Any, Callable, Dict, List, Tuple

import jax
import ml_collections
import numpy as np
import torch

from benchmarks import interop_common as ic
from effcomp import runs
from effcomp.convert import dit as dit_convert
from effcomp.convert import state_dict
from effcomp.convert import udit as udit_convert
from effcomp.models.dit import DIT_SIZES, UDIT_SIZES, reparameterize

TIMESTEPS = np.array([0, 250, 500, 999])
LABELS = np.array([0, 1, 500, 999])
LATENT = (32, 32, 4)  # ImageNet 256×256 through the f = 8 VAE
WEIGHTS = f"random (normal, std {ic.STD})"


def _official(root: str, repo: str, module: str, factory: str) -> torch.nn.Module:
  with ic.official_modules(os.path.join(root, repo)):
    return getattr(importlib.import_module(module), factory)()


def _torch_inputs(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> Tuple[torch.Tensor, ...]:
  return ic.nchw(x), torch.from_numpy(np.asarray(t, np.int64)), torch.from_numpy(
      np.asarray(y, np.int64))


def _effcomp(name: str, sizes: Dict[str, Any], tensors: Dict[str, np.ndarray], converter):
  model = runs.build_model(ml_collections.ConfigDict({"name": name, **sizes}), "float32")
  template = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, *LATENT), np.float32),
                            np.zeros(1, np.int32), np.zeros(1, np.int32))
  variables, report = state_dict.from_state_dict(tensors, template, converter.name_map(model))
  return model, variables, report


def _forward(model) -> Callable:
  return lambda variables, x, t, y: model.apply(variables, x, t, y)


def _unfused_gmacs(official: torch.nn.Module, *inputs: torch.Tensor) -> float:
  """`ic.torch_gmacs` with timm's `Attention.fused_attn` off: FlopCounterMode does not count
  the CPU kernel of `F.scaled_dot_product_attention`; the unfused path (q·kᵀ, softmax, ·v)
  computes the same and is counted."""
  attns = [m for m in official.modules() if hasattr(m, "fused_attn")]
  fused = [m.fused_attn for m in attns]
  for m in attns:
    m.fused_attn = False
  try:
    return ic.torch_gmacs(official, *inputs)
  finally:
    for m, f in zip(attns, fused):
      m.fused_attn = f


def train_steps(official: torch.nn.Module, model, variables, batch: int = 8
                ) -> Dict[str, Callable[[], None]]:
  """One train step each side (`ic.adamw_mse_steps`): batch of 32×32×4 latents, random
  timesteps and labels."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(batch, *LATENT)).astype(np.float32)
  t, y = rng.integers(0, 1000, batch), rng.integers(0, 1000, batch)
  return ic.adamw_mse_steps(official, model, variables, [x, t, y], model.out_channels)


def _step_ratio(official: torch.nn.Module, model, variables) -> float:
  """Train-step seconds effcomp / PyTorch (`train_steps`, interleaved medians)."""
  seconds = ic.interleaved_seconds(train_steps(official, model, variables))
  return seconds["effcomp"] / seconds["torch"]


def official_and_converted(root: str, name: str):
  """(official model in train mode, effcomp model, converted variables, the official
  tensors) for 'DiT-S/2' or 'U-DiT-S' with this benchmark's random weights. The tensors are
  copied in train mode: U-DiT's eval() (`FeedForward.add_buffer`) folds the 'rep' branches
  into dwconv.0.weight in place (effcomp.convert.udit)."""
  if name == "DiT-S/2":
    official = _official(root, "DiT", "models", "DiT_S_2")
    fixed = official.pos_embed.detach().clone()
    ic.randomize_(official)
    with torch.no_grad():  # randomize_ draws every Parameter, the frozen table too
      official.pos_embed.copy_(fixed)
    system, converter, expected_unused = "dit", dit_convert, dit_convert.UNUSED
  else:
    official = ic.randomize_(_official(root, "U-DiT", "udit_models", "U_DiT_S"))
    system, converter, expected_unused = "udit", udit_convert, ()
  official.train()
  tensors = {k: v.copy() for k, v in ic.state_dict_numpy(official).items()}
  model, variables, report = _effcomp(system, {**DIT_SIZES, **UDIT_SIZES}[name], tensors,
                                      converter)
  if report.unused != expected_unused:
    raise ValueError(f"{name}: {report.lines()}")
  return official, model, variables, tensors


def _dit(root: str, x: np.ndarray, timing: bool) -> List[Dict[str, Any]]:
  official, model, variables, tensors = official_and_converted(root, "DiT-S/2")
  official.eval()
  pos_delta = float(np.abs(tensors["pos_embed"] - dit_convert.fixed_pos_embed(model)).max())
  forward = _forward(model)
  with torch.no_grad():
    theirs = ic.nhwc(official(*_torch_inputs(x, TIMESTEPS, LABELS)))
  extra = {"train step effcomp / PyTorch": _step_ratio(official.train(), model, variables)
           } if timing else {}
  one = (x[:1], TIMESTEPS[:1], LABELS[:1])
  return [ic.row(
      "DiT", "DiT-S/2 (4 × 32×32×4 latents)", WEIGHTS, forward(variables, x, TIMESTEPS, LABELS),
      theirs, params=(ic.torch_params(official), ic.effcomp_params(variables)),
      gmacs=(_unfused_gmacs(official.eval(), *_torch_inputs(*one)),
             ic.effcomp_gmacs(forward, variables, *one)),
      note=(f"the official count includes the frozen pos_embed ({official.pos_embed.numel():,}), which "
            f"effcomp computes (max |Δ| {pos_delta:g}); official GMACs with timm's "
            "fused_attn off (FlopCounterMode skips the CPU SDPA kernel)"), **extra)]


def _udit(root: str, x: np.ndarray, timing: bool) -> List[Dict[str, Any]]:
  official, model, variables, tensors = official_and_converted(root, "U-DiT-S")
  official.eval()
  folded_model = model.clone(ffn="dwconv")
  folded = {"params": reparameterize(variables["params"])}
  with torch.no_grad():
    theirs = ic.nhwc(official(*_torch_inputs(x, TIMESTEPS, LABELS)))
  one = (x[:1], TIMESTEPS[:1], LABELS[:1])
  official_gmacs = ic.torch_gmacs(official, *_torch_inputs(*one))
  out = []
  cases = [("U-DiT-S, ffn='rep' (4 × 32×32×4 latents)", model, variables,
            "official eval folds the 'rep' branches (its GMACs); effcomp runs them apart"),
           ("U-DiT-S folded: reparameterize → ffn='dwconv'", folded_model, folded,
            "effcomp's folded form (udit.reparameterize) against the official add_buffer "
            "form; the official count holds the unfolded parameters")]
  for label, net, params, note in cases:
    forward = _forward(net)
    extra = {}
    if timing and net is model:
      official.train()  # clears the folded buffers; reload the unfolded weights
      official.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
      extra["train step effcomp / PyTorch"] = _step_ratio(official, model, variables)
      official.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
      official.eval()
    out.append(ic.row("U-DiT", label, WEIGHTS, forward(params, x, TIMESTEPS, LABELS), theirs,
                      params=(ic.torch_params(official), ic.effcomp_params(params)),
                      gmacs=(official_gmacs, ic.effcomp_gmacs(forward, params, *one)),
                      note=note, **extra))
  return out


def rows(root: str, timing: bool = True) -> List[Dict[str, Any]]:
  x = np.random.default_rng(0).normal(size=(len(TIMESTEPS), *LATENT)).astype(np.float32)
  return _dit(root, x, timing) + _udit(root, x, timing)
