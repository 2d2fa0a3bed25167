"""Optimizer and learning-rate schedule from `config.optimizer` (optax)."""

import ml_collections
import optax

SCHEDULES = ("constant", "cosine", "linear", "multistep")
OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")


def create_schedule(c: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up for `warmup_steps`, then constant / cosine / linear decay to
  lr·end_lr_factor, or 'multistep': lr × gamma^(number of `milestones` passed), the
  milestones counted in steps from the start (BasicSR / torch MultiStepLR)."""
  if c.schedule not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule={c.schedule!r}: expected one of {SCHEDULES}")
  if c.schedule == "multistep" and (not c.milestones or list(c.milestones) != sorted(
      set(c.milestones)) or min(c.milestones) <= c.warmup_steps):
    raise ValueError(f"config.optimizer.milestones={c.milestones}: expected increasing steps "
                     f"after warmup_steps={c.warmup_steps}")
  end = c.lr * c.end_lr_factor
  decay_steps = max(total_steps - c.warmup_steps, 1)
  if c.schedule == "constant":
    decay = optax.constant_schedule(c.lr)
  elif c.schedule == "cosine":
    decay = optax.cosine_decay_schedule(c.lr, decay_steps, alpha=c.end_lr_factor)
  elif c.schedule == "multistep":  # after a warm-up the schedule's step is shifted by it
    decay = optax.piecewise_constant_schedule(
        c.lr, {int(m) - c.warmup_steps: c.gamma for m in c.milestones})
  else:
    decay = optax.linear_schedule(c.lr, end, decay_steps)
  if not c.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, c.lr, c.warmup_steps)
  return optax.join_schedules([warmup, decay], [c.warmup_steps])


def create_optimizer(c: ml_collections.ConfigDict, total_steps: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns `(tx, schedule)` for `config.optimizer` and the run's length."""
  if c.name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={c.name!r}: expected one of {OPTIMIZERS}")
  lr = create_schedule(c, total_steps)
  if c.name == "sgd":
    tx = optax.sgd(lr, momentum=c.momentum or None, nesterov=c.nesterov)
    if c.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(c.weight_decay), tx)
  elif c.name == "adam":
    tx = optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)
  elif c.name == "adamw":
    tx = optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay)
  else:
    tx = optax.lamb(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay)
  if c.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(c.grad_clip_norm), tx)
  return tx, lr
