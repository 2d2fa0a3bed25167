"""The train state and its sharded initialization."""

from typing import Any, Callable, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from effcomp.train import sharding as sharding_lib


class TrainState(flax.struct.PyTreeNode):
  """Everything a step changes; checkpointed as one pytree.

  Attributes:
    step: optimizer steps taken (int32 scalar).
    params: trainable parameters.
    model_state: the model's other collections (e.g. BatchNorm `batch_stats`).
    opt_state: optax state.
    ema_params: exponential moving average of `params`, or None.
    rng: base PRNG key (uint32[2]); step `t` uses `fold_in(rng, t)`, so randomness
      is the same whatever the mesh or restart point.
    skipped_steps: steps whose update was dropped for a non-finite loss or gradient.
  """
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array
  skipped_steps: jax.Array


def _init_boxed(init_fn: Callable, tx: optax.GradientTransformation, batch: Any,
                rng: jax.Array, use_ema: bool) -> TrainState:
  """TrainState whose leaves keep their `nn.LogicallyPartitioned` boxes (for sharding)."""
  init_rng, train_rng = jax.random.split(rng)
  variables = dict(init_fn(init_rng, batch))
  params = variables.pop("params")
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
      opt_state=tx.init(params), ema_params=params if use_ema else None, rng=train_rng,
      skipped_steps=jnp.zeros((), jnp.int32))


def create(init_fn: Callable, tx: optax.GradientTransformation, batch: Any, seed: int,
           mesh: Mesh, *, use_ema: bool, rules=sharding_lib.LOGICAL_RULES
           ) -> Tuple[TrainState, Any, Any]:
  """Initializes the state directly into its shardings.

  Returns `(state, state_shardings, abstract_state)`; `abstract_state` holds
  `jax.ShapeDtypeStruct`s with shardings (the restore target for checkpoints).
  """
  rng = jax.random.PRNGKey(seed)
  init = lambda r: _init_boxed(init_fn, tx, batch, r, use_ema)
  boxed = jax.eval_shape(init, rng)
  shardings = sharding_lib.tree_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(boxed), shardings)
  state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings, abstract


def abstract_variables(init_fn: Callable, batch: Any, mesh: Mesh,
                       rules=sharding_lib.LOGICAL_RULES) -> Any:
  """Sharded `ShapeDtypeStruct`s of a model's variables (a restore target)."""
  boxed = jax.eval_shape(init_fn, jax.random.PRNGKey(0), batch)
  shardings = sharding_lib.tree_shardings(boxed, mesh, rules)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      nn.unbox(boxed), shardings)
