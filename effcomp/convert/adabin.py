"""The official AdaBin checkpoints (huawei-noah/Efficient-Computing, BinaryNetworks/AdaBin)
→ effcomp's binary ResNets.

Sources: `cifar10/nets/resnet20.py` (`resnet20_1w1a`, option-A shortcuts; the released
`cifar10/checkpoints/resnet20_1w1a/model.th`, {'state_dict', 'best_prec1'} with `module.`
keys) → `bnn_resnet20`; `imagenet/nets/resnet18.py` / `resnet34.py` (`avg_down`
shortcuts) → `bnn_resnet18` / `bnn_resnet34`. Names: stem `conv1`/`bn1`/`nonlinear1`;
block `layer{s+1}.{b}.conv{1,2}` (+ `.binary_a.alpha_a/beta_a`), `bn{1,2}`,
`nonlinear{1,2}`, `downsample.{1,2}` (ImageNet); head `bn2` (BatchNorm1d) and `linear`
(CIFAR) / `fc` (ImageNet). The ImageNet model defines `nonlinear2` and `bn3` but its
forward never calls them: they are reported unused.

The code's forward needs two of effcomp's compatibility fields (`check_model`):
`adabin_act_form='official'` (its activation α·(sign((x−β)/α) + β), `effcomp.quant.binary`)
and `progressive=False` (its fixed EDE t, k when not trained with --progressive; the
forward is the same either way, the backward is not).
Not covered: the CIFAR `resnet18_1w1a` (3×3 stem, 1×1-conv shortcuts: no effcomp model),
and VGG-small, for which AdaBin publishes neither code nor weights.
"""

from typing import Optional, Tuple

from effcomp.convert import state_dict
from effcomp.convert.state_dict import CONV, LINEAR, SAME, Layout, Path
from effcomp.models.bnn import resnet

CONTAINERS = ("state_dict",)
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_MAXOUT = {"Maxout_0": "nonlinear1", "Maxout_1": "nonlinear2"}


def check_model(model) -> None:
  """Raises ValueError unless `model` computes the official AdaBin ResNet's forward."""
  if not isinstance(model, resnet._BinaryResNet):  # pylint: disable=protected-access
    raise ValueError(f"config.model: {type(model).__name__}; the AdaBin checkpoints are "
                     "bnn_resnet20 (CIFAR) or bnn_resnet18 / bnn_resnet34 (ImageNet)")
  wrong = {k: getattr(model, k) for k, v in (("method", "adabin"), ("weight_method", ""),
                                             ("adabin_act_form", "official"),
                                             ("nonlinearity", "")) if getattr(model, k) != v}
  if wrong:
    raise ValueError(f"config.model {wrong}: the official AdaBin code needs method='adabin', "
                     "adabin_act_form='official' and the default weight_method and "
                     "nonlinearity")


def _layer(name: str, leaf: str) -> Tuple[str, Layout]:
  """A BatchNorm, Maxout or conv leaf under the official module `name`."""
  if leaf in _BN:
    return f"{name}.{_BN[leaf]}", SAME
  if leaf in ("pos_scale", "neg_scale"):
    return f"{name}.{leaf}", SAME
  if leaf == "kernel":
    return f"{name}.weight", CONV
  raise KeyError(leaf)


def name_map(model) -> state_dict.NameMap:
  """effcomp path → (official key, layout) for `model` (a `check_model`-ed ResNet)."""
  check_model(model)
  head = "fc" if model.imagenet_stem else "linear"

  def name(path: Path) -> Optional[Tuple[str, Layout]]:
    _, *mods, leaf = path
    if mods == ["stem_conv"]:
      return _layer("conv1", leaf)
    if mods == ["stem_bn"]:
      return _layer("bn1", leaf)
    if mods == ["Maxout_0"]:
      return _layer("nonlinear1", leaf)
    if mods == ["head_bn"]:
      return _layer("bn2", leaf)
    if mods == ["head"]:
      return (f"{head}.weight", LINEAR) if leaf == "kernel" else (f"{head}.bias", SAME)
    stage, block = mods[0].removeprefix("stage").split("_block")
    prefix = f"layer{int(stage) + 1}.{block}"
    if mods[1:] and mods[1] in ("conv1", "conv2"):
      if mods[2:] == ["act"]:
        return f"{prefix}.{mods[1]}.binary_a.{leaf}_a", SAME
      return _layer(f"{prefix}.{mods[1]}", leaf)
    official = {**_MAXOUT, "bn1": "bn1", "bn2": "bn2", "down_conv": "downsample.1",
                "down_bn": "downsample.2"}[mods[1]]
    return _layer(f"{prefix}.{official}", leaf)

  return name
