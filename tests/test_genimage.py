"""GenImage's degraded-image task and CNNSpot's augmentation against their definitions."""

import io
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs.genimage_detect import DETECTORS
from effcomp import config as config_lib
from effcomp import runs
from effcomp.data import degradations, genimage, sources
from effcomp.runs import detection, upscale
from effcomp.runs import genimage as mini
from effcomp.tasks import classification, sr
from tests.conftest import run_python, train_losses_on_one_and_eight_devices


def _photo(side=224, channels=3):
  """A smooth image with edges (blur and JPEG have something to remove)."""
  y, x = np.mgrid[:side, :side] / side
  base = 127 + 60 * np.sin(12 * x) * np.cos(9 * y) + 60 * ((x > 0.5) ^ (y > 0.3))
  rgb = np.stack([base, base[::-1], base[:, ::-1]][:channels], axis=-1)
  return np.clip(rgb, 0, 255).astype(np.uint8)


def test_gaussian_blur_is_a_convolution_with_the_reference_kernel():
  image = np.random.default_rng(0).uniform(size=(20, 24, 3))
  sigma = 1.5
  radius = int(4 * sigma + 0.5)  # scipy's truncate=4
  kernel = degradations.bivariate_gaussian(2 * radius + 1, sigma)
  padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
  want = np.stack([sum(kernel[i, j] * padded[i:i + 20, j:j + 24, c]
                       for i in range(2 * radius + 1) for j in range(2 * radius + 1))
                   for c in range(3)], axis=-1)
  np.testing.assert_allclose(degradations.gaussian_blur(image, sigma), want, atol=1e-4)
  with pytest.raises(ValueError, match="sigma=0"):
    degradations.gaussian_blur(image, 0)


def test_degradations_follow_the_paper_levels():
  image = _photo()
  err = lambda name: float(np.mean(np.abs(genimage.degrade(image, name).astype(float) - image)))
  # JPEG: lower quality, larger error; the output is exactly PIL's JPEG at that quality.
  assert 0 < err("JPEG (q=65)") < err("JPEG (q=30)")
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=30)
  np.testing.assert_array_equal(genimage.degrade(image, "JPEG (q=30)"),
                                np.asarray(Image.open(buffer)))
  # Blur: at 224 pixels σ is the paper's; on a 32-pixel image it scales to σ·32/224.
  np.testing.assert_array_equal(genimage.degrade(image, "Blur (σ=3)"), np.clip(np.round(
      degradations.gaussian_blur(image / 255, 3.0) * 255), 0, 255).astype(np.uint8))
  small = _photo(32)
  np.testing.assert_array_equal(genimage.degrade(small, "Blur (σ=5)"), np.clip(np.round(
      degradations.gaussian_blur(small / 255, 5 * 32 / 224) * 255), 0, 255).astype(np.uint8))
  assert 0 < err("Blur (σ=3)") < err("Blur (σ=5)")
  # Low resolution: same size back, information of a 112- / 64-pixel image only.
  assert genimage.degrade(image, "LR (64)").shape == image.shape
  assert 0 < err("LR (112)") < err("LR (64)")
  low = genimage.degrade(image, "LR (64)")
  spectrum = np.abs(np.fft.fft2(low[..., 0] - low[..., 0].mean()))
  cutoff = math.ceil(64 / 2) + 4  # beyond 64-pixel Nyquist little energy is left
  high = spectrum[cutoff:-cutoff, cutoff:-cutoff].sum() / spectrum.sum()
  orig = np.abs(np.fft.fft2(image[..., 0] - image[..., 0].mean()))
  assert high < 0.5 * orig[cutoff:-cutoff, cutoff:-cutoff].sum() / orig.sum()
  gray = _photo(32, channels=1)  # grayscale images (the digits) work too
  for name in genimage.DEGRADATIONS:
    assert genimage.degrade(gray, name).shape == gray.shape
  with pytest.raises(ValueError, match="'JPEG'"):
    genimage.degrade(image, "JPEG")


def test_cnnspot_augment_applies_blur_then_jpeg_with_their_probabilities():
  image = _photo(32)
  np.testing.assert_array_equal(
      genimage.cnnspot_augment(image, np.random.default_rng(0), blur_prob=0, jpeg_prob=0),
      image)
  # Both on, fixed draws: the blur of the drawn σ, then PIL's JPEG at the drawn quality.
  rng = np.random.default_rng(3)
  got = genimage.cnnspot_augment(image, rng, blur_prob=1, jpeg_prob=1)
  draws = np.random.default_rng(3)
  draws.random()
  sigma = draws.uniform(0.0, 3.0)
  draws.random()
  quality = int(draws.integers(30, 101))
  blurred = np.clip(np.round(degradations.gaussian_blur(image / 255, sigma) * 255), 0, 255)
  want = np.round(degradations.jpeg_compress(blurred / 255, quality) * 255).astype(np.uint8)
  np.testing.assert_array_equal(got, want)
  # Each is applied to about half of the images with the defaults.
  rng = np.random.default_rng(1)
  changed = [not np.array_equal(genimage.cnnspot_augment(image, rng), image) for _ in range(200)]
  assert 0.6 < np.mean(changed) < 0.9  # 1 − 0.5² = 0.75 touched by blur or JPEG


def test_classification_cnnspot_transform_is_the_augment_then_a_flip():
  images = np.stack([_photo(16), _photo(16)[::-1], _photo(16)[:, ::-1]])
  batch = {"image": images, "label": np.array([0, 1, 1])}
  got = classification.cnnspot_flip(batch, np.random.default_rng(5))
  rng = np.random.default_rng(5)
  want = np.stack([genimage.cnnspot_augment(image, rng) for image in images])
  flip = rng.random(3) < 0.5
  want = np.where(flip[:, None, None, None], want[:, :, ::-1], want)
  np.testing.assert_array_equal(got["image"], want)
  np.testing.assert_array_equal(got["label"], batch["label"])


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
  """A mini-GenImage tree, generator 'ar': 'ai' = blurred noise, 'nature' = sharp noise
  (16×16 grayscale PNGs, 16 of each per split), learnable in a few steps."""
  root = tmp_path_factory.mktemp("mini")
  rng = np.random.default_rng(0)
  for folder in ("train", "val"):
    for label in ("ai", "nature"):
      path = root / "effcomp_ar" / folder / label
      path.mkdir(parents=True)
      for i in range(16):
        noise = rng.uniform(0, 255, (16, 16, 1))
        if label == "ai":
          noise = degradations.gaussian_blur(noise, 1.5)
        Image.fromarray(noise[..., 0].astype(np.uint8)).save(path / f"{i:03d}.png")
  return str(root)


def _detect_config(detector, root, tmp_path, **overrides):
  return config_lib.load(f"configs/genimage_detect.py:detector={detector},steps=6", **{
      "data.manual_dir": root, "data.data_dir": str(tmp_path / "data"),
      "train.batch_size": 8, "eval.batch_size": 32, "train.progress_bar": False,
      "train.log_every": 1, "checkpoint.async_save": False, **overrides})


@pytest.mark.parametrize("detector", sorted(DETECTORS))
@pytest.mark.parametrize("size", ["cpu", "paper"])
def test_every_detector_config_builds_its_model(detector, size):
  config = config_lib.load(f"configs/genimage_detect.py:detector={detector},size={size}")
  model = runs.build_model(config.model, "float32")
  side = 224 if size == "paper" else 16
  logits = jax.eval_shape(lambda x: model.init_with_output(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)[0],
      jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32))
  assert logits.shape == (2, 2)
  assert config.data.name == "genimage_mini_ar" and config.data.eval_split == "validation"
  with pytest.raises(ValueError, match="generator='sd3'"):
    config_lib.load("configs/genimage_detect.py:generator=sd3")


def test_cnnspot_trains_on_a_mini_genimage_tree(mini_root, tmp_path):
  config = _detect_config("cnnspot", mini_root, tmp_path)
  assert config.task.augment == "cnnspot"
  summary = runs.train(config, str(tmp_path / "run"))
  assert 0.0 <= summary["eval"]["accuracy"] <= 1.0 and np.isfinite(summary["eval"]["loss"])
  # The evaluation of experiments/evaluate_detection.py: its accuracy is the task's.
  run = runs.open(str(tmp_path / "run"))
  probs, labels = detection.scores(run, "genimage_mini_ar")
  assert probs.shape == labels.shape == (32,) and np.all((probs >= 0) & (probs <= 1))
  rows = detection.evaluate(run, ["genimage_mini_ar"], degradations=True)
  assert len(rows) == 1 + len(genimage.DEGRADATIONS)
  assert rows["genimage_mini_ar"]["accuracy"] == pytest.approx(summary["eval"]["accuracy"])
  assert 0 <= rows["genimage_mini_ar | JPEG (q=30)"]["auc"] <= 1
  out = tmp_path / "eval"
  run_python(["experiments/evaluate_detection.py", f"--workdir={out}",
              f"--detector=ar={tmp_path / 'run'}", "--test=genimage_mini_ar"])
  written = json.loads((out / "detection.json").read_text())["results"]["ar"]
  assert written["genimage_mini_ar"] == pytest.approx(rows["genimage_mini_ar"])
  assert Image.open(out / "cross_generator_accuracy.png").size[0] > 0


def test_detection_summary_against_hand_computed_values():
  probs, labels = np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 1])
  # Accuracy at 0.5: 0.9 ✓, 0.2 ✓, 0.6 ✗, 0.4 ✗. AUC: of the 4 (ai, nature) pairs 3 are
  # ordered. AP: recall 0.5 at precision 1 (0.9), recall 1 at precision 2/3 (0.4).
  got = detection.summarize(probs, labels)
  assert got == pytest.approx({"accuracy": 0.5, "auc": 0.75, "ap": 0.5 + 0.5 * 2 / 3})
  assert np.isnan(detection.summarize(probs, np.ones(4, int))["auc"])


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["gramnet", "f3net", "spec", "swin"])
def test_detector_eight_device_step_equals_one_device(mini_root, tmp_path, detector):
  one, eight = train_losses_on_one_and_eight_devices(
      tmp_path, f"configs/genimage_detect.py:detector={detector},steps=3",
      f"--config.data.manual_dir={mini_root}", f"--config.data.data_dir={tmp_path / 'data'}",
      "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.eval_every=0")
  assert len(one) == len(eight) == 3
  np.testing.assert_allclose(one, eight, rtol=2e-5)


def test_sr_generator_writes_upscaled_patches_beside_hr_patches(tmp_path, data_dir):
  """mini-GenImage from a super-resolution run: `ai` is the run's upscaling of each `nature`
  patch's LR, both patch_size², and the dataset reads them."""
  del data_dir
  config = config_lib.load("configs/sr_photos.py:model=edsr,steps=1", **{
      "model.n_resblocks": 1, "model.n_feats": 8, "task.patch_size": 24, "task.eval_patch": 24,
      "train.batch_size": 2, "eval.batch_size": 2, "train.progress_bar": False,
      "checkpoint.async_save": False})
  runs.train(config, str(tmp_path / "edsr"))
  run = runs.open(str(tmp_path / "edsr"))
  root = str(tmp_path / "mini")
  provenance = mini.write_sr_generator(run, "diffusion_sr", root, num_train=3, num_val=2)
  assert provenance["task"] == "sr" and provenance["patch_size"] == 24
  folder = tmp_path / "mini" / "effcomp_diffusion_sr"
  upscale_fn, _ = upscale.upscaler(run)
  for split, count in (("train", 3), ("val", 2)):
    fake = sorted((folder / split / "ai").iterdir())
    real = sorted((folder / split / "nature").iterdir())
    assert len(fake) == len(real) == count
    for f, r in zip(fake, real):
      f, r = np.asarray(Image.open(f)), np.asarray(Image.open(r))
      assert f.shape == r.shape == (24, 24, 3) and not np.array_equal(f, r)
  # The first training pair, redrawn as the writer draws it: `ai` is the upscaled LR.
  c = config_lib.from_workdir(str(tmp_path / "edsr")).task
  rng = np.random.default_rng(0)
  source = sources.get_source(config.data.name, config.data.train_split)
  index = int(rng.integers(0, len(source), 3)[0])
  with c.unlocked():
    c.augment = False
  pair = sr.random_pair(np.asarray(source[index]["image"]), rng, c)
  np.testing.assert_array_equal(np.asarray(Image.open(folder / "train" / "nature" / "000000.png")),
                                pair["hr"])
  np.testing.assert_array_equal(np.asarray(Image.open(folder / "train" / "ai" / "000000.png")),
                                upscale_fn(pair["lr"]))
  with pytest.raises(FileExistsError):
    mini.write_sr_generator(run, "diffusion_sr", root, num_train=1, num_val=1)
  with pytest.raises(ValueError, match="expected a run of diffusion, ar_image"):
    mini.write_generator(run, "dit", str(tmp_path / "other"), num_train=1, num_val=1)
