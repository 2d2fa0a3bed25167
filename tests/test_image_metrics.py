"""Image-quality metrics: PSNR/SSIM (effcomp.metrics.image) against scikit-image and a
transcription of BasicSR, and LPIPS (effcomp.metrics.lpips) against a PyTorch
re-implementation.

The PyTorch LPIPS below is written from richzhang/PerceptualSimilarity `lpips/lpips.py`
(`LPIPS.forward`, `ScalingLayer`, `NetLinLayer`, `normalize_tensor`) and
`lpips/pretrained_networks.py` (`alexnet`, `vgg16` slices) with the layers of torchvision
`models/alexnet.py` / `models/vgg.py` re-declared (torchvision is not importable beside
torch 2.13), so its `state_dict()` has the lpips package's key names.
"""

import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from effcomp.metrics import image
from effcomp.metrics import lpips

try:
  import torch
except ImportError:  # the LPIPS reference tests need it; everything else does not
  torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch reference not installed")


def _pair(seed=0, noise=8.0, size=(72, 64)):
  """(hr, sr): an astronaut crop [H, W, 3] uint8 and a noisy, re-quantized copy."""
  hr = data.astronaut()[100:100 + size[0], 150:150 + size[1]]
  noisy = hr + np.random.default_rng(seed).normal(0, noise, hr.shape)
  return hr, np.clip(noisy, 0, 255).round().astype(np.uint8)


# ---- PSNR / SSIM ----

def test_rgb_to_y_maps_black_to_16_white_to_235_and_primaries_to_their_weights():
  colours = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                     np.uint8)
  want = [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]
  np.testing.assert_allclose(image.rgb_to_y(colours), want, rtol=0, atol=1e-12)
  np.testing.assert_allclose(image.rgb_to_y(jnp.asarray(colours)), want, rtol=1e-6)


def test_psnr_is_10_log10_of_255_squared_over_the_y_mse_and_matches_skimage():
  hr, sr = _pair()
  y_hr, y_sr = (image.rgb_to_y(x[4:-4, 4:-4]) for x in (hr, sr))
  mse = np.mean((y_hr - y_sr) ** 2)
  got = image.psnr(sr, hr, crop_border=4)
  assert got == pytest.approx(10 * np.log10(255.0 ** 2 / mse), rel=1e-12)
  assert got == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), rel=1e-12)
  rgb_mse = np.mean((hr[4:-4, 4:-4].astype(float) - sr[4:-4, 4:-4]) ** 2)
  assert image.psnr(sr, hr, 4, test_y_channel=False) == pytest.approx(
      10 * np.log10(255.0 ** 2 / rgb_mse), rel=1e-12)


def test_ssim_equals_skimage_gaussian_ssim_on_the_y_channel_of_the_same_crop():
  # skimage filters with reflection at the edges but averages its map with 5 pixels
  # (the window's radius) cropped from each edge: exactly BasicSR's 'valid' region.
  hr, sr = _pair()
  y_hr, y_sr = (image.rgb_to_y(x[3:-3, 3:-3]) for x in (hr, sr))
  want = structural_similarity(y_hr, y_sr, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=255)
  assert 0.5 < want < 0.99
  assert image.ssim(sr, hr, crop_border=3) == pytest.approx(want, abs=1e-10)
  want_rgb = structural_similarity(hr[3:-3, 3:-3].astype(float), sr[3:-3, 3:-3].astype(float),
                                   gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   data_range=255, channel_axis=-1)
  assert image.ssim(sr, hr, 3, test_y_channel=False) == pytest.approx(want_rgb, abs=1e-10)


def _basicsr_metrics(img, img2, crop_border):
  """BasicSR `calculate_psnr` / `calculate_ssim(test_y_channel=True)` transcribed, on BGR
  input as cv2 reads it (`to_y_channel` → `bgr2ycbcr(float32, y_only=True)`; `_ssim`
  with `cv2.filter2D` (reflect-101 = scipy 'mirror') and a [5:-5] crop)."""
  def to_y(x):
    x = x.astype(np.float32) / 255.0
    y = np.dot(x, [24.966, 128.553, 65.481]) + 16.0
    return (y / 255.0).astype(np.float32)[..., None] * 255.0

  c = crop_border
  img, img2 = (to_y(x[c:-c, c:-c]).astype(np.float64) for x in (img, img2))
  psnr = 10.0 * np.log10(255.0 ** 2 / np.mean((img - img2) ** 2))
  kernel = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
  kernel /= kernel.sum()
  window = np.outer(kernel, kernel)
  f = lambda x: ndimage.correlate(x, window, mode="mirror")[5:-5, 5:-5]
  a, b = img[..., 0], img2[..., 0]
  mu1, mu2 = f(a), f(b)
  s11, s22, s12 = f(a * a) - mu1 ** 2, f(b * b) - mu2 ** 2, f(a * b) - mu1 * mu2
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  ssim_map = (((2 * mu1 * mu2 + c1) * (2 * s12 + c2))
              / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2)))
  return psnr, ssim_map.mean()


def test_rgb_metrics_equal_basicsr_on_the_same_images_in_bgr_order():
  hr, sr = _pair(seed=3)
  want_psnr, want_ssim = _basicsr_metrics(sr[..., ::-1], hr[..., ::-1], crop_border=4)
  # BasicSR keeps Y in float32; effcomp in float64.
  assert image.psnr(sr, hr, 4) == pytest.approx(want_psnr, abs=1e-5)
  assert image.ssim(sr, hr, 4) == pytest.approx(want_ssim, abs=1e-7)


def test_identical_images_give_infinite_psnr_and_ssim_one():
  hr, _ = _pair()
  assert image.psnr(hr, hr.copy(), 2) == float("inf")
  assert image.ssim(hr, hr.copy(), 2) == pytest.approx(1.0, abs=1e-12)
  assert image.ssim(hr, hr.copy(), 2, test_y_channel=False) == pytest.approx(1.0, abs=1e-12)


def test_uint8_and_float_images_give_the_same_metrics():
  hr, sr = _pair()
  assert image.psnr(sr.astype(np.float32), hr.astype(np.float64), 4) == image.psnr(sr, hr, 4)
  assert image.ssim(sr.astype(np.float32), hr, 4) == image.ssim(sr, hr, 4)


@pytest.mark.parametrize("crop_border", [1, 4])
def test_crop_border_removes_exactly_that_many_pixels(crop_border):
  hr, _ = _pair()
  sr = hr.copy()
  c, (h, w) = crop_border, hr.shape[:2]
  for index in [(c - 1, slice(None)), (h - c, slice(None)), (slice(None), c - 1),
                (slice(None), w - c)]:  # the innermost cropped row/column on each side
    sr[index] = 255 - sr[index]
  assert image.psnr(sr, hr, c) == float("inf")
  assert image.ssim(sr, hr, c) == pytest.approx(1.0, abs=1e-12)
  assert np.isfinite(image.psnr(sr, hr, c - 1))
  assert image.ssim(sr, hr, c - 1) < 1.0


@pytest.mark.parametrize("max_value", [255.0, 1.0])
def test_jitted_batch_metrics_equal_the_numpy_ones_per_image(max_value):
  pairs = [_pair(seed=s, noise=n) for s, n in ((0, 3.0), (1, 12.0), (2, 30.0))]
  hr = np.stack([p[0] for p in pairs] + [pairs[0][0]])
  sr = np.stack([p[1] for p in pairs] + [pairs[0][0]])  # the last pair is identical
  scale = max_value / 255.0
  fn = jax.jit(lambda a, b: (image.psnr_y_batch(a, b, 4, max_value),
                             image.ssim_y_batch(a, b, 4, max_value)))
  got_psnr, got_ssim = fn(*(jnp.asarray(x * scale, jnp.float32) for x in (sr, hr)))
  want_psnr = [image.psnr(a, b, 4) for a, b in zip(sr, hr)]
  want_ssim = [image.ssim(a, b, 4) for a, b in zip(sr, hr)]
  assert got_psnr.shape == got_ssim.shape == (4,)
  assert got_psnr[-1] == np.inf and want_psnr[-1] == np.inf
  np.testing.assert_allclose(got_psnr[:-1], want_psnr[:-1], rtol=0, atol=1e-4)
  np.testing.assert_allclose(got_ssim, want_ssim, rtol=0, atol=1e-5)


def test_metrics_reject_mismatched_shapes_and_impossible_crops():
  hr, sr = _pair()
  with pytest.raises(ValueError, match="img1.shape"):
    image.psnr(hr, sr[:-1], 4)
  with pytest.raises(ValueError, match="crop_border=-1"):
    image.psnr(hr, sr, -1)
  with pytest.raises(ValueError, match="crop_border=30"):
    image.ssim(hr, sr, 30)  # 64 − 60 = 4 < 11 pixels left for the window
  with pytest.raises(ValueError, match="sr.shape"):
    image.psnr_y_batch(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 9, 3)), 0)
  with pytest.raises(ValueError, match="crop_border=2"):
    image.ssim_y_batch(jnp.zeros((1, 14, 14, 3)), jnp.zeros((1, 14, 14, 3)), 2)


# ---- LPIPS ----

ALEX_SLICES = (0, 2, 5, 8, 10, 12)  # pretrained_networks.alexnet: features[0:2], [2:5], …
VGG_SLICES = (0, 4, 9, 16, 23, 30)


def _torch_lpips(net, seed=0):
  """(lpips.LPIPS-shaped torch module, torchvision-shaped `features`), random weights."""
  tnn = torch.nn
  torch.manual_seed(seed)
  if net == "alex":
    features = tnn.Sequential(
        tnn.Conv2d(3, 64, 11, 4, 2), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(64, 192, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(), tnn.Conv2d(384, 256, 3, padding=1),
        tnn.ReLU(), tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(3, 2))
    bounds = ALEX_SLICES
  else:
    layers, cin = [], 3
    for v in lpips.VGG16_CFG + ("M",):
      if v == "M":
        layers.append(tnn.MaxPool2d(2, 2))
      else:
        layers += [tnn.Conv2d(cin, v, 3, padding=1), tnn.ReLU()]
        cin = v
    features, bounds = tnn.Sequential(*layers), VGG_SLICES

  class Slices(tnn.Module):
    def __init__(self):
      super().__init__()
      for s in range(5):
        piece = tnn.Sequential()
        for i in range(bounds[s], bounds[s + 1]):
          piece.add_module(str(i), features[i])
        setattr(self, f"slice{s + 1}", piece)

    def forward(self, x):
      outs = []
      for s in range(5):
        x = getattr(self, f"slice{s + 1}")(x)
        outs.append(x)
      return outs

  class ScalingLayer(tnn.Module):
    def __init__(self):
      super().__init__()
      self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
      self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])

    def forward(self, x):
      return (x - self.shift) / self.scale

  class NetLinLayer(tnn.Module):
    def __init__(self, chn_in):
      super().__init__()
      self.model = tnn.Sequential(tnn.Dropout(), tnn.Conv2d(chn_in, 1, 1, bias=False))

    def forward(self, x):
      return self.model(x)

  class LPIPS(tnn.Module):
    def __init__(self):
      super().__init__()
      self.scaling_layer = ScalingLayer()
      self.net = Slices()
      for l, c in enumerate(lpips.CHANNELS[net]):
        setattr(self, f"lin{l}", NetLinLayer(c))
        with torch.no_grad():  # the fitted weights are non-negative
          getattr(self, f"lin{l}").model[1].weight.uniform_(0, 1)

    def forward(self, in0, in1, normalize=False):
      if normalize:
        in0, in1 = 2 * in0 - 1, 2 * in1 - 1
      outs0, outs1 = self.net(self.scaling_layer(in0)), self.net(self.scaling_layer(in1))
      val = 0
      for l in range(5):
        f0 = outs0[l] / (torch.sqrt(torch.sum(outs0[l] ** 2, dim=1, keepdim=True)) + 1e-10)
        f1 = outs1[l] / (torch.sqrt(torch.sum(outs1[l] ** 2, dim=1, keepdim=True)) + 1e-10)
        val = val + getattr(self, f"lin{l}")((f0 - f1) ** 2).mean([2, 3], keepdim=True)
      return val

  return LPIPS().eval(), features


def _save_official_layout(model, features, tmp_path, net):
  """Writes the two files users download: lin weights and torchvision's checkpoint."""
  lin_path, backbone_path = str(tmp_path / f"{net}.pth"), str(tmp_path / f"tv_{net}.pth")
  torch.save({k: v for k, v in model.state_dict().items() if k.startswith("lin")}, lin_path)
  tv_state = {f"features.{k}": v for k, v in features.state_dict().items()}
  tv_state["classifier.1.weight"] = torch.zeros(4, 9216)  # dropped by the loader
  torch.save(tv_state, backbone_path)
  return lin_path, backbone_path


def _images(shape, seed):
  rng = np.random.default_rng(seed)
  return tuple(rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(2))


def _reference(model, x0, x1, **kwargs):
  to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    return model(to_t(x0), to_t(x1), **kwargs).numpy().reshape(-1)


@needs_torch
def test_alex_lpips_equals_pytorch_with_weights_from_lin_pth_and_torchvision_pth(tmp_path):
  model, features = _torch_lpips("alex")
  lin_path, backbone_path = _save_official_layout(model, features, tmp_path, "alex")
  variables = lpips.load_lpips_weights(lin_path, backbone_path=backbone_path)
  x0, x1 = _images((2, 64, 64, 3), seed=0)
  want = _reference(model, x0, x1)
  got = lpips.lpips_fn(variables)(x0, x1)
  assert got.shape == (2,) and np.all(want > 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # [0, 1] inputs with normalize=True, as the reference's flag.
  u0, u1 = (x0 + 1) / 2, (x1 + 1) / 2
  np.testing.assert_allclose(lpips.lpips_fn(variables, normalize=True)(u0, u1),
                             _reference(model, u0, u1, normalize=True), rtol=1e-4, atol=1e-6)


@needs_torch
def test_vgg_lpips_equals_pytorch_with_a_whole_lpips_state_dict(tmp_path):
  model, _ = _torch_lpips("vgg", seed=1)
  path = str(tmp_path / "lpips_vgg_full.pth")  # net.slice*, lin*, scaling_layer.* keys
  torch.save(model.state_dict(), path)
  variables = lpips.load_lpips_weights(path, net="vgg")
  x0, x1 = _images((2, 32, 32, 3), seed=1)
  np.testing.assert_allclose(lpips.lpips_fn(variables, net="vgg")(x0, x1),
                             _reference(model, x0, x1), rtol=1e-4, atol=1e-6)


@needs_torch
def test_convert_lpips_writes_an_npz_that_loads_without_torch(tmp_path, monkeypatch):
  model, features = _torch_lpips("alex", seed=2)
  lin_path, backbone_path = _save_official_layout(model, features, tmp_path, "alex")
  want = lpips.load_lpips_weights(lin_path, backbone_path)
  npz = lpips.convert_lpips(lin_path, backbone_path, str(tmp_path / "lpips_alex.npz"))
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  got = lpips.load_lpips_weights(npz)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  with pytest.raises(ImportError, match="convert_lpips"):
    lpips.load_lpips_weights(lin_path, backbone_path)


def _random_variables(net="alex", seed=0):
  """He-normal convs and non-negative lin weights, drawn with NumPy (an eager
  `LPIPS().init` compiles every op: seconds on a CPU)."""
  rng, params = np.random.default_rng(seed), {}
  for (_, *path), shape in lpips.expected_shapes(net).items():
    fan_in = int(np.prod(shape[:-1]))
    std = np.sqrt(2 / fan_in) if len(shape) > 1 else 0.1  # kernels He-normal, biases small
    value = rng.normal(0, std, shape)
    params[tuple(path)] = np.abs(value) if path[0].startswith("lin") else value
  return {"params": flax.traverse_util.unflatten_dict(params)}


def test_lpips_of_an_image_with_itself_is_zero_and_lpips_is_symmetric():
  variables = _random_variables()
  fn = lpips.lpips_fn(variables)
  x0, x1 = _images((3, 64, 48, 3), seed=4)
  # Zero up to XLA fusing the two passes differently (≈ 1e-17; exact without jit).
  np.testing.assert_allclose(fn(x0, x0), np.zeros(3), rtol=0, atol=1e-12)
  d01, d10 = fn(x0, x1), fn(x1, x0)
  assert np.all(d01 > 0)
  np.testing.assert_allclose(d01, d10, rtol=1e-6)


def test_normalize_features_is_unit_norm_with_a_finite_gradient_at_zero():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(lpips.normalize_features(x), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
  grad = jax.grad(lambda v: jnp.sum(lpips.normalize_features(v) * jnp.array([1.0, 2.0])))(x)
  assert np.all(np.isfinite(grad))


def test_missing_weights_file_names_the_path_and_where_the_weights_come_from(tmp_path):
  path = str(tmp_path / "alex.pth")
  with pytest.raises(FileNotFoundError) as e:
    lpips.load_lpips_weights(path)
  assert path in str(e.value) and "lpips/weights/v0.1/alex.pth" in str(e.value)
  assert lpips.TORCHVISION_URLS["alex"] in str(e.value)


def test_lin_weights_without_a_backbone_ask_for_torchvision_weights(tmp_path):
  path = str(tmp_path / "lin_only.npz")
  np.savez(path, **{f"lin{l}.model.1.weight": np.ones((1, c, 1, 1), np.float32)
                    for l, c in enumerate(lpips.CHANNELS["alex"])})
  with pytest.raises(ValueError, match="backbone_path") as e:
    lpips.load_lpips_weights(path)
  assert lpips.TORCHVISION_URLS["alex"] in str(e.value)
  with pytest.raises(ValueError, match="net='vgg'"):  # alex lin shapes are not vgg's
    lpips.load_lpips_weights(path, net="vgg")


def test_lpips_rejects_mismatched_or_too_small_images():
  model, x = lpips.LPIPS(), jnp.zeros((1, 30, 30, 3))
  with pytest.raises(ValueError, match="height, width ≥ 31"):
    model.init(jax.random.key(0), x, x)
  with pytest.raises(ValueError, match="x1.shape"):
    model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 63, 3)))


def test_sharpness_ratio_ranks_blur_below_and_noise_above_the_original():
  hr = data.astronaut()[100:228, 100:228]
  ramp = np.tile(np.arange(16, dtype=np.float64)[None, :, None] * 4, (16, 1, 3))
  # A horizontal ramp of 4 per pixel in every channel: Y's gradient is 4·219/255.
  assert image.gradient_energy(ramp) == pytest.approx(4 * 219 / 255)
  blurred = ndimage.gaussian_filter(hr.astype(np.float64), (1.5, 1.5, 0))
  noisy = np.clip(hr + np.random.default_rng(0).normal(0, 20, hr.shape), 0, 255)
  assert image.sharpness_ratio(hr, hr, 4) == 1.0
  assert image.sharpness_ratio(blurred, hr, 4) < 0.7 < 1.3 < image.sharpness_ratio(noisy, hr, 4)
  with pytest.raises(ValueError, match="sr.shape"):
    image.sharpness_ratio(hr[:10], hr, 4)
