"""scikit-learn's handwritten digits as a TFDS dataset (no download).

Source: `sklearn.datasets.load_digits` — the test set of the UCI "Optical Recognition
of Handwritten Digits" data (Alpaydin & Kaynak, 1998): 1,797 images of 8×8 pixels,
each pixel a count 0..16 of set pixels in a 4×4 block of a 32×32 bitmap; 10 classes.

Examples: `image` uint8 [8, 8, 1] rescaled to 0..255 as `x * 255 // 16` (so 16 → 255),
`label` int64 in 0..9.

Splits (fixed, stratified by class):
  `sklearn.model_selection.train_test_split(arange(1797), test_size=360,
  stratify=target, random_state=0, shuffle=True)`
  → `train` 1,437 examples, `test` 360 examples (36 per class ± 1).
The split depends only on scikit-learn's bundled data and that call, so every build on
every machine holds the same examples.
"""

import numpy as np
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_TEST = 360
SPLIT_SEED = 0


def split_indices() -> dict[str, np.ndarray]:
  """Indices into `load_digits()` for each split: {'train': [1437], 'test': [360]}."""
  target = load_digits().target
  train, test = train_test_split(np.arange(len(target)), test_size=NUM_TEST,
                                 stratify=target, random_state=SPLIT_SEED, shuffle=True)
  return {"train": np.sort(train), "test": np.sort(test)}


class Digits(tfds.core.GeneratorBasedBuilder):
  """8×8 handwritten digits from scikit-learn, fixed stratified train/test split."""

  name = "effcomp_digits"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation="Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of "
                 "Handwritten Digits. UCI Machine Learning Repository.",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything ships with scikit-learn.
    return {split: self._generate_examples(idx) for split, idx in split_indices().items()}

  def _generate_examples(self, indices: np.ndarray):
    digits = load_digits()
    images = (digits.images.astype(np.int64) * 255 // 16).astype(np.uint8)
    for i in indices:
      yield int(i), {"image": images[i][..., None], "label": int(digits.target[i])}
