"""InceptionV3 as FID uses it (pytorch-fid's `fid_inception_v3`), in Flax, NHWC.

Follows mseitzer/pytorch-fid `src/pytorch_fid/inception.py` (commit b9c1811):
`InceptionV3` with `resize_input=True, normalize_input=True` up to block 3 (pool3), built
from torchvision `models/inception.py` `Inception3(num_classes=1008, aux_logits=False)`
with four blocks patched as the TensorFlow FID graph computes them:

  * `FIDInceptionA/C/E_1`: the 3×3 average pool of `branch_pool` ignores the zero padding
    (`count_include_pad=False`, TensorFlow's average pool);
  * `FIDInceptionE_2` (Mixed_7c): that pool is a 3×3 *max* pool.

`BasicConv2d` = conv without bias → BatchNorm (inference, eps 1e-3) → ReLU. Module and
parameter names mirror the PyTorch state dict (`Mixed_5b.branch5x5_2.conv.weight` ↔
`params/Mixed_5b/branch5x5_2/conv/kernel`), so converting it is a rename plus OIHW → HWIO /
[out, in] → [in, out] transposes (`effcomp.convert.state_dict.module_names`).

Weights: `effcomp.convert.pt_inception.convert_pt_inception` turns pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` (its `FID_WEIGHTS_URL`, downloaded by you) into an
`.npz`, once, with PyTorch; `effcomp.convert.pt_inception.load_fid_weights` reads that
`.npz` without torch.
Without those weights the network has random weights (`InceptionV3().init`): its
"FID" is a valid distance between feature distributions but NOT comparable with any
published FID number.
"""

import functools
from typing import Any, Callable, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.nn.dense import dense

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299  # pytorch-fid resizes every image to 299×299 (bilinear, align_corners=False)
FEATURES = 2048  # pool3
NUM_CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes + 8 unused
BN_EPSILON = 1e-3  # torchvision BasicConv2d: BatchNorm2d(eps=0.001)
CONV_AXES = ("height", "width", "conv_in", "conv_out")


class BasicConv(nn.Module):
  """torchvision `BasicConv2d`: conv (no bias) → BatchNorm (running statistics) → ReLU.

  x: [B, H, W, C_in] → [B, H', W', features]; `padding` (ph, pw) is symmetric zero padding.
  """
  features: int
  kernel_size: Tuple[int, int] = (1, 1)
  strides: Tuple[int, int] = (1, 1)
  padding: Tuple[int, int] = (0, 0)
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    (ph, pw) = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, dtype=self.dtype, name="conv",
                kernel_init=nn.with_logical_partitioning(nn.initializers.kaiming_normal(),
                                                         CONV_AXES))(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, dtype=self.dtype, name="bn",
                     scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))(x)
    return nn.relu(x)


def avg_pool_3x3(x):
  """3×3, stride 1, pad 1 average pool over the valid pixels only (pytorch-fid's patch:
  `F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)`)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3(x, stride: int = 1):
  """3×3 max pool: stride 1 pad 1 (FIDInceptionE_2) or stride 2 unpadded (InceptionB/D, stem)."""
  padding = ((1, 1), (1, 1)) if stride == 1 else "VALID"
  return nn.max_pool(x, (3, 3), (stride, stride), padding)


class InceptionA(nn.Module):
  """`FIDInceptionA` (Mixed_5b/c/d): [B, 35, 35, C] → [B, 35, 35, 224 + pool_features]."""
  pool_features: int
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, dtype=self.dtype)
    b1 = conv(64, name="branch1x1")(x)
    b5 = conv(48, name="branch5x5_1")(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = conv(64, name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, name="branch_pool")(avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """torchvision `InceptionB` (Mixed_6a): [B, 35, 35, 288] → [B, 17, 17, 768]."""
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, dtype=self.dtype)
    b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    bd = conv(64, name="branch3x3dbl_1")(x)
    bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, max_pool_3x3(x, stride=2)], axis=-1)


class InceptionC(nn.Module):
  """`FIDInceptionC` (Mixed_6b–e): [B, 17, 17, C] → [B, 17, 17, 768], factorized 7×7 convs."""
  channels_7x7: int
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, dtype=self.dtype)
    c7 = self.channels_7x7
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
    b1 = conv(192, name="branch1x1")(x)
    b7 = conv(c7, name="branch7x7_1")(x)
    b7 = conv(c7, **row, name="branch7x7_2")(b7)
    b7 = conv(192, **col, name="branch7x7_3")(b7)
    bd = conv(c7, name="branch7x7dbl_1")(x)
    bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
    bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
    bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
    bd = conv(192, **row, name="branch7x7dbl_5")(bd)
    bp = conv(192, name="branch_pool")(avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """torchvision `InceptionD` (Mixed_7a): [B, 17, 17, 768] → [B, 8, 8, 1280]."""
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, dtype=self.dtype)
    b3 = conv(192, name="branch3x3_1")(x)
    b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
    b7 = conv(192, name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, max_pool_3x3(x, stride=2)], axis=-1)


class InceptionE(nn.Module):
  """`FIDInceptionE_1` (pool='avg', Mixed_7b) / `FIDInceptionE_2` (pool='max', Mixed_7c):
  [B, 8, 8, C] → [B, 8, 8, 2048]."""
  pool: str = "avg"
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    if self.pool not in ("avg", "max"):
      raise ValueError(f"InceptionE.pool={self.pool!r}: expected 'avg' or 'max'")
    conv = functools.partial(BasicConv, dtype=self.dtype)
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
    b1 = conv(320, name="branch1x1")(x)
    b3 = conv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([conv(384, **row, name="branch3x3_2a")(b3),
                          conv(384, **col, name="branch3x3_2b")(b3)], axis=-1)
    bd = conv(448, name="branch3x3dbl_1")(x)
    bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([conv(384, **row, name="branch3x3dbl_3a")(bd),
                          conv(384, **col, name="branch3x3dbl_3b")(bd)], axis=-1)
    pooled = avg_pool_3x3(x) if self.pool == "avg" else max_pool_3x3(x)
    bp = conv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def preprocess(images: jax.Array, resize: bool = True, normalize: bool = True) -> jax.Array:
  """pytorch-fid's input transform, NHWC.

  images: [B, H, W, 3] (or 1 channel, repeated to RGB as PIL's `convert("RGB")` does),
  float in [0, 1] or integer in [0, 255] (÷ 255, as `ToTensor`). Resized to 299×299
  bilinearly with half-pixel centres and no antialiasing (`F.interpolate(...,
  mode="bilinear", align_corners=False)`), then mapped to [−1, 1] by 2x − 1.
  """
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images.shape={images.shape}: expected [batch, height, width, 3] "
                     "(or 1 channel)")
  if jnp.issubdtype(images.dtype, jnp.integer):
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if resize:
    x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear", antialias=False)
  return 2 * x - 1 if normalize else x


class InceptionV3(nn.Module):
  """pytorch-fid's `InceptionV3([3])`: images → pool3 features [B, 2048] (and logits).

  images: [B, H, W, 3] in [0, 1] (see `preprocess`); without `resize_input` H, W ≥ 75.
  Returns features [B, 2048] float32, or (features, logits [B, 1008]) with
  `return_logits`. Random weights unless loaded with `load_fid_weights` (module docstring).
  """
  resize_input: bool = True
  normalize_input: bool = True
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, images, return_logits: bool = False):
    x = preprocess(images, self.resize_input, self.normalize_input).astype(self.dtype)
    conv = functools.partial(BasicConv, dtype=self.dtype)
    x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)  # 149×149
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = max_pool_3x3(x, stride=2)  # 73
    x = conv(80, name="Conv2d_3b_1x1")(x)
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71
    x = max_pool_3x3(x, stride=2)  # 35
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, self.dtype, name=name)(x)
    x = InceptionB(self.dtype, name="Mixed_6a")(x)  # 17
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, self.dtype, name=name)(x)
    x = InceptionD(self.dtype, name="Mixed_7a")(x)  # 8
    x = InceptionE("avg", self.dtype, name="Mixed_7b")(x)
    x = InceptionE("max", self.dtype, name="Mixed_7c")(x)
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # AdaptiveAvgPool2d(1): pool3
    # Always built, so the parameter tree matches the checkpoint; unused outputs are
    # removed by XLA under jit.
    logits = dense(NUM_CLASSES, "embed", "classes", self.dtype, name="fc")(features)
    return (features, logits.astype(jnp.float32)) if return_logits else features


def features_fn(variables, model: InceptionV3 | None = None,
                precision: str = "highest") -> Callable[[jax.Array], jax.Array]:
  """A jitted `images [B, H, W, 3] -> pool3 features [B, 2048]` (variables passed as
  arguments, not baked into the executable as constants). Convolutions run at
  `precision` (`jax.default_matmul_precision`; "highest" = true float32 on GPU/TPU,
  whose default would be TF32/bfloat16 passes), as FID's float32 reference does."""
  model = InceptionV3() if model is None else model
  apply = jax.jit(model.apply)

  def fn(images):
    with jax.default_matmul_precision(precision):
      return apply(variables, images)
  return fn


def abstract_variables(model: InceptionV3 | None = None) -> Any:
  """`model`'s variables as `jax.ShapeDtypeStruct`s (boxed; no compute)."""
  model = InceptionV3() if model is None else model
  images = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)
