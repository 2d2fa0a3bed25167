"""TAD-SR's time-aware discriminator: small heads on a frozen diffusion teacher's features.

He et al., "TAD-SR: Time-Aware Distillation for Efficient Diffusion Super-Resolution".
Follows the official code (LearningHx/TAD-SR, commit 8b0373fd, `TAD-SR/models/unet.py`:
`ProjectedDiscriminator`, `DiscHead`): an image (the student's output or the HR) is
noised to timestep t by the diffusion process, the frozen teacher's encoder runs on it at
t and returns one feature map per level (its `only_fea` forward; effcomp's `DiTSR` sows
them as 'encoder_features'), and for each map k

  s, b = chunk(Linear(SiLU(timestep_embedding(t, embed_dim))), 2)        (FiLM on t)
  h    = Conv3×3_zero(SiLU(GroupNorm32(x_k)·(1 + s) + b))
  head = SN-Conv1d_1 → GroupNorm4 → LReLU(0.2);  (· + SN-Conv1d_9,circular → GN4 →
         LReLU)/√2;  SN-Conv1d_1 → `logits_per_position` logits per position

over the flattened positions; the logits of all maps are concatenated. Spectral norm
(one power iteration per training call) keeps its `u`, `sigma` in 'batch_stats'.
Trained with the hinge loss (`effcomp.losses.adversarial`).
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.dit.dit import timestep_embedding


def _sn_conv1d(features: int, kernel: int, name: str) -> nn.Module:
  return nn.SpectralNorm(nn.Conv(features, (kernel,), padding="CIRCULAR" if kernel > 1 else 0),
                         n_steps=1, name=name)


class DiscHead(nn.Module):
  """Patch logits [B, L·logits_per_position] of a sequence x [B, L, C] (official
  `DiscHead`)."""
  logits_per_position: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]

    def block(h, kernel, name):
      h = _sn_conv1d(c, kernel, f"{name}_conv")(h, update_stats=train)
      return nn.leaky_relu(nn.GroupNorm(num_groups=4, name=f"{name}_norm")(h), 0.2)

    h = block(x, 1, "block_0")
    h = (block(h, 9, "block_1") + h) / math.sqrt(2.0)
    out = _sn_conv1d(self.logits_per_position, 1, "cls")(h, update_stats=train)
    return out.reshape(x.shape[0], -1)


class TimeAwareDiscriminator(nn.Module):
  """Logits [B, Σ_k H_k·W_k·logits_per_position] of teacher feature maps [B, H_k, W_k,
  C_k] at timesteps t [B] (module docstring). The t-conditioning is a FiLM of each map;
  its last conv starts at zero, so at initialization every head sees zeros."""
  embed_dim: int = 160
  logits_per_position: int = 64

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], t: jax.Array, train: bool = False
               ) -> jax.Array:
    if not features:
      raise ValueError("features: expected at least one teacher feature map")
    if t.shape != features[0].shape[:1]:
      raise ValueError(f"t {t.shape}: expected one timestep per image {features[0].shape[:1]}")
    e = nn.silu(timestep_embedding(t, self.embed_dim))
    logits = []
    for k, x in enumerate(features):
      b, _, _, c = x.shape
      scale, shift = jnp.split(nn.Dense(2 * c, name=f"film_{k}")(e)[:, None, None], 2, axis=-1)
      h = nn.GroupNorm(num_groups=min(32, c), name=f"norm_{k}")(x.astype(jnp.float32))
      h = nn.silu(h * (1 + scale) + shift)
      h = nn.Conv(c, (3, 3), padding=1, kernel_init=nn.initializers.zeros, name=f"out_{k}")(h)
      logits.append(DiscHead(self.logits_per_position, name=f"head_{k}")(h.reshape(b, -1, c),
                                                                         train))
    return jnp.concatenate(logits, axis=-1)
