"""Weight binarizers for 1-bit LLMs: progressive tanh with dual scaling, and the baselines.

Progressive binarization ("Rethinking 1-bit Optimization Leveraging Pre-trained Large
Language Models", Tu et al. 2025; no official code) turns a pre-trained full-precision
weight into a binary one gradually, with one function in the forward *and* the backward:

  F(z, t) = tanh(t·z) / tanh(t)        (`estimators.progressive_tanh`, exact gradient)

Training is cut into C phases (C ≈ 20); phase c = 1 … C − 1 uses

  t(c) = 1.3·e^{0.22·c} − 1.3          (t(1) = 0.32, t(10) = 10.4, t(19) = 83.7)

and the last phase C is the exact sign (forward sign(z); backward ∂F/∂z at t(C) = 104.6,
the limit of the consistent forward/backward the paper argues for; weights far from zero
get ~0 gradient, as they did in phase C − 1).

Dual scaling — the equation implemented here, for a kernel w: [in, out] with an
input-channel scale a: [in] and an output-channel scale l: [out] (both learnable):

  ŵ = w / a            (per input channel)
  α_o = mean_i |ŵ_io|   (per output channel, XNOR/BitNet's mean|w|)
  w_b[i, o] = a_i · l_o · α_o · F(ŵ_io / α_o, t)

As t → 0 this is l·w (the pre-trained layer at l = 1: training starts from the FP model);
at the sign it is the rank-1-scaled binary matrix (a ⊗ l·α) ⊙ sign(w), OneBit's form
(Xu et al. 2024: W ≈ sign(W) ⊙ h·gᵀ), computed as y = ((x ⊙ a) @ sign(w)) ⊙ l·α.
The paper writes l·mean|w|·F(w/a, t); we divide by α inside F so that its saturation
point follows the weights' scale (LLM weights are ~0.02: unnormalized, F(w, 100) would
still be linear) and keep a outside F so that the input-channel scale survives the final
sign (inside only, sign(w/a) = sign(w) and a would vanish from the 1-bit model).
Without dual scaling (the ablation): a = l = 1, w_b = α·F(w/α, t).

Baselines (weights only, activations stay full precision as in the paper's comparison):
  * 'bitnet': w_b = β·sign(w − μ), μ = mean(w), β = mean|w| per tensor, straight-through
    gradient w + sg(w_b − w) (BitNet, Wang et al. 2023, eq. 1–3; its 8-bit activation
    quantization and SubLN are not part of a weight-binarization comparison).
  * 'xnor': w_b = α·sign(w), α = mean|w| per output channel, gradients through α, clipped
    STE (Rastegari et al. 2016; `binary.binarize_weight(w, 'xnor')`).
"""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from effcomp.quant import binary, estimators

METHODS = ("none", "bitnet", "xnor", "progressive")
NUM_PHASES = 20


def phase_temperature(c) -> jax.Array:
  """t(c) = 1.3·e^{0.22·c} − 1.3 for phase c (scalar or array, may be traced)."""
  return 1.3 * jnp.exp(0.22 * jnp.asarray(c, jnp.float32)) - 1.3


def phase(progress, num_phases: int = NUM_PHASES) -> jax.Array:
  """Phase c ∈ {1 … num_phases} at `progress` ∈ [0, 1]: c = floor(progress·C) + 1,
  phases of equal length, `progress` ≥ (C − 1)/C being the last (sign) phase."""
  if num_phases < 2:
    raise ValueError(f"num_phases={num_phases}: expected ≥ 2 (tanh phases, then the sign)")
  p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
  return jnp.clip(jnp.floor(p * num_phases) + 1, 1, num_phases).astype(jnp.int32)


def progressive_sign(z: jax.Array, progress=None, num_phases: int = NUM_PHASES) -> jax.Array:
  """F(z, t(c)) in phases c < C, sign(z) in phase C (module docstring); `progress=None`
  is the end of training (the 1-bit model)."""
  t_last = phase_temperature(num_phases)
  hard = estimators.ede_sign(z, t_last, 1.0 / jnp.tanh(t_last))  # k·t·sech² = ∂F/∂z at t(C)
  if progress is None:
    return hard
  c = phase(progress, num_phases)
  soft = estimators.progressive_tanh(z, phase_temperature(c))
  return jnp.where(c >= num_phases, hard, soft)


def _check(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"binarizer={method!r}: expected one of {METHODS}")


def binary_factors(w: jax.Array, method: str, in_scale: Optional[jax.Array] = None,
                   out_scale: Optional[jax.Array] = None
                   ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """(z, u, v) with the 1-bit weight w_b = u[:, None] · v[None, :] · sign(z).

  w: [in, out]; z: [in, out] (its sign is the stored bit), u: [in], v: [out].
  in_scale / out_scale: a, l of 'progressive' with dual scaling (None: 1).
  """
  _check(method)
  n_in, n_out = w.shape
  ones_in, ones_out = jnp.ones((n_in,), w.dtype), jnp.ones((n_out,), w.dtype)
  if method == "bitnet":
    return w - jnp.mean(w), ones_in, jnp.broadcast_to(jnp.mean(jnp.abs(w)), (n_out,))
  if method == "xnor":
    return w, ones_in, jnp.mean(jnp.abs(w), axis=0)
  if method == "none":
    raise ValueError("binarizer='none' has no binary factors")
  a = ones_in if in_scale is None else in_scale
  l = ones_out if out_scale is None else out_scale
  w_hat = w / a[:, None]
  alpha = jnp.mean(jnp.abs(w_hat), axis=0)
  return w_hat / alpha, a, l * alpha


def binarize_weight(w: jax.Array, method: str, progress=None, num_phases: int = NUM_PHASES,
                    in_scale: Optional[jax.Array] = None,
                    out_scale: Optional[jax.Array] = None) -> jax.Array:
  """The weight a binarized layer computes with, with its gradient (module docstring).

  w: [in, out]; `progress` ∈ [0, 1] (training schedule; None = the final 1-bit weight)
  matters for 'progressive' only.
  """
  _check(method)
  if method == "none":
    return w
  if method == "bitnet":
    z, _, v = binary_factors(w, method)
    return w + jax.lax.stop_gradient(v * estimators.sign_ste(z) - w)
  if method == "xnor":
    return binary.binarize_weight(w, "xnor", (0,))
  z, u, v = binary_factors(w, method, in_scale, out_scale)
  return u[:, None] * v[None, :] * progressive_sign(z, progress, num_phases)
