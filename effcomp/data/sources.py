"""Dataset name → prepared TFDS dataset → random-access source for the trainer.

    source = get_source("digits", "train")     # builds on first use, then reuses
    len(source); source[0]  # {'image': uint8 [8, 8, 1], 'label': int}

A source is TFDS's `ArrayRecordDataSource` (`builder.as_data_source(split)`): `len()`,
and `source[i]` → dict of numpy arrays, Python ints (class labels) and `bytes` (text
features, UTF-8). Datasets are written as ArrayRecord, which TFDS reads and writes
without TensorFlow.

Where: `data_dir` argument, else `$EFFCOMP_DATA_DIR`, else `~/tensorflow_datasets`;
each dataset lives in `<data_dir>/effcomp_<name>/<version>/`. Manual datasets (cifar10,
imagenet, wikitext2, wikitext103, the SR sets, GenImage) read their files from `manual_dir`, default
`<data_dir>/downloads/manual`.

Building holds an exclusive `fcntl.flock` on `<data_dir>/.effcomp_<name>.lock`, so the
processes of a multi-process run on one machine may all call `get_source`: the first
builds, the others wait and then reuse the result.
"""

import contextlib
import fcntl
import os
import re
from typing import Any, Iterator, Optional, Type

import tensorflow_datasets as tfds

from effcomp.data import cifar10
from effcomp.data import digits
from effcomp.data import genimage
from effcomp.data import imagenet
from effcomp.data import photos
from effcomp.data import python_docs
from effcomp.data import sr
from effcomp.data import wikitext

# name → (builder class, split names).
DATASETS: dict[str, tuple[Type[tfds.core.GeneratorBasedBuilder], tuple[str, ...]]] = {
    "digits": (digits.Digits, ("train", "test")),
    "photos": (photos.Photos, ("train", "test")),
    "python_docs": (python_docs.PythonDocs, ("train", "validation", "test")),
    "cifar10": (cifar10.Cifar10, ("train", "test")),
    "imagenet": (imagenet.Imagenet, ("train", "validation")),
    "wikitext2": (wikitext.Wikitext2, ("train", "validation", "test")),
    "wikitext103": (wikitext.Wikitext103, ("train", "validation", "test")),
    # Super-resolution (manual_dir): div2k, flickr2k, set5, set14, b100, urban100,
    # manga109, realsr (its default ×4 config).
    **sr.SR_DATASETS,
    # GenImage (manual_dir), one per generator: genimage_sd14, genimage_midjourney, …
    **genimage.GENIMAGE_DATASETS,
}
DATA_DIR_ENV = "EFFCOMP_DATA_DIR"
FILE_FORMAT = "array_record"


def default_data_dir() -> str:
  """`$EFFCOMP_DATA_DIR` if set, else `~/tensorflow_datasets`."""
  return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/tensorflow_datasets")


def _builder_class(name: str) -> Type[tfds.core.GeneratorBasedBuilder]:
  if name not in DATASETS:
    raise ValueError(f"dataset name={name!r} is unknown; expected one of {sorted(DATASETS)}")
  return DATASETS[name][0]


def _check_split(name: str, split: str) -> None:
  """Accepts TFDS split strings over known splits: 'train', 'train[:10%]', 'train+test'."""
  valid = DATASETS[name][1]
  parts = [re.sub(r"\[.*\]$", "", p.strip()) for p in str(split).split("+")]
  if not all(p in valid for p in parts):
    raise ValueError(f"split={split!r} is unknown for dataset {name!r}; expected one of "
                     f"{list(valid)} (or TFDS slices such as 'train[:10%]')")


@contextlib.contextmanager
def _exclusive_lock(path: str) -> Iterator[None]:
  """Holds an exclusive `flock` on `path` (created if missing) for the block."""
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepared_builder(name: str, *, data_dir: Optional[str] = None,
                     manual_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder of dataset `name` in `data_dir`, built first if it is not there.

  Args:
    name: one of `DATASETS`.
    data_dir: root of the TFDS datasets; default `default_data_dir()`.
    manual_dir: where cifar10/imagenet/wikitext2/wikitext103 find their files; default
      `<data_dir>/downloads/manual`. Ignored by the other datasets.

  Raises:
    ValueError: unknown `name`.
    FileNotFoundError: a manual dataset's files are not in `manual_dir`.
  """
  cls = _builder_class(name)
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  builder = cls(data_dir=data_dir, file_format=FILE_FORMAT)
  if builder.is_prepared():
    return builder
  os.makedirs(data_dir, exist_ok=True)
  with _exclusive_lock(os.path.join(data_dir, f".{cls.name}.lock")):
    # Another process may have built it while this one waited: look again, afresh.
    builder = cls(data_dir=data_dir, file_format=FILE_FORMAT)
    if not builder.is_prepared():
      tfds.disable_progress_bar()
      builder.download_and_prepare(
          file_format=FILE_FORMAT,
          download_config=tfds.download.DownloadConfig(
              manual_dir=os.path.expanduser(manual_dir) if manual_dir else None))
  return builder


def get_source(name: str, split: str, *, data_dir: Optional[str] = None,
               manual_dir: Optional[str] = None) -> Any:
  """Random-access source of `split` of dataset `name` (see the module docstring).

  Args:
    name: one of `DATASETS` ('digits', 'photos', 'python_docs', 'cifar10', 'imagenet',
      'wikitext2', 'wikitext103', and the super-resolution sets of `effcomp.data.sr`).
    split: one of the dataset's splits (`DATASETS[name][1]`), or a TFDS slice of them.
    data_dir, manual_dir: as in `prepared_builder`.

  Returns:
    `tfds.data_sources.ArrayRecordDataSource`: `len()`, `[i]` → dict of features.
  """
  _builder_class(name)
  _check_split(name, split)
  return prepared_builder(name, data_dir=data_dir, manual_dir=manual_dir).as_data_source(split)


def info(name: str, *, data_dir: Optional[str] = None,
         manual_dir: Optional[str] = None) -> tfds.core.DatasetInfo:
  """`DatasetInfo` of the prepared dataset: features, split sizes, description."""
  return prepared_builder(name, data_dir=data_dir, manual_dir=manual_dir).info


def num_classes(name: str, *, data_dir: Optional[str] = None,
                manual_dir: Optional[str] = None) -> int:
  """Number of classes of the dataset's `label` feature (imagenet: wnids found)."""
  features = info(name, data_dir=data_dir, manual_dir=manual_dir).features
  if "label" not in features:
    raise ValueError(f"dataset name={name!r} has no 'label' feature; its features are "
                     f"{sorted(features.keys())}")
  return features["label"].num_classes
