"""Spec's spectrum and F3-Net's frequency views against NumPy transcriptions of the
official code (ColumbiaDVMM/AutoGAN GAN_Detection_Train.py, yyk-wew/F3Net models.py);
both detectors train (shapes, gradients, BatchNorm statistics)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from effcomp import models
from effcomp.models.detect import f3net, spectrum


def _official_spectrum(im):
  """GAN_Detection_Train.py L206–217 on one [H, W, 3] image in [0, 1] (`--mode 0`)."""
  im = im.astype(np.float32).copy()
  for i in range(3):
    fft_img = np.log(np.abs(np.fft.fft2(im[:, :, i])) + 1e-3)
    fft_min, fft_max = np.percentile(fft_img, 5), np.percentile(fft_img, 95)
    fft_img = ((fft_img - fft_min) / (fft_max - fft_min) - 0.5) * 2
    fft_img[fft_img < -1] = -1
    fft_img[fft_img > 1] = 1
    im[:, :, i] = fft_img
  return im


def _generate_filter(start, end, size):  # F3Net models.py L232–233, verbatim
  return [[0. if i + j > end or i + j < start else 1. for j in range(size)] for i in range(size)]


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def test_log_spectrum_matches_the_official_numpy_transform():
  images = np.random.default_rng(0).uniform(size=(2, 24, 24, 3)).astype(np.float32)
  got = np.asarray(jax.jit(spectrum.log_spectrum)(images))
  want = np.stack([_official_spectrum(im) for im in images])
  np.testing.assert_allclose(got, want, atol=2e-4)
  # Unshifted: the DC term (the largest amplitude) sits at [0, 0], clipped to 1.
  np.testing.assert_array_equal(got[:, 0, 0], 1.0)
  assert got.min() == -1.0 and 0.04 < np.mean(got == 1.0) < 0.06  # above the 95th: ~5 %


@pytest.mark.parametrize("n", [8, 10, 33])
def test_dct_matrix_is_orthonormal_and_scipys_dct_ii(n):
  d = f3net.dct_matrix(n)
  np.testing.assert_allclose(d @ d.T, np.eye(n), atol=1e-12)
  np.testing.assert_allclose(d, scipy.fft.dct(np.eye(n), norm="ortho", axis=0), atol=1e-12)


def test_band_masks_are_the_official_filters_with_shared_boundary_diagonals():
  assert f3net.fad_band_edges(299) == ((0, 106.0), (106.0, 149), (149, 598), (0, 598))
  for size, edges in ((32, f3net.fad_band_edges(32)), (10, f3net.lfs_band_edges(10, 6))):
    for start, end in edges:
      np.testing.assert_array_equal(f3net.band_mask(start, end, size),
                                    np.asarray(_generate_filter(start, end, size)))
  # LFS: six bands tile i + j ∈ [0, 18]; the diagonal i + j = 10 (= 20/6·3) is in two.
  lfs_masks = np.stack([f3net.band_mask(s, e, 10) for s, e in f3net.lfs_band_edges(10, 6)])
  diag = np.add.outer(np.arange(10), np.arange(10))
  np.testing.assert_array_equal(lfs_masks.sum(0), np.where(diag == 10, 2, 1))
  assert [int(m.sum()) for m in lfs_masks] == [10, 18, 36, 30, 12, 3]


def _numpy_band(x, mask):
  """idct2(dct2(x) ⊙ mask) per channel, x [B, N, N, C], mask [N, N]."""
  freq = scipy.fft.dctn(x, axes=(1, 2), norm="ortho")
  return scipy.fft.idctn(freq * mask[None, :, :, None], axes=(1, 2), norm="ortho")


def test_fad_bands_are_dct_masked_inverse_dcts_and_low_mid_high_double_count_boundaries():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, size=(2, 32, 32, 3))
  bands = np.asarray(jax.jit(f3net.fad_bands)(x.astype(np.float32), jnp.zeros((4, 32, 32))))
  assert bands.shape == (2, 32, 32, 12)
  low, mid, high, full = (bands[..., 3 * k:3 * k + 3] for k in range(4))
  for band, (start, end) in zip((low, mid, high, full), f3net.fad_band_edges(32)):
    mask = np.asarray(_generate_filter(start, end, 32))
    np.testing.assert_allclose(band, _numpy_band(x, mask), atol=1e-4)
  np.testing.assert_allclose(full, x, atol=1e-4)  # the 'all' band is the image
  # Edges 32 // 2.82 = 11 and 32 // 2 = 16 are in two bands each: their diagonals count twice.
  diag = np.add.outer(np.arange(32), np.arange(32))
  twice = _numpy_band(x, (diag == 11).astype(float)) + _numpy_band(x, (diag == 16).astype(float))
  np.testing.assert_allclose(low + mid + high, x + twice, atol=1e-4)
  assert np.abs(twice).max() > 0.05
  # A learnable part adds 2σ(l) − 1 to each base mask.
  learnable = rng.normal(0, 0.5, size=(4, 32, 32))
  got = np.asarray(jax.jit(f3net.fad_bands)(x.astype(np.float32), learnable.astype(np.float32)))
  mask = np.asarray(_generate_filter(11.0, 16, 32)) + 2 * _sigmoid(learnable[1]) - 1
  np.testing.assert_allclose(got[..., 3:6], _numpy_band(x, mask), atol=1e-4)


def _official_lfs(x, learnable, window=10, m=6):
  """models.py L88–122 in NumPy: gray, (g + 1)·122.5, 10×10 windows at stride 2 with zero
  padding 4, DCT, log10(|·| + 1e-15), filter (base + 2σ(l) − 1) / base count, sum."""
  gray = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2] + 1.0) * 122.5
  padded = np.pad(gray, ((0, 0), (4, 4), (4, 4)))
  side = (x.shape[1] - window + 8) // 2 + 1
  d = f3net.dct_matrix(window)
  out = np.zeros((x.shape[0], side, side, m))
  for k in range(m):
    base = np.asarray(_generate_filter(window * 2. / m * k, window * 2. / m * (k + 1), window))
    filt = (base + 2 * _sigmoid(learnable[k]) - 1) / base.sum()
    for r in range(side):
      for c in range(side):
        patch = padded[:, 2 * r:2 * r + window, 2 * c:2 * c + window]
        logs = np.log10(np.abs(d @ patch @ d.T) + 1e-15)
        out[:, r, c, k] = np.sum(logs * filt, axis=(1, 2))
  return out


def test_lfs_matches_a_numpy_sliding_window_dct():
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, size=(2, 14, 14, 3))
  for learnable in (np.zeros((6, 10, 10)), rng.normal(0, 0.5, size=(6, 10, 10))):
    got = jax.jit(f3net.lfs)(x.astype(np.float32), learnable.astype(np.float32))
    np.testing.assert_allclose(got, _official_lfs(x, learnable), atol=1e-3)
  # The official 299×299 input gives its asserted 149×149 grid.
  shape = jax.eval_shape(f3net.lfs, jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)).shape
  assert shape == (1, 149, 149, 6)


def _variables(model, x):
  """Variables with `model.init`'s structure (traced abstractly: compiling the
  initializers costs more than the test) and seeded values: BN scales 1, other
  parameters N(0, 0.1²), batch statistics at their initial mean 0 / variance 1."""
  rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
  shapes = flax.traverse_util.flatten_dict(
      flax.linen.unbox(jax.eval_shape(model.init, rngs, x)), sep="/")
  rng = np.random.default_rng(0)
  def value(key, leaf):
    if key.endswith(("/scale", "/var")):
      return np.ones(leaf.shape, np.float32)
    if key.endswith("/mean"):
      return np.zeros(leaf.shape, np.float32)
    return rng.normal(0, 0.1, size=leaf.shape).astype(np.float32)
  return flax.traverse_util.unflatten_dict(
      {k: value(k, v) for k, v in shapes.items()}, sep="/")


@pytest.mark.parametrize("name,fields", [
    ("spec", dict(stage_sizes=(1, 1), width=8, small_input=True)),
    ("f3net", dict(mode="Mix", widths=(8, 8))),
    ("f3net", dict(mode="LFS", widths=(8,))),
])
def test_detector_trains_its_parameters_and_batch_statistics(name, fields):
  model = models.build(name, num_classes=2, **fields)
  x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, size=(4, 16, 16, 3)), jnp.float32)
  variables = _variables(model, x)
  params, stats = variables["params"], variables["batch_stats"]

  @jax.jit
  def loss_and_grad(params):
    def loss(p):
      logits, updates = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                    rngs={"dropout": jax.random.PRNGKey(2)},
                                    mutable=["batch_stats"])
      return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), (logits, updates["batch_stats"])
    return jax.value_and_grad(loss, has_aux=True)(params)

  (_, (logits, new_stats)), grads = loss_and_grad(params)
  assert logits.shape == (4, 2) and logits.dtype == jnp.float32
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  assert all(np.all(np.isfinite(g)) for g in flat.values())
  assert np.abs(flat["head/kernel"]).sum() > 0
  for key, g in flat.items():  # the learnable frequency filters and MixBlock's γ learn
    if key.endswith(("_filters", "_gamma")):
      assert np.abs(g).sum() > 0, key
  assert any(k.endswith("fad_filters") for k in flat) == (fields.get("mode") == "Mix")
  assert any(k.endswith("lfs_filters") for k in flat) == (name == "f3net")
  # Every BatchNorm moves its running statistics in train mode (MixBlock's BNs see
  # att·(2σ(γ) − 1) = 0 at γ = 0: their mean stays 0, their variance decays).
  old = flax.traverse_util.flatten_dict(stats, sep="/")
  new = flax.traverse_util.flatten_dict(flax.core.unfreeze(new_stats), sep="/")
  assert old.keys() == new.keys() and len(new) > 0
  layers = {k.rsplit("/", 1)[0] for k in new}
  for layer in layers:
    assert any(not np.allclose(old[k], new[k]) for k in new if k.startswith(layer + "/")), layer


def test_mix_block_matches_the_official_forward():
  """models.py L338–358 transcribed in NumPy (NCHW), BatchNorm with running statistics."""
  rng = np.random.default_rng(4)
  x_fad, x_lfs = rng.normal(size=(2, 2, 6, 6, 3)).astype(np.float32)
  block = f3net.MixBlock()
  shapes = flax.traverse_util.flatten_dict(flax.linen.unbox(
      jax.eval_shape(block.init, jax.random.PRNGKey(0), x_fad, x_lfs)), sep="/")
  v = {k: (rng.uniform(0.5, 2.0, size=a.shape) if k.endswith("/var")
           else rng.normal(0, 0.7, size=a.shape)).astype(np.float32) for k, a in shapes.items()}
  got = jax.jit(block.apply)(flax.traverse_util.unflatten_dict(v, sep="/"), x_fad, x_lfs)

  p = {k.split("/", 1)[1]: a for k, a in v.items()}  # drop 'params/', 'batch_stats/'
  nchw = lambda a: a.transpose(0, 3, 1, 2)
  def conv1x1(name, a):  # nn.Conv2d(c, c, (1, 1)): kernel [1, 1, in, out] → [out, in]
    kernel, bias = p[name + "/kernel"][0, 0].T, p[name + "/bias"]
    return np.einsum("oi,bihw->bohw", kernel, a) + bias[:, None, None]
  def dw_bn(conv, bn, a):  # depthwise 1×1 conv (groups=c) → BatchNorm2d in eval mode
    a = a * p[conv + "/kernel"][0, 0, 0][:, None, None] + p[conv + "/bias"][:, None, None]
    a = (a - p[bn + "/mean"][:, None, None]) / np.sqrt(p[bn + "/var"][:, None, None] + 1e-5)
    return a * p[bn + "/scale"][:, None, None] + p[bn + "/bias"][:, None, None]
  xf, xl = nchw(x_fad), nchw(x_lfs)
  b, c, w, h = xf.shape
  q = np.concatenate([conv1x1("fad_query", xf).reshape(-1, w, h),
                      conv1x1("lfs_query", xl).reshape(-1, w, h)], axis=2)
  k = np.concatenate([conv1x1("fad_key", xf).reshape(-1, w, h).transpose(0, 2, 1),
                      conv1x1("lfs_key", xl).reshape(-1, w, h).transpose(0, 2, 1)], axis=1)
  energy = q @ k
  attention = np.exp(energy - energy.max(-1, keepdims=True))
  attention = (attention / attention.sum(-1, keepdims=True)).reshape(b, c, w, w)
  y_fad = xf + dw_bn("fad_conv", "fad_bn", xl * attention * (2 * _sigmoid(p["lfs_gamma"]) - 1))
  y_lfs = xl + dw_bn("lfs_conv", "lfs_bn", xf * attention * (2 * _sigmoid(p["fad_gamma"]) - 1))
  np.testing.assert_allclose(got[0], y_fad.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got[1], y_lfs.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_f3net_mix_needs_matching_stream_maps():
  # A 15×15 image: FAD's stride-2 stem gives 8×8 maps, LFS's grid 7×7.
  with pytest.raises(ValueError, match="MixBlock"):
    f3net.MixBlock().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1, 7, 7, 4)))
  with pytest.raises(ValueError, match="mode='Spatial'"):
    models.build("f3net", mode="Spatial").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
