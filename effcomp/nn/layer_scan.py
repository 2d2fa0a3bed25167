"""Repeated layers run as one `lax.scan`, with the unrolled model's parameter tree.

A stage of identical layers (U-DiT's stages, DiT-SR's Swin stages) unrolled in Python
gives XLA one copy of the layer per repetition to trace, optimize and compile: U-DiT-S's
train step took 58 s to compile unrolled, DiT-SR's over a minute (issue 22). Here each
layer keeps its own parameter subtree (`blocks_0`, `blocks_1`, …: checkpoints,
converters and re-parameterizations see the unrolled model), and the parent stacks the
subtrees on the fly and scans one traced copy of the layer over them, the way
`flax.linen.scan` would with a stacked tree (Flax's `nn.scan` needs the stacked layout in
the checkpoint; this keeps the checkpoint format).

A scan step may run a group of consecutive layers that differ in configuration (DiT-SR
alternates plain and shifted windows: the step is one plain and one shifted block). The
output equals the unrolled layers' (the tests compare outputs and gradients); random
streams (dropout) are split per step from the parent's, so they differ from the
unrolled model's draws but have the same distribution.
"""

from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp


def scan_layers(parent: nn.Module, group: Sequence[nn.Module],
                names: Sequence[Sequence[str]], x: jax.Array, *args: Any,
                rng_names: Tuple[str, ...] = (), remat: bool = False,
                policy: Optional[Callable[..., bool]] = None) -> jax.Array:
  """x through the parent's layers `names[i][j]`, step i applying `group[j]` (an unbound
  module of the layer's configuration) with parameters `parent.variables['params'][
  names[i][j]]`, as x = layer(x, *args).

  Called from the parent's compact `__call__` after its parameters exist (not while
  initializing: create them unrolled). `rng_names`: random streams the layers draw from
  (e.g. 'dropout'), each split per step from the parent's where it has one. `remat`:
  recompute each step in the backward pass, keeping only what `policy` (a
  `jax.checkpoint_policies` policy; None: nothing) names as saveable.
  """
  if not names or any(len(step) != len(group) for step in names):
    raise ValueError(f"names={names}: expected a non-empty list of steps of {len(group)} "
                     "layer names each (one per module of `group`)")
  params = nn.unbox(parent.variables["params"])
  stacked = [jax.tree.map(lambda *p: jnp.stack(p), *(params[step[j]] for step in names))
             for j in range(len(group))]
  keys = {r: jax.random.split(parent.make_rng(r), (len(names), len(group)))
          for r in rng_names if parent.has_rng(r)}

  def body(h, step):
    p, k = step
    for j, layer in enumerate(group):
      h = layer.apply({"params": p[j]}, h, *args,
                      rngs={r: key[j] for r, key in k.items()})
    return h, None

  x, _ = jax.lax.scan(jax.checkpoint(body, policy=policy) if remat else body, x, (stacked, keys))
  return x
