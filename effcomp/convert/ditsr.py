"""The official DiT-SR checkpoints → effcomp's `dit_sr` (AdaFM).

Sources: the published DiT-SR code (kunncheng/DiT-SR as carried by MateoBodon/DiT-SR up
to Kun Cheng's last commit 43fc6f4) `models/unet.py` `DiTSRModel` and
`models/swin_transformer.py` `BasicLayer`, `SwinTransformerBlock_AdaFM`, `WindowAttention`,
`Mlp`; checkpoints as ResShift's (`utils/util_net.reload_model`: a state dict, or
{'state_dict': ...}, with possible `module.` keys). Key layout, L = len(channel_mult):

  time_embed.{0,2}                      Linear, Linear (SiLU between)
  input_blocks.0.0                      conv 3×3 on [x_t ‖ lq]
  input_blocks.{1+2l}.0                 level l's BasicLayer (absent without attention)
  input_blocks.{2+2l}.0.op              level l's strided conv (l < L − 1)
  middle_block.0                        BasicLayer
  output_blocks.{2(L−1−l)+i}.0          level l's i-th conv 3×3 on [h ‖ skip] (i = 0, 1)
  output_blocks.{2(L−1−l)+i}.1          its BasicLayer (depth swin_depth for i = 0, 1 for i = 1)
  output_blocks.{2(L−1−l)+1}.{2|1}.conv the nearest-×2 upsampler's conv (l > 0)
  out.{0,2}                             GroupNorm32, conv 3×3
  BasicLayer: patch_embed.proj, patch_unembed.proj (1×1 convs), blocks.j.{norm1, norm2}
  (GroupNorm32), blocks.j.attn.{qkv, proj, relative_position_bias_table},
  blocks.j.mlp.{fc1, fc2} (1×1 convs ↔ effcomp Dense), blocks.j.adaLN_scale_{msa,mlp}.1
  (Linear ↔ `adafm_msa`, `adafm_mlp`).

AdaFM: the official scale is the raw Linear output W·e + b, effcomp's 1 + W·e + b' (its
Linear starts at zero, `effcomp.models.sr.dit_sr`); `ADAFM_BIAS` reads b' = b − 1 and
writes b = b' + 1 (exact in float32 for b in [0.5, 2], else to one rounding), so the
converted model computes the official scale. Buffers effcomp recomputes —
`attn.relative_position_index` and the shifted blocks' `attn_mask` — are reported unused;
`recomputed(model)` gives effcomp's values under the official keys (equal to the official
ones: benchmarks/interop_resshift.py checks it).

The official code needs two of effcomp's compatibility fields (`check_model`):
`window_mask='reference'` (its shifted-window mask, `effcomp.models.sr.dit_sr`) and
`image_size` = the official config's model.params.image_size (64 for realsr_DiT.yaml): its
windows, shifts and FFT patches are fixed per level for that side, which also fixes the
shapes of the bias tables and AdaFM Linears (build the template with inputs of at least
that side). The fork's own edits to `models/unet.py` (`in_channels` counting the LR
channels, bilinear resizing of a differently sized LR condition, `min(window_size, ds)`)
leave keys and shapes as published and, with the LR condition at x's size, the forward.
Not covered: `lq_size ≠ image_size` (the official strided `feature_extractor`; its keys
come back unused and conv_in's shape is refused), `patch_norm=True` (`patch_embed.norm`
keys come back unused; effcomp has no such norm).
"""

from typing import Dict, Optional, Tuple

import numpy as np

from effcomp.convert import state_dict
from effcomp.convert.state_dict import CONV, CONV1X1_AS_LINEAR, LINEAR, SAME, Layout, Path
from effcomp.models.sr import dit_sr, swinir

CONTAINERS = ("state_dict",)
# Official AdaFM bias b ↔ effcomp b − 1 (effcomp's scale is 1 + Linear).
ADAFM_BIAS = Layout("adafm_bias", lambda a: a - 1.0, lambda a: a + 1.0)
_GROUPS = 32  # official `normalization`: GroupNorm32(32, channels)


def check_fields(model, fields: Dict[str, object], what: str) -> None:
  """ValueError naming the config.model fields of `model` that differ from `fields`."""
  wrong = {k: getattr(model, k) for k, v in fields.items() if getattr(model, k) != v}
  if model.image_size is None:
    wrong["image_size"] = None
  if wrong:
    raise ValueError(f"config.model {wrong}: the official {what} needs "
                     f"{', '.join(f'{k}={v!r}' for k, v in fields.items())} and image_size "
                     "set to the official config's model.params.image_size (64 in the recipes)")


def check_model(model) -> None:
  """Raises ValueError unless `model` computes the official DiTSRModel's forward."""
  if not isinstance(model, dit_sr.DiTSR):
    raise ValueError(f"config.model: {type(model).__name__}; the DiT-SR checkpoints are "
                     "dit_sr models")
  check_fields(model, {"conditioning": "adafm", "norm_groups": _GROUPS, "window_mask": "reference"},
               "DiTSRModel")


def leaf(key: str, name: str, kernel: Layout, bias: Layout = SAME) -> Tuple[str, Layout]:
  """A conv / Dense / GroupNorm leaf `name` of the official module `key`."""
  if name == "kernel":
    return f"{key}.weight", kernel
  if name == "scale":
    return f"{key}.weight", SAME
  if name == "bias":
    return f"{key}.bias", bias
  raise KeyError(name)


def swin_layer(key: str, mods, name: str) -> Tuple[str, Layout]:
  """A leaf of an effcomp Stage (path `mods` inside it) ↔ official BasicLayer `key`."""
  if mods[0] in ("patch_embed", "patch_unembed"):
    return leaf(f"{key}.{mods[0]}.proj", name, CONV)
  block = f"{key}.blocks.{mods[0].removeprefix('blocks_')}"
  sub = mods[1]
  if sub == "attn":
    if name == "relative_position_bias_table":
      return f"{block}.attn.{name}", SAME
    return leaf(f"{block}.attn.{mods[2]}", name, LINEAR)
  if sub in ("norm1", "norm2"):
    return leaf(f"{block}.{sub}", name, SAME)
  if sub in ("fc1", "fc2"):
    return leaf(f"{block}.mlp.{sub}", name, CONV1X1_AS_LINEAR)
  if sub in ("adafm_msa", "adafm_mlp"):
    return leaf(f"{block}.adaLN_scale_{sub.removeprefix('adafm_')}.1", name, LINEAR,
                ADAFM_BIAS)
  raise KeyError(sub)


def _stages(model) -> Dict[str, Tuple[str, int, int]]:
  """effcomp Stage name → (official BasicLayer key, level, depth)."""
  levels = len(model.channel_mult)
  out = {"middle": ("middle_block.0", levels - 1, model.swin_depth)}
  for level in range(levels):
    if dit_sr.has_stage(model, level):
      out[f"down_{level}_stage"] = (f"input_blocks.{1 + 2 * level}.0", level, model.swin_depth)
      for i, depth in enumerate((model.swin_depth, 1)):
        out[f"up_{level}_{i}_stage"] = (f"output_blocks.{2 * (levels - 1 - level) + i}.1",
                                        level, depth)
  return out


def _modules(model) -> Dict[str, Tuple[str, Layout]]:
  """effcomp top-level conv / norm / Dense → (official module key, kernel layout)."""
  levels = len(model.channel_mult)
  out = {"time_embed/linear_0": ("time_embed.0", LINEAR),
         "time_embed/linear_1": ("time_embed.2", LINEAR),
         "conv_in": ("input_blocks.0.0", CONV), "out_norm": ("out.0", SAME),
         "conv_out": ("out.2", CONV)}
  for level in range(levels):
    if level < levels - 1:
      out[f"down_{level}_downsample"] = (f"input_blocks.{2 + 2 * level}.0.op", CONV)
    for i in (0, 1):
      out[f"up_{level}_{i}_conv"] = (f"output_blocks.{2 * (levels - 1 - level) + i}.0", CONV)
    if level > 0:
      index = 2 if dit_sr.has_stage(model, level) else 1
      out[f"up_{level}_upsample"] = (
          f"output_blocks.{2 * (levels - 1 - level) + 1}.{index}.conv", CONV)
  return out


def name_map(model) -> state_dict.NameMap:
  """effcomp path → (official key, layout) for `model` (a `check_model`-ed DiTSR)."""
  check_model(model)
  stages, modules = _stages(model), _modules(model)

  def name(path: Path) -> Optional[Tuple[str, Layout]]:
    _, *mods, last = path
    if mods[0] in stages:
      return swin_layer(stages[mods[0]][0], mods[1:], last)
    key, kernel = modules["/".join(mods)]
    return leaf(key, last, kernel)

  return name


def block_geometry(model, level: int, j: int) -> Tuple[int, int]:
  """(window, shift) of block j of a level-`level` Stage, as the official constructor fixes
  them for `model.image_size` (SwinTransformerBlock: min(resolution) ≤ window → no shift)."""
  side = dit_sr.level_side(model, level)
  ws = min(model.window_size, side)
  return ws, (ws // 2 if j % 2 and side > model.window_size else 0)


def buffers(model, stages: Dict[str, Tuple[str, int, int]]) -> Dict[str, np.ndarray]:
  """effcomp's values of the official buffers of `stages` (name → (key, level, depth)):
  `relative_position_index` [w², w²] and, for shifted blocks, `attn_mask` [nW, w², w²]."""
  out = {}
  for key, level, depth in stages.values():
    side = dit_sr.level_side(model, level)
    for j in range(depth):
      ws, shift = block_geometry(model, level, j)
      out[f"{key}.blocks.{j}.attn.relative_position_index"] = swinir.relative_position_index(ws)
      if shift:
        out[f"{key}.blocks.{j}.attn_mask"] = dit_sr.reference_window_mask(side, side, ws, shift)
  return out


def recomputed(model) -> Dict[str, np.ndarray]:
  """The official buffers effcomp computes instead of reading, under their official keys."""
  check_model(model)
  return buffers(model, _stages(model))
