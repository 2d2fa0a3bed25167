"""Official DiT / U-DiT checkpoints → effcomp (effcomp.convert.dit, effcomp.convert.udit):
the official key sets and shapes, exact round trips through checkpoint files, the patch
embedding and depthwise layouts against torch convolutions, the 'rep' FFN folded as the
official `add_buffer` folds it, and the errors. No official code is imported: the key
sets are written out from facebookresearch/DiT `models.py` and YuchuanTian/U-DiT
`udit_models.py`, and the checkpoints are written in their layout."""

import argparse
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effcomp.convert import dit, state_dict, udit
from effcomp.models.dit.dit import DiT
from effcomp.models.dit.udit import STAGES, UDiT, reparameterize
from effcomp.nn.depthwise_conv import DepthwiseConv

DIT = dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=5)
UDIT = dict(input_size=8, hidden_size=16, num_heads=2, depth=(1, 1, 1, 1, 1), num_classes=5)
W, B = "weight", "bias"


def _inputs(model, batch=2):
  rng = np.random.default_rng(0)
  size, channels = model.input_size, model.in_channels
  return (rng.normal(size=(batch, size, size, channels)).astype(np.float32),
          np.array([3, 999][:batch]), np.array([0, 4][:batch]))


def _template(model):
  return jax.eval_shape(model.init, jax.random.key(0), *_inputs(model, 1))


def _random(template, seed=0):
  """Variables shaped like `template`, each leaf normal(0, 0.3²) from numpy."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32),
                      nn.unbox(template))


def _pairs(name):
  return [f"{name}.{W}", f"{name}.{B}"]


def _dit_keys(depth):
  """facebookresearch/DiT `DiT.state_dict()` keys (timm PatchEmbed/Attention/Mlp)."""
  keys = ["pos_embed", *_pairs("x_embedder.proj"), *_pairs("t_embedder.mlp.0"),
          *_pairs("t_embedder.mlp.2"), "y_embedder.embedding_table.weight",
          *_pairs("final_layer.linear"), *_pairs("final_layer.adaLN_modulation.1")]
  for i in range(depth):
    for module in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"):
      keys += _pairs(f"blocks.{i}.{module}")
  return set(keys)


def _udit_keys(depth):
  """YuchuanTian/U-DiT `U_DiT(ffn_type='rep', rep=1, attn_type='v2').state_dict()` keys."""
  keys = [*_pairs("x_embedder.proj"), *_pairs("reduce_chan_level2"),
          *_pairs("reduce_chan_level1"), *_pairs("output"), *_pairs("final_layer.out_proj"),
          *_pairs("final_layer.adaLN_modulation.1")]
  keys += [f"{m}.body.0.weight" for m in ("down1_2", "down2_3", "up3_2", "up2_1")]
  for k in (1, 2, 3):
    keys += [*_pairs(f"t_embedder_{k}.mlp.0"), *_pairs(f"t_embedder_{k}.mlp.2"),
             f"y_embedder_{k}.embedding_table.weight"]
  stages = ("encoder_level_1", "encoder_level_2", "latent", "decoder_level_2", "decoder_level_1")
  for stage, blocks in zip(stages, depth):
    for b in range(blocks):
      for j in (1, 2):
        p = f"{stage}.{b}"
        keys += [*_pairs(f"{p}.adaLN_modulation{j}.1"), f"{p}.attn{j}.logit_scale"]
        keys += [k for m in ("to_qkv", "to_out", "downsampler.layer")
                 for k in _pairs(f"{p}.attn{j}.{m}")]
        keys += [k for m in ("project_in.0", "project_in.1", "dwconv.0", "dwconv.1", "dwconv.2",
                             "project_out.0", "project_out.1") for k in _pairs(f"{p}.mlp{j}.{m}")]
  return set(keys)


def _torch_dict(tensors):
  return {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert jax.tree.structure(a) == jax.tree.structure(b)


def test_dit_round_trips_through_an_official_training_checkpoint(tmp_path):
  model = DiT(**DIT)
  template = _template(model)
  variables, other = _random(template, 0), _random(template, 1)
  tensors = state_dict.to_state_dict(variables, dit.name_map(model))
  tensors["pos_embed"] = dit.fixed_pos_embed(model)
  assert set(tensors) == _dit_keys(2)
  assert tensors["x_embedder.proj.weight"].shape == (32, 4, 2, 2)
  assert tensors["final_layer.linear.weight"].shape == (2 * 2 * 8, 32)  # learn_sigma: 2C out
  assert tensors["y_embedder.embedding_table.weight"].shape == (6, 32)  # + the null class
  assert tensors["pos_embed"].shape == (1, 16, 32)
  # train.py saves {'model', 'ema', 'opt', 'args'}; sampling reads 'ema' (find_model).
  torch.save({"model": _torch_dict(state_dict.to_state_dict(other, dit.name_map(model))),
              "ema": _torch_dict(tensors), "opt": {"state": {}, "param_groups": []},
              "args": argparse.Namespace(model="DiT-S/2")}, tmp_path / "0400000.pt")
  read = state_dict.read(str(tmp_path / "0400000.pt"), dit.CONTAINERS)  # 'args' allowed
  converted, report = state_dict.from_state_dict(read, template, dit.name_map(model))
  assert report.unused == dit.UNUSED and report.unfilled == ()
  _assert_same(converted, variables)
  assert jax.jit(model.apply)(converted, *_inputs(model)).shape == (2, 8, 8, 8)


def test_dit_patch_embedding_is_the_official_strided_conv():
  """x_embedder.proj (Conv2d(C, D, p, stride=p), OIHW) in torch against the converted
  Dense over effcomp's flattened patches."""
  model = DiT(**{**DIT, "patch_size": 4, "in_channels": 3, "learn_sigma": False})
  variables = _random(_template(model))
  t = _torch_dict(state_dict.to_state_dict(variables, dit.name_map(model)))
  assert t["x_embedder.proj.weight"].shape == (32, 3, 4, 4)
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  expected = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                      t["x_embedder.proj.weight"], t["x_embedder.proj.bias"], stride=4)
  expected = expected.flatten(2).transpose(1, 2).numpy()  # PatchEmbed: [B, T, D], row-major
  _, inter = model.apply(variables, x, np.array([1, 2]), np.array([0, 1]),
                         capture_intermediates=True, mutable=["intermediates"])
  np.testing.assert_allclose(inter["intermediates"]["x_embedder"]["__call__"][0], expected,
                             rtol=1e-5, atol=1e-5)
  smaller = model.clone(patch_size=2)  # a DiT-*/4 checkpoint does not fit a DiT-*/2
  with pytest.raises(ValueError, match=r"x_embedder\.proj\.weight \(32, 3, 4, 4\) → \(48, 32\)"):
    state_dict.from_state_dict(t, _template(smaller), dit.name_map(smaller))


def test_dit_pos_embed_is_the_official_fixed_table():
  """MAE's get_2d_sincos_pos_embed(4, 2): meshgrid(w, h), so token (row r, col c) is
  [sin c, cos c, sin r, cos r] (D/4 = 1 frequency, ω = 1)."""
  model = DiT(input_size=4, patch_size=2, hidden_size=4, num_heads=1, depth=1)
  s, c = np.sin(1.0), np.cos(1.0)
  expected = [[0, 1, 0, 1], [s, c, 0, 1], [0, 1, s, c], [s, c, s, c]]
  np.testing.assert_allclose(dit.fixed_pos_embed(model)[0], expected, atol=1e-7)


def test_udit_round_trips_through_an_official_state_dict_file(tmp_path):
  model = UDiT(**UDIT)
  template = _template(model)
  variables = _random(template)
  tensors = state_dict.to_state_dict(variables, udit.name_map(model))
  assert set(tensors) == _udit_keys(UDIT["depth"])
  shapes = {"encoder_level_1.0.attn2.logit_scale": (2, 1, 1),
            "encoder_level_1.0.attn1.downsampler.layer.weight": (16, 1, 5, 5),
            "encoder_level_1.0.attn1.to_qkv.weight": (48, 16),
            "encoder_level_1.0.attn1.to_out.weight": (16, 16, 1, 1),
            "latent.0.mlp1.project_in.0.weight": (64, 64, 1, 1),
            "latent.0.mlp1.dwconv.1.weight": (128, 1, 3, 3),
            "down1_2.body.0.weight": (8, 16, 3, 3), "up3_2.body.0.weight": (128, 64, 3, 3),
            "reduce_chan_level2.weight": (32, 64, 1, 1),
            "final_layer.out_proj.weight": (8, 32, 3, 3)}
  assert {k: tensors[k].shape for k in shapes} == shapes
  torch.save(_torch_dict(tensors), tmp_path / "U-DiT-S-400k.pt")  # released: a bare state dict
  read = state_dict.read(str(tmp_path / "U-DiT-S-400k.pt"), udit.CONTAINERS)
  converted, report = state_dict.from_state_dict(read, template, udit.name_map(model))
  assert report.unused == () and report.unfilled == ()
  _assert_same(converted, variables)
  assert jax.jit(model.apply)(converted, *_inputs(model)).shape == (2, 8, 8, 8)


def test_udit_layers_map_to_both_sublayers_of_each_official_block():
  model = UDiT(**{**UDIT, "depth": (1, 2, 1, 1, 1)})
  name = udit.name_map(model)
  assert name(("params", "encoder2_3", "attn", "attn", "qkv", "kernel"))[0] == (
      "encoder_level_2.1.attn2.to_qkv.weight")
  assert name(("params", "decoder1_0", "ffn", "dwconv_1", "bias"))[0] == (
      "decoder_level_1.0.mlp1.dwconv.2.bias")
  assert name(("params", "latent_1", "adaLN_modulation", "kernel"))[0] == (
      "latent.0.adaLN_modulation2.1.weight")
  assert len(state_dict.to_state_dict(_random(_template(model)), name)) == len(
      _udit_keys(model.depth))


@pytest.mark.parametrize("ffn,keys", [
    ("dwconv", {"project_in.weight": (32, 16, 1, 1), "dwconv.weight": (32, 1, 5, 5),
                "project_out.bias": (16,)}),  # official rep=0
    ("mlp", {"fc1.weight": (32, 16, 1, 1), "fc2.weight": (16, 32, 1, 1)})])  # ffn_type='basic'
def test_udit_other_ffns_take_the_official_rep0_and_basic_keys(ffn, keys):
  model = UDiT(**UDIT, ffn=ffn, attn_type="dot", rope=False)
  tensors = state_dict.to_state_dict(_random(_template(model)), udit.name_map(model))
  assert {k: tensors[f"encoder_level_1.0.mlp2.{k}"].shape for k in keys} == keys
  assert not any(k.endswith("logit_scale") for k in tensors)  # attn_type=None: no parameter


def test_udit_reparameterize_folds_as_the_official_add_buffer():
  """The official FeedForward.add_buffer, written out in torch on the official tensors,
  against `reparameterize` of the converted 'rep' params, read back in the rep=0 layout."""
  model = UDiT(**UDIT)
  t = _torch_dict(state_dict.to_state_dict(_random(_template(model)), udit.name_map(model)))
  folded = {"params": reparameterize(state_dict.from_state_dict(
      t, _template(model), udit.name_map(model))[0]["params"])}
  out = state_dict.to_state_dict(folded, udit.name_map(model.clone(ffn="dwconv")))
  for p in ("encoder_level_1.0.mlp1", "latent.0.mlp2"):
    fold = {}
    for part in ("project_in", "project_out"):
      w1, w2 = t[f"{p}.{part}.0.weight"].squeeze(), t[f"{p}.{part}.1.weight"].squeeze()
      fold[f"{part}.weight"] = (w2 @ w1)[..., None, None]
      fold[f"{part}.bias"] = w2 @ t[f"{p}.{part}.0.bias"] + t[f"{p}.{part}.1.bias"]
    weight = t[f"{p}.dwconv.0.weight"].clone()
    weight[:, :, 1:4, 1:4] += t[f"{p}.dwconv.1.weight"]
    weight[:, :, 2:3, 2:3] += t[f"{p}.dwconv.2.weight"] + 1.0  # the identity branch
    fold["dwconv.weight"] = weight
    fold["dwconv.bias"] = sum(t[f"{p}.dwconv.{i}.bias"] for i in range(3))
    for key, value in fold.items():
      np.testing.assert_allclose(out[f"{p}.{key}"], value.numpy(), rtol=1e-5, atol=1e-5)


def test_udit_depthwise_convs_compute_the_official_grouped_conv():
  """A depthwise Conv2d(C, C, 5, padding=2, groups=C) weight [C, 1, 5, 5] through CONV."""
  rng = np.random.default_rng(2)
  weight, bias = rng.normal(size=(6, 1, 5, 5)).astype(np.float32), rng.normal(size=6)
  x = rng.normal(size=(2, 7, 7, 6)).astype(np.float32)
  params = {"kernel": state_dict.CONV.to_effcomp(weight), "bias": bias.astype(np.float32)}
  ours = DepthwiseConv(5).apply({"params": params}, x)
  expected = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(weight),
                      torch.from_numpy(params["bias"]), padding=2, groups=6)
  np.testing.assert_allclose(ours, expected.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  assert udit.LOGIT_SCALE.to_effcomp(np.arange(4.0).reshape(4, 1, 1)).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("model,converter,key,bad", [
    (DiT(**DIT), dit, "blocks.1.attn.qkv.weight", (96, 16)),
    (UDiT(**UDIT), udit, "latent.0.attn1.logit_scale", (4, 1, 1))])
def test_wrong_shapes_extra_and_missing_tensors(model, converter, key, bad):
  template = _template(model)
  name = converter.name_map(model)
  tensors = state_dict.to_state_dict(_random(template), name)
  with pytest.raises(ValueError, match=rf"wrong shape {re.escape(key)} \({bad[0]}, {bad[1]}"):
    state_dict.from_state_dict({**tensors, key: np.zeros(bad, np.float32)}, template, name)
  _, report = state_dict.from_state_dict({**tensors, "blocks.9.extra": np.ones(3)}, template, name)
  assert report.unused == ("blocks.9.extra",)
  missing = {k: v for k, v in tensors.items() if k != key}
  with pytest.raises(ValueError, match=rf"no tensor for 1 leaves: .* \(key {re.escape(key)}\)"):
    state_dict.from_state_dict(missing, template, name)


def test_models_the_official_code_cannot_build_are_errors():
  with pytest.raises(ValueError, match="config.model: UDiT.*'dit'"):
    dit.name_map(UDiT(**UDIT))
  with pytest.raises(ValueError, match="config.model: DiT.*'udit'"):
    udit.name_map(DiT(**DIT))
  for downsampler in ("conv5", "none", "dwconv11"):
    with pytest.raises(ValueError, match=f"downsampler='{downsampler}'.*depthwise"):
      udit.name_map(UDiT(**UDIT, downsampler=downsampler))
  assert udit.OFFICIAL_STAGES.keys() == set(STAGES)
