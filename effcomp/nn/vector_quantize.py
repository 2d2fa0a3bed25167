"""Vector quantization: nearest-code lookup with a straight-through gradient, the VQ-VAE
codebook and commitment losses, LlamaGen's entropy loss and codebook-usage measures.

Follows LlamaGen `tokenizer/tokenizer_image/vq_model.py` `VectorQuantizer.forward`
(itself VQGAN's, van den Oord et al. 2017 eq. 3):

  * with `l2_norm` (LlamaGen's default), z and the codebook rows are ℓ2-normalized before the
    lookup, so the nearest code is the one of highest cosine similarity and every code stays
    on the unit sphere (what keeps LlamaGen's codebook usage at 97 % without EMA updates);
  * index = argmin_j ‖z − e_j‖², z_q = e_index;
  * codebook loss ‖sg(z) − z_q‖² and commitment loss β‖z − sg(z_q)‖² (means over elements);
  * z_q is passed on with the straight-through estimator (forward z_q, gradient to z
    unchanged: `z + sg(z_q − z)`), here a `jax.custom_vjp` so the rule is explicit;
  * entropy loss (MaskGIT's, `compute_entropy_loss`): softmax of −d / 0.01 over the codes,
    mean per-vector entropy − entropy of the mean (low: each vector is sure of its code and
    the codes are used evenly).

Pure functions on channels-last arrays `z` [..., D] and a codebook [K, D].
"""

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

ENTROPY_TEMPERATURE = 0.01  # LlamaGen `compute_entropy_loss(temperature=0.01)`


def normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(‖x‖₂, eps) along the last axis (torch `F.normalize(p=2, dim=-1)`)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def lookup_codebook(codebook: jax.Array, l2_norm: bool) -> jax.Array:
  """The codebook the lookup uses (its rows normalized under `l2_norm`)."""
  return normalize(codebook) if l2_norm else codebook


def distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Squared distances ‖z − e_j‖² [..., K] as LlamaGen computes them: z² + e² − 2 z·e."""
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  return (jnp.sum(z * z, axis=-1, keepdims=True) + jnp.sum(codebook * codebook, axis=-1)
          - 2.0 * jnp.einsum("...d,kd->...k", z, codebook))


@jax.custom_vjp
def straight_through(z: jax.Array, z_q: jax.Array) -> jax.Array:
  """z_q forward; the gradient goes to z unchanged and none to z_q."""
  return z_q


def _st_fwd(z, z_q):
  return z_q, None


def _st_bwd(_, g):
  return g, jnp.zeros_like(g)


straight_through.defvjp(_st_fwd, _st_bwd)


def entropy_loss(dist: jax.Array, temperature: float = ENTROPY_TEMPERATURE) -> jax.Array:
  """Mean per-vector entropy of softmax(−d/T) minus the entropy of its mean (LlamaGen)."""
  logits = -dist.reshape(-1, dist.shape[-1]) / temperature
  probs = jax.nn.softmax(logits, axis=-1)
  log_probs = jax.nn.log_softmax(logits + 1e-5, axis=-1)
  mean_probs = jnp.mean(probs, axis=0)
  avg_entropy = -jnp.sum(mean_probs * jnp.log(mean_probs + 1e-5))
  sample_entropy = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
  return sample_entropy - avg_entropy


def quantize(z: jax.Array, codebook: jax.Array, *, beta: float = 0.25, l2_norm: bool = True,
             entropy_weight: float = 0.0
             ) -> Tuple[jax.Array, jax.Array, Dict[str, jax.Array]]:
  """Quantizes `z` [..., D] to its nearest rows of `codebook` [K, D].

  Returns:
    z_q: [..., D] (float32; straight-through gradient to z), the normalized z's codes
      under `l2_norm`.
    indices: [...] int32 code ids.
    losses: {'codebook': ‖sg(z) − z_q‖², 'commitment': β‖z − sg(z_q)‖², 'entropy':
      entropy_weight · entropy_loss} (scalars; LlamaGen's vq_loss, commit_loss,
      entropy_loss).
  """
  if z.shape[-1] != codebook.shape[-1]:
    raise ValueError(f"z.shape={z.shape}: its last axis must equal the codebook's width "
                     f"{codebook.shape[-1]} (codebook {codebook.shape})")
  z = z.astype(jnp.float32)
  if l2_norm:
    z = normalize(z)
  embedding = lookup_codebook(codebook.astype(jnp.float32), l2_norm)
  dist = distances(z, embedding)
  indices = jnp.argmin(dist, axis=-1).astype(jnp.int32)
  z_q = embedding[indices]
  losses = {"codebook": jnp.mean(jnp.square(z_q - jax.lax.stop_gradient(z))),
            "commitment": beta * jnp.mean(jnp.square(jax.lax.stop_gradient(z_q) - z)),
            "entropy": (entropy_weight * entropy_loss(dist) if entropy_weight
                        else jnp.zeros((), jnp.float32))}
  return straight_through(z, z_q), indices, losses


def code_counts(indices: jax.Array, codebook_size: int, mask=None) -> jax.Array:
  """How often each code occurs in `indices` [B, ...] ([K] float32); rows where `mask` [B]
  is False do not count."""
  one_hot = jax.nn.one_hot(indices.reshape(indices.shape[0], -1), codebook_size,
                           dtype=jnp.float32)
  per_row = jnp.sum(one_hot, axis=1)
  if mask is not None:
    per_row = per_row * mask[:, None].astype(jnp.float32)
  return jnp.sum(per_row, axis=0)


def usage(counts: jax.Array) -> jax.Array:
  """Fraction of codes used at least once (LlamaGen's `codebook_usage`)."""
  return jnp.mean((counts > 0).astype(jnp.float32))


def perplexity(counts: jax.Array) -> jax.Array:
  """exp(entropy of the code frequencies): the number of equally used codes it equals."""
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))
