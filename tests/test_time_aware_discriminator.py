"""TAD-SR's time-aware discriminator: shapes, its zero start, and its time conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.models.sr.time_aware_discriminator import TimeAwareDiscriminator


def _features(seed):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((2, 8, 8, 16), (2, 4, 4, 32))]


@pytest.mark.slow  # end to end, ≈ 20 s: make test-slow
def test_logits_depend_on_features_and_time_once_trained():
  d = TimeAwareDiscriminator(embed_dim=32, logits_per_position=8)
  feats, t = _features(0), jnp.array([0, 5])
  variables = d.init(jax.random.key(0), feats, t)
  apply = lambda v, f, tt: d.apply(v, f, tt)
  logits = apply(variables, feats, t)
  assert logits.shape == (2, (64 + 16) * 8)
  # At initialization the last conv of each FiLM branch is zero: the heads see zeros, so
  # the logits depend on neither the features nor t (a student starts from a neutral D).
  np.testing.assert_allclose(apply(variables, _features(1), t[::-1]), logits, atol=1e-6)
  # Once those convs are nonzero, the logits depend on t through the FiLM and on the
  # features, and gradients reach the features (the student's signal).
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: (jax.random.normal(jax.random.key(len(path)), p.shape) * 0.1
                       if "out_" in jax.tree_util.keystr(path) and p.ndim == 4 else p),
      variables["params"])
  v = {**variables, "params": params}
  a, b = apply(v, feats, jnp.array([0, 0])), apply(v, feats, jnp.array([9, 9]))
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3
  g = jax.grad(lambda f: jnp.sum(apply(v, f, t)))(feats)
  assert all(float(jnp.max(jnp.abs(x))) > 0 for x in g)
  # Training calls advance the spectral norm's power iteration (its u vectors).
  _, new = d.apply(v, feats, t, train=True, mutable=["batch_stats"])
  changed = jax.tree.map(lambda x, y: bool(jnp.any(x != y)), new["batch_stats"],
                         variables["batch_stats"])
  assert any(jax.tree.leaves(changed))


def test_bad_inputs_are_errors():
  d = TimeAwareDiscriminator(embed_dim=32, logits_per_position=8)
  with pytest.raises(ValueError, match="features"):
    d.init(jax.random.key(0), [], jnp.array([0]))
  with pytest.raises(ValueError, match="t "):
    d.init(jax.random.key(0), _features(0), jnp.array([0, 1, 2]))
