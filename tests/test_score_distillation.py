"""TAD-SR's high-frequency score distillation on a Gaussian toy with a known answer, and the
hinge GAN losses against hand-computed values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.diffusion import resshift, score_distillation
from effcomp.losses import adversarial

MU, SIGMA = 0.3, 0.5  # the toy's data: x_0 ~ N(MU, SIGMA²) per pixel, independent of y


def _bayes_x0(schedule):
  """(E[x_0 | x_t] of the toy — the optimal teacher —, the HSD gain at t). With
  x_t = (1 − η)x_0 + ηy + κ√η·n: x̂_0 = μ + g·(x_t − (1 − η)μ − ηy), g = (1 − η)σ² /
  ((1 − η)²σ² + κ²η), so ε(z) = (1 − g(1 − η))·((1 − η)(z − μ)/(κ√η) + n) and
  ε(ẑ) − ε(z*) = (1 − g(1 − η))(1 − η)/(κ√η)·(ẑ − z*)."""
  def eta_g(t):
    eta = schedule.etas[t].reshape(-1, 1, 1, 1)
    return eta, (1 - eta) * SIGMA ** 2 / ((1 - eta) ** 2 * SIGMA ** 2 + schedule.kappa ** 2 * eta)

  def x0(x_t, t, y):
    eta, g = eta_g(t)
    return MU + g * (x_t - (1 - eta) * MU - eta * y)

  def gain(t):
    eta, g = eta_g(t)
    return (1 - g * (1 - eta)) * (1 - eta) / (schedule.kappa * jnp.sqrt(eta))

  return x0, gain


def test_hsd_gradient_points_from_the_target_to_the_student():
  s = resshift.create(15)
  bayes, gain = _bayes_x0(s)
  rng = np.random.default_rng(0)
  student, target, y, noise = (jnp.asarray(rng.normal(size=(3, 4, 4, 3)), jnp.float32)
                               for _ in range(4))
  t = jnp.array([0, 1, 2])
  teacher = lambda x_t, tt: bayes(x_t, tt, y)
  grad = score_distillation.hsd_gradient(teacher, student, target, y, t, noise, s)
  # The shared noise cancels exactly: the gradient is a positive multiple of ẑ − z*.
  np.testing.assert_allclose(grad, gain(t) * (student - target), rtol=2e-4, atol=1e-5)
  assert bool(jnp.all(gain(t) > 0.1))
  assert jnp.allclose(score_distillation.hsd_gradient(teacher, target, target, y, t, noise, s),
                      0.0, atol=1e-5)
  # The loss's gradient is that direction over C·H·W, and no gradient reaches the teacher.
  loss_grad = jax.grad(lambda z: jnp.sum(score_distillation.hsd_loss(
      teacher, z, target, y, t, noise, s)[0]))(student)
  np.testing.assert_allclose(loss_grad, grad / (4 * 4 * 3), rtol=1e-5, atol=1e-8)


def test_sds_descent_reaches_the_data_mean_on_the_toy():
  """target=None (plain SDS): descending ε(ẑ) − n moves the student to the mode μ."""
  s = resshift.create(15)
  bayes, _ = _bayes_x0(s)
  y = jnp.zeros((1, 8, 8, 1))
  z = jnp.full((1, 8, 8, 1), -1.5)
  teacher = lambda x_t, tt: bayes(x_t, tt, y)
  for i in range(300):
    n = jax.random.normal(jax.random.key(i), z.shape)
    z = z - 0.05 * score_distillation.hsd_gradient(teacher, z, None, y, jnp.array([1]), n, s)
  assert abs(float(jnp.mean(z)) - MU) < 0.05


def test_hinge_losses_match_hand_computed_values():
  real = jnp.array([[2.0, 0.5, -1.0], [1.0, 1.0, 1.0]])
  fake = jnp.array([[-2.0, 0.0, 0.5], [-1.0, -1.0, -3.0]])
  # real: relu(1 − r) = [0, .5, 2] → 5/6, [0, 0, 0] → 0; fake: relu(1 + f) = [0, 1, 1.5] →
  # 5/6, [0, 0, 0] → 0.
  np.testing.assert_allclose(adversarial.hinge_discriminator_loss(real, fake), [5 / 3, 0.0],
                             rtol=1e-6)
  np.testing.assert_allclose(adversarial.hinge_generator_loss(fake), [0.5, 5 / 3], rtol=1e-6)
  with pytest.raises(ValueError, match="real_logits"):
    adversarial.hinge_discriminator_loss(real, fake[:, :2])


def test_hinge_gan_terms_move_each_network_by_its_own_loss():
  real, fake = jnp.array([[0.4, 2.0]]), jnp.array([[1.0, -0.4]])

  class Linear(nn.Module):  # a linear "discriminator" counting its calls in its stats
    @nn.compact
    def __call__(self, x, train):
      calls = self.variable("batch_stats", "calls", jnp.zeros, (), jnp.int32)
      if train:
        calls.value += 1
      return self.param("w", nn.initializers.ones, ()) * x

  def terms(p, fake):
    return adversarial.hinge_gan_terms(Linear(), {"w": p}, {"calls": jnp.int32(0)}, real, fake)

  gen, disc, stats, logits = terms(2.0, fake)
  # D(real) = [0.8, 4], D(fake) = [2, −0.8]: gen −mean[2, −0.8] = −0.6; disc mean relu(1 −
  # [0.8, 4]) + mean relu(1 + [2, −0.8]) = 0.1 + 1.6.
  np.testing.assert_allclose(gen, [-0.6], rtol=1e-6)
  np.testing.assert_allclose(disc, [1.7], rtol=1e-6)
  assert int(stats["calls"]) == 2  # the discriminator's two calls; the generator's leaves none
  np.testing.assert_allclose([logits["d_real"], logits["d_fake"]], [2.4, 0.6], rtol=1e-6)
  # The generator's loss reaches the fake images only, the discriminator's its parameters only.
  assert float(jax.grad(lambda p: terms(p, fake)[0][0])(2.0)) == 0.0
  np.testing.assert_allclose(jax.grad(lambda f: terms(2.0, f)[0][0])(fake), [[-1.0, -1.0]])
  np.testing.assert_array_equal(jax.grad(lambda f: terms(2.0, f)[1][0])(fake), 0.0)
  # d/dp: −0.4 / 2 (the real example inside the margin) + (1 − 0.4) / 2 (both fakes inside).
  np.testing.assert_allclose(jax.grad(lambda p: terms(p, fake)[1][0])(2.0), 0.1, rtol=1e-5)
