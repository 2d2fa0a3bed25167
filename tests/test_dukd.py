"""DUKD losses: invertible augmentations, zoom-in / zoom-out upcycling, loss structure."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.data.imresize import imresize
from effcomp.losses import dukd

SCALE = 2


def _images(seed, shape, dyadic=False):
  x = np.random.default_rng(seed).random(shape).astype(np.float32)
  if dyadic:  # k/256: exactly representable, and so is 1 − x
    x = np.floor(x * 256) / 256
  return jnp.asarray(x)


def _params(seed, channels=3, equivariant=True):
  """A per-pixel affine map; colsum(w) + 2b = 1 makes it commute with 1 − x."""
  w = np.random.default_rng(seed).normal(0.3, 0.2, (channels, channels)).astype(np.float32)
  b = (1 - w.sum(0)) / 2 if equivariant else np.full(channels, 0.1, np.float32)
  return {"w": jnp.asarray(w), "b": jnp.asarray(b)}


def linear_sr(params, x, scale=SCALE, shift=0.0):
  """Affine per pixel, nearest ×scale; `shift` > 0 mixes in a W-roll (not flip-equivariant)."""
  y = x @ params["w"] + params["b"] + shift * jnp.roll(x, 1, axis=2)
  return jnp.repeat(jnp.repeat(y, scale, axis=1), scale, axis=2)


def _pair(seed=0, batch=2, size=8):
  lr = _images(seed, (batch, size, size, 3))
  hr = _images(seed + 1, (batch, size * SCALE, size * SCALE, 3))
  return hr, lr


# -- invertible augmentations -------------------------------------------------------------

@pytest.mark.parametrize("code", range(dukd.NUM_AUGMENTS))
def test_invert_augment_undoes_every_code_on_non_square_images(code):
  x = _images(0, (2, 5, 7, 3), dyadic=True)
  y = dukd.apply_augment(x, code)
  np.testing.assert_array_equal(dukd.invert_augment(y, code), x)
  np.testing.assert_array_equal(dukd.invert_augment(dukd.apply_augment(x[0], code), code), x[0])
  expected_hw = (7, 5) if code & 8 else (5, 7)
  assert y.shape == (2,) + expected_hw + (3,)


def test_invert_augment_is_exact_up_to_rounding_on_arbitrary_floats():
  x = _images(1, (3, 6, 6, 3))
  for code in range(dukd.NUM_AUGMENTS):
    np.testing.assert_allclose(dukd.invert_augment(dukd.apply_augment(x, code), code), x,
                               rtol=0, atol=1e-7)


def test_the_sixteen_codes_are_distinct_transforms():
  x = _images(2, (1, 4, 4, 3))
  outs = {np.asarray(dukd.apply_augment(x, code)).tobytes() for code in range(16)}
  assert len(outs) == 16
  np.testing.assert_array_equal(dukd.apply_augment(x, 0), x)
  np.testing.assert_array_equal(dukd.apply_augment(x, 1), 1 - x)
  np.testing.assert_array_equal(dukd.apply_augment(x, 2), x[:, ::-1])
  np.testing.assert_array_equal(dukd.apply_augment(x, 4), x[:, :, ::-1])
  np.testing.assert_array_equal(dukd.apply_augment(x, 8), x.transpose(0, 2, 1, 3))


def test_per_example_codes_match_static_codes_under_jit():
  x = _images(3, (16, 6, 6, 3), dyadic=True)
  codes = jnp.arange(16, dtype=jnp.int32)
  y = jax.jit(dukd.apply_augment)(x, codes)
  for k in range(16):
    np.testing.assert_array_equal(y[k], dukd.apply_augment(x[k:k + 1], k)[0])
  np.testing.assert_array_equal(jax.jit(dukd.invert_augment)(y, codes), x)


def test_per_example_codes_reject_non_square_images_and_bad_codes():
  with pytest.raises(ValueError, match="square"):
    dukd.apply_augment(jnp.zeros((2, 4, 6, 3)), jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match="one code per example"):
    dukd.apply_augment(jnp.zeros((2, 4, 4, 3)), jnp.zeros((3,), jnp.int32))
  with pytest.raises(ValueError, match="code=16"):
    dukd.apply_augment(jnp.zeros((2, 4, 4, 3)), 16)


def test_reference_reapplication_inverts_except_transpose_with_one_flip():
  x = _images(4, (1, 5, 5, 3), dyadic=True)
  for code in range(16):
    twice = dukd.apply_augment(dukd.apply_augment(x, code), code)
    one_flip = bool(code & 2) != bool(code & 4)
    assert np.array_equal(twice, x) == (not (code & 8 and one_flip)), code


def test_sample_augment_codes_sets_each_op_with_prob():
  codes = np.asarray(dukd.sample_augment_codes(jax.random.PRNGKey(0), 20000, 0.3))
  bits = (codes[:, None] >> np.arange(4)) & 1
  np.testing.assert_allclose(bits.mean(0), 0.3, atol=0.015)
  assert not dukd.sample_augment_codes(jax.random.PRNGKey(0), 8, 0.0).any()
  assert (dukd.sample_augment_codes(jax.random.PRNGKey(0), 8, 1.0) == 15).all()
  with pytest.raises(ValueError, match="prob"):
    dukd.sample_augment_codes(jax.random.PRNGKey(0), 8, 1.5)


def test_random_invertible_augment_round_trips():
  x = _images(5, (8, 6, 6, 3), dyadic=True)
  x_aug, inverse = dukd.random_invertible_augment(jax.random.PRNGKey(1), x, prob=0.5)
  assert not np.array_equal(x_aug, x)
  np.testing.assert_array_equal(inverse(x_aug), x)


# -- upcycling ----------------------------------------------------------------------------

def test_zoom_in_returns_lr_sized_tiles_of_the_hr_patch():
  hr = _images(6, (2, 8, 12, 3))
  tiles = dukd.upcycle_zoom_in(jax.random.PRNGKey(0), hr, SCALE)
  assert tiles.shape == (2, 4, 6, 3)
  grid = [hr[:, i * 4:(i + 1) * 4, j * 6:(j + 1) * 6] for i in range(2) for j in range(2)]
  assert any(np.array_equal(tiles, g) for g in grid)  # one position for the whole batch
  assert 0.0 <= float(tiles.min()) and float(tiles.max()) <= 1.0
  everything = dukd.upcycle_zoom_in(jax.random.PRNGKey(0), hr, SCALE, num_tiles=4)
  assert everything.shape == (8, 4, 6, 3)
  got = sorted(np.asarray(everything[2 * k:2 * k + 2]).tobytes() for k in range(4))
  assert got == sorted(np.asarray(g).tobytes() for g in grid)


def test_zoom_in_position_depends_on_rng():
  hr = _images(7, (1, 16, 16, 3))
  draws = {np.asarray(dukd.upcycle_zoom_in(jax.random.PRNGKey(s), hr, 4)).tobytes()
           for s in range(12)}
  assert len(draws) > 3


def test_zoom_out_downscales_like_matlab_away_from_the_border():
  lr = _images(8, (2, 24, 24, 3))
  for scale in (2, 3, 4):
    out = dukd.upcycle_zoom_out(lr, scale)
    n = 24 // scale
    assert out.shape == (2, n, n, 3) and out.dtype == jnp.float32
    assert -0.25 < float(out.min()) and float(out.max()) < 1.25
    matlab = imresize(np.asarray(lr[0], np.float64), 1 / scale)
    np.testing.assert_allclose(out[0, 2:-2, 2:-2], matlab[2:-2, 2:-2], atol=1e-6)
    clipped = dukd.upcycle_zoom_out(lr, scale, clip=True)
    assert 0.0 <= float(clipped.min()) and float(clipped.max()) <= 1.0
  np.testing.assert_allclose(dukd.upcycle_zoom_out(jnp.full((1, 8, 8, 3), 0.25), 2), 0.25,
                             atol=1e-6)


def test_upcycling_rejects_bad_shapes_and_scales():
  with pytest.raises(ValueError, match="divisible"):
    dukd.upcycle_zoom_in(jax.random.PRNGKey(0), jnp.zeros((1, 9, 8, 3)), 2)
  with pytest.raises(ValueError, match="num_tiles"):
    dukd.upcycle_zoom_in(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), 2, num_tiles=5)
  with pytest.raises(ValueError, match="divisible"):
    dukd.upcycle_zoom_out(jnp.zeros((1, 6, 6, 3)), 4)
  with pytest.raises(ValueError, match="scale"):
    dukd.upcycle_zoom_out(jnp.zeros((1, 6, 6, 3)), 1)


# -- losses -------------------------------------------------------------------------------

def test_identical_equivariant_student_and_teacher_leave_only_the_gt_terms():
  fn = functools.partial(linear_sr, _params(0))
  hr, lr = _pair()
  rng = jax.random.PRNGKey(3)
  loss, m = dukd.dukd_loss(fn, fn, fn(lr), lr, rng, SCALE, augment_prob=0.5, num_tiles=4)
  for term in ("pix", "kd", "zoom_in_kd", "zoom_out_kd"):
    assert abs(float(m[term])) < 1e-6, (term, m[term])
  assert float(m["zoom_out_pix"]) > 1e-3
  np.testing.assert_allclose(loss, 5.0 * m["zoom_out_pix"], rtol=1e-5, atol=1e-6)
  loss, m = dukd.dukd_loss(fn, fn, hr, lr, rng, SCALE, zoom_out=False)
  assert set(m) == {"pix", "kd", "zoom_in_kd", "lr_loss", "upcycled_loss", "loss"}
  np.testing.assert_allclose(loss, 5.0 * dukd.l1(fn(lr), hr), rtol=1e-5, atol=1e-6)


def test_label_consistency_penalises_a_student_that_is_not_equivariant():
  fn = functools.partial(linear_sr, _params(0), shift=0.5)
  hr, lr = _pair()
  rng = jax.random.PRNGKey(4)
  _, plain = dukd.upcycled_loss(fn, fn, hr, lr, rng, SCALE, augment_prob=0.0)
  _, augmented = dukd.upcycled_loss(fn, fn, hr, lr, rng, SCALE, augment_prob=1.0)
  assert float(plain["zoom_in_kd"]) == 0.0
  assert float(augmented["zoom_in_kd"]) > 1e-2


def test_exact_inverse_is_consistent_where_the_reference_reapplication_is_not():
  fn = functools.partial(linear_sr, _params(0))  # equivariant: the exact inverse gives 0
  hr, lr = _pair()
  ref_terms = []
  for seed in range(4):
    kwargs = dict(augment_prob=0.5, num_tiles=4, zoom_out=False)
    rng = jax.random.PRNGKey(seed)
    _, exact = dukd.upcycled_loss(fn, fn, hr, lr, rng, SCALE, exact_inverse=True, **kwargs)
    _, ref = dukd.upcycled_loss(fn, fn, hr, lr, rng, SCALE, exact_inverse=False, **kwargs)
    assert float(exact["zoom_in_kd"]) < 1e-6
    ref_terms.append(float(ref["zoom_in_kd"]))
  assert max(ref_terms) > 1e-2  # tiles where a transpose met one flip: rotated 180°


def _loss_of_params(loss_name, params_s, params_t, hr, lr, rng):
  student = functools.partial(linear_sr, params_s)
  teacher = functools.partial(linear_sr, params_t)
  if loss_name == "plain_kd":
    return dukd.plain_kd_loss(student, teacher, hr, lr)[0]
  return dukd.dukd_loss(student, teacher, hr, lr, rng, SCALE, augment_prob=0.5)[0]


@pytest.mark.parametrize("loss_name", ["plain_kd", "dukd"])
def test_gradients_reach_the_student_and_never_the_teacher(loss_name):
  hr, lr = _pair()
  grad_s, grad_t = jax.grad(_loss_of_params, argnums=(1, 2))(
      loss_name, _params(0, equivariant=False), _params(1), hr, lr, jax.random.PRNGKey(0))
  for leaf in jax.tree_util.tree_leaves(grad_t):
    np.testing.assert_array_equal(leaf, 0.0)
  assert all(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree_util.tree_leaves(grad_s))


def test_weights_scale_each_term_linearly():
  student = functools.partial(linear_sr, _params(0, equivariant=False), shift=0.3)
  teacher = functools.partial(linear_sr, _params(1))
  hr, lr = _pair()
  rng = jax.random.PRNGKey(6)
  loss, m = dukd.dukd_loss(student, teacher, hr, lr, rng, SCALE)
  expected = sum(w * m[k] for k, w in dukd.DUKD_WEIGHTS.items())
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["lr_loss"] + m["upcycled_loss"], loss, rtol=1e-6)
  for key in dukd.DUKD_WEIGHTS:
    bumped, _ = dukd.dukd_loss(student, teacher, hr, lr, rng, SCALE,
                               weights={key: dukd.DUKD_WEIGHTS[key] + 2.0})
    np.testing.assert_allclose(bumped - loss, 2.0 * m[key], rtol=1e-5, atol=1e-7)
  doubled, _ = dukd.dukd_loss(student, teacher, hr, lr, rng, SCALE,
                              weights={k: 2 * w for k, w in dukd.DUKD_WEIGHTS.items()})
  np.testing.assert_allclose(doubled, 2 * loss, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown keys"):
    dukd.dukd_loss(student, teacher, hr, lr, rng, SCALE, weights={"gt": 1.0})


def test_baselines():
  student = functools.partial(linear_sr, _params(0, equivariant=False))
  teacher = functools.partial(linear_sr, _params(1))
  hr, lr = _pair()
  loss, m = dukd.l1_loss(student, hr, lr)
  np.testing.assert_allclose(loss, np.abs(np.asarray(student(lr)) - np.asarray(hr)).mean(),
                             rtol=1e-6)
  assert set(m) == {"pix", "loss"}
  loss, m = dukd.plain_kd_loss(student, teacher, hr, lr)
  np.testing.assert_allclose(loss, m["pix"] + m["kd"], rtol=1e-6)
  np.testing.assert_allclose(m["kd"], dukd.l1(student(lr), teacher(lr)), rtol=1e-6)
  _, same = dukd.plain_kd_loss(student, student, hr, lr)
  assert float(same["kd"]) == 0.0
  with pytest.raises(ValueError, match="student_fn returned shape"):
    dukd.plain_kd_loss(functools.partial(linear_sr, _params(0), scale=3), teacher, hr, lr)
  with pytest.raises(ValueError, match="expected hr of shape"):
    dukd.dukd_loss(student, teacher, hr[:, :-2], lr, jax.random.PRNGKey(0), SCALE)


def test_dukd_loss_jits_and_matches_eager():
  hr, lr = _pair()
  rng = jax.random.PRNGKey(7)

  def loss_fn(params_s, params_t, hr, lr, rng):
    return dukd.dukd_loss(functools.partial(linear_sr, params_s),
                          functools.partial(linear_sr, params_t), hr, lr, rng, SCALE,
                          num_tiles=2)

  args = (_params(0, equivariant=False), _params(1), hr, lr, rng)
  eager_loss, eager_m = loss_fn(*args)
  jit_loss, jit_m = jax.jit(loss_fn)(*args)
  np.testing.assert_allclose(jit_loss, eager_loss, rtol=1e-5)
  for k in eager_m:
    np.testing.assert_allclose(jit_m[k], eager_m[k], rtol=1e-5, atol=1e-7)
  other, _ = jax.jit(loss_fn)(*args[:-1], jax.random.PRNGKey(8))
  assert float(other) != float(jit_loss)  # the rng drives tiles and augmentations
