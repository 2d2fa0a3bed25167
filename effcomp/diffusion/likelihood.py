"""Gaussian KL and the discretized Gaussian decoder likelihood of the diffusion VLB.

Follows DiT `diffusion/diffusion_utils.py` (ADM / improved-diffusion): the KL between two
diagonal Gaussians (every L_{t-1} term of DDPM eq. 5) and the data likelihood of the last
step L_0, a Gaussian integrated over the 8-bit bin of width 2/255 around x ∈ [-1, 1]
(DDPM §3.3), with the outermost bins extended to ±∞. All element-wise, in nats.
"""

import math

import jax
import jax.numpy as jnp

_LOG_FLOOR = 1e-12  # the reference's clamp before every log


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
  """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) element-wise (broadcasting), in nats:
  ½(−1 + logvar2 − logvar1 + e^{logvar1 − logvar2} + (mean1 − mean2)²·e^{−logvar2})."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: jax.Array) -> jax.Array:
  """Φ(x) ≈ ½(1 + tanh(√(2/π)·(x + 0.044715·x³))), the reference's fast approximation
  (kept, rather than the exact erf, so that losses match the reference numerically)."""
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: jax.Array, means: jax.Array,
                                        log_scales: jax.Array) -> jax.Array:
  """log P(bin of x) under N(means, e^{2·log_scales}); x: uint8 data rescaled to [-1, 1].

  The bin is [x − 1/255, x + 1/255]; below −0.999 it is (−∞, x + 1/255], above 0.999
  [x − 1/255, ∞). All arrays share one shape.
  """
  if not x.shape == means.shape == log_scales.shape:
    raise ValueError(f"x {x.shape}, means {means.shape}, log_scales {log_scales.shape}: "
                     "expected one shape")
  centered = x - means
  inv_stdv = jnp.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, _LOG_FLOOR))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, _LOG_FLOOR))
  log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, _LOG_FLOOR))
  return jnp.where(x < -0.999, log_cdf_plus,
                   jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def mean_flat(x: jax.Array) -> jax.Array:
  """Mean over every non-batch axis: [batch, ...] → [batch]."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))
