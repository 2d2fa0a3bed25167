"""BasicSR checkpoints → effcomp's EDSR and SwinIR (effcomp.convert.basicsr): the official
key sets, exact round trips through a {'params_ema': ...} file, reports and errors, and one
window attention computed from the official tensors. No official code is imported: the
tests write checkpoints in the key layout of basicsr/archs/edsr_arch.py and swinir_arch.py."""

import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
import torch

from effcomp import runs
from effcomp.convert import basicsr, state_dict
from effcomp.models.sr import swinir

TINY_EDSR = dict(name="edsr", n_resblocks=2, n_feats=8, scale=4)
TINY_SWINIR = dict(name="swinir", embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4)
SIZE = 8  # LR side: two windows of 4


def _model(**fields):
  return runs.build_model(ml_collections.ConfigDict(fields), "float32")


def _template(model):
  return jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, SIZE, SIZE, 3), np.float32))


def _random(model, seed=0):
  """Variables of `model` drawn in numpy (no init compiled): kernels N(0, 1/fan_in), other
  leaves N(0, 0.2²) (+1 for LayerNorm scales), so every layer changes the output."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = rng.normal(size=leaf.shape).astype(np.float32)
    if path[-1].key == "kernel":
      return noise / math.sqrt(math.prod(leaf.shape[:-1]))
    return float(path[-1].key == "scale") + 0.2 * noise
  return jax.tree_util.tree_map_with_path(draw, nn.unbox(_template(model)))


def _conv(name):
  return [f"{name}.weight", f"{name}.bias"]


def _edsr_keys(blocks=2, upsample_convs=2):
  """EDSR(num_block=blocks, upscale=4): edsr_arch.py, make_layer(ResidualBlockNoBN) as
  `body`, arch_util.Upsample's nn.Sequential (conv, PixelShuffle, conv, PixelShuffle)."""
  keys = _conv("conv_first") + _conv("conv_after_body") + _conv("conv_last")
  for i in range(blocks):
    keys += _conv(f"body.{i}.conv1") + _conv(f"body.{i}.conv2")
  for j in range(upsample_convs):
    keys += _conv(f"upsample.{2 * j}")
  return set(keys)


def _swinir_keys(depths=(2, 1), upsampler="pixelshuffledirect", buffers=False):
  """SwinIR parameters (swinir_arch.py): RSTB `layers.i` = BasicLayer `residual_group` +
  '1conv' `conv`; blocks hold norm1, attn (bias table, qkv, proj), norm2, mlp (fc1, fc2);
  with `buffers` also relative_position_index and (odd, shifted blocks) attn_mask."""
  keys = _conv("conv_first") + _conv("patch_embed.norm") + _conv("norm") + \
      _conv("conv_after_body")
  for i, depth in enumerate(depths):
    keys += _conv(f"layers.{i}.conv")
    for j in range(depth):
      p = f"layers.{i}.residual_group.blocks.{j}"
      keys += [f"{p}.attn.relative_position_bias_table"]
      for m in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
        keys += _conv(f"{p}.{m}")
      if buffers:
        keys += [f"{p}.attn.relative_position_index"] + ([f"{p}.attn_mask"] if j % 2 else [])
  if upsampler == "pixelshuffledirect":
    keys += _conv("upsample.0")
  else:  # scale 4: conv_before_upsample (conv, LeakyReLU), Upsample (2 × conv, shuffle)
    keys += _conv("conv_before_upsample.0") + _conv("upsample.0") + _conv("upsample.2") + \
        _conv("conv_last")
  return set(keys)


def _official_index(ws):
  """WindowAttention's relative_position_index, as swinir_arch.py computes it: (row, col)
  of a row-major window, pairwise offsets + ws − 1, row offset · (2ws − 1) + col offset."""
  coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
  rel = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]).permute(1, 2, 0) + ws - 1
  return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def _official_mask(size, ws, shift):
  """SwinTransformerBlock.calculate_mask (swinir_arch.py): 9 regions of the rolled map,
  -100 between tokens of different regions of a window; [windows, ws², ws²]."""
  img = torch.zeros((1, size, size, 1))
  cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
  for cnt, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
    img[:, h, w, :] = cnt
  windows = img.view(1, size // ws, ws, size // ws, ws, 1).permute(0, 1, 3, 2, 4, 5)
  windows = windows.reshape(-1, ws * ws)
  diff = windows.unsqueeze(1) - windows.unsqueeze(2)
  return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _official_buffers(depths=(2, 1), ws=4):
  """The buffers BasicSR's SwinIR saves (img_size = SIZE)."""
  out = {}
  for i, depth in enumerate(depths):
    for j in range(depth):
      p = f"layers.{i}.residual_group.blocks.{j}"
      out[f"{p}.attn.relative_position_index"] = _official_index(ws).numpy()
      if j % 2:
        out[f"{p}.attn_mask"] = _official_mask(SIZE, ws, ws // 2).numpy()
  return out


def _save(tensors, path):
  """As BasicSR's `save_network` with EMA: {'params': ..., 'params_ema': ...}; 'params'
  holds other values, so reading the EMA weights is what the test sees."""
  ema = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
  torch.save({"params": {k: torch.zeros_like(v) for k, v in ema.items()}, "params_ema": ema},
             path)


@pytest.mark.parametrize("fields,keys,buffers", [
    (TINY_EDSR, _edsr_keys(), {}),
    (TINY_SWINIR, _swinir_keys(), _official_buffers()),
])
def test_round_trip_through_an_official_checkpoint_file(tmp_path, fields, keys, buffers):
  model = _model(**fields)
  variables = _random(model)
  name_map = basicsr.name_map(model)
  tensors = state_dict.to_state_dict(variables, name_map)
  assert set(tensors) == keys
  _save({**tensors, **buffers}, tmp_path / "net_g.pth")
  read = state_dict.read(str(tmp_path / "net_g.pth"), basicsr.CONTAINERS)
  basicsr.check_tensors(read)
  converted, report = state_dict.from_state_dict(read, _template(model), name_map)
  assert report.unused == tuple(sorted(buffers)) and report.unfilled == ()
  flat = state_dict.leaves(converted)
  assert flat == state_dict.leaves(variables)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  x = np.random.default_rng(0).uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  y = model.apply(converted, x)
  assert y.shape == (2, SIZE * model.scale, SIZE * model.scale, 3)
  assert np.isfinite(y).all()


def test_official_shapes_of_the_edsr_and_swinir_keys():
  edsr = state_dict.to_state_dict(_random(_model(**TINY_EDSR)), basicsr.name_map(
      _model(**TINY_EDSR)))
  assert edsr["conv_first.weight"].shape == (8, 3, 3, 3)
  assert edsr["upsample.2.weight"].shape == (32, 8, 3, 3)
  assert edsr["conv_last.weight"].shape == (3, 8, 3, 3)
  model = _model(**TINY_SWINIR, scale=4, upsampler="pixelshuffle")
  sd = state_dict.to_state_dict(_random(model), basicsr.name_map(model))
  assert set(sd) == _swinir_keys(upsampler="pixelshuffle")
  block = "layers.1.residual_group.blocks.0"
  assert sd[f"{block}.attn.qkv.weight"].shape == (36, 12)
  assert sd[f"{block}.attn.relative_position_bias_table"].shape == (49, 3)
  assert sd[f"{block}.mlp.fc1.weight"].shape == (24, 12)
  assert sd["conv_before_upsample.0.weight"].shape == (64, 12, 3, 3)
  assert sd["upsample.0.weight"].shape == (256, 64, 3, 3)


def test_wrong_shapes_extra_and_missing_tensors():
  model = _model(**TINY_SWINIR)
  name_map, template = basicsr.name_map(model), _template(model)
  tensors = state_dict.to_state_dict(_random(model), name_map)
  qkv = "layers.0.residual_group.blocks.1.attn.qkv.weight"
  with pytest.raises(ValueError, match=rf"wrong shape {qkv} \(36, 10\)"):
    state_dict.from_state_dict({**tensors, qkv: np.zeros((36, 10), np.float32)}, template,
                               name_map)
  _, report = state_dict.from_state_dict({**tensors, "extra.weight": np.ones(3)}, template,
                                         name_map)
  assert report.unused == ("extra.weight",)
  missing = {k: v for k, v in tensors.items() if k != "norm.weight"}
  with pytest.raises(ValueError, match=r"no tensor for 1 leaves: params/norm/scale"):
    state_dict.from_state_dict(missing, template, name_map)


def test_unsupported_official_variants_and_models_are_named():
  tensors = state_dict.to_state_dict(_random(_model(**TINY_SWINIR)),
                                     basicsr.name_map(_model(**TINY_SWINIR)))
  three_conv = {**tensors, "conv_after_body.0.weight": np.zeros((3, 12, 3, 3))}
  with pytest.raises(ValueError, match="resi_connection='3conv'"):
    basicsr.check_tensors(three_conv)
  with pytest.raises(ValueError, match="upsampler='nearest\\+conv'"):
    basicsr.check_tensors({**tensors, "conv_up1.weight": np.zeros((64, 64, 3, 3))})
  denoise = {k: v for k, v in tensors.items() if not k.startswith("upsample.")}
  with pytest.raises(ValueError, match="upsampler=''"):
    basicsr.check_tensors(denoise)
  with pytest.raises(ValueError, match="name='edsr' or name='swinir'"):
    basicsr.name_map(_model(name="mlp"))
  with pytest.raises(ValueError, match="config.model.scale=8"):
    basicsr.name_map(_model(**{**TINY_EDSR, "scale": 8}))
  with pytest.raises(ValueError, match="config.model.upsampler='nearest"):
    basicsr.name_map(_model(**TINY_SWINIR, upsampler="nearest+conv"))


def test_window_attention_computes_the_official_attention_from_official_tensors():
  """WindowAttention.forward (swinir_arch.py) in torch from the state dict: fused qkv split
  as [3, heads, head_dim], scale head_dim^-½, bias table[relative_position_index], the
  shifted block's calculate_mask, proj — against effcomp's attention (converted weights,
  its own mask)."""
  model = _model(**TINY_SWINIR)
  variables = _random(model)
  t = {k: torch.from_numpy(np.array(v)) for k, v in
       state_dict.to_state_dict(variables, basicsr.name_map(model)).items()}
  p, heads, ws, c = "layers.0.residual_group.blocks.1.attn", 2, 4, 12
  n, d = ws * ws, c // heads
  mask, index = _official_mask(SIZE, ws, ws // 2), _official_index(ws)  # [4, n, n], [n, n]
  x = torch.from_numpy(np.random.default_rng(1).normal(size=(8, n, c)).astype(np.float32))
  qkv = (x @ t[f"{p}.qkv.weight"].T + t[f"{p}.qkv.bias"]).reshape(8, n, 3, heads, d)
  q, k, v = qkv.permute(2, 0, 3, 1, 4)
  bias = t[f"{p}.relative_position_bias_table"][index.view(-1)].view(n, n, heads)
  attn = (q * d ** -0.5) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)[None]
  attn = (attn.view(2, 4, heads, n, n) + mask[None, :, None]).view(8, heads, n, n)
  out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(8, n, c)
  expected = out @ t[f"{p}.proj.weight"].T + t[f"{p}.proj.bias"]
  attention = swinir.WindowAttention(heads, ws)
  params = variables["params"]["layers_0"]["blocks_1"]["attn"]
  got = attention.apply({"params": params}, x.numpy(),
                        swinir.shifted_window_mask(SIZE, SIZE, ws, ws // 2))
  np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)
  assert np.abs(expected.numpy()).max() > 0.1  # not a trivially small output
