"""Tests for effcomp.data.degradations: MATLAB bicubic imresize and Real-ESRGAN degradations."""

import dataclasses
import math

import numpy as np
import pytest

from effcomp.data import degradations as deg
from effcomp.data import imresize as imr

# Top-left 16×16 of the red channel of BasicSR's baboon.png, and MATLAB R2017b's
# `im2uint8(imresize(im2double(baboon), s, 'bicubic'))` over the same corner, from
# github.com/xinntao/matlab_functions_verification (imresize_bicubic/*_matlab.png). Only
# output pixels whose support lies inside the crop are kept, so the crop reproduces them.
BABOON_CORNER = np.array([
    [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6],
    [84, 156, 76, 23, 44, 112, 103, 110, 55, 112, 44, 52, 84, 84, 40, 21],
    [84, 143, 76, 79, 44, 79, 79, 103, 54, 54, 52, 84, 103, 116, 110, 52],
    [44, 79, 44, 79, 76, 52, 44, 84, 116, 39, 44, 84, 84, 156, 84, 84],
    [52, 44, 116, 116, 23, 76, 44, 44, 144, 156, 55, 112, 84, 72, 156, 103],
    [110, 79, 84, 156, 21, 44, 23, 23, 44, 156, 176, 84, 176, 149, 142, 176],
    [52, 44, 23, 52, 110, 76, 23, 55, 52, 44, 103, 211, 112, 176, 179, 196],
    [103, 76, 23, 44, 79, 112, 52, 44, 112, 112, 44, 79, 76, 55, 140, 156],
    [116, 76, 23, 44, 23, 44, 79, 44, 44, 44, 84, 84, 44, 44, 84, 111],
    [84, 176, 142, 84, 114, 37, 44, 44, 52, 79, 79, 76, 44, 144, 144, 72],
    [110, 84, 175, 144, 116, 116, 44, 23, 84, 76, 44, 39, 44, 44, 103, 176],
    [141, 79, 149, 144, 143, 149, 87, 44, 84, 84, 54, 37, 44, 52, 116, 111],
    [141, 76, 112, 176, 86, 84, 144, 55, 79, 156, 44, 44, 21, 44, 156, 196],
    [143, 55, 54, 79, 111, 79, 103, 110, 44, 44, 44, 23, 44, 23, 55, 79],
    [79, 54, 79, 55, 76, 54, 44, 79, 52, 72, 44, 23, 44, 6, 112, 103],
    [44, 23, 76, 112, 86, 79, 24, 44, 72, 72, 84, 54, 24, 23, 44, 84]], np.uint8)
MATLAB_DOWN = {
    2: [[57, 30, 36, 51, 38, 30], [86, 77, 66, 85, 77, 64], [66, 99, 52, 38, 110, 117],
        [70, 41, 79, 48, 73, 109], [109, 80, 61, 49, 61, 69], [114, 150, 125, 58, 79, 48]],
    3: [[62, 43, 59, 41], [77, 69, 67, 105], [72, 59, 54, 90], [123, 111, 63, 58]],
    4: [[62, 56], [71, 57]],
}
MATLAB_UP2 = [
    [0, 0, 0, 0, 0, 1, 4, 5], [20, 25, 35, 35, 25, 16, 10, 8],
    [63, 82, 119, 118, 80, 47, 22, 15], [83, 108, 156, 155, 104, 66, 42, 33],
    [83, 104, 146, 144, 97, 73, 70, 61], [71, 88, 123, 121, 81, 67, 80, 76],
    [48, 61, 89, 86, 54, 49, 70, 79], [39, 47, 62, 66, 58, 63, 81, 84]]


# ------------------------------------------------------------------------ imresize


def _keys(t: float, a: float = -0.5) -> float:
  """Keys' cubic convolution kernel, written from its definition."""
  t = abs(t)
  if t <= 1:
    return (a + 2) * t**3 - (a + 3) * t**2 + 1
  if t < 2:
    return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
  return 0.0


def _reference_resize_1d(x: np.ndarray, scale: float, out_length: int) -> np.ndarray:
  """MATLAB's bicubic resize of one signal, one output pixel at a time (slow, direct)."""
  n = len(x)
  width = 4 / scale if scale < 1 else 4  # antialias: the kernel is stretched by 1/scale
  out = np.zeros(out_length)
  for o in range(1, out_length + 1):
    centre = (o - 0.5) / scale + 0.5  # 1-based input coordinate of the output pixel centre
    total = weight_sum = 0.0
    for j in range(math.floor(centre - width / 2) - 1, math.ceil(centre + width / 2) + 2):
      w = scale * _keys(scale * (centre - j)) if scale < 1 else _keys(centre - j)
      k = j
      while not 1 <= k <= n:  # symmetric border: 0 → 1, -1 → 2, n + 1 → n
        k = 1 - k if k < 1 else 2 * n + 1 - k
      total += w * x[k - 1]
      weight_sum += w
    out[o - 1] = total / weight_sum
  return out


def _reference_imresize(image: np.ndarray, scale_h, scale_w, out_h, out_w) -> np.ndarray:
  rows = np.apply_along_axis(_reference_resize_1d, 0, image, scale_h, out_h)
  return np.apply_along_axis(_reference_resize_1d, 1, rows, scale_w, out_w)


def _im2uint8(x: np.ndarray) -> np.ndarray:
  return np.floor(np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_downscale_matches_matlab_on_baboon_corner(scale):
  expected = np.array(MATLAB_DOWN[scale], np.uint8)
  k = len(expected)
  out = imr.imresize(BABOON_CORNER / 255.0, scale=1 / scale)
  assert out.shape == (math.ceil(16 / scale),) * 2
  np.testing.assert_array_equal(_im2uint8(out[:k, :k]), expected)
  if 16 % scale == 0:
    np.testing.assert_array_equal(imr.bicubic_degrade(BABOON_CORNER, scale)[:k, :k], expected)


def test_imresize_upscale_matches_matlab_on_baboon_corner():
  out = imr.imresize(BABOON_CORNER / 255.0, scale=2)
  assert out.shape == (32, 32)
  np.testing.assert_array_equal(_im2uint8(out[:8, :8]), np.array(MATLAB_UP2, np.uint8))


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2])
def test_imresize_matches_direct_implementation(scale):
  image = np.random.default_rng(0).uniform(size=(13, 17, 2))
  out = imr.imresize(image, scale=scale)
  out_h, out_w = math.ceil(13 * scale), math.ceil(17 * scale)
  assert out.shape == (out_h, out_w, 2) and out.dtype == np.float64
  np.testing.assert_allclose(out, _reference_imresize(image, scale, scale, out_h, out_w),
                             atol=1e-12)


def test_imresize_to_output_shape_uses_per_axis_scales():
  image = np.random.default_rng(1).uniform(size=(12, 15))
  out = imr.imresize(image, output_shape=(5, 21))
  np.testing.assert_allclose(out, _reference_imresize(image, 5 / 12, 21 / 15, 5, 21),
                             atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 0.37, 2, 3.1])
def test_imresize_keeps_a_constant_image_constant(scale):
  out = imr.imresize(np.full((11, 14, 3), 0.7), scale=scale)
  np.testing.assert_allclose(out, 0.7, atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2])
def test_imresize_samples_a_linear_ramp_at_output_pixel_centres(scale):
  rows, cols = np.meshgrid(np.arange(48.0), np.arange(36.0), indexing="ij")
  out = imr.imresize(0.3 * rows + 0.1 * cols + 0.2, scale=scale)
  centre_h = (np.arange(out.shape[0]) + 0.5) / scale - 0.5  # 0-based input coordinates
  centre_w = (np.arange(out.shape[1]) + 0.5) / scale - 0.5
  expected = 0.3 * centre_h[:, None] + 0.1 * centre_w[None, :] + 0.2
  reach = 2 / min(scale, 1)  # kernel half-width in input pixels
  inside_h = (centre_h - reach >= 0) & (centre_h + reach <= 47)
  inside_w = (centre_w - reach >= 0) & (centre_w + reach <= 35)
  assert inside_h.sum() >= 4 and inside_w.sum() >= 3
  np.testing.assert_allclose(out[np.ix_(inside_h, inside_w)],
                             expected[np.ix_(inside_h, inside_w)], atol=1e-10)


def test_imresize_of_uint8_is_unrounded_float_in_0_255():
  out = imr.imresize(BABOON_CORNER, scale=0.5)
  assert out.dtype == np.float64
  np.testing.assert_allclose(out, imr.imresize(BABOON_CORNER / 255.0, scale=0.5) * 255,
                             atol=1e-9)
  assert not np.allclose(out, np.round(out))


def test_imresize_and_bicubic_degrade_reject_bad_arguments():
  image = np.zeros((8, 8))
  with pytest.raises(ValueError, match="exactly one"):
    imr.imresize(image)
  with pytest.raises(ValueError, match="exactly one"):
    imr.imresize(image, scale=0.5, output_shape=(4, 4))
  with pytest.raises(ValueError, match="scale"):
    imr.imresize(image, scale=0)
  with pytest.raises(ValueError, match="output_shape"):
    imr.imresize(image, output_shape=(4, 0))
  with pytest.raises(ValueError, match="multiples of scale=3"):
    imr.bicubic_degrade(np.zeros((8, 9), np.uint8), 3)
  with pytest.raises(ValueError, match="uint8"):
    imr.bicubic_degrade(image, 2)


# ------------------------------------------------------------------------ kernels

KERNEL_MAKERS = {
    "iso": lambda k: deg.bivariate_gaussian(k, 2.0),
    "aniso": lambda k: deg.bivariate_gaussian(k, 2.5, 0.8, 0.6),
    "generalized_iso": lambda k: deg.bivariate_generalized_gaussian(k, 1.5, beta=3.0),
    "generalized_aniso": lambda k: deg.bivariate_generalized_gaussian(k, 2.5, 0.8, 1.2, 0.6),
    "plateau_iso": lambda k: deg.bivariate_plateau(k, 1.5, beta=1.5),
    "plateau_aniso": lambda k: deg.bivariate_plateau(k, 2.5, 1.5, 0.8, -1.0),
    "sinc": lambda k: deg.circular_lowpass_kernel(np.pi / 3, k),
}


@pytest.mark.parametrize("kind", sorted(KERNEL_MAKERS))
@pytest.mark.parametrize("size", [7, 21])
def test_kernels_sum_to_one_and_are_point_symmetric(kind, size):
  kernel = KERNEL_MAKERS[kind](size)
  assert kernel.shape == (size, size)
  np.testing.assert_allclose(kernel.sum(), 1, atol=1e-12)
  np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-15)
  if "aniso" not in kind:  # isotropic: also mirror- and transpose-symmetric
    np.testing.assert_allclose(kernel, kernel[::-1], atol=1e-15)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)


def test_isotropic_gaussian_equals_closed_form():
  offsets = np.arange(-5, 6)
  expected = np.exp(-(offsets[:, None]**2 + offsets[None, :]**2) / (2 * 1.7**2))
  np.testing.assert_allclose(deg.bivariate_gaussian(11, 1.7), expected / expected.sum(),
                             rtol=1e-12)


def test_anisotropic_gaussian_is_widest_along_its_rotated_axis():
  wide = deg.bivariate_gaussian(11, 3.0, 1.0, 0.0)  # σx along columns
  assert wide[5, 8] > 10 * wide[8, 5]
  np.testing.assert_allclose(deg.bivariate_gaussian(11, 3.0, 1.0, np.pi / 2), wide.T,
                             atol=1e-15)


def test_generalized_gaussian_with_beta_one_is_gaussian_and_plateau_has_its_formula():
  np.testing.assert_allclose(deg.bivariate_generalized_gaussian(9, 1.3, 1.0, 2.1, 0.4),
                             deg.bivariate_gaussian(9, 1.3, 2.1, 0.4), rtol=1e-12)
  plateau = deg.bivariate_plateau(9, 2.0, beta=1.5)
  ratio = (1 / (1 + ((1 + 4) / 4)**1.5)) / 1  # offset (1, 2) versus the centre
  np.testing.assert_allclose(plateau[5, 6] / plateau[4, 4], ratio, rtol=1e-12)


def _bessel_j1(x: float) -> float:
  """J1(x) = (1/π) ∫₀^π cos(τ − x sin τ) dτ, by the trapezoidal rule."""
  tau = np.linspace(0, np.pi, 20001)
  return np.trapezoid(np.cos(tau - x * np.sin(tau)), tau) / np.pi


def test_sinc_kernel_matches_circular_lowpass_formula():
  cutoff = 0.6 * np.pi
  kernel = deg.circular_lowpass_kernel(cutoff, 9)
  centre = cutoff**2 / (4 * np.pi)
  for dy, dx in [(0, 1), (1, 2), (3, 3), (4, 0)]:
    r = math.hypot(dy, dx)
    value = cutoff * _bessel_j1(cutoff * r) / (2 * np.pi * r)
    np.testing.assert_allclose(kernel[4 + dy, 4 + dx] / kernel[4, 4], value / centre,
                               rtol=1e-7)
  padded = deg.circular_lowpass_kernel(cutoff, 9, pad_to=21)
  assert padded.shape == (21, 21)
  np.testing.assert_array_equal(padded[6:15, 6:15], kernel)
  assert np.abs(padded).sum() == pytest.approx(np.abs(kernel).sum())  # zeros around


@pytest.mark.parametrize("kind", deg.KERNEL_TYPES)
def test_random_mixed_kernels_are_normalised_for_every_type(kind):
  rng = np.random.default_rng(0)
  for size in (7, 13, 21):
    kernel = deg.random_mixed_kernels(rng, [kind], [1.0], size, (0.2, 3), (0.5, 4), (1, 2))
    assert kernel.shape == (size, size) and kernel.sum() == pytest.approx(1)
    assert np.all(kernel >= 0)


def test_kernel_generators_reject_bad_arguments():
  with pytest.raises(ValueError, match="kernel_size"):
    deg.bivariate_gaussian(8, 1.0)
  with pytest.raises(ValueError, match="sigma"):
    deg.bivariate_gaussian(7, 0.0)
  with pytest.raises(ValueError, match="kernel_size"):
    deg.circular_lowpass_kernel(1.0, 10)
  with pytest.raises(ValueError, match="kernel_list"):
    deg.random_mixed_kernels(np.random.default_rng(0), ["box"], [1.0])


# ------------------------------------------------------- filtering, resize, noise


def test_filter2d_is_a_reflect_padded_correlation():
  rng = np.random.default_rng(0)
  image, kernel = rng.uniform(size=(6, 7, 2)), rng.uniform(size=(5, 5))
  padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="reflect")  # 'dcb|abcd|cba'
  expected = np.zeros_like(image)
  for i in range(5):
    for j in range(5):
      expected += kernel[i, j] * padded[i:i + 6, j:j + 7]
  np.testing.assert_allclose(deg.filter2d(image, kernel), expected, atol=1e-12)


def test_usm_sharpen_keeps_flat_images_and_steepens_edges():
  flat = np.full((20, 20, 3), 0.4)
  np.testing.assert_allclose(deg.usm_sharpen(flat), flat, atol=1e-12)
  step = np.zeros((20, 20, 3))
  step[:, 10:] = 0.5
  sharp = deg.usm_sharpen(step + 0.25)
  assert sharp[10, 9, 0] < 0.25 and sharp[10, 10, 0] > 0.75


@pytest.mark.parametrize("mode", deg.RESIZE_MODES)
def test_resize_matches_torch_interpolate(mode):
  torch = pytest.importorskip("torch")
  image = np.random.default_rng(0).uniform(size=(13, 17, 3))
  as_torch = torch.from_numpy(image).permute(2, 0, 1)[None]
  for scale in (0.37, 1.43):
    size = (math.floor(13 * scale), math.floor(17 * scale))
    expected = torch.nn.functional.interpolate(as_torch, scale_factor=scale, mode=mode)
    np.testing.assert_allclose(deg.resize(image, size, mode, scale=scale),
                               expected[0].permute(1, 2, 0).numpy(), atol=1e-12)
  expected = torch.nn.functional.interpolate(as_torch, size=(5, 30), mode=mode)
  np.testing.assert_allclose(deg.resize(image, (5, 30), mode),
                             expected[0].permute(1, 2, 0).numpy(), atol=1e-12)


def test_gaussian_noise_has_the_requested_std_and_gray_noise_is_shared():
  rng = np.random.default_rng(0)
  image = np.full((64, 64, 3), 0.5)
  noisy = deg.add_gaussian_noise(image, rng, sigma=10)
  assert np.std(noisy - image) == pytest.approx(10 / 255, rel=0.03)
  gray = deg.add_gaussian_noise(image, rng, sigma=10, gray=True)
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  assert not np.array_equal(noisy[..., 0], noisy[..., 2])


def test_poisson_noise_variance_is_intensity_over_levels():
  rng = np.random.default_rng(0)
  levels = np.arange(256) / 255  # 256 distinct levels: the count is scaled by 256
  image = np.broadcast_to(levels[None, :, None], (64, 256, 3))
  noise = deg.add_poisson_noise(image, rng, scale=1.0) - image
  middle = (levels > 0.25) & (levels < 0.75)  # no clipping there
  normalised = noise[:, middle]**2 / image[:, middle]
  assert normalised.mean() == pytest.approx(1 / 256, rel=0.05)
  assert abs(noise[:, middle].mean()) < 1e-3
  gray = deg.add_poisson_noise(image, rng, scale=2.0, gray=True)
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])


def test_jpeg_compress_round_trips_at_high_quality():
  image = np.random.default_rng(0).uniform(0.3, 0.7, size=(16, 16, 3))
  smooth = deg.filter2d(image, deg.bivariate_gaussian(7, 2.0))
  assert np.abs(deg.jpeg_compress(smooth, 95) - smooth).mean() < 2 / 255
  assert np.abs(deg.jpeg_compress(smooth, 10) - smooth).mean() > np.abs(
      deg.jpeg_compress(smooth, 95) - smooth).mean()


# ---------------------------------------------------------------- Real-ESRGAN pipeline


def _identity_config(**overrides) -> deg.RealESRGANConfig:
  """Every random step made the identity: only the resizes to the LR size remain."""
  knobs = dict(usm_sharpen=False, kernel_list=("iso",), kernel_prob=(1.0,), sinc_prob=0.0,
               blur_sigma=(1e-3, 1e-3), resize_prob=(0, 0, 1), gaussian_noise_prob=1.0,
               noise_range=(0, 0), jpeg_prob=0.0, second_blur_prob=0.0,
               resize_prob2=(0, 0, 1), gaussian_noise_prob2=1.0, noise_range2=(0, 0),
               jpeg_prob2=0.0, final_sinc_prob=0.0)
  return deg.RealESRGANConfig(**{**knobs, **overrides})


def test_default_config_is_real_esrgan_x4plus():
  cfg = deg.RealESRGANConfig()
  assert (cfg.scale, cfg.kernel_prob, cfg.sinc_prob, cfg.blur_sigma, cfg.blur_sigma2) == (
      4, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), 0.1, (0.2, 3.0), (0.2, 1.5))
  assert (cfg.resize_prob, cfg.resize_range, cfg.resize_prob2, cfg.resize_range2) == (
      (0.2, 0.7, 0.1), (0.15, 1.5), (0.3, 0.4, 0.3), (0.3, 1.2))
  assert (cfg.noise_range, cfg.noise_range2, cfg.poisson_scale_range,
          cfg.poisson_scale_range2) == ((1, 30), (1, 25), (0.05, 3), (0.05, 2.5))
  assert (cfg.gaussian_noise_prob, cfg.gray_noise_prob, cfg.jpeg_range, cfg.jpeg_range2,
          cfg.second_blur_prob, cfg.final_sinc_prob) == (0.5, 0.4, (30, 95), (30, 95), 0.8,
                                                         0.8)
  assert (cfg.betag_range, cfg.betap_range, cfg.usm_sharpen, cfg.jpeg_prob) == (
      (0.5, 4), (1, 2), True, 1.0)
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.scale = 2


def test_real_esrgan_output_is_lr_sized_float32_in_8bit_levels():
  hr = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
  for seed in range(6):
    lr = deg.real_esrgan_degrade(hr, seed)
    assert lr.shape == (12, 10, 3) and lr.dtype == np.float32
    assert lr.min() >= 0 and lr.max() <= 1
    np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-4)
  lr2 = deg.real_esrgan_degrade(hr / 255.0, 0, deg.RealESRGANConfig(scale=2))
  assert lr2.shape == (24, 20, 3)


def test_real_esrgan_is_a_function_of_the_seed():
  hr = np.random.default_rng(0).uniform(size=(32, 32, 3))
  same = deg.real_esrgan_degrade(hr, 7), deg.real_esrgan_degrade(hr, 7)
  np.testing.assert_array_equal(*same)
  np.testing.assert_array_equal(deg.real_esrgan_degrade(hr, np.random.default_rng(7)), same[0])
  assert not np.array_equal(deg.real_esrgan_degrade(hr, 8), same[0])


@pytest.mark.parametrize("scale,mode", [(2, "bicubic"), (4, "area"), (4, "bilinear")])
def test_real_esrgan_with_identity_steps_is_a_plain_resize(scale, mode):
  hr = np.random.default_rng(1).uniform(size=(32, 24, 3))
  lr = deg.real_esrgan_degrade(hr, 0, _identity_config(scale=scale, resize_modes=(mode,)))
  expected = deg.resize(hr, (32 // scale, 24 // scale), mode)
  np.testing.assert_allclose(lr, np.clip(np.round(expected * 255), 0, 255) / 255, atol=1e-6)


def test_real_esrgan_gaussian_noise_has_the_configured_std():
  hr = np.full((64, 64, 3), 0.5)
  cfg = _identity_config(scale=1, noise_range=(10, 10), gray_noise_prob=0.0)
  lr = deg.real_esrgan_degrade(hr, 0, cfg)
  assert np.std(lr - 0.5) == pytest.approx(10 / 255, rel=0.03)
  assert not np.array_equal(lr[..., 0], lr[..., 1])
  gray = deg.real_esrgan_degrade(hr, 0, dataclasses.replace(cfg, gray_noise_prob=1.0))
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])


def test_real_esrgan_rejects_bad_inputs_and_configs():
  with pytest.raises(ValueError, match="expected uint8 or float in"):
    deg.real_esrgan_degrade(np.full((8, 8, 3), 2.0), 0)
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    deg.real_esrgan_degrade(np.zeros((8, 8), np.uint8), 0)
  with pytest.raises(ValueError, match="sinc_prob"):
    deg.RealESRGANConfig(sinc_prob=1.5)
  with pytest.raises(ValueError, match="noise_range2"):
    deg.RealESRGANConfig(noise_range2=(5, 1))
  with pytest.raises(ValueError, match="kernel_list"):
    deg.RealESRGANConfig(kernel_list=("iso",))
  with pytest.raises(ValueError, match="resize_modes"):
    deg.RealESRGANConfig(resize_modes=("nearest",))


def test_record_leaves_the_draw_unchanged_and_gives_severity():
  hr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  record = {}
  with_record = deg.real_esrgan_degrade(hr, 7, record=record)
  np.testing.assert_array_equal(with_record, deg.real_esrgan_degrade(hr, 7))
  assert len(record["blur_spread"]) in (1, 2) and len(record["noise_std"]) == 2
  assert 30 <= record["jpeg_quality"] <= 95
  severity = deg.degradation_severity(record)
  assert severity.shape == (4,) and np.all((0 <= severity) & (severity <= 1))
  np.testing.assert_array_equal(deg.degradation_severity({}), np.zeros(4))
  # The distortion is the LR's PSNR against the clean MATLAB-bicubic LR of the same HR.
  clean = np.clip(imr.imresize(hr / 255.0, 1 / 4), 0, 1)
  psnr = 10 * np.log10(1 / np.mean(np.square(with_record - clean)))
  assert abs(record["lr_psnr"] - psnr) < 1e-6
  np.testing.assert_allclose(severity[3], np.clip((35 - psnr) / 25, 0, 1), atol=1e-6)


def test_severity_follows_the_drawn_parameters():
  hr = np.full((64, 64, 3), 128, np.uint8)

  def severity(**knobs):
    cfg = deg.RealESRGANConfig(**knobs)
    out = []
    for seed in range(4):
      record = {}
      deg.real_esrgan_degrade(hr, seed, cfg, record)
      out.append(deg.degradation_severity(record))
    return np.mean(out, axis=0)

  gaussian = dict(gaussian_noise_prob=1.0, gaussian_noise_prob2=1.0, gray_noise_prob=0.0,
                  gray_noise_prob2=0.0)
  mild = severity(noise_range=(1.0, 2.0), noise_range2=(1.0, 2.0), jpeg_range=(90.0, 95.0),
                  jpeg_range2=(90.0, 95.0), **gaussian)
  heavy = severity(noise_range=(20.0, 25.0), noise_range2=(20.0, 25.0), jpeg_range=(30.0, 35.0),
                   jpeg_range2=(30.0, 35.0), **gaussian)
  assert heavy[1] > 3 * mild[1] and heavy[2] > 0.8 > 0.15 > mild[2]
  assert heavy[3] > mild[3] + 0.2  # noise and JPEG show in the LR's distortion
  # A Gaussian kernel's spread is its σ.
  kernel = deg.bivariate_gaussian(21, 2.0)
  assert abs(deg.kernel_spread(kernel) - 2.0) < 0.02
