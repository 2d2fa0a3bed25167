"""BasicSR checkpoints (XPixelGroup/BasicSR) → effcomp's EDSR and SwinIR.

BasicSR saves {'params': state_dict} or, with an EMA generator, also {'params_ema': ...}
(the EMA weights are the ones it evaluates): `CONTAINERS`, in that order of preference.

EDSR, `basicsr/archs/edsr_arch.py` (`EDSR`, blocks `arch_util.ResidualBlockNoBN`,
`arch_util.Upsample`) → `effcomp.models.sr.edsr.EDSR`: `conv_first`, `body.{i}.conv{1,2}`,
`conv_after_body`, `upsample.{2j}` (the convs of the nn.Sequential; the odd entries are
PixelShuffles), `conv_last`. Its mean shift is the attribute `self.mean`, not a buffer, so
no key holds it: effcomp's `DIV2K_RGB_MEAN` equals BasicSR's default `rgb_mean`, and
`rgb_range` must be set to the options' `img_range` (255 in every EDSR option file, effcomp's
default), which no checkpoint records either.

SwinIR, `basicsr/archs/swinir_arch.py` (`SwinIR`, `RSTB`, `BasicLayer`,
`SwinTransformerBlock`, `WindowAttention`, `Mlp`, `PatchEmbed`, `UpsampleOneStep`,
`Upsample`) → `effcomp.models.sr.swinir.SwinIR`: `conv_first`, `patch_embed.norm`
(patch_size 1: PatchEmbed is flatten + this LayerNorm), `layers.{i}.residual_group.
blocks.{j}.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table, norm2,
mlp.fc1, mlp.fc2}`, `layers.{i}.conv` (resi_connection '1conv'), `norm`,
`conv_after_body`, then `upsample.0` ('pixelshuffledirect') or `conv_before_upsample.0`,
`upsample.{2j}`, `conv_last` ('pixelshuffle'). The fused qkv Linear ports as it is: both
sides split its 3C outputs as [3, heads, head_dim]; the bias table [(2w−1)², heads] too.
The buffers `relative_position_index` and `attn_mask` (shifted blocks; computed for the
construction-time img_size) are recomputed by effcomp (`swinir.relative_position_index`,
`swinir.shifted_window_mask`, equal values) and reported unused. `img_range` is not in the
checkpoint: 1 in BasicSR's and SwinIR's SR options, effcomp's default.

Not covered: resi_connection '3conv', upsampler 'nearest+conv' (real-world SR) and ''
(denoising / JPEG), ape=True (`check_tensors` names them from the keys); scale 8
(`check_model`); a model built with img_size ≤ window_size, for which BasicSR shrinks the
window to img_size (a bias-table shape error).
"""

from typing import Mapping, Optional, Tuple

import numpy as np

from effcomp.convert import state_dict
from effcomp.convert.state_dict import CONV, LINEAR, SAME, Layout, Path
from effcomp.models.sr import edsr, swinir
from effcomp.models.sr.common import check_scale

CONTAINERS = ("params_ema", "params")
_LEAF = {"scale": "weight", "bias": "bias"}  # LayerNorm (and every bias)
_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn": "attn", "fc1": "mlp.fc1",
          "fc2": "mlp.fc2"}
_DENSE = ("qkv", "proj", "fc1", "fc2")  # Linear layers; every other kernel is a Conv2d
# Keys only a model effcomp cannot build has: {key: the official option it shows}.
_UNSUPPORTED = {"conv_after_body.0.weight": "resi_connection='3conv'",
                "layers.0.conv.0.weight": "resi_connection='3conv'",
                "conv_up1.weight": "upsampler='nearest+conv'",
                "absolute_pos_embed": "ape=True"}


def check_model(model) -> None:
  """Raises ValueError unless `model` is an effcomp EDSR or SwinIR that a BasicSR
  checkpoint can fill (the fields the checkpoint does not record are not checked)."""
  if not isinstance(model, (edsr.EDSR, swinir.SwinIR)):
    raise ValueError(f"config.model: {type(model).__name__}; BasicSR's EDSR and SwinIR "
                     "checkpoints convert to name='edsr' or name='swinir'")
  try:
    if isinstance(model, edsr.EDSR):
      check_scale(model.scale)
    else:
      model.check()
  except ValueError as e:  # e names the field: say where it is set
    raise ValueError(f"config.model.{e}") from e


def check_tensors(tensors: Mapping[str, np.ndarray]) -> None:
  """Raises ValueError, naming the official option, when the checkpoint is of an EDSR or
  SwinIR variant that effcomp does not implement."""
  found = sorted({option for key, option in _UNSUPPORTED.items() if key in tensors})
  if "layers.0.residual_group.blocks.0.norm1.weight" in tensors and \
      "upsample.0.weight" not in tensors:
    found.append("upsampler='' (denoising / JPEG: conv_last, no upsampler)")
  if found:
    raise ValueError(f"checkpoint of a BasicSR model with {', '.join(found)}: effcomp's "
                     f"SwinIR (config.model.upsampler in {swinir.UPSAMPLERS}, one conv per "
                     "residual connection, no absolute position embedding) cannot hold it")


def _layer(name: str, leaf: str, dense: bool = False) -> Tuple[str, Layout]:
  """A Conv2d (kernel → weight, OIHW), Linear (kernel → weight, [out, in]) or LayerNorm
  (scale → weight) leaf of the official module `name`."""
  if leaf == "kernel":
    return f"{name}.weight", LINEAR if dense else CONV
  return f"{name}.{_LEAF[leaf]}", SAME


def _edsr(mods, leaf) -> Optional[Tuple[str, Layout]]:
  if mods[0].startswith("body_"):
    return _layer(f"body.{mods[0].removeprefix('body_')}.{mods[1]}", leaf)
  if mods[0] == "upsample":
    return _layer(f"upsample.{2 * int(mods[1].removeprefix('conv_'))}", leaf)
  return _layer(mods[0], leaf)


def _swinir(mods, leaf) -> Optional[Tuple[str, Layout]]:
  head, *rest = mods
  if head == "patch_embed_norm":
    return _layer("patch_embed.norm", leaf)
  if head == "conv_before_upsample":
    return _layer("conv_before_upsample.0", leaf)
  if head == "upsample":  # UpsampleOneStep's `conv`, or Upsampler's `conv_j`
    j = 0 if rest == ["conv"] else int(rest[0].removeprefix("conv_"))
    return _layer(f"upsample.{2 * j}", leaf)
  if not head.startswith("layers_"):
    return _layer(head, leaf)
  prefix = f"layers.{head.removeprefix('layers_')}"
  if rest == ["conv"]:
    return _layer(f"{prefix}.conv", leaf)
  block = f"{prefix}.residual_group.blocks.{rest[0].removeprefix('blocks_')}"
  name = ".".join([block, _BLOCK[rest[1]], *rest[2:]])
  if leaf == "relative_position_bias_table":
    return f"{name}.{leaf}", SAME
  return _layer(name, leaf, dense=rest[-1] in _DENSE)


def name_map(model) -> state_dict.NameMap:
  """effcomp path → (official key, layout) for `model` (a `check_model`-ed EDSR / SwinIR)."""
  check_model(model)
  rules = _edsr if isinstance(model, edsr.EDSR) else _swinir

  def name(path: Path) -> Optional[Tuple[str, Layout]]:
    collection, *mods, leaf = path
    if collection != "params" or not mods:
      return None
    return rules(mods, leaf)

  return name
