"""effcomp CLIP (effcomp.models.clip, effcomp.convert.clip) vs transformers' CLIPModel."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.convert import clip as convert_clip
from effcomp.convert import state_dict
from effcomp.models import clip
from effcomp.models.lm import hf_checkpoint

TEXT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=16)
VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
              num_attention_heads=4, intermediate_size=37)
# (eos_token_id, hidden_act): 2 is the legacy rule (pool at argmax(input_ids)); 5 pools at
# the first 5, which argmax would miss (5 is not the largest id in the texts).
CASES = [(2, "quick_gelu"), (5, "gelu")]
EOS_AT = (8, 5, 3)  # Where each text's EOS sits; text 1 and 2 are padded after it.


def _hf_config_dict(eos_token_id=2, hidden_act="quick_gelu"):
  """A CLIPModel config.json dict, as save_pretrained writes it."""
  return {"model_type": "clip", "projection_dim": 16, "logit_scale_init_value": 2.6592,
          "text_config": {**TEXT, "eos_token_id": eos_token_id, "hidden_act": hidden_act},
          "vision_config": {**VISION, "hidden_act": hidden_act}}


def _texts(eos_token_id):
  """(input_ids, attention_mask) [3, 10]: EOS at EOS_AT, then padding (the EOS id; 1 if legacy)."""
  ids = np.random.default_rng(1).integers(6, 90, (3, 10))
  mask = np.zeros_like(ids)
  for row, at in enumerate(EOS_AT):
    eos = 98 if eos_token_id == 2 else eos_token_id  # Legacy: EOT is the largest id.
    ids[row, at] = eos
    ids[row, at + 1:] = 1 if eos_token_id == 2 else eos_token_id
    mask[row, :at + 1] = 1
  return ids, mask


def _pixels_nchw(batch=3):
  return np.random.default_rng(2).normal(size=(batch, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"eos{c[0]}-{c[1]}")
def reference(request, tmp_path_factory):
  """(torch CLIPModel, its save_pretrained folder) for one case of CASES."""
  torch = pytest.importorskip("torch", reason="torch is needed for the transformers reference")
  transformers = pytest.importorskip("transformers", reason="transformers reference not installed")
  eos_token_id, hidden_act = request.param
  config = _hf_config_dict(eos_token_id, hidden_act)
  torch.manual_seed(0)
  model = transformers.CLIPModel(transformers.CLIPConfig(
      text_config=config["text_config"], vision_config=config["vision_config"],
      projection_dim=config["projection_dim"])).eval()
  with torch.no_grad():  # CLIP's init has zero biases and unit LayerNorms: perturb them all.
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  folder = str(tmp_path_factory.mktemp("clip"))
  model.save_pretrained(folder, safe_serialization=True)
  return model, folder, eos_token_id


def _close(got, want, what):
  # float32 throughout; tolerances relative to activations of up to ~10.
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                             err_msg=what)


def test_matches_transformers_clip_model(reference):
  torch = pytest.importorskip("torch")
  ref, folder, eos_token_id = reference
  model, variables = convert_clip.load_clip(folder)
  assert model.config.text.eos_token_id == eos_token_id
  ids, mask = _texts(eos_token_id)
  pixels = _pixels_nchw()
  with torch.no_grad():
    t_ids, t_mask, t_pixels = (torch.tensor(a) for a in (ids, mask, pixels))
    out = ref(input_ids=t_ids, pixel_values=t_pixels, attention_mask=t_mask)
    image = ref.get_image_features(pixel_values=t_pixels).pooler_output
    text = ref.get_text_features(input_ids=t_ids, attention_mask=t_mask).pooler_output
    hidden = ref.vision_model(pixel_values=t_pixels, output_hidden_states=True).hidden_states
  nhwc = pixels.transpose(0, 2, 3, 1)

  @jax.jit  # One compilation for all three entry points.
  def forward(variables, nhwc, ids, mask):
    image, hidden = model.apply(variables, nhwc, return_hidden=True,
                                method=clip.CLIP.encode_image)
    text = model.apply(variables, ids, mask, method=clip.CLIP.encode_text)
    return image, hidden, text, model.apply(variables, nhwc, ids, mask)

  got_image, got_hidden, got_text, got_logits = forward(variables, nhwc, ids, mask)
  _close(got_image, image.numpy(), "image embeds")
  _close(got_text, text.numpy(), "text embeds")
  _close(got_logits, out.logits_per_image.numpy(), "logits_per_image")
  assert len(got_hidden) == len(hidden) == VISION["num_hidden_layers"] + 1
  for i, (got, want) in enumerate(zip(got_hidden, hidden)):
    _close(got, want.numpy(), f"vision hidden state {i}")


def _random_checkpoint(folder, eos_token_id=2):
  """Writes a random CLIP as an HF folder (our params in HF names, no torch); returns
  (model, variables)."""
  config = _hf_config_dict(eos_token_id)
  model = clip.CLIP(clip.CLIPConfig.from_hf(config))
  rng = np.random.default_rng(0)  # Every leaf random (no zero biases or unit scales).
  variables = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32),
                           nn.unbox(convert_clip.abstract_variables(model)))
  tensors = state_dict.to_state_dict(variables, convert_clip.name_map(model))
  hf_checkpoint.write_folder(str(folder), config, tensors)  # 0-d logit_scale stays 0-d
  return model, variables


def test_load_round_trips_hf_names_and_layouts(tmp_path):
  model, variables = _random_checkpoint(tmp_path)
  tensors = hf_checkpoint.read_tensors(str(tmp_path))
  assert tensors["vision_model.embeddings.patch_embedding.weight"].shape == (32, 3, 8, 8)
  assert tensors["text_model.encoder.layers.1.mlp.fc1.weight"].shape == (37, 32)
  assert tensors["logit_scale"].shape == ()
  loaded_model, loaded = convert_clip.load_clip(str(tmp_path))
  assert loaded_model == model
  flat, flat_loaded = (flax.traverse_util.flatten_dict(v) for v in (variables, loaded))
  assert flat.keys() == flat_loaded.keys()
  for path in flat:
    np.testing.assert_array_equal(flat_loaded[path], flat[path], err_msg="/".join(path))


def test_load_names_the_missing_unexpected_or_misshapen_tensor(tmp_path):
  model, _ = _random_checkpoint(tmp_path)
  tensors = hf_checkpoint.read_tensors(str(tmp_path))
  tensors["text_model.embeddings.position_ids"] = np.arange(16)[None]  # Old buffer: ignored.
  convert_clip.variables_from_hf(tensors, model)
  missing = dict(tensors)
  del missing["vision_model.encoder.layers.1.self_attn.k_proj.bias"]
  hf_checkpoint.write_folder(str(tmp_path), _hf_config_dict(), missing)
  with pytest.raises(ValueError, match=r"folder=.*vision_model\.encoder\.layers\.1\.self_attn"
                     r"\.k_proj\.bias"):
    convert_clip.load_clip(str(tmp_path))
  with pytest.raises(ValueError, match=r"unexpected tensor\(s\) text_model\.pooler\.weight"):
    convert_clip.variables_from_hf({**tensors, "text_model.pooler.weight": np.zeros(3)}, model)
  bad = {**tensors, "visual_projection.weight": np.zeros((17, 32), np.float32)}
  with pytest.raises(ValueError, match=r"wrong shape visual_projection\.weight \(17, 32\)"):
    convert_clip.variables_from_hf(bad, model)


def test_config_from_hf_defaults_and_unsupported_fields():
  config = clip.CLIPConfig.from_hf({"model_type": "clip"})  # configuration_clip.py defaults
  assert (config.vision.image_size, config.vision.patch_size, config.text.eos_token_id,
          config.projection_dim) == (224, 32, 49407, 512)
  with pytest.raises(ValueError, match="vision_config.hidden_act='relu'"):
    clip.CLIPConfig.from_hf({"vision_config": {"hidden_act": "relu"}})
  with pytest.raises(ValueError, match="text_config.eos_token_id"):
    clip.CLIPConfig.from_hf({"text_config": {"eos_token_id": [2, 3]}})
  with pytest.raises(ValueError, match="model_type='siglip'"):
    clip.CLIPConfig.from_hf({"model_type": "siglip"})


def test_encode_image_refuses_nchw_pixels(tmp_path):
  model, variables = _random_checkpoint(tmp_path)
  with pytest.raises(ValueError, match=r"expected NHWC \[batch, 32, 32, 3\]"):
    model.apply(variables, jnp.zeros((1, 3, 32, 32)), method=clip.CLIP.encode_image)


def test_preprocess_resizes_and_normalizes_with_openai_constants():
  images = jnp.full((2, 40, 50, 3), 0.5)
  pixels = clip.preprocess(images, 32)
  assert pixels.shape == (2, 32, 32, 3)
  expected = (0.5 - np.array(clip.OPENAI_CLIP_MEAN)) / np.array(clip.OPENAI_CLIP_STD)
  np.testing.assert_allclose(pixels, np.broadcast_to(expected, pixels.shape), atol=1e-6)
  with pytest.raises(ValueError, match="images has shape"):
    clip.preprocess(jnp.zeros((2, 3, 40, 40)), 32)
