"""Noise schedules and respacing against closed forms re-derived here in NumPy float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.diffusion import schedules


def _linear_alphas_cumprod(steps=1000):
  """DDPM's linear schedule, independently: β_i = 1e-4 + i·(0.02 − 1e-4)/(T − 1), scaled by
  1000/T; ᾱ_i = exp(Σ_{j ≤ i} log(1 − β_j))."""
  scale = 1000 / steps
  i = np.arange(steps, dtype=np.float64)
  betas = scale * (1e-4 + i * (0.02 - 1e-4) / (steps - 1))
  return betas, np.exp(np.cumsum(np.log1p(-betas)))


def test_dit_schedule_is_linear_1e4_to_2e2_over_1000_steps():
  s = schedules.create()
  betas, ac = _linear_alphas_cumprod()
  assert s.num_timesteps == 1000 and s.betas.shape == (1000,) and s.betas.dtype == jnp.float32
  np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
  np.testing.assert_allclose(s.alphas_cumprod, ac, rtol=2e-6)
  np.testing.assert_allclose(s.alphas_cumprod_prev, np.append(1.0, ac[:-1]), rtol=2e-6)
  np.testing.assert_allclose(s.alphas_cumprod_next, np.append(ac[1:], 0.0), rtol=2e-6)
  np.testing.assert_allclose(s.sqrt_recipm1_alphas_cumprod, np.sqrt(1 / ac - 1), rtol=2e-6)
  np.testing.assert_array_equal(s.timestep_map, np.arange(1000))
  # The signal left at t = T − 1 is ~0.6% (√ᾱ); DDPM's prior term is then negligible.
  assert 0.005 < math.sqrt(float(s.alphas_cumprod[-1])) < 0.007


def test_linear_schedule_rescales_with_the_number_of_steps():
  s = schedules.create("linear", 250)
  np.testing.assert_allclose([s.betas[0], s.betas[-1]], [4e-4, 0.08], rtol=1e-6)
  np.testing.assert_allclose(s.alphas_cumprod, _linear_alphas_cumprod(250)[1], rtol=2e-6)


def test_posterior_arrays_follow_ddpm_eq_7():
  s = schedules.create()
  betas, ac = _linear_alphas_cumprod()
  ac_prev = np.append(1.0, ac[:-1])
  var = betas * (1 - ac_prev) / (1 - ac)
  np.testing.assert_allclose(s.posterior_variance, var, rtol=1e-5)
  assert float(s.posterior_variance[0]) == 0.0
  np.testing.assert_allclose(s.posterior_log_variance_clipped,
                             np.log(np.append(var[1], var[1:])), rtol=1e-5)
  np.testing.assert_allclose(s.posterior_mean_coef1, betas * np.sqrt(ac_prev) / (1 - ac),
                             rtol=1e-5)
  np.testing.assert_allclose(s.posterior_mean_coef2,
                             (1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac), rtol=1e-5)
  np.testing.assert_allclose(s.large_variance, np.append(var[1], betas[1:]), rtol=1e-5)


def test_cosine_schedule_follows_improved_ddpm_eq_17():
  steps = 1000
  s = schedules.create("cosine", steps)
  f = lambda t: np.cos((t / steps + 0.008) / 1.008 * np.pi / 2) ** 2
  t = np.arange(1, steps + 1, dtype=np.float64)
  expected = f(t) / f(0)
  assert float(jnp.max(s.betas)) <= 0.999 + 1e-7
  uncapped = np.asarray(s.betas) < 0.999 - 1e-6  # the cap only bites at the very end
  assert uncapped[:-5].all()
  np.testing.assert_allclose(np.asarray(s.alphas_cumprod)[:-5], expected[:-5], rtol=2e-5)
  np.testing.assert_allclose(s.betas, schedules.create("squaredcos_cap_v2", steps).betas)


@pytest.mark.parametrize("spec, expected", [
    ("ddim25", tuple(range(0, 1000, 40))),
    ("10", tuple(111 * k for k in range(10))),  # stride (1000 − 1)/(10 − 1) = 111
    (10, tuple(111 * k for k in range(10))),
    ("1000", tuple(range(1000))),
    ("ddim1000", tuple(range(1000))),
])
def test_space_timesteps_matches_dits_respacing(spec, expected):
  assert schedules.space_timesteps(1000, spec) == expected


def test_space_timesteps_strides_each_section_to_its_count():
  kept = schedules.space_timesteps(300, "10,15,20")  # the reference docstring's example
  assert len(kept) == 45 and list(kept) == sorted(kept)
  for start, count in ((0, 10), (100, 15), (200, 20)):
    section = [k for k in kept if start <= k < start + 100]
    assert len(section) == count and section[0] == start and section[-1] == start + 99
  assert schedules.space_timesteps(300, [10, 15, 20]) == kept
  kept250 = schedules.space_timesteps(1000, "250")  # DiT's sample.py default
  assert len(kept250) == 250 and kept250[0] == 0 and kept250[-1] == 999
  assert set(np.diff(kept250)) <= {4, 5}


@pytest.mark.parametrize("spec", ["ddim999", "1001", "a,b", "0"])
def test_space_timesteps_rejects_impossible_counts(spec):
  with pytest.raises(ValueError, match="section_counts"):
    schedules.space_timesteps(1000, spec)


def test_respacing_keeps_alphas_cumprod_at_the_kept_steps():
  base = schedules.create()
  kept = schedules.space_timesteps(1000, "250")
  s = schedules.respace(base, kept)
  _, ac = _linear_alphas_cumprod()
  assert s.num_timesteps == 250
  np.testing.assert_array_equal(s.timestep_map, kept)
  np.testing.assert_allclose(s.alphas_cumprod, ac[list(kept)], rtol=2e-6)
  # β'_k = 1 − ᾱ_{s_k}/ᾱ_{s_{k−1}}, from float64 (not from the float32 arrays).
  ac_kept = ac[list(kept)]
  np.testing.assert_allclose(s.betas, 1 - ac_kept / np.append(1.0, ac_kept[:-1]), rtol=1e-6)
  assert schedules.create(respacing="250").betas64 == s.betas64


def test_respacing_twice_composes_the_timestep_map():
  base = schedules.create()
  once = schedules.respace(base, range(0, 1000, 10))
  twice = schedules.respace(once, [0, 7, 50, 99])
  np.testing.assert_array_equal(twice.timestep_map, [0, 70, 500, 990])
  direct = schedules.respace(base, [0, 70, 500, 990])
  np.testing.assert_allclose(twice.betas, direct.betas, rtol=1e-6)
  np.testing.assert_allclose(twice.alphas_cumprod,
                             base.alphas_cumprod[jnp.array([0, 70, 500, 990])], rtol=2e-6)


def test_one_step_schedule_has_finite_variances():
  s = schedules.respace(schedules.create(), [999])
  assert s.num_timesteps == 1
  assert np.isfinite(np.asarray(s.posterior_log_variance_clipped)).all()
  assert np.isfinite(np.asarray(s.large_log_variance)).all()


def test_schedule_is_a_pytree_with_a_static_length():
  s = schedules.create(respacing="ddim50")

  @jax.jit
  def f(sched):
    return jnp.zeros((sched.num_timesteps,)) + sched.alphas_cumprod

  np.testing.assert_allclose(f(s), s.alphas_cumprod)
  assert all(leaf.shape == (50,) for leaf in jax.tree_util.tree_leaves(s))


def test_extract_broadcasts_over_the_example_axes():
  s = schedules.create()
  out = schedules.extract(s.betas, jnp.array([0, 999]), 4)
  assert out.shape == (2, 1, 1, 1)
  np.testing.assert_allclose(out[:, 0, 0, 0], [1e-4, 0.02], rtol=1e-6)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="noise_schedule='quadratic'"):
    schedules.create("quadratic")
  with pytest.raises(ValueError, match="betas"):
    schedules.from_betas(np.array([0.0, 0.1]))
  with pytest.raises(ValueError, match="use_timesteps"):
    schedules.respace(schedules.create(), [5, 1000])
