"""The pure train and eval step functions the trainer jits, and compiling one ahead."""

import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from effcomp import hugepages
from effcomp.tasks.base import Task
from effcomp.train.state import TrainState


def _split_microbatches(batch: Any, n: int) -> Any:
  """[B, ...] → [n, B/n, ...], micro-batch i holding rows i, i+n, … (device-local rows)."""
  def split(x):
    x = x.reshape((x.shape[0] // n, n) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, batch)


def compile_ahead(step: Any, *args: Any) -> float:
  """Compiles the jitted `step` for `args` (arrays or `jax.ShapeDtypeStruct`s) before its
  first call, which then runs the cached executable, and hands the memory the compiler
  freed back to the OS (`hugepages.release_free_memory`), so that the step's temporaries
  do not come on top of it. Returns the seconds it took."""
  start = time.perf_counter()
  step.lower(*args).compile()
  hugepages.release_free_memory()
  return time.perf_counter() - start


def make_train_step(task: Task, tx: optax.GradientTransformation, *, grad_accum_steps: int = 1,
                    ema_decay: float = 0.0, ema_warmup: bool = False) -> Callable:
  """`train_step(state, batch, teacher_variables) -> (state, metrics)`.

  The EMA of the params (if the state keeps one) decays by `ema_decay` per step; with
  `ema_warmup`, by min(ema_decay, (1 + t) / (10 + t)) at step t (diffusers `EMAModel`'s
  default decay), so it follows the params early in short runs instead of averaging in the
  initialization for ~1/(1 − ema_decay) steps.

  Gradients are averaged over `grad_accum_steps` micro-batches (a `lax.scan`, so
  memory is that of one micro-batch). If the loss or the gradient norm is not finite
  the update is dropped — params, optimizer, model state and EMA keep their values —
  and `metrics['finite']` is 0; the trainer then stops or goes on as configured.
  """
  grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)

  def gradients(state: TrainState, batch, rng, teacher):
    if grad_accum_steps == 1:
      (loss, (model_state, metrics)), grads = grad_fn(
          state.params, state.model_state, batch, rng, teacher, state.step)
      return loss, model_state, metrics, grads

    def body(carry, xs):
      grad_sum, model_state = carry
      micro, i = xs
      (loss, (model_state, metrics)), grads = grad_fn(
          state.params, model_state, micro, jax.random.fold_in(rng, i), teacher, state.step)
      return (jax.tree.map(jnp.add, grad_sum, grads), model_state), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grad_sum, model_state), (losses, metrics) = jax.lax.scan(
        body, (zeros, state.model_state),
        (_split_microbatches(batch, grad_accum_steps), jnp.arange(grad_accum_steps)))
    grads = jax.tree.map(lambda g: g / grad_accum_steps, grad_sum)
    return jnp.mean(losses), model_state, jax.tree.map(jnp.mean, metrics), grads

  def train_step(state: TrainState, batch: Dict[str, jax.Array],
                 teacher: Optional[Any] = None) -> Tuple[TrainState, Dict[str, jax.Array]]:
    rng = jax.random.fold_in(state.rng, state.step)
    loss, model_state, metrics, grads = gradients(state, batch, rng, teacher)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      decay = ema_decay
      if ema_warmup:
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
      ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params),
        model_state=keep(model_state, state.model_state),
        opt_state=keep(opt_state, state.opt_state), ema_params=keep(ema, state.ema_params),
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm,
               "finite": finite.astype(jnp.float32)}
    return new_state, metrics

  return train_step


def make_eval_step(task: Task, *, use_ema: bool = False) -> Callable:
  """`eval_step(state, batch, teacher_variables) -> clu Collection` for one masked batch."""
  def eval_step(state: TrainState, batch, teacher: Optional[Any] = None):
    params = state.ema_params if use_ema else state.params
    return task.eval_fn(params, state.model_state, batch, state.step, teacher)
  return eval_step
