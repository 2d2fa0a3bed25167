"""Every strided conv and pool pads as its reference's PyTorch layer does.

XLA's 'SAME' pads a stride-2 3×3 conv 0 top/left and 1 bottom/right where PyTorch's
`padding=1` pads 1 on every side: the windows shift by a pixel (the AdaBin ResNet-20 bug).
Each case runs effcomp's layer and `torch.nn.functional` on the same NCHW/NHWC data and
weights, on an even and an odd map.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effcomp.metrics import inception, lpips
from effcomp.models import cnn
from effcomp.models.bnn import resnet
from effcomp.models.sr import dit_sr
from effcomp.models.vae import autoencoder_kl
from effcomp.quant import binary

SIZES = (8, 9)


def _x(size, channels=3, seed=0):
  return np.random.default_rng(seed).normal(size=(2, size, size, channels)).astype(np.float32)


def _torch(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _random_init(module, x):
  """`module`'s params at random (bias too), unboxed."""
  params = nn.unbox(module.init(jax.random.key(0), x))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return {"params": jax.tree.unflatten(
      tree, [jax.random.normal(k, p.shape) * 0.3 for k, p in zip(keys, leaves)])}


def _conv_reference(x, params, stride, padding):
  """F.conv2d of NHWC `x` with the HWIO kernel (and bias) in `params`."""
  w = torch.from_numpy(np.asarray(params["kernel"]).transpose(3, 2, 0, 1).copy())
  b = torch.from_numpy(np.array(params["bias"])) if "bias" in params else None
  return _nhwc(F.conv2d(_torch(x), w, b, stride=stride, padding=padding))


class _Apply(nn.Module):
  """Wraps a function of (x, name) that builds one layer, so it can be initialized."""
  fn: object

  @nn.compact
  def __call__(self, x):
    return self.fn(x)


@pytest.mark.parametrize("size", SIZES)
def test_bnn_stride2_binary_conv_pads_one_on_every_side(size):
  x = _x(size, 4)
  conv = binary.BinaryConv(6, strides=(2, 2), weight_method="none", act_method="none")
  variables = _random_init(conv, x)
  np.testing.assert_allclose(conv.apply(variables, x),
                             _conv_reference(x, variables["params"], 2, 1), atol=1e-5)
  assert conv.explicit_padding() == ((1, 1), (1, 1))
  if size % 2 == 0:  # what XLA's 'SAME' computed before: the windows shifted by one pixel
    same = conv.clone(padding="SAME").apply(variables, x)
    assert np.abs(same - _conv_reference(x, variables["params"], 2, 1)).max() > 0.1


@pytest.mark.parametrize("size", SIZES)
def test_resnet18_stem_conv_and_pools_match_torch(size):
  x = _x(size + 8)
  stem = _Apply(lambda h: cnn.conv(5, jnp.float32, "stem", (7, 7), (2, 2))(h))
  variables = _random_init(stem, x)
  np.testing.assert_allclose(stem.apply(variables, x),
                             _conv_reference(x, variables["params"]["stem"], 2, 3), atol=1e-4)
  x = _x(size)
  np.testing.assert_allclose(resnet.stem_max_pool(x),
                             _nhwc(F.max_pool2d(_torch(x), 3, stride=2, padding=1)), atol=1e-6)
  np.testing.assert_allclose(
      resnet.shortcut_avg_pool(x, 2),
      _nhwc(F.avg_pool2d(_torch(x), 2, stride=2, ceil_mode=True, count_include_pad=False)),
      atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
def test_dit_sr_and_resshift_downsample_pads_one_on_every_side(size):
  x = _x(size, 4)
  down = _Apply(lambda h: dit_sr.downsample(h, 6, jnp.float32, "down"))
  variables = _random_init(down, x)
  np.testing.assert_allclose(down.apply(variables, x),
                             _conv_reference(x, variables["params"]["down"], 2, 1), atol=1e-5)


def test_vae_downsample_pads_bottom_and_right_as_diffusers():
  """diffusers' Downsample2D(padding=0) pads (0, 1, 0, 1) on purpose: kept asymmetric."""
  x = _x(8, 4)
  down = autoencoder_kl.Downsample()
  variables = _random_init(down, x)
  padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  np.testing.assert_allclose(down.apply(variables, x),
                             _conv_reference(padded, variables["params"]["conv"], 2, 0), atol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_inception_stride2_conv_and_pool_are_unpadded(size):
  x = _x(size + 8)
  np.testing.assert_allclose(inception.max_pool_3x3(x, stride=2),
                             _nhwc(F.max_pool2d(_torch(x), 3, stride=2)), atol=1e-6)
  block = inception.BasicConv(5, (3, 3), strides=(2, 2))
  variables = _random_init(block, x)
  expected = _conv_reference(x, variables["params"]["conv"], 2, 0)
  bn = variables["params"]["bn"]  # running mean 0, variance 1
  expected = expected / np.sqrt(1 + inception.BN_EPSILON) * np.asarray(bn["scale"]) + np.asarray(
      bn["bias"])
  np.testing.assert_allclose(block.apply({**variables, "batch_stats": nn.unbox(
      block.init(jax.random.key(0), x))["batch_stats"]}, x), np.maximum(expected, 0), atol=1e-4)


def test_lpips_alexnet_stride4_conv_pads_two():
  x = _x(31)
  conv = _Apply(lambda h: lpips._conv(5, 11, stride=4, padding=2, name="features_0")(h))
  variables = _random_init(conv, x)
  np.testing.assert_allclose(conv.apply(variables, x),
                             _conv_reference(x, variables["params"]["features_0"], 4, 2), atol=1e-4)
