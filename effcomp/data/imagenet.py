"""ImageNet-1k (ILSVRC 2012, Russakovsky et al., 2015) from class folders in `manual_dir`.

Expected layout (the one torchvision's `ImageFolder` reads):

  <manual_dir>/train/<wnid>/*.JPEG   e.g. train/n01440764/n01440764_10026.JPEG
  <manual_dir>/val/<wnid>/*.JPEG     e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG

How to get there, from https://image-net.org/download-images (log in, "ILSVRC 2012"):
  * train: `ILSVRC2012_img_train.tar` (138 GB) holds one tar per class:
      mkdir -p train && tar -xf ILSVRC2012_img_train.tar -C train && cd train &&
      for f in *.tar; do mkdir "${f%.tar}" && tar -xf "$f" -C "${f%.tar}" && rm "$f"; done
  * val: `ILSVRC2012_img_val.tar` (6.3 GB) holds 50,000 images in one folder; the labels
    are in the devkit. Extract it into `val/` and sort the images into wnid folders with
    the widely used script
    https://raw.githubusercontent.com/soumith/imagenetloader.torch/master/valprep.sh
    (run it inside `val/`), or from Kaggle's `LOC_val_solution.csv`.

Labels: the wnids found under `train/`, sorted (n01440764 → 0 … n15075141 → 999 for the
full set); every `val/` folder must be one of them. File names ending in .jpeg/.jpg
(any case) are read.

Examples: `image` uint8 [H, W, 3], stored as JPEG bytes (the original file when it is an
RGB JPEG, so nothing is re-compressed; the few CMYK or grayscale JPEGs and the one PNG
named .JPEG in the train set are converted to RGB and stored as JPEG quality 95, as
TFDS's imagenet2012 does); `label` int64; `file_name` text (e.g. n01440764_10026.JPEG).
Splits: `train` (1,281,167 images for the full set), `validation` (50,000).
"""

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

SPLIT_FOLDERS = {"train": "train", "validation": "val"}
IMAGE_SUFFIXES = (".jpeg", ".jpg")
HOMEPAGE = "https://image-net.org/download-images"
JPEG_QUALITY = 95  # As TFDS imagenet2012 re-encodes non-RGB-JPEG files.


def missing_files_error(manual_dir: str, detail: str) -> FileNotFoundError:
  return FileNotFoundError(
      f"ImageNet: {detail}. Expected class folders "
      f"{os.path.join(manual_dir, 'train', '<wnid>', '*.JPEG')} and "
      f"{os.path.join(manual_dir, 'val', '<wnid>', '*.JPEG')} in manual_dir={manual_dir}; "
      f"get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from {HOMEPAGE} and "
      f"extract them as described in effcomp/data/imagenet.py.")


def class_folders(manual_dir: str, folder: str) -> list[str]:
  """Sorted names of the sub-folders of `manual_dir/folder` (the wnids)."""
  path = os.path.join(manual_dir, folder)
  if not os.path.isdir(path):
    raise missing_files_error(manual_dir, f"{path} does not exist")
  wnids = sorted(e.name for e in os.scandir(path) if e.is_dir())
  if not wnids:
    raise missing_files_error(manual_dir, f"{path} has no class folders")
  return wnids


def image_files(class_dir: str) -> list[str]:
  """Sorted JPEG file names in one class folder."""
  return sorted(e.name for e in os.scandir(class_dir)
                if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))


def rgb_jpeg_bytes(path: str) -> bytes:
  """The file's bytes if it is an RGB JPEG, else the image converted to an RGB JPEG."""
  with open(path, "rb") as f:
    data = f.read()
  with Image.open(io.BytesIO(data)) as image:  # Reads the header only.
    if image.format == "JPEG" and image.mode == "RGB":
      return data
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class Imagenet(tfds.core.GeneratorBasedBuilder):
  """ImageNet-1k read from `train/<wnid>/` and `val/<wnid>/` folders in `manual_dir`."""

  name = "effcomp_imagenet"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the class folders train/<wnid>/*.JPEG and val/<wnid>/*.JPEG in manual_dir "
      "(see effcomp/data/imagenet.py).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8,
                                         encoding_format="jpeg"),
            # Names are the wnids found in manual_dir, set in `_split_generators`.
            "label": tfds.features.ClassLabel(),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage=HOMEPAGE,
        citation="Russakovsky, O. et al. (2015). ImageNet Large Scale Visual "
                 "Recognition Challenge. IJCV 115(3), 211-252.",
    )

  def _split_generators(self, dl_manager):
    # `dl_manager.manual_dir` raises AssertionError for a missing or empty folder; read
    # the configured path instead so the error can say what to put there.
    manual_dir = os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access
    wnids = class_folders(manual_dir, SPLIT_FOLDERS["train"])
    unknown = sorted(set(class_folders(manual_dir, SPLIT_FOLDERS["validation"])) - set(wnids))
    if unknown:
      raise ValueError(f"ImageNet: val/ has class folders that train/ lacks: {unknown[:5]}"
                       f"{' …' if len(unknown) > 5 else ''} (manual_dir={manual_dir})")
    self.info.features["label"].names = wnids
    return {split: self._generate_examples(os.path.join(manual_dir, folder))
            for split, folder in SPLIT_FOLDERS.items()}

  def _generate_examples(self, split_dir: str):
    for wnid in sorted(e.name for e in os.scandir(split_dir) if e.is_dir()):
      class_dir = os.path.join(split_dir, wnid)
      for file_name in image_files(class_dir):
        path = os.path.join(class_dir, file_name)
        yield f"{wnid}/{file_name}", {"image": rgb_jpeg_bytes(path), "label": wnid,
                                      "file_name": file_name}
