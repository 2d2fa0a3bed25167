"""VPD-SR's Explicit Semantic-aware Supervision (ESS): a frozen image encoder's features of
the student's output against those of the ground truth.

VPD-SR (Wu, Xin, Tu et al., arXiv 2506.02605) supervises the one-step student with CLIP's
"explicit semantic" features; without public code, effcomp takes, for each feature the
encoder returns (CLIP: the image embedding and chosen hidden states; the stand-in
encoder: its stage outputs), one minus the cosine similarity along the channel axis at each
position, averaged over positions and features:

  ESS(x̂, x) = mean_f mean_pos (1 − cos(φ_f(x̂), sg(φ_f(x))))

Cosine, not L2, because CLIP compares embeddings by angle (its contrastive logits are
scaled cosines); its value is 0 for identical semantics and at most 2.
"""

from typing import Sequence

import jax
import jax.numpy as jnp


def cosine_distance(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """1 − cos along the last axis, per example: mean over the other axes → [B]."""
  dot = jnp.sum(a * b, axis=-1)
  norm = jnp.sqrt(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1))
  distance = 1.0 - dot / jnp.maximum(norm, eps)
  return jnp.mean(distance.reshape(a.shape[0], -1), axis=-1)


def ess_loss(pred_features: Sequence[jax.Array], target_features: Sequence[jax.Array]
             ) -> jax.Array:
  """Per-example ESS [B] from the encoder's features of the output and of the HR (the
  latter stop-gradient'ed)."""
  if len(pred_features) != len(target_features) or not pred_features:
    raise ValueError(f"{len(pred_features)} output features, {len(target_features)} target "
                     "features: expected the same number, at least one")
  return sum(cosine_distance(p, jax.lax.stop_gradient(t))
             for p, t in zip(pred_features, target_features)) / len(pred_features)
