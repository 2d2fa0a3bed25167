"""MATLAB-compatible bicubic `imresize` and the standard bicubic LR of SR benchmarks.

`imresize`: MATLAB's `imresize(x, s, 'bicubic')` (Keys cubic, a = -0.5, kernel width 4
widened to 4/s and scaled by s when s < 1 — antialiasing —, weights normalised per output
pixel, symmetric border), as reproduced by BasicSR's `basicsr/utils/matlab_functions.py`
(`cubic`, `calculate_weights_indices`, `imresize`); it matches MATLAB R2017b's outputs of
baboon at ×1/2, ×1/3, ×1/4 and ×2 pixel for pixel (xinntao/matlab_functions_verification;
tests/test_degradations.py). `bicubic_degrade` is the benchmark LR recipe of BasicSR's
`scripts/matlab_scripts/generate_bicubic_img.m`: im2double → imresize(1/s) → im2uint8.
"""

import math
from typing import Optional, Tuple

import numpy as np


def _matlab_cubic(x: np.ndarray) -> np.ndarray:
  """Keys (1981) cubic convolution kernel with a = -0.5, MATLAB's `cubic`."""
  ax = np.abs(x)
  return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
          + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(in_length: int, out_length: int, scale: float,
                   antialiasing: bool) -> Tuple[np.ndarray, np.ndarray]:
  """MATLAB's `contributions`: weights [out, taps] and 0-based input indices [out, taps]."""
  antialias = scale < 1 and antialiasing
  kernel_width = 4.0 / scale if antialias else 4.0
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in 1-based input coordinates
  left = np.floor(u - kernel_width / 2)
  indices = left[:, None] + np.arange(math.ceil(kernel_width) + 2)
  distance = u[:, None] - indices
  weights = scale * _matlab_cubic(scale * distance) if antialias else _matlab_cubic(distance)
  weights /= weights.sum(axis=1, keepdims=True)
  # Symmetric border (the edge pixel repeats), MATLAB's aux = [1:n, n:-1:1] lookup.
  mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
  return weights, mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]


def imresize(image: np.ndarray, scale: Optional[float] = None,
             output_shape: Optional[Tuple[int, int]] = None,
             antialiasing: bool = True) -> np.ndarray:
  """MATLAB `imresize(image, scale | [h w], 'bicubic')` of [H, W] or [H, W, C] → float64.

  Give exactly one of `scale` (output size ceil(scale·H) × ceil(scale·W), the weights use
  `scale` itself) or `output_shape` (h, w) (per-axis scale h/H, w/W), as MATLAB does.
  The axis with the smaller scale is resized first (MATLAB's order; rows on ties).

  `antialiasing=False` keeps the width-4 kernel when downscaling (MATLAB's
  'Antialiasing', false). The result is float64 in the input's value range, neither
  rounded nor clipped: a uint8 input gives floats in [0, 255] (MATLAB would return uint8,
  rounding after each 1-D pass); round yourself, or use `bicubic_degrade` for the
  benchmark LR recipe.
  """
  image = np.asarray(image)
  if image.ndim not in (2, 3) or not (np.issubdtype(image.dtype, np.integer)
                                      or np.issubdtype(image.dtype, np.floating)):
    raise ValueError(f"image {image.dtype} {image.shape}: expected a real array [H, W] or "
                     "[H, W, C]")
  in_shape = image.shape[:2]
  if (scale is None) == (output_shape is None):
    raise ValueError(f"scale={scale!r}, output_shape={output_shape!r}: expected exactly one")
  if scale is not None:
    if not scale > 0:
      raise ValueError(f"scale={scale!r}: expected a positive number")
    scales = (float(scale), float(scale))
    output_shape = tuple(math.ceil(n * scale) for n in in_shape)
  else:
    if len(output_shape) != 2 or any(int(n) != n or n < 1 for n in output_shape):
      raise ValueError(f"output_shape={output_shape!r}: expected two positive integers")
    output_shape = tuple(int(n) for n in output_shape)
    scales = tuple(o / i for o, i in zip(output_shape, in_shape))
  out = image.astype(np.float64)
  for axis in np.argsort(scales, kind="stable"):
    weights, indices = _contributions(in_shape[axis], output_shape[axis], scales[axis],
                                      antialiasing)
    moved = np.moveaxis(out, axis, 0)
    resized = np.zeros((output_shape[axis],) + moved.shape[1:])
    for tap in range(weights.shape[1]):
      resized += weights[:, tap].reshape((-1,) + (1,) * (moved.ndim - 1)) * moved[indices[:, tap]]
    out = np.moveaxis(resized, 0, axis)
  return out


def bicubic_degrade(hr: np.ndarray, scale: int) -> np.ndarray:
  """The standard bicubic LR: uint8 [H, W(, C)] → uint8 [H/scale, W/scale(, C)].

  MATLAB `im2uint8(imresize(im2double(hr), 1/scale, 'bicubic'))` (BasicSR
  `generate_bicubic_img.m`): values clipped to [0, 1] and rounded half away from zero,
  as MATLAB's uint8 conversion. H and W must be multiples of `scale` (modcrop first).
  """
  hr = np.asarray(hr)
  if hr.dtype != np.uint8:
    raise ValueError(f"hr dtype {hr.dtype}: expected uint8")
  if int(scale) != scale or scale < 1:
    raise ValueError(f"scale={scale!r}: expected a positive integer")
  if hr.ndim not in (2, 3) or hr.shape[0] % scale or hr.shape[1] % scale:
    raise ValueError(f"hr shape {hr.shape}: expected [H, W(, C)] with H and W multiples of "
                     f"scale={scale} (modcrop the image)")
  lr = imresize(hr / 255.0, scale=1 / scale)
  return np.floor(np.clip(lr, 0, 1) * 255 + 0.5).astype(np.uint8)
