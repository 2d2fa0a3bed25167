"""Starting a 1-bit LLM from a pre-trained one: weight copy and binary-aware initialization.

Binary-aware initialization (Tu et al. 2025, "Rethinking 1-bit Optimization …"): before
quantization-aware training, the scales of every binarized layer are learned for ~50 steps
with the full-precision weights frozen, minimizing the error of the layer's *output* on
calibration activations between the 1-bit and the full-precision weights. With the layer's
inputs X (from the frozen FP model, block by block) and their second moment G = XᵀX/N,

  e(a, l) = ‖X·w − X·w_b(a, l)‖² / ‖X·w‖² = tr(dᵀ G d) / tr(wᵀ G w),   d = w − w_b,

where w_b = (a ⊗ l·α) ⊙ sign(w) is the final binary weight of `progressive` (dual scaling;
the sign does not depend on a, so the gradient reaches a through the magnitudes only and
is exact). As in the paper, only the input-channel scale a is learned (parametrized by its
logarithm, Adam); l stays as it is (1). Fitting l too lowers e further (the data-aware
optimum of the column scale is ~1.1–1.4× α here) but breaks the progressive start: while
t is small, w_b ≈ l·w, so a fitted l would scale the pre-trained layer; a leaves the
small-t forward unchanged and shapes only the binary end point.
"""

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effcomp.models.lm import llama as llama_lib
from effcomp.quant import progressive
from effcomp.quant.ptq import blocks

Params = Dict[str, Any]


def output_error(w: jax.Array, gram: jax.Array, in_scale: jax.Array, out_scale: jax.Array
                 ) -> jax.Array:
  """e(a, l) of the module docstring for the final 1-bit weight; w: [in, out], gram: [in, in]."""
  z, u, v = progressive.binary_factors(w, "progressive", in_scale, out_scale)
  d = w - u[:, None] * v[None, :] * jax.lax.stop_gradient(jnp.where(z >= 0, 1.0, -1.0))
  return jnp.sum(d * (gram @ d)) / jnp.sum(w * (gram @ w))


@jax.jit
def _fit(w, gram, steps, lr, in_scale, out_scale):
  tx = optax.adam(lr)
  loss = lambda log_a: output_error(w, gram, jnp.exp(log_a), out_scale)

  def step(_, carry):
    log_a, opt = carry
    updates, opt = tx.update(jax.grad(loss)(log_a), opt, log_a)
    return optax.apply_updates(log_a, updates), opt

  log_a = jnp.log(in_scale)
  return jnp.exp(jax.lax.fori_loop(0, steps, step, (log_a, tx.init(log_a)))[0])


def fit_in_scale(w: jax.Array, gram: jax.Array, steps: int = 50, lr: float = 0.05,
                 in_scale=None, out_scale=None) -> Tuple[jax.Array, float, float]:
  """(a, error before, error after) after `steps` Adam steps on a from `in_scale` (default 1),
  `out_scale` (default 1) fixed. w: [in, out]; gram: [in, in] = XᵀX/N of the layer's inputs."""
  a = jnp.ones(w.shape[0], jnp.float32) if in_scale is None else jnp.asarray(in_scale, jnp.float32)
  l = jnp.ones(w.shape[1], jnp.float32) if out_scale is None else jnp.asarray(out_scale, jnp.float32)
  w, gram = jnp.asarray(w, jnp.float32), jnp.asarray(gram, jnp.float32)
  before = float(output_error(w, gram, a, l))
  a = _fit(w, gram, steps, lr, a, l)
  return a, before, float(output_error(w, gram, a, l))


def copy_weights(student: Params, teacher: Params) -> Params:
  """`student` with every parameter the teacher also has taken from the teacher.

  The binarized model shares the FP model's parameter paths and shapes (`BinaryLinear`
  names its weight `kernel`); only the binarizers' scales are the student's own.

  Raises:
    ValueError: a shared path has different shapes, or a student weight that is not a
      binarizer scale has no teacher counterpart (different architectures).
  """
  def merge(s, t, path):
    if isinstance(s, dict):
      return {k: merge(v, t.get(k) if isinstance(t, dict) else None, f"{path}/{k}".strip("/"))
              for k, v in s.items()}
    if t is None:
      if path.rsplit("/", 1)[-1] in ("in_scale", "out_scale"):
        return s
      raise ValueError(f"teacher has no parameter {path!r}: config.teacher.model must be the "
                       "full-precision version of config.model")
    if tuple(t.shape) != tuple(s.shape):
      raise ValueError(f"parameter {path!r}: teacher shape {tuple(t.shape)} != student shape "
                       f"{tuple(s.shape)}; config.teacher.model must match config.model")
    return jnp.array(t, s.dtype, copy=True)  # never alias the teacher (state is donated)
  return merge(student, teacher, "")


def binary_aware_init(model: llama_lib.Llama, params: Params, teacher: llama_lib.Llama,
                      teacher_params: Params, tokens: jax.Array, steps: int = 50,
                      lr: float = 0.05) -> Tuple[Params, Dict[str, float]]:
  """Fits `in_scale` of every binarized kernel of `model` (module docstring).

  Block by block, the inputs of the FP `teacher`'s linear layers on `tokens` [B, T] give the
  Gram matrices (only one block's inputs are held at a time). Returns the new params and
  {'init/error_before', 'init/error_after'}: the layer errors e averaged over layers.
  """
  if model.binarize is None or not model.binarize.has_scales:
    raise ValueError(f"binary-aware initialization fits the dual scales of the progressive "
                     f"binarizer; config.model has binarizer={model.binarizer!r}, "
                     f"dual_scaling={model.dual_scaling}")
  view = blocks.for_llama(teacher)
  h = view.embed(teacher_params, tokens)
  before, after = [], []
  for i in range(view.num_blocks):
    h, inputs = view.block(i, teacher_params, h, tokens, capture=True)
    for path, x in inputs.items():  # 'layers_0/attn/q/kernel' → its input [B, T, in]
      x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
      stem = path.rsplit("/", 1)[0]
      a, e0, e1 = fit_in_scale(blocks.get_path(params, path), x.T @ x / x.shape[0], steps, lr,
                               blocks.get_path(params, f"{stem}/in_scale"),
                               blocks.get_path(params, f"{stem}/out_scale"))
      params = blocks.set_path(params, f"{stem}/in_scale", a)
      before.append(e0)
      after.append(e1)
  return params, {"init/error_before": float(np.mean(before)),
                  "init/error_after": float(np.mean(after))}
