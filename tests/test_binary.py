"""Binarizers and binary layers: values, gradients, and jit/grad/vmap/sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import models
from effcomp.quant import binary, estimators
from tests.conftest import run_python

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(0.3, 0.7, size=(3, 3, 4, 5)), jnp.float32)  # HWIO, 5 out-channels


def test_adabin_weight_has_two_values_per_channel_at_mean_plus_minus_std():
  wb = np.asarray(binary.binarize_weight(W, "adabin", (0, 1, 2)))
  w = np.asarray(W).reshape(-1, 5)
  beta, alpha = w.mean(0), w.std(0)  # population std, as in the paper and code
  for o in range(5):
    values = np.unique(wb[..., o].round(4))
    np.testing.assert_allclose(sorted(values), [beta[o] - alpha[o], beta[o] + alpha[o]], atol=1e-4)
  signs = np.asarray(binary.weight_signs(W, "adabin", (0, 1, 2)))
  np.testing.assert_allclose(wb, alpha * signs + beta, rtol=1e-5, atol=1e-6)


def test_adabin_weight_gradient_flows_through_alpha_and_beta_with_ede():
  g = jnp.asarray(RNG.normal(size=W.shape), jnp.float32)
  progress = 0.3
  t, k = estimators.ede_schedule(progress)

  def reference(w):  # α·(sign(u) with EDE backward) + β written out by hand
    beta = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
    alpha = jnp.sqrt(jnp.mean((w - beta) ** 2, axis=(0, 1, 2), keepdims=True) + 1e-12)
    u = (w - beta) / alpha
    surrogate = k * jnp.tanh(t * u)  # d/du = k·t·(1 − tanh²(t·u))
    s = jax.lax.stop_gradient(jnp.where(u >= 0, 1.0, -1.0) - surrogate) + surrogate
    return alpha * s + beta

  got = jax.grad(lambda w: jnp.sum(g * binary.binarize_weight(w, "adabin", (0, 1, 2), progress)))(W)
  want = jax.grad(lambda w: jnp.sum(g * reference(w)))(W)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # Not the plain STE: the centre/scale terms change the gradient.
  assert not np.allclose(got, g, atol=1e-3)


@pytest.mark.parametrize("method, scale", [("bnn", None), ("xnor", "mean_abs"), ("bireal", "mean_abs")])
def test_sign_based_weight_binarizers(method, scale):
  wb = np.asarray(binary.binarize_weight(W, method, (0, 1, 2)))
  alpha = 1.0 if scale is None else np.abs(np.asarray(W)).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(wb, alpha * np.where(np.asarray(W) >= 0, 1, -1), rtol=1e-6)


def test_bireal_weight_backward_is_clipped_identity_without_alpha():
  g = jnp.ones_like(W)
  grad = jax.grad(lambda w: jnp.sum(g * binary.binarize_weight(w, "bireal", (0, 1, 2))))(W)
  np.testing.assert_array_equal(grad, (jnp.abs(W) <= 1).astype(jnp.float32))


def test_xnor_weight_gradient_includes_the_scale_term():
  grad = jax.grad(lambda w: jnp.sum(binary.binarize_weight(w, "xnor", (0, 1, 2))))(W)
  n = 3 * 3 * 4
  s = np.where(np.asarray(W) >= 0, 1.0, -1.0)
  # d/dw_i Σ_j α s_j = α·STE'(w_i) + s_i/n·Σ_j s_j (α = mean|w|).
  alpha = np.abs(np.asarray(W)).mean(axis=(0, 1, 2))
  want = alpha * (np.abs(np.asarray(W)) <= 1) + s / n * s.sum(axis=(0, 1, 2))
  np.testing.assert_allclose(grad, want, rtol=1e-5)


def _act(method, form="paper", alpha=2.0, beta=0.5, x=None):
  layer = binary.ActivationBinarizer(method, form)
  x = jnp.linspace(-2, 2, 9) if x is None else x
  variables = layer.init(jax.random.PRNGKey(0), x[..., None])
  if method == "adabin":
    variables = {"params": {"alpha": jnp.float32(alpha), "beta": jnp.float32(beta)}}
  return layer, variables, x[..., None]


def test_adabin_activation_paper_and_official_forms():
  layer, v, x = _act("adabin", "paper")
  y = np.asarray(layer.apply(v, x))[:, 0]
  np.testing.assert_allclose(y, np.where(np.asarray(x)[:, 0] >= 0.5, 2.5, -1.5))
  layer, v, x = _act("adabin", "official")
  y = np.asarray(layer.apply(v, x))[:, 0]
  # α·(sign((x − β)/α) + β): centre α·β = 1.0, not β = 0.5.
  np.testing.assert_allclose(y, np.where(np.asarray(x)[:, 0] >= 0.5, 3.0, -1.0))


def test_adabin_activation_gradients():
  layer, v, x = _act("adabin", "paper", alpha=1.5, beta=0.2, x=jnp.linspace(-1.4, 1.4, 15))
  g = jnp.asarray(RNG.normal(size=x.shape), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(g * layer.apply({"params": p}, x)))(v["params"])
  u = np.asarray(x) - 0.2
  sign = np.where(u >= 0, 1.0, -1.0)
  dsign = np.maximum(2 - 2 * np.abs(u), 0)  # ApproxSign
  np.testing.assert_allclose(grads["alpha"], np.sum(np.asarray(g) * sign), rtol=1e-5)
  np.testing.assert_allclose(grads["beta"], np.sum(np.asarray(g) * (1 - 1.5 * dsign)), rtol=1e-5)
  dx = jax.grad(lambda x: jnp.sum(g * layer.apply(v, x)))(x)
  np.testing.assert_allclose(dx, np.asarray(g) * 1.5 * dsign, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", binary.ADABIN_ACT_FORMS)
def test_adabin_activation_equals_its_approx_sign_composition(form):
  """The fused backward gives autodiff's gradients of the activation written with
  `estimators.approx_sign` (the module docstring's forms)."""
  def composed(x, a, b):
    if form == "paper":
      return a * estimators.approx_sign(x - b) + b
    return a * (estimators.approx_sign((x - b) / a) + b)

  x = jnp.asarray(RNG.normal(size=(4, 6, 6, 5)) * 1.5, jnp.float32)
  g = jnp.asarray(RNG.normal(size=x.shape), jnp.float32)
  for a, b in ((1.0, 0.0), (0.7, 0.3), (1.8, -0.4)):
    a, b = jnp.float32(a), jnp.float32(b)
    np.testing.assert_array_equal(binary.adabin_activation(x, a, b, form), composed(x, a, b))
    want = jax.grad(lambda *p: jnp.sum(g * composed(*p)), (0, 1, 2))(x, a, b)
    got = jax.grad(lambda *p: jnp.sum(g * binary.adabin_activation(*p, form)), (0, 1, 2))(x, a, b)
    for w, o in zip(want, got):
      np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-5)


def test_reactnet_rsign_threshold_is_learnable_per_channel():
  layer = binary.ActivationBinarizer("reactnet")
  x = jnp.asarray(RNG.normal(size=(6, 3)), jnp.float32)
  v = layer.init(jax.random.PRNGKey(0), x)
  v = {"params": {"threshold": jnp.array([0.5, -0.5, 0.0])}}
  y = layer.apply(v, x)
  np.testing.assert_array_equal(y, np.where(np.asarray(x) - [0.5, -0.5, 0.0] >= 0, 1.0, -1.0))
  grad = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x)))(v["params"])["threshold"]
  u = np.asarray(x) - [0.5, -0.5, 0.0]
  np.testing.assert_allclose(grad, -np.maximum(2 - 2 * np.abs(u), 0).sum(0), rtol=1e-5)


def test_maxout_and_rprelu_values():
  x = jnp.array([[-2.0, 3.0]])
  np.testing.assert_allclose(binary.Maxout().apply(binary.Maxout().init(jax.random.PRNGKey(0), x), x),
                             [[-0.5, 3.0]])
  r = binary.RPReLU()
  v = r.init(jax.random.PRNGKey(0), x)
  v = {"params": {"gamma": jnp.array([1.0, 1.0]), "zeta": jnp.array([0.5, 0.5]),
                  "slope": jnp.array([0.25, 0.25])}}
  np.testing.assert_allclose(r.apply(v, x), [[-0.25, 2.5]])


def test_unknown_method_is_a_clear_error():
  with pytest.raises(ValueError, match="weight_method='ternary'"):
    binary.binarize_weight(W, "ternary", (0, 1, 2))
  with pytest.raises(ValueError, match="expected one of"):
    models.build("bnn_resnet20", method="ternary").init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 1)))


@pytest.mark.parametrize("method", binary.METHODS)
def test_binary_conv_under_jit_grad_vmap(method):
  layer = binary.BinaryConv(6, weight_method=method, act_method=method)
  x = jnp.asarray(RNG.normal(size=(2, 5, 5, 4)), jnp.float32)
  v = nn.unbox(layer.init(jax.random.PRNGKey(0), x))
  y = jax.jit(layer.apply)(v, x)
  assert y.shape == (2, 5, 5, 6) and np.isfinite(np.asarray(y)).all()
  grads = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x, 0.5) ** 2)))(v["params"])
  assert float(jnp.abs(grads["kernel"]).sum()) > 0
  per_example = jax.vmap(lambda xi: layer.apply(v, xi[None])[0])(x)
  np.testing.assert_allclose(per_example, y, rtol=1e-5, atol=1e-5)
  if method != "none":  # binarized input and weights: conv outputs are sums of two-valued products
    dense = binary.BinaryDense(3, weight_method=method, act_method=method)
    vd = dense.init(jax.random.PRNGKey(1), x[:, 0, 0])
    assert jax.jit(dense.apply)(vd, x[:, 0, 0]).shape == (2, 3)


@pytest.mark.slow  # ≈ 2.3 min: make test-slow (keeps make test under 20 minutes)
def test_binary_layers_and_models_shard_over_eight_devices():
  """On a (data 2, fsdp 2, tensor 2) mesh every binary layer gives the single-device
  outputs and gradients; whole models give the same eval logits and finite sharded grads.

  Whole AdaBin/ReActNet models are only checked to run sharded with finite gradients:
  sharding reorders float sums, a pre-activation within rounding (≈1e-6) of its sign
  threshold then flips a bit, and a deep binary network amplifies the flip (measured:
  VGG-small AdaBin logits differ by O(1) after 5 binary layers, every layer alone agreeing
  to 1e-6). BNN's integer-valued convolutions have no such ties, so its logits must match.
  """
  code = """
import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from effcomp import models
from effcomp.quant import binary
from effcomp.train import sharding
mesh = sharding.create_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
rng = np.random.default_rng(0)

def sharded_init(module, x):
  boxed = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  sh = sharding.tree_shardings(boxed, mesh)
  return jax.jit(lambda r: nn.unbox(module.init(r, x)), out_shardings=sh)(jax.random.PRNGKey(0))

def close(a, b, rtol):
  for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=rtol, atol=rtol)

x = jnp.asarray(rng.normal(size=(8, 6, 6, 16)), jnp.float32)
xs = jax.device_put(x, sharding.batch_sharding(mesh))
for method in binary.METHODS:
  layer = binary.BinaryConv(16, weight_method=method, act_method=method)
  v = sharded_init(layer, x)
  assert any(not l.sharding.is_fully_replicated for l in jax.tree.leaves(v))
  f = lambda p, x: jnp.sum(layer.apply({'params': p}, x, 0.5) ** 2)
  close(jax.jit(layer.apply)(v, xs), layer.apply(jax.device_get(v), x), 1e-4)
  close(jax.jit(jax.grad(f))(v['params'], xs), jax.grad(f)(jax.device_get(v)['params'], x), 1e-4)

x = jnp.asarray(rng.normal(size=(8, 16, 16, 1)), jnp.float32)
xs = jax.device_put(x, sharding.batch_sharding(mesh))
for name, kw in (('bnn_resnet20', {}), ('bnn_vgg_small', {'width': 0.125})):
  for method in ('none', 'bnn', 'adabin', 'reactnet'):
    m = models.build(name, method=method, **kw)
    v = sharded_init(m, x)
    if method in ('none', 'bnn'):
      close(jax.jit(m.apply)(v, xs), m.apply(jax.device_get(v), x), 1e-3)
    def loss(p, x):
      y, _ = m.apply({**v, 'params': p}, x, train=True, progress=0.5, mutable=['batch_stats'])
      return jnp.sum(y ** 2)
    grads = jax.jit(jax.grad(loss))(v['params'], xs)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
print('ok')
"""
  assert run_python(code, devices=8).stdout.strip().endswith("ok")
