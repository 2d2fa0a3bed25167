"""Binarized layers: an ordinary conv/dense + a weight binarizer + an activation binarizer.

Methods (`weight_method` / `act_method`), each from its paper:

| method   | weights w_b                                   | activations a_b                       |
|----------|-----------------------------------------------|---------------------------------------|
| bnn      | sign(w), clipped STE                          | sign(a), clipped STE (Hubara 2016)    |
| xnor     | α·sign(w), α = mean|w| per out-channel, grads  | sign(a), clipped STE (Rastegari 2016; |
|          | through α (Rastegari 2016, eq. 4)              | the activation scale K is omitted)    |
| bireal   | α·sign(w), α = mean|w|; backward 1{|w| ≤ 1}  | sign(a), ApproxSign (Liu 2018, eq. 6–9)|
|          | (Bi-Real code's magnitude-aware weights)       |                                       |
| reactnet | as bireal (Liu 2020, ReActNet §3)              | RSign: sign(a − θ_c), θ_c learnable   |
|          |                                               | per channel, ApproxSign (eq. 2)       |
| adabin   | β = mean(w), α = std(w) per out-channel,       | α_a·sign(a − β_a) + β_a, α_a, β_a     |
|          | w_b = α·sign((w−β)/α) + β, gradients reach     | learnable per layer (init 1, 0),      |
|          | α, β; EDE backward (AdaBin eq. 5–8)            | ApproxSign (AdaBin eq. 9–11)          |

AdaBin follows the paper (Tu et al. 2022, "AdaBin: Improving Binary Neural Networks with
Adaptive Binary Sets") and checks against the official code (huawei-noah/Efficient-Computing,
BinaryNetworks/AdaBin/cifar10/utils/binarylib.py):
- weights: same as the code (`BinaryQuantize` = IR-Net EDE, β = mean, α = population std;
  we add 1e-12 under the square root so constant filters do not divide by zero).
- activations: the paper's a_b = α_a·sign(a − β_a) + β_a is the default
  (`adabin_act_form='paper'`). The code computes α_a·(sign((a − β_a)/α_a) + β_a) =
  α_a·sign(a − β_a) + α_a·β_a, a different centre; `adabin_act_form='official'`
  reproduces it so released checkpoints import with identical outputs.
- EDE's (t, k) come from `ede_schedule(progress)` when the caller passes training
  progress in [0, 1] (the code's `--progressive`); without it the code's fixed
  t = 0.1, k = 10 are used.

Shapes: conv x [batch, height, width, in] → [batch, h', w', features] (NHWC, HWIO kernel);
dense x [..., in] → [..., features].
"""

import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.quant import estimators

METHODS = ("none", "bnn", "xnor", "bireal", "reactnet", "adabin")
ADABIN_ACT_FORMS = ("paper", "official")
_FIXED_EDE = (0.1, 10.0)  # (t, k) of the official AdaBin code when not progressive


def _check(method: str, name: str) -> None:
  if method not in METHODS:
    raise ValueError(f"{name}={method!r}: expected one of {METHODS}")


def _ede_tk(progress):
  return _FIXED_EDE if progress is None else estimators.ede_schedule(progress)


def weight_center_scale(w: jax.Array, method: str, reduce_axes: Sequence[int]
                        ) -> Tuple[jax.Array, jax.Array]:
  """(β, α) of `method` per output channel (keepdims over `reduce_axes`); β=0, α=1 for bnn."""
  _check(method, "weight_method")
  axes = tuple(reduce_axes)
  if method == "adabin":
    beta = jnp.mean(w, axis=axes, keepdims=True)
    alpha = jnp.sqrt(jnp.mean(jnp.square(w - beta), axis=axes, keepdims=True) + 1e-12)
    return beta, alpha
  zeros = jnp.zeros_like(jnp.mean(w, axis=axes, keepdims=True))
  if method in ("xnor", "bireal", "reactnet"):
    return zeros, jnp.mean(jnp.abs(w), axis=axes, keepdims=True)
  return zeros, jnp.ones_like(zeros)


def binarize_weight(w: jax.Array, method: str, reduce_axes: Sequence[int],
                    progress: Optional[jax.Array] = None) -> jax.Array:
  """The binarized weight w_b = α·s + β of `method` (table above), with its estimator."""
  _check(method, "weight_method")
  if method == "none":
    return w
  beta, alpha = weight_center_scale(w, method, reduce_axes)
  if method == "bnn":
    return estimators.sign_clipped_ste(w)
  if method == "xnor":
    return alpha * estimators.sign_clipped_ste(w)
  if method in ("bireal", "reactnet"):
    # Bi-Real's code: forward α·sign(w); backward = d clip(w, −1, 1)/dw (no α factor).
    clipped = jnp.clip(w, -1.0, 1.0)
    return jax.lax.stop_gradient(alpha * estimators.sign_ste(w) - clipped) + clipped
  t, k = _ede_tk(progress)
  return alpha * estimators.ede_sign((w - beta) / alpha, t, k) + beta


def weight_signs(w: jax.Array, method: str, reduce_axes: Sequence[int]) -> jax.Array:
  """s ∈ {−1, +1} with w_b = α·s + β (sign(0) = +1), for packing."""
  beta, alpha = weight_center_scale(w, method, reduce_axes)
  return jnp.where(w - beta >= 0, 1.0, -1.0).astype(w.dtype)


class ActivationBinarizer(nn.Module):
  """a_b of `method` (table above); owns RSign's θ_c or AdaBin's α_a, β_a.

  x: [..., channels] → same shape.
  """
  method: str = "adabin"
  adabin_act_form: str = "paper"
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check(self.method, "act_method")
    if self.adabin_act_form not in ADABIN_ACT_FORMS:
      raise ValueError(f"adabin_act_form={self.adabin_act_form!r}: expected one of {ADABIN_ACT_FORMS}")
    if self.method == "none":
      return x
    if self.method in ("bnn", "xnor"):
      return estimators.sign_clipped_ste(x)
    if self.method == "bireal":
      return estimators.approx_sign(x)
    if self.method == "reactnet":
      theta = self.param("threshold", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
                         (x.shape[-1],), self.param_dtype)
      return estimators.approx_sign(x - theta.astype(x.dtype))
    alpha = self.param("alpha", nn.initializers.ones, (), self.param_dtype)
    beta = self.param("beta", nn.initializers.zeros, (), self.param_dtype)
    return adabin_activation(x, alpha, beta, self.adabin_act_form)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def adabin_activation(x: jax.Array, alpha: jax.Array, beta: jax.Array, form: str = "paper"
                      ) -> jax.Array:
  """AdaBin's binarized activation with ApproxSign (AdaBin eq. 9–11), scalars α, β:
  'paper' α·sign(x − β) + β, 'official' α·(sign((x − β)/α) + β) (module docstring).

  The same function and gradients as writing it with `estimators.approx_sign`, with a
  backward that keeps only u (the sign's argument) and computes ∂x and the two scalar
  gradients from it in one pass (d = max(2 − 2|u|, 0), s = sign(u)):
    paper:    ∂x = g·α·d,  ∂β = Σ g·(1 − α·d),  ∂α = Σ g·s;
    official: ∂x = g·d,    ∂β = Σ g·(α − d),    ∂α = Σ g·(s − u·d + β).
  Autodiff of the composition keeps more tensors and walks the activations in several
  passes: a tenth of AdaBin ResNet-20's train step on CPUs (issue 22's profile).
  """
  return _adabin_activation_fwd(x, alpha, beta, form)[0]


def _adabin_activation_fwd(x, alpha, beta, form):
  a, b = alpha.astype(x.dtype), beta.astype(x.dtype)
  u = (x - b) / a if form == "official" else x - b
  s = estimators.sign(u)
  y = a * (s + b) if form == "official" else a * s + b
  return y, (u, alpha, beta)


def _adabin_activation_bwd(form, residuals, g):
  u, alpha, beta = residuals
  uf, gf = u.astype(jnp.float32), g.astype(jnp.float32)
  a, b = alpha.astype(jnp.float32), beta.astype(jnp.float32)
  d = estimators.approx_sign_derivative(uf)
  s = estimators.sign(uf)
  if form == "official":
    dx, dbeta, dalpha = gf * d, gf * (a - d), gf * (s - uf * d + b)
  else:
    dx, dbeta, dalpha = gf * (a * d), gf * (1.0 - a * d), gf * s
  return (dx.astype(g.dtype), jnp.sum(dalpha).astype(alpha.dtype),
          jnp.sum(dbeta).astype(beta.dtype))


adabin_activation.defvjp(_adabin_activation_fwd, _adabin_activation_bwd)


def activation_affine(variables: Any, method: str, adabin_act_form: str = "paper"
                      ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """(threshold θ, α_a, β_a) with a_b = α_a·sign(x − θ) + β_a, from an
  `ActivationBinarizer`'s params (for packing)."""
  if method == "reactnet":
    return variables["threshold"], jnp.float32(1), jnp.float32(0)
  if method == "adabin":
    alpha, beta = variables["alpha"], variables["beta"]
    return beta, alpha, (beta if adabin_act_form == "paper" else alpha * beta)
  return jnp.float32(0), jnp.float32(1), jnp.float32(0)


class _BinaryLayer(nn.Module):
  """Shared fields of `BinaryConv` and `BinaryDense`."""
  features: int
  weight_method: str = "adabin"
  act_method: str = "adabin"
  adabin_act_form: str = "paper"
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.kaiming_normal()

  def _binarize_input(self, x):
    return ActivationBinarizer(self.act_method, self.adabin_act_form, self.param_dtype,
                               name="act")(x.astype(self.dtype))

  def _bias(self, y):
    if not self.use_bias:
      return y
    b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.out_axis,)),
                   (self.features,), self.param_dtype)
    return y + b.astype(y.dtype)


class BinaryConv(_BinaryLayer):
  """2-D convolution of the binarized input with the binarized kernel.

  Kernel [kh, kw, in, features] with logical axes (height, width, conv_in, conv_out);
  zero padding acts on the binarized activations (as in every reference code). `padding`
  None pads k // 2 on every side, as the reference codes' `nn.Conv2d(..., padding=k//2)`:
  with stride 2, XLA's 'SAME' would pad 0 top/left and 1 bottom/right instead, shifting
  every window by a pixel against the option-A shortcut's x[:, ::2, ::2].
  """
  kernel_size: Tuple[int, int] = (3, 3)
  strides: Tuple[int, int] = (1, 1)
  padding: Any = None
  out_axis: str = "conv_out"

  def explicit_padding(self) -> Any:
    """`padding`, with None resolved to ((kh//2, kh//2), (kw//2, kw//2))."""
    if self.padding is None:
      return tuple((k // 2, k // 2) for k in self.kernel_size)
    return self.padding

  @nn.compact
  def __call__(self, x: jax.Array, progress: Optional[jax.Array] = None) -> jax.Array:
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(self.kernel_init, ("height", "width", "conv_in", "conv_out")),
        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    w = binarize_weight(kernel, self.weight_method, (0, 1, 2), progress).astype(self.dtype)
    y = jax.lax.conv_general_dilated(
        self._binarize_input(x), w, window_strides=self.strides, padding=self.explicit_padding(),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return self._bias(y)


class BinaryDense(_BinaryLayer):
  """Dense layer of the binarized input with the binarized kernel [in, features]."""
  in_axis: str = "embed"
  out_axis: str = "mlp"
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array, progress: Optional[jax.Array] = None) -> jax.Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, (self.in_axis, self.out_axis)),
                        (x.shape[-1], self.features), self.param_dtype)
    w = binarize_weight(kernel, self.weight_method, (0,), progress).astype(self.dtype)
    return self._bias(jnp.dot(self._binarize_input(x), w))


class Maxout(nn.Module):
  """AdaBin's nonlinearity y = p·ReLU(x) − n·ReLU(−x), p, n learnable per channel
  (init 1 and 0.25; AdaBin eq. 12, binarylib.py `Maxout`). x: [..., channels]."""
  pos_init: float = 1.0
  neg_init: float = 0.25

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    p = self.param("pos_scale", nn.with_logical_partitioning(nn.initializers.constant(self.pos_init), ("norm",)), (c,))
    n = self.param("neg_scale", nn.with_logical_partitioning(nn.initializers.constant(self.neg_init), ("norm",)), (c,))
    return p.astype(x.dtype) * nn.relu(x) - n.astype(x.dtype) * nn.relu(-x)


class RPReLU(nn.Module):
  """ReActNet's y = PReLU(x − γ) + ζ with per-channel γ, ζ (init 0) and slope (init 0.25)
  (Liu et al. 2020, eq. 3). x: [..., channels]."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    names = ("norm",)
    gamma = self.param("gamma", nn.with_logical_partitioning(nn.initializers.zeros, names), (c,))
    zeta = self.param("zeta", nn.with_logical_partitioning(nn.initializers.zeros, names), (c,))
    slope = self.param("slope", nn.with_logical_partitioning(nn.initializers.constant(0.25), names), (c,))
    y = x - gamma.astype(x.dtype)
    return jnp.where(y >= 0, y, slope.astype(x.dtype) * y) + zeta.astype(x.dtype)


NONLINEARITIES = ("maxout", "rprelu", "identity", "hardtanh", "relu")
_DEFAULT_NONLINEARITY = {"adabin": "maxout", "reactnet": "rprelu", "bireal": "identity",
                         "bnn": "hardtanh", "xnor": "hardtanh", "none": "relu"}


def nonlinearity(method: str, override: str = "") -> nn.Module:
  """The activation after a binary conv's BatchNorm in each method's reference network:
  Maxout (AdaBin), RPReLU (ReActNet), identity (Bi-Real), hardtanh (BNN, XNOR-Net),
  ReLU (full precision, 'none'); `override` picks one of `NONLINEARITIES` instead."""
  _check(method, "method")
  name = override or _DEFAULT_NONLINEARITY[method]
  if name not in NONLINEARITIES:
    raise ValueError(f"nonlinearity={name!r}: expected one of {NONLINEARITIES}")
  return {"maxout": Maxout, "rprelu": RPReLU, "identity": _Identity, "hardtanh": _Hardtanh,
          "relu": _Relu}[name]()


class _Identity(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x


class _Relu(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(x)


class _Hardtanh(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.clip(x, -1.0, 1.0)
