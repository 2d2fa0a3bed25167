"""VPD-SR's High-Frequency Perception (HFP) loss: the student's high-frequency bands
against the ground truth's.

VPD-SR (Wu, Xin, Tu et al., arXiv 2506.02605) adds to the distillation loss a term that
"guides the student model to restore the missing high-frequency details in degraded
images"; its code is not public and the abstract gives no formula, so the split and
weights here are effcomp's own (documented, and named so in every table):

  HFP(x̂, x) = Σ_{l=1..levels} w_l · mean |D_l(x̂) − D_l(x)|,   w_l = 2^{l−1}

with D_l = the three detail bands (LH, HL, HH) of the l-th level of the orthonormal Haar
transform (`effcomp.nn.haar`, applied to the previous level's LL). Detail bands are what an
LR image has lost, so a low-frequency error (a constant or a smooth offset over 2^levels
pixels) costs nothing here; the plain L2 terms take care of it. The finer levels, where
×4 SR loses most, get the weight 1, coarser ones (a smaller area) double each level.
"""

import jax
import jax.numpy as jnp

from effcomp.nn.haar import haar_dwt


def hfp_loss(pred: jax.Array, target: jax.Array, levels: int = 2) -> jax.Array:
  """Per-example HFP [B] between NHWC images (H, W divisible by 2^levels)."""
  if levels < 1:
    raise ValueError(f"levels={levels}: expected ≥ 1")
  if pred.shape != target.shape:
    raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
  loss = jnp.zeros(pred.shape[:1], jnp.float32)
  for level in range(levels):
    pred, pred_details = haar_dwt(pred)
    target, target_details = haar_dwt(target)
    for p, t in zip(pred_details, target_details):
      loss += 2.0 ** level * jnp.mean(jnp.abs(p - t).reshape(p.shape[0], -1), axis=-1)
  return loss
