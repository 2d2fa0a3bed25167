"""SR builders (`effcomp.data.sr`): exact read-back of tiny images written in each folder
layout, grayscale/palette/alpha → 8-bit RGB, DIV2K split by number, RealSR pairs per
scale config, and the FileNotFoundError naming manual_dir and the layout.

Every test builds into its own `tmp_path` (manual_dir `tmp_path/manual`).
"""

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from effcomp.data import sr

tfds.disable_progress_bar()


def _pixels(rng, height=10, width=12, channels=3) -> np.ndarray:
  shape = (height, width, channels) if channels > 1 else (height, width)
  return rng.integers(0, 256, shape, dtype=np.uint8)


def _save(path, image, fmt="PNG"):
  path.parent.mkdir(parents=True, exist_ok=True)
  image = image if isinstance(image, Image.Image) else Image.fromarray(image)
  image.save(path, format=fmt)


def _write_rgb(folder, names, rng) -> dict:
  """Writes `<name>.png` RGB images of distinct sizes; returns {name: pixels}."""
  written = {}
  for i, name in enumerate(names):
    written[name] = _pixels(rng, height=10 + i, width=12)
    _save(folder / f"{name}.png", written[name])
  return written


def _build(cls, tmp_path, config=None) -> tfds.core.DatasetBuilder:
  builder = cls(data_dir=str(tmp_path / "data"), file_format="array_record", config=config)
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  return builder


def _read(builder, split) -> list:
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def _assert_images(examples, written: dict):
  """The examples are `written`, in name order, pixel for pixel, as uint8 [H, W, 3]."""
  assert [e["name"].decode() for e in examples] == sorted(written)
  for e in examples:
    assert e["image"].dtype == np.uint8 and e["image"].shape[2] == 3
    np.testing.assert_array_equal(e["image"], written[e["name"].decode()])


# --- registry --------------------------------------------------------------------------

def test_sr_datasets_name_every_builder_with_its_splits():
  assert set(sr.SR_DATASETS) == {"div2k", "flickr2k", "set5", "set14", "b100", "urban100",
                                 "manga109", "realsr"}
  for key, (cls, splits) in sr.SR_DATASETS.items():
    assert cls.name == f"effcomp_{key}"
    assert cls.MANUAL_DOWNLOAD_INSTRUCTIONS and "https://" in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    if issubclass(cls, sr.FolderBuilder):
      assert tuple(cls.SPLIT_FOLDERS) == splits
  assert sr.SR_DATASETS["realsr"][1] == tuple(sr.REALSR_SPLIT_FOLDERS)


# --- DIV2K, Flickr2K -------------------------------------------------------------------

@pytest.mark.parametrize("root", ["", "DIV2K/"], ids=["official_zips", "basicsr_DIV2K"])
def test_div2k_reads_back_train_and_validation_folders_exactly(tmp_path, root):
  rng = np.random.default_rng(0)
  train = _write_rgb(tmp_path / "manual" / root / "DIV2K_train_HR", ["0001", "0002", "0800"],
                     rng)
  valid = _write_rgb(tmp_path / "manual" / root / "DIV2K_valid_HR", ["0801", "0900"], rng)
  builder = _build(sr.Div2k, tmp_path)
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.splits["validation"].num_examples == 2
  _assert_images(_read(builder, "train"), train)
  _assert_images(_read(builder, "validation"), valid)


def test_div2k_from_edsr_tar_splits_by_number_so_validation_stays_out_of_train(tmp_path):
  # EDSR's DIV2K.tar has all 900 HR images in DIV2K/DIV2K_train_HR.
  folder = tmp_path / "manual" / "DIV2K" / "DIV2K_train_HR"
  written = _write_rgb(folder, ["0001", "0800", "0801", "0900"], np.random.default_rng(1))
  builder = _build(sr.Div2k, tmp_path)
  _assert_images(_read(builder, "train"), {n: written[n] for n in ("0001", "0800")})
  _assert_images(_read(builder, "validation"), {n: written[n] for n in ("0801", "0900")})


def test_div2k_without_validation_images_names_the_validation_folders(tmp_path):
  _write_rgb(tmp_path / "manual" / "DIV2K_train_HR", ["0001"], np.random.default_rng(2))
  with pytest.raises(FileNotFoundError) as e:
    _build(sr.Div2k, tmp_path)
  message = str(e.value)
  assert "split 'validation'" in message and "DIV2K_valid_HR/" in message
  assert str(tmp_path / "manual") in message and "DIV2K_valid_HR.zip" in message


def test_flickr2k_reads_back_the_train_images(tmp_path):
  written = _write_rgb(tmp_path / "manual" / "Flickr2K" / "Flickr2K_HR",
                       ["000001", "000002"], np.random.default_rng(3))
  builder = _build(sr.Flickr2k, tmp_path)
  assert list(builder.info.splits) == ["train"]
  _assert_images(_read(builder, "train"), written)


# --- benchmark test sets ---------------------------------------------------------------

@pytest.mark.parametrize("folder", ["benchmark/Set5/HR", "Set5/GTmod12", "Set5/HR",
                                    "Set5/original"])
def test_set5_reads_edsr_and_basicsr_layouts_skipping_other_files(tmp_path, folder):
  path = tmp_path / "manual" / folder
  written = _write_rgb(path, ["baby", "bird", "butterfly"], np.random.default_rng(4))
  (path / "._baby.png").write_bytes(b"macOS resource fork, not a PNG")
  (path / "readme.txt").write_text("not an image")
  (path / "LRbicx4").mkdir()
  builder = _build(sr.Set5, tmp_path)
  assert list(builder.info.splits) == ["test"]
  assert builder.info.splits["test"].num_examples == 3
  _assert_images(_read(builder, "test"), written)


def test_set5_reads_the_edsr_layout_when_both_layouts_are_there(tmp_path):
  rng = np.random.default_rng(5)
  edsr = _write_rgb(tmp_path / "manual" / "benchmark" / "Set5" / "HR", ["baby"], rng)
  _write_rgb(tmp_path / "manual" / "Set5" / "GTmod12", ["bird"], rng)
  _assert_images(_read(_build(sr.Set5, tmp_path), "test"), edsr)


@pytest.mark.parametrize("key,folder", [
    ("set14", "benchmark/Set14/HR"), ("set14", "Set14/GTmod12"),
    ("b100", "benchmark/B100/HR"), ("b100", "BSDS100/GTmod12"), ("b100", "BSD100/HR"),
    ("urban100", "benchmark/Urban100/HR"), ("urban100", "urban100/GTmod12"),
    ("manga109", "benchmark/Manga109/HR"), ("manga109", "manga109/GTmod12"),
])
def test_benchmark_sets_read_their_edsr_and_basicsr_folder_names(tmp_path, key, folder):
  written = _write_rgb(tmp_path / "manual" / folder, ["img_001", "img_002"],
                       np.random.default_rng(6))
  _assert_images(_read(_build(sr.SR_DATASETS[key][0], tmp_path), "test"), written)


def test_grayscale_palette_and_alpha_images_become_8bit_rgb_as_cv2_imread_color(tmp_path):
  rng = np.random.default_rng(7)
  folder = tmp_path / "manual" / "Set14" / "GTmod12"
  gray, gray_bmp = _pixels(rng, channels=1), _pixels(rng, channels=1)
  rgb, rgba = _pixels(rng), _pixels(rng, channels=4)
  palette = Image.fromarray(rgb).quantize(colors=16)
  _save(folder / "barbara.png", gray)
  _save(folder / "zebra.bmp", gray_bmp, fmt="BMP")
  _save(folder / "comic.png", palette)
  _save(folder / "monarch.png", rgba)
  examples = {e["name"].decode(): e["image"] for e in _read(_build(sr.Set14, tmp_path),
                                                             "test")}
  assert sorted(examples) == ["barbara", "comic", "monarch", "zebra"]
  assert all(image.shape == (10, 12, 3) for image in examples.values())
  np.testing.assert_array_equal(examples["barbara"], np.repeat(gray[..., None], 3, axis=2))
  np.testing.assert_array_equal(examples["zebra"], np.repeat(gray_bmp[..., None], 3, axis=2))
  np.testing.assert_array_equal(examples["comic"], np.asarray(palette.convert("RGB")))
  np.testing.assert_array_equal(examples["monarch"], rgba[..., :3])


def test_rgb_image_keeps_an_rgb_png_file_as_is_and_refuses_16_bit_gray(tmp_path):
  rng = np.random.default_rng(8)
  _save(tmp_path / "rgb.png", _pixels(rng))
  assert sr.rgb_image(str(tmp_path / "rgb.png")) == (tmp_path / "rgb.png").read_bytes()
  _save(tmp_path / "gray.png", _pixels(rng, channels=1))
  assert sr.rgb_image(str(tmp_path / "gray.png")).mode == "RGB"
  _save(tmp_path / "gray16.png", rng.integers(0, 65536, (4, 5), dtype=np.uint16))
  with pytest.raises(ValueError, match="gray16.png.*not an 8-bit image"):
    sr.rgb_image(str(tmp_path / "gray16.png"))


@pytest.mark.parametrize("key", ["div2k", "flickr2k", "set5", "set14", "b100", "urban100",
                                 "manga109"])
def test_hr_sets_without_files_name_manual_dir_and_every_folder_tried(tmp_path, key):
  cls = sr.SR_DATASETS[key][0]
  with pytest.raises(FileNotFoundError) as e:
    _build(cls, tmp_path)
  message = str(e.value)
  assert str(tmp_path / "manual") in message and cls.DATASET in message
  first_split = next(iter(cls.SPLIT_FOLDERS))
  assert all(f"{folder}/" in message for folder in cls.SPLIT_FOLDERS[first_split])
  assert cls.MANUAL_DOWNLOAD_INSTRUCTIONS in message


def test_set5_error_names_both_the_edsr_and_basicsr_layouts(tmp_path):
  (tmp_path / "manual" / "Set5" / "GTmod12").mkdir(parents=True)  # Empty folder.
  with pytest.raises(FileNotFoundError, match=r"benchmark/Set5/HR/ or Set5/GTmod12/"):
    _build(sr.Set5, tmp_path)


# --- RealSR ----------------------------------------------------------------------------

REALSR_FILES = {("Train", "Canon"): ["Canon_001", "Canon_002"],
                ("Train", "Nikon"): ["Nikon_001"],
                ("Test", "Canon"): ["Canon_003"],
                ("Test", "Nikon"): ["Nikon_002", "Nikon_003"]}


def _write_realsr(root, scales, rng) -> dict:
  """Writes the pairs of `REALSR_FILES` at each scale; {(scale, split, name): (hr, lr, cam)}."""
  written = {}
  for (folder, camera), names in REALSR_FILES.items():
    split = {"Train": "train", "Test": "test"}[folder]
    for scale in scales:
      for i, name in enumerate(names):
        hr, lr = _pixels(rng, height=8 + i), _pixels(rng, height=8 + i)  # V3: same size.
        _save(root / camera / folder / str(scale) / f"{name}_HR.png", hr)
        _save(root / camera / folder / str(scale) / f"{name}_LR{scale}.png", lr)
        written[(scale, split, name)] = (hr, lr, camera)
  return written


@pytest.mark.parametrize("root", ["RealSR(V3)", "RealSR (V3)"])
def test_realsr_pairs_hr_and_lr_by_name_for_each_scale_config(tmp_path, root):
  written = _write_realsr(tmp_path / "manual" / root, (2, 4), np.random.default_rng(9))
  assert sr.RealSR(data_dir=str(tmp_path / "data")).builder_config.scale == 4  # Default.
  for scale in (2, 4):
    builder = _build(sr.RealSR, tmp_path, config=f"x{scale}")
    for split in ("train", "test"):
      examples = _read(builder, split)
      expected = sorted((camera, name) for (s, sp, name), (_, _, camera) in written.items()
                        if s == scale and sp == split)
      assert [(e["camera"].decode(), e["name"].decode()) for e in examples] == expected
      for e in examples:
        hr, lr, _ = written[(scale, split, e["name"].decode())]
        assert e["hr"].dtype == np.uint8 and e["lr"].dtype == np.uint8
        np.testing.assert_array_equal(e["hr"], hr)
        np.testing.assert_array_equal(e["lr"], lr)


def test_realsr_scale_without_files_names_its_folder(tmp_path):
  _write_realsr(tmp_path / "manual" / "RealSR(V3)", (4,), np.random.default_rng(10))
  with pytest.raises(FileNotFoundError) as e:
    _build(sr.RealSR, tmp_path, config="x3")
  assert str(tmp_path / "manual" / "RealSR(V3)" / "Canon" / "Train" / "3") in str(e.value)
  assert "_LR3.png" in str(e.value)


def test_realsr_hr_without_its_lr_is_named(tmp_path):
  root = tmp_path / "manual" / "RealSR(V3)"
  _write_realsr(root, (4,), np.random.default_rng(11))
  (root / "Nikon" / "Test" / "4" / "Nikon_002_LR4.png").unlink()
  with pytest.raises(FileNotFoundError, match=r"Nikon_002_HR.png .* has no partner"):
    _build(sr.RealSR, tmp_path, config="x4")


def test_realsr_without_files_names_manual_dir_and_layout(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    _build(sr.RealSR, tmp_path)
  message = str(e.value)
  assert str(tmp_path / "manual" / "RealSR(V3)") in message
  assert "<Canon|Nikon>/Train/<scale>/<name>_HR.png" in message
  assert "https://github.com/csjcai/RealSR" in message
