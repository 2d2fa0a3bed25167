"""Super-resolution datasets read from image folders in `manual_dir` (nothing is downloaded).

  key        builder               splits (official sizes)      source
  div2k      effcomp_div2k         train 800, validation 100    Agustsson & Timofte 2017
  flickr2k   effcomp_flickr2k      train 2,650                  Lim et al. 2017 (EDSR)
  set5       effcomp_set5          test 5                       Bevilacqua et al. 2012
  set14      effcomp_set14         test 14                      Zeyde et al. 2010
  b100       effcomp_b100          test 100                     Martin et al. 2001
  urban100   effcomp_urban100      test 100                     Huang et al. 2015
  manga109   effcomp_manga109      test 109                     Matsui et al. 2017
  realsr     effcomp_realsr/x2…x4  train, test (HR/LR pairs)    Cai et al. 2019, V3

The HR-only sets (`FolderBuilder`) hold the high-resolution images alone: the bicubic LR
is made on the fly by the SR task (`effcomp.tasks.sr`: `modcrop` to a multiple of the
scale, then MATLAB bicubic `effcomp.data.imresize.bicubic_degrade`), so the official LR
folders (`*_LR_bicubic/X4`, `LRbicx4`) are not read. Each split is read from the first
folder, in the order listed by its `MANUAL_DOWNLOAD_INSTRUCTIONS`, that holds images of
it; sizes are not checked against the official counts, so a partial copy builds too.
Images are stored as they are in the files — a BasicSR `GTmod12` copy is already cropped
to multiples of 12, an EDSR `HR` copy is not.

Pixels are read as BasicSR reads them (`cv2.imread(path, cv2.IMREAD_COLOR)`): 8-bit RGB.
Grayscale images (some copies of Set14 and B100 have them) get their channel repeated
three times, palette images are expanded, alpha is dropped. An 8-bit RGB PNG is stored as
its own file bytes, every other file as a lossless PNG of the converted pixels.
Files read: *.png, *.bmp, *.jpg, *.jpeg, *.tif, *.tiff (any case), hidden files skipped
(the `._name.png` files that macOS leaves in archives).

Examples: `image` uint8 [H, W, 3] (PNG), `name` text (the file name without extension,
e.g. `0001`, `baby`), in file-name order (`disable_shuffling`). RealSR: `hr`, `lr` uint8
[H, W, 3], `name` (e.g. `Canon_001`), `camera` (`Canon` or `Nikon`); see `RealSR`.
"""

import dataclasses
import os
from typing import Type, Union

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
# PIL modes that `convert('RGB')` turns into what cv2.IMREAD_COLOR gives; 16-bit and float
# single-channel images are refused rather than clipped.
CONVERTIBLE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
PNG_BIT_DEPTH_OFFSET = 24  # 8-byte signature, IHDR length and type, width, height.


def image_files(folder: str) -> list[str]:
  """Sorted names of the image files directly in `folder` ([] if it does not exist)."""
  if not os.path.isdir(folder):
    return []
  return sorted(e.name for e in os.scandir(folder)
                if e.is_file() and not e.name.startswith(".")
                and e.name.lower().endswith(IMAGE_SUFFIXES))


def stem(file_name: str) -> str:
  return os.path.splitext(file_name)[0]


def rgb_image(path: str) -> Union[bytes, Image.Image]:
  """The image at `path` as 8-bit RGB, in a form the TFDS `Image` feature encodes.

  Returns:
    The file's own bytes when it is an 8-bit RGB PNG without transparency (nothing is
    re-encoded), else a PIL image converted to RGB (gray channel repeated, palette
    expanded, alpha dropped) that TFDS saves as PNG.

  Raises:
    ValueError: a 16-bit or float single-channel image, which has no 8-bit RGB reading
      without choosing a scaling.
  """
  with open(path, "rb") as f:
    data = f.read()
  with Image.open(path) as image:
    if (image.format == "PNG" and image.mode == "RGB" and "transparency" not in image.info
        and data[PNG_BIT_DEPTH_OFFSET] == 8):
      return data
    if image.mode not in CONVERTIBLE_MODES:
      raise ValueError(f"{path}: PIL mode {image.mode!r} is not an 8-bit image")
    return image.convert("RGB")


def layout(split_folders: dict[str, tuple[str, ...]], pattern: str = "*.png") -> str:
  """Lines `  split: <manual_dir>/a/*.png, else <manual_dir>/b/*.png` for the instructions."""
  return "\n".join(
      f"  {split}: " + ", else ".join(f"<manual_dir>/{f}/{pattern}" for f in folders)
      for split, folders in split_folders.items())


def missing_files_error(dataset: str, manual_dir: str, detail: str,
                        instructions: str) -> FileNotFoundError:
  return FileNotFoundError(f"{dataset}: {detail} in manual_dir={manual_dir}.\n{instructions}")


def manual_dir_of(dl_manager) -> str:
  # `dl_manager.manual_dir` raises AssertionError for a missing or empty folder; read the
  # configured path instead so the error can say what to put there.
  return os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access


class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """HR images, one folder per split; subclasses set the folders and the instructions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DATASET = ""  # Name in messages, e.g. 'DIV2K'.
  HOMEPAGE = ""
  CITATION = ""
  # split → folders relative to manual_dir, tried in order; the first with images wins.
  SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {}

  def _in_split(self, split: str, name: str) -> bool:
    """Whether the image `name` of a split's folder belongs to the split (all, here)."""
    del split, name
    return True

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=f"{type(self).__doc__}\n\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "name": tfds.features.Text(),
        }),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        disable_shuffling=True,  # File-name order, as BasicSR lists a folder.
    )

  def split_files(self, manual_dir: str) -> dict[str, list[str]]:
    """split → sorted paths of its images, from the first of its folders that has any.

    Raises:
      FileNotFoundError: no folder of some split holds an image of it.
    """
    found = {}
    for split, folders in self.SPLIT_FOLDERS.items():
      for folder in folders:
        path = os.path.join(manual_dir, folder)
        files = [f for f in image_files(path) if self._in_split(split, stem(f))]
        if files:
          found[split] = [os.path.join(path, f) for f in files]
          break
      else:
        raise missing_files_error(
            self.DATASET, manual_dir, f"no images of split '{split}' in "
            f"{' or '.join(f + '/' for f in folders)}", self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return found

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(paths)
            for split, paths in self.split_files(manual_dir_of(dl_manager)).items()}

  def _generate_examples(self, paths: list[str]):
    # Integer keys: with shuffling disabled, TFDS writes the examples sorted by key.
    for i, path in enumerate(paths):
      yield i, {"image": rgb_image(path), "name": stem(os.path.basename(path))}


# ----------------------------------------------------------------------- training sets

DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
DIV2K_RANGES = {"train": range(1, 801), "validation": range(801, 901)}
DIV2K_FOLDERS = {
    "train": ("DIV2K_train_HR", "DIV2K/DIV2K_train_HR"),
    # EDSR's DIV2K.tar keeps 0801–0900 in DIV2K_train_HR: the last two, by number.
    "validation": ("DIV2K_valid_HR", "DIV2K/DIV2K_valid_HR", "DIV2K_train_HR",
                   "DIV2K/DIV2K_train_HR"),
}


class Div2k(FolderBuilder):
  """DIV2K HR (2K-resolution photos): train 0001–0800, validation 0801–0900.

  Splits go by image number, so EDSR's DIV2K.tar — all 900 images in DIV2K_train_HR —
  gives the same splits as the official zips and never leaks validation into train.
  """

  name = "effcomp_div2k"
  DATASET = "DIV2K"
  HOMEPAGE = DIV2K_URL
  CITATION = ("Agustsson, E. and Timofte, R. (2017). NTIRE 2017 Challenge on Single Image "
              "Super-Resolution: Dataset and Study. CVPR Workshops.")
  SPLIT_FOLDERS = DIV2K_FOLDERS
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {DIV2K_URL}DIV2K_train_HR.zip and {DIV2K_URL}DIV2K_valid_HR.zip and unzip "
      "them in manual_dir (or unpack EDSR's https://cv.snu.ac.kr/research/EDSR/DIV2K.tar "
      "there). Expected layout (0001.png … 0800.png train, 0801.png … 0900.png "
      f"validation):\n{layout(DIV2K_FOLDERS)}")

  def _in_split(self, split: str, name: str) -> bool:
    return name.isdigit() and int(name) in DIV2K_RANGES[split]


FLICKR2K_URL = "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar"
FLICKR2K_FOLDERS = {"train": ("Flickr2K/Flickr2K_HR", "Flickr2K_HR")}


class Flickr2k(FolderBuilder):
  """Flickr2K HR (2,650 2K-resolution Flickr photos); with DIV2K train it is DF2K."""

  name = "effcomp_flickr2k"
  DATASET = "Flickr2K"
  HOMEPAGE = "https://github.com/sanghyun-son/EDSR-PyTorch"
  CITATION = ("Lim, B., Son, S., Kim, H., Nah, S. and Lee, K. M. (2017). Enhanced Deep "
              "Residual Networks for Single Image Super-Resolution. CVPR Workshops.")
  SPLIT_FOLDERS = FLICKR2K_FOLDERS
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {FLICKR2K_URL} and unpack it in manual_dir (`tar -xf Flickr2K.tar`; only "
      f"Flickr2K_HR is read). Expected layout (000001.png … 002650.png):\n"
      f"{layout(FLICKR2K_FOLDERS)}")


# --------------------------------------------------------------------- benchmark sets

EDSR_BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
BASICSR_DATASETS_URL = ("https://github.com/XPixelGroup/BasicSR/blob/master/docs/"
                        "DatasetPreparation.md")


def benchmark_folders(names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
  """{'test': EDSR's benchmark/<names[0]>/HR, then <name>/GTmod12, HR, original (BasicSR)}.

  `names[0]` is EDSR's spelling of the set; BasicSR's test options spell some otherwise
  (BSDS100, urban100, manga109).
  """
  return {"test": (f"benchmark/{names[0]}/HR",) + tuple(
      f"{n}/{sub}" for sub in ("GTmod12", "HR", "original") for n in names)}


def benchmark_instructions(names: tuple[str, ...], note: str = "") -> str:
  return (f"Unpack EDSR's benchmark.tar ({EDSR_BENCHMARK_URL}) or BasicSR's test-set "
          f"collection ({BASICSR_DATASETS_URL}) in manual_dir{note}. Expected layout, "
          f"first found:\n{layout(benchmark_folders(names))}")


class Set5(FolderBuilder):
  """Set5: 5 images (baby, bird, butterfly, head, woman)."""

  name = "effcomp_set5"
  DATASET = "Set5"
  FOLDER_NAMES = ("Set5",)
  SPLIT_FOLDERS = benchmark_folders(FOLDER_NAMES)
  MANUAL_DOWNLOAD_INSTRUCTIONS = benchmark_instructions(FOLDER_NAMES)
  HOMEPAGE = "http://people.rennes.inria.fr/Aline.Roumy/results/SR_BMVC12.html"
  CITATION = ("Bevilacqua, M., Roumy, A., Guillemot, C. and Alberi-Morel, M. L. (2012). "
              "Low-Complexity Single-Image Super-Resolution based on Nonnegative Neighbor "
              "Embedding. BMVC.")


class Set14(FolderBuilder):
  """Set14: 14 images (baboon … zebra); some copies store a few of them in grayscale."""

  name = "effcomp_set14"
  DATASET = "Set14"
  FOLDER_NAMES = ("Set14",)
  SPLIT_FOLDERS = benchmark_folders(FOLDER_NAMES)
  MANUAL_DOWNLOAD_INSTRUCTIONS = benchmark_instructions(FOLDER_NAMES)
  HOMEPAGE = BASICSR_DATASETS_URL
  CITATION = ("Zeyde, R., Elad, M. and Protter, M. (2010). On Single Image Scale-Up Using "
              "Sparse-Representations. Curves and Surfaces.")


class B100(FolderBuilder):
  """B100 (BSD100, BSDS100): the 100 test images of the Berkeley Segmentation Dataset."""

  name = "effcomp_b100"
  DATASET = "B100"
  FOLDER_NAMES = ("B100", "BSDS100", "BSD100")
  SPLIT_FOLDERS = benchmark_folders(FOLDER_NAMES)
  MANUAL_DOWNLOAD_INSTRUCTIONS = benchmark_instructions(FOLDER_NAMES)
  HOMEPAGE = BASICSR_DATASETS_URL
  CITATION = ("Martin, D., Fowlkes, C., Tal, D. and Malik, J. (2001). A Database of Human "
              "Segmented Natural Images and its Application to Evaluating Segmentation "
              "Algorithms and Measuring Ecological Statistics. ICCV.")


class Urban100(FolderBuilder):
  """Urban100: 100 photos of buildings with regular structures."""

  name = "effcomp_urban100"
  DATASET = "Urban100"
  FOLDER_NAMES = ("Urban100", "urban100")
  SPLIT_FOLDERS = benchmark_folders(FOLDER_NAMES)
  MANUAL_DOWNLOAD_INSTRUCTIONS = benchmark_instructions(FOLDER_NAMES)
  HOMEPAGE = "https://github.com/jbhuang0604/SelfExSR"
  CITATION = ("Huang, J.-B., Singh, A. and Ahuja, N. (2015). Single Image Super-Resolution "
              "from Transformed Self-Exemplars. CVPR.")


class Manga109(FolderBuilder):
  """Manga109: 109 colour manga images, one per volume of the Manga109 collection."""

  name = "effcomp_manga109"
  DATASET = "Manga109"
  FOLDER_NAMES = ("Manga109", "manga109")
  SPLIT_FOLDERS = benchmark_folders(FOLDER_NAMES)
  MANUAL_DOWNLOAD_INSTRUCTIONS = benchmark_instructions(
      FOLDER_NAMES, " (if your benchmark.tar has no Manga109, take BasicSR's copy or ask "
      "for the images at http://www.manga109.org/en/)")
  HOMEPAGE = "http://www.manga109.org/en/"
  CITATION = ("Matsui, Y., Ito, K., Aramaki, Y., Fujimoto, A., Ogawa, T., Yamasaki, T. and "
              "Aizawa, K. (2017). Sketch-based Manga Retrieval using Manga109 Dataset. "
              "Multimedia Tools and Applications 76(20).")


# ----------------------------------------------------------------------------- RealSR

REALSR_URL = "https://github.com/csjcai/RealSR"
REALSR_ROOTS = ("RealSR(V3)", "RealSR (V3)")  # The folder the V3 archive unpacks to.
REALSR_CAMERAS = ("Canon", "Nikon")
REALSR_SPLIT_FOLDERS = {"train": "Train", "test": "Test"}
REALSR_SCALES = (2, 3, 4)
REALSR_LAYOUT = "\n".join(
    f"  {split}: <manual_dir>/{REALSR_ROOTS[0]}/<Canon|Nikon>/{folder}/<scale>/"
    "<name>_HR.png and <name>_LR<scale>.png"
    for split, folder in REALSR_SPLIT_FOLDERS.items())


@dataclasses.dataclass
class RealSRConfig(tfds.core.BuilderConfig):
  """A RealSR scale: the pairs in the `<scale>/` folders."""
  scale: int = 4


def realsr_pairs(folder: str, scale: int) -> list[tuple[str, str, str]]:
  """(name, HR path, LR path) of the `<name>_HR.png`/`<name>_LR<scale>.png` pairs, sorted.

  Raises:
    FileNotFoundError: an HR without its LR or an LR without its HR.
  """
  hr_suffix, lr_suffix = "_HR.png", f"_LR{scale}.png"
  files = image_files(folder)
  hr = {f[:-len(hr_suffix)] for f in files if f.endswith(hr_suffix)}
  lr = {f[:-len(lr_suffix)] for f in files if f.endswith(lr_suffix)}
  if hr != lr:
    unmatched = [f"{n}{hr_suffix}" for n in sorted(hr - lr)]
    unmatched += [f"{n}{lr_suffix}" for n in sorted(lr - hr)]
    raise FileNotFoundError(f"RealSR: {', '.join(unmatched[:5])} in {folder} "
                            f"{'has' if len(unmatched) == 1 else 'have'} no partner "
                            f"(expected <name>{hr_suffix} with <name>{lr_suffix})")
  return [(n, os.path.join(folder, n + hr_suffix), os.path.join(folder, n + lr_suffix))
          for n in sorted(hr)]


class RealSR(tfds.core.GeneratorBasedBuilder):
  """RealSR V3: real LR/HR pairs, each scene shot at two focal lengths (Canon 5D3, Nikon D810).

  One builder config per scale (`x2`, `x3`, `x4`; default `x4`, the usual real-world SR
  benchmark): `effcomp_realsr/x2` … Each example pairs `<name>_HR.png` with
  `<name>_LR<scale>.png` from the same folder, both stored as they are (in V3 the LR has
  already been registered to the HR and resized to its size). Cameras and names are in
  `camera` and `name`, Canon first, each in name order.
  """

  name = "effcomp_realsr"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [RealSRConfig(name=f"x{s}", scale=s, description=f"×{s} pairs")
                     for s in REALSR_SCALES]
  DEFAULT_BUILDER_CONFIG_NAME = "x4"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download RealSR (ICCV 2019) version 3 from the links at {REALSR_URL} and unpack it "
      f"in manual_dir (a folder named {' or '.join(REALSR_ROOTS)}). Expected layout, "
      f"<scale> = 2, 3, 4:\n{REALSR_LAYOUT}")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=f"{type(self).__doc__}\n\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}",
        features=tfds.features.FeaturesDict({
            "hr": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "lr": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "name": tfds.features.Text(),
            "camera": tfds.features.Text(),
        }),
        supervised_keys=("lr", "hr"),
        homepage=REALSR_URL,
        citation="Cai, J., Zeng, H., Yong, H., Cao, Z. and Zhang, L. (2019). Toward "
                 "Real-World Single Image Super-Resolution: A New Benchmark and A New "
                 "Model. ICCV.",
        disable_shuffling=True,  # Canon then Nikon, each in name order.
    )

  def split_pairs(self, manual_dir: str) -> dict[str, list[tuple[str, str, str, str]]]:
    """split → (camera, name, HR path, LR path) of this config's scale.

    Raises:
      FileNotFoundError: no RealSR folder, a camera's folder without pairs, or an
        unmatched file.
    """
    roots = [os.path.join(manual_dir, r) for r in REALSR_ROOTS]
    root = next((r for r in roots if os.path.isdir(r)), None)
    if root is None:
      raise missing_files_error("RealSR", manual_dir, f"neither of {', '.join(roots)} "
                                "exists", self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    scale = self.builder_config.scale
    found = {}
    for split, split_folder in REALSR_SPLIT_FOLDERS.items():
      found[split] = []
      for camera in REALSR_CAMERAS:
        folder = os.path.join(root, camera, split_folder, str(scale))
        pairs = realsr_pairs(folder, scale)
        if not pairs:
          raise missing_files_error(
              "RealSR", manual_dir, f"no <name>_HR.png/<name>_LR{scale}.png pairs in "
              f"{folder}", self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        found[split] += [(camera, *pair) for pair in pairs]
    return found

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(pairs)
            for split, pairs in self.split_pairs(manual_dir_of(dl_manager)).items()}

  def _generate_examples(self, pairs: list[tuple[str, str, str, str]]):
    for i, (camera, name, hr_path, lr_path) in enumerate(pairs):
      yield i, {"hr": rgb_image(hr_path), "lr": rgb_image(lr_path), "name": name,
                "camera": camera}


# name → (builder class, split names), the shape of `effcomp.data.sources.DATASETS`.
SR_DATASETS: dict[str, tuple[Type[tfds.core.GeneratorBasedBuilder], tuple[str, ...]]] = {
    "div2k": (Div2k, ("train", "validation")),
    "flickr2k": (Flickr2k, ("train",)),
    "set5": (Set5, ("test",)),
    "set14": (Set14, ("test",)),
    "b100": (B100, ("test",)),
    "urban100": (Urban100, ("test",)),
    "manga109": (Manga109, ("test",)),
    "realsr": (RealSR, ("train", "test")),  # Default config x4; others: config='x2'.
}
