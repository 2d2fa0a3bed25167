"""Official ResShift and DiT-SR checkpoints → effcomp (effcomp.convert.resshift, .ditsr): the
official key layout (hard-coded from the rules of ResShift's `models/unet.py` /
`swin_transformer.py` and DiT-SR's), exact round trips through a checkpoint file, reports,
errors, and the AdaFM bias shift. No official code is imported: the tests write
checkpoints in the official layout."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effcomp.convert import ditsr, resshift, state_dict
from effcomp.models.sr.dit_sr import DiTSR
from effcomp.models.sr.resshift_unet import ResShiftUNet

# Two levels at a 16² input: level 0 (16²) has window 8 and a shifted block, level 1 (8²)
# window 8 and no shift (the official SwinTransformerBlock: side ≤ window → no shift).
TINY = dict(model_channels=32, channel_mult=(1, 2), swin_embed_dim=32, swin_depth=2,
            num_head_channels=16, mlp_ratio=2.0, window_size=8, image_size=16,
            window_mask="reference")
SIZE = 16


def _resshift():
  return ResShiftUNet(num_res_blocks=1, **TINY)


def _ditsr():
  return DiTSR(dropout=0.0, **TINY)


def _inputs(batch=1, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
  lq = rng.normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
  return x, np.arange(batch, dtype=np.int32) + 3, lq


def _template(model):
  x, t, lq = _inputs()
  return jax.eval_shape(model.init, jax.random.key(0), x, t, lq)


def _random(model, seed=0):
  """Variables of `model` with values k/1024 in [−1, 1] (k ≠ 0): exact under x ± 1, so the
  AdaFM bias shift round-trips bit for bit."""
  leaves, tree = jax.tree.flatten(nn.unbox(_template(model)))
  rng = np.random.default_rng(seed)
  values = [(rng.integers(1, 1025, leaf.shape) * rng.choice([-1, 1], leaf.shape) / 1024)
            .astype(np.float32) for leaf in leaves]
  return jax.tree.unflatten(tree, values)


def _swin_keys(prefix, depth, shifted, adafm=False):
  """Official BasicLayer keys (patch_norm=False): patch (un)embedding 1×1 convs, blocks."""
  keys = [f"{prefix}.{m}.proj.{p}" for m in ("patch_embed", "patch_unembed")
          for p in ("weight", "bias")]
  for j in range(depth):
    b = f"{prefix}.blocks.{j}"
    keys += [f"{b}.{m}.{p}" for m in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1",
                                      "mlp.fc2") for p in ("weight", "bias")]
    keys += [f"{b}.attn.relative_position_bias_table", f"{b}.attn.relative_position_index"]
    if shifted and j % 2:
      keys.append(f"{b}.attn_mask")
    if adafm:
      keys += [f"{b}.adaLN_scale_{m}.1.{p}" for m in ("msa", "mlp") for p in ("weight", "bias")]
  return keys


def _conv_keys(*names):
  return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


def _resblock_keys(prefix, skip):
  names = [f"{prefix}.{m}" for m in ("in_layers.0", "in_layers.2", "emb_layers.1",
                                      "out_layers.0", "out_layers.3")]
  return _conv_keys(*names, *([f"{prefix}.skip_connection"] if skip else []))


def _resshift_keys():
  """UNetModelSwin(image_size=16, model_channels=32, channel_mult=[1, 2],
  num_res_blocks=[1, 1], attention_resolutions=[16, 8], swin_depth=2, window_size=8,
  use_scale_shift_norm=True)'s state-dict keys."""
  keys = _conv_keys("time_embed.0", "time_embed.2", "input_blocks.0.0", "input_blocks.2.0.op",
                    "output_blocks.1.1.conv", "out.0", "out.2")
  keys += _resblock_keys("input_blocks.1.0", False) + _swin_keys("input_blocks.1.1", 2, True)
  keys += _resblock_keys("input_blocks.3.0", True) + _swin_keys("input_blocks.3.1", 2, False)
  keys += _resblock_keys("middle_block.0", False) + _swin_keys("middle_block.1", 2, False)
  keys += _resblock_keys("middle_block.2", False)
  keys += _resblock_keys("output_blocks.0.0", True) + _swin_keys("output_blocks.0.1", 2, False)
  keys += _resblock_keys("output_blocks.1.0", True)
  keys += _resblock_keys("output_blocks.2.0", True) + _swin_keys("output_blocks.2.1", 2, True)
  keys += _resblock_keys("output_blocks.3.0", True)
  return set(keys)


def _ditsr_keys():
  """DiTSRModel(image_size=16, model_channels=32, channel_mult=[1, 2],
  attention_resolutions=[16, 8], swin_depth=2, window_size=8)'s state-dict keys."""
  keys = _conv_keys("time_embed.0", "time_embed.2", "input_blocks.0.0", "input_blocks.2.0.op",
                    "output_blocks.0.0", "output_blocks.1.0", "output_blocks.1.2.conv",
                    "output_blocks.2.0", "output_blocks.3.0", "out.0", "out.2")
  for prefix, depth, shifted in (("input_blocks.1.0", 2, True), ("input_blocks.3.0", 2, False),
                                 ("middle_block.0", 2, False), ("output_blocks.0.1", 2, False),
                                 ("output_blocks.1.1", 1, False), ("output_blocks.2.1", 2, True),
                                 ("output_blocks.3.1", 1, False)):
    keys += _swin_keys(prefix, depth, shifted, adafm=True)
  return set(keys)


def _save_official(tensors, path):
  """As a DataParallel training run saves: {'state_dict': `module.` keys}."""
  torch.save({"state_dict": {"module." + k: torch.from_numpy(np.array(v))
                             for k, v in tensors.items()}}, path)


# Official shapes: Conv2d [out, in, kh, kw] (1×1 for the Mlp and patch (un)embedding),
# Linear [out, in], bias tables [(2·8 − 1)², heads].
RESSHIFT_SHAPES = {"time_embed.0.weight": (128, 32), "input_blocks.0.0.weight": (32, 6, 3, 3),
                   "input_blocks.1.0.in_layers.2.weight": (32, 32, 3, 3),
                   "input_blocks.1.0.emb_layers.1.weight": (64, 128),
                   "input_blocks.2.0.op.weight": (32, 32, 3, 3),
                   "input_blocks.3.0.skip_connection.weight": (64, 32, 1, 1),
                   "input_blocks.3.1.patch_embed.proj.weight": (32, 64, 1, 1),
                   "input_blocks.3.1.patch_unembed.proj.weight": (64, 32, 1, 1),
                   "input_blocks.1.1.blocks.0.attn.qkv.weight": (96, 32),
                   "input_blocks.1.1.blocks.1.attn.relative_position_bias_table": (225, 2),
                   "input_blocks.1.1.blocks.0.mlp.fc1.weight": (64, 32, 1, 1),
                   "output_blocks.0.0.in_layers.0.weight": (128,),
                   "output_blocks.1.1.conv.weight": (64, 64, 3, 3), "out.2.weight": (3, 32, 3, 3)}
DITSR_SHAPES = {"input_blocks.0.0.weight": (32, 6, 3, 3),
                "input_blocks.2.0.op.weight": (64, 32, 3, 3),
                "middle_block.0.patch_embed.proj.weight": (32, 64, 1, 1),
                "middle_block.0.blocks.0.mlp.fc2.weight": (32, 64, 1, 1),
                "input_blocks.1.0.blocks.1.adaLN_scale_msa.1.weight": (8 * 5, 128),
                "input_blocks.1.0.blocks.1.adaLN_scale_mlp.1.bias": (8 * 5,),
                "output_blocks.0.0.weight": (64, 128, 3, 3),
                "output_blocks.1.2.conv.weight": (32, 64, 3, 3), "out.0.weight": (32,)}
CASES = [(resshift, _resshift, _resshift_keys, RESSHIFT_SHAPES),
         (ditsr, _ditsr, _ditsr_keys, DITSR_SHAPES)]


@pytest.mark.parametrize("converter,build,official_keys,shapes", CASES, ids=["resshift", "ditsr"])
def test_round_trips_through_an_official_checkpoint_file(tmp_path, converter, build,
                                                         official_keys, shapes):
  model = build()
  variables = _random(model)
  tensors = state_dict.to_state_dict(variables, converter.name_map(model))
  buffers = converter.recomputed(model)
  assert set(tensors) | set(buffers) == official_keys() and not set(tensors) & set(buffers)
  assert {k: tensors[k].shape for k in shapes} == shapes
  # 8² windows everywhere; the shifted blocks' masks at 16²: 4 windows.
  assert {v.shape for k, v in buffers.items() if k.endswith("index")} == {(64, 64)}
  assert {v.shape for k, v in buffers.items() if k.endswith("attn_mask")} == {(4, 64, 64)}
  _save_official({**tensors, **buffers}, tmp_path / "model.pth")
  read = state_dict.read(str(tmp_path / "model.pth"), converter.CONTAINERS)
  assert set(read) == official_keys()  # module. stripped, state_dict unwrapped
  converted, report = state_dict.from_state_dict(read, _template(model),
                                                 converter.name_map(model))
  assert report.unused == tuple(sorted(buffers)) and report.unfilled == ()
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(nn.unbox(variables))):
    np.testing.assert_array_equal(a, b)
  again = state_dict.to_state_dict(converted, converter.name_map(model))
  assert all(np.array_equal(again[k], read[k]) for k in tensors)
  x, t, lq = _inputs(batch=2)
  out = model.apply(converted, x, t, lq)
  assert out.shape == (2, SIZE, SIZE, 3) and np.isfinite(out).all()


def test_resshift_layouts_compute_the_official_resblock():
  """conv_in, then the first ResBlock (GN → SiLU → conv; GN·(1 + scale) + shift from
  emb_layers; SiLU → conv; + x) in torch from the official tensors, against effcomp's."""
  model = _resshift()
  variables = _random(model)
  t_ = {k: torch.from_numpy(np.array(v)) for k, v in
        state_dict.to_state_dict(variables, resshift.name_map(model)).items()}
  x, t, lq = _inputs(batch=2)
  _, inter = model.apply(variables, x, t, lq, capture_intermediates=True,
                         mutable=["intermediates"])
  inter = inter["intermediates"]
  emb = torch.from_numpy(np.array(inter["time_embed"]["__call__"][0]))
  h0 = F.conv2d(torch.from_numpy(np.concatenate([x, lq], -1).transpose(0, 3, 1, 2).copy()),
                t_["input_blocks.0.0.weight"], t_["input_blocks.0.0.bias"], padding=1)
  p = "input_blocks.1.0"
  gn = lambda h, name: F.group_norm(h, 32, t_[f"{p}.{name}.weight"], t_[f"{p}.{name}.bias"])
  h = F.conv2d(F.silu(gn(h0, "in_layers.0")), t_[f"{p}.in_layers.2.weight"],
               t_[f"{p}.in_layers.2.bias"], padding=1)
  scale, shift = F.linear(F.silu(emb), t_[f"{p}.emb_layers.1.weight"],
                          t_[f"{p}.emb_layers.1.bias"])[..., None, None].chunk(2, dim=1)
  h = F.silu(gn(h, "out_layers.0") * (1 + scale) + shift)
  h = h0 + F.conv2d(h, t_[f"{p}.out_layers.3.weight"], t_[f"{p}.out_layers.3.bias"], padding=1)
  expected = h.numpy().transpose(0, 2, 3, 1)  # values in the hundreds: compare to the scale
  np.testing.assert_allclose(inter["down_0_0_res"]["__call__"][0], expected, rtol=0,
                             atol=1e-5 * np.abs(expected).max())


def test_ditsr_adafm_bias_is_the_official_raw_linear_bias_minus_one():
  """effcomp's scale 1 + Linear(SiLU(emb)) equals the official raw Linear output with the
  checkpoint's bias b, read as b − 1."""
  model = _ditsr()
  variables = _random(model)
  tensors = state_dict.to_state_dict(variables, ditsr.name_map(model))
  ours = nn.unbox(variables)["params"]["down_0_stage"]["blocks_1"]
  for part in ("msa", "mlp"):
    np.testing.assert_array_equal(
        tensors[f"input_blocks.1.0.blocks.1.adaLN_scale_{part}.1.bias"],
        np.asarray(ours[f"adafm_{part}"]["bias"]) + 1)
  assert tensors["input_blocks.1.0.blocks.1.adaLN_scale_msa.1.weight"].shape == (8 * 5, 128)
  x, t, lq = _inputs(batch=2)
  _, inter = model.apply(variables, x, t, lq, capture_intermediates=True,
                         mutable=["intermediates"])
  inter = inter["intermediates"]
  emb = torch.from_numpy(np.array(inter["time_embed"]["__call__"][0]))
  key = "input_blocks.1.0.blocks.1.adaLN_scale_mlp.1"
  official = F.linear(F.silu(emb), torch.from_numpy(tensors[f"{key}.weight"]),
                      torch.from_numpy(tensors[f"{key}.bias"]))
  ours_scale = 1 + np.asarray(inter["down_0_stage"]["blocks_1"]["adafm_mlp"]["__call__"][0])
  np.testing.assert_allclose(ours_scale, official.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("converter,build", [(resshift, _resshift), (ditsr, _ditsr)],
                         ids=["resshift", "ditsr"])
def test_shape_mismatch_extra_and_missing_tensors(converter, build):
  model = build()
  name_map = converter.name_map(model)
  tensors = state_dict.to_state_dict(_random(model), name_map)
  template = _template(model)
  bad = {**tensors, "input_blocks.0.0.weight": np.zeros((32, 7, 3, 3), np.float32)}
  with pytest.raises(ValueError, match=r"wrong shape input_blocks\.0\.0\.weight \(32, 7, 3, 3\)"):
    state_dict.from_state_dict(bad, template, name_map)
  _, report = state_dict.from_state_dict({**tensors, "feature_extractor.0.weight":
                                          np.zeros(3, np.float32)}, template, name_map)
  assert report.unused == ("feature_extractor.0.weight",)
  missing = {k: v for k, v in tensors.items() if k != "out.2.bias"}
  with pytest.raises(ValueError, match=r"no tensor for 1 leaves: params/conv_out/bias"):
    state_dict.from_state_dict(missing, template, name_map)


def test_models_the_official_code_cannot_run_are_errors():
  with pytest.raises(ValueError, match="window_mask"):
    resshift.name_map(ResShiftUNet(**{**TINY, "window_mask": "swin"}))
  with pytest.raises(ValueError, match="image_size"):
    ditsr.name_map(DiTSR(**{**TINY, "image_size": None}))
  with pytest.raises(ValueError, match="norm_groups"):
    resshift.name_map(ResShiftUNet(**{**TINY, "norm_groups": 16}))
  with pytest.raises(ValueError, match="conditioning"):
    ditsr.name_map(DiTSR(**{**TINY, "conditioning": "adaln"}))
  with pytest.raises(ValueError, match="resshift_unet"):
    resshift.name_map(_ditsr())
  with pytest.raises(ValueError, match="dit_sr"):
    ditsr.recomputed(_resshift())
