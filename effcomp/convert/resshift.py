"""The official ResShift checkpoints (zsyOAOA/ResShift, e.g. `resshift_realsrx4_s15_v1.pth`,
`resshift_realsrx4_s4_v3.pth`) → effcomp's `resshift_unet`.

Sources: `models/unet.py` `UNetModelSwin` (use_scale_shift_norm=True, resblock_updown=False,
conv_resample=True, as in every released config), `ResBlock`, `Downsample`, `Upsample`,
and `models/swin_transformer.py` `BasicLayer`, `SwinTransformerBlock`, `WindowAttention`,
`Mlp`. The checkpoints are what `sampler.py` `load_model` reads: a state dict or
{'state_dict': ...}, keys possibly with `module.` (`utils/util_net.reload_model`). Key
layout, L = len(channel_mult), n = num_res_blocks, r(l, j) = 1 + l·(n + 1) + j,
u(l, i) = (L − 1 − l)·(n + 1) + i:

  time_embed.{0,2}                  Linear, Linear (SiLU between)
  input_blocks.0.0                  conv 3×3 on [x_t ‖ lq]
  input_blocks.r(l, j).0            level l's j-th ResBlock; .1 its BasicLayer (j = 0 only)
  input_blocks.r(l, n).0.op         level l's strided conv (l < L − 1)
  middle_block.{0,1,2}              ResBlock, BasicLayer, ResBlock
  output_blocks.u(l, i).0           level l's i-th ResBlock on [h ‖ skip] (i ≤ n); .1 its
                                    BasicLayer (i = 0 only)
  output_blocks.u(l, n).1.conv      the nearest-×2 upsampler's conv (l > 0)
  out.{0,2}                         GroupNorm32, conv 3×3
  ResBlock: in_layers.{0 GroupNorm32, 2 conv}, emb_layers.1 (Linear → [scale ‖ shift]),
  out_layers.{0 GroupNorm32, 3 conv}, skip_connection (1×1 conv, when the width changes).
  BasicLayer: as DiT-SR's (`effcomp.convert.ditsr`) without the AdaFM Linears.

Buffers effcomp recomputes (`attn.relative_position_index`, the shifted blocks'
`attn_mask`) are reported unused; `recomputed(model)` gives effcomp's values under those
keys. The official code needs two of effcomp's compatibility fields (`check_model`):
`window_mask='reference'` (its shifted-window mask, `effcomp.models.sr.dit_sr`) and
`image_size` = the config's model.params.image_size (64 in
realsr_swinunet_realesrgan256_journal.yaml): its windows and shifts are fixed per level for
that side, as are the bias tables' shapes (build the template with inputs of at least that
side). The config's per-level `num_res_blocks` list must be one number repeated (effcomp's
`num_res_blocks`).
Not covered: `lq_size ≠ image_size` (the strided `feature_extractor`; conv_in's shape is
refused), `resblock_updown=True` or `use_scale_shift_norm=False` (different keys or
shapes: refused), `patch_norm=True` (`patch_embed.norm` keys come back unused).
"""

from typing import Dict, Optional, Tuple

import numpy as np

from effcomp.convert import ditsr, state_dict
from effcomp.convert.state_dict import CONV, LINEAR, SAME, Layout, Path
from effcomp.models.sr import dit_sr, resshift_unet

CONTAINERS = ("state_dict",)
_RESBLOCK = {"in_norm": ("in_layers.0", SAME), "in_conv": ("in_layers.2", CONV),
             "emb": ("emb_layers.1", LINEAR), "out_norm": ("out_layers.0", SAME),
             "out_conv": ("out_layers.3", CONV), "skip": ("skip_connection", CONV)}


def check_model(model) -> None:
  """Raises ValueError unless `model` computes the official UNetModelSwin's forward."""
  if not isinstance(model, resshift_unet.ResShiftUNet):
    raise ValueError(f"config.model: {type(model).__name__}; the ResShift checkpoints are "
                     "resshift_unet models")
  ditsr.check_fields(model, {"norm_groups": 32, "window_mask": "reference"}, "UNetModelSwin")


def _layout(model) -> Tuple[Dict[str, Tuple[str, int, int]], Dict[str, str]]:
  """(effcomp Stage → (official BasicLayer key, level, depth), effcomp ResBlock or conv →
  official module key)."""
  levels, n, depth = len(model.channel_mult), model.num_res_blocks, model.swin_depth
  stages = {"middle_stage": ("middle_block.1", levels - 1, depth)}
  modules = {"middle_res_0": "middle_block.0", "middle_res_1": "middle_block.2",
             "conv_in": "input_blocks.0.0", "out_norm": "out.0", "conv_out": "out.2"}
  for level in range(levels):
    down = lambda j: f"input_blocks.{1 + level * (n + 1) + j}"
    up = lambda i: f"output_blocks.{(levels - 1 - level) * (n + 1) + i}"
    for j in range(n):
      modules[f"down_{level}_{j}_res"] = f"{down(j)}.0"
    for i in range(n + 1):
      modules[f"up_{level}_{i}_res"] = f"{up(i)}.0"
    if dit_sr.has_stage(model, level):
      stages[f"down_{level}_0_stage"] = (f"{down(0)}.1", level, depth)
      stages[f"up_{level}_0_stage"] = (f"{up(0)}.1", level, depth)
    if level < levels - 1:
      modules[f"down_{level}_downsample"] = f"{down(n)}.0.op"
    if level > 0:
      modules[f"up_{level}_upsample"] = f"{up(n)}.1.conv"
  return stages, modules


def name_map(model) -> state_dict.NameMap:
  """effcomp path → (official key, layout) for `model` (a `check_model`-ed ResShiftUNet)."""
  check_model(model)
  stages, modules = _layout(model)

  def name(path: Path) -> Optional[Tuple[str, Layout]]:
    _, top, *mods, last = path
    if top in stages:
      return ditsr.swin_layer(stages[top][0], mods, last)
    if top == "time_embed":
      return ditsr.leaf(f"time_embed.{2 * int(mods[0].removeprefix('linear_'))}", last, LINEAR)
    if mods:  # a ResBlock's layer
      key, kernel = _RESBLOCK[mods[0]]
      return ditsr.leaf(f"{modules[top]}.{key}", last, kernel)
    return ditsr.leaf(modules[top], last, SAME if top == "out_norm" else CONV)

  return name


def recomputed(model) -> Dict[str, np.ndarray]:
  """The official buffers effcomp computes instead of reading, under their official keys."""
  check_model(model)
  return ditsr.buffers(model, _layout(model)[0])
