"""GenImage (Zhu et al. 2023, "GenImage: A Million-Scale Benchmark for Detecting AI-Generated
Image") from its folders in `manual_dir`: one dataset per generator, real vs generated;
the degradations of its degraded-image task (`DEGRADATIONS`, `degrade`); CNNSpot's training
augmentation (`cnnspot_augment`).

Expected layout (GenImage-Dataset/GenImage `Readme.md`; each generator's archives unpack
into one folder, named as the README lists it or as the archive names it):

  <manual_dir>/<generator folder>/train/ai/*        generated images (label 1, 'ai')
  <manual_dir>/<generator folder>/train/nature/*    ImageNet images  (label 0, 'nature')
  <manual_dir>/<generator folder>/val/{ai,nature}/*

with the generator folders of `GENERATORS` (e.g. 'Stable Diffusion V1.4' or
'imagenet_ai_0419_sdv4'). The dataset `genimage_<key>` (`sd14`, `sd15`, `midjourney`, `adm`,
`glide`, `wukong`, `vqdm`, `biggan`) reads one generator; its splits are `train` and
`validation`. mini-GenImage, effcomp's own generators in the same layout, is read by
`genimage_mini_<kind>` (`MINI_KINDS`) from `effcomp_<kind>/`. Files ending in .png, .jpg,
.jpeg, .webp or .bmp (any case) are read.

Examples: `image` uint8 [H, W, 3], stored as the file's own bytes (nothing re-encoded:
GenImage's real images are JPEGs and most generated ones PNGs, and a detector must not be
handed a compression difference the builder made); files that are not RGB (grayscale,
RGBA, CMYK, palette) are converted to RGB and stored as PNG (lossless). Files that do
not decode (the dataset's README lists corrupted files for several generators) are
skipped and logged. `label` 0 = nature, 1 = ai; `file_name` text; `generator` text (the
key). Building decodes every image once to find broken files (milliseconds per image;
a generator's few hundred thousand files take tens of minutes on one core, once).
"""

import io
import os
from typing import Dict, Type

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from effcomp.data import degradations

HOMEPAGE = "https://github.com/GenImage-Dataset/GenImage"
CITATION = ("Zhu, M. et al. (2023). GenImage: A Million-Scale Benchmark for Detecting "
            "AI-Generated Image. NeurIPS Datasets and Benchmarks.")
LABELS = ("nature", "ai")
SPLIT_FOLDERS = {"train": "train", "validation": "val"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# key → folder names tried in order: the README's, then the archives' (as the dataset's
# `data/corrupted_files/*.txt` name them).
GENERATORS: Dict[str, tuple[str, ...]] = {
    "midjourney": ("Midjourney", "imagenet_midjourney"),
    "sd14": ("Stable Diffusion V1.4", "imagenet_ai_0419_sdv4"),
    "sd15": ("Stable Diffusion V1.5", "imagenet_ai_0424_sdv5"),
    "adm": ("ADM", "imagenet_ai_0508_adm"),
    "glide": ("GLIDE", "imagenet_glide"),
    "wukong": ("Wukong", "imagenet_ai_0424_wukong"),
    "vqdm": ("VQDM", "imagenet_ai_0419_vqdm"),
    "biggan": ("BigGAN", "imagenet_ai_0419_biggan"),
}
# mini-GenImage: the same layout, written by `experiments/make_genimage.py` from trained
# effcomp runs (`effcomp.runs.genimage`), one folder per generator kind:
# dataset `genimage_mini_<kind>` reads `<manual_dir>/effcomp_<kind>/`.
MINI_KINDS = ("ar", "ar_vf", "dit", "udit", "flow", "elastic_dit", "diffusion_sr",
              "onestep_sr")
GENERATORS.update({f"mini_{kind}": (f"effcomp_{kind}",) for kind in MINI_KINDS})


def missing_files_error(manual_dir: str, key: str, detail: str) -> FileNotFoundError:
  folders = " or ".join(repr(f) for f in GENERATORS[key])
  return FileNotFoundError(
      f"GenImage ({key}): {detail}. Expected <generator folder>/train/ai, train/nature, "
      f"val/ai and val/nature with the generator folder {folders} in "
      f"manual_dir={manual_dir}; get the archives from {HOMEPAGE} and unpack them there.")


def generator_dir(manual_dir: str, key: str) -> str:
  """The first of the generator's folders that exists in `manual_dir`."""
  for folder in GENERATORS[key]:
    path = os.path.join(manual_dir, folder)
    if os.path.isdir(path):
      return path
  raise missing_files_error(manual_dir, key, "no generator folder found")


def image_files(folder: str) -> list[str]:
  """Sorted image file names in `folder`."""
  return sorted(e.name for e in os.scandir(folder)
                if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))


def stored_bytes(path: str) -> bytes | None:
  """The file's bytes if it decodes to RGB; a lossless RGB PNG of it for other modes;
  None when it does not decode."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      if image.mode == "RGB" and image.format in ("JPEG", "PNG", "BMP"):
        return data
      buffer = io.BytesIO()
      image.convert("RGB").save(buffer, format="PNG")
      return buffer.getvalue()
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    logging.warning("GenImage: skipping %s, which does not decode (%s)", path, e)
    return None


class GenImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One GenImage generator's real and generated images (`KEY` of `GENERATORS`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  KEY = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # Bytes are stored as given (PNG or JPEG), never re-encoded.
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=LABELS),
            "file_name": tfds.features.Text(),
            "generator": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage=HOMEPAGE,
        citation=CITATION,
    )

  def _split_generators(self, dl_manager):
    # `dl_manager.manual_dir` raises AssertionError for a missing or empty folder; read
    # the configured path instead so the error can say what to put there.
    manual_dir = os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access
    root = generator_dir(manual_dir, self.KEY)
    folders = {}
    for split, folder in SPLIT_FOLDERS.items():
      for label in LABELS:
        path = os.path.join(root, folder, label)
        if not os.path.isdir(path) or not image_files(path):
          raise missing_files_error(manual_dir, self.KEY, f"{path} has no images")
        folders[(split, label)] = path
    return {split: self._generate_examples(
        {label: folders[(split, label)] for label in LABELS}) for split in SPLIT_FOLDERS}

  def _generate_examples(self, folders: dict[str, str]):
    for label, folder in folders.items():
      for name in image_files(folder):
        data = stored_bytes(os.path.join(folder, name))
        if data is not None:
          yield f"{label}/{name}", {"image": data, "label": label, "file_name": name,
                                    "generator": self.KEY}


def _builder(key: str) -> Type[GenImageBuilder]:
  cls = type(f"GenImage_{key}", (GenImageBuilder,), {
      "__doc__": f"GenImage, generator {GENERATORS[key][0]}: real (ImageNet) vs generated.",
      "name": f"effcomp_genimage_{key}", "KEY": key,
      "MANUAL_DOWNLOAD_INSTRUCTIONS": (
          f"Put {GENERATORS[key][0]!r}/{{train,val}}/{{ai,nature}}/ in manual_dir "
          "(see effcomp/data/genimage.py).")})
  cls.__module__ = __name__
  return cls


# dataset name → (builder class, split names), merged into `effcomp.data.sources.DATASETS`.
GENIMAGE_DATASETS = {f"genimage_{key}": (_builder(key), tuple(SPLIT_FOLDERS))
                     for key in GENERATORS}


# ------------------------------------------------------------- degraded-image task

# The paper's Table 5 (degraded-image classification): low resolution (images at 112 and
# 64 pixels), JPEG (quality 65, 30), Gaussian blur (σ 3, 5), on 224-pixel detector inputs.
DEGRADATIONS = {"LR (112)": ("resolution", 112), "LR (64)": ("resolution", 64),
                "JPEG (q=65)": ("jpeg", 65), "JPEG (q=30)": ("jpeg", 30),
                "Blur (σ=3)": ("blur", 3.0), "Blur (σ=5)": ("blur", 5.0)}
REFERENCE_SIZE = 224  # the detectors' input side the paper's levels refer to


def degrade(image: np.ndarray, name: str) -> np.ndarray:
  """uint8 [H, W, 3] → the same size, degraded as `DEGRADATIONS[name]` says.

  Sizes and σ are in pixels of a `REFERENCE_SIZE` image, so they scale with the image's
  side (the CPU mini-GenImage's 32-pixel images get the same relative loss: LR (112)
  halves the resolution, Blur (σ=3) blurs by 3·32/224 pixels); JPEG qualities do not.
  Low resolution: bicubic (PIL, antialiased) down to side·size/224, then back up, so a
  detector sees its input size (the paper resizes the low-resolution images to its input).
  JPEG: PIL/libjpeg at the quality (`degradations.jpeg_compress`). Blur:
  `degradations.gaussian_blur`.
  """
  if name not in DEGRADATIONS:
    raise ValueError(f"degradation name={name!r}: expected one of {sorted(DEGRADATIONS)}")
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"image of dtype {image.dtype} and shape {image.shape}: expected uint8 "
                     "[H, W, C]")
  kind, level = DEGRADATIONS[name]
  h, w = image.shape[:2]
  scale = min(h, w) / REFERENCE_SIZE
  if kind == "resolution":
    small = (max(1, round(w * level / REFERENCE_SIZE)), max(1, round(h * level / REFERENCE_SIZE)))
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    out = np.asarray(pil.resize(small, Image.BICUBIC).resize((w, h), Image.BICUBIC))
    return out.reshape(image.shape)
  if kind == "jpeg":
    return _jpeg(image, level)
  return _blur(image, level * scale)


def _to_uint8(x: np.ndarray) -> np.ndarray:
  """[0, 1] floats → uint8, rounded."""
  return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """uint8 → PIL's JPEG at `quality` → uint8 (`degradations.jpeg_compress`)."""
  return _to_uint8(degradations.jpeg_compress(image / 255.0, quality))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """uint8 → Gaussian blur of std `sigma` pixels → uint8 (`degradations.gaussian_blur`)."""
  return _to_uint8(degradations.gaussian_blur(image / 255.0, sigma))


def cnnspot_augment(image: np.ndarray, rng: np.random.Generator, *, blur_prob: float = 0.5,
                    blur_sigma: tuple[float, float] = (0.0, 3.0), jpeg_prob: float = 0.5,
                    jpeg_quality: tuple[int, int] = (30, 100)) -> np.ndarray:
  """CNNSpot's training augmentation (Wang et al. 2020, PeterWang512/CNNDetection
  `data/datasets.py` `data_augment`) of a uint8 [H, W, C] image: with probability
  `blur_prob` a Gaussian blur of σ ~ U[blur_sigma], then with probability `jpeg_prob` JPEG
  at a quality drawn uniformly from the integers of `jpeg_quality` (inclusive). The
  defaults are its "Blur+JPEG (0.5)" model (`--blur_sig 0.0,3.0 --jpg_qual 30,100`), the
  one GenImage benchmarks. Deviation: its JPEG is cv2's or PIL's at random; here always
  PIL's (OpenCV is not a dependency); its blur writes truncated uint8, here rounded."""
  out = image
  if rng.random() < blur_prob:
    sigma = rng.uniform(*blur_sigma)
    if sigma > 0:
      out = _blur(out, sigma)
  if rng.random() < jpeg_prob:
    out = _jpeg(out, int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)))
  return out
