"""Structured pruning of the LLaMA decoder: whole heads and MLP channels, physically removed.

    model2, params2, report = prune_structured(model, params, calib, "taylor",
                                               heads_ratio=0.25, mlp_ratio=0.25)

`model2` is a smaller `Llama` (per-layer `layer_heads`, `layer_mlp`, `layer_head_ids`) and
`params2` runs it. The coupled groups are LLM-Pruner's block-wise ones (Ma et al. 2023,
horseee/LLM-Pruner `hf_prune.py --block_wise`: roots q_proj with `consecutive_groups =
head_dim`, and gate_proj): a head is its q/k/v output columns and its o input rows; an MLP
channel is its gate/up output columns and its down input row. With GQA a group is one kv
head with its num_heads/num_kv_heads query heads (q, k, v, o, and retention's gate g), so
the ratio stays. In each layer ⌊ratio·n⌋ of its n groups with the lowest score go
(FLAP's `thresh = sort(metric)[int(ratio·n)]`); `options={'global': True}` instead ranks
each kind over all layers, as LLM-Pruner's `--global_pruning`, and fails if a layer would
lose every group.

Scores (`SCORES`):
  * `wanda_sp`: Wanda's |W|·‖X‖ summed over a group, Wanda-sp as in FLAP
    (CASIA-IVA-Lab/FLAP `lib/prune.py:prune_wanda_sp`): on the layers reading the group,
    o and down, `W_metric = (|W| · sqrt(scaler_row)).mean(over outputs)` per input
    channel, summed over a head's head_dim channels (and here over a kv group's heads).
    Block by block: block i is scored on the output of the already pruned blocks < i (the
    reference's pass; `sequential.linear_inputs`, `wanda.update` give ‖X_j‖²/N). With
    `global`, every block is scored on the dense model first (FLAP's `prune_flap`).
  * `taylor`: LLM-Pruner's first-order Taylor importance (paper Eq. 4–5,
    `LLMPruner/pruner/hf_llama_pruner.py:TaylorImportance`) from ∂L/∂W, L the next-token
    loss on the calibration batches (`labels=input_ids`): with s = W ⊙ ∂L/∂W,
    'param_first' (the official default `--taylor param_first`) sums |s| over every
    weight of the group (`salience.abs().sum(1)`, then the group's `sum` reduction);
    'vectorize' sums |Σ s| over each weight vector (`salience.sum(1).abs()`)
    (`options={'taylor': ...}`). One gradient of the dense model, `iterative_steps=1`.

Deviations: no norms or embeddings are pruned (the block-wise setting); the Taylor loss is
the mean over all calibration batches (the reference's one batch of prompts); Wanda-sp
counts ‖X‖² over tokens (`wanda.py`); ties are broken by index. FLAP's bias compensation
and its fluctuation metric are not implemented. Binarized models are refused (their
scales are not sliced). The choice is a `Selection`; `structured_mask` gives the dense
parameters with the removed groups zeroed (o rows, down rows): the same function.
"""

import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from effcomp.models.lm import llama as llama_lib
from effcomp.prune import wanda
from effcomp.quant.ptq import blocks as blocks_lib
from effcomp.quant.ptq import sequential

SCORES = ("wanda_sp", "taylor")
TAYLOR = ("param_first", "vectorize")
_OPTIONS = ("global", "taylor")


class Selection(NamedTuple):
  """What stays, per layer (indices within the layer as it stands, ascending).

  Attributes:
    heads: per layer, kept query heads [H'] (whole kv groups).
    channels: per layer, kept MLP channels [F'].
  """
  heads: Tuple[np.ndarray, ...]
  channels: Tuple[np.ndarray, ...]


def _check(model: llama_lib.Llama, score: str, heads_ratio: float, mlp_ratio: float,
           options: Dict[str, Any], calib) -> None:
  if score not in SCORES:
    raise ValueError(f"score={score!r}: expected one of {SCORES}")
  for name, ratio in (("heads_ratio", heads_ratio), ("mlp_ratio", mlp_ratio)):
    if not 0.0 <= ratio < 1.0:
      raise ValueError(f"{name}={ratio}: expected a fraction in [0, 1)")
  unknown = sorted(set(options) - set(_OPTIONS))
  if unknown:
    raise ValueError(f"options={options!r}: {unknown} not understood (expected some of "
                     f"{_OPTIONS})")
  if options.get("taylor", "param_first") not in TAYLOR:
    raise ValueError(f"options['taylor']={options['taylor']!r}: expected one of {TAYLOR}")
  if not calib:
    raise ValueError(f"calib is empty: {score!r} needs calibration batches")
  if model.binarizer != "none":
    raise ValueError(f"binarizer={model.binarizer!r}: structured pruning needs float weights")


def _group_size(model: llama_lib.Llama) -> int:
  return model.num_heads // model.kv_heads


def head_columns(model: llama_lib.Llama, heads: np.ndarray) -> np.ndarray:
  """The columns [len(heads)·head_dim] of a [.., H·head_dim] projection holding `heads`."""
  d = model.dims_per_head
  return (np.asarray(heads)[:, None] * d + np.arange(d)[None]).reshape(-1)


def wanda_sp_scores(o_kernel: jax.Array, o_sq_norm: jax.Array, down_kernel: jax.Array,
                    down_sq_norm: jax.Array, group_size: int, head_dim: int
                    ) -> Tuple[jax.Array, jax.Array]:
  """Wanda-sp's group scores (FLAP `prune_wanda_sp`) of one layer.

  Args:
    o_kernel: [H·d, E]; o_sq_norm: [H·d], ‖X_j‖²/N of o's inputs (`wanda.update`).
    down_kernel: [F, E]; down_sq_norm: [F], of down's inputs.
    group_size: query heads per kv head; head_dim: d.

  Returns:
    ([KV] Σ over a kv group's rows j of mean_e |W_je|·‖X_j‖, [F] the same per channel).
  """
  per_row = lambda w, sq: jnp.mean(wanda.wanda_score(w, sq), axis=1)
  return (per_row(o_kernel, o_sq_norm).reshape(-1, group_size * head_dim).sum(axis=1),
          per_row(down_kernel, down_sq_norm))


def lm_loss(model: llama_lib.Llama, params, tokens: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy of `tokens` [N, T] (HF's `labels=input_ids`)."""
  logits = model.apply({"params": params}, tokens)[:, :-1]
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def taylor_scores(model: llama_lib.Llama, params, calib: Sequence[Any], mode: str = "param_first"
                  ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
  """LLM-Pruner's first-order importance of every layer's kv groups and MLP channels.

  s = W ⊙ ∂L/∂W with L the mean of `lm_loss` over `calib` ([N, T] token batches); a
  group's score sums, over its weight vectors (q/k/v/g output columns, o input rows; gate/
  up columns, down rows), Σ|s| ('param_first') or |Σ s| ('vectorize').

  Returns: ([KV_l] per layer, [F_l] per layer), float32 NumPy.
  """
  grad_fn = jax.jit(jax.grad(lambda p, t: lm_loss(model, p, t)))
  grads = None
  for tokens in calib:
    g = grad_fn(params, jnp.asarray(tokens))
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
  grads = jax.tree.map(lambda g: g / len(calib), grads)
  reduce = ((lambda s, axis: jnp.abs(s).sum(axis)) if mode == "param_first"
            else (lambda s, axis: jnp.abs(s.sum(axis))))
  heads, channels = [], []
  for i in range(model.num_layers):
    sal = lambda path: (blocks_lib.get_path(params, f"layers_{i}/{path}/kernel")
                        * blocks_lib.get_path(grads, f"layers_{i}/{path}/kernel"))
    kv = model.kv_heads_of(i)
    per_group = lambda v: v.reshape(kv, -1).sum(axis=1)
    names = ("q", "k", "v", "g") if model.attention == "retention" else ("q", "k", "v")
    head = sum(per_group(reduce(sal(f"attn/{n}"), 0)) for n in names)
    heads.append(np.asarray(head + per_group(reduce(sal("attn/o"), 1))))
    channels.append(np.asarray(reduce(sal("mlp/gate"), 0) + reduce(sal("mlp/up"), 0)
                               + reduce(sal("mlp/down"), 1)))
  return heads, channels


def _keep(scores: np.ndarray, ratio: float) -> np.ndarray:
  """Indices (ascending) of all but the ⌊ratio·n⌋ lowest scores; ties go by index."""
  n = scores.shape[0]
  order = np.argsort(np.asarray(scores), kind="stable")
  return np.sort(order[int(ratio * n):])


def _keep_global(scores: Sequence[np.ndarray], ratio: float, what: str) -> List[np.ndarray]:
  """`_keep` over all layers' scores at once; every layer keeps at least one group."""
  flat = np.concatenate([np.asarray(s) for s in scores])
  kept = np.zeros(flat.shape[0], bool)
  kept[_keep(flat, ratio)] = True
  out, start = [], 0
  for i, s in enumerate(scores):
    keep = np.flatnonzero(kept[start:start + s.shape[0]])
    if keep.size == 0:
      raise ValueError(f"global pruning removes every {what} of layer {i}: lower the ratio")
    out.append(keep)
    start += s.shape[0]
  return out


def _heads_of_groups(model: llama_lib.Llama, groups: np.ndarray) -> np.ndarray:
  g = _group_size(model)
  return (np.asarray(groups)[:, None] * g + np.arange(g)[None]).reshape(-1)


def _mask_layer(model: llama_lib.Llama, params, i: int, heads: np.ndarray,
                channels: np.ndarray):
  """`params` with layer i's o rows of the heads not in `heads` and down rows of the
  channels not in `channels` zeroed."""
  for path, rows in ((f"layers_{i}/attn/o/kernel", head_columns(model, heads)),
                     (f"layers_{i}/mlp/down/kernel", np.asarray(channels))):
    w = blocks_lib.get_path(params, path)
    keep = np.zeros(w.shape[0], bool)
    keep[rows] = True
    params = blocks_lib.set_path(params, path, jnp.where(keep[:, None], w, 0).astype(w.dtype))
  return params


def structured_mask(model: llama_lib.Llama, params, selection: Selection):
  """The dense `params` with the removed heads' o rows and channels' down rows zeroed:
  the same function as `slice_params`' smaller model."""
  for i in range(model.num_layers):
    params = _mask_layer(model, params, i, selection.heads[i], selection.channels[i])
  return params


def slice_params(model: llama_lib.Llama, params, selection: Selection
                 ) -> Tuple[llama_lib.Llama, Any]:
  """The smaller `Llama` keeping `selection`, and its parameters (sliced kernels/biases)."""
  g = _group_size(model)
  layer_heads, layer_mlp, layer_ids = [], [], []
  for i in range(model.num_layers):
    heads, ch = np.asarray(selection.heads[i]), np.asarray(selection.channels[i])
    rows = heads.reshape(-1, g) if heads.size % g == 0 else None
    if rows is None or not (rows == rows[:, :1] // g * g + np.arange(g)).all():
      raise ValueError(f"selection.heads[{i}]={heads}: expected whole kv groups of {g} heads")
    if heads.size == 0 or ch.size == 0:
      raise ValueError(f"selection of layer {i} keeps {heads.size} heads, {ch.size} MLP "
                       "channels: expected at least one of each")
    q_cols = head_columns(model, heads)
    kv_cols = head_columns(model, heads[::g] // g)
    cols = {"q": q_cols, "g": q_cols, "k": kv_cols, "v": kv_cols}
    p = f"layers_{i}"
    for name, c in cols.items():
      for leaf in ("kernel", "bias"):
        path = f"{p}/attn/{name}/{leaf}"
        if leaf in blocks_lib.get_path(params, f"{p}/attn").get(name, {}):
          w = blocks_lib.get_path(params, path)
          params = blocks_lib.set_path(params, path, w[..., c])
    o = blocks_lib.get_path(params, f"{p}/attn/o/kernel")
    params = blocks_lib.set_path(params, f"{p}/attn/o/kernel", o[q_cols])
    for name in ("gate", "up"):
      w = blocks_lib.get_path(params, f"{p}/mlp/{name}/kernel")
      params = blocks_lib.set_path(params, f"{p}/mlp/{name}/kernel", w[:, ch])
    down = blocks_lib.get_path(params, f"{p}/mlp/down/kernel")
    params = blocks_lib.set_path(params, f"{p}/mlp/down/kernel", down[ch])
    ids = model.head_ids_of(i) or tuple(range(model.heads_of(i)))
    layer_heads.append(int(heads.size))
    layer_mlp.append(int(ch.size))
    layer_ids.append(tuple(int(ids[h]) for h in heads))
  new = model.clone(layer_heads=tuple(layer_heads), layer_mlp=tuple(layer_mlp),
                    layer_head_ids=tuple(layer_ids))
  return new, params


def select(model: llama_lib.Llama, params, calib: Sequence[Any], score: str = "wanda_sp",
           heads_ratio: float = 0.25, mlp_ratio: float = 0.25,
           options: Optional[Dict[str, Any]] = None) -> Selection:
  """Scores every layer's kv groups and MLP channels and chooses what stays (module
  docstring; arguments as `prune_structured`)."""
  options = dict(options or {})
  _check(model, score, heads_ratio, mlp_ratio, options, calib)
  params = nn.unbox(params)
  if score == "wanda_sp":
    bm = blocks_lib.for_llama(model)
    hs = [bm.embed(params, b) for b in calib]
    head_scores, channel_scores, kept_heads, kept_channels = [], [], [], []
    for i in range(model.num_layers):
      inputs = sequential.linear_inputs(bm, i, params, hs, calib, None)
      o, down = (f"layers_{i}/attn/o/kernel", f"layers_{i}/mlp/down/kernel")
      sq = {path: wanda.accumulate(inputs[path]).sq_norm for path in (o, down)}
      hsc, csc = wanda_sp_scores(blocks_lib.get_path(params, o), sq[o],
                                 blocks_lib.get_path(params, down), sq[down],
                                 _group_size(model), model.dims_per_head)
      head_scores.append(np.asarray(hsc))
      channel_scores.append(np.asarray(csc))
      if not options.get("global", False):  # prune block i before scoring block i + 1
        kept_heads.append(_heads_of_groups(model, _keep(head_scores[-1], heads_ratio)))
        kept_channels.append(_keep(channel_scores[-1], mlp_ratio))
        params = _mask_layer(model, params, i, kept_heads[-1], kept_channels[-1])
      hs = sequential.block_outputs(bm, i, params, hs, calib, None)
    if kept_heads:
      return Selection(tuple(kept_heads), tuple(kept_channels))
  else:
    head_scores, channel_scores = taylor_scores(model, params, calib,
                                                options.get("taylor", "param_first"))
  if options.get("global", False):
    groups = _keep_global(head_scores, heads_ratio, "kv group")
    channels = _keep_global(channel_scores, mlp_ratio, "MLP channel")
  else:
    groups = [_keep(s, heads_ratio) for s in head_scores]
    channels = [_keep(s, mlp_ratio) for s in channel_scores]
  return Selection(tuple(_heads_of_groups(model, k) for k in groups), tuple(channels))


def prune_structured(model: llama_lib.Llama, params, calib: Sequence[Any],
                     score: str = "wanda_sp", heads_ratio: float = 0.25, mlp_ratio: float = 0.25,
                     options: Optional[Dict[str, Any]] = None
                     ) -> Tuple[llama_lib.Llama, Any, Dict[str, Any]]:
  """Removes the lowest-scoring kv groups and MLP channels of every layer.

  Args:
    model: a `Llama` (softmax or retention attention; possibly already pruned).
    params: its parameters (unboxed or boxed).
    calib: calibration token batches [N, T].
    score: one of `SCORES`.
    heads_ratio, mlp_ratio: fraction of each layer's kv groups / MLP channels removed,
      in [0, 1) (⌊ratio·n⌋ of n).
    options: {'global': bool (rank over all layers), 'taylor': one of `TAYLOR`}.

  Returns:
    (smaller model, its params, report) with report {'score', 'heads_ratio', 'mlp_ratio',
    'heads' / 'kv_heads' / 'mlp' (kept per layer), 'params_before', 'params_after',
    'seconds', 'selection'}.
  """
  start = time.perf_counter()
  params = nn.unbox(params)
  selection = select(model, params, calib, score, heads_ratio, mlp_ratio, options)
  new_model, new_params = slice_params(model, params, selection)
  jax.block_until_ready(new_params)
  report = {"score": score, "heads_ratio": heads_ratio, "mlp_ratio": mlp_ratio,
            "heads": new_model.layer_heads, "mlp": new_model.layer_mlp,
            "kv_heads": tuple(new_model.kv_heads_of(i) for i in range(model.num_layers)),
            "params_before": llama_lib.num_params(params),
            "params_after": llama_lib.num_params(new_params),
            "seconds": time.perf_counter() - start, "selection": selection}
  return new_model, new_params, report
