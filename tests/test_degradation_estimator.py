"""MoR's CPU-scale degradation estimator learns severities it is shown."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effcomp.models.sr.degradation_estimator import DegradationEstimator


def test_estimator_learns_noise_severity():
  model = DegradationEstimator(width=8, outputs=1)
  rng = np.random.default_rng(0)

  def batch(n=16):
    severity = rng.uniform(0, 1, (n, 1)).astype(np.float32)
    base = np.repeat(np.repeat(rng.uniform(-0.5, 0.5, (n, 4, 4, 3)), 8, 1), 8, 2)
    noisy = base + 0.4 * severity[:, :, None, None] * rng.standard_normal((n, 32, 32, 3))
    return jnp.asarray(noisy, jnp.float32), jnp.asarray(severity)

  params = model.init(jax.random.key(0), batch()[0])
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, s):
    loss, grad = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, x) - s) ** 2))(params)
    updates, opt = tx.update(grad, opt)
    return optax.apply_updates(params, updates), opt, loss

  for _ in range(150):
    params, opt, _ = step(params, opt, *batch())
  x, s = batch(64)
  pred = model.apply(params, x)
  assert pred.shape == (64, 1) and np.all((0 <= pred) & (pred <= 1))
  assert np.corrcoef(pred[:, 0], s[:, 0])[0, 1] > 0.9
