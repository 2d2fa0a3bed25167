"""Super-resolution models: pixel shuffle against torch, the upsamplers, SwinIR's window
pieces against naive definitions, EDSR and SwinIR against PyTorch transcriptions of the
references with the same weights, output shapes, and the published parameter counts."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effcomp.models.sr import (DIV2K_RGB_MEAN, EDSR, SWINIR_CLASSICAL, SwinIR, Upsampler,
                               UpsampleOneStep, normalize, pixel_shuffle)
from effcomp.models.sr.swinir import (relative_position_index, shifted_window_mask,
                                      window_partition, window_reverse)
from effcomp.registry import MODELS
from effcomp.train.sharding import LOGICAL_RULES

# EDSR-PyTorch `MeanShift` rgb_mean, SwinIR `rgb_mean`: used by the torch transcriptions.
REFERENCE_RGB_MEAN = (0.4488, 0.4371, 0.4040)
TINY_EDSR = dict(n_resblocks=2, n_feats=8)
TINY_SWINIR = dict(embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4)


def _key(seed=0):
  return jax.random.key(seed, impl="rbg")  # Faster to compile on the CPU than threefry.


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def _param_shapes(model, hw):
  """Unboxed parameter ShapeDtypeStructs of `model` on a [1, hw, hw, 3] input (no compile)."""
  return jax.eval_shape(
      lambda: nn.unbox(model.init(_key(), jnp.zeros((1, hw, hw, 3))))["params"])


def _random_params(model, shape, seed=0):
  """Parameters for `model` on inputs of `shape`, drawn from numpy without compiling an init:
  kernels N(0, 1/fan_in) (unit-scale activations, so nonlinearities matter), LayerNorm
  scales 1 + 0.2·N(0, 1), everything else (biases, bias tables) 0.2·N(0, 1)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, noise = jax.tree_util.keystr(path), rng.normal(size=leaf.shape).astype(np.float32)
    if name.endswith("['kernel']"):
      return noise / math.sqrt(math.prod(leaf.shape[:-1]))
    return float(name.endswith("['scale']")) + 0.2 * noise
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(_key(), jnp.zeros(shape)))["params"])
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _num_params(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def test_models_are_registered():
  assert MODELS.get("edsr") is EDSR and MODELS.get("swinir") is SwinIR


def test_mean_shift_uses_the_div2k_rgb_mean():
  assert DIV2K_RGB_MEAN == REFERENCE_RGB_MEAN
  np.testing.assert_allclose(normalize(jnp.ones((1, 1, 1, 3)), 255.0)[0, 0, 0],
                             255 * (1 - np.array(REFERENCE_RGB_MEAN)), rtol=1e-6)


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_torch(r):
  x = np.random.default_rng(r).normal(size=(2, 3, 5, 4 * r * r)).astype(np.float32)
  expected = F.pixel_shuffle(torch.from_numpy(x).permute(0, 3, 1, 2), r).permute(0, 2, 3, 1)
  np.testing.assert_array_equal(pixel_shuffle(jnp.asarray(x), r), expected.numpy())


@pytest.mark.parametrize("scale,kernels", [(2, [(3, 3, 8, 32)]), (3, [(3, 3, 8, 72)]),
                                           (4, [(3, 3, 8, 32), (3, 3, 8, 32)])])
def test_upsampler_is_log2_scale_convs_for_powers_of_two_and_one_9c_conv_for_three(scale, kernels):
  x = jnp.zeros((1, 5, 6, 8))
  params = jax.eval_shape(lambda: nn.unbox(Upsampler(scale).init(_key(), x))["params"])
  assert [params[f"conv_{i}"]["kernel"].shape for i in range(len(params))] == kernels
  assert jax.eval_shape(lambda: Upsampler(scale).init_with_output(_key(), x)[0]).shape == (
      1, 5 * scale, 6 * scale, 8)
  one_step = UpsampleOneStep(scale)
  params = jax.eval_shape(lambda: nn.unbox(one_step.init(_key(), x))["params"])
  assert params["conv"]["kernel"].shape == (3, 3, 8, 3 * scale * scale)
  assert jax.eval_shape(lambda: one_step.init_with_output(_key(), x)[0]).shape == (
      1, 5 * scale, 6 * scale, 3)


def test_upsampler_rejects_scales_that_are_not_powers_of_two_or_three():
  with pytest.raises(ValueError, match="scale=5"):
    Upsampler(5).init(_key(), jnp.zeros((1, 4, 4, 8)))


@pytest.mark.parametrize("cls,config", [(EDSR, TINY_EDSR), (SwinIR, TINY_SWINIR)])
@pytest.mark.parametrize("scale", [1, 5, 8])
def test_models_reject_scales_other_than_2_3_4(cls, config, scale):
  with pytest.raises(ValueError, match=f"scale={scale}"):
    cls(scale=scale, **config).init(_key(), jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize("cls,config", [(EDSR, TINY_EDSR), (SwinIR, TINY_SWINIR)])
def test_models_reject_inputs_that_are_not_nhwc_rgb(cls, config):
  with pytest.raises(ValueError, match="expected \\[batch, height, width, 3\\]"):
    cls(**config).init(_key(), jnp.zeros((1, 3, 8, 8)))


@pytest.mark.parametrize("cls,config", [(EDSR, TINY_EDSR), (SwinIR, TINY_SWINIR)])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_scale_times_the_input_for_any_size(cls, config, scale):
  x = jnp.zeros((2, 10, 13, 3))  # 10×13: not a multiple of SwinIR's window (4).
  out = jax.eval_shape(lambda: cls(scale=scale, **config).init_with_output(_key(), x)[0])
  assert out.shape == (2, 10 * scale, 13 * scale, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize("cls,config", [(EDSR, TINY_EDSR), (SwinIR, TINY_SWINIR),
                                        (SwinIR, dict(TINY_SWINIR, upsampler="pixelshuffle"))])
def test_every_parameter_has_logical_axis_names_the_sharding_rules_know(cls, config):
  boxed = jax.eval_shape(lambda: cls(**config).init(_key(), jnp.zeros((1, 8, 8, 3)))["params"])
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  known = {name for name, _ in LOGICAL_RULES} | {None}
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  assert all(len(x.names) == len(x.value.shape) and set(x.names) <= known for x in leaves)


@pytest.mark.parametrize("cls,config", [(EDSR, TINY_EDSR), (SwinIR, TINY_SWINIR)])
def test_bfloat16_compute_keeps_float32_parameters_and_output(cls, config):
  x = _images((1, 8, 8, 3))
  out, variables = jax.eval_shape(
      lambda: cls(dtype="bfloat16", **config).init_with_output(_key(), x))
  assert out.dtype == jnp.float32 and out.shape == (1, 16, 16, 3)
  assert {leaf.dtype for leaf in jax.tree.leaves(nn.unbox(variables))} == {jnp.dtype("float32")}


# Published parameter counts (rel = within 1 %).
#  * EDSR-baseline: EDSR-PyTorch README table ("EDSR_baseline_x2 1.37 M", x3 1.55 M, x4 1.52 M).
#  * SwinIR-light: 910 K (×2) / 930 K (×4), the state-dict count quoted by later papers'
#    lightweight-SR tables (e.g. MambaIRv2, CVPR 2025); the SwinIR paper (Table 3) lists
#    878 K / 886 K / 897 K without the 24 relative position bias tables (checked below).
#  * Classical SwinIR ×4: 11.9 M, SwinIR README ("SwinIR | DIV2K | ... | 11.9M").
@pytest.mark.parametrize("name,model,published", [
    ("EDSR-baseline x2", EDSR(scale=2), 1.37e6),
    ("EDSR-baseline x3", EDSR(scale=3), 1.55e6),
    ("EDSR-baseline x4", EDSR(scale=4), 1.52e6),
    ("SwinIR-light x2", SwinIR(scale=2), 910e3),
    ("SwinIR-light x4", SwinIR(scale=4), 930e3),
    ("SwinIR classical x4", SwinIR(scale=4, **SWINIR_CLASSICAL), 11.9e6),
])
def test_parameter_count_of_default_config_matches_published(name, model, published):
  count = _num_params(_param_shapes(model, 8))
  assert abs(count - published) <= 0.01 * published, (name, count, published)


@pytest.mark.parametrize("scale,paper", [(2, 878e3), (3, 886e3), (4, 897e3)])
def test_swinir_light_count_without_bias_tables_matches_swinir_paper_table3(scale, paper):
  shapes = _param_shapes(SwinIR(scale=scale), 8)
  tables = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
            if "relative_position_bias_table" in jax.tree_util.keystr(path)]
  assert len(tables) == 24 and all(t.shape == (15 * 15, 6) for t in tables)
  count = _num_params(shapes) - _num_params(tables)
  assert abs(count - paper) <= 500, count  # The paper rounds to thousands.


def test_window_partition_takes_row_major_windows_and_reverse_inverts_it():
  x = _images((2, 8, 12, 3))
  windows = window_partition(x, 4)
  assert windows.shape == (2 * 2 * 3, 4, 4, 3)
  np.testing.assert_array_equal(windows[1 * 6 + 1 * 3 + 2], x[1, 4:8, 8:12])  # image 1, (1, 2)
  np.testing.assert_array_equal(window_reverse(windows, 4, 8, 12), x)


def _reference_relative_position_index(ws):
  """The reference `WindowAttention.__init__` computation, in torch."""
  coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
  flat = torch.flatten(coords, 1)
  rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
  rel[:, :, 0] += ws - 1
  rel[:, :, 1] += ws - 1
  rel[:, :, 0] *= 2 * ws - 1
  return rel.sum(-1).numpy()


@pytest.mark.parametrize("ws", [2, 4, 8])
def test_relative_position_index_matches_reference(ws):
  index = relative_position_index(ws)
  np.testing.assert_array_equal(index, _reference_relative_position_index(ws))
  assert index.min() == 0 and index.max() == (2 * ws - 1) ** 2 - 1


def _naive_allowed(height, width, ws, shift):
  """[nW, w², w²]: may token p attend to token q in a window of the map rolled by −shift?
  Yes iff the roll moved both by the same displacement, i.e. did not wrap one of them
  around the border (they were neighbours in the unrolled image too)."""
  out = []
  for wr in range(height // ws):
    for wc in range(width // ws):
      rows, cols = np.meshgrid(wr * ws + np.arange(ws), wc * ws + np.arange(ws), indexing="ij")
      rows, cols = rows.reshape(-1), cols.reshape(-1)
      orig_r, orig_c = (rows + shift) % height, (cols + shift) % width
      same_r = (orig_r[:, None] - orig_r[None]) == (rows[:, None] - rows[None])
      same_c = (orig_c[:, None] - orig_c[None]) == (cols[:, None] - cols[None])
      out.append(same_r & same_c)
  return np.stack(out)


@pytest.mark.parametrize("height,width,ws,shift", [(8, 12, 4, 2), (4, 4, 4, 2), (16, 8, 8, 4),
                                                   (6, 9, 3, 1)])
def test_shifted_window_mask_blocks_exactly_the_pairs_the_roll_wrapped(height, width, ws, shift):
  mask = shifted_window_mask(height, width, ws, shift)
  allowed = _naive_allowed(height, width, ws, shift)
  assert mask.shape == allowed.shape
  np.testing.assert_array_equal(mask, np.where(allowed, 0.0, -100.0))


class _TorchEDSR(torch.nn.Module):
  """EDSR-PyTorch `src/model/edsr.py` (MeanShift convs, head / body / tail), tiny sizes."""

  def __init__(self, scale, n_resblocks, n_feats, res_scale, rgb_range=255.0):
    super().__init__()
    conv = lambda cin, cout: torch.nn.Conv2d(cin, cout, 3, padding=1)

    def mean_shift(sign):
      m = torch.nn.Conv2d(3, 3, 1)
      m.weight.data = torch.eye(3).view(3, 3, 1, 1)
      m.bias.data = sign * rgb_range * torch.tensor(REFERENCE_RGB_MEAN)
      return m
    self.sub_mean, self.add_mean, self.res_scale = mean_shift(-1), mean_shift(1), res_scale
    self.head = torch.nn.Sequential(conv(3, n_feats))
    self.blocks = torch.nn.ModuleList(
        torch.nn.Sequential(conv(n_feats, n_feats), torch.nn.ReLU(), conv(n_feats, n_feats))
        for _ in range(n_resblocks))
    self.body_conv = conv(n_feats, n_feats)
    up = []
    for r in ((2,) * int(math.log2(scale)) if scale != 3 else (3,)):
      up += [conv(n_feats, r * r * n_feats), torch.nn.PixelShuffle(r)]
    self.upsample, self.tail_conv = torch.nn.Sequential(*up), conv(n_feats, 3)

  def forward(self, x):
    x = self.head(self.sub_mean(x))
    res = x
    for block in self.blocks:
      res = block(res).mul(self.res_scale) + res
    res = self.body_conv(res) + x
    return self.add_mean(self.tail_conv(self.upsample(res)))

  def flax_params(self):
    conv = lambda m: {"kernel": m.weight.detach().permute(2, 3, 1, 0).numpy(),
                      "bias": m.bias.detach().numpy()}
    params = {"conv_first": conv(self.head[0]), "conv_after_body": conv(self.body_conv),
              "conv_last": conv(self.tail_conv),
              "upsample": {f"conv_{j}": conv(self.upsample[2 * j])
                           for j in range(len(self.upsample) // 2)}}
    params.update({f"body_{i}": {"conv1": conv(b[0]), "conv2": conv(b[2])}
                   for i, b in enumerate(self.blocks)})
    return params


@pytest.mark.parametrize("scale", [3, 4])
def test_edsr_matches_pytorch_reimplementation_with_the_same_weights(scale):
  torch.manual_seed(scale)
  ref = _TorchEDSR(scale, res_scale=0.5, **TINY_EDSR)
  x = _images((2, 7, 9, 3), seed=scale)
  with torch.no_grad():
    expected = ref(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2) * 255) / 255
  model = EDSR(scale=scale, res_scale=0.5, **TINY_EDSR)
  assert jax.tree.structure(ref.flax_params()) == jax.tree.structure(
      _param_shapes(model, 8))
  out = jax.jit(model.apply)({"params": ref.flax_params()}, x)
  np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), atol=1e-4, rtol=1e-4)


def _t(a):
  return torch.from_numpy(np.array(a, np.float32))


def _tconv(p, x):
  return F.conv2d(x, _t(p["kernel"]).permute(3, 2, 0, 1), _t(p["bias"]), padding=1)


def _tlinear(p, x):
  return F.linear(x, _t(p["kernel"]).T, _t(p["bias"]))


def _tnorm(p, x):
  return F.layer_norm(x, x.shape[-1:], _t(p["scale"]), _t(p["bias"]), 1e-5)


def _torch_swin_layer(p, x, size, heads, ws, shift):
  """Reference `SwinTransformerBlock.forward` on tokens x: [B, H·W, C]."""
  (height, width), (b, n_tok, c), n = size, x.shape, ws * ws
  h = _tnorm(p["norm1"], x).view(b, height, width, c)
  h = torch.roll(h, (-shift, -shift), (1, 2)) if shift else h
  win = h.view(b, height // ws, ws, width // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)
  qkv = _tlinear(p["attn"]["qkv"], win).reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
  attn = (qkv[0] * (c // heads) ** -0.5) @ qkv[1].transpose(-2, -1)
  index = torch.from_numpy(_reference_relative_position_index(ws)).view(-1)
  table = _t(p["attn"]["relative_position_bias_table"])
  attn = attn + table[index].view(n, n, -1).permute(2, 0, 1)[None]
  if shift:
    mask = _t(np.where(_naive_allowed(height, width, ws, shift), 0.0, -100.0))
    attn = (attn.view(b, -1, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
  h = _tlinear(p["attn"]["proj"], (attn.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(-1, n, c))
  h = h.view(b, height // ws, width // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
  h = h.reshape(b, height, width, c)
  h = torch.roll(h, (shift, shift), (1, 2)) if shift else h
  x = x + h.reshape(b, n_tok, c)
  return x + _tlinear(p["fc2"], F.gelu(_tlinear(p["fc1"], _tnorm(p["norm2"], x))))


def _torch_swinir(params, x, cfg, scale, upsampler):
  """Reference `SwinIR.forward` (check_image_size, mean, RSTBs, upsampler, crop): NHWC numpy."""
  ws, mean = cfg["window_size"], torch.tensor(REFERENCE_RGB_MEAN).view(1, 3, 1, 1)
  x = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)
  height, width = x.shape[2:]
  x = F.pad(x, (0, (ws - width % ws) % ws, 0, (ws - height % ws) % ws), "reflect") - mean
  x = _tconv(params["conv_first"], x)
  (b, c, *size), unembed = x.shape, lambda t: t.transpose(1, 2).reshape(b, c, *size)
  t = _tnorm(params["patch_embed_norm"], x.flatten(2).transpose(1, 2))
  for i, (depth, heads) in enumerate(zip(cfg["depths"], cfg["num_heads"])):
    p, res = params[f"layers_{i}"], t
    for j in range(depth):
      t = _torch_swin_layer(p[f"blocks_{j}"], t, size, heads, ws, j % 2 * (ws // 2))
    t = _tconv(p["conv"], unembed(t)).flatten(2).transpose(1, 2) + res
  x = _tconv(params["conv_after_body"], unembed(_tnorm(params["norm"], t))) + x
  if upsampler == "pixelshuffle":
    x = F.leaky_relu(_tconv(params["conv_before_upsample"], x))
    for j in range(len(params["upsample"])):
      x = F.pixel_shuffle(_tconv(params["upsample"][f"conv_{j}"], x), 2)
    x = _tconv(params["conv_last"], x)
  else:
    x = F.pixel_shuffle(_tconv(params["upsample"]["conv"], x), scale)
  return (x + mean)[:, :, :height * scale, :width * scale].permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("scale,upsampler", [(3, "pixelshuffledirect"), (4, "pixelshuffle")])
def test_swinir_matches_pytorch_transcription_of_the_reference(scale, upsampler):
  model = SwinIR(scale=scale, upsampler=upsampler, **TINY_SWINIR)
  x = _images((2, 10, 13, 3), seed=scale)  # Padded to 12×16: three windows × four.
  params = _random_params(model, x.shape)
  expected = _torch_swinir(params, x, TINY_SWINIR, scale, upsampler)
  np.testing.assert_allclose(jax.jit(model.apply)({"params": params}, x), expected, atol=1e-4,
                             rtol=1e-4)


def test_swinir_stochastic_depth_acts_only_in_training_and_remat_keeps_the_function():
  x = _images((4, 8, 8, 3))
  config = dict(TINY_SWINIR, depths=(2,), num_heads=(2,), drop_path_rate=0.5)
  model, remat = SwinIR(**config), SwinIR(remat=True, **config)
  params = _random_params(model, x.shape)

  @jax.jit
  def outputs(params):
    rngs = {"dropout": _key(1)}
    return [model.apply({"params": params}, x)] + [
        m.apply({"params": params}, x, train=train, rngs=rngs)
        for m in (model, remat) for train in (False, True)]
  no_rng, evaluate, train, remat_evaluate, remat_train = outputs(params)
  np.testing.assert_array_equal(evaluate, no_rng)
  assert not np.allclose(evaluate, train)
  np.testing.assert_allclose(remat_evaluate, evaluate, atol=1e-6)
  np.testing.assert_allclose(remat_train, train, atol=1e-6)
