"""PSNR and SSIM as super-resolution papers report them: Y channel, border cropped.

Follows XPixelGroup/BasicSR (commit 8d56e3a): `basicsr/metrics/psnr_ssim.py`
(`calculate_psnr`, `calculate_ssim`, `_ssim`), `basicsr/metrics/metric_util.py`
(`reorder_image`, `to_y_channel`) and `basicsr/utils/color_util.py` (`rgb2ycbcr` with
`y_only=True`):

  * crop `crop_border` pixels from every edge, then (optionally) keep only the luma
    Y = 16 + (65.481 R + 128.553 G + 24.966 B) with R, G, B in [0, 1] — MATLAB's
    `rgb2ycbcr` (ITU-R BT.601, studio swing), Y in [16, 235], not rounded;
  * PSNR = 10 log10(255² / MSE) over every remaining pixel (and channel), in float64;
    identical images give `inf`;
  * SSIM (Wang et al. 2004, eq. 13) per channel with an 11×11 Gaussian window (σ = 1.5,
    OpenCV's `getGaussianKernel(11, 1.5)`), 'valid' filtering (BasicSR filters with
    `cv2.filter2D` and drops 5 pixels per edge), C1 = (0.01·255)², C2 = (0.03·255)²,
    the map averaged, then the channels averaged.

Images are RGB (BasicSR's NumPy metrics take OpenCV's BGR and weight the channels in
that order; the Y value is the same). BasicSR measures images after `tensor2img`
(clip to [0, 1], ×255, round to uint8): pass such images for numbers comparable with
published tables. `psnr_y_batch` / `ssim_y_batch` are the same metrics on the Y channel
as pure `jnp` functions of a batch, for use inside a jitted eval step.
"""

import numpy as np
import jax
from jax import lax
import jax.numpy as jnp

# MATLAB rgb2ycbcr's luma row for R, G, B in [0, 1] (BasicSR `rgb2ycbcr(y_only=True)`).
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
PIXEL_MAX = 255.0
SSIM_WINDOW = 11  # Wang et al. 2004: 11×11 circular-symmetric Gaussian, σ = 1.5
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * PIXEL_MAX) ** 2  # (K1 L)², K1 = 0.01
SSIM_C2 = (0.03 * PIXEL_MAX) ** 2  # (K2 L)², K2 = 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """The normalised 1-D Gaussian [size], float64 (`cv2.getGaussianKernel(size, sigma)`);
  SSIM's 2-D window is its outer product with itself."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  w = np.exp(-x ** 2 / (2 * sigma ** 2))
  return w / w.sum()


def rgb_to_y(img):
  """The BT.601 luma Y of RGB pixels on the 0..255 scale (MATLAB `rgb2ycbcr`).

  img: [..., 3] RGB, uint8 or float in [0, 255]. Returns [...] in [16, 235]: float64
  for a NumPy input, a float (≥ float32) `jax.Array` for a `jax.Array` input (usable
  under `jit`). Black → 16, white → 235.
  """
  if np.shape(img)[-1:] != (3,):
    raise ValueError(f"img.shape={np.shape(img)}: expected [..., 3] RGB")
  if isinstance(img, jax.Array):
    x = img.astype(jnp.promote_types(img.dtype, jnp.float32)) / PIXEL_MAX
    # Elementwise, not a matmul: GPUs/TPUs run float32 matmuls at reduced precision.
    return x[..., 0] * Y_WEIGHTS[0] + x[..., 1] * Y_WEIGHTS[1] + x[..., 2] * Y_WEIGHTS[2] + Y_OFFSET
  x = np.asarray(img, np.float64)
  return (x / PIXEL_MAX) @ np.asarray(Y_WEIGHTS) + Y_OFFSET


def _check_crop(crop_border, height: int, width: int, min_size: int = 1) -> None:
  if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
    raise ValueError(f"crop_border={crop_border!r}: expected a non-negative int")
  if min(height, width) - 2 * crop_border < min_size:
    raise ValueError(f"crop_border={crop_border} on a {height}×{width} image leaves less than "
                     f"{min_size}×{min_size} pixels: expected 2·crop_border ≤ "
                     f"min(height, width) − {min_size}")


def _prepare(img1, img2, crop_border, test_y_channel: bool, min_size: int = 1) -> tuple:
  """Both images as float64 [H', W', C] after the crop and (3 channels) the Y transform."""
  img1, img2 = np.asarray(img1), np.asarray(img2)
  if img1.shape != img2.shape:
    raise ValueError(f"img1.shape={img1.shape}, img2.shape={img2.shape}: expected equal shapes")
  if img1.ndim == 2:  # reorder_image: a grey [H, W] image is [H, W, 1]
    img1, img2 = img1[..., None], img2[..., None]
  if img1.ndim != 3:
    raise ValueError(f"img1.shape={img1.shape}: expected [height, width, channels] or "
                     "[height, width]")
  _check_crop(crop_border, img1.shape[0], img1.shape[1], min_size)
  c = crop_border
  img1 = img1[c:img1.shape[0] - c, c:img1.shape[1] - c]
  img2 = img2[c:img2.shape[0] - c, c:img2.shape[1] - c]
  if test_y_channel and img1.shape[-1] == 3:  # to_y_channel: other channel counts unchanged
    return rgb_to_y(img1)[..., None], rgb_to_y(img2)[..., None]
  return img1.astype(np.float64), img2.astype(np.float64)


def psnr(img1, img2, crop_border: int, test_y_channel: bool = True) -> float:
  """PSNR in dB between two images (BasicSR `calculate_psnr`, RGB input).

  img1, img2: [H, W, 3] RGB (or [H, W] / [H, W, C] grey), uint8 or float in [0, 255].
  crop_border: pixels removed from each edge first (the SR scale, by convention).
  test_y_channel: compare the Y channel (`rgb_to_y`) instead of all channels.
  Returns 10 log10(255² / MSE) in float64; `inf` for identical (cropped) images.
  """
  img1, img2 = _prepare(img1, img2, crop_border, test_y_channel)
  mse = np.mean((img1 - img2) ** 2)
  if mse == 0:
    return float("inf")
  return float(10.0 * np.log10(PIXEL_MAX ** 2 / mse))


def gradient_energy(img, crop_border: int = 0) -> float:
  """Mean gradient magnitude of the Y channel (grey: the image) after the border crop:
  mean of √(∂x² + ∂y²) with forward differences. A sharpness measure that needs no
  learned weights: blur lowers it, noise and ringing raise it."""
  y, _ = _prepare(img, img, crop_border, True, min_size=2)
  y = y[..., 0] if y.shape[-1] == 1 else y.mean(-1)
  dx, dy = np.diff(y, axis=1)[:-1], np.diff(y, axis=0)[:, :-1]
  return float(np.mean(np.sqrt(dx ** 2 + dy ** 2)))


def sharpness_ratio(sr, hr, crop_border: int) -> float:
  """`gradient_energy` of sr over that of hr: 1 is as sharp as the HR, below 1 blurrier
  (bicubic ×4 sits far below), above 1 noisier or over-sharpened."""
  if np.shape(sr) != np.shape(hr):
    raise ValueError(f"sr.shape={np.shape(sr)}, hr.shape={np.shape(hr)}: expected equal shapes")
  return gradient_energy(sr, crop_border) / max(gradient_energy(hr, crop_border), 1e-12)


def _filter_valid(x: np.ndarray) -> np.ndarray:
  """x [H, W] filtered by the SSIM Gaussian, 'valid' → [H − 10, W − 10] (separable)."""
  w = gaussian_window()
  x = np.lib.stride_tricks.sliding_window_view(x, w.size, axis=0) @ w
  return np.lib.stride_tricks.sliding_window_view(x, w.size, axis=1) @ w


def ssim_map(img1: np.ndarray, img2: np.ndarray) -> np.ndarray:
  """The SSIM map [H − 10, W − 10] of two single-channel float images [H, W] on the
  0..255 scale (BasicSR `_ssim` before its mean; Wang et al. 2004, eq. 13)."""
  img1, img2 = np.asarray(img1, np.float64), np.asarray(img2, np.float64)
  mu1, mu2 = _filter_valid(img1), _filter_valid(img2)
  sigma1_sq = _filter_valid(img1 ** 2) - mu1 ** 2
  sigma2_sq = _filter_valid(img2 ** 2) - mu2 ** 2
  sigma12 = _filter_valid(img1 * img2) - mu1 * mu2
  return (((2 * mu1 * mu2 + SSIM_C1) * (2 * sigma12 + SSIM_C2))
          / ((mu1 ** 2 + mu2 ** 2 + SSIM_C1) * (sigma1_sq + sigma2_sq + SSIM_C2)))


def ssim(img1, img2, crop_border: int, test_y_channel: bool = True) -> float:
  """SSIM between two images (BasicSR `calculate_ssim`, RGB input).

  Arguments as `psnr`; the cropped image must be at least 11×11. Each channel's SSIM
  map ('valid', Gaussian window) is averaged, then the channels are averaged. Returns a
  float64 in [−1, 1]; 1 for identical images.
  """
  img1, img2 = _prepare(img1, img2, crop_border, test_y_channel, min_size=SSIM_WINDOW)
  return float(np.mean([ssim_map(img1[..., i], img2[..., i]).mean()
                        for i in range(img1.shape[-1])]))


def _prepare_batch(sr, hr, crop_border: int, max_value: float) -> tuple:
  """Both batches as Y [B, H', W'] on the 0..255 scale, cropped."""
  if sr.shape != hr.shape or sr.ndim != 4 or sr.shape[-1] != 3:
    raise ValueError(f"sr.shape={sr.shape}, hr.shape={hr.shape}: expected equal "
                     "[batch, height, width, 3] RGB")
  if max_value <= 0:
    raise ValueError(f"max_value={max_value!r}: expected the pixel range's maximum, "
                     "255 or 1")
  _check_crop(crop_border, sr.shape[1], sr.shape[2])
  c = crop_border
  ys = []
  for x in (sr, hr):
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))[:, c:x.shape[1] - c, c:x.shape[2] - c]
    ys.append(rgb_to_y(x * (PIXEL_MAX / max_value)))
  return tuple(ys)


def psnr_y_batch(sr: jax.Array, hr: jax.Array, crop_border: int,
                 max_value: float = PIXEL_MAX) -> jax.Array:
  """Per-image Y-channel PSNR [B] of a batch (`psnr(..., test_y_channel=True)` in `jnp`).

  sr, hr: [B, H, W, 3] RGB floats in [0, max_value] (255 or 1). crop_border and
  max_value are static Python numbers (fine under `jit`). Identical images give `inf`.
  """
  y_sr, y_hr = _prepare_batch(sr, hr, crop_border, max_value)
  mse = jnp.mean((y_sr - y_hr) ** 2, axis=(1, 2))
  return 10.0 * jnp.log10(PIXEL_MAX ** 2 / mse)


def _filter_valid_batch(x: jax.Array) -> jax.Array:
  """x [N, H, W] filtered by the SSIM Gaussian, 'valid' → [N, H − 10, W − 10]."""
  w = jnp.asarray(gaussian_window(), x.dtype)
  dims = ("NHWC", "HWIO", "NHWC")
  # HIGHEST: true float32 on GPU/TPU, whose default convolution precision is lower.
  x = lax.conv_general_dilated(x[..., None], w.reshape(-1, 1, 1, 1), (1, 1), "VALID",
                               dimension_numbers=dims, precision=lax.Precision.HIGHEST)
  x = lax.conv_general_dilated(x, w.reshape(1, -1, 1, 1), (1, 1), "VALID",
                               dimension_numbers=dims, precision=lax.Precision.HIGHEST)
  return x[..., 0]


def ssim_y_batch(sr: jax.Array, hr: jax.Array, crop_border: int,
                 max_value: float = PIXEL_MAX) -> jax.Array:
  """Per-image Y-channel SSIM [B] of a batch (`ssim(..., test_y_channel=True)` in `jnp`).

  Arguments as `psnr_y_batch`; the cropped images must be at least 11×11.
  """
  y1, y2 = _prepare_batch(sr, hr, crop_border, max_value)
  if min(y1.shape[1:]) < SSIM_WINDOW:
    raise ValueError(f"crop_border={crop_border} on {sr.shape[1]}×{sr.shape[2]} images leaves "
                     f"{y1.shape[1]}×{y1.shape[2]}: expected at least "
                     f"{SSIM_WINDOW}×{SSIM_WINDOW} for the SSIM window")
  # Variances are shift-invariant: centring Y first keeps E[y²] − E[y]² from cancelling
  # large float32 numbers (Y ≤ 235, so y² ≤ 55225 otherwise).
  centre = (Y_OFFSET + 235.0) / 2
  d1, d2 = y1 - centre, y2 - centre
  b = y1.shape[0]
  moments = _filter_valid_batch(jnp.concatenate([d1, d2, d1 * d1, d2 * d2, d1 * d2]))
  m1, m2, e11, e22, e12 = (moments[i * b:(i + 1) * b] for i in range(5))
  sigma1_sq, sigma2_sq, sigma12 = e11 - m1 * m1, e22 - m2 * m2, e12 - m1 * m2
  mu1, mu2 = m1 + centre, m2 + centre
  ssim_maps = (((2 * mu1 * mu2 + SSIM_C1) * (2 * sigma12 + SSIM_C2))
               / ((mu1 ** 2 + mu2 ** 2 + SSIM_C1) * (sigma1_sq + sigma2_sq + SSIM_C2)))
  return jnp.mean(ssim_maps, axis=(1, 2))
