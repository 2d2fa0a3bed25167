"""The official DiT checkpoints (facebookresearch/DiT, `models.py`) → effcomp's `DiT`.

Source: `models.py` (`DiT`, `DiTBlock`, `FinalLayer`, `TimestepEmbedder`, `LabelEmbedder`;
timm's `PatchEmbed`, `Attention`, `Mlp`), the sizes of `DiT_models` = `DIT_SIZES`. The
released `DiT-XL-2-{256,512}x{…}.pt` are bare state dicts (the EMA weights); `train.py`
saves {'model', 'ema', 'opt', 'args'}, of which `download.py`'s `find_model` samples
with 'ema' (`CONTAINERS`); `state_dict.read` allows its 'args' (an `argparse.Namespace`).

Keys: `x_embedder.proj` (Conv2d(C, D, p, stride p): weight [D, C, p, p] → the Dense over
effcomp's flattened (row, col, channel) patch, kernel [p·p·C, D], `PATCH_EMBED`);
`t_embedder.mlp.{0,2}` → t_embedder/fc1, fc2; `y_embedder.embedding_table` (num_classes
+ 1 rows with label dropout); `blocks.{i}.attn.qkv` (fused [3·D, D], q | k | v, heads
inside each, as effcomp's qkv), `.attn.proj` → attn/out, `.mlp.fc{1,2}`,
`.adaLN_modulation.1`; `final_layer.adaLN_modulation.1`, `final_layer.linear` (outputs
ordered (p, q, c) by `unpatchify`, as effcomp's). Linear weights transpose.

`pos_embed` (a frozen Parameter holding MAE's fixed 2-D sin-cos table) is reported
unused: effcomp computes the same table (`dit.sincos_pos_embed_2d`; equal to float32
rounding, checked in benchmarks/interop_dit.py).
"""

from typing import Optional, Tuple

import numpy as np

from effcomp.convert import state_dict
from effcomp.convert.state_dict import LINEAR, SAME, Layout, Path
from effcomp.models.dit.dit import DiT, sincos_pos_embed_2d

CONTAINERS = ("ema", "model")
UNUSED = ("pos_embed",)  # official tensors effcomp recomputes
_T_MLP = {"fc1": 0, "fc2": 2}


def patch_embed_layout(patch_size: int, in_channels: int) -> Layout:
  """Conv2d weight [D, C, p, p] ↔ Dense kernel [p·p·C, D] over a (row, col, channel)
  flattened patch (`dit.patchify`): kernel[(i·p + j)·C + c, d] = weight[d, c, i, j]."""
  p, c = patch_size, in_channels
  # (reshaped by the tensor's own D, so that another size's weight fails as a named shape)
  return Layout(f"patch_embed{p}", lambda a: a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0]),
                lambda a: a.reshape(p, p, c, -1).transpose(3, 2, 0, 1))


def check_model(model) -> None:
  """Raises ValueError unless `model` is a DiT (every DiT field has its official
  counterpart: `DiT.__init__`'s arguments)."""
  if not isinstance(model, DiT):
    raise ValueError(f"config.model: {type(model).__name__}; the official DiT checkpoints "
                     "are for effcomp's 'dit' (sizes DIT_SIZES)")


def linear(name: str, leaf: str) -> Tuple[str, Layout]:
  """A Dense leaf of the official nn.Linear `name`."""
  return (f"{name}.weight", LINEAR) if leaf == "kernel" else (f"{name}.bias", SAME)


def embedder(mods, leaf: str, suffix: str = "") -> Optional[Tuple[str, Layout]]:
  """The timestep and label embedders (`TimestepEmbedder`, `LabelEmbedder`), shared by
  DiT and U-DiT (whose embedders carry the suffix _1, _2, _3)."""
  if mods[0] == f"t_embedder{suffix}":  # mlp = Sequential(Linear, SiLU, Linear)
    return linear(f"t_embedder{suffix}.mlp.{_T_MLP[mods[1]]}", leaf)
  if mods[0] == f"y_embedder{suffix}":
    return f"y_embedder{suffix}.embedding_table.weight", SAME
  return None


def name_map(model) -> state_dict.NameMap:
  """effcomp path → (official key, layout) for `model` (a `check_model`-ed DiT)."""
  check_model(model)
  patch = patch_embed_layout(model.patch_size, model.in_channels)
  top = {"final_adaLN_modulation": "final_layer.adaLN_modulation.1",
         "final_linear": "final_layer.linear"}
  block = {("adaLN_modulation",): "adaLN_modulation.1", ("attn", "qkv"): "attn.qkv",
           ("attn", "out"): "attn.proj", ("fc1",): "mlp.fc1", ("fc2",): "mlp.fc2"}

  def name(path: Path) -> Optional[Tuple[str, Layout]]:
    _, *mods, leaf = path
    if mods == ["x_embedder"]:
      return ("x_embedder.proj.weight", patch) if leaf == "kernel" else (
          "x_embedder.proj.bias", SAME)
    if mods[0] in top:
      return linear(top[mods[0]], leaf)
    if mods[0].startswith("blocks_"):
      return linear(f"blocks.{mods[0][len('blocks_'):]}.{block[tuple(mods[1:])]}", leaf)
    return embedder(mods, leaf)

  return name


def fixed_pos_embed(model) -> np.ndarray:
  """The official `pos_embed` buffer's value for `model`: [1, T, D] (what effcomp adds)."""
  return sincos_pos_embed_2d(model.hidden_size, model.input_size // model.patch_size)[None]
