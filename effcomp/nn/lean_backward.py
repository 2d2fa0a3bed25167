"""GELU, softmax and GroupNorm whose backward pass keeps only what it needs.

JAX's autodiff keeps every intermediate the derivative formula reads. For the exact GELU
that is three tensors of the input's size (x·Φ's product, `erfc` and `exp` outputs) and
for `jax.nn.softmax` two (the exponentials and the normalized output). In a train step
the residuals of every layer stay in memory until the backward pass reaches it and, in a
scanned stage (`effcomp.nn.layer_scan`), are copied into per-layer stacks: DiT-SR's
full-resolution block kept 242 MiB of residuals, 72 MiB of them for its GELU and 24 MiB
for its window softmax (issue 22).

- `gelu`: `jax.nn.gelu` that keeps only its input and recomputes the rest in the backward
  pass (`jax.checkpoint`; elementwise work, fused by XLA into the backward's loop).
- `softmax`: keeps only its output p; ∂x = p ∘ (g − Σ g ∘ p), the softmax's Jacobian-vector
  product written with p alone.
- `GroupNorm` (`flax.linen.GroupNorm`'s parameters and function, float32 statistics): keeps
  its input and the per-group mean and reciprocal deviation; Flax's autodiff keeps two
  tensors of the input's size (x − μ and its square) besides.

All three compute the functions and gradients they replace (tests).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def gelu(x: jax.Array, approximate: bool = True) -> jax.Array:
  """`jax.nn.gelu(x, approximate)` (tanh form by default, as there); the backward pass keeps
  x alone."""
  return jax.checkpoint(functools.partial(jax.nn.gelu, approximate=approximate))(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
  """`jax.nn.softmax(x, axis)`; the backward pass keeps the output alone."""
  return jax.nn.softmax(x, axis=axis)


def _softmax_fwd(x, axis):
  p = jax.nn.softmax(x, axis=axis)
  return p, p


def _softmax_bwd(axis, p, g):
  return (p * (g - jnp.sum(g * p, axis=axis, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


def _grouped(x: jax.Array, groups: int):
  """x [B, ..., C] → (float32 x as [B, ..., G, C/G], the axes of one (batch, group))."""
  grouped = x.astype(jnp.float32).reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))
  return grouped, tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, eps: float
               ) -> jax.Array:
  """GroupNorm of x [B, ..., C] over all but the batch axis and each group of C/`groups`
  channels, then ·scale + bias [C]; float32 statistics and output (two-pass variance)."""
  return _group_norm_fwd(x, scale, bias, groups, eps)[0]


def _group_norm_fwd(x, scale, bias, groups, eps):
  grouped, axes = _grouped(x, groups)
  mean = jnp.mean(grouped, axis=axes, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(grouped - mean), axis=axes, keepdims=True) + eps)
  normalized = ((grouped - mean) * rstd).reshape(x.shape)
  return normalized * scale.astype(jnp.float32) + bias.astype(jnp.float32), (x, scale, mean, rstd)


def _group_norm_bwd(groups, eps, residuals, g):
  x, scale, mean, rstd = residuals
  grouped, axes = _grouped(x, groups)
  normalized = (grouped - mean) * rstd
  g32 = g.astype(jnp.float32)
  dnorm = (g32 * scale.astype(jnp.float32)).reshape(grouped.shape)
  dx = rstd * (dnorm - jnp.mean(dnorm, axis=axes, keepdims=True)
               - normalized * jnp.mean(dnorm * normalized, axis=axes, keepdims=True))
  batch_axes = tuple(range(x.ndim - 1))
  dscale = jnp.sum(g32 * normalized.reshape(x.shape), axis=batch_axes)
  return (dx.reshape(x.shape).astype(x.dtype), dscale.astype(scale.dtype),
          jnp.sum(g32, axis=batch_axes).astype(scale.dtype))


group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


class GroupNorm(nn.Module):
  """`nn.GroupNorm(num_groups, epsilon, dtype=float32, scale_init, bias_init)`: the same
  parameters ('scale', 'bias' [C]) and function (two-pass variance), through `group_norm`."""
  num_groups: int = 32
  epsilon: float = 1e-6
  scale_init: Callable[..., Any] = nn.initializers.ones
  bias_init: Callable[..., Any] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    if self.num_groups <= 0 or c % self.num_groups:
      raise ValueError(f"num_groups={self.num_groups} must divide the channels ({c})")
    scale = self.param("scale", self.scale_init, (c,), jnp.float32)
    bias = self.param("bias", self.bias_init, (c,), jnp.float32)
    return group_norm(x, scale, bias, self.num_groups, self.epsilon)
