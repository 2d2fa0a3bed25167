"""CIFAR-10 (Krizhevsky, 2009) from files you place in `manual_dir`.

Put ONE of these in `manual_dir`:
  * `cifar-10-python.tar.gz` (163 MB), the "CIFAR-10 python version" from
    https://www.cs.toronto.edu/~kriz/cifar.html
    (direct link https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or
  * the folder `cifar-10-batches-py/` that the archive extracts to.
The extracted folder is used when both are present.

File format (the page above): each of `data_batch_1` … `data_batch_5` (train) and
`test_batch` (test) is a Python pickle of a dict with `b'data'`, uint8 [10000, 3072] —
rows of 1024 red, then 1024 green, then 1024 blue values of a 32×32 image in row-major
order — and `b'labels'`, 10,000 ints in 0..9.

Examples: `image` uint8 [32, 32, 3], `label` int64 in 0..9 (`LABEL_NAMES`).
Splits: `train` 50,000, `test` 10,000.
"""

import os
import pickle
import tarfile
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


def missing_files_error(manual_dir: os.PathLike | str) -> FileNotFoundError:
  return FileNotFoundError(
      f"CIFAR-10: neither {os.path.join(manual_dir, ARCHIVE)} nor "
      f"{os.path.join(manual_dir, FOLDER)}/ exists. Download {ARCHIVE} from {URL} "
      f"(see https://www.cs.toronto.edu/~kriz/cifar.html) and put it in manual_dir="
      f"{manual_dir} (or extract it there to get {FOLDER}/).")


def decode_batch(batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """A CIFAR pickle dict → (images uint8 [N, 32, 32, 3], labels int64 [N])."""
  data = np.asarray(batch[b"data"], dtype=np.uint8)
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, np.asarray(batch[b"labels"], dtype=np.int64)


def read_batches(manual_dir: os.PathLike | str,
                 names: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
  """Yields (batch name, unpickled dict) from `FOLDER/` or else from `ARCHIVE`."""
  folder = os.path.join(manual_dir, FOLDER)
  archive = os.path.join(manual_dir, ARCHIVE)
  if os.path.isdir(folder):
    for name in names:
      path = os.path.join(folder, name)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR-10: {path} is missing; re-extract {ARCHIVE} "
                                f"from {URL} into manual_dir={manual_dir}")
      with open(path, "rb") as f:
        yield name, pickle.load(f, encoding="bytes")
  elif os.path.isfile(archive):
    with tarfile.open(archive, "r:gz") as tar:
      for name in names:
        member = f"{FOLDER}/{name}"
        try:
          f = tar.extractfile(member)
        except KeyError:
          f = None
        if f is None:
          raise FileNotFoundError(f"CIFAR-10: {archive} has no {member}; download it "
                                  f"again from {URL}")
        with f:
          yield name, pickle.load(f, encoding="bytes")
  else:
    raise missing_files_error(manual_dir)


class Cifar10(tfds.core.GeneratorBasedBuilder):
  """CIFAR-10 read from the python-pickle release placed in `manual_dir`."""

  name = "effcomp_cifar10"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {ARCHIVE} (from {URL}) or its extracted {FOLDER}/ folder in manual_dir.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=LABEL_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        citation="Krizhevsky, A. (2009). Learning Multiple Layers of Features from "
                 "Tiny Images. Technical report, University of Toronto.",
    )

  def _split_generators(self, dl_manager):
    # `dl_manager.manual_dir` raises AssertionError for a missing or empty folder; read
    # the configured path instead so the error below can say what to put there.
    manual_dir = os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access
    if not (os.path.isdir(os.path.join(manual_dir, FOLDER)) or
            os.path.isfile(os.path.join(manual_dir, ARCHIVE))):
      raise missing_files_error(manual_dir)
    return {split: self._generate_examples(manual_dir, files)
            for split, files in SPLIT_FILES.items()}

  def _generate_examples(self, manual_dir: str, files: tuple[str, ...]):
    for name, batch in read_batches(manual_dir, files):
      images, labels = decode_batch(batch)
      for i, (image, label) in enumerate(zip(images, labels)):
        yield f"{name}_{i:05d}", {"image": image, "label": int(label)}
