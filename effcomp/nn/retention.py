"""Multi-scale retention (Sun et al. 2023, "Retentive Network", RetNet): pure functions.

Retention replaces softmax attention by a causal, exponentially decayed linear attention
that has three equal forms (RetNet §2.1):

  parallel (Eq. 5):   Retention(X) = (Q Kᵀ ⊙ D) V,   D_nm = γ^(n−m) if n ≥ m else 0
  recurrent (Eq. 6):  S_n = γ S_{n−1} + K_nᵀ V_n,     Retention(X_n) = Q_n S_n
  chunkwise (Eq. 7):  a chunk in parallel plus Q times the state carried from before it

with one decay γ_h = 1 − 2^(−5−h) per head h (§2.2, Eq. 8: multi-scale retention). Q and
K are rotated by position (the xPos-style Θ_n = e^{inθ} of Eq. 5; the caller does it).

Normalizations follow the official code, microsoft/torchscale (commit 4d1e0e8):
`torchscale/architecture/retnet.py:RetNetRelPos.forward` row-normalizes the decay mask,
D̃_nm = D_nm / sqrt(Σ_i D_ni), and `torchscale/component/multiscale_retention.py:
MultiScaleRetention.parallel_forward` divides each score row by max(1, Σ_m |R_nm|)
(clamped at 5·10⁴ and without gradient); `recurrent_forward` keeps
kv_n = S_n / sqrt(scale_n) with scale_n = γ scale_{n−1} + 1 = Σ_{m≤n} γ^(n−m) (the same
D̃ row sums). The score-row division is not computable recurrently (it needs every past
key), so only the parallel form applies it; the per-head RMS norm that follows
(`head_rms_norm`, their `group_norm`) removes it again up to its epsilon (RetNet §2.2,
"Retention Score Normalization": the scale invariance of GroupNorm). Without it the three
forms are equal exactly; `effcomp.models.lm.llama.Retention` therefore leaves it out.

Shapes: q, k [B, T, H, Dk]; v [B, T, H, Dv]; gamma [H]; state {'kv': [B, H, Dk, Dv],
'scale': [H]}. Computed in float32.
"""

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

State = Dict[str, jax.Array]  # {'kv': [B, H, Dk, Dv], 'scale': [H]}
# torchscale's clamp of the score-row normalizer (parallel_forward: .clamp(min=1, max=5e4)).
MAX_SCORE_NORM = 5e4


def decay_rates(num_heads: int) -> jax.Array:
  """γ_h = 1 − 2^(−5−h), h = 0 … num_heads−1 (RetNet Eq. 8; `RetNetRelPos.__init__`): [H]."""
  return 1.0 - 2.0 ** (-5.0 - jnp.arange(num_heads, dtype=jnp.float32))


def decay_mask(length: int, gamma: jax.Array) -> jax.Array:
  """D [H, T, T]: D_nm = γ^(n−m) for n ≥ m, else 0 (RetNet Eq. 5), as exp((n−m)·log γ)."""
  n = jnp.arange(length)
  diff = n[:, None] - n[None, :]
  causal = diff >= 0
  decayed = jnp.exp(jnp.where(causal, diff, 0)[None] * jnp.log(gamma)[:, None, None])
  return jnp.where(causal[None], decayed, 0.0)


def parallel_retention(q: jax.Array, k: jax.Array, v: jax.Array, gamma: jax.Array,
                       normalize_scores: bool = True) -> jax.Array:
  """(Q Kᵀ ⊙ D̃) V per head (Eq. 5 with `RetNetRelPos`'s D̃ = D / sqrt(row sums of D)).

  `normalize_scores` divides each row of R = Q Kᵀ ⊙ D̃ by stop_gradient(clip(Σ_m |R_nm|,
  1, 5·10⁴)) as `MultiScaleRetention.parallel_forward` does.

  Args: q, k [B, T, H, Dk]; v [B, T, H, Dv]; gamma [H].
  Returns: [B, T, H, Dv] float32.
  """
  d = decay_mask(q.shape[1], gamma)
  d = d / jnp.sqrt(jnp.sum(d, axis=-1, keepdims=True))
  q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  scores = jnp.einsum("bnhk,bmhk->bhnm", q, k) * d
  if normalize_scores:
    norm = jnp.clip(jnp.sum(jnp.abs(scores), axis=-1, keepdims=True), 1.0, MAX_SCORE_NORM)
    scores = scores / jax.lax.stop_gradient(norm)
  return jnp.einsum("bhnm,bmhv->bnhv", scores, v.astype(jnp.float32))


def init_state(batch: int, num_heads: int, key_dim: int, value_dim: int) -> State:
  """The empty recurrent state: kv = 0, scale = 0 (so the first step gives scale = 1)."""
  return {"kv": jnp.zeros((batch, num_heads, key_dim, value_dim), jnp.float32),
          "scale": jnp.zeros((num_heads,), jnp.float32)}


def recurrent_retention(q: jax.Array, k: jax.Array, v: jax.Array, gamma: jax.Array,
                        state: State) -> Tuple[jax.Array, State]:
  """One token of Eq. 6 in `MultiScaleRetention.recurrent_forward`'s bookkeeping.

    scale_n = γ scale_{n−1} + 1
    kv_n = kv_{n−1} · γ sqrt(scale_{n−1} / scale_n) + k_nᵀ v_n / sqrt(scale_n)   (= S_n / √scale_n)
    o_n = q_n kv_n

  Args: q, k [B, H, Dk]; v [B, H, Dv]; gamma [H]; state from `init_state` or a prior call.
  Returns: o [B, H, Dv] float32 and the new state.
  """
  scale = state["scale"] * gamma + 1.0
  carry = (gamma * jnp.sqrt(state["scale"] / scale))[None, :, None, None]
  new = jnp.einsum("bhk,bhv->bhkv", k.astype(jnp.float32), v.astype(jnp.float32))
  kv = state["kv"] * carry + new / jnp.sqrt(scale)[None, :, None, None]
  out = jnp.einsum("bhk,bhkv->bhv", q.astype(jnp.float32), kv)
  return out, {"kv": kv, "scale": scale}


def chunk_retention(q: jax.Array, k: jax.Array, v: jax.Array, gamma: jax.Array,
                    state: State) -> Tuple[jax.Array, State]:
  """T tokens after `state` at once (Eq. 7), equal to T steps of `recurrent_retention`.

  With S = kv·√scale the carried state and j = 0 … T−1 the offsets in the chunk:
    o_j = (Σ_{i≤j} γ^(j−i) (q_j·k_i) v_i + γ^(j+1) q_j S) / sqrt(scale_j),
    scale_j = γ^(j+1) scale + Σ_{i≤j} γ^(j−i),   S' = γ^T S + Σ_i γ^(T−1−i) k_iᵀ v_i.
  From the empty state this is `parallel_retention(..., normalize_scores=False)`. Unlike
  torchscale's `chunk_recurrent_forward` it keeps no score normalization, so a cached
  prefill continues exactly as token-by-token decoding would.

  Args: q, k [B, T, H, Dk]; v [B, T, H, Dv]; gamma [H]; state.
  Returns: [B, T, H, Dv] float32 and the state after the chunk.
  """
  t = q.shape[1]
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  d = decay_mask(t, gamma)                                              # [H, T, T]
  into = jnp.exp(jnp.arange(1, t + 1)[None] * jnp.log(gamma)[:, None])  # γ^(j+1): [H, T]
  scale = into * state["scale"][:, None] + jnp.sum(d, axis=-1)          # [H, T]
  s = state["kv"] * jnp.sqrt(state["scale"])[None, :, None, None]
  inner = jnp.einsum("bhji,bihv->bjhv", jnp.einsum("bjhk,bihk->bhji", q, k) * d, v)
  cross = jnp.einsum("bjhk,bhkv->bjhv", q, s) * into.T[None, :, :, None]
  out = (inner + cross) / jnp.sqrt(scale).T[None, :, :, None]
  to_end = d[:, -1].T[None, :, :, None]                                 # γ^(T−1−i): [1, T, H, 1]
  s = s * into[:, -1][None, :, None, None] + jnp.einsum("bihk,bihv->bhkv", k * to_end, v)
  return out, {"kv": s / jnp.sqrt(scale[:, -1])[None, :, None, None], "scale": scale[:, -1]}


def head_rms_norm(x: jax.Array, eps: float) -> jax.Array:
  """x / sqrt(mean over the last axis of x² + eps), in float32: [..., H, Dv] → same shape.

  `MultiScaleRetention.group_norm`: an RMSNorm over each head's Dv outputs without a
  learned scale (Eq. 8's GroupNorm, one group per head, as the official code has it)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
