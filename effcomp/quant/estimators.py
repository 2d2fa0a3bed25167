"""Gradient estimators for binarization: a sign forward with a surrogate backward.

Every estimator is a small pure function with a `jax.custom_vjp`. The binarizing
ones compute `sign(x)` with sign(0) = +1, so outputs are exactly ±1 and can be
bit-packed; their backward is the surrogate derivative of the cited paper. Outputs
and input cotangents keep the input's dtype (float32, bfloat16); surrogates are
evaluated in float32. Temperatures (`t`, `k`) are ordinary, possibly traced,
arguments that receive a zero cotangent. Schedules are functions of
`progress = step / total_steps`, clipped to [0, 1].

Shapes: any; `t`, `k` are scalars or arrays broadcastable to `x.shape`.
"""

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
_F32 = jnp.float32
# Below this temperature tanh(t·z)/tanh(t) is z to float32 precision; the ratio
# would lose digits (and is 0/0 at t = 0), so `progressive_tanh` returns z directly.
_TINY_T = 1e-6


def sign(x: Array) -> Array:
  """±1 in x's dtype, sign(0) = +1: the sign estimators' forward (no gradient of its own)."""
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


def _sech2(u: Array) -> Array:
  """1 − tanh²(u) = 4e^{−2|u|} / (1 + e^{−2|u|})²: no cancellation, no overflow."""
  e = jnp.exp(-2.0 * jnp.abs(u))
  return 4.0 * e / (1.0 + e) ** 2


def _sign_with_grad(surrogate: Callable[[Array], Array]) -> Callable[[Array], Array]:
  """sign(x) forward; backward g · surrogate(x)."""

  @jax.custom_vjp
  def estimator(x):
    return sign(x)

  def fwd(x):
    return sign(x), x

  def bwd(x, g):
    return ((g.astype(_F32) * surrogate(x.astype(_F32))).astype(x.dtype),)

  estimator.defvjp(fwd, bwd)
  return estimator


_ste = _sign_with_grad(jnp.ones_like)
_clipped_ste = _sign_with_grad(lambda x: (jnp.abs(x) <= 1).astype(x.dtype))


def approx_sign_derivative(x: Array) -> Array:
  """ApproxSign's surrogate dF/dx = max(2 − 2|x|, 0) (`approx_sign`)."""
  return jnp.maximum(2.0 - 2.0 * jnp.abs(x), 0.0)


_approx_sign = _sign_with_grad(approx_sign_derivative)


def sign_ste(x: Array) -> Array:
  """Straight-through sign: forward sign(x); backward dL/dx = g (identity).

  Bengio, Léonard & Courville 2013, "Estimating or propagating gradients through
  stochastic neurons", the straight-through estimator.
  """
  return _ste(x)


def sign_clipped_ste(x: Array) -> Array:
  """Clipped straight-through sign: forward sign(x); backward g · 1{|x| ≤ 1}.

  Hubara et al. 2016, "Binarized Neural Networks", sec. 1.3: the STE of
  hard tanh, which cancels the gradient once |x| > 1.
  """
  return _clipped_ste(x)


def approx_sign(x: Array) -> Array:
  """Bi-Real ApproxSign: forward sign(x); backward g · dF/dx, where

    dF/dx = 2 + 2x for −1 ≤ x < 0,  2 − 2x for 0 ≤ x < 1,  0 otherwise,

  i.e. max(2 − 2|x|, 0). Liu et al. 2018, "Bi-Real Net", eq. 6–8; reference:
  Bi-Real-net birealnet.py `BinaryActivation` and huawei-noah Efficient-Computing
  BinaryNetworks/AdaBin/cifar10/utils/binarylib.py `gradient_approx`.
  """
  return _approx_sign(x)


@jax.custom_vjp
def _ede(x, t, k):
  return sign(x)


def _ede_fwd(x, t, k):
  return sign(x), (x, t, k)


def _ede_bwd(res, g):
  x, t, k = res
  dx = g.astype(_F32) * k * t * _sech2(t * x.astype(_F32))
  return dx.astype(x.dtype), jnp.zeros_like(t), jnp.zeros_like(k)


_ede.defvjp(_ede_fwd, _ede_bwd)


def ede_sign(x: Array, t, k) -> Array:
  """IR-Net Error Decay Estimator: forward sign(x); backward g · k · t · (1 − tanh²(t·x)).

  Qin et al. 2020, "Forward and Backward Information Retention for Accurate
  Binary Neural Networks", eq. 9–10; reference: htqin/IR-Net binaryfunction.py and
  AdaBin binarylib.py `BinaryQuantize`. `t`, `k` (from `ede_schedule`) are scalars
  or arrays broadcastable to `x.shape`, may be traced, and get a zero cotangent.
  """
  return _ede(x, jnp.asarray(t, _F32), jnp.asarray(k, _F32))


def _log_linear(progress, start, end) -> Array:
  """10^(log10 start + p · (log10 end − log10 start)) with p = clip(progress, 0, 1)."""
  p = jnp.clip(jnp.asarray(progress, _F32), 0.0, 1.0)
  lo, hi = jnp.log10(jnp.asarray(start, _F32)), jnp.log10(jnp.asarray(end, _F32))
  return 10.0 ** (lo + p * (hi - lo))


def ede_schedule(progress, t_min: float = 1e-3, t_max: float = 10.0) -> Tuple[Array, Array]:
  """IR-Net's EDE anneal: returns (t, k) for `progress` = step / total_steps.

  t = 10^(log10 t_min + progress · (log10 t_max − log10 t_min)), k = max(1/t, 1)
  (Qin et al. 2020, eq. 10 and the training script of htqin/IR-Net). `progress`
  may be traced; it is clipped to [0, 1].
  """
  t = _log_linear(progress, t_min, t_max)
  return t, jnp.maximum(1.0 / t, 1.0)


@jax.custom_vjp
def _progressive(z, t):
  return _progressive_fwd(z, t)[0]


def _progressive_fwd(z, t):
  small = jnp.abs(t) < _TINY_T
  t_safe = jnp.where(small, 1.0, t)
  zf = z.astype(_F32)
  f = jnp.where(small, zf, jnp.tanh(t_safe * zf) / jnp.tanh(t_safe))
  return f.astype(z.dtype), (z, t)


def _progressive_bwd(res, g):
  z, t = res
  small = jnp.abs(t) < _TINY_T
  t_safe = jnp.where(small, 1.0, t)
  dfdz = t_safe * _sech2(t_safe * z.astype(_F32)) / jnp.tanh(t_safe)
  dz = g.astype(_F32) * jnp.where(small, 1.0, dfdz)
  return dz.astype(z.dtype), jnp.zeros_like(t)


_progressive.defvjp(_progressive_fwd, _progressive_bwd)


def progressive_tanh(z: Array, t) -> Array:
  """Progressive binarizer F(z, t) = tanh(t·z) / tanh(t), with its exact derivative.

  Backward: ∂F/∂z = t · (1 − tanh²(t·z)) / tanh(t), with 1 − tanh² computed as a
  stable sech², so it is finite for t up to 1e4 and any z. F is near-linear for
  small t (F → z as t → 0; for |t| < 1e-6, F = z and ∂F/∂z = 1) and tends to sign(z)
  as t → ∞ (F(0) = 0). From "Rethinking 1-bit Optimization Leveraging Pre-trained
  Large Language Models" (progressive training). `t` > 0 is a scalar or an array
  broadcastable to `z.shape`, may be traced, and gets a zero cotangent; see
  `progressive_schedule`.
  """
  return _progressive(z, jnp.asarray(t, _F32))


def progressive_schedule(progress, t_start: float = 1.0, t_end: float = 1e3) -> Array:
  """Log-linear temperature for `progressive_tanh`: t_start · (t_end/t_start)^progress.

  `progress` = step / total_steps, may be traced; it is clipped to [0, 1].
  """
  return _log_linear(progress, t_start, t_end)


# Estimators that need no schedule, by config name.
ESTIMATORS: Dict[str, Callable[[Array], Array]] = {
    "ste": sign_ste,
    "clipped_ste": sign_clipped_ste,
    "approx_sign": approx_sign,
}


def get(name: str) -> Callable[[Array], Array]:
  """Returns the estimator called `name`; a one-line ValueError lists valid names."""
  if name not in ESTIMATORS:
    raise ValueError(
        f"unknown estimator {name!r}; valid choices: {', '.join(sorted(ESTIMATORS))}")
  return ESTIMATORS[name]
