"""LPIPS, the learned perceptual image distance (Zhang et al. 2018), in Flax, NHWC.

Follows richzhang/PerceptualSimilarity (commit 082bb24) `lpips/lpips.py` (`LPIPS.forward`
with `lpips=True, spatial=False, version='0.1'`, `ScalingLayer`, `NetLinLayer`) and
`lpips/pretrained_networks.py` (`alexnet`, `vgg16`: torchvision `features` sliced after
5 ReLUs), eq. 1 of the paper:

    d(x0, x1) = Σ_l mean_hw ‖w_l ⊙ (ŷ0_l − ŷ1_l)‖²,  ŷ_l = y_l / (‖y_l‖_channels + 1e-10)

with images in [−1, 1] scaled by `(x − SHIFT) / SCALE` (the v0.1 scaling layer), y_l the
5 feature taps of the ImageNet backbone ('alex', the default, or 'vgg' = VGG16), and
w_l the non-negative 1×1 'lin' convolutions (no bias) fitted to human judgements.

Parameter names mirror the PyTorch checkpoints: torchvision `features.{i}.weight` ↔
`params/net/features_{i}/kernel` (i = the layer's index in `features`), LPIPS'
`lin{l}.model.1.weight` ↔ `params/lin{l}/kernel`.

Weights (both downloaded by you, once):
  * the lin layers: PerceptualSimilarity's `lpips/weights/v0.1/{alex,vgg}.pth` (also in
    the `lpips` pip package);
  * the backbone: torchvision's ImageNet weights (`TORCHVISION_URLS`).
`convert_lpips` merges them, with PyTorch, into one `.npz` that `load_lpips_weights`
reads without torch; `load_lpips_weights` also reads the `.pth` files directly where
torch is installed. Without them (`LPIPS().init`) the backbone is random and the lin
weights are ones (the paper's unlearned baseline): a valid distance, but NOT comparable
with any published LPIPS number.
"""

import functools
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# ScalingLayer (v0.1): ImageNet mean/std mapped to the [−1, 1] input range.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # lpips.normalize_tensor
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
MIN_SIZE = {"alex": 31, "vgg": 16}  # smallest H, W for which every tap is non-empty
# torchvision VGG16 `features`: conv widths, "M" = 2×2 max pool; a tap before each pool
# and after the last conv (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LIN_WEIGHTS = "PerceptualSimilarity's lpips/weights/v0.1/{net}.pth (or the lpips pip package)"
TORCHVISION_URLS = {"alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth"}
CONV_AXES = ("height", "width", "conv_in", "conv_out")


def _check_net(net: str) -> None:
  if net not in CHANNELS:
    raise ValueError(f"net={net!r}: expected one of {sorted(CHANNELS)}")


def _conv(features: int, kernel: int, stride: int = 1, padding: int = 1, use_bias: bool = True,
          dtype: Any = "float32", name: Optional[str] = None,
          kernel_init: Callable = nn.initializers.kaiming_normal()) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                 dtype=dtype, kernel_init=nn.with_logical_partitioning(kernel_init, CONV_AXES),
                 name=name,
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))


class AlexNetFeatures(nn.Module):
  """torchvision AlexNet `features` tapped after each of its 5 ReLUs (LPIPS `alexnet`).

  x: [B, H, W, 3], H, W ≥ 31 → 5 maps [B, H_l, W_l, (64, 192, 384, 256, 256)_l].
  """
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(_conv, dtype=self.dtype)
    pool = functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2))  # MaxPool2d(3, 2)
    h1 = nn.relu(conv(64, 11, stride=4, padding=2, name="features_0")(x))
    h2 = nn.relu(conv(192, 5, padding=2, name="features_3")(pool(h1)))
    h3 = nn.relu(conv(384, 3, name="features_6")(pool(h2)))
    h4 = nn.relu(conv(256, 3, name="features_8")(h3))
    h5 = nn.relu(conv(256, 3, name="features_10")(h4))
    return [h1, h2, h3, h4, h5]


class VGG16Features(nn.Module):
  """torchvision VGG16 `features` tapped at relu1_2 … relu5_3 (LPIPS `vgg16`).

  x: [B, H, W, 3], H, W ≥ 16 → 5 maps [B, H / 2^l, W / 2^l, (64, 128, 256, 512, 512)_l].
  """
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    taps, index = [], 0  # index: the layer's position in torchvision's `features`
    for width in VGG16_CFG:
      if width == "M":
        taps.append(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        index += 1
      else:
        x = nn.relu(_conv(width, 3, dtype=self.dtype, name=f"features_{index}")(x))
        index += 2  # Conv2d, ReLU
    return taps + [x]


def normalize_features(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """x / (‖x‖ + eps) over the channel axis (`lpips.normalize_tensor`), x: [..., C].

  Where a pixel's features are all zero (ReLU), the norm's gradient is taken as 0, not
  the NaN of d√s/ds at s = 0; the value is the reference's (0 there).
  """
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return x / (norm + eps)


class LPIPS(nn.Module):
  """LPIPS v0.1 distance of image pairs: x0, x1 [B, H, W, 3] → [B] float32.

  Images in [−1, 1] (the reference's convention), or in [0, 1] with `normalize=True`
  (mapped by 2x − 1, the reference's `normalize` flag). Random weights unless loaded
  with `load_lpips_weights` (module docstring).
  """
  net: str = "alex"
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x0, x1, normalize: bool = False):
    _check_net(self.net)
    if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3:
      raise ValueError(f"x0.shape={x0.shape}, x1.shape={x1.shape}: expected equal "
                       "[batch, height, width, 3] RGB")
    if min(x0.shape[1:3]) < MIN_SIZE[self.net]:
      raise ValueError(f"x0.shape={x0.shape}: expected height, width ≥ {MIN_SIZE[self.net]} "
                       f"for net={self.net!r}")
    backbone = (AlexNetFeatures if self.net == "alex" else VGG16Features)(self.dtype, name="net")

    def features(x):
      x = x.astype(jnp.float32)
      if normalize:
        x = 2 * x - 1
      x = (x - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)  # ScalingLayer
      return [normalize_features(t.astype(jnp.float32)) for t in backbone(x.astype(self.dtype))]

    # Two backbone passes, as the reference: then LPIPS(x, x) is 0 and LPIPS symmetric to
    # the last bit eagerly, and to ~1e-17 under jit (XLA may fuse the passes differently).
    total = jnp.zeros((x0.shape[0],), jnp.float32)
    for l, (f0, f1) in enumerate(zip(features(x0), features(x1))):
      diff = (f0 - f1) ** 2
      # NetLinLayer. Initialised to ones: unfitted, LPIPS is the paper's baseline (the
      # reference's lpips=False: channels summed), a distance ≥ 0 like the fitted one.
      lin = _conv(1, 1, padding=0, use_bias=False, name=f"lin{l}",
                  kernel_init=nn.initializers.ones)(diff)
      total += jnp.mean(lin[..., 0], axis=(1, 2))  # spatial_average
    return total


def lpips_fn(variables, net: str = "alex", normalize: bool = False,
             precision: str = "highest") -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A jitted `(x0, x1) [B, H, W, 3] -> LPIPS [B]` with `variables` passed as arguments.
  Convolutions run at `precision` (`jax.default_matmul_precision`; "highest" = true
  float32 on GPU/TPU), as the float32 reference does."""
  apply = jax.jit(functools.partial(LPIPS(net).apply, normalize=normalize))

  def fn(x0, x1):
    with jax.default_matmul_precision(precision):
      return apply(variables, x0, x1)
  return fn


def canonical_state(state: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """PyTorch LPIPS / torchvision keys → the canonical `features.{i}.{weight,bias}` and
  `lin{l}.model.1.weight`, float32 NumPy.

  Accepts torchvision backbone checkpoints (`features.*`; `classifier.*` is dropped),
  the official lin files (`lin{l}.model.1.weight`, or `.model.0.` saved without
  dropout) and a whole `lpips.LPIPS().state_dict()` (`net.slice{s}.{i}.*`; the
  `scaling_layer` buffers are checked against `SHIFT`/`SCALE` and dropped).
  """
  out = {}
  for key, value in state.items():
    value = np.asarray(value, np.float32)
    if key.startswith("classifier."):
      continue
    if key in ("scaling_layer.shift", "scaling_layer.scale"):
      want = SHIFT if key.endswith("shift") else SCALE
      if not np.allclose(value.reshape(-1), want):
        raise ValueError(f"state dict {key}={value.reshape(-1).tolist()}: expected LPIPS "
                         f"v0.1's {list(want)}")
      continue
    if m := re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key):
      out[f"features.{m[1]}.{m[2]}"] = value
    elif m := re.fullmatch(r"lin(\d)\.model\.[01]\.weight", key):
      out[f"lin{m[1]}.model.1.weight"] = value
    else:
      raise ValueError(f"state dict key {key!r}: expected torchvision `features.*` / "
                       "`classifier.*`, LPIPS `net.slice*`, `lin*.model.*` or `scaling_layer.*`")
  return out


def variables_from_state_dict(state: Mapping[str, Any]) -> Dict[str, Any]:
  """Canonical PyTorch names (`canonical_state`) → Flax variables {'params': …}:
  conv weights [O, I, kh, kw] → `kernel` [kh, kw, I, O], biases unchanged."""
  params = {}
  for key, value in canonical_state(state).items():
    if key.startswith("lin"):
      path = (key.split(".")[0], "kernel")
    else:
      _, index, leaf = key.split(".")
      path = ("net", f"features_{index}", "kernel" if leaf == "weight" else leaf)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    params[path] = np.ascontiguousarray(value)
  return {"params": flax.traverse_util.unflatten_dict(params)}


def expected_shapes(net: str = "alex") -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  """{(collection, *path): shape} of every variable of `LPIPS(net)` (abstract)."""
  _check_net(net)
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  abstract = nn.unbox(jax.eval_shape(LPIPS(net).init, jax.random.key(0), images, images))
  return {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(abstract).items()}


def _check_variables(variables, net: str, source: str) -> None:
  got = {k: tuple(np.shape(v)) for k, v in flax.traverse_util.flatten_dict(variables).items()}
  want = expected_shapes(net)
  missing = sorted("/".join(k) for k in want.keys() - got.keys())
  unexpected = sorted("/".join(k) for k in got.keys() - want.keys())
  wrong = sorted(f"{'/'.join(k)}: {got[k]} (expected {want[k]})"
                 for k in want.keys() & got.keys() if got[k] != want[k])
  hints = []
  if any(m.startswith("params/net/") for m in missing):
    hints.append(f"the backbone comes from torchvision's {TORCHVISION_URLS[net]} "
                 "(pass it as backbone_path)")
  if any(m.startswith("params/lin") for m in missing):
    hints.append(f"the lin layers come from {LIN_WEIGHTS.format(net=net)}")
  if missing or unexpected or wrong:
    raise ValueError(f"{source} is not LPIPS net={net!r}: {len(missing)} missing {missing[:5]}, "
                     f"{len(unexpected)} unexpected {unexpected[:5]}, {len(wrong)} with wrong "
                     f"shapes {wrong[:5]}" + "".join(f"; {h}" for h in hints))


def _where_from(net: str) -> str:
  return (f"LPIPS lin weights from {LIN_WEIGHTS.format(net=net)} with torchvision's backbone "
          f"({TORCHVISION_URLS[net]}), or one .npz made from them by convert_lpips")


def _read_state(path: str, name: str, net: str) -> Dict[str, np.ndarray]:
  """A state dict from an `.npz` (NumPy) or a PyTorch `.pth` (needs torch)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{name}={path!r} does not exist: expected {_where_from(net)}")
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch  # optional: only to read a .pth; effcomp itself reads the .npz
  except ImportError as e:
    raise ImportError(f"{name}={path!r} is a PyTorch checkpoint, which needs torch to read: "
                      "pip install torch (the CPU build is enough), or convert it once with "
                      "convert_lpips where torch is installed and load the .npz") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _load_state(path: str, backbone_path: Optional[str], net: str) -> Dict[str, np.ndarray]:
  _check_net(net)
  state = canonical_state(_read_state(path, "path", net))
  if backbone_path is not None:
    state.update(canonical_state(_read_state(backbone_path, "backbone_path", net)))
  source = f"path={path!r}"
  if backbone_path is not None:
    source += f" with backbone_path={backbone_path!r}"
  _check_variables(variables_from_state_dict(state), net, source)
  return state


def load_lpips_weights(path: str, backbone_path: Optional[str] = None,
                       net: str = "alex") -> Dict[str, Any]:
  """Flax variables for `LPIPS(net)` from local files.

  path: an `.npz` from `convert_lpips` (everything), or a PyTorch `.pth`: the official
    lin weights (`lpips/weights/v0.1/alex.pth`) or a whole LPIPS state dict.
  backbone_path: torchvision's ImageNet checkpoint (`TORCHVISION_URLS[net]`, `.pth`, or
    an `.npz` of the same names) when `path` holds only the lin layers.
  Reading a `.pth` needs PyTorch; an `.npz` does not. Raises `FileNotFoundError` for a
  missing file (saying where the weights come from) and `ValueError` naming missing,
  unexpected or mis-shaped arrays.
  """
  return variables_from_state_dict(_load_state(path, backbone_path, net))


def convert_lpips(lin_path: str, backbone_path: str, npz_path: str, net: str = "alex") -> str:
  """The official lin `.pth` + torchvision's backbone `.pth` → one `.npz` (canonical
  PyTorch names, float32, the classifier dropped) that `load_lpips_weights` reads
  without torch. Needs PyTorch. Returns `npz_path`."""
  np.savez(npz_path, **_load_state(lin_path, backbone_path, net))
  return npz_path
