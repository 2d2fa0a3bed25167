"""Conditional autoregressive generation with classifier-free guidance on the logits.

    tokens = generate_guided(model, params, prefix, num_tokens=256, rng=key,
                             null_prefix=null, cfg_scale=4.0, top_k=2000, vocab_limit=16384)

LlamaGen's `autoregressive/models/generate.py` (class-conditional image generation with a
decoder LM): the conditional prefixes [B, P] (a class token, perhaps a prompt) and the
unconditional ones (`null_prefix`, the null class) run as one batch of 2B; each step's
logits are `uncond + cfg_scale · (cond − uncond)` (`cfg_logits`), logits of ids ≥
`vocab_limit` (class tokens) are removed, and one token per row is drawn
(`generate.sample_logits`: temperature, top-k, top-p) and appended to both halves.

With `use_cache` (default) the prefix is run once and each step feeds one token through the
key/value cache (`Llama.init_cache`); without it every step recomputes the whole sequence
(the reference the cached path must equal). `positions` [P + N] or [P + N, 2] (2-D RoPE)
gives the RoPE position of every slot; None: the model's default (the sequence index).
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from effcomp.models.lm.generate import sample_logits


def cfg_logits(cond: jax.Array, uncond: jax.Array, scale) -> jax.Array:
  """Classifier-free guidance on logits: uncond + scale · (cond − uncond)."""
  return uncond + scale * (cond - uncond)


@functools.partial(jax.jit, static_argnames=("model", "num_tokens", "temperature", "top_k",
                                             "top_p", "vocab_limit", "use_cache"))
def generate_guided(model, params, prefix: jax.Array, *, num_tokens: int, rng: jax.Array,
                    null_prefix: Optional[jax.Array] = None, cfg_scale=1.0,
                    positions: Optional[jax.Array] = None, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, vocab_limit: int = 0,
                    use_cache: bool = True) -> jax.Array:
  """The `num_tokens` ids [B, num_tokens] generated after `prefix` [B, P] (module docstring).

  Step i draws with `jax.random.fold_in(rng, i)`, so the cached and uncached paths draw the
  same tokens from the same logits.
  """
  if num_tokens < 1:
    raise ValueError(f"num_tokens={num_tokens}: expected ≥ 1")
  if null_prefix is not None and null_prefix.shape != prefix.shape:
    raise ValueError(f"null_prefix.shape={null_prefix.shape}: expected prefix's {prefix.shape}")
  b, p = prefix.shape
  guided = null_prefix is not None
  seq = jnp.concatenate([prefix, null_prefix]) if guided else prefix
  rows = seq.shape[0]
  if positions is not None:
    if positions.shape[0] != p + num_tokens:
      raise ValueError(f"positions.shape={positions.shape}: expected {p + num_tokens} slots "
                       "(prefix + num_tokens) first")
    positions = jnp.broadcast_to(positions[None], (rows, *positions.shape))

  def pos(start, length):
    if positions is None:
      return None
    return jax.lax.dynamic_slice_in_dim(positions, start, length, axis=1)

  def draw(i, logits):
    """Token [B] for step i from the last logits [rows, V]."""
    if guided:
      logits = cfg_logits(logits[:b], logits[b:], cfg_scale)
    if vocab_limit:
      logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, -jnp.inf)
    return sample_logits(logits, jax.random.fold_in(rng, i), temperature, top_p, top_k)

  both = lambda token: jnp.concatenate([token, token]) if guided else token
  out = jnp.zeros((b, num_tokens), jnp.int32)
  apply = functools.partial(model.apply, {"params": params})

  if use_cache:
    cache = model.init_cache(rows, p + num_tokens, dtype=jnp.dtype(model.dtype))
    logits, cache = apply(seq, positions=pos(0, p), cache=cache)
    token = draw(0, logits[:, -1])

    def step(i, carry):
      token, cache, out = carry
      out = out.at[:, i - 1].set(token)
      logits, cache = apply(both(token)[:, None], positions=pos(p + i - 1, 1), cache=cache)
      return draw(i, logits[:, -1]), cache, out

    token, _, out = jax.lax.fori_loop(1, num_tokens, step, (token, cache, out))
    return out.at[:, -1].set(token)

  buffer = jnp.concatenate([seq, jnp.zeros((rows, num_tokens), seq.dtype)], axis=1)

  def full_step(i, carry):
    buffer, out = carry
    logits = apply(buffer, positions=pos(0, p + num_tokens))
    token = draw(i, jax.lax.dynamic_index_in_dim(logits, p + i - 1, axis=1, keepdims=False))
    buffer = jax.lax.dynamic_update_slice(buffer, both(token)[:, None].astype(buffer.dtype),
                                          (0, p + i))
    return buffer, out.at[:, i].set(token)

  return jax.lax.fori_loop(0, num_tokens, full_step, (buffer, out))[1]
