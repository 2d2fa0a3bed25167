"""Hinge GAN losses, per example (the discriminator's logits averaged over their positions).

The form of TAD-SR's official code (LearningHx/TAD-SR `models/gaussian_diffusion.py`
`training_losses_D` / `training_losses_distill`), as in projected and adversarial-diffusion
distillation GANs: the discriminator minimizes mean(relu(1 − D(real))) + mean(relu(1 +
D(fake))); the generator minimizes −mean(D(fake)).
"""

from typing import Any, Dict, Tuple

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


def hinge_gan_terms(discriminator: Any, disc_params: Any, stats: Any, real: jax.Array,
                    fake: jax.Array, *args: Any
                    ) -> Tuple[jax.Array, jax.Array, Any, Dict[str, jax.Array]]:
  """Both players' hinge losses [B] from one loss, for one optimizer over both networks.

  The flax `discriminator` runs in training mode, `apply({'params', 'batch_stats': stats},
  images, *args, train=True)`, its normalization statistics (`stats`) updated by each call;
  `args` follow the images (e.g. the timesteps of a time-aware discriminator). The
  generator's loss sees the
  discriminator's parameters through `stop_gradient` and the discriminator's sees `real` and
  `fake` through it, so the sum of the two moves each network by its own loss only, as two
  optimizers stepping in turn would (the generator's step judges `fake` first, then the
  discriminator judges `real` and `fake` in two calls, as LlamaGen's and TAD-SR's loops do).

  Returns (generator loss, discriminator loss, the statistics after the discriminator's
  calls, {'d_real', 'd_fake'}: its mean logits).
  """
  def judge(params, images, stats):
    logits, new = discriminator.apply({"params": params, "batch_stats": stats}, images, *args,
                                      train=True, mutable=["batch_stats"])
    return logits, new["batch_stats"]

  fake_g, _ = judge(jax.lax.stop_gradient(disc_params), fake, stats)
  real_d, stats = judge(disc_params, jax.lax.stop_gradient(real), stats)
  fake_d, stats = judge(disc_params, jax.lax.stop_gradient(fake), stats)
  return (hinge_generator_loss(fake_g), hinge_discriminator_loss(real_d, fake_d), stats,
          {"d_real": jnp.mean(real_d), "d_fake": jnp.mean(fake_d)})
