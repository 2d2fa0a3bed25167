"""Rotary position embeddings (RoPE, Su et al. 2021) in the rotate-half layout: 1-D for
token sequences (LLaMA) and 2-D for image-token grids (LlamaGen)."""

from typing import Tuple

import jax
import jax.numpy as jnp


def rope_angles(positions: jax.Array, head_dim: int, theta: float) -> Tuple[jax.Array, jax.Array]:
  """cos, sin of shape [..., head_dim] for integer `positions` [...] (rotate-half layout)."""
  if head_dim % 2:
    raise ValueError(f"head_dim={head_dim}: RoPE needs an even head dimension")
  inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def rope_angles_2d(positions: jax.Array, head_dim: int, theta: float
                   ) -> Tuple[jax.Array, jax.Array]:
  """2-D RoPE: cos, sin [..., head_dim] for integer (row, column) `positions` [..., 2].

  LlamaGen's `precompute_freqs_cis_2d` (autoregressive/models/gpt.py): the rotated pairs
  split in two halves, the first turned by the row, the second by the column, each with
  frequencies `theta^(-2i / (head_dim/2))`; here in the rotate-half layout of `rope_angles`
  (pairs (i, i + head_dim/2)) rather than LlamaGen's interleaved pairs, the same rotations
  on a permutation of the head dimensions.
  """
  if head_dim % 4:
    raise ValueError(f"head_dim={head_dim}: 2-D RoPE needs a multiple of 4")
  if positions.shape[-1] != 2:
    raise ValueError(f"positions.shape={positions.shape}: 2-D RoPE expects [..., 2] (row, column)")
  half = head_dim // 2
  inv_freq = 1.0 / theta ** (jnp.arange(0, half, 2, dtype=jnp.float32) / half)
  freqs = jnp.concatenate([positions[..., 0:1].astype(jnp.float32) * inv_freq,
                           positions[..., 1:2].astype(jnp.float32) * inv_freq], axis=-1)
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates `x` [B, T, H, D] by the angles of `cos`/`sin` [B, T, D] (pairs i, i+D/2)."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)
