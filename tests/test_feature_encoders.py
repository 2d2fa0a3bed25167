"""The frozen encoders of VPD-SR's semantic loss and MoR's CLIP degradation scorer
(`effcomp.runs.encoders`, `effcomp.metrics.clip_iqa`)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.metrics import clip_iqa
from effcomp.models import clip
from effcomp.registry import DEGRADATION_SCORERS, FEATURE_ENCODERS
from tests import test_clip


def test_clip_encoder_features_follow_the_image(tmp_path):
  test_clip._random_checkpoint(tmp_path)
  features = FEATURE_ENCODERS.get("clip")(str(tmp_path))
  images = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3), minval=-1.0, maxval=1.0)
  embeds, hidden = features(images)
  vision = test_clip._hf_config_dict()["vision_config"]
  tokens = 1 + (vision["image_size"] // vision["patch_size"]) ** 2
  assert embeds.shape == (2, test_clip._hf_config_dict()["projection_dim"])
  assert hidden.shape == (2, tokens, vision["hidden_size"])
  again = features(images[::-1])
  np.testing.assert_allclose(again[0], embeds[::-1], atol=1e-5)
  assert float(jnp.abs(embeds[0] - embeds[1]).max()) > 1e-3


def test_run_encoder_gives_each_conv_map_and_the_pooled_features(tmp_path):
  config = config_lib.load("configs/stand_in_encoder.py:steps=2,size=32",
                           **{"train.progress_bar": False, "train.batch_size": 4})
  workdir = os.path.join(tmp_path, "encoder")
  runs.train(config, workdir)
  features = FEATURE_ENCODERS.get("run")(workdir)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  maps = features(images)
  widths = config.model.widths
  assert [m.shape for m in maps] == [(2, 32, 32, widths[0]), (2, 16, 16, widths[1]),
                                     (2, 8, 8, widths[2]), (2, widths[2])]
  with pytest.raises(ValueError, match="unknown feature encoder"):
    FEATURE_ENCODERS.get("nope")


def test_relative_scores_by_hand():
  image = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
  positive, negative = jnp.asarray([[1.0, 0.0]]), jnp.asarray([[0.0, 3.0]])
  # Image 0: d_p = 1, d_n = 0 → e^0/(e^1 + e^0); image 1: d_p = 0, d_n = 1.
  want = [[1 / (np.e + 1)], [np.e / (1 + np.e)]]
  np.testing.assert_allclose(clip_iqa.relative_scores(image, positive, negative), want,
                             rtol=1e-6)
  np.testing.assert_allclose(clip_iqa.relative_scores(image, positive, negative, scale=2.0),
                             [[1 / (np.e ** 2 + 1)], [np.e ** 2 / (1 + np.e ** 2)]], rtol=1e-6)


def test_clip_degradation_scorer_embeds_the_prompt_pairs(tmp_path):
  model, variables = test_clip._random_checkpoint(tmp_path)
  vocab = test_clip._hf_config_dict()["text_config"]["vocab_size"]

  def tokenize(texts):  # a stand-in tokenizer: word ids by hash, EOS (2) at the end
    rows = [[3 + sum(map(ord, w)) % (vocab - 3) for w in t.split()] + [2] for t in texts]
    width = max(map(len, rows))
    return (np.asarray([r + [0] * (width - len(r)) for r in rows]),
            np.asarray([[1] * len(r) + [0] * (width - len(r)) for r in rows]))

  pairs = (("a sharp photo.", "a blurry photo."), ("a clean photo.", "a noisy photo."))
  scores_fn = DEGRADATION_SCORERS.get("clip")(str(tmp_path), tokenize, pairs)
  images = jax.random.uniform(jax.random.key(2), (3, 24, 24, 3), minval=-1.0, maxval=1.0)
  scores = scores_fn(images)
  ids, mask = tokenize([t for p in pairs for t in p])
  text = model.apply(variables, jnp.asarray(ids), jnp.asarray(mask), method=model.encode_text)
  size = model.config.vision.image_size
  embeds = model.apply(variables, clip.preprocess((images + 1) / 2, size),
                       method=model.encode_image)
  want = clip_iqa.relative_scores(embeds, text[0::2], text[1::2],
                                  float(jnp.exp(variables["params"]["logit_scale"])))
  assert scores.shape == (3, 2)
  np.testing.assert_allclose(scores, want, rtol=1e-5)
