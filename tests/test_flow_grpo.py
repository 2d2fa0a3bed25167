"""Flow-GRPO (`effcomp.rl.flow_grpo`, `effcomp.tasks.flow_grpo`): the SDE keeps the flow's
marginals on a Gaussian whose velocity is known in closed form, step log-probs, group
advantages and the clipped loss by hand, and a short fine-tuning run through the trainer."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.registry import REWARDS
from effcomp.rl import flow_grpo as rl
from effcomp.tasks import flow_grpo
from effcomp.train import metrics_writer

# Data x_0 ~ N(μ, diag(s²)) on the path x_t = (1 − t)·x_0 + t·ε: x_t ~ N((1 − t)μ, V_t) with
# V_t = (1 − t)²s² + t², Cov(ε, x_t) = t, Cov(x_0, x_t) = (1 − t)s², so the exact velocity
# E[ε − x_0 | x_t = x] = −μ + (t − (1 − t)s²)·(x − (1 − t)μ)/V_t is linear in x.
MU, S = np.array([1.5, -0.5]), np.array([0.5, 2.0])


def exact_velocity(x, t):
  t = t[:, None]
  var = (1 - t) ** 2 * S ** 2 + t ** 2
  return -MU + (t - (1 - t) * S ** 2) * (x - (1 - t) * MU) / var


def marginal(t):
  return (1 - t) * MU, (1 - t) ** 2 * S ** 2 + t ** 2


def _moments_error(x, t):
  mean, var = marginal(t)
  x = np.asarray(x, np.float64)
  return np.abs(x.mean(0) - mean).max(), np.abs(x.var(0) / var - 1).max()


def test_sde_keeps_the_flows_marginals_on_a_gaussian():
  """40 000 chains of 100 steps: mean within 0.03 and variance within 4 % of N((1 − t)μ,
  (1 − t)²s² + t²) at t = 0.75, 0.5, 0.25, 0, as the ODE's; the same noise without the score
  correction (x + v·dt + σ√dt·ε) misses the variance by far more."""
  times = jnp.linspace(1.0, 0.0, 101)
  x1 = jax.random.normal(jax.random.key(0), (40_000, 2))
  traj = jax.jit(lambda x: rl.sample_trajectory(exact_velocity, x, times, 0.3,
                                                jax.random.key(1)))(x1)
  assert traj.states.shape == (101, 40_000, 2) and traj.log_probs.shape == (100, 40_000)

  def naive(x, k):  # the noise alone, without the drift's score term
    t, t_next = jnp.full(x.shape[:1], times[k]), jnp.full(x.shape[:1], times[k + 1])
    mean = x + exact_velocity(x, t) * (times[k + 1] - times[k])
    std = rl.sde_mean_std(x, exact_velocity(x, t), t, t_next, 0.3)[1]
    return mean + std * rl.step_noise(jax.random.key(1), k, x)
  x_naive = jax.jit(lambda x: jax.lax.fori_loop(0, 50, lambda k, x: naive(x, k), x))(x1)
  ode = x1
  for k in range(100):
    if k in (25, 50, 75):
      t = float(times[k])
      assert max(_moments_error(ode, t)) < 0.03, ("ode", t, _moments_error(ode, t))
      mean_err, var_err = _moments_error(traj.states[k], t)
      assert mean_err < 0.03 and var_err < 0.04, (t, mean_err, var_err)
    ode = ode + exact_velocity(ode, jnp.full((40_000,), times[k])) * (times[k + 1] - times[k])
  mean_err, var_err = _moments_error(traj.states[-1], 0.0)
  assert mean_err < 0.03 and var_err < 0.04, (mean_err, var_err)
  assert _moments_error(x_naive, 0.5)[1] > 0.15  # the check has teeth


def test_first_step_from_pure_noise_by_hand():
  """At t = 1 the reference puts t_next in 1 − t: σ² = η²/(1 − t'), and with v(x, 1) = x − μ
  the step is x·(1 − η²/2 − Δ) + μ·Δ with std η exactly, whatever Δ (so its variance,
  (1 − η²/2 − Δ)² + η², overshoots the flow's by ≈ η⁴/4: 6 % at η = 0.7, 0.2 % at 0.3)."""
  eta, dt = 0.7, 0.1
  x = jnp.asarray([[0.3, -1.2]])
  t, t_next = jnp.ones(1), jnp.full((1,), 1 - dt)
  np.testing.assert_allclose(rl.sde_sigma(t, t_next, eta), eta / np.sqrt(dt), rtol=1e-6)
  x_next, mean, std = rl.sde_step(x, exact_velocity(x, t), t, t_next, eta, jnp.ones_like(x))
  np.testing.assert_allclose(mean, x * (1 - eta ** 2 / 2 - dt) + MU * dt, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std, [[eta]], rtol=1e-6)
  np.testing.assert_allclose(x_next, mean + eta, rtol=1e-6)
  # elsewhere σ_t = η·√(t/(1 − t)) and std = σ_t·√(t − t_next); η = 0 is Euler
  np.testing.assert_allclose(rl.sde_sigma(jnp.asarray(0.6), jnp.asarray(0.5), eta),
                             eta * np.sqrt(1.5), rtol=1e-6)
  v = exact_velocity(x, jnp.full((1,), 0.6))
  euler = rl.sde_step(x, v, jnp.full((1,), 0.6), jnp.full((1,), 0.5), 0.0, jnp.ones_like(x))
  np.testing.assert_allclose(euler[0], x - 0.1 * v, rtol=1e-5)


def test_log_prob_is_the_per_dimension_gaussian_density():
  x = jnp.asarray([[0.5, -1.0, 2.0]])
  mean = jnp.asarray([[0.0, -0.5, 1.0]])
  std = jnp.asarray([[0.5]])
  per_dim = -np.square([0.5, -0.5, 1.0]) / (2 * 0.25) - np.log(0.5) - 0.5 * np.log(2 * np.pi)
  np.testing.assert_allclose(rl.gaussian_log_prob(x, mean, std), [per_dim.mean()], rtol=1e-6)
  np.testing.assert_allclose(rl.gaussian_log_prob(x, mean, std, "sum"), [per_dim.sum()],
                             rtol=1e-6)
  # the recorded log-prob of a sampled step is the density of that step
  times = jnp.asarray([1.0, 0.6, 0.0])
  x1 = jnp.asarray([[0.2, -0.4]])
  traj = rl.sample_trajectory(exact_velocity, x1, times, 0.7, jax.random.key(3))
  x, t = traj.states[1], jnp.full((1,), 0.6)
  mean, std = rl.sde_mean_std(x, exact_velocity(x, t), t, jnp.zeros(1), 0.7)
  z = (np.asarray(traj.states[2]) - np.asarray(mean)) / float(std[0, 0])
  by_hand = np.mean(-z ** 2 / 2 - np.log(float(std[0, 0])) - 0.5 * np.log(2 * np.pi))
  np.testing.assert_allclose(traj.log_probs[1], [by_hand], rtol=1e-5)
  with pytest.raises(ValueError, match="eta=0"):
    rl.sample_trajectory(exact_velocity, x1, times, 0.0, jax.random.key(0))


def test_group_advantages_by_hand():
  rewards = jnp.asarray([1.0, 3.0, 2.0, 2.0])  # groups (1, 3) and (2, 2)
  np.testing.assert_allclose(rl.group_advantages(rewards, 2),
                             [-1 / 1.0001, 1 / 1.0001, 0, 0], rtol=1e-6)
  global_std = np.std([1.0, 3.0, 2.0, 2.0])  # √0.5, population
  np.testing.assert_allclose(rl.group_advantages(rewards, 2, global_std=True),
                             np.array([-1, 1, 0, 0]) / (global_std + 1e-4), rtol=1e-6)
  with pytest.raises(ValueError, match="group_size=3"):
    rl.group_advantages(rewards, 3)


def test_clipped_loss_and_its_gradient_by_hand():
  """ε = 0.2: ratios e^0.5 (above 1 + ε) and e^−0.5 (below 1 − ε), with A = ±2; the max of
  −A·r and −A·clip(r) keeps the gradient only where clipping would not help the objective."""
  logp_old = jnp.zeros(4)
  logp_new = jnp.asarray([0.5, 0.5, -0.5, -0.5])
  adv = jnp.asarray([2.0, -2.0, 2.0, -2.0])
  r_hi, r_lo = np.exp(0.5), np.exp(-0.5)
  loss, metrics = rl.grpo_loss(logp_new, logp_old, adv, clip_range=0.2)
  terms = [-2 * 1.2, 2 * r_hi, -2 * r_lo, 2 * 0.8]  # clipped, unclipped, unclipped, clipped
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-6)
  assert float(metrics["clipfrac"]) == 1.0 and float(metrics["kl"]) == 0.0
  grad = jax.grad(lambda lp: rl.grpo_loss(lp, logp_old, adv, clip_range=0.2)[0])(logp_new)
  np.testing.assert_allclose(grad, [0, 2 * r_hi / 4, -2 * r_lo / 4, 0], rtol=1e-6)
  # inside the range (ratio 1, the on-policy step): the policy gradient −A/n, clipfrac 0;
  # advantages beyond ±adv_clip_max are clipped first; the KL adds β·mean(kl)
  grad = jax.grad(lambda lp: rl.grpo_loss(lp, jnp.zeros(3), jnp.asarray([1.0, -7.0, 0.5]),
                                          kl_beta=0.5, kl=jnp.ones(3))[0])(jnp.zeros(3))
  np.testing.assert_allclose(grad, np.array([-1.0, 5.0, -0.5]) / 3, rtol=1e-6)
  loss, metrics = rl.grpo_loss(jnp.zeros(3), jnp.zeros(3), jnp.asarray([1.0, -7.0, 0.5]),
                               kl_beta=0.5, kl=jnp.asarray([1.0, 2.0, 3.0]))
  np.testing.assert_allclose(loss, (-1 + 5 - 0.5) / 3 + 0.5 * 2.0, rtol=1e-6)
  assert float(metrics["clipfrac"]) == 0.0


def test_reference_kl_is_the_exact_kl_times_the_step():
  mean, mean_ref = jnp.asarray([[1.0, 2.0]]), jnp.asarray([[0.0, 1.0]])
  t, t_next, eta = jnp.asarray([0.5]), jnp.asarray([0.4]), 0.7
  sigma = rl.sde_sigma(t, t_next, eta)
  std = sigma * np.sqrt(0.1)
  np.testing.assert_allclose(rl.gaussian_kl(mean, mean_ref, std[:, None]),
                             [1 / (2 * float(std[0]) ** 2)], rtol=1e-5)
  np.testing.assert_allclose(rl.reference_kl(mean, mean_ref, sigma),
                             0.1 * rl.gaussian_kl(mean, mean_ref, std[:, None]), rtol=1e-5)


TINY = {"model.hidden_size": 32, "model.depth": 2, "model.num_heads": 2,
        "train.progress_bar": False, "checkpoint.async_save": False}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A flow DiT trained 2 steps on the digits (a tiny, barely trained reference)."""
  workdir = str(tmp_path_factory.mktemp("teacher") / "dit_flow")
  runs.train(config_lib.load("configs/diffusion_digits.py:model=DiT-T/2,objective=flow,steps=2",
                             **{**TINY, "train.batch_size": 8, "eval.batch_size": 120,
                                "train.eval_every": 0}), workdir)
  return workdir


def test_flow_grpo_task_trains_through_the_trainer(tmp_path, data_dir, teacher):
  """2 steps of 2 prompts × 4 on the brightness reward: the step's numbers are logged, the
  policy starts as the teacher (KL 0 at the first step, ratio 1) and moves; `generate`
  samples both the policy's and the teacher's runs."""
  del data_dir
  config = config_lib.load(
      f"configs/flow_grpo_digits.py:teacher={teacher},reward=brightness,steps=2,prompts=2,"
      "group=4,sample_steps=4,lr=1e-3",
      **{**TINY, "train.log_every": 1, "train.eval_every": 0, "eval.at_start": False,
         "task.eval_steps": 6})
  assert config.task.flow_time_scale == 1000.0 and config.model.hidden_size == 32
  workdir = str(tmp_path / "grpo")
  summary = runs.train(config, workdir)
  rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  train = [r for r in rows if "train/loss" in r]
  evals = [r for r in rows if "eval/reward" in r]
  assert len(train) == 2 and [r["step"] for r in evals] == [2]
  for key in ("policy_loss", "kl", "clipfrac", "reward", "approx_kl", "zero_std_ratio"):
    assert np.isfinite(train[0][f"train/{key}"]), key
  assert train[0]["train/kl"] == pytest.approx(0.0, abs=1e-9)  # the policy is the teacher
  # one update per sample: the recomputed log-probs are the sampled ones (ratio 1)
  assert train[0]["train/clipfrac"] == 0.0 and train[0]["train/approx_kl"] < 1e-8
  assert 0 < summary["eval"]["reward"] < 1 and 0 < evals[0]["eval/reward_sde"] < 1
  policy, master = runs.open(workdir), runs.open(teacher)
  assert policy.task == "flow_grpo"
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                       policy.params, master.params))
  assert max(moved) > 0
  labels = jnp.arange(3)
  images = flow_grpo.generate(policy.model, policy.params, labels, jax.random.key(0),
                              policy.config, steps=3)
  teacher_images = flow_grpo.generate(master.model, master.params, labels, jax.random.key(0),
                                      master.config, steps=3)
  assert images.shape == teacher_images.shape == (3, 16, 16, 1)


def test_classifier_reward_is_the_prompted_class_probability(tmp_path, data_dir, teacher):
  del data_dir
  workdir = str(tmp_path / "cnn")
  runs.train(config_lib.load("configs/demo.py:model=cnn,steps=2",
                             **{"task.resize": 16, "train.progress_bar": False,
                                "checkpoint.async_save": False, "train.batch_size": 8}), workdir)
  reward = REWARDS.get("classifier")(workdir)
  images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 1), minval=-1, maxval=1)
  r_all = jnp.stack([reward(images, jnp.full((4,), k)) for k in range(10)], axis=1)
  np.testing.assert_allclose(r_all.sum(1), 1.0, rtol=1e-5)  # a distribution over the classes
  assert jax.jit(reward)(images, jnp.arange(4)).shape == (4,)
  with pytest.raises(ValueError, match="expected a classification run"):
    REWARDS.get("classifier")(teacher)


def test_config_errors_name_the_field(teacher):
  with pytest.raises(ValueError, match="reward 'nope'|unknown reward 'nope'"):
    runs.setup(config_lib.load(f"configs/flow_grpo_digits.py:teacher={teacher},reward=nope",
                               **TINY))
  with pytest.raises(ValueError, match="group_size=1"):
    runs.setup(config_lib.load(f"configs/flow_grpo_digits.py:teacher={teacher},group=1,"
                               "reward=brightness", **TINY))
