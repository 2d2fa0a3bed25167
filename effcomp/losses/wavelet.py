"""Losses in the Haar wavelet domain and on latents: the distillation terms of ElasticDiT's
Tiny DWT-Distilled VAE (T-DVAE; Du, Xie, Lu et al. 2026, arXiv 2605.15684).

The paper names the distillation "DWT-Distilled" and gives no formula or weights in what
is public (the abstract), so the terms and weights here are effcomp's own, documented:

  wavelet_l1(x̂, x) = Σ_{l=1..L} Σ_{b ∈ {LH, HL, HH}} w_b ‖b_l(x̂) − b_l(x)‖₁
                      + w_LL ‖LL_L(x̂) − LL_L(x)‖₁

over the L-level orthonormal Haar decomposition (`effcomp.nn.haar.haar_wavedec`: level
l + 1 splits level l's LL, so {LL_L, details_1..L} is a complete basis and no frequency is
counted twice). ‖·‖₁ sums over a band's elements, per example, like the autoencoder's
pixel L1 (`effcomp.models.vae.losses`): with all weights 1 the loss is the L1 norm of the
error's wavelet coefficients, on the scale the KL weight (1e-6) was chosen for.
Weights (w_LL, w_LH, w_HL, w_HH) = (1, 2, 2, 2): an L1 on pixels lets a decoder blur
(the error of a missed edge is small next to the whole image's), and the wavelet-loss
literature weights the detail bands up for that reason (Gyawali et al. 2019, "Wavelets
to the Rescue"; LiteVAE's high-frequency terms); 2 is the mildest such emphasis, the
same at every level.

  latent_l2(μ_s, μ_t) = Σ (scale · (μ_s − μ_t))²

matches the student's posterior mean to the teacher's on the diffusion model's scale
(`scale` = the teacher's `scaling_factor`), so a diffusion model trained on the teacher's
latents sees the same inputs from the student's encoder.
"""

from typing import Dict, Sequence

import jax
import jax.numpy as jnp

from effcomp.nn.haar import haar_wavedec

BANDS = ("ll", "lh", "hl", "hh")
WEIGHTS = (1.0, 2.0, 2.0, 2.0)  # (LL, LH, HL, HH): effcomp's choice (module docstring)


def _per_example_l1(a: jax.Array, b: jax.Array) -> jax.Array:
  diff = a.astype(jnp.float32) - b.astype(jnp.float32)
  return jnp.sum(jnp.abs(diff).reshape(diff.shape[0], -1), axis=-1)


def subband_l1(pred: jax.Array, target: jax.Array, levels: int) -> Dict[str, jax.Array]:
  """Per-example L1 [B] (summed over the band) of each Haar sub-band of pred − target.

  pred, target: [B, H, W, C], H and W divisible by 2^levels. Keys: 'lh1', 'hl1', 'hh1'
  (finest level) … 'hh{levels}', and 'll{levels}' (the coarsest approximation).
  """
  if levels < 1:
    raise ValueError(f"levels={levels}: expected ≥ 1")
  if pred.shape != target.shape:
    raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
  if pred.ndim != 4 or pred.shape[1] % 2 ** levels or pred.shape[2] % 2 ** levels:
    raise ValueError(f"pred shape {pred.shape}: expected [B, H, W, C] with H and W divisible "
                     f"by 2^levels = {2 ** levels}")
  pred_ll, pred_details = haar_wavedec(pred, levels)
  target_ll, target_details = haar_wavedec(target, levels)
  out = {}
  for level, (p, t) in enumerate(zip(pred_details, target_details), start=1):
    for band, pb, tb in zip(BANDS[1:], p, t):
      out[f"{band}{level}"] = _per_example_l1(pb, tb)
  out[f"ll{levels}"] = _per_example_l1(pred_ll, target_ll)
  return out


def wavelet_l1(pred: jax.Array, target: jax.Array, levels: int = 2,
               weights: Sequence[float] = WEIGHTS) -> jax.Array:
  """The weighted sub-band L1 [B] of the module docstring; weights = (w_LL, w_LH, w_HL,
  w_HH), the same at every level."""
  if len(weights) != len(BANDS):
    raise ValueError(f"weights={tuple(weights)}: expected {len(BANDS)} weights, one per band "
                     f"{BANDS}")
  w = dict(zip(BANDS, (float(v) for v in weights)))
  return sum(w[name[:2]] * value for name, value in subband_l1(pred, target, levels).items())


def latent_l2(mean: jax.Array, teacher_mean: jax.Array, scale: float = 1.0) -> jax.Array:
  """Σ (scale · (mean − teacher_mean))² per example [B]; mean, teacher_mean [B, h, w, c]."""
  if mean.shape != teacher_mean.shape:
    raise ValueError(f"mean shape {mean.shape} != teacher_mean shape {teacher_mean.shape}: the "
                     "student's latent must have the teacher's shape")
  diff = scale * (mean.astype(jnp.float32) - teacher_mean.astype(jnp.float32))
  return jnp.sum(jnp.square(diff).reshape(diff.shape[0], -1), axis=-1)
