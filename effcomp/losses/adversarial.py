"""Hinge GAN losses, per example (the discriminator's logits averaged over their positions).

The form of TAD-SR's official code (LearningHx/TAD-SR `models/gaussian_diffusion.py`
`training_losses_D` / `training_losses_distill`), as in projected and adversarial-diffusion
distillation GANs: the discriminator minimizes mean(relu(1 − D(real))) + mean(relu(1 +
D(fake))); the generator minimizes −mean(D(fake)).
"""

import jax
import jax.numpy as jnp


def _per_example_mean(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def hinge_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """[B]: mean relu(1 − real) + mean relu(1 + fake) of logits [B, …]."""
  if real_logits.shape != fake_logits.shape:
    raise ValueError(f"real_logits {real_logits.shape}, fake_logits {fake_logits.shape}: "
                     "expected equal shapes")
  return (_per_example_mean(jax.nn.relu(1.0 - real_logits))
          + _per_example_mean(jax.nn.relu(1.0 + fake_logits)))


def hinge_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """[B]: −mean(fake logits)."""
  return -_per_example_mean(fake_logits)
