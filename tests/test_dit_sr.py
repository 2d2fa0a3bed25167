"""DiT-SR (AdaFM, isotropic U-shape) and ResShift's U-Net baseline."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.models.sr.dit_sr import DiTSR, DiTSRBlock, adafm, reference_window_mask
from effcomp.models.sr.resshift_unet import ResShiftUNet

TINY = dict(model_channels=16, channel_mult=(1, 2), swin_embed_dim=32, swin_depth=2,
            num_head_channels=16, mlp_ratio=2.0, norm_groups=8, dropout=0.0)


def _naive_adafm(x, scale, p):
  """Per patch and channel: numpy rfft2, multiply, irfft2."""
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  b, h, w, c = x.shape
  for n in range(b):
    for i in range(0, h, p):
      for j in range(0, w, p):
        for ch in range(c):
          f = np.fft.rfft2(x[n, i:i + p, j:j + p, ch]) * np.asarray(scale[n], np.float64)
          out[n, i:i + p, j:j + p, ch] = np.fft.irfft2(f, s=(p, p))
  return out


def test_adafm_equals_a_per_patch_fft_and_ones_is_identity():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 16, 8, 3)), jnp.float32)
  scale = jnp.asarray(rng.uniform(0, 2, (2, 4, 3)), jnp.float32)
  np.testing.assert_allclose(adafm(x, scale, 4), _naive_adafm(x, scale, 4), atol=1e-5)
  np.testing.assert_allclose(adafm(x, jnp.ones((2, 8, 5)), 8), x, atol=1e-5)
  # A zero scale at the DC term removes each patch's mean, nothing else.
  dc = jnp.ones((2, 4, 3)).at[:, 0, 0].set(0.0)
  out = np.asarray(adafm(x, dc, 4)).reshape(2, 4, 4, 2, 4, 3)
  np.testing.assert_allclose(out.mean(axis=(2, 4)), 0.0, atol=1e-5)
  with pytest.raises(ValueError, match="patch"):
    adafm(x, scale, 5)


@pytest.mark.parametrize("conditioning", ["adafm", "adaln"])
def test_zero_modulation_is_the_unconditioned_block(conditioning):
  """At initialization (zero modulation) an AdaFM / adaLN block equals the plain block with
  the same weights, at any timestep embedding; a non-zero modulation changes it."""
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32))
  emb = jax.random.normal(jax.random.key(1), (2, 24))
  block = DiTSRBlock(num_heads=2, shift=True, conditioning=conditioning, norm_groups=8)
  params = block.init(jax.random.key(2), x, emb)["params"]
  plain = DiTSRBlock(num_heads=2, shift=True, conditioning="none", norm_groups=8)
  shared = {k: v for k, v in params.items() if not k.startswith(conditioning)}
  ref = plain.apply({"params": shared}, x, emb)
  np.testing.assert_allclose(block.apply({"params": params}, x, emb), ref, atol=1e-5)
  bumped = jax.tree.map(lambda p: p + 0.1, params)
  bumped = {**shared, **{k: v for k, v in bumped.items() if k.startswith(conditioning)}}
  assert float(jnp.max(jnp.abs(block.apply({"params": bumped}, x, emb) - ref))) > 1e-2


def test_reference_window_mask_splits_the_bottom_windows_by_column():
  """The reference code's shifted-window mask (8² map, window 4, shift 2): the top windows
  are unmasked; in the bottom ones a token's region is its column within the window,
  c < 2 or c ≥ 2 (Swin's mask would split rows and, on the right, columns too)."""
  mask = reference_window_mask(8, 8, 4, 2)
  assert mask.shape == (4, 16, 16) and not mask[:2].any()
  side = (np.arange(16) % 4) >= 2  # token r·4 + c → c ≥ 2
  expected = np.where(side[:, None] != side[None, :], -100.0, 0.0)
  np.testing.assert_array_equal(mask[2], expected)
  np.testing.assert_array_equal(mask[3], expected)
  with pytest.raises(ValueError, match="window_mask"):
    DiTSRBlock(num_heads=2, shift=True, norm_groups=8, window_mask="rows").init(
        jax.random.key(0), jnp.zeros((1, 16, 16, 32)), jnp.zeros((1, 8)))


def test_resolution_fixes_windows_and_shift_as_the_reference_built_them():
  """A block built (reference-style) for an 8² map keeps window 8, no shift and FFT patch 8
  on a 16² input; without `resolution` it shifts there."""
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 32))
  emb = jax.random.normal(jax.random.key(1), (1, 24))
  fixed = DiTSRBlock(num_heads=2, shift=True, norm_groups=8, resolution=8)
  params = jax.tree.map(lambda p: p + 0.05, fixed.init(jax.random.key(2), x, emb)["params"])
  unshifted = DiTSRBlock(num_heads=2, shift=False, norm_groups=8).apply({"params": params}, x, emb)
  np.testing.assert_allclose(fixed.apply({"params": params}, x, emb), unshifted, atol=1e-6)
  shifted = DiTSRBlock(num_heads=2, shift=True, norm_groups=8).apply({"params": params}, x, emb)
  assert float(jnp.max(jnp.abs(shifted - unshifted))) > 1e-3
  small = DiTSRBlock(num_heads=2, norm_groups=8, resolution=4)
  shapes = flax.linen.unbox(jax.eval_shape(small.init, jax.random.key(2), x, emb)["params"])
  assert shapes["attn"]["relative_position_bias_table"].shape == (49, 2)
  assert shapes["adafm_msa"]["kernel"].shape == (24, 4 * 3)


@pytest.mark.parametrize("cls,extra", [(DiTSR, {}), (DiTSR, {"conditioning": "adaln"}),
                                       (ResShiftUNet, {"num_res_blocks": 1})])
def test_shapes_at_x4_and_time_dependence(cls, extra):
  kwargs = {**TINY, **extra}
  if cls is ResShiftUNet:
    kwargs.pop("dropout")
  model = cls(scale=4, **kwargs)
  x = jax.random.normal(jax.random.key(0), (2, 32, 48, 3))
  lq = jax.random.normal(jax.random.key(1), (2, 32, 48, 3))
  t = jnp.array([0, 14])
  variables = model.init(jax.random.key(2), x, t, lq)
  # Give every zero-initialized modulation/output weight a value, so time matters.
  params = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), variables["params"])
  out = model.apply({"params": params}, x, t, lq)
  assert out.shape == (2, 32, 48, 3) and out.dtype == jnp.float32
  other = model.apply({"params": params}, x, jnp.array([7, 3]), lq)
  assert float(jnp.max(jnp.abs(out - other))) > 1e-4
  # Logical axes on every kernel (sharding by name).
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, lq))["params"]
  flat = flax.traverse_util.flatten_dict(boxed)
  kernels = [v for k, v in flat.items() if k[-1] == "kernel"]
  assert kernels and all(isinstance(v, flax.linen.Partitioned) for v in kernels)


def test_dit_sr_is_u_shaped_and_isotropic():
  model = DiTSR(**{**TINY, "channel_mult": (1, 2, 2)})
  x = jnp.zeros((1, 32, 32, 3))
  params = flax.linen.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, jnp.zeros((1,), jnp.int32), x))["params"])
  stages = [k for k in params if k.endswith("stage") or k == "middle"]
  # Down: one Stage per level; middle; up: two per level (depth swin_depth, then 1).
  assert len(stages) == 3 + 1 + 6
  widths = {params[k]["patch_embed"]["kernel"].shape[-1] for k in stages}
  assert widths == {32}  # every stage runs at swin_embed_dim, whatever the level's width
  assert {params[k]["patch_embed"]["kernel"].shape[-2] for k in stages} == {16, 32}
  assert "blocks_1" in params["up_0_0_stage"] and "blocks_1" not in params["up_0_1_stage"]


def test_bad_configurations_and_inputs_are_errors():
  x = jnp.zeros((1, 32, 32, 3))
  t = jnp.zeros((1,), jnp.int32)
  with pytest.raises(ValueError, match="conditioning"):
    DiTSR(**{**TINY, "conditioning": "film"}).init(jax.random.key(0), x, t, x)
  with pytest.raises(ValueError, match="norm_groups"):
    DiTSR(**{**TINY, "norm_groups": 12}).init(jax.random.key(0), x, t, x)
  with pytest.raises(ValueError, match="lq"):
    DiTSR(**TINY).init(jax.random.key(0), x, t, x[:, :16, :16])
  with pytest.raises(ValueError, match="divisible"):
    DiTSR(**{**TINY, "channel_mult": (1, 2, 2, 2, 2, 2)}).init(jax.random.key(0), x[:, :24],
                                                               t, x[:, :24])


@pytest.mark.slow
def test_paper_sizes():
  """The recipes (configs/realsr_DiT.yaml; ResShift's realsr_swinunet_realesrgan256_journal,
  3-channel 64² latents) have exactly the parameter counts the DiT-SR paper lists:
  60.79 M for DiT-SR and 118.59 M for ResShift."""
  x = jnp.zeros((1, 64, 64, 3))
  t = jnp.zeros((1,), jnp.int32)
  count = lambda m: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(flax.linen.unbox(
      jax.eval_shape(lambda: m.init(jax.random.key(0), x, t, x))["params"])))
  assert count(DiTSR()) == 60_789_631
  assert count(ResShiftUNet()) == 118_593_583


def test_scanned_stages_equal_the_unrolled_blocks_with_gradients():
  """`scan_layers` runs each stage's blocks as a scan over (plain, shifted) pairs (an odd
  last block unrolled): the same parameter tree, outputs and gradients as unrolled."""
  unrolled = DiTSR(**{**TINY, "channel_mult": (1,), "swin_depth": 5, "window_size": 4},
                   scan_layers=False)
  x, lq = (jax.random.normal(jax.random.key(i), (2, 8, 8, 3)) for i in (0, 1))
  t = jnp.array([2, 9])
  shapes = jax.eval_shape(lambda: unrolled.init(jax.random.key(2), x, t, lq))["params"]
  leaves, treedef = jax.tree.flatten(flax.linen.unbox(shapes))
  params = jax.tree.unflatten(treedef, [
      0.2 * jax.random.normal(jax.random.key(10 + i), p.shape) for i, p in enumerate(leaves)])
  loss = lambda m: jax.jit(jax.value_and_grad(
      lambda p: jnp.sum(jnp.sin(m.apply({"params": p}, x, t, lq)))))
  want, want_grad = loss(unrolled)(params)
  scanned = unrolled.clone(scan_layers=True)
  assert jax.tree.structure(jax.eval_shape(
      lambda: scanned.init(jax.random.key(2), x, t, lq))["params"]) == jax.tree.structure(shapes)
  got, got_grad = loss(scanned)(params)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_grad),
                          jax.tree.leaves(want_grad)):
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)) + 1e-7, jax.tree_util.keystr(path)
  # Train mode: every scanned block draws its own dropout mask from the 'dropout' stream.
  noisy = scanned.clone(dropout=0.5)
  run = jax.jit(lambda k: noisy.apply({"params": params}, x, t, lq, train=True,
                                      rngs={"dropout": k}))
  a, b = run(jax.random.key(3)), run(jax.random.key(4))
  np.testing.assert_array_equal(a, run(jax.random.key(3)))
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3 and np.all(np.isfinite(a))
