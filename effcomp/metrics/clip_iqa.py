"""Relative quality scores from CLIP embeddings and antonym prompt pairs (CLIP-IQA; MoR's
degradation estimate).

MoR (He, Tu, Cheng et al., AAAI 2026, Eq. for s_i) scores each degradation dimension i by
the image embedding's similarity d to a positive prompt ("a sharp photo") and a negative
one ("a blurry photo"):

  s_i = exp(d_i^n) / (exp(d_i^p) + exp(d_i^n))      (high = degraded)

with d the cosine similarity. CLIP-IQA (Wang et al., AAAI 2023) computes the same softmax
over CLIP's logits, i.e. the cosines times CLIP's logit scale (exp(logit_scale) = 100 for
OpenAI's models); `scale` is that factor (1 reproduces the formula literally, where the
scores differ only in the third decimal). The prompt wording is effcomp's: the paper names
the seven dimensions, not the sentences.
"""

import jax
import jax.numpy as jnp

PROMPT_PAIRS = (
    ("a high quality photo.", "a low quality photo."),
    ("a sharp photo.", "a blurry photo."),
    ("a clean photo.", "a noisy photo."),
    ("a high resolution photo.", "a low resolution photo."),
    ("a photo with sharp edges.", "a photo with blurred edges."),
    ("a detailed photo.", "a photo lacking detail."),
    ("a photo without compression artifacts.", "a photo with compression artifacts."),
)


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def relative_scores(image_embeds: jax.Array, positive: jax.Array, negative: jax.Array,
                    scale: float = 1.0) -> jax.Array:
  """Scores [B, K] in (0, 1) from image embeds [B, D] and the K prompt pairs' text embeds
  positive / negative [K, D] (unnormalized: every embedding is normalized here)."""
  image = _unit(image_embeds.astype(jnp.float32))
  d_p = scale * image @ _unit(positive.astype(jnp.float32)).T
  d_n = scale * image @ _unit(negative.astype(jnp.float32)).T
  return jax.nn.sigmoid(d_n - d_p)  # = exp(d_n) / (exp(d_p) + exp(d_n))
