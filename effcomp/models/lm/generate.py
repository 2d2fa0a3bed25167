"""Autoregressive generation with a key/value cache: greedy, temperature, top-k and top-p.

    tokens = generate(model, params, prompt, max_new_tokens=64, rng=key,
                      temperature=0.8, top_p=0.95, eos_id=tokenizer.eos_id)

The prompt [B, T] is run once (prefill), then one token per step reuses the cached keys
and values (`Llama.init_cache`); the whole loop is one jitted `lax.fori_loop`. Top-p
(nucleus) sampling follows Holtzman et al. 2020: keep the smallest set of most likely
tokens whose probability reaches `top_p`, renormalize, sample. `temperature=0` is greedy.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp


def sample_logits(logits: jax.Array, rng: jax.Array, temperature: float = 1.0,
                  top_p: float = 1.0, top_k: int = 0) -> jax.Array:
  """One token id per row of `logits` [B, V]; greedy when `temperature == 0`. Top-k
  (k > 0: the k most likely tokens; ties at the k-th logit kept) then top-p filter the
  tempered logits, in LlamaGen's `top_k_top_p_filtering` order."""
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
    raise ValueError(f"temperature={temperature}, top_p={top_p}, top_k={top_k}: expected "
                     "temperature ≥ 0, 0 < top_p ≤ 1 and top_k ≥ 0")
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if 0 < top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  if top_p < 1:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep token i when the mass before it is < top_p (the most likely token always).
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_p",
                                             "eos_id", "pad_id"))
def generate(model, params, prompt: jax.Array, *, max_new_tokens: int, rng: jax.Array,
             temperature: float = 0.0, top_p: float = 1.0, eos_id: Optional[int] = None,
             pad_id: int = 0) -> jax.Array:
  """`prompt` [B, T] followed by `max_new_tokens` generated ids → [B, T + max_new_tokens].

  After a row emits `eos_id` its remaining positions are `pad_id`.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens}: expected ≥ 1")
  b, t = prompt.shape
  cache = model.init_cache(b, t + max_new_tokens, dtype=jnp.dtype(model.dtype))
  logits, cache = model.apply({"params": params}, prompt, cache=cache)
  out = jnp.concatenate([prompt.astype(jnp.int32),
                         jnp.full((b, max_new_tokens), pad_id, jnp.int32)], axis=1)

  def emit(i, logits, out, done, rng):
    """Samples position t + i from `logits` [B, V] and writes it into `out`."""
    token = jnp.where(done, pad_id, sample_logits(logits, jax.random.fold_in(rng, i),
                                                  temperature, top_p))
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, t + i))
    return token, out, done | (token == eos_id) if eos_id is not None else done

  def step(i, carry):
    token, cache, out, done = carry
    logits, cache = model.apply({"params": params}, token[:, None], cache=cache)
    token, out, done = emit(i, logits[:, -1], out, done, rng)
    return token, cache, out, done

  token, out, done = emit(0, logits[:, -1], out, jnp.zeros((b,), bool), rng)
  return jax.lax.fori_loop(1, max_new_tokens, step, (token, cache, out, done))[2]
