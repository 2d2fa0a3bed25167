"""FID math (effcomp.metrics.fid) and the CPU-scale classifier proxy (effcomp.metrics.proxy)."""

import flax.linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict
import jax
import numpy as np
import pytest
from scipy import linalg

from effcomp.metrics import fid, proxy
from effcomp.models.cnn import CNN
from effcomp.models.mlp import MLP
from effcomp.data.image_inputs import model_inputs


def _spd(d, seed, rank=None):
  """A random symmetric positive (semi-)definite [d, d] matrix of the given rank."""
  a = np.random.default_rng(seed).normal(size=(d, rank or d))
  return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def _reference_fd(mu1, s1, mu2, s2):
  """‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^½ without sqrtm: Tr (Σ₁Σ₂)^½ =
  Σ √λ(Σ₁^½ Σ₂ Σ₁^½), the symmetric matrix similar to Σ₁Σ₂, via eigh."""
  w, v = np.linalg.eigh(s1)
  s1_half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  lam = np.linalg.eigvalsh(s1_half @ s2 @ s1_half)
  diff = mu1 - mu2
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(lam, 0, None)))


def test_fid_of_identical_feature_sets_is_zero():
  f = np.random.default_rng(0).normal(size=(300, 24))
  assert abs(fid.fid_from_features(f, f)) < 1e-6


def test_frechet_distance_matches_an_eigendecomposition_reference():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
  s1, s2 = _spd(12, 2), _spd(12, 3)
  want = _reference_fd(mu1, s1, mu2, s2)
  assert want > 1.0
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
  rng = np.random.default_rng(4)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-10)
  # 1-D scalars: N(0, 1) vs N(3, 4) → 9 + 1 + 4 − 2·2 = 10.
  assert fid.frechet_distance(0.0, 1.0, 3.0, 4.0) == pytest.approx(10.0, rel=1e-12)


def test_frechet_distance_is_symmetric():
  rng = np.random.default_rng(5)
  a = (rng.normal(size=8), _spd(8, 6))
  b = (rng.normal(size=8), _spd(8, 7))
  assert fid.frechet_distance(*a, *b) == pytest.approx(fid.frechet_distance(*b, *a), rel=1e-9)


def test_rank_deficient_covariances_give_a_finite_distance():
  rng = np.random.default_rng(8)
  f1, f2 = rng.normal(size=(4, 10)), rng.normal(1.0, 2.0, size=(5, 10))  # N < D: singular Σ
  mu1, s1 = fid.feature_statistics(f1)
  mu2, s2 = fid.feature_statistics(f2)
  assert np.linalg.matrix_rank(s1) == 3
  got = fid.fid_from_features(f1, f2)
  assert np.isfinite(got)
  assert got == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-4)
  assert fid.frechet_distance(mu1, np.zeros((10, 10)), mu1, np.zeros((10, 10))) == pytest.approx(
      0.0, abs=1e-9)


def test_a_non_finite_square_root_is_retried_with_eps_on_both_diagonals(monkeypatch):
  real_sqrtm, calls = linalg.sqrtm, []

  def flaky_sqrtm(a):
    calls.append(np.array(a))
    return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

  monkeypatch.setattr(fid.linalg, "sqrtm", flaky_sqrtm)
  mu, s1, s2 = np.zeros(5), _spd(5, 9), _spd(5, 10)
  got = fid.frechet_distance(mu, s1, mu, s2, eps=1e-2)
  offset = 1e-2 * np.eye(5)
  assert len(calls) == 2
  np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset), rtol=1e-12)
  tr_covmean = np.trace(real_sqrtm((s1 + offset) @ (s2 + offset)).real)
  assert got == pytest.approx(np.trace(s1) + np.trace(s2) - 2 * tr_covmean, rel=1e-10)


def test_a_large_imaginary_component_is_an_error():
  # Σ₂ is not PSD: sqrtm(Σ₁Σ₂) has eigenvalue √−1 on its diagonal.
  with pytest.raises(ValueError, match="imaginary component"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))


def test_mismatched_shapes_are_errors():
  with pytest.raises(ValueError, match="mu1.shape"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match="sigma1.shape"):
    fid.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match=r"features.shape=\(1, 4\)"):
    fid.feature_statistics(np.zeros((1, 4)))


def test_feature_statistics_are_numpys_mean_and_unbiased_covariance():
  f = np.random.default_rng(11).normal(size=(50, 7)).astype(np.float32)
  mu, sigma = fid.feature_statistics(f)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-12)


def test_streamed_statistics_equal_those_of_all_features_and_compile_once():
  rng = np.random.default_rng(12)
  # Small integers: float32 features are exact, so streamed and direct agree to float64.
  images = rng.integers(0, 5, size=(24, 4, 4, 3)).astype(np.float32) + 3.0
  w = rng.integers(-2, 3, size=(48, 6)).astype(np.float32)
  shapes = []

  @jax.jit
  def features_fn(x):
    shapes.append(x.shape)  # runs once per compilation
    return x.reshape((x.shape[0], -1)) @ w

  batches = [images[i:i + 7] for i in range(0, 24, 7)]  # 7, 7, 7, 3 (padded to 7)
  mu, sigma = fid.statistics_from_batches(features_fn, batches)
  want_mu, want_sigma = fid.feature_statistics(images.reshape(24, -1).astype(np.float64) @ w)
  np.testing.assert_allclose(mu, want_mu, rtol=1e-12)
  np.testing.assert_allclose(sigma, want_sigma, rtol=1e-10)
  assert shapes == [(7, 4, 4, 3)]
  with pytest.raises(ValueError, match="only the last batch may be smaller"):
    fid.statistics_from_batches(features_fn, [images[:3], images[:7]])


def test_moments_merge_like_one_covariance():
  f = np.random.default_rng(13).normal(5.0, 2.0, size=(40, 5))
  moments = None
  for chunk in (f[:1], f[1:17], f[17:]):
    moments = fid.update_moments(moments, chunk)
  mu, sigma = fid.moments_statistics(moments)
  np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-10)


def _random_variables(model, x, seed):
  """Random variables of `model` (running statistics too) with the shapes `init` gives,
  without compiling its truncated-normal initializers (seconds each on a CPU)."""
  rng = np.random.default_rng(seed)
  shapes = flatten_dict(nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x)))
  fill = lambda k, shape: (rng.uniform(0.5, 1.5, shape) if k[-1] == "var"
                           else (0.1 if k[-1] == "mean" else 0.3) * rng.normal(size=shape))
  return unflatten_dict({k: np.float32(fill(k, s.shape)) for k, s in shapes.items()})


def _digits_like(n=6, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)


def test_proxy_features_are_the_cnn_heads_input():
  model = CNN(num_classes=10, widths=(8, 16))
  images = _digits_like()
  variables = _random_variables(model, model_inputs(images, 16), seed=0)
  features = proxy.proxy_features_fn(model, variables, resize=16)(images)
  assert features.shape == (6, 16)  # CNN.widths[-1]
  head = variables["params"]["head"]
  logits = model.apply(variables, model_inputs(images, 16))
  np.testing.assert_allclose(features @ head["kernel"] + head["bias"], logits, rtol=1e-5, atol=1e-5)
  # Generated float images in [0, 1] give the same features as their uint8 originals.
  floats = images.astype(np.float32) / 255.0
  np.testing.assert_allclose(proxy.proxy_features_fn(model, variables, resize=16)(floats), features,
                             rtol=1e-6, atol=1e-6)


def test_proxy_features_of_an_mlp_are_its_last_hidden_layer():
  model = MLP(num_classes=10, widths=(32, 24))
  images = _digits_like(seed=1)
  variables = _random_variables(model, model_inputs(images), seed=1)
  features = proxy.proxy_features_fn(model, variables)(images)
  assert features.shape == (6, 24)
  x = model_inputs(images).reshape(6, -1)
  for i in range(2):
    layer = variables["params"][f"hidden_{i}"]
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
  np.testing.assert_allclose(features, x, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="layer='classifier'"):
    proxy.proxy_features_fn(model, variables, layer="classifier")(images)


def test_proxy_logits_are_the_classifiers():
  model = CNN(num_classes=10, widths=(8,))
  images = _digits_like(seed=2)
  variables = _random_variables(model, model_inputs(images), seed=2)
  np.testing.assert_allclose(proxy.proxy_logits_fn(model, variables)(images),
                             model.apply(variables, model_inputs(images)), rtol=1e-5, atol=1e-6)


def test_proxy_fid_streams_digits_and_ranks_noise_behind_real_images():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = (load_digits().images * 255 // 16).astype(np.uint8)[..., None]  # as data/digits.py
  noise = np.random.default_rng(3).integers(0, 256, size=(800, 8, 8, 1), dtype=np.uint8)
  model = CNN(num_classes=10, widths=(8, 16))
  features = proxy.proxy_features_fn(model, _random_variables(model, model_inputs(digits[:2]), 3))
  batches = lambda x: [x[i:i + 128] for i in range(0, len(x), 128)]
  same = fid.fid_from_batches(features, batches(digits[:900]), batches(digits[:900]))
  real = fid.fid_from_batches(features, batches(digits[:900]), batches(digits[900:]))
  fake = fid.fid_from_batches(features, batches(digits[:900]), batches(noise))
  assert abs(same) < 1e-6 and 0 < real < fake / 5, (same, real, fake)


def test_class_accuracy_counts_argmax_equal_to_the_conditioning_label():
  logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
  labels = np.array([0, 1, 1, 2])  # argmax 0, 1, 2, 0 → 2 of 4 right
  assert proxy.class_accuracy(lambda images: logits, np.zeros((4, 8, 8, 1)), labels) == 0.5
  assert proxy.class_accuracy(lambda images: logits, None, np.array([0, 1, 2, 0])) == 1.0
  with pytest.raises(ValueError, match="labels.shape"):
    proxy.class_accuracy(lambda images: logits, None, np.array([0, 1]))
