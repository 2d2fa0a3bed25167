"""IPT-V2 for SR: FCSA and GGSA against naive per-window / per-grid-group loops, the
re-parameterized FFN against its training form, output shapes for any input size,
parameter counts, logical axis names and gradients."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.models.sr.iptv2 import (IPTV2, IPTV2_SIZES, FocalContextAttention,
                                     GlobalGridAttention, grid_partition, grid_reverse,
                                     layer_schedule, reparameterize)
from effcomp.registry import MODELS
from effcomp.train.sharding import LOGICAL_RULES

# Two groups; the second holds FCSA, GGSA and a shifted FCSA (layer j = 2).
TINY = dict(embed_dim=8, depths=(2, 3), num_heads=(2, 4), window_size=4, grid_size=4,
            mlp_ratio=2.0)


def _key(seed=0):
  return jax.random.key(seed, impl="rbg")  # Faster to compile on the CPU than threefry.


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def _shapes(module, x):
  return jax.eval_shape(lambda: nn.unbox(module.init(_key(), x))["params"])


def _random_params(module, x, seed=0):
  """Nonzero parameters without compiling an init: kernels N(0, 1/fan_in), LayerNorm scales
  and temperatures 1 + 0.2·N(0, 1), everything else (biases, bias tables) 0.2·N(0, 1)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, noise = jax.tree_util.keystr(path), rng.normal(size=leaf.shape).astype(np.float32)
    if name.endswith("['kernel']"):
      return noise / math.sqrt(math.prod(leaf.shape[:-1]))
    return float(name.endswith(("['scale']", "['temperature']"))) + 0.2 * noise
  return jax.tree_util.tree_map_with_path(draw, _shapes(module, x))


def _num_params(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _softmax(z):
  z = np.exp(z - z.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def _linear(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def test_iptv2_is_registered():
  assert MODELS.get("iptv2") is IPTV2


@pytest.mark.parametrize("scale,upsampler", [(2, "pixelshuffledirect"), (3, "pixelshuffle"),
                                             (4, "pixelshuffledirect"), (4, "pixelshuffle")])
def test_output_is_scale_times_the_input_for_sizes_that_are_not_window_multiples(scale,
                                                                                  upsampler):
  x = jnp.zeros((2, 10, 13, 3))  # Padded to 12×16 (window = grid = 4).
  model = IPTV2(scale=scale, upsampler=upsampler, **TINY)
  out = jax.eval_shape(lambda: model.init_with_output(_key(), x)[0])
  assert out.shape == (2, 10 * scale, 13 * scale, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize("field,value,match", [
    ("scale", 5, "scale=5"), ("scale", 1, "scale=1"), ("ffn", "conv", "ffn='conv'"),
    ("num_heads", (3, 4), "num_heads=\\(3, 4\\)"), ("grid_size", 0, "grid_size=0"),
    ("upsampler", "bicubic", "upsampler='bicubic'")])
def test_bad_configuration_raises_a_value_error_naming_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    IPTV2(**{**TINY, field: value}).init(_key(), jnp.zeros((1, 8, 8, 3)))


def test_grid_partition_groups_pixels_at_the_same_offset_of_every_cell():
  x = _images((2, 8, 12, 3))  # G = 4: cells of 2×3 pixels, 2·3 groups per image.
  groups = grid_partition(x, 4)
  assert groups.shape == (2 * 2 * 3, 4, 4, 3)
  b, i, j = 1, 1, 2
  np.testing.assert_array_equal(groups[b * 6 + i * 3 + j], x[b, i::2, j::3])
  np.testing.assert_array_equal(grid_reverse(groups, 4, 8, 12), x)


def test_groups_alternate_fcsa_and_ggsa_and_shift_every_other_fcsa():
  assert layer_schedule(6, 8) == (("fcsa", 0), ("ggsa", 0), ("fcsa", 4), ("ggsa", 0),
                                  ("fcsa", 0), ("ggsa", 0))
  shapes = _shapes(IPTV2(**TINY), jnp.zeros((1, 8, 8, 3)))["groups_1"]
  assert [next(k for k in ("fcsa", "ggsa") if k in shapes[f"layers_{j}"]) for j in range(3)] == [
      "fcsa", "ggsa", "fcsa"]


def _naive_fcsa(p, x, heads, ws, shift):
  """FCSA by hand: 1×1 + depthwise 3×3 projection, roll by −shift, then for every window and
  head the channel attention softmax(τ·q̂ᵀk̂) v over the window's tokens, roll back, 1×1."""
  x = np.asarray(x, np.float64)
  b, height, width, c = x.shape
  d = c // heads
  qkv = _linear(p["qkv"], x)
  kernel = np.asarray(p["qkv_dwconv"]["kernel"], np.float64)[:, :, 0]
  padded = np.pad(qkv, ((0, 0), (1, 1), (1, 1), (0, 0)))
  qkv = sum(padded[:, i:i + height, j:j + width] * kernel[i, j]
            for i in range(3) for j in range(3)) + np.asarray(p["qkv_dwconv"]["bias"])
  qkv = np.roll(qkv, (-shift, -shift), axis=(1, 2))
  out = np.zeros((b, height, width, c))
  for n in range(b):
    for r0 in range(0, height, ws):
      for c0 in range(0, width, ws):
        tokens = qkv[n, r0:r0 + ws, c0:c0 + ws].reshape(ws * ws, 3 * c)
        for h in range(heads):
          q, k, v = (tokens[:, part * c + h * d: part * c + (h + 1) * d] for part in range(3))
          q = q / np.maximum(np.linalg.norm(q, axis=0), 1e-12)
          k = k / np.maximum(np.linalg.norm(k, axis=0), 1e-12)
          attn = _softmax(float(p["temperature"][h]) * q.T @ k)  # [d, d]
          out[n, r0:r0 + ws, c0:c0 + ws, h * d:(h + 1) * d] = (attn @ v.T).T.reshape(ws, ws, d)
  return _linear(p["proj"], np.roll(out, (shift, shift), axis=(1, 2)))


@pytest.mark.parametrize("shift", [0, 2])
def test_fcsa_is_channel_attention_within_each_shifted_window(shift):
  x = _images((2, 8, 12, 8), seed=shift)
  module = FocalContextAttention(num_heads=2, window_size=4, shift_size=shift)
  params = _random_params(module, x, seed=shift)
  out = jax.jit(module.apply)({"params": params}, x)
  np.testing.assert_allclose(out, _naive_fcsa(params, x, 2, 4, shift), atol=2e-5, rtol=1e-4)


def _naive_ggsa(p, x, heads, g):
  """GGSA by hand: for each offset (i, j) inside the (H/G)×(W/G) cells, gather the G² pixels
  (i + r·H/G, j + c·W/G), multi-head attention with bias table[(Δr + G − 1)(2G − 1) +
  Δc + G − 1], scatter the outputs back to the same pixels."""
  p, x = p["attn"], np.asarray(x, np.float64)
  b, height, width, c = x.shape
  d, sh, sw = c // heads, height // g, width // g
  table = np.asarray(p["relative_position_bias_table"], np.float64)
  pos = [(r, col) for r in range(g) for col in range(g)]
  index = np.array([[(r1 - r2 + g - 1) * (2 * g - 1) + c1 - c2 + g - 1 for r2, c2 in pos]
                    for r1, c1 in pos])
  out = np.zeros_like(x)
  for n in range(b):
    for i in range(sh):
      for j in range(sw):
        rows, cols = i + sh * np.arange(g), j + sw * np.arange(g)
        qkv = _linear(p["qkv"], x[n][np.ix_(rows, cols)].reshape(g * g, c))
        heads_out = []
        for h in range(heads):
          q, k, v = (qkv[:, part * c + h * d: part * c + (h + 1) * d] for part in range(3))
          heads_out.append(_softmax(q @ k.T * d ** -0.5 + table[index, h]) @ v)
        out[n][np.ix_(rows, cols)] = _linear(p["proj"], np.concatenate(heads_out, -1)).reshape(
            g, g, c)
  return out


def test_ggsa_attends_among_the_tokens_at_the_same_position_of_every_window():
  x = _images((2, 8, 12, 8), seed=3)  # G = 4 over cells of 2×3: unequal strides.
  module = GlobalGridAttention(num_heads=2, grid_size=4)
  params = _random_params(module, x, seed=3)
  out = jax.jit(module.apply)({"params": params}, x)
  np.testing.assert_allclose(out, _naive_ggsa(params, x, 2, 4), atol=2e-5, rtol=1e-4)


def test_reparameterized_model_computes_the_training_form_function():
  x = _images((2, 13, 10, 3), seed=4)  # Not multiples of the window: padded and cropped.
  rep, merged = IPTV2(scale=3, ffn="rep", **TINY), IPTV2(scale=3, ffn="dwconv", **TINY)
  params = _random_params(rep, x, seed=4)
  folded = reparameterize(params)
  assert jax.tree.structure(folded) == jax.tree.structure(_shapes(merged, x))
  assert _num_params(folded) < _num_params(params)
  expected, out = jax.jit(lambda p, q: (rep.apply({"params": p}, x),
                                        merged.apply({"params": q}, x)))(params, folded)
  assert out.shape == (2, 39, 30, 3) and np.isfinite(expected).all()
  np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


# The default (IPT-V2-light; the paper gives no SR size) is sized like SwinIR-light
# (910,152 / 918,267 / 929,628 at ×2 / ×3 / ×4): the counts the iptv2 docstring states.
@pytest.mark.parametrize("scale,merged,training", [(2, 884_544, 977_424),
                                                   (3, 892_659, 985_539),
                                                   (4, 904_020, 996_900)])
def test_default_parameter_count_matches_the_stated_light_size(scale, merged, training):
  assert IPTV2_SIZES["IPT-V2-light"] == {
      k: getattr(IPTV2(), k) for k in IPTV2_SIZES["IPT-V2-light"]}
  x = jnp.zeros((1, 8, 8, 3))
  counts = [_num_params(_shapes(IPTV2(scale=scale, ffn=ffn), x)) for ffn in ("dwconv", "rep")]
  print(f"IPT-V2-light x{scale}: {counts[0]:,} parameters (inference), {counts[1]:,} (training)")
  assert counts == [merged, training]
  assert 0.8e6 <= merged <= 0.91e6


@pytest.mark.parametrize("config", [dict(TINY), dict(TINY, ffn="dwconv", upsampler="pixelshuffle")])
def test_every_parameter_has_logical_axis_names_the_sharding_rules_know(config):
  boxed = jax.eval_shape(lambda: IPTV2(**config).init(_key(), jnp.zeros((1, 8, 8, 3)))["params"])
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  known = {name for name, _ in LOGICAL_RULES} | {None}
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  assert all(len(x.names) == len(x.value.shape) and set(x.names) <= known for x in leaves)


def test_gradient_reaches_every_parameter():
  x, target = _images((2, 16, 16, 3), seed=5), _images((2, 32, 32, 3), seed=6)
  model = IPTV2(**TINY)
  params = _random_params(model, x, seed=5)
  loss = lambda p: jnp.mean((model.apply({"params": p}, x) - target) ** 2)
  flat = jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(loss))(params))
  remat = IPTV2(remat=True, **TINY)  # Traces (not compiled): remat keeps the parameters.
  remat_grads = jax.eval_shape(jax.grad(
      lambda p: jnp.mean((remat.apply({"params": p}, x) - target) ** 2)), params)
  assert jax.tree.structure(remat_grads) == jax.tree.structure(params)
  dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g))]
  assert len(flat) > 50 and not dead, dead
