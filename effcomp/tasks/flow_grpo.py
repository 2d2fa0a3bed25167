"""Flow-GRPO fine-tuning of a class-conditional flow-matching model (`effcomp.rl.flow_grpo`).

The policy is the teacher's network (`config.teacher.workdir`: a finished `diffusion` run
with objective='flow', in pixel space), started as a copy of it (`warm_start`); the frozen
teacher is also the KL's reference policy (the reference code's LoRA-disabled base model).
Each step (`loss_fn`):

  1. prompts: the batch's labels (P = train.batch_size, drawn from the data split), each
     repeated `group_size` (G) times;
  2. P·G trajectories of the SDE from x_1 ~ N(0, I) over `flow.time_grid(sample_steps,
     flow_shift)` with η = `eta`, sampled from the current parameters under
     `stop_gradient` (the "old" policy), recording states and step log-probs;
  3. rewards of the final states (`reward`, a '<kind>[:<arg>]' of `effcomp.registry.REWARDS`,
     e.g. 'classifier:<workdir>': the probability a classifier run gives the prompted
     class, `effcomp.runs.rewards`) and group-relative advantages (`global_std` as the
     reference configs);
  4. the clipped loss over the first ⌊train_fraction·sample_steps⌋ steps of each
     trajectory (the reference's timestep_fraction, 0.99: all but the last of 10), one
     forward pass of the trainable parameters on all those (state, time) pairs, plus
     kl_beta × the reference's KL to the teacher's step means.

"Denoising reduction": trained with `sample_steps` (10) SDE steps, evaluated with
`eval_steps` (40) ODE steps (η = 0, as the reference's eval).

Deviation from the reference: one optimizer update per sampled batch (effcomp's trainer
takes one step per batch); the reference samples an epoch and makes two updates from it
(gradient accumulation over half of it), so its second update is slightly off-policy. Here
the ratio is 1 up to float rounding and the clip never binds; the gradient is the policy
gradient −mean(A·∇log p) (+ the KL's). No sample filtering (the reference drops samples
whose advantages are all 0, which changes only the loss's denominator).

Evaluation: on the eval split's labels, one fixed x_1 per batch position (`eval_seed`):
'reward' of the ODE samples with `eval_steps`, 'reward_sde' of the training SDE with
`sample_steps`. `generate` samples any flow `diffusion` or `flow_grpo` run (a later
benchmark's entry point). Latent runs are not supported: the teacher slot holds the
reference policy, not an autoencoder.
"""

from typing import Callable, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
from clu import metrics as clu_metrics

from effcomp.diffusion import flow, guidance
from effcomp.registry import MODEL_INPUTS, REWARDS, TASKS
from effcomp.rl import flow_grpo as rl
from effcomp.rl import rewards as _rewards  # noqa: F401  (registers the model-free rewards)
from effcomp.tasks import diffusion
from effcomp.tasks.base import Task, task_config


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  reward: clu_metrics.Average.from_output("reward")
  reward_sde: clu_metrics.Average.from_output("reward_sde")


def task_defaults() -> ml_collections.ConfigDict:
  """The `diffusion` fields (the flow process must be the teacher's) and Flow-GRPO's, with
  the reference's defaults (`config/base.py`, `config/grpo.py` geneval_sd3): 10 sampling
  steps, 40 evaluation steps, noise level 0.7, clip range 1e-4, advantages clipped at 5,
  KL weight 0.04, timestep fraction 0.99, global std. group_size: the reference's 24 at
  scale; 8 here."""
  c = diffusion.task_defaults()
  c.name = "flow_grpo"
  c.objective = "flow"
  c.learn_sigma = False
  c.update({"reward": "", "group_size": 8, "sample_steps": 10, "eval_steps": 40, "eta": 0.7,
            "clip_range": 1e-4, "adv_clip_max": 5.0, "kl_beta": 0.04, "global_std": True,
            "train_fraction": 0.99, "guidance_scale": 1.0})
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  """ValueErrors naming the field for settings Flow-GRPO cannot run."""
  if c.objective != "flow":
    raise ValueError(f"config.task.objective={c.objective!r}: Flow-GRPO fine-tunes 'flow' models")
  if not c.reward:
    raise ValueError("config.task.reward is empty: expected '<kind>[:<arg>]' with kind one of "
                     f"{REWARDS.names()}")
  if c.group_size < 2:
    raise ValueError(f"config.task.group_size={c.group_size}: expected ≥ 2 (advantages are "
                     "relative to the group)")
  if c.eta <= 0:
    raise ValueError(f"config.task.eta={c.eta}: expected > 0 (the SDE's noise level)")
  if not 1 <= train_steps(c) <= c.sample_steps:
    raise ValueError(f"config.task.train_fraction={c.train_fraction}: trains "
                     f"{train_steps(c)} of sample_steps={c.sample_steps}; expected ≥ 1")
  if c.eval_steps < 1:
    raise ValueError(f"config.task.eval_steps={c.eval_steps}: expected ≥ 1")


def train_steps(c) -> int:
  """The steps of each trajectory trained on: int(sample_steps · train_fraction) (reference)."""
  return int(c.sample_steps * c.train_fraction)


def load_reward(spec: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The reward function of '<kind>' or '<kind>:<arg>' (`effcomp.registry.REWARDS`)."""
  kind, _, arg = spec.partition(":")
  return REWARDS.get(kind)(arg)


def velocity_fn(model, params, c, labels: jax.Array) -> rl.VelocityFn:
  """v(x, t) of `model` for `labels` (eval mode), guided when c.guidance_scale ≠ 1 with the
  unconditional half under stop_gradient (the reference's train.cfg)."""
  fn = diffusion.denoiser(model, {"params": params}, c, labels, train=False)
  if c.guidance_scale == 1.0:
    return fn
  null = jnp.full_like(labels, model.num_classes)
  return lambda x, t: guidance.guide(fn(x, t), jax.lax.stop_gradient(fn(x, t, null)),
                                     c.guidance_scale)


def generate(model, params, labels: jax.Array, rng: jax.Array, config: ml_collections.ConfigDict,
             steps: int = 0, eta: float = 0.0, guidance_scale: float = 0.0) -> jax.Array:
  """Samples [B, H, W, C] in [−1, 1] of a flow `diffusion` or `flow_grpo` run's model for
  `labels` [B]: `steps` (0: the task's eval_steps) of the ODE (eta = 0) or the Flow-GRPO SDE.
  guidance_scale: 0 keeps the task's (1 for a diffusion run)."""
  c = task_config(config, task_defaults())
  if guidance_scale:
    c.guidance_scale = guidance_scale
  shape = (labels.shape[0], model.input_size, model.input_size, model.in_channels)
  k_x, k_sde = jax.random.split(rng)
  x1 = jax.random.normal(k_x, shape, jnp.float32)
  times = flow.time_grid(steps or c.eval_steps, c.flow_shift)
  return rl.sample(velocity_fn(model, params, c, labels), x1, times, eta, k_sde)


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape((-1,) + x.shape[2:])


@TASKS.register("flow_grpo")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A Flow-GRPO `Task` for `model` (the teacher's architecture; module docstring)."""
  c = task_config(config, task_defaults())
  check_config(c)
  if teacher_model is None:
    raise ValueError("flow_grpo: no reference model (config.teacher.workdir: a flow "
                     "`diffusion` run)")
  reward_fn = load_reward(c.reward)
  times = flow.time_grid(c.sample_steps, c.flow_shift)
  eval_times = flow.time_grid(c.eval_steps, c.flow_shift)
  num_train, group = train_steps(c), c.group_size

  def x1_of(rng, batch_size):
    shape = (batch_size, model.input_size, model.input_size, model.in_channels)
    return jax.random.normal(rng, shape, jnp.float32)

  def init_fn(rng, batch):
    del batch
    return model.init({"params": rng, "dropout": rng}, *diffusion.example_inputs(config, model))

  def log_probs(params, traj, labels) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """log p of the first num_train recorded steps under `params`: [T, N], and the means."""
    n = labels.shape[0]
    x, x_next = _flat(traj.states[:num_train]), _flat(traj.states[1:num_train + 1])
    t = jnp.repeat(traj.times[:num_train], n)
    t_next = jnp.repeat(traj.times[1:num_train + 1], n)
    y = jnp.tile(labels, num_train)
    v = velocity_fn(model, params, c, y)(x, t)
    logp, mean, _ = rl.step_log_prob(x, x_next, v, t, t_next, c.eta)
    return logp.reshape(num_train, n), mean, (x, t, t_next, y)

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del step
    labels = jnp.repeat(jnp.asarray(batch["label"], jnp.int32), group)
    k_x, k_sde = jax.random.split(rng)
    old = jax.lax.stop_gradient(params)
    traj = rl.sample_trajectory(velocity_fn(model, old, c, labels), x1_of(k_x, labels.shape[0]),
                                times, c.eta, k_sde)
    rewards = reward_fn(traj.states[-1], labels)
    advantages = rl.group_advantages(rewards, group, c.global_std)
    logp, mean, (x, t, t_next, y) = log_probs(params, traj, labels)
    kl = None
    if c.kl_beta:
      ref = jax.lax.stop_gradient(teacher_variables["params"])
      mean_ref, _ = rl.sde_mean_std(x, velocity_fn(model, ref, c, y)(x, t), t, t_next, c.eta)
      kl = rl.reference_kl(mean, mean_ref, rl.sde_sigma(t, t_next, c.eta)).reshape(logp.shape)
    loss, metrics = rl.grpo_loss(logp, traj.log_probs[:num_train], advantages[None],
                                 clip_range=c.clip_range, adv_clip_max=c.adv_clip_max,
                                 kl_beta=c.kl_beta, kl=kl)
    group_std = jnp.std(rewards.reshape(-1, group), axis=1)
    metrics.update({"reward": jnp.mean(rewards), "reward_group_std": jnp.mean(group_std),
                    "zero_std_ratio": jnp.mean((group_std == 0).astype(jnp.float32)),
                    "advantage_abs": jnp.mean(jnp.abs(advantages))})
    return loss, (model_state, metrics)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step, teacher_variables
    labels = jnp.asarray(batch["label"], jnp.int32)
    k_x, k_sde = jax.random.split(jax.random.key(c.eval_seed))
    x1, v = x1_of(k_x, labels.shape[0]), velocity_fn(model, params, c, labels)
    ode = rl.sample(v, x1, eval_times, 0.0, k_sde)
    sde = rl.sample(v, x1, times, c.eta, k_sde)
    return EvalMetrics.single_from_model_output(
        reward=reward_fn(ode, labels), reward_sde=reward_fn(sde, labels), mask=batch["mask"])

  def teacher_init_fn(rng, batch):
    del batch
    return teacher_model.init({"params": rng, "dropout": rng},
                              *diffusion.example_inputs(config, teacher_model))

  def warm_start(params, teacher_variables):
    """The policy starts as a copy of the teacher (the reference fine-tunes the base model)."""
    teacher = teacher_variables["params"]
    if jax.tree.structure(teacher) != jax.tree.structure(params):
      raise ValueError("config.model: the policy must be the teacher's architecture (its "
                       "parameters are copied from config.teacher.workdir)")
    return jax.tree.map(jnp.copy, teacher), {}

  return Task(
      model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn, eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source, summary_metric="reward",
      teacher_init_fn=teacher_init_fn, warm_start=warm_start)


@MODEL_INPUTS.register("flow_grpo")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """(x_t, t, y) of one example, as the `diffusion` task's."""
  return diffusion.example_inputs(config, model)
