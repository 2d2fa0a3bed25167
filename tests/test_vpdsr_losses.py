"""VPD-SR's losses: the Haar split, the HFP loss and the ESS loss on hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.losses import high_frequency, semantic
from effcomp.nn import haar


def test_haar_on_one_block_and_round_trip():
  x = jnp.asarray([[1.0, 2.0], [3.0, 5.0]]).reshape(1, 2, 2, 1)
  ll, (lh, hl, hh) = haar.haar_dwt(x)
  np.testing.assert_allclose([ll.item(), lh.item(), hl.item(), hh.item()],
                             [11 / 2, (3 - 8) / 2, (4 - 7) / 2, (1 - 2 - 3 + 5) / 2])
  y = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
  np.testing.assert_allclose(haar.haar_idwt(*haar.haar_dwt(y)), y, atol=1e-6)
  # Orthonormal: the energy is kept.
  ll, details = haar.haar_dwt(y)
  energy = jnp.sum(ll ** 2) + sum(jnp.sum(d ** 2) for d in details)
  np.testing.assert_allclose(energy, jnp.sum(y ** 2), rtol=1e-5)


def test_haar_matches_pywt():
  pywt = pytest.importorskip("pywt")
  y = np.random.default_rng(0).standard_normal((1, 8, 8, 1))
  ll, (lh, hl, hh) = haar.haar_dwt(jnp.asarray(y))
  ca, (ch, cv, cd) = pywt.dwt2(y[0, :, :, 0], "haar")
  for ours, theirs in ((ll, ca), (lh, ch), (hl, cv), (hh, cd)):
    np.testing.assert_allclose(np.asarray(ours)[0, :, :, 0], theirs, atol=1e-6)


def test_hfp_ignores_low_frequencies_and_matches_a_hand_computed_case():
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  # A constant offset lives in LL only: no HFP cost at any level.
  np.testing.assert_allclose(high_frequency.hfp_loss(x + 0.3, x, levels=3), 0.0, atol=1e-5)
  # One level on a 2×2 image: |Δlh| + |Δhl| + |Δhh| from the block formulas.
  pred = jnp.asarray([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 2, 1)
  target = jnp.zeros_like(pred)
  np.testing.assert_allclose(high_frequency.hfp_loss(pred, target, levels=1), [1.5])
  # A second level on a 4×4 image: weight 2 on the detail bands of the LL.
  pred = jnp.zeros((1, 4, 4, 1)).at[0, :2, :2, 0].set(1.0)  # a 2×2 block: level 1 has no details
  ll = jnp.asarray([[2.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 2, 1)
  expected = 2.0 * sum(jnp.abs(d).mean() for d in haar.haar_dwt(ll)[1])
  np.testing.assert_allclose(high_frequency.hfp_loss(pred, jnp.zeros_like(pred), levels=2),
                             [expected], rtol=1e-6)
  np.testing.assert_allclose(expected, 6.0)
  with pytest.raises(ValueError, match="levels"):
    high_frequency.hfp_loss(pred, pred, levels=0)


def test_ess_cosine_and_stop_gradient():
  a = jnp.asarray([[[1.0, 0.0]], [[1.0, 1.0]]])  # [B=2, positions=1, C=2]
  b = jnp.asarray([[[0.0, 2.0]], [[3.0, 3.0]]])
  np.testing.assert_allclose(semantic.ess_loss([a], [b]), [1.0, 0.0], atol=1e-6)
  # Two features are averaged; the target gets no gradient.
  loss = lambda p, t: jnp.sum(semantic.ess_loss([p, p], [t, t]))
  grad_target = jax.grad(loss, argnums=1)(a + 0.1, b)
  np.testing.assert_array_equal(grad_target, 0.0)
  grad_pred = jax.grad(loss)(a, b)
  assert float(jnp.abs(grad_pred[0]).sum()) > 0  # orthogonal → turn toward b
  with pytest.raises(ValueError, match="same number"):
    semantic.ess_loss([a], [])
