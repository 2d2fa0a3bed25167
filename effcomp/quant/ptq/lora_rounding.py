"""LoRA-Rounding: AdaRound's learned up/down rounding with a low-rank rounding matrix.

AdaRound (Nagel et al. 2020, eq. 22–24) quantizes a weight as
    ŵ = s · (clip(⌊w/s⌋ + h(V) + z, qmin, qmax) − z),
    h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1),  ζ = 1.1, γ = −0.1   (rectified sigmoid),
with one learned V per weight and the regulariser
    f_reg(V) = Σ 1 − |2h(V) − 1|^β,
whose β is annealed from 20 to 2 after a warm-up (BRECQ's linear decay), so h ends at
0 or 1; the final rounding is hard: up where h ≥ 0.5. CBQ (Ding et al. 2023, §3.3)
replaces the full V [in, out] by a low-rank product V = A₁A₂, A₁ [in, r], A₂ [r, out].

Notes on the variant implemented here:
  * The regulariser is AdaRound's 1 − |2h − 1|^β (β → large is flat in the middle and
    only pins values already near 0/1; β = 2 pushes everything to the ends).
  * `beta_schedule` returns β = 0 during the warm-up and `regularizer(h, 0)` is 0, so
    one schedule value switches the term off and anneals it.
  * Two parametrisations of V (`h(a1, a2, base, gain)`):
    - pure low rank, V = A₁A₂ (the paper's): AdaRound starts from V₀ with
      h(V₀) = frac(w/s) (`base_logits`), i.e. the soft weight equals w. A rank-r V
      cannot match V₀ (fractional parts are close to i.i.d. uniform, so V₀ is nearly
      full rank); `init(method='svd')` takes its best rank-r approximation (truncated
      SVD, A₁ = U√S, A₂ = √S Vᵀ). Small |V| means h ≈ ½, so the soft weight starts near
      ⌊w/s⌋ + ½, whose error has the variance s²/12 of round-to-nearest, but the final
      decisions are the sign pattern of a rank-r matrix: a small r cannot express
      arbitrary decisions, not even round-to-nearest's.
    - offset, V = g ⊙ V₀ + A₁A₂ with V₀ fixed, g a per-output-channel gain (init 1) and
      `init(method='lora')` (A₁ small random, A₂ = 0): the soft weight starts at w, the
      hard decisions at round-to-nearest, and the learned low-rank term moves them
      (still r·(in + out) + out learned numbers per kernel). The regulariser saturates h
      by growing g. `cbq.py` uses this by default and compares both.

Shapes: kernels w [in, out]; `scale` either broadcastable to [in, out] or in
`fake_quant.weight_scale_and_zero`'s grouped view [groups, 1, out] ([1, 1, out] per
channel, [1, 1, 1] per tensor).
"""

from typing import Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch (eq. 23)
BETA_START, BETA_END, WARMUP = 20.0, 2.0, 0.2  # AdaRound / BRECQ defaults
INIT_METHODS = ("svd", "lora")


def rectified_sigmoid(v: Array) -> Array:
  """h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1) ∈ [0, 1] (AdaRound eq. 23)."""
  return jnp.clip(jax.nn.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def inverse_rectified_sigmoid(p: Array) -> Array:
  """V with h(V) = p for p ∈ [0, 1] (finite: p = 0 → −2.40, p = 1 → 2.40)."""
  return -jnp.log((ZETA - GAMMA) / (p - GAMMA) - 1.0)


def h(a1: Array, a2: Array, base: Array | None = None, gain: Array | None = None) -> Array:
  """The rounding offsets h(V) [in, out] ∈ [0, 1], V = A₁A₂ (+ gain·base when given)."""
  v = a1.astype(jnp.float32) @ a2.astype(jnp.float32)
  if base is not None:
    v = v + (base if gain is None else gain * base)
  return rectified_sigmoid(v)


def base_logits(w: Array, scale: Array) -> Array:
  """AdaRound's initial V₀ [in, out]: h(V₀) = frac(w/s), so ⌊w/s⌋ + h(V₀) = w/s."""
  v = w.astype(jnp.float32) / full_scale(scale, w.shape)
  return inverse_rectified_sigmoid(v - jnp.floor(v))


def full_scale(scale: Array, shape: Tuple[int, int]) -> Array:
  """A step size in the grouped view [groups, 1, out] (or broadcastable) as [in, out]."""
  scale = jnp.asarray(scale, jnp.float32)
  if scale.ndim == 3:
    view = (scale.shape[0], shape[0] * shape[1] // (scale.shape[0] * scale.shape[-1]),
            scale.shape[-1])
    return jnp.broadcast_to(scale, view).reshape(shape)
  return jnp.broadcast_to(scale, shape)


def init(w: Array, scale: Array, rank: int, rng: Array, method: str = "svd") -> Tuple[Array, Array]:
  """(A₁ [in, r], A₂ [r, out]) to start LoRA-Rounding of kernel `w` with step `scale`.

  'svd': the rank-r truncated SVD of AdaRound's V₀ = h⁻¹(frac(w/s)); ranks above
  min(in, out) are padded with small random columns (from `rng`). 'lora': A₁ ~ N(0, 1/r)·0.01,
  A₂ = 0.
  """
  if w.ndim != 2:
    raise ValueError(f"w of shape {w.shape}: expected a 2-D kernel [in, out]")
  if rank < 1:
    raise ValueError(f"rank={rank}: expected ≥ 1")
  if method not in INIT_METHODS:
    raise ValueError(f"method={method!r}: expected one of {INIT_METHODS}")
  n_in, n_out = w.shape
  if method == "lora":
    a1 = 0.01 * jax.random.normal(rng, (n_in, rank), jnp.float32) / jnp.sqrt(rank)
    return a1, jnp.zeros((rank, n_out), jnp.float32)
  v0 = base_logits(w, scale)
  u, s, vt = jnp.linalg.svd(v0, full_matrices=False)
  r = min(rank, s.shape[0])
  root = jnp.sqrt(s[:r])
  a1, a2 = u[:, :r] * root, root[:, None] * vt[:r]
  if rank > r:  # unused directions: tiny random A₁, zero A₂ (A₁A₂ unchanged)
    pad = 1e-3 * jax.random.normal(rng, (n_in, rank - r), jnp.float32)
    a1 = jnp.concatenate([a1, pad], axis=1)
    a2 = jnp.concatenate([a2, jnp.zeros((rank - r, n_out), jnp.float32)])
  return a1, a2


def regularizer(h_values: Array, beta: Array | float) -> Array:
  """Σ 1 − |2h − 1|^β (AdaRound eq. 24); 0 when β = 0 (the warm-up)."""
  on = beta > 0
  safe_beta = jnp.where(on, beta, 1.0)  # no 0-power (its gradient is NaN at h = ½)
  reg = jnp.sum(1.0 - jnp.abs(2.0 * h_values - 1.0) ** safe_beta)
  return jnp.where(on, reg, 0.0)


def beta_schedule(step: Array | int, total: int, start: float = BETA_START, end: float = BETA_END,
                  warmup: float = WARMUP) -> Array:
  """β at `step` of `total`: 0 (regulariser off) for the first `warmup` fraction, then a
  linear decay from `start` to `end` (BRECQ's LinearTempDecay)."""
  step = jnp.asarray(step, jnp.float32)
  begin = warmup * total
  progress = jnp.clip((step - begin) / jnp.maximum(total - begin, 1.0), 0.0, 1.0)
  return jnp.where(step < begin, 0.0, start + (end - start) * progress)


def saturation(h_values: Array, level: float = 0.99) -> Array:
  """Fraction of offsets that have made their decision: |2h − 1| > `level`."""
  return jnp.mean(jnp.abs(2.0 * h_values - 1.0) > level)
