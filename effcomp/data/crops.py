"""Per-image crops for variable-size photos (the ImageNet recipe), with PIL resizing.

- `random_resized_crop`: Inception-style crop (Szegedy et al. 2015; torchvision's
  RandomResizedCrop): area fraction in `scale`, aspect ratio log-uniform in `ratio`,
  10 tries then a central crop, resized to size×size, plus a random horizontal flip.
- `center_crop`: resize the shorter side to size/crop_fraction (256 for 224), then take
  the central size×size (the standard ImageNet evaluation).
image: [height, width, channels] uint8 → [size, size, channels] uint8.
"""

import math
from typing import Tuple

import numpy as np
from PIL import Image


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  squeeze = image.ndim == 3 and image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if squeeze else image)
  out = np.asarray(pil.resize((width, height), Image.BICUBIC))
  return out[..., None] if squeeze else out


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                        scale: Tuple[float, float] = (0.08, 1.0),
                        ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:
    ch = cw = min(h, w)
    y, x = (h - ch) // 2, (w - cw) // 2
  crop = _resize(image[y:y + ch, x:x + cw], size, size)
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
  h, w = image.shape[:2]
  short = int(round(size / crop_fraction))
  nh, nw = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
  resized = _resize(image, nh, nw)
  y, x = (nh - size) // 2, (nw - size) // 2
  return resized[y:y + size, x:x + size]
