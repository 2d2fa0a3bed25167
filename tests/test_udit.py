"""U-DiT: token-downsampled attention against a naive per-sub-grid reference, RoPE2D, pixel
(un)shuffle, stage shapes and skip connections, adaLN-Zero, re-parameterization."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from effcomp.models.dit.udit import UDIT_SIZES, FeedForward, UDiT, UDiTLayer, reparameterize
from effcomp.nn.depthwise_conv import DepthwiseConv
from effcomp.nn.pixel_shuffle import pixel_shuffle, pixel_unshuffle
from effcomp.nn.downsampled_attention import (DownsampledAttention, rope2d_angles,
                                              space_to_submaps, submaps_to_space)
from effcomp.registry import MODELS
from effcomp.train.sharding import LOGICAL_RULES

TINY = dict(input_size=16, hidden_size=16, num_heads=2, depth=(1, 1, 1, 1, 1), num_classes=10)


def _inputs(batch=2, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(batch, size, size, 4)), jnp.float32),
          jnp.asarray(rng.integers(0, 1000, batch), jnp.int32),
          jnp.asarray(rng.integers(0, 10, batch), jnp.int32))


def _key(seed=0):
  # Counter-based 'rbg' keys: on the CPU, jitting an init with threefry keys compiles ~2.5×
  # slower, and the values of the initial weights do not matter to these tests.
  return jax.random.key(seed, impl="rbg")


def _params(module, *inputs):
  """The module's initial params (unboxed), from one jitted init."""
  return nn.unbox(jax.jit(module.init)(_key(), *inputs)["params"])


def _shapes(module, *inputs):
  """The module's parameter shapes (unboxed ShapeDtypeStructs); nothing is compiled."""
  return jax.eval_shape(lambda: nn.unbox(module.init(_key(), *inputs)["params"]))


def _normal(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _randomize(params, seed=1, scale=0.2):
  """Every parameter (array or ShapeDtypeStruct) replaced by N(0, scale²) from numpy: breaks
  the zero init so that outputs depend on every parameter."""
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(tree, [scale * _normal(leaf.shape, seed + i)
                                   for i, leaf in enumerate(leaves)])


def _naive_rope(q, rows, cols):
  """q [b, m, heads, d] rotated as complex pairs: pair 2k by col·ω_k, pair 2k+1 by row·ω_k."""
  d = q.shape[-1]
  omega = 10000.0 ** (-4.0 * np.arange(d // 4) / d)
  angle = np.zeros((len(rows), d // 2))
  angle[:, 0::2] = np.outer(cols, omega)
  angle[:, 1::2] = np.outer(rows, omega)
  z = (q[..., 0::2] + 1j * q[..., 1::2]) * np.exp(1j * angle)[None, :, None, :]
  out = np.empty_like(q)
  out[..., 0::2], out[..., 1::2] = z.real, z.imag
  return out


def _naive_downsampled_attention(x, p, heads, f, rope, cosine):
  """For each sub-grid (i, j): gather its tokens x[:, i + f·r, j + f·s] one by one, run
  full multi-head attention on them, write each output back to the pixel it came from."""
  b, height, width, c = x.shape
  d = c // heads
  out = np.zeros_like(x)
  for i in range(f):
    for j in range(f):
      coords = [(r, s) for r in range(i, height, f) for s in range(j, width, f)]
      tokens = np.stack([x[:, r, s] for r, s in coords], axis=1)  # [b, m, c]
      qkv = tokens @ p["qkv"]["kernel"] + p["qkv"]["bias"]
      q, k, v = (qkv[..., n * c:(n + 1) * c].reshape(b, len(coords), heads, d) for n in range(3))
      if rope:
        rows, cols = [r // f for r, _ in coords], [s // f for _, s in coords]
        q, k = _naive_rope(q, rows, cols), _naive_rope(k, rows, cols)
      if cosine:
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
        scale = np.exp(np.minimum(p["logit_scale"], math.log(100)))[None, :, None, None]
      else:
        scale = 1 / math.sqrt(d)
      logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
      weights = np.exp(logits - logits.max(-1, keepdims=True))
      weights /= weights.sum(-1, keepdims=True)
      o = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, len(coords), c)
      o = o @ p["out"]["kernel"] + p["out"]["bias"]
      for n, (r, s) in enumerate(coords):
        out[:, r, s] = o[:, n]
  return out


def test_submaps_are_the_strided_subgrids_and_merge_back():
  x = jnp.arange(2 * 8 * 6 * 3, dtype=jnp.float32).reshape(2, 8, 6, 3)
  sub = space_to_submaps(x, 2)
  assert sub.shape == (2, 4, 12, 3)
  for i in range(2):
    for j in range(2):
      np.testing.assert_array_equal(sub[:, 2 * i + j], x[:, i::2, j::2].reshape(2, 12, 3))
  np.testing.assert_array_equal(submaps_to_space(sub, 2, 8, 6), x)
  with pytest.raises(ValueError, match="down_factor=3"):
    space_to_submaps(x, 3)


@pytest.mark.parametrize("rope, attn_type, f", [(False, "dot", 2), (True, "cosine", 2),
                                                 (True, "dot", 4), (False, "cosine", 1)])
def test_downsampled_attention_is_full_attention_within_each_subgrid(rope, attn_type, f):
  x = _normal((2, 8, 8, 16), 0)
  module = DownsampledAttention(num_heads=2, down_factor=f, downsampler="none", attn_type=attn_type,
                                rope=rope)
  params = _randomize(_params(module, x), scale=0.3)
  if attn_type == "cosine":  # head 0 above the log(100) clamp, head 1 below
    params["attn"]["logit_scale"] = jnp.array([5.0, 1.0])
  got = module.apply({"params": params}, x)
  want = _naive_downsampled_attention(np.asarray(x, np.float64),
                                      jax.tree.map(lambda a: np.asarray(a, np.float64),
                                                   params["attn"]), 2, f, rope,
                                      attn_type == "cosine")
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def _previous_attention(x, p, heads, rope, cosine):
  """DownsampledAttention (f = 2, no downsampler) as effcomp computed it before issue 22:
  interleaved RoPE pairs, [..., N, heads, D] einsums, the scale on the logits, autodiff
  through `jax.nn.softmax`. The reference for the optimized path's outputs and gradients."""
  b, height, width, c = x.shape
  d, n = c // heads, height * width // 4
  qkv = (space_to_submaps(x, 2) @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(b, 4, n, 3, heads, d)
  q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
  if rope:
    angles = rope2d_angles(height // 2, width // 2, d)
    def rotate(t):
      re, im = t[..., 0::2], t[..., 1::2]
      cos, sin = jnp.cos(angles)[:, None], jnp.sin(angles)[:, None]
      return jnp.stack([re * cos - im * sin, re * sin + im * cos], -1).reshape(t.shape)
    q, k = rotate(q), rotate(k)
  if cosine:
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    scale = jnp.exp(jnp.minimum(p["logit_scale"], 4.6052))[:, None, None]
  else:
    scale = 1 / math.sqrt(d)
  weights = jax.nn.softmax(jnp.einsum("...qhd,...khd->...hqk", q, k) * scale, axis=-1)
  out = jnp.einsum("...hqk,...khd->...qhd", weights, v).reshape(b, 4, n, c)
  out = out @ p["out"]["kernel"] + p["out"]["bias"]
  return submaps_to_space(out, 2, height, width)


@pytest.mark.parametrize("rope, attn_type", [(True, "cosine"), (False, "dot"), (True, "dot")])
def test_optimized_attention_equals_the_previous_implementation_with_gradients(rope, attn_type):
  x = _normal((2, 8, 8, 16), 0)
  module = DownsampledAttention(num_heads=2, downsampler="none", attn_type=attn_type, rope=rope)
  params = _randomize(_params(module, x), scale=0.3)
  if attn_type == "cosine":
    params["attn"]["logit_scale"] = jnp.array([5.0, 1.0])
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  ours = lambda p, x: module.apply({"params": p}, x)
  previous = lambda p, x: _previous_attention(x, p["attn"], 2, rope, attn_type == "cosine")
  np.testing.assert_allclose(ours(params, x), previous(params, x), atol=1e-5)
  got, want = (jax.grad(loss(f), argnums=(0, 1))(params, x) for f in (ours, previous))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    # max |Δ| within 1e-5 of the leaf's largest gradient (float32 sums of up to ~100)
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)), jax.tree_util.keystr(path)


def test_downsampler_is_a_depthwise_conv_in_parallel_with_a_shortcut():
  x = _normal((1, 8, 8, 16), 0)
  with_conv = DownsampledAttention(num_heads=2, downsampler="dwconv3")
  params = _randomize(_params(with_conv, x))
  kernel = np.asarray(params["downsampler"]["kernel"])
  bias = np.asarray(params["downsampler"]["bias"])
  assert kernel.shape == (3, 3, 1, 16)
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  filtered = sum(kernel[a, b, 0] * padded[:, a:a + 8, b:b + 8] for a in range(3) for b in range(3))
  plain = DownsampledAttention(num_heads=2, downsampler="none")
  want = plain.apply({"params": {"attn": params["attn"]}}, x + filtered + bias)
  np.testing.assert_allclose(with_conv.apply({"params": params}, x), want, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="downsampler='dwconv4'"):
    DownsampledAttention(num_heads=2, downsampler="dwconv4").init(jax.random.key(0), x)


def test_rope2d_angles_follow_the_reference_frequencies():
  angles = np.asarray(rope2d_angles(4, 4, 8))
  omega = 10000.0 ** (-np.arange(0, 8, 4) / 8)
  n = 2 * 4 + 3  # row 2, column 3
  np.testing.assert_allclose(angles[n], [3 * omega[0], 2 * omega[0], 3 * omega[1], 2 * omega[1]],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="head_dim=6"):
    rope2d_angles(4, 4, 6)


def test_pixel_shuffles_match_pytorch():
  x = np.random.default_rng(0).normal(size=(2, 6, 4, 12)).astype(np.float32)
  to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  down = torch.nn.PixelUnshuffle(2)(to_nchw(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(pixel_unshuffle(jnp.asarray(x), 2), down)
  up = torch.nn.PixelShuffle(2)(to_nchw(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(pixel_shuffle(jnp.asarray(x), 2), up)
  np.testing.assert_array_equal(pixel_shuffle(pixel_unshuffle(jnp.asarray(x), 2), 2), x)


def _conv3x3(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.fixture(scope="module")
def tiny():
  """The tiny U-DiT, random params (no init compiled) and one compiled forward `run(params,
  y, force_drop_ids) -> (output, stage outputs, inputs of the two skip-fusing 1×1 convs)`."""
  model = UDiT(**TINY)
  x, t, y = _inputs()

  def capture_skips(store):
    def interceptor(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and context.module.name in (
          "reduce_chan_level2", "reduce_chan_level1"):
        store[context.module.name] = args[0]
      return next_fun(*args, **kwargs)
    return interceptor

  @jax.jit
  def run(params, labels, force_drop_ids):
    skips = {}
    with nn.intercept_methods(capture_skips(skips)):
      out, state = model.apply({"params": params}, x, t, labels, force_drop_ids=force_drop_ids,
                               mutable=["intermediates"])
    return out, {k: v[0] for k, v in state["intermediates"].items()}, skips

  return model, _randomize(_shapes(model, x, t, y), scale=0.1), run


def test_stage_shapes_and_skip_connections(tiny):
  _, params, run = tiny
  out, stages, skips = run(params, _inputs()[2], jnp.zeros(2, jnp.int32))
  assert {k: v.shape for k, v in stages.items()} == {
      "encoder1": (2, 16, 16, 16), "encoder2": (2, 8, 8, 32), "latent": (2, 4, 4, 64),
      "decoder2": (2, 8, 8, 32), "decoder1": (2, 16, 16, 32)}
  assert out.shape == (2, 16, 16, 8)
  skip2, skip1 = skips["reduce_chan_level2"], skips["reduce_chan_level1"]
  assert skip2.shape == (2, 8, 8, 64) and skip1.shape == (2, 16, 16, 32)
  np.testing.assert_array_equal(skip2[..., 32:], stages["encoder2"])
  np.testing.assert_array_equal(skip1[..., 16:], stages["encoder1"])
  up = pixel_shuffle(_conv3x3(stages["latent"], params["up3_2"]["kernel"]), 2)
  np.testing.assert_allclose(skip2[..., :32], up, rtol=1e-5, atol=1e-5)
  up = pixel_shuffle(_conv3x3(stages["decoder2"], params["up2_1"]["kernel"]), 2)
  np.testing.assert_allclose(skip1[..., :16], up, rtol=1e-5, atol=1e-5)


def test_at_init_every_layer_is_the_identity_and_the_output_is_zero():
  feats, c = _normal((2, 8, 8, 32), 1), _normal((2, 32), 2)
  layer = UDiTLayer(2, 2.0, 2, "dwconv5", True, "cosine", True, "rep")
  init = _params(layer, feats, c)
  apply = jax.jit(layer.apply)
  np.testing.assert_array_equal(apply({"params": init}, feats, c), feats)
  # The identity comes from the zero modulation, not from the layer ignoring its input.
  assert float(jnp.max(jnp.abs(apply({"params": _randomize(init)}, feats, c) - feats))) > 1e-2
  model = UDiT(**{**TINY, "depth": (0, 0, 0, 0, 0)})  # the output's zero comes from out_proj
  x, t, y = _inputs()
  init = _params(model, x, t, y)
  np.testing.assert_array_equal(jax.jit(model.apply)({"params": init}, x, t, y), 0.0)
  assert float(jnp.max(jnp.abs(init["final_out_proj"]["kernel"]))) == 0.0


def test_forced_label_dropout_nulls_every_stage(tiny):
  _, params, run = tiny
  y = _inputs()[2]
  forced = run(params, y, jnp.array([1, 0]))[0]
  null = run(params, jnp.array([10, 10]), jnp.zeros(2, jnp.int32))[0]
  cond = run(params, y, jnp.zeros(2, jnp.int32))[0]
  np.testing.assert_allclose(forced[0], null[0], atol=1e-6)
  np.testing.assert_allclose(forced[1], cond[1], atol=1e-6)
  assert float(jnp.max(jnp.abs(cond[0] - null[0]))) > 1e-4


def test_scanned_stages_equal_the_unrolled_layers_with_gradients():
  x, t, y = _inputs()
  unrolled = UDiT(**{**TINY, "depth": (1, 0, 0, 0, 0)}, scan_layers=False)
  params = _randomize(_shapes(unrolled, x, t, y), scale=0.15)
  loss = lambda m: jax.jit(jax.value_and_grad(
      lambda p: jnp.sum(jnp.sin(m.apply({"params": p}, x, t, y)))))
  want, want_grad = loss(unrolled)(params)
  for scanned in (unrolled.clone(scan_layers=True), unrolled.clone(scan_layers=True, remat=True)):
    assert jax.tree.structure(_shapes(scanned, x, t, y)) == jax.tree.structure(params)
    got, got_grad = loss(scanned)(params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_grad),
                            jax.tree.leaves(want_grad)):
      assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)) + 1e-7, jax.tree_util.keystr(path)


def test_reparameterized_layer_computes_the_same_function():
  feats, c = _normal((2, 8, 8, 32), 1), _normal((2, 32), 2)
  rep = UDiTLayer(2, 2.0, 2, "dwconv5", True, "cosine", True, "rep")
  plain = rep.clone(ffn="dwconv")
  params = _randomize(_shapes(rep, feats, c), scale=0.15)
  merged = reparameterize(params)
  assert jax.tree.structure(merged) == jax.tree.structure(_shapes(plain, feats, c))
  np.testing.assert_allclose(jax.jit(plain.apply)({"params": merged}, feats, c),
                             jax.jit(rep.apply)({"params": params}, feats, c),
                             rtol=1e-4, atol=1e-4)
  # The whole model's tree maps onto the 'dwconv' model's (shapes only).
  x, t, y = _inputs()
  merged_shapes = jax.eval_shape(reparameterize, _shapes(UDiT(**TINY, ffn="rep"), x, t, y))
  assert jax.tree.map(lambda s: s.shape, merged_shapes) == jax.tree.map(
      lambda s: s.shape, _shapes(UDiT(**TINY, ffn="dwconv"), x, t, y))


def test_rep_ffn_runs_its_branches_as_one_conv_with_the_same_outputs_and_gradients():
  """The 'rep' FFN folds identity + 5×5 + 3×3 + 1×1 into one depthwise 5×5 each step; the
  reference runs the branches one by one (`FeedForward.forward`, training mode)."""
  x = _normal((2, 8, 8, 16), 3)
  ffn = FeedForward(32, "rep")
  params = _randomize(_shapes(ffn, x), seed=4, scale=0.3)
  dense = lambda p, h: h @ p["kernel"] + p["bias"]

  def branches(params, x):
    h = dense(params["project_in_1"], dense(params["project_in_0"], x))
    h = jax.nn.gelu(h, approximate=False)
    h = h + sum(DepthwiseConv(k, impl="conv").apply({"params": params[f"dwconv_{k}"]}, h)
                for k in (5, 3, 1))
    return dense(params["project_out_1"], dense(params["project_out_0"], h))

  folded = lambda params, x: ffn.apply({"params": params}, x)
  np.testing.assert_allclose(folded(params, x), branches(params, x), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda params, x: jnp.sum(jnp.sin(f(params, x)))
  got = jax.grad(loss(folded), argnums=(0, 1))(params, x)
  want = jax.grad(loss(branches), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b)))), got, want)


@pytest.mark.parametrize("overrides", [
    {}, dict(attn_type="dot", rope=False, ffn="mlp", down_factor=(2, 2, 1, 2, 2),
             downsampler="none", learn_sigma=False)], ids=["all-mods", "vanilla"])
def test_tiny_udit_forward_and_backward_are_finite(overrides):
  model = UDiT(**{**TINY, "depth": (1, 0, 0, 0, 0)}, **overrides)
  x, t, y = _inputs()
  params = _randomize(_shapes(model, x, t, y), scale=0.1)

  @jax.jit
  def loss_and_grad(p):
    def loss(p):
      out = model.apply({"params": p}, x, t, y, train=True, rngs={"dropout": jax.random.key(0)})
      return jnp.mean(out ** 2), out.shape
    return jax.value_and_grad(loss, has_aux=True)(p)

  (value, shape), grads = loss_and_grad(params)
  assert shape == (2, 16, 16, 4 if overrides.get("learn_sigma") is False else 8)
  assert np.isfinite(float(value))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.linalg.norm(grads["encoder1_0"]["attn"]["attn"]["qkv"]["kernel"])) > 0


@pytest.mark.parametrize("overrides, match", [
    (dict(ffn="conv"), "ffn='conv'"), (dict(depth=(1, 1, 1, 1)), "depth="),
    (dict(num_heads=3), "num_heads=3"), (dict(attn_type="v2"), "attn_type='v2'"),
    (dict(down_factor=(2, 2, 8, 2, 2)), "down_factor=8")])
def test_bad_configurations_raise_value_errors_naming_the_field(overrides, match):
  with pytest.raises(ValueError, match=match):
    UDiT(**{**TINY, **overrides}).init(jax.random.key(0), *_inputs())


def test_registered_with_the_papers_sizes():
  assert MODELS.get("udit") is UDiT
  assert UDIT_SIZES["U-DiT-B"] == dict(hidden_size=192, num_heads=8)
  assert UDIT_SIZES["U-DiT-L-vanilla"] == dict(hidden_size=384, num_heads=16, attn_type="dot",
                                                rope=False, ffn="mlp")
  model = UDiT(**UDIT_SIZES["U-DiT-S"])
  assert (model.depth, model.mlp_ratio, model.down_factor, model.downsampler, model.ffn) == (
      (2, 5, 8, 5, 2), 2.0, 2, "dwconv5", "rep")


def test_every_parameter_has_logical_axis_names_the_sharding_rules_know():
  boxed = jax.eval_shape(lambda: UDiT(**TINY).init(_key(), *_inputs())["params"])
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  known = {name for name, _ in LOGICAL_RULES} | {None}
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  assert all(len(x.names) == len(x.value.shape) and set(x.names) <= known for x in leaves)
