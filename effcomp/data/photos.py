"""Colour photographs that ship inside the scikit-image and scikit-learn wheels.

A tiny, download-free image set for super-resolution and image-model smoke runs: every
RGB *photograph* that `skimage.data` loads without `pooch` (i.e. from files inside the
wheel) plus `sklearn.datasets.load_sample_images()`. Measured with scikit-image 0.26
and scikit-learn 1.9:

  name                  loader                                 H×W
  astronaut             skimage.data.astronaut()               512×512
  chelsea               skimage.data.chelsea()                 300×451
  coffee                skimage.data.coffee()                  400×600
  hubble_deep_field     skimage.data.hubble_deep_field()       872×1000
  immunohistochemistry  skimage.data.immunohistochemistry()    512×512
  motorcycle_left       skimage.data.stereo_motorcycle()[0]    500×741
  retina                skimage.data.retina()                  1411×1411
  rocket                skimage.data.rocket()                  427×640
  china                 sklearn load_sample_images().images[0] 427×640
  flower                sklearn load_sample_images().images[1] 427×640

Left out on purpose: grayscale photos (camera, moon, coins, brick, grass, gravel, …) —
copied to three channels they would have zero chroma, unlike every RGB test image;
synthetic images (colorwheel, logo, checkerboard); `cat` (the same image as `chelsea`);
the right view of the stereo pair (nearly the left view); and the images that need a
`pooch` download (brain, cells3d, eagle, kidney, lily, skin, …).

Examples: `image` uint8 [H, W, 3] (stored as lossless PNG), `name` text.

Splits (fixed by name): `test` = astronaut, coffee, flower (3 images);
`train` = the other 7.
"""

import numpy as np
import skimage.data
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_sample_images

TEST_NAMES = ("astronaut", "coffee", "flower")


def _skimage(name: str):
  def load():
    return getattr(skimage.data, name)()
  return load


def _stereo_left():
  return skimage.data.stereo_motorcycle()[0]


def _sklearn(index: int):
  def load():
    return load_sample_images().images[index]  # images: china.jpg, flower.jpg
  return load


# name → loader returning uint8 [H, W, 3]. Order is irrelevant: TFDS orders by key.
LOADERS = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "motorcycle_left": _stereo_left,
    "retina": _skimage("retina"),
    "rocket": _skimage("rocket"),
    "china": _sklearn(0),
    "flower": _sklearn(1),
}


def split_names() -> dict[str, list[str]]:
  """Image names in each split: {'train': [7 names], 'test': [3 names]}."""
  return {"train": sorted(set(LOADERS) - set(TEST_NAMES)), "test": sorted(TEST_NAMES)}


class Photos(tfds.core.GeneratorBasedBuilder):
  """Ten bundled RGB photographs, fixed train/test split by name."""

  name = "effcomp_photos"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "name": tfds.features.Text(),
        }),
        homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything ships with scikit-image and scikit-learn.
    return {split: self._generate_examples(names) for split, names in split_names().items()}

  def _generate_examples(self, names: list[str]):
    for name in names:
      image = np.asarray(LOADERS[name]())
      if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"photo {name!r}: expected uint8 [H, W, 3], got "
                         f"{image.dtype} {image.shape}")
      # A PIL image is PNG-encoded by PIL; a numpy array would need TensorFlow.
      yield name, {"image": Image.fromarray(image), "name": name}
