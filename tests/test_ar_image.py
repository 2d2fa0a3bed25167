"""Autoregressive image generation: 2-D RoPE and top-k in the Llama stack, guided KV-cached
generation (effcomp.models.lm.guided_generate), the ar_image task's sequence layout, VF
prompts and loss masking, and a tokenizer → AR model → sample grid run."""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from effcomp import config as config_lib
from effcomp import runs
from effcomp.data.pipeline import ArraySource
from effcomp.models.lm import generate, llama
from effcomp.models.lm.guided_generate import cfg_logits, generate_guided
from effcomp.data import sources
from effcomp.runs import genimage, sample
from effcomp.tasks import ar_image

from tests.conftest import train_losses_on_one_and_eight_devices

RUN = {"train.progress_bar": False, "train.eval_every": 0, "checkpoint.async_save": False}
TINY = llama.Llama(vocab_size=24, num_layers=2, embed_dim=32, num_heads=4, rope_2d=True)


def test_rope_2d_rotates_halves_by_row_and_column():
  pos = jnp.array([[[2, 5]]])
  cos, sin = llama.rope_angles_2d(pos, 8, 100.0)
  inv = 1.0 / 100.0 ** (np.arange(0, 4, 2) / 4)  # [1, 0.1]
  angles = np.concatenate([2 * inv, 5 * inv])
  np.testing.assert_allclose(cos[0, 0], np.cos(np.concatenate([angles, angles])), rtol=1e-6)
  np.testing.assert_allclose(sin[0, 0], np.sin(np.concatenate([angles, angles])), rtol=1e-6)
  # Relative: q at (r, c) against k at (r', c') depends on the offsets only.
  q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))
  def score(pq, pk):
    cq, sq = llama.rope_angles_2d(jnp.array([[pq]]), 8, 100.0)
    ck, sk = llama.rope_angles_2d(jnp.array([[pk]]), 8, 100.0)
    return float(jnp.sum(llama.apply_rope(q, cq, sq) * llama.apply_rope(k, ck, sk)))
  assert score((3, 4), (1, 1)) == pytest.approx(score((5, 7), (3, 4)), rel=1e-5)
  assert score((3, 4), (1, 1)) != pytest.approx(score((3, 4), (1, 2)), rel=1e-3)
  with pytest.raises(ValueError, match="multiple of 4"):
    llama.rope_angles_2d(pos, 6, 100.0)
  with pytest.raises(ValueError, match="pass positions"):
    TINY.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))


def test_top_k_keeps_only_the_k_most_likely():
  logits = jnp.log(jnp.array([[0.1, 0.4, 0.2, 0.3]] * 512))
  draws = generate.sample_logits(logits, jax.random.key(0), 1.0, top_k=2)
  assert set(np.unique(draws)) == {1, 3}
  assert np.mean(draws == 1) == pytest.approx(0.4 / 0.7, abs=0.06)
  np.testing.assert_array_equal(generate.sample_logits(logits[:3], jax.random.key(0), 1.0,
                                                       top_k=1), [1, 1, 1])
  with pytest.raises(ValueError, match="top_k=-1"):
    generate.sample_logits(logits, jax.random.key(0), 1.0, top_k=-1)


def _params():
  tokens = jnp.zeros((1, 6), jnp.int32)
  return TINY.init(jax.random.key(1), tokens, jnp.zeros((1, 6, 2), jnp.int32))["params"]


def test_cfg_on_logits_against_a_hand_computation():
  cond, uncond = jnp.array([[1.0, 3.0, -2.0]]), jnp.array([[0.5, 1.0, 1.0]])
  np.testing.assert_allclose(cfg_logits(cond, uncond, 2.0), [[1.5, 5.0, -5.0]])
  np.testing.assert_allclose(cfg_logits(cond, uncond, 1.0), cond)
  # Greedy guided decoding of one token: argmax over ids < vocab_limit of the guided logits.
  params = _params()
  prefix, null = jnp.array([[20, 3], [21, 4]]), jnp.array([[23, 3], [23, 4]])
  positions = jnp.asarray(ar_image.grid_positions(1, 4))[:3]
  out = generate_guided(TINY, params, prefix, num_tokens=1, rng=jax.random.key(0),
                        null_prefix=null, cfg_scale=3.0, positions=positions, temperature=0.0,
                        vocab_limit=16)
  pos = jnp.broadcast_to(positions[:2], (2, 2, 2))
  c = TINY.apply({"params": params}, prefix, pos)[:, -1]
  u = TINY.apply({"params": params}, null, pos)[:, -1]
  want = np.argmax(np.asarray(u + 3.0 * (c - u))[:, :16], axis=-1)
  np.testing.assert_array_equal(out[:, 0], want)


@pytest.mark.parametrize("guided", [False, True])
def test_sampling_with_the_kv_cache_equals_sampling_without_it(guided):
  params = _params()
  prefix = jnp.array([[20, 1, 2], [21, 5, 6], [22, 7, 8]])
  positions = jnp.asarray(ar_image.grid_positions(2, 9))
  kwargs = dict(num_tokens=9, rng=jax.random.key(3), positions=positions, temperature=1.0,
                top_k=10, vocab_limit=16, cfg_scale=1.5,
                null_prefix=jnp.array([[23, 1, 2], [23, 5, 6], [23, 7, 8]]) if guided else None)
  cached = generate_guided(TINY, params, prefix, use_cache=True, **kwargs)
  full = generate_guided(TINY, params, prefix, use_cache=False, **kwargs)
  assert cached.shape == (3, 9) and int(cached.max()) < 16
  np.testing.assert_array_equal(cached, full)
  assert len(np.unique(np.asarray(cached))) > 3  # sampled, not a constant


def test_sequence_layout_positions_and_prompts():
  seq = ar_image.build_sequences(ar_image.class_token(jnp.array([2, 0]), 16, 10,
                                                      jnp.array([False, True])),
                                 jnp.array([[7, 8], [9, 9]]), jnp.array([[1, 2, 3, 4]] * 2))
  np.testing.assert_array_equal(seq, [[18, 7, 8, 1, 2, 3, 4], [26, 9, 9, 1, 2, 3, 4]])
  np.testing.assert_array_equal(ar_image.target_weights(2, 4, 0.5), [0.5, 0.5, 1, 1, 1, 1])
  np.testing.assert_array_equal(ar_image.grid_positions(2, 4),
                                [[0, 0], [0, 0], [0, 1], [0, 0], [0, 1], [1, 0], [1, 1]])
  with pytest.raises(ValueError, match="square"):
    ar_image.grid_positions(0, 6)
  table = {"tokens": np.arange(20).reshape(5, 4), "label": np.array([0, 1, 0, 1, 1])}
  rng = np.random.default_rng(0)
  prompts = ar_image.class_prompts(np.array([1, 0, 1] * 20), table, 3, rng)
  for label, prompt in zip([1, 0, 1] * 20, prompts):
    assert table["label"][prompt[0] // 4] == label and list(prompt) == list(
        range(prompt[0], prompt[0] + 3))
  assert len({p[0] for p in prompts[::3]}) == 3  # drawn among the class's images
  c = types.SimpleNamespace(vf_prompt="class")
  np.testing.assert_array_equal(ar_image.fixed_prompts(c, np.array([1, 0]), table, 2, 16),
                                [[4, 5], [0, 1]])


def test_crop_views_follow_torchvision_five_and_ten_crop_order():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
  big = np.asarray(jax.image.resize(x, (2, 9, 9, 1), "bilinear"))  # int(6 · 1.5) = 9
  want = [big[:, :6, :6], big[:, :6, 3:], big[:, 3:, :6], big[:, 3:, 3:], big[:, 1:7, 1:7]]
  mirrored = big[:, :, ::-1]
  want += [mirrored[:, :6, :6], mirrored[:, :6, 3:], mirrored[:, 3:, :6], mirrored[:, 3:, 3:],
           mirrored[:, 1:7, 1:7]]
  for view, expected in enumerate(want):
    np.testing.assert_allclose(ar_image.crop_view(x, 6, view, 1.5), expected, atol=1e-6)
  with pytest.raises(ValueError, match="crop_range=1.1"):
    ar_image.crop_view(x, 6, 0, 1.1)  # int(6.6) = 6: no room to crop


class _FakeTokenizer:
  """Tokenizes nothing: fixed codes, 16 codes, a 2×2 grid."""
  codebook_size = 16

  def __init__(self, tables):
    self.tables = tables

  def tokenize(self, source, key, images_fn):
    del images_fn
    return self.tables[len(source)]


@pytest.mark.parametrize("vf", ["none", "class", "universal"])
def test_loss_is_cross_entropy_on_image_tokens_only(monkeypatch, vf):
  rng = np.random.default_rng(0)
  train = {"tokens": rng.integers(0, 16, (12, 4)).astype(np.int32),
           "label": np.arange(12) % 3}
  evals = {"tokens": rng.integers(0, 16, (6, 4)).astype(np.int32), "label": np.arange(6) % 3}
  monkeypatch.setattr(ar_image, "load_tokenizer", lambda c: _FakeTokenizer({12: train, 6: evals}))
  config = config_lib.load(f"configs/ar_image.py:tokenizer=x,vf={vf}", **{
      "model.vocab_size": 20, "model.num_layers": 1, "model.embed_dim": 16,
      "model.num_heads": 2, "model.mlp_dim": 32, "task.num_classes": 3, "model.dropout": 0.0,
      "model.token_dropout": 0.0})
  model = runs.build_model(config.model, "float32")
  task = ar_image.build(config, model, ArraySource({"image": np.zeros(12)}),
                        ArraySource({"image": np.zeros(6)}))
  batch = task.eval_source.gather(np.arange(6))
  batch = task.eval_transform(batch) if task.eval_transform else batch
  k = 0 if vf == "none" else 4
  assert (batch["prompt"].shape == (6, 4)) if k else "prompt" not in batch
  params = task.init_fn(jax.random.key(0), batch)["params"]
  loss, (_, metrics) = task.loss_fn(params, {}, batch, jax.random.key(5), None, jnp.int32(0))
  # By hand: the same sequences through the model, CE on the image targets only. The
  # class dropout of this rng, redrawn.
  drop = jax.random.bernoulli(jax.random.split(jax.random.key(5))[0], 0.1, (6,))
  seq = ar_image.build_sequences(ar_image.class_token(batch["label"], 16, 3, drop),
                                 batch.get("prompt"), batch["tokens"])
  pos = jnp.broadcast_to(jnp.asarray(ar_image.grid_positions(k, 4))[:-1], (6, 4 + k, 2))
  logits = model.apply({"params": params}, seq[:, :-1], pos)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, seq[:, 1:])
  np.testing.assert_allclose(loss, np.mean(ce[:, k:]), rtol=1e-5)
  np.testing.assert_allclose(metrics["image_loss"], loss, rtol=1e-5)
  if vf == "class":  # the eval prompts are the first training image of the class
    np.testing.assert_array_equal(batch["prompt"], train["tokens"][batch["label"]])
  elif vf == "universal":
    assert batch["prompt"].max() < 16 and (batch["prompt"] == batch["prompt"][0]).all()
  with pytest.raises(ValueError, match="vocab_size=17"):
    ar_image.build(config_lib.load(f"configs/ar_image.py:tokenizer=x,vf={vf}", **{
        "model.vocab_size": 17}), runs.build_model(config_lib.load(
            "configs/ar_image.py", **{"model.vocab_size": 17}).model, "float32"),
        ArraySource({"image": np.zeros(12)}), ArraySource({"image": np.zeros(6)}))


def test_tokenize_train_and_sample_a_grid(tmp_path, vq_digits):
  vq = vq_digits[0]
  workdir = str(tmp_path / "ar")
  config = config_lib.load(f"configs/ar_image.py:tokenizer={vq},vf=class,vf_weight=0.5,steps=3",
                           **{**RUN, "train.batch_size": 16, "eval.batch_size": 360,
                              "model.num_layers": 1})
  summary = runs.train(config, workdir)
  assert np.isfinite(summary["eval"]["perplexity"]) and summary["eval"]["perplexity"] > 1
  assert len(os.listdir(os.path.join(vq, "tokens"))) >= 2  # both splits cached
  run = runs.open(workdir)
  out = sample.class_grid(run, str(tmp_path / "grid.png"), num_samples=2, guidance_scale=2.0)
  assert Image.open(out).size == (2 * 16, 10 * 16)
  images, steps = sample.ar_images(run, [3, 4], jax.random.key(0), vf_source="generate")
  assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8 and steps == 32
  # mini-GenImage from this run: its samples beside real digits at its size, as a dataset.
  root = str(tmp_path / "mini")
  provenance = genimage.write_generator(run, "ar", root, num_train=6, num_val=4, batch_size=4,
                                        guidance_scale=2.0, temperature=1.0)
  assert provenance["run"] == os.path.abspath(workdir) and provenance["guidance_scale"] == 2.0
  kwargs = dict(data_dir=str(tmp_path / "data"), manual_dir=root)
  for split, count in (("train", 6), ("validation", 4)):
    examples = list(sources.get_source("genimage_mini_ar", split, **kwargs))
    assert sorted(e["label"] for e in examples) == [0] * count + [1] * count
    assert {e["image"].shape for e in examples} == {(16, 16, 3)}  # gray PNGs read as RGB
  with pytest.raises(FileExistsError, match="effcomp_ar exists"):
    genimage.write_generator(run, "ar", root, num_train=1, num_val=1)
  with pytest.raises(ValueError, match="kind='gan'"):
    genimage.write_generator(run, "gan", root, num_train=1, num_val=1)
  with pytest.raises(FileNotFoundError, match="workdir='nowhere'"):
    runs.build_task(config_lib.load("configs/ar_image.py:tokenizer=nowhere"))


@pytest.mark.slow  # 8 devices: make test-slow
def test_eight_device_step_equals_one_device(tmp_path, vq_digits):
  vq = vq_digits[0]
  one, eight = train_losses_on_one_and_eight_devices(
      tmp_path, f"configs/ar_image.py:tokenizer={vq},vf=class,steps=3",
      "--config.train.batch_size=16", "--config.train.log_every=1", "--config.train.eval_every=0",
      "--config.model.num_layers=1")
  assert len(one) == len(eight) == 3
  np.testing.assert_allclose(one, eight, rtol=2e-5)
