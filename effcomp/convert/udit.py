"""The official U-DiT checkpoints (YuchuanTian/U-DiT, `udit_models.py`) → effcomp's `UDiT`.

Source: `udit_models.py` (`U_DiT`, `U_DiTBlock`, `DownSample_Attn`, `DownSampler`,
`FeedForward`, `Mlp`, `Downsample`, `Upsample`, `FinalLayer`); `U_DiT_S/B/L` =
`UDIT_SIZES['U-DiT-S'/'-B'/'-L']` (those factories ignore their arguments: 32×32×4
latents, 1000 classes, learn_sigma). Checkpoints as DiT's (`convert.dit`: a bare state
dict, or train.py's {'model', 'ema', 'opt', 'args'} read from 'ema').

Keys: `x_embedder.proj` (conv3×3); `t_embedder_{1,2,3}`, `y_embedder_{1,2,3}` as DiT's;
`down1_2`, `down2_3`, `up3_2`, `up2_1` `.body.0.weight` (bias-free conv3×3 before the
pixel (un)shuffle); `reduce_chan_level{2,1}` (1×1 convs → Dense); `output` (conv3×3);
`final_layer.adaLN_modulation.1`, `final_layer.out_proj`. Stage blocks
`{encoder_level_1, encoder_level_2, latent, decoder_level_2, decoder_level_1}.{b}` hold two
layers, effcomp's `{stage}_{2b}` and `{stage}_{2b+1}`, whose modules end in 1 and 2:
`adaLN_modulation{j}.1`; `attn{j}.downsampler.layer` (depthwise [C, 1, k, k] → [k, k, 1,
C]), `.to_qkv` (Linear, q | k | v), `.to_out` (1×1 conv → Dense), `.logit_scale` ([heads,
1, 1] → [heads], `attn_type='v2'` only); `mlp{j}`: with `rep=1` (effcomp ffn='rep')
`project_in.{0,1}`, `dwconv.{0,1,2}` (the 5×5, 3×3, 1×1 depthwise branches), `project_out.
{0,1}`; with `rep=0` (ffn='dwconv') `project_in`, `dwconv`, `project_out`; with
`ffn_type='basic'` (ffn='mlp') `fc1`, `fc2`.

The eval forward of a 'rep' FFN folds the branches (`FeedForward.add_buffer`); a state dict
keeps them apart, so it converts to ffn='rep', and `effcomp.models.dit.udit.reparameterize`
then folds them as add_buffer does (ffn='dwconv'). Beware: add_buffer folds *in place* —
its `dwconv_weight` is `dwconv[0].weight.detach()`, the same storage, so after `.eval()`
a live official model's `dwconv.0.weight` holds the folded 5×5 (3×3, 1×1 and the identity
added again by every further `.eval()`): take a state dict before `.eval()`, as train.py's
saved 'model' and 'ema' are (the EMA is folded once at step 0, a part that decays as
0.9999^steps — and an official model loaded from it folds again: converting the file as it
is reproduces that eval forward). Official `rep=0` models cannot be put in eval mode at
all (add_buffer indexes `project_in[0]`).

One constant differs: the official cosine attention clamps `logit_scale` at 4.6052,
effcomp at log 100 = 4.60517 (`downsampled_attention.LOG_MAX_LOGIT_SCALE`), so a head whose
learned scale lies above 4.60517 scales its logits by 100 instead of 100.003 (U-DiT-S with
every head there: 3.1e-5 relative output difference, 2.2e-5 with the official constant).
"""

from typing import Optional, Tuple

from effcomp.convert import dit, state_dict
from effcomp.convert.dit import embedder, linear
from effcomp.convert.state_dict import CONV, CONV1X1_AS_LINEAR, SAME, Layout, Path
from effcomp.models.dit.udit import STAGES, UDiT
from effcomp.nn.downsampled_attention import parse_downsampler

CONTAINERS = dit.CONTAINERS
# nn.Parameter [heads, 1, 1] (broadcast over the logits) ↔ effcomp's [heads].
LOGIT_SCALE = Layout("logit_scale", lambda a: a.reshape(-1), lambda a: a.reshape(-1, 1, 1))
OFFICIAL_STAGES = dict(zip(STAGES, ("encoder_level_1", "encoder_level_2", "latent",
                                    "decoder_level_2", "decoder_level_1")))
_REP = {"project_in_0": "project_in.0", "project_in_1": "project_in.1", "dwconv_5": "dwconv.0",
        "dwconv_3": "dwconv.1", "dwconv_1": "dwconv.2", "project_out_0": "project_out.0",
        "project_out_1": "project_out.1"}
_TOP = {"x_embedder": ("x_embedder.proj", CONV), "down1_2": ("down1_2.body.0", CONV),
        "down2_3": ("down2_3.body.0", CONV), "up3_2": ("up3_2.body.0", CONV),
        "up2_1": ("up2_1.body.0", CONV), "output": ("output", CONV),
        "reduce_chan_level2": ("reduce_chan_level2", CONV1X1_AS_LINEAR),
        "reduce_chan_level1": ("reduce_chan_level1", CONV1X1_AS_LINEAR),
        "final_out_proj": ("final_layer.out_proj", CONV)}


def check_model(model) -> None:
  """Raises ValueError unless `model` is a U-DiT the official code can build: its
  `DownSample_Attn` always has a depthwise downsampler whose kernel size is the last
  character of `downsampler` ('dwconv5')."""
  if not isinstance(model, UDiT):
    raise ValueError(f"config.model: {type(model).__name__}; the official U-DiT checkpoints "
                     "are for effcomp's 'udit' (sizes UDIT_SIZES)")
  kernel, depthwise = parse_downsampler(model.downsampler)
  if not depthwise or kernel > 9:
    raise ValueError(f"config.model.downsampler={model.downsampler!r}: the official "
                     "DownSample_Attn always has a depthwise k×k downsampler, k < 10 "
                     "('dwconv3', 'dwconv5', …)")


def _conv(name: str, leaf: str, layout: Layout) -> Tuple[str, Layout]:
  return (f"{name}.weight", layout) if leaf == "kernel" else (f"{name}.bias", SAME)


def _layer(prefix: str, j: int, mods, leaf: str) -> Tuple[str, Layout]:
  """A leaf of one effcomp `UDiTLayer` (mods below it): sub-layer j of the official block."""
  if mods == ["adaLN_modulation"]:
    return linear(f"{prefix}.adaLN_modulation{j}.1", leaf)
  if mods[0] == "attn":
    attn = f"{prefix}.attn{j}"
    if mods[1:] == ["downsampler"]:
      return _conv(f"{attn}.downsampler.layer", leaf, CONV)
    if leaf == "logit_scale":
      return f"{attn}.logit_scale", LOGIT_SCALE
    if mods[2:] == ["qkv"]:
      return linear(f"{attn}.to_qkv", leaf)
    return _conv(f"{attn}.to_out", leaf, CONV1X1_AS_LINEAR)
  module = mods[1]  # under ffn
  depthwise = module.startswith("dwconv")
  return _conv(f"{prefix}.mlp{j}.{_REP.get(module, module)}", leaf,
               CONV if depthwise else CONV1X1_AS_LINEAR)


def name_map(model) -> state_dict.NameMap:
  """effcomp path → (official key, layout) for `model` (a `check_model`-ed U-DiT)."""
  check_model(model)

  def name(path: Path) -> Optional[Tuple[str, Layout]]:
    _, *mods, leaf = path
    if mods[0] in _TOP:
      key, layout = _TOP[mods[0]]
      return _conv(key, leaf, layout)
    if mods[0] == "final_adaLN_modulation":
      return linear("final_layer.adaLN_modulation.1", leaf)
    stage, _, index = mods[0].rpartition("_")
    if stage in OFFICIAL_STAGES:
      i = int(index)
      return _layer(f"{OFFICIAL_STAGES[stage]}.{i // 2}", i % 2 + 1, mods[1:], leaf)
    return embedder(mods, leaf, "_" + mods[0].rpartition("_")[2])

  return name
