"""The frozen encoders of VPD-SR's semantic loss (`effcomp.runs.encoders`)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.registry import FEATURE_ENCODERS
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
