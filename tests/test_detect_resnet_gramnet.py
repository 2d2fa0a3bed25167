"""The detectors' ResNet (torchvision layout) and GramNet (Liu et al. 2020).

Parameter counts are torchvision's / the official GramNet code's, counted by
`jax.eval_shape` (no weights are made); the runs use the CPU size (ResNet) or a smaller
one (GramNet) with variables filled from NumPy: running the initializers' threefry RNG
costs seconds of XLA compilation per model on CPU.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import models
from effcomp.models.detect import gramnet, resnet
from effcomp.registry import MODELS


def _num_params(model, image_size=224):
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3), jnp.uint8)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(variables["params"])))


def _variables(model, x, seed=0):
  """`model`'s variables, unboxed, without running its initializers: He-normal kernels,
  BN scale 1 and bias 0, running mean 0 and variance 1, the Gram scale 1."""
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      std = np.sqrt(2 / np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) * std, jnp.float32)
    return (jnp.ones if name in ("scale", "var", "gram_scale") else jnp.zeros)(leaf.shape)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def _images(batch=2, size=32, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, size, size, 3)), jnp.float32)


def test_resnet50_has_torchvision_parameter_count():
  # torchvision resnet50: 25,557,032 with the 1000-class fc; a 2-class head replaces
  # 2048·1000 + 1000 of them with 2048·2 + 2. BN scale + bias count, running stats not.
  assert _num_params(resnet.ResNet(num_classes=1000, **resnet.RESNET50)) == 25_557_032
  assert _num_params(resnet.ResNet(num_classes=2, **resnet.RESNET50)) == 23_512_130


def test_resnet18_basic_blocks_have_torchvision_parameter_count():
  # torchvision resnet18: 11,689,512 with 1000 classes.
  expected = 11_689_512 - 513_000 + 1_026
  assert _num_params(resnet.ResNet(num_classes=2, **resnet.RESNET18)) == expected


def test_gramnet_has_the_official_models_parameter_count():
  gram_blocks = (
      (3 + 64 + 64 + 64 + 128 + 256) * 32 * 9 + 6 * 2 * 32   # conv_inter*_0: 3×3 conv → 32, BN
      + 6 * (1 * 16 * 9 + 2 * 16 + 16 * 32 * 9 + 2 * 32))   # g*_fc1, g*_fc2
  head = (512 + 6 * 32) * 512 + 512 + 512 * 2 + 2           # fcnewr: 704 → 512 → 2
  resnet18_trunk = 11_689_512 - 513_000                     # torchvision resnet18 without fc
  expected = resnet18_trunk + gram_blocks + 1 + head        # + the shared ScaleLayer scalar
  assert expected == 11_734_723
  assert _num_params(gramnet.GramNet(**gramnet.GRAMNET)) == expected


def test_resnet50_feature_maps_have_torchvision_shapes():
  model = resnet.ResNet(**resnet.RESNET50)
  x = jnp.zeros((1, 224, 224, 3), jnp.uint8)
  logits, feats = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), x, return_features=True)[0])
  assert logits.shape == (1, 2) and logits.dtype == jnp.float32
  shapes = {k: v.shape for k, v in feats.items()}
  assert shapes == {
      "input": (1, 224, 224, 3), "stem": (1, 112, 112, 64), "maxpool": (1, 56, 56, 64),
      "layer1": (1, 56, 56, 256), "layer2": (1, 28, 28, 512), "layer3": (1, 14, 14, 1024),
      "layer4": (1, 7, 7, 2048), "pooled": (1, 2048)}


def test_resnet50_lite_runs_on_32x32_uint8_images():
  model = resnet.ResNet(**resnet.RESNET50_LITE)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)), jnp.uint8)
  variables = _variables(model, x)
  logits, feats = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, x)
  assert logits.shape == (3, 2) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert {k: v.shape for k, v in feats.items() if k.startswith("layer")} == {
      "layer1": (3, 32, 32, 64), "layer2": (3, 16, 16, 128), "layer3": (3, 8, 8, 256),
      "layer4": (3, 4, 4, 512)}
  np.testing.assert_array_equal(feats["maxpool"], feats["stem"])  # small_input: no max-pool


@pytest.mark.parametrize("kind,last", [("bottleneck", "bn3"), ("basic", "bn2")])
def test_zero_init_residual_zeroes_each_blocks_last_bn_scale_only(kind, last):
  block = resnet.Block(4, strides=2, kind=kind, zero_init_residual=True)
  key = jax.random.key(0, impl="unsafe_rbg")  # compiles in a fraction of threefry's time
  params = nn.unbox(block.init(key, jnp.zeros((1, 4, 4, 3)))["params"])
  assert np.all(params[last]["scale"] == 0)
  assert np.all(params["bn1"]["scale"] == 1) and np.all(params["down_bn"]["scale"] == 1)


def test_gram_matrix_matches_numpy():
  x = np.random.default_rng(1).normal(size=(2, 5, 6, 7)).astype(np.float32)
  f = x.reshape(2, 30, 7)  # [B, H·W, C]
  expected = np.einsum("bnc,bnd->bcd", f, f) / (7 * 5 * 6)  # official: / (C·H·W)
  g = gramnet.gram_matrix(jnp.asarray(x))
  assert g.shape == (2, 7, 7) and g.dtype == jnp.float32
  np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)
  ones = jnp.ones((1, 2, 2, 3))  # every entry: 4 pixels · 1 / (3 · 2 · 2)
  np.testing.assert_allclose(gramnet.gram_matrix(ones), np.full((1, 3, 3), 4 / 12))


def test_gram_matrix_ignores_where_pixels_are():
  x = np.random.default_rng(2).normal(size=(1, 4, 4, 3)).astype(np.float32)
  perm = np.random.default_rng(3).permutation(16)
  shuffled = x.reshape(1, 16, 3)[:, perm].reshape(1, 4, 4, 3)
  assert not np.allclose(shuffled, x)
  np.testing.assert_allclose(gramnet.gram_matrix(jnp.asarray(shuffled)),
                             gramnet.gram_matrix(jnp.asarray(x)), rtol=1e-5, atol=1e-6)


# GramNet on a two-stage bottleneck ResNet with Gram blocks at four places, for 16×16.
TINY_GRAMNET = dict(stage_sizes=(1, 1), width=4, block="bottleneck", small_input=True,
                    gram_at=("input", "stem", "layer1", "layer2"), gram_channels=4,
                    gram_hidden=4, head_hidden=8)


@pytest.fixture(scope="module")
def tiny_gramnet():
  """(model, variables, x, train_apply(variables, x, dropout_rng) jitted once)."""
  model = gramnet.GramNet(**TINY_GRAMNET)
  x = _images(2, size=16)
  train_apply = jax.jit(lambda v, x, rng: model.apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": rng}))
  return model, _variables(model, x), x, train_apply


def test_gramnet_lite_has_a_feature_per_gram_block():
  model = gramnet.GramNet(**gramnet.GRAMNET_LITE)
  x = jnp.zeros((2, 32, 32, 3), jnp.uint8)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x)["params"])
  assert set(params) == {
      "backbone", "gram_input", "gram_stem", "gram_maxpool", "gram_layer1", "gram_layer2",
      "gram_layer3", "gram_scale", "head_hidden", "head"}
  assert params["gram_scale"].shape == (1,)
  # pooled (16·8·4 channels) ++ 6 Gram features of 16 → head_hidden 128.
  assert params["head_hidden"]["kernel"].shape == (512 + 6 * 16, 128)
  logits, feats = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), x, return_features=True)[0])
  assert logits.shape == (2, 2) and feats["gram"].shape == (2, 6 * 16)


def test_gradient_reaches_every_gram_block_and_the_shared_scale(tiny_gramnet):
  model, variables, x, _ = tiny_gramnet
  grads = jax.jit(jax.grad(lambda p: model.apply({**variables, "params": p}, x)[:, 1].sum()))(
      variables["params"])
  names = [k for k in grads if k.startswith("gram_")]
  assert len(names) == 5  # four blocks and the scale
  for name in names:
    for layer, g in jax.tree_util.tree_leaves_with_path(grads[name]):
      if jax.tree_util.keystr(layer).endswith("['kernel']") or name == "gram_scale":
        assert float(jnp.abs(g).max()) > 0, name + jax.tree_util.keystr(layer)


def test_train_mode_updates_every_batch_norm_statistic(tiny_gramnet):
  model, variables, x, train_apply = tiny_gramnet
  _, state = train_apply(variables, x, jax.random.key(1))
  old = jax.tree.leaves_with_path(variables["batch_stats"])
  new = jax.tree.leaves(state["batch_stats"])
  assert len(old) == len(new) == 2 * (1 + 2 * 4 + 4 * 3)  # stem, 2 blocks × 4, 4 Gram blocks × 3
  for (path, a), b in zip(old, new):
    assert not np.allclose(a, b), jax.tree_util.keystr(path)


def test_eval_mode_is_deterministic_and_dropout_is_off(tiny_gramnet):
  model, variables, x, train_apply = tiny_gramnet
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False, return_features=True))
  (a, feats), (b, _) = apply(variables, x), apply(variables, x)
  assert a.shape == (2, 2) and a.dtype == jnp.float32 and feats["gram"].shape == (2, 4 * 4)
  np.testing.assert_array_equal(a, b)
  t1, t2 = (train_apply(variables, x, jax.random.key(i))[0] for i in (1, 2))
  assert not np.allclose(t1, t2)  # train mode draws dropout masks


def test_unknown_gram_position_is_an_error():
  model = gramnet.GramNet(gram_at=("input", "layer9"), **gramnet.GRAMNET_LITE)
  with pytest.raises(ValueError, match="layer9"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), _images(1)))


def test_models_are_registered_and_buildable_by_name():
  assert MODELS.get("resnet") is resnet.ResNet and MODELS.get("gramnet") is gramnet.GramNet
  assert isinstance(models.build("gramnet", **gramnet.GRAMNET_LITE), gramnet.GramNet)
  assert isinstance(models.build("resnet", num_classes=2, **resnet.RESNET50_LITE), resnet.ResNet)
