"""GELU and softmax whose backward pass keeps only what it needs.

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

Both compute exactly the functions and gradients they replace (tests).
"""

import functools

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
