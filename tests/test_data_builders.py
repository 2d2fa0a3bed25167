"""TFDS builders and `get_source`: sizes, dtypes, fixed splits, manual_dir errors,
exact read-back of fake CIFAR-10 / ImageNet files, concurrent builds.

Every test builds into its own `tmp_path`, so tests are hermetic under pytest-xdist.
"""

import multiprocessing
import os
import pickle
import tarfile

import numpy as np
from PIL import Image
import pytest

from effcomp.data import cifar10
from effcomp.data import digits
from effcomp.data import python_docs
from effcomp.data import sources


def _all(source) -> list:
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("digits"))
  sources.prepared_builder("digits", data_dir=path)
  return path


# --- digits ----------------------------------------------------------------------------

def test_digits_has_1437_train_and_360_test_examples(digits_dir):
  assert len(sources.get_source("digits", "train", data_dir=digits_dir)) == 1437
  assert len(sources.get_source("digits", "test", data_dir=digits_dir)) == 360
  assert sources.num_classes("digits", data_dir=digits_dir) == 10


def test_digits_examples_are_uint8_8x8x1_with_labels_0_to_9_and_ink(digits_dir):
  examples = _all(sources.get_source("digits", "test", data_dir=digits_dir))
  images = np.stack([e["image"] for e in examples])
  labels = np.array([e["label"] for e in examples])
  assert images.shape == (360, 8, 8, 1) and images.dtype == np.uint8
  assert images.max() == 255 and (images.reshape(360, -1).max(axis=1) > 0).all()
  # Stratified: every class has 36 ± 1 test examples.
  assert set(labels) == set(range(10))
  assert np.abs(np.bincount(labels, minlength=10) - 36).max() <= 1


def test_digits_pixels_are_sklearn_pixels_times_255_over_16(digits_dir):
  from sklearn.datasets import load_digits
  images = (load_digits().images.astype(int) * 255 // 16).astype(np.uint8)
  expected = sorted(images[i].tobytes() for i in digits.split_indices()["test"])
  test = sources.get_source("digits", "test", data_dir=digits_dir)
  assert sorted(e["image"].tobytes() for e in _all(test)) == expected


def test_digits_split_indices_partition_all_1797_images():
  split = digits.split_indices()
  assert len(np.intersect1d(split["train"], split["test"])) == 0
  np.testing.assert_array_equal(np.union1d(split["train"], split["test"]), np.arange(1797))


def test_digits_builds_identically_into_two_data_dirs(digits_dir, tmp_path):
  again = sources.get_source("digits", "train", data_dir=str(tmp_path))
  first = sources.get_source("digits", "train", data_dir=digits_dir)
  for i in (0, 1, 2, 1436):
    np.testing.assert_array_equal(again[i]["image"], first[i]["image"])
    assert again[i]["label"] == first[i]["label"]


def _len_of_digits_train(data_dir):
  return len(sources.get_source("digits", "train", data_dir=data_dir))


def test_two_processes_building_digits_at_once_both_succeed(tmp_path):
  with multiprocessing.get_context("spawn").Pool(2) as pool:
    lengths = pool.map(_len_of_digits_train, [str(tmp_path)] * 2)
  assert lengths == [1437, 1437]


# --- photos, python_docs ---------------------------------------------------------------

def test_photos_are_rgb_uint8_and_split_by_name(tmp_path):
  train = _all(sources.get_source("photos", "train", data_dir=str(tmp_path)))
  test = _all(sources.get_source("photos", "test", data_dir=str(tmp_path)))
  assert sorted(e["name"] for e in test) == [b"astronaut", b"coffee", b"flower"]
  assert len(train) == 7 and not {e["name"] for e in train} & {e["name"] for e in test}
  for e in train + test:
    assert e["image"].dtype == np.uint8 and e["image"].ndim == 3
    assert e["image"].shape[2] == 3 and min(e["image"].shape[:2]) >= 256
    assert e["image"].std() > 10  # A photo, not a blank.


def test_python_docs_splits_are_disjoint_nonempty_english(tmp_path):
  doc_ids = {}
  for split in ("train", "validation", "test"):
    examples = _all(sources.get_source("python_docs", split, data_dir=str(tmp_path)))
    assert examples, split
    doc_ids[split] = {e["doc_id"].decode() for e in examples}
    assert all(python_docs.split_of(d) == split for d in doc_ids[split])
    text = b" ".join(e["text"] for e in examples).decode("utf-8")
    assert " the " in text and " of " in text
  assert not doc_ids["train"] & doc_ids["validation"]
  assert not doc_ids["train"] & doc_ids["test"]
  assert not doc_ids["validation"] & doc_ids["test"]
  assert len(doc_ids["train"]) > 10 * len(doc_ids["test"])
  assert "topic/assert" in set.union(*doc_ids.values())
  assert "stdlib/json.dumps" in set.union(*doc_ids.values())


def test_python_docs_split_of_is_a_fixed_function_of_the_doc_id():
  # sha256-based: the same on every machine and for every PYTHONHASHSEED.
  assert [python_docs.split_of(f"doc{i}") for i in (4, 5, 6, 38, 39)] == [
      "train", "test", "validation", "validation", "test"]
  counts = {s: 0 for s in python_docs.SPLIT_PERCENT}
  for i in range(4000):
    counts[python_docs.split_of(f"doc{i}")] += 1
  assert 3500 < counts["train"] < 3700 and 120 < counts["test"] < 280


# --- cifar10 (manual_dir) --------------------------------------------------------------

def _fake_cifar_batches(rng) -> dict:
  """{batch file name: CIFAR pickle dict with 3 random records}."""
  return {name: {b"batch_label": name.encode(),
                 b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                 b"labels": [int(x) for x in rng.integers(0, 10, 3)],
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(3)]}
          for name in cifar10.SPLIT_FILES["train"] + cifar10.SPLIT_FILES["test"]}


def _write_fake_cifar(manual_dir, batches, as_archive: bool):
  folder = manual_dir / cifar10.FOLDER
  folder.mkdir(parents=True)
  for name, batch in batches.items():
    (folder / name).write_bytes(pickle.dumps(batch))
  if as_archive:
    with tarfile.open(manual_dir / cifar10.ARCHIVE, "w:gz") as tar:
      tar.add(folder, arcname=cifar10.FOLDER)
    for f in folder.iterdir():
      f.unlink()
    folder.rmdir()


def _cifar_records(batches, names) -> list:
  """Sorted (image bytes [32, 32, 3] HWC, label) written in `names`."""
  records = []
  for name in names:
    rows = batches[name][b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    records += [(r.tobytes(), label) for r, label in zip(rows, batches[name][b"labels"])]
  return sorted(records)


def test_cifar10_without_files_names_manual_dir_and_archive(tmp_path):
  manual_dir = tmp_path / "manual"
  with pytest.raises(FileNotFoundError) as e:
    sources.get_source("cifar10", "train", data_dir=str(tmp_path / "data"),
                       manual_dir=str(manual_dir))
  assert str(manual_dir) in str(e.value) and "cifar-10-python.tar.gz" in str(e.value)
  assert "https://www.cs.toronto.edu/~kriz/" in str(e.value)


@pytest.mark.parametrize("as_archive", [False, True], ids=["folder", "tar_gz"])
def test_cifar10_reads_back_exactly_the_fake_batches(tmp_path, as_archive):
  batches = _fake_cifar_batches(np.random.default_rng(0))
  _write_fake_cifar(tmp_path / "manual", batches, as_archive)
  kwargs = dict(data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"))
  for split, names in cifar10.SPLIT_FILES.items():
    examples = _all(sources.get_source("cifar10", split, **kwargs))
    assert all(e["image"].shape == (32, 32, 3) and e["image"].dtype == np.uint8
               for e in examples)
    got = sorted((e["image"].tobytes(), e["label"]) for e in examples)
    assert got == _cifar_records(batches, names)
  assert sources.info("cifar10", **kwargs).features["label"].names[0] == "airplane"


# --- imagenet (manual_dir) -------------------------------------------------------------

def _write_fake_imagenet(root, rng) -> dict:
  """Writes train/ and val/ with 2 classes; returns {(split, file name): (pixels, wnid)}."""
  written = {}
  layout = {"train": {"n01440764": 3, "n01443537": 2}, "val": {"n01440764": 1,
                                                               "n01443537": 1}}
  for folder, classes in layout.items():
    split = {"train": "train", "val": "validation"}[folder]
    for wnid, count in classes.items():
      (root / folder / wnid).mkdir(parents=True)
      for i in range(count):
        name = f"{wnid}_{i}.JPEG"
        pixels = rng.integers(0, 256, (12 + i, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / folder / wnid / name, format="JPEG")
        with Image.open(root / folder / wnid / name) as decoded:
          written[(split, name)] = (np.asarray(decoded), wnid)
  # Odd files of the real train set: CMYK and grayscale JPEGs, a PNG named .JPEG.
  odd = Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
  odd.convert("CMYK").save(root / "train" / "n01443537" / "cmyk.JPEG", format="JPEG")
  odd.convert("L").save(root / "train" / "n01443537" / "gray.JPEG", format="JPEG")
  odd.save(root / "train" / "n01443537" / "png.JPEG", format="PNG")
  (root / "train" / "n01443537" / "notes.txt").write_text("not an image")
  return written


def test_imagenet_without_files_names_manual_dir(tmp_path):
  manual_dir = tmp_path / "manual"
  with pytest.raises(FileNotFoundError) as e:
    sources.get_source("imagenet", "train", data_dir=str(tmp_path / "data"),
                       manual_dir=str(manual_dir))
  assert str(manual_dir / "train") in str(e.value) and "ILSVRC2012_img_train.tar" in str(e.value)


def test_imagenet_reads_back_the_fake_class_folders(tmp_path):
  written = _write_fake_imagenet(tmp_path / "manual", np.random.default_rng(0))
  kwargs = dict(data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"))
  names = sources.info("imagenet", **kwargs).features["label"].names
  assert names == ["n01440764", "n01443537"]
  got = {}
  for split in ("train", "validation"):
    for e in _all(sources.get_source("imagenet", split, **kwargs)):
      got[(split, e["file_name"].decode())] = (e["image"], names[e["label"]])
  odd = ("cmyk.JPEG", "gray.JPEG", "png.JPEG")
  assert set(got) == set(written) | {("train", name) for name in odd}
  for key, (pixels, wnid) in written.items():
    np.testing.assert_array_equal(got[key][0], pixels)  # The original JPEG bytes.
    assert got[key][1] == wnid
  for name in odd:  # Converted to RGB JPEGs when built.
    assert got[("train", name)][0].shape == (10, 10, 3)


# --- get_source arguments --------------------------------------------------------------

def test_get_source_unknown_name_lists_the_datasets(tmp_path):
  with pytest.raises(ValueError, match=r"name='mnist'.*'cifar10'.*'digits'.*'imagenet'"):
    sources.get_source("mnist", "train", data_dir=str(tmp_path))


def test_get_source_unknown_split_lists_the_splits_before_building(tmp_path):
  with pytest.raises(ValueError, match=r"split='val'.*'train', 'validation', 'test'"):
    sources.get_source("python_docs", "val", data_dir=str(tmp_path))
  assert not os.listdir(tmp_path)


def test_get_source_accepts_tfds_slices(digits_dir):
  assert len(sources.get_source("digits", "train[:10]", data_dir=digits_dir)) == 10
  assert len(sources.get_source("digits", "train+test", data_dir=digits_dir)) == 1797


# --- GenImage (manual_dir) -------------------------------------------------------------

def _write_fake_genimage(root, rng) -> dict:
  """SD 1.4 under its archive folder name: PNG 'ai' and JPEG 'nature' images, plus odd
  files; returns {(split, label, file name): pixels} of the RGB ones."""
  written = {}
  for folder in ("train", "val"):
    split = {"train": "train", "val": "validation"}[folder]
    for label, fmt in (("ai", "PNG"), ("nature", "JPEG")):
      path = root / "imagenet_ai_0419_sdv4" / folder / label
      path.mkdir(parents=True)
      for i in range(2):
        name = f"{label}_{i}.{fmt.lower()}"
        Image.fromarray(rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)).save(
            path / name, format=fmt)
        with Image.open(path / name) as decoded:
          written[(split, label, name)] = np.asarray(decoded)
  ai = root / "imagenet_ai_0419_sdv4" / "train" / "ai"
  Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)).save(ai / "rgba.png")
  Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(ai / "gray.png")
  (ai / "broken.png").write_bytes((ai / "ai_0.png").read_bytes()[:60])  # truncated
  (ai / "notes.txt").write_text("not an image")
  return written


def test_genimage_reads_back_a_generator_tree_without_reencoding(tmp_path):
  written = _write_fake_genimage(tmp_path / "manual", np.random.default_rng(0))
  kwargs = dict(data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"))
  assert sources.info("genimage_sd14", **kwargs).features["label"].names == ["nature", "ai"]
  got = {}
  for split in ("train", "validation"):
    for e in _all(sources.get_source("genimage_sd14", split, **kwargs)):
      assert e["generator"] == b"sd14"
      got[(split, ["nature", "ai"][e["label"]], e["file_name"].decode())] = e["image"]
  converted = {("train", "ai", "rgba.png"), ("train", "ai", "gray.png")}
  assert set(got) == set(written) | converted  # the broken file and the .txt are skipped
  for key, pixels in written.items():  # PNGs exactly, JPEGs as their own bytes decode
    np.testing.assert_array_equal(got[key], pixels)
  for key in converted:
    assert got[key].shape == (8, 8, 3)


def test_genimage_without_files_names_the_expected_folders(tmp_path):
  (tmp_path / "manual" / "GLIDE" / "train" / "ai").mkdir(parents=True)
  with pytest.raises(FileNotFoundError) as e:
    sources.get_source("genimage_glide", "train", data_dir=str(tmp_path / "data"),
                       manual_dir=str(tmp_path / "manual"))
  assert "GLIDE" in str(e.value) and "train/nature" in str(e.value) and "ai" in str(e.value)
  with pytest.raises(FileNotFoundError, match="'Midjourney' or 'imagenet_midjourney'"):
    sources.get_source("genimage_midjourney", "train", data_dir=str(tmp_path / "data"),
                       manual_dir=str(tmp_path / "manual"))
