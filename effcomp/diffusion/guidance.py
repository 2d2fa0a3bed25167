"""Classifier-free guidance (Ho & Salimans 2022) and its training-time label dropout.

Guided output = uncond + scale·(cond − uncond) (scale = 1 + w in the paper's eq. 6 form;
1 is the conditional model, 0 the unconditional one). DiT `models.py` `forward_with_cfg`
runs the conditional and the unconditional (null label) halves as one doubled batch and
guides only the first channels: the ε part of a learned-sigma output, whose variance part
is kept per half (for the conditional samples: the conditional variance). DiT by default
guides only 3 of its 4 latent channels "for exact reproducibility" of its paper's
numbers; `guided_channels=3` reproduces that, the default guides all ε channels (what
DiT's comment calls the standard approach). The same wrapper guides flow velocities.

Training: the null label replaces each label with probability `prob` (DiT
`LabelEmbedder.token_drop`, class_dropout_prob = 0.1, null label = num_classes).
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

CondModelFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def guide(cond: jax.Array, uncond: jax.Array, scale) -> jax.Array:
  """uncond + scale·(cond − uncond)."""
  return uncond + scale * (cond - uncond)


def classifier_free_guidance(model_fn: CondModelFn, labels: jax.Array, null_label,
                             scale, *, learn_sigma: bool = False,
                             guided_channels: Optional[int] = None
                             ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A `model_fn(x, t)` for the samplers from a conditional `model_fn(x, t, y)`.

  labels: int [batch] (the conditions of the samples); null_label: the unconditional
  label (DiT: num_classes); scale: float (may be traced). Each call evaluates the model
  once on the doubled batch [x; x] with labels [labels; null]. The first
  `guided_channels` output channels are guided (default: C, or C of 2C with learned
  sigma); the rest come from the conditional half. Output: [batch, ..., C or 2C].
  """
  labels = jnp.asarray(labels)
  null = jnp.full_like(labels, null_label)

  def guided(x: jax.Array, t: jax.Array) -> jax.Array:
    batch = x.shape[0]
    if labels.shape[0] != batch:
      raise ValueError(f"labels of shape {labels.shape}: expected [{batch}] (x's batch)")
    out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                   jnp.concatenate([labels, null]))
    cond, uncond = out[:batch], out[batch:]
    channels = out.shape[-1] // 2 if learn_sigma else out.shape[-1]
    k = channels if guided_channels is None else guided_channels
    if not 0 < k <= channels:
      raise ValueError(f"guided_channels={guided_channels}: expected 1 … {channels}")
    return jnp.concatenate([guide(cond[..., :k], uncond[..., :k], scale), cond[..., k:]],
                           axis=-1)

  return guided


def drop_labels(rng: jax.Array, labels: jax.Array, null_label, prob: float) -> jax.Array:
  """labels with each one replaced by `null_label` with probability `prob` (training)."""
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f"prob={prob}: expected a probability in [0, 1]")
  drop = jax.random.uniform(rng, labels.shape) < prob
  return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)
