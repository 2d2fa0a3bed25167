"""The pure train step: gradient accumulation, the non-finite guard, EMA."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effcomp import config as config_lib
from effcomp.models.mlp import MLP
from effcomp.tasks import classification
from effcomp.train import sharding, state as state_lib, steps


def _setup(lr=0.1, ema=False):
  config = config_lib.base_config()
  config.task = classification.task_defaults()
  task = classification.build(config, MLP(num_classes=4, widths=(16,)), None, None)
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(8, 6)).astype(np.float32),
           "label": rng.integers(0, 4, size=8).astype(np.int32)}
  tx = optax.sgd(lr)
  mesh = sharding.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  state, _, _ = state_lib.create(task.init_fn, tx, batch, 0, mesh, use_ema=ema)
  return task, tx, state, batch


def test_gradient_accumulation_equals_one_big_batch():
  task, tx, state, batch = _setup()
  one, m1 = jax.jit(steps.make_train_step(task, tx))(state, batch)
  four, m4 = jax.jit(steps.make_train_step(task, tx, grad_accum_steps=4))(state, batch)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert int(one.step) == int(four.step) == 1


def test_sgd_step_matches_hand_computed_update():
  task, tx, state, batch = _setup(lr=0.5)
  new, _ = jax.jit(steps.make_train_step(task, tx))(state, batch)
  grads = jax.grad(lambda p: task.loss_fn(p, {}, batch, jax.random.PRNGKey(0), None, 0)[0])(state.params)
  expected = jax.tree.map(lambda p, g: p - 0.5 * g, state.params, grads)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_nonfinite_loss_leaves_state_unchanged_and_is_flagged():
  task, tx, state, batch = _setup()
  bad = dict(batch, image=batch["image"].copy())
  bad["image"][0, 0] = np.nan
  new, metrics = jax.jit(steps.make_train_step(task, tx))(state, bad)
  assert float(metrics["finite"]) == 0.0 and not np.isfinite(float(metrics["loss"]))
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)
  assert int(new.step) == 1 and int(new.skipped_steps) == 1


def test_ema_tracks_params():
  task, tx, state, batch = _setup(ema=True)
  new, _ = jax.jit(steps.make_train_step(task, tx, ema_decay=0.75))(state, batch)
  for e, p0, p1 in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(state.params),
                       jax.tree.leaves(new.params)):
    np.testing.assert_allclose(e, 0.75 * p0 + 0.25 * p1, rtol=1e-6)


def test_ema_warmup_follows_the_params_early():
  task, tx, state, batch = _setup(ema=True)
  step = jax.jit(steps.make_train_step(task, tx, ema_decay=0.999, ema_warmup=True))
  new, _ = step(state, batch)  # t = 0: decay min(0.999, 1/10) = 0.1
  for e, p0, p1 in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(state.params),
                       jax.tree.leaves(new.params)):
    np.testing.assert_allclose(e, 0.1 * p0 + 0.9 * p1, rtol=1e-5, atol=1e-7)
  late = new.replace(step=jnp.asarray(100_000, new.step.dtype))
  newer, _ = step(late, batch)  # (1 + t)/(10 + t) > 0.999: the configured decay
  for e, e0, p1 in zip(jax.tree.leaves(newer.ema_params), jax.tree.leaves(late.ema_params),
                       jax.tree.leaves(newer.params)):
    np.testing.assert_allclose(e, 0.999 * e0 + 0.001 * p1, rtol=1e-5, atol=1e-7)


def test_distillation_loss_is_zero_for_identical_logits_and_positive_otherwise():
  logits = jnp.array([[1.0, 2.0, -1.0]])
  assert abs(float(classification.distillation_loss(logits, logits, 4.0))) < 1e-6
  assert float(classification.distillation_loss(logits, -logits, 4.0)) > 0.1


def test_compile_ahead_leaves_the_first_call_nothing_to_compile():
  task, tx, state, batch = _setup()
  step = jax.jit(steps.make_train_step(task, tx))
  assert steps.compile_ahead(step, state, batch) > 0
  events = []
  listen = lambda name, secs, **kw: events.append(name)
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    jax.block_until_ready(step(state, batch))
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert not [e for e in events if "compile" in e], events
