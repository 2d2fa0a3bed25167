"""The KL-autoencoder objective: pixel reconstruction + kl_weight · KL(q(z|x) ‖ N(0, I)).

Follows latent diffusion's `ldm/modules/losses/contperceptual.py` (`LPIPSWithDiscriminator`,
CompVis/stable-diffusion) without its perceptual, learned-logvar and GAN terms: both terms
are summed over pixels / latent elements and averaged over the batch, so `kl_weight` has
the paper's scale (1e-6 for the SD autoencoder). The KL is diffusers'/LDM's
`DiagonalGaussianDistribution.kl()`.
"""

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

RECONSTRUCTIONS = ("l1", "l2")


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) ‖ N(0, I)) per example: [B, ...] → [B].

  ½ Σ (mean² + exp(logvar) − 1 − logvar) over all but the batch axis.
  """
  terms = jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar
  return 0.5 * jnp.sum(terms.astype(jnp.float32), axis=tuple(range(1, mean.ndim)))


def reconstruction_kl_loss(recon: jax.Array, x: jax.Array, mean: jax.Array, logvar: jax.Array,
                           kl_weight: float, reconstruction: str = "l1"
                           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Autoencoder loss and metrics.

  Args:
    recon, x: reconstructed and target images [B, H, W, C] (same scale, e.g. [-1, 1]).
    mean, logvar: the posterior [B, h, w, latent] from `AutoencoderKL.encode`.
    kl_weight: weight of the KL term (LDM's SD autoencoder: 1e-6).
    reconstruction: 'l1' (|recon − x|, LDM's pixel loss) or 'l2' ((recon − x)²).

  Returns:
    loss = mean_b Σ_pixels rec + kl_weight · mean_b KL_b, and metrics
    {'loss', 'reconstruction' (the per-example sum, batch mean), 'kl' (same),
     'l1', 'mse' (per-element means, for reading)}.
  """
  if reconstruction not in RECONSTRUCTIONS:
    raise ValueError(f"reconstruction={reconstruction!r}: expected one of {RECONSTRUCTIONS}")
  if recon.shape != x.shape:
    raise ValueError(f"recon.shape={recon.shape} differs from x.shape={x.shape}")
  if mean.shape != logvar.shape or mean.shape[0] != x.shape[0]:
    raise ValueError(f"mean.shape={mean.shape}, logvar.shape={logvar.shape}: expected equal "
                     f"shapes with batch {x.shape[0]}")
  diff = recon.astype(jnp.float32) - x.astype(jnp.float32)
  per_pixel = jnp.abs(diff) if reconstruction == "l1" else jnp.square(diff)
  rec = jnp.mean(jnp.sum(per_pixel, axis=tuple(range(1, x.ndim))))
  kl = jnp.mean(kl_divergence(mean, logvar))
  loss = rec + kl_weight * kl
  metrics = {"loss": loss, "reconstruction": rec, "kl": kl, "l1": jnp.mean(jnp.abs(diff)),
             "mse": jnp.mean(jnp.square(diff))}
  return loss, metrics
