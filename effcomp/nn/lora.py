"""LoRA and mixture-of-ranks (MoR) adapters on any Flax model's Dense layers, without
touching the model's code or its parameter tree.

Adapters are a parameter tree of their own, keyed by the adapted layer's module path
joined by '.' ('down_0_stage.blocks_0.attn.qkv': no '/', which checkpoint paths use):
{path: {'a': [d_in, r], 'b': [r, d_out]}}, `b` zero at initialization (Hu et al., LoRA,
2021: ΔW = A·B·α/r, starts at 0). `adapted(adapters, scale, gates)` is a context in which
every adapted Dense returns

  x·W + b + scale · ((x·A) ⊙ g)·B

through `flax.linen.intercept_methods`, so `model.apply(variables, ...)` inside it runs
the adapted model (and gradients reach the adapters).

MoR (He, Tu, Cheng et al., "Mixture of Ranks with Degradation-Aware Routing for One-Step
Real-World Image Super-Resolution", AAAI 2026, arXiv 2511.16024; no public code: the
formulas of the paper) treats each rank of A·B as an expert:
`mor_gates` gives per-image gates g = [1 (shared ranks, always on) | top-k of the
router's softmax over the routed ranks and the zero-expert slots, the rest 0]; a zero
expert has no A, B columns, so choosing one costs nothing and adds nothing; and
`load_balance_loss` is the degradation-aware balance N·Σ_i α_i f_i p_i, with α_i scaled by
the degradation severity s for zero experts (a severe image pays more for idling, so it
uses more real ranks).
"""

import contextlib
from typing import Any, Dict, Iterator, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

Adapters = Dict[str, Dict[str, jax.Array]]


def dense_paths(params: Any, names: Sequence[str]) -> Dict[str, Tuple[int, int]]:
  """{path: (d_in, d_out)} of every Dense-like subtree (a 2-D 'kernel') in `params` whose
  own name (layer indices kept) is one of `names`, e.g. ('qkv', 'proj', 'fc1', 'fc2')."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [getattr(k, "key", str(k)) for k in path]
    if keys[-1] == "kernel" and len(keys) > 1 and keys[-2] in names and leaf.ndim == 2:
      out[".".join(keys[:-1])] = tuple(leaf.shape)
  if not out:
    raise ValueError(f"names={tuple(names)}: no Dense layer of that name in the parameters")
  return out


def init_adapters(rng: jax.Array, params: Any, names: Sequence[str], rank: int) -> Adapters:
  """Rank-`rank` adapters for the layers `dense_paths(params, names)`: A ~ N(0, 1/d_in)
  (Kaiming-like, as peft's default), B = 0."""
  if rank < 1:
    raise ValueError(f"rank={rank}: expected ≥ 1")
  adapters = {}
  for i, (path, (d_in, d_out)) in enumerate(sorted(dense_paths(params, names).items())):
    a = jax.random.normal(jax.random.fold_in(rng, i), (d_in, rank)) / jnp.sqrt(d_in)
    adapters[path] = {"a": a, "b": jnp.zeros((rank, d_out))}
  return adapters


def _per_row(gates: jax.Array, rows: int) -> jax.Array:
  """Per-image gates [B, r] repeated for `rows` leading rows (B·n: e.g. an image's
  attention windows, which effcomp's models keep image-major)."""
  if rows % gates.shape[0]:
    raise ValueError(f"gates for {gates.shape[0]} images, a layer input of {rows} rows: "
                     "expected a multiple")
  return jnp.repeat(gates, rows // gates.shape[0], axis=0)


@contextlib.contextmanager
def adapted(adapters: Adapters, scale: float = 1.0,
            gates: Union[None, jax.Array, Dict[str, jax.Array]] = None) -> Iterator[None]:
  """Inside: each Dense whose module path is a key of `adapters` adds scale·((x·A)⊙g)·B.
  gates: None (plain LoRA), [images, r] for every layer, or {path: [images, r]} per layer
  (MoR), broadcast over the other axes of x."""
  seen = set()

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, nn.Dense):
      return out
    key = ".".join(module.path)
    if key not in adapters:
      return out
    seen.add(key)
    x = args[0]
    h = x @ adapters[key]["a"].astype(x.dtype)
    if gates is not None:
      g = _per_row(gates[key] if isinstance(gates, dict) else gates, x.shape[0])
      h = h * g.reshape(g.shape[:1] + (1,) * (h.ndim - 2) + g.shape[1:]).astype(h.dtype)
    return out + (scale * (h @ adapters[key]["b"].astype(x.dtype))).astype(out.dtype)

  with nn.intercept_methods(interceptor):
    yield
  if not seen and adapters:
    raise ValueError(f"adapters for {sorted(adapters)[:3]}…: no such Dense layer ran")


def mor_gates(router_logits: jax.Array, num_shared: int, num_routed: int, top_k: int
              ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """(gates [B, num_shared + num_routed], info) from router logits [B, num_routed + zeros].

  The router's softmax covers the routed ranks and the zero-expert slots (the last
  columns); the top_k entries keep their probability, the rest are 0; zero experts have
  no rank, so only routed ranks get a gate. info: 'probs' [B, E], 'chosen' [B, E] (0/1),
  'active' [B] (shared + routed ranks with a nonzero gate)."""
  b, experts = router_logits.shape
  if not 0 < top_k <= experts or experts < num_routed:
    raise ValueError(f"top_k={top_k}, router logits for {experts} experts, "
                     f"num_routed={num_routed}: expected 0 < top_k ≤ experts ≥ num_routed")
  probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
  _, index = jax.lax.top_k(probs, top_k)
  chosen = jnp.sum(jax.nn.one_hot(index, experts), axis=1)
  routed = (probs * chosen)[:, :num_routed]
  gates = jnp.concatenate([jnp.ones((b, num_shared)), routed], axis=-1)
  active = num_shared + jnp.sum(chosen[:, :num_routed], axis=-1)
  return gates, {"probs": probs, "chosen": chosen, "active": active}


def load_balance_loss(probs: jax.Array, chosen: jax.Array, num_routed: int, severity: jax.Array,
                      alpha: float = 1.0) -> jax.Array:
  """N·Σ_i α_i f_i p_i over the router's N experts (routed, then zero slots): f_i the
  fraction of top-k choices that went to i, p_i its mean probability (Switch / DeepSeek
  form); α_i = alpha for routed ranks and alpha·s for zero experts, s ≥ 0 the degradation
  severity (MoR's s): a scalar, or one per image [B], in which case each image's
  probabilities carry its own weight (p_i·α_i → mean_b α_{b,i} p_{b,i})."""
  n = probs.shape[-1]
  f = jnp.sum(chosen, axis=0) / jnp.sum(chosen)
  severity = jnp.broadcast_to(jnp.asarray(severity, probs.dtype), probs.shape[:1])
  weight = jnp.where(jnp.arange(n) < num_routed, alpha, alpha * severity[:, None])
  return n * jnp.sum(f * jnp.mean(weight * probs, axis=0))
