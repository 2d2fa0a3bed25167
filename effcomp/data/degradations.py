"""Real-world low-resolution inputs for super-resolution: Real-ESRGAN's degradations.

Host-side (NumPy) recipes that turn a high-resolution image into its LR input (the
bicubic benchmark LR is `effcomp.data.imresize.bicubic_degrade`):

- `real_esrgan_degrade`: the second-order degradation of Real-ESRGAN (Wang et al. 2021,
  Fig. 2), following BasicSR's `basicsr/data/degradations.py` (kernels, noise),
  `basicsr/data/realesrgan_dataset.py` (kernel sampling) and
  `basicsr/models/realesrgan_model.py::feed_data` (order of the operations), with the
  defaults of `options/train/RealESRGAN/train_realesrgan_x4plus.yml`.

Deviations from the reference, all in `real_esrgan_degrade`: JPEG is PIL/libjpeg at the
sampled quality rounded to an integer (Real-ESRGAN uses DiffJPEG at the float quality,
same IJG tables and 4:2:0 chroma); the random draws come from one `numpy.random.Generator`
(so the stream differs from BasicSR's mix of `random`, `np.random` and `torch`); the
resizes reproduce `torch.nn.functional.interpolate` (area = adaptive average pooling,
bilinear and bicubic with a = -0.75, align_corners=False, no antialiasing) in float64.
"""

import dataclasses
import io
import math
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage, signal, special

from effcomp.data import imresize

# ------------------------------------------------------------------------ blur kernels


def _check_kernel_size(kernel_size: int):
  if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"kernel_size={kernel_size!r}: expected an odd positive integer")


def _quadratic_form(kernel_size: int, sigma_x: float, sigma_y: Optional[float],
                    theta: float) -> np.ndarray:
  """[k, k] of dᵀ Σ⁻¹ d at integer offsets d = (x, y) from the centre (x along columns),
  Σ = R(θ) diag(σx², σy²) R(θ)ᵀ; isotropic (σy = σx) when sigma_y is None."""
  _check_kernel_size(kernel_size)
  sigma_y = sigma_x if sigma_y is None else sigma_y
  if not (sigma_x > 0 and sigma_y > 0):
    raise ValueError(f"sigma_x={sigma_x!r}, sigma_y={sigma_y!r}: expected positive numbers")
  rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  sigma = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
  ax = np.arange(kernel_size) - kernel_size // 2
  grid = np.stack(np.meshgrid(ax, ax), axis=-1).astype(np.float64)  # [..., (x, y)]
  return np.einsum("...i,ij,...j->...", grid, np.linalg.inv(sigma), grid)


def bivariate_gaussian(kernel_size: int, sigma_x: float, sigma_y: Optional[float] = None,
                       theta: float = 0.0) -> np.ndarray:
  """[k, k] Gaussian exp(-½ dᵀΣ⁻¹d), normalised to sum 1 (BasicSR `bivariate_Gaussian`)."""
  kernel = np.exp(-0.5 * _quadratic_form(kernel_size, sigma_x, sigma_y, theta))
  return kernel / kernel.sum()


def bivariate_generalized_gaussian(kernel_size: int, sigma_x: float, beta: float,
                                   sigma_y: Optional[float] = None,
                                   theta: float = 0.0) -> np.ndarray:
  """[k, k] exp(-½ (dᵀΣ⁻¹d)^β), sum 1 (BasicSR `bivariate_generalized_Gaussian`)."""
  kernel = np.exp(-0.5 * _quadratic_form(kernel_size, sigma_x, sigma_y, theta)**beta)
  return kernel / kernel.sum()


def bivariate_plateau(kernel_size: int, sigma_x: float, beta: float,
                      sigma_y: Optional[float] = None, theta: float = 0.0) -> np.ndarray:
  """[k, k] 1 / (1 + (dᵀΣ⁻¹d)^β), sum 1 (BasicSR `bivariate_plateau`)."""
  kernel = 1 / (_quadratic_form(kernel_size, sigma_x, sigma_y, theta)**beta + 1)
  return kernel / kernel.sum()


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
  """[k, k] 2-D sinc ωc·J1(ωc·r) / (2π r), centre ωc²/(4π), sum 1, zero-padded to `pad_to`.

  BasicSR `circular_lowpass_kernel`; cutoff ωc in radians (π is the Nyquist frequency).
  """
  _check_kernel_size(kernel_size)
  ax = np.arange(kernel_size) - kernel_size // 2
  r = np.hypot(ax[:, None], ax[None, :]).astype(np.float64)
  safe_r = np.where(r == 0, 1.0, r)
  kernel = np.where(r == 0, cutoff**2 / (4 * np.pi),
                    cutoff * special.j1(cutoff * safe_r) / (2 * np.pi * safe_r))
  kernel = kernel / kernel.sum()
  if pad_to > kernel_size:
    pad = (pad_to - kernel_size) // 2
    kernel = np.pad(kernel, pad)
  return kernel


KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                "plateau_aniso")


def random_mixed_kernels(rng: np.random.Generator, kernel_list: Sequence[str],
                         kernel_prob: Sequence[float], kernel_size: int = 21,
                         sigma_range: Tuple[float, float] = (0.6, 5),
                         betag_range: Tuple[float, float] = (0.5, 8),
                         betap_range: Tuple[float, float] = (0.5, 8)) -> np.ndarray:
  """A random [k, k] blur kernel (sum 1), BasicSR `random_mixed_kernels` (noise_range=None).

  The type is drawn from `kernel_list` with weights `kernel_prob`; σx (and for 'aniso'
  types σy and θ ∈ [-π, π]) uniform in `sigma_range`; β uniform in [β0, 1] or [1, β1]
  with probability ½ each.
  """
  unknown = set(kernel_list) - set(KERNEL_TYPES)
  if unknown or len(kernel_list) != len(kernel_prob) or not kernel_list:
    raise ValueError(f"kernel_list={kernel_list!r}, kernel_prob={kernel_prob!r}: expected "
                     f"equally long, non-empty lists of types from {KERNEL_TYPES}")
  prob = np.asarray(kernel_prob, np.float64)
  kind = kernel_list[rng.choice(len(kernel_list), p=prob / prob.sum())]
  sigma_x = rng.uniform(*sigma_range)
  sigma_y, theta = None, 0.0
  if kind.endswith("aniso"):
    sigma_y, theta = rng.uniform(*sigma_range), rng.uniform(-np.pi, np.pi)
  if kind.startswith("generalized") or kind.startswith("plateau"):
    lo, hi = betag_range if kind.startswith("generalized") else betap_range
    beta = rng.uniform(lo, 1) if rng.uniform() < 0.5 else rng.uniform(1, hi)
    make = bivariate_generalized_gaussian if kind.startswith("generalized") else bivariate_plateau
    return make(kernel_size, sigma_x, beta, sigma_y, theta)
  return bivariate_gaussian(kernel_size, sigma_x, sigma_y, theta)


# ------------------------------------------------ filtering, resizing, noise and JPEG


def filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """[H, W, C] ⋆ [k, k] (odd k) per channel, reflect padding ('dcb|abcd|cba'): BasicSR
  `filter2D` (a correlation, as `F.conv2d`), computed by FFT."""
  if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
    raise ValueError(f"kernel shape {kernel.shape}: expected [k, k] with odd k")
  pad = kernel.shape[0] // 2
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
  return signal.fftconvolve(padded, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """[H, W, C] blurred per channel by an isotropic Gaussian of std `sigma` pixels:
  `scipy.ndimage.gaussian_filter` (radius ⌊4σ + ½⌋, mirrored edges 'dcba|abcd'), the blur
  of CNNSpot's augmentation (PeterWang512/CNNDetection `data/datasets.py`)."""
  if not sigma > 0:
    raise ValueError(f"sigma={sigma!r}: expected a positive number")
  return ndimage.gaussian_filter(np.asarray(image, np.float64), sigma=(sigma, sigma, 0))


def usm_sharpen(image: np.ndarray, weight: float = 0.5, radius: int = 50,
                threshold: float = 10) -> np.ndarray:
  """Unsharp masking of [H, W, C] in [0, 1], BasicSR `USMSharp` (Gaussian 51×51, σ = 8)."""
  size = radius + 1 if radius % 2 == 0 else radius
  sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8  # OpenCV's getGaussianKernel(size, 0)
  gauss = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma)**2)
  gauss /= gauss.sum()

  def blur(x):  # the separable 2-D Gaussian, reflect padding as filter2d
    return ndimage.correlate1d(ndimage.correlate1d(x, gauss, 0, mode="mirror"), gauss, 1,
                               mode="mirror")

  residual = image - blur(image)
  soft_mask = blur((np.abs(residual) * 255 > threshold).astype(np.float64))
  sharp = np.clip(image + weight * residual, 0, 1)
  return soft_mask * sharp + (1 - soft_mask) * image


def _interpolation_matrix(in_length: int, out_length: int, mode: str,
                          scale: Optional[float]) -> np.ndarray:
  """[out, in] matrix of `F.interpolate` along one axis (align_corners=False).

  `scale` is the scale_factor given to interpolate (None: out/in); torch maps coordinates
  with 1/scale_factor when one is given."""
  matrix = np.zeros((out_length, in_length))
  rows = np.arange(out_length)
  if mode == "area":  # adaptive_avg_pool: [floor(o·in/out), ceil((o+1)·in/out))
    for o in rows:
      start, end = o * in_length // out_length, -(-(o + 1) * in_length // out_length)
      matrix[o, start:end] = 1 / (end - start)
    return matrix
  ratio = 1 / scale if scale else in_length / out_length
  src = ratio * (rows + 0.5) - 0.5
  if mode == "bilinear":
    src = np.maximum(src, 0)
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    np.add.at(matrix, (rows, i0), 1 - frac)
    np.add.at(matrix, (rows, np.minimum(i0 + 1, in_length - 1)), frac)
    return matrix
  a = -0.75  # torch's bicubic; indices are clamped to the border
  i0 = np.floor(src).astype(np.int64)
  frac = src - i0
  for tap in range(-1, 3):
    x = np.abs(frac - tap)
    w = np.where(x <= 1, ((a + 2) * x - (a + 3)) * x**2 + 1,
                 ((a * x - 5 * a) * x + 8 * a) * x - 4 * a)
    np.add.at(matrix, (rows, np.clip(i0 + tap, 0, in_length - 1)), w)
  return matrix


RESIZE_MODES = ("area", "bilinear", "bicubic")


def resize(image: np.ndarray, size: Tuple[int, int], mode: str,
           scale: Optional[float] = None) -> np.ndarray:
  """[H, W, C] → [h, w, C] as `torch.nn.functional.interpolate(x, size | scale_factor, mode)`.

  Pass `scale` when Real-ESRGAN passes `scale_factor` (then size = floor(H·scale)): it
  changes the sampling positions of bilinear and bicubic."""
  if mode not in RESIZE_MODES:
    raise ValueError(f"mode={mode!r}: expected one of {RESIZE_MODES}")
  m_h = _interpolation_matrix(image.shape[0], size[0], mode, scale)
  m_w = _interpolation_matrix(image.shape[1], size[1], mode, scale)
  return np.einsum("oh,hwc,pw->opc", m_h, image, m_w, optimize=True)


def add_gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: float,
                       gray: bool = False) -> np.ndarray:
  """[H, W, C] + N(0, (σ/255)²), the same draw on all channels if `gray`, clipped to [0, 1]."""
  shape = image.shape[:2] + (1,) if gray else image.shape
  return np.clip(image + rng.standard_normal(shape) * (sigma / 255), 0, 1)


def add_poisson_noise(image: np.ndarray, rng: np.random.Generator, scale: float,
                      gray: bool = False) -> np.ndarray:
  """Shot noise, BasicSR `add_poisson_noise_pt`: Poisson(v·x)/v − x with v = the number of
  distinct 8-bit levels rounded up to a power of 2, times `scale`, clipped to [0, 1]; on
  the luma (ITU-R 601, torchvision's rgb_to_grayscale) for all channels if `gray`."""
  base = image @ np.array([0.2989, 0.587, 0.114])[:, None] if gray else image
  base = np.clip(np.round(base * 255), 0, 255) / 255
  levels = 2**np.ceil(np.log2(len(np.unique(base))))
  noise = rng.poisson(base * levels) / levels - base
  return np.clip(image + noise * scale, 0, 1)


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
  """[H, W, 3] (or [H, W, 1]: a grayscale JPEG) in [0, 1] → JPEG (PIL/libjpeg, 4:2:0) at
  `quality` → decoded float64 [0, 1] of the same shape."""
  pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(
      buffer, format="JPEG", quality=int(quality))
  return np.asarray(Image.open(buffer), dtype=np.float64).reshape(pixels.shape) / 255


# ----------------------------------------------------------- Real-ESRGAN degradation

_Range = Tuple[float, float]


@dataclasses.dataclass(frozen=True)
class RealESRGANConfig:
  """Every knob of Real-ESRGAN's synthetic degradation; defaults = train_realesrgan_x4plus.

  `*2` fields configure the second stage. Probabilities of the resize kinds are
  (up, down, keep). Fields not in Real-ESRGAN (defaults reproduce it): `usm_sharpen`
  (Real-ESRGAN degrades the USM-sharpened ground truth), `jpeg_prob`/`jpeg_prob2` (it
  always compresses) and `resize_modes` (it draws each resize from all three).
  """
  scale: int = 4
  usm_sharpen: bool = True
  resize_modes: Tuple[str, ...] = RESIZE_MODES
  # First stage.
  kernel_list: Tuple[str, ...] = KERNEL_TYPES
  kernel_prob: Tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  sinc_prob: float = 0.1
  blur_sigma: _Range = (0.2, 3.0)
  betag_range: _Range = (0.5, 4.0)
  betap_range: _Range = (1.0, 2.0)
  resize_prob: Tuple[float, float, float] = (0.2, 0.7, 0.1)
  resize_range: _Range = (0.15, 1.5)
  gaussian_noise_prob: float = 0.5
  noise_range: _Range = (1.0, 30.0)
  poisson_scale_range: _Range = (0.05, 3.0)
  gray_noise_prob: float = 0.4
  jpeg_range: _Range = (30.0, 95.0)
  jpeg_prob: float = 1.0
  # Second stage.
  second_blur_prob: float = 0.8
  kernel_list2: Tuple[str, ...] = KERNEL_TYPES
  kernel_prob2: Tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  sinc_prob2: float = 0.1
  blur_sigma2: _Range = (0.2, 1.5)
  betag_range2: _Range = (0.5, 4.0)
  betap_range2: _Range = (1.0, 2.0)
  resize_prob2: Tuple[float, float, float] = (0.3, 0.4, 0.3)
  resize_range2: _Range = (0.3, 1.2)
  gaussian_noise_prob2: float = 0.5
  noise_range2: _Range = (1.0, 25.0)
  poisson_scale_range2: _Range = (0.05, 2.5)
  gray_noise_prob2: float = 0.4
  jpeg_range2: _Range = (30.0, 95.0)
  jpeg_prob2: float = 1.0
  # Final 2-D sinc filter, applied with the last resize before or after the last JPEG.
  final_sinc_prob: float = 0.8

  def __post_init__(self):
    if int(self.scale) != self.scale or self.scale < 1:
      raise ValueError(f"scale={self.scale!r}: expected a positive integer")
    if not self.resize_modes or set(self.resize_modes) - set(RESIZE_MODES):
      raise ValueError(f"resize_modes={self.resize_modes!r}: expected a non-empty subset of "
                       f"{RESIZE_MODES}")
    for field in dataclasses.fields(self):
      name, value = field.name, getattr(self, field.name)
      if name.rstrip("2").endswith("_prob"):
        values = value if isinstance(value, tuple) else (value,)
        if any(not 0 <= p <= 1 for p in values) or (isinstance(value, tuple) and sum(value) <= 0):
          raise ValueError(f"{name}={value!r}: expected probabilities in [0, 1]")
      if name.rstrip("2").endswith(("_range", "blur_sigma")) and not (
          len(value) == 2 and 0 <= value[0] <= value[1]):
        raise ValueError(f"{name}={value!r}: expected a range (low, high), 0 <= low <= high")
    for suffix in ("", "2"):
      kernels, prob = getattr(self, "kernel_list" + suffix), getattr(self, "kernel_prob" + suffix)
      if set(kernels) - set(KERNEL_TYPES) or len(kernels) != len(prob) or not kernels:
        raise ValueError(f"kernel_list{suffix}={kernels!r}, kernel_prob{suffix}={prob!r}: "
                         f"expected equally long, non-empty lists of types from {KERNEL_TYPES}")
      if len(getattr(self, "resize_prob" + suffix)) != 3:
        raise ValueError(f"resize_prob{suffix}={getattr(self, 'resize_prob' + suffix)!r}: "
                         "expected (up, down, keep)")


KERNEL_SIZES = tuple(range(7, 22, 2))  # Real-ESRGAN's blur and sinc kernel sizes


def _random_blur_kernel(rng: np.random.Generator, cfg: RealESRGANConfig,
                        second: bool) -> np.ndarray:
  """A kernel as RealESRGANDataset.__getitem__ draws kernel1 (second=False) or kernel2."""
  suffix = "2" if second else ""
  size = int(rng.choice(KERNEL_SIZES))
  if rng.uniform() < getattr(cfg, "sinc_prob" + suffix):
    return circular_lowpass_kernel(rng.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi),
                                   size)
  return random_mixed_kernels(rng, getattr(cfg, "kernel_list" + suffix),
                              getattr(cfg, "kernel_prob" + suffix), size,
                              getattr(cfg, "blur_sigma" + suffix),
                              getattr(cfg, "betag_range" + suffix),
                              getattr(cfg, "betap_range" + suffix))


def _random_scale(rng: np.random.Generator, prob, scale_range) -> float:
  kind = rng.choice(3, p=np.asarray(prob, np.float64) / sum(prob))  # up, down, keep
  if kind == 2:
    return 1.0
  return rng.uniform(1, scale_range[1]) if kind == 0 else rng.uniform(scale_range[0], 1)


def _random_noise(image, rng: np.random.Generator, gaussian_prob, sigma_range, poisson_range,
                  gray_prob) -> np.ndarray:
  if rng.uniform() < gaussian_prob:
    sigma = rng.uniform(*sigma_range)
    return add_gaussian_noise(image, rng, sigma, gray=rng.uniform() < gray_prob)
  scale = rng.uniform(*poisson_range)
  return add_poisson_noise(image, rng, scale, gray=rng.uniform() < gray_prob)


def _random_jpeg(image, rng: np.random.Generator, prob, quality_range, record=None
                 ) -> np.ndarray:
  if rng.uniform() >= prob:
    return image
  quality = round(rng.uniform(*quality_range))
  if record is not None:
    record["jpeg_quality"] = min(record.get("jpeg_quality", 100), quality)
  return jpeg_compress(image, quality)


def kernel_spread(kernel: np.ndarray) -> float:
  """The blur a kernel does, in pixels: the RMS radius √(Σ|k|·r² / 2Σ|k|) (σ for an
  isotropic Gaussian)."""
  k = np.abs(kernel)
  y, x = np.mgrid[:k.shape[0], :k.shape[1]] - (np.asarray(k.shape)[:, None, None] - 1) / 2
  return float(np.sqrt(np.sum(k * (x * x + y * y)) / (2 * np.sum(k))))


SEVERITY_NAMES = ("blur", "noise", "jpeg")


def degradation_severity(record: dict) -> np.ndarray:
  """[blur, noise, jpeg, distortion] in [0, 1] from what `real_esrgan_degrade(...,
  record=r)` drew and did: blur = √(Σ stage kernel spread²) / 4 px, noise = √(Σ stage noise
  std²) / (30 / 255), jpeg = (100 − lowest quality) / 70, distortion = (35 − PSNR of the LR
  against the clean bicubic LR of the same HR) / 25 dB; each clipped to [0, 1]. MoR's
  degradation score at CPU scale: ground truth for `effcomp.models.sr.degradation_estimator`.
  The first three are the knobs; the last is what they did to this image (the resize
  factors and the image's own content decide how much a drawn blur or JPEG quality shows).
  An empty record (no degradation: bicubic LR) is zeros."""
  blur = np.sqrt(sum(s * s for s in record.get("blur_spread", ()))) / 4.0
  noise = np.sqrt(sum(s * s for s in record.get("noise_std", ()))) / (30.0 / 255.0)
  jpeg = (100.0 - record.get("jpeg_quality", 100)) / 70.0
  distortion = (35.0 - record.get("lr_psnr", 35.0)) / 25.0
  return np.clip(np.asarray([blur, noise, jpeg, distortion], np.float32), 0.0, 1.0)


def real_esrgan_degrade(hr: np.ndarray, rng, config: RealESRGANConfig = RealESRGANConfig(),
                        record: Optional[dict] = None) -> np.ndarray:
  """Real-ESRGAN's second-order degradation of one image (BasicSR RealESRGANModel.feed_data).

  Args:
    hr: [H, W, 3] RGB, uint8 or float in [0, 1].
    rng: a `numpy.random.Generator` or an int seed; the output is a function of it.
    config: the knobs; the defaults are Real-ESRGAN's.
    record: a dict to fill with what was drawn ('blur_spread': each blur kernel's
      `kernel_spread`, 'noise_std': each noise stage's added std, 'jpeg_quality': the
      lowest JPEG quality) and the result's 'lr_psnr' (dB) against the clean bicubic LR
      (`imresize`, MATLAB's) of `hr`, for `degradation_severity`; drawing is the same
      without it.

  Returns:
    float32 [H // scale, W // scale, 3], multiples of 1/255 in [0, 1].

  Order: [USM] → blur (kernel1) → random resize → Gaussian or Poisson noise → JPEG →
  blur (kernel2, with second_blur_prob) → random resize to (H/scale, W/scale)·s2 → noise →
  either [resize to LR size + sinc] → JPEG, or JPEG → [resize + sinc] (½ each) → round.
  """
  hr = np.asarray(hr)
  if hr.ndim != 3 or hr.shape[-1] != 3:
    raise ValueError(f"hr shape {hr.shape}: expected [H, W, 3]")
  if hr.dtype == np.uint8:
    image = hr / 255.0
  elif np.issubdtype(hr.dtype, np.floating) and hr.min() >= 0 and hr.max() <= 1:
    image = hr.astype(np.float64)
  else:
    raise ValueError(f"hr {hr.dtype} in [{hr.min()}, {hr.max()}]: expected uint8 or float "
                     "in [0, 1]")
  cfg = config
  height, width = hr.shape[:2]
  if height < cfg.scale or width < cfg.scale:
    raise ValueError(f"hr shape {hr.shape}: expected H and W >= scale={cfg.scale}")
  rng = np.random.default_rng(rng)
  modes = cfg.resize_modes

  if cfg.usm_sharpen:
    image = usm_sharpen(image)
  record = {} if record is None else record
  record.update(blur_spread=[], noise_std=[])

  def blur(x, kernel):
    record["blur_spread"].append(kernel_spread(kernel))
    return filter2d(x, kernel)

  def noise(x, *args):
    noisy = _random_noise(x, rng, *args)
    record["noise_std"].append(float(np.std(noisy - x)))
    return noisy

  # First stage.
  image = blur(image, _random_blur_kernel(rng, cfg, second=False))
  s = _random_scale(rng, cfg.resize_prob, cfg.resize_range)
  size = (max(1, math.floor(image.shape[0] * s)), max(1, math.floor(image.shape[1] * s)))
  image = resize(image, size, modes[rng.integers(len(modes))], scale=s)
  image = noise(image, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range,
                cfg.gray_noise_prob)
  image = _random_jpeg(image, rng, cfg.jpeg_prob, cfg.jpeg_range, record)
  # Second stage.
  if rng.uniform() < cfg.second_blur_prob:
    image = blur(image, _random_blur_kernel(rng, cfg, second=True))
  s = _random_scale(rng, cfg.resize_prob2, cfg.resize_range2)
  size = (max(1, int(height / cfg.scale * s)), max(1, int(width / cfg.scale * s)))
  image = resize(image, size, modes[rng.integers(len(modes))])
  image = noise(image, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                cfg.gray_noise_prob2)
  # Final sinc filter (or none: Real-ESRGAN's pulse kernel), drawn up front.
  sinc = None
  if rng.uniform() < cfg.final_sinc_prob:
    sinc = circular_lowpass_kernel(rng.uniform(np.pi / 3, np.pi), int(rng.choice(KERNEL_SIZES)))
  lr_size = (height // cfg.scale, width // cfg.scale)

  def resize_back_and_sinc(x):
    x = resize(x, lr_size, modes[rng.integers(len(modes))])
    return x if sinc is None else filter2d(x, sinc)

  if rng.uniform() < 0.5:
    image = _random_jpeg(np.clip(resize_back_and_sinc(image), 0, 1), rng, cfg.jpeg_prob2,
                         cfg.jpeg_range2, record)
  else:
    image = resize_back_and_sinc(_random_jpeg(image, rng, cfg.jpeg_prob2, cfg.jpeg_range2,
                                              record))
  image = (np.clip(np.round(image * 255), 0, 255) / 255).astype(np.float32)
  clean = np.clip(imresize.imresize(hr / 255.0 if hr.dtype == np.uint8 else hr,
                                    output_shape=lr_size), 0, 1)
  record["lr_psnr"] = float(10 * np.log10(1 / max(np.mean(np.square(image - clean)), 1e-10)))
  return image
