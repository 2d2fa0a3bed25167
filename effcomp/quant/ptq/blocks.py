"""Transformers seen as embed → blocks → head, the unit post-training quantizers work in.

GPTQ, AWQ, SmoothQuant and CBQ all walk a model one block (or one window of blocks) at
a time: they feed calibration hidden states into block i, look at the inputs of its
linear layers, change the block's weights, and pass the block's (quantized) output on to
block i + 1. `BlockModel` gives them that view of an effcomp model without touching its
code:

  * `embed(params, batch) -> h` and `head(params, h, batch) -> output`;
  * `block(i, params, h, batch, act=None, capture=False)` runs block i alone, optionally
    fake-quantizing the input of every linear layer (`act`, a `QuantSpec`) and returning
    those inputs (`capture`) — both through `flax.linen.intercept_methods` on `nn.Dense`,
    so the model code stays as it is;
  * `groups(i)`: block i's linear layers grouped by shared input, each with the
    parameters that produce that input (`producers`: a norm's scale/bias, or the kernel
    whose output columns it reads), into which a per-input-channel scale s can be folded
    (`x / s`, `diag(s)·W`: SmoothQuant, AWQ, CBQ's CFP).

Paths are '/'-joined keys of the full parameter tree ('layers_0/attn/q/kernel').
Adapters: `for_llama` (effcomp's LLaMA-style decoder, HF imports included) and
`for_bert` (the BERT encoder running all-MiniLM-L6-v2).
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.lm import bert as bert_lib
from effcomp.models.lm import llama as llama_lib
from effcomp.quant import fake_quant

Params = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class LinearGroup:
  """Linear layers reading one input, and the parameters that produce that input.

  Attributes:
    kernels: paths of the [in, out] kernels (same `in`).
    producers: paths of parameters whose last axis indexes the shared input's channels
      (norm scale and bias, or a kernel/bias whose output is that input); dividing them
      by s and multiplying the kernels' rows by s leaves the block's function unchanged.
      Empty when no such fold exists (e.g. after a GELU).
  """
  kernels: Tuple[str, ...]
  producers: Tuple[str, ...] = ()


def get_path(params: Params, path: str) -> Any:
  node = params
  for key in path.split("/"):
    node = node[key]
  return node


def set_path(params: Params, path: str, value: Any) -> Params:
  """A copy of `params` (copied along `path` only) with `path` set to `value`."""
  key, _, rest = path.partition("/")
  new = dict(params)
  new[key] = set_path(params[key], rest, value) if rest else value
  return new


def _act_interceptor(act: Optional[fake_quant.QuantSpec], captured: Optional[Dict[str, Any]],
                     skip: Tuple[str, ...]):
  """Fake-quantizes (and/or records) the input of every `nn.Dense` not named in `skip`."""
  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if not isinstance(module, nn.Dense) or context.method_name != "__call__" or module.name in skip:
      return next_fun(*args, **kwargs)
    x = args[0]
    if act is not None and act.enabled:
      x = fake_quant.quantize_activation(x, act)
    if captured is not None:  # what the layer computes with, i.e. after quantization
      captured["/".join(module.path)] = x
    return next_fun(x, *args[1:], **kwargs)
  return interceptor


def apply_with_act_quant(fn: Callable[[], Any], act: Optional[fake_quant.QuantSpec],
                         skip: Tuple[str, ...] = ()) -> Any:
  """Runs `fn()` (a Flax apply) with every linear input fake-quantized per `act`."""
  if act is None or not act.enabled:
    return fn()
  with nn.intercept_methods(_act_interceptor(act, None, skip)):
    return fn()


def _run(apply: Callable[[], Any], act, capture: bool, prefix: str):
  captured = {} if capture else None
  if act is None and not capture:
    return apply(), None
  with nn.intercept_methods(_act_interceptor(act, captured, ())):
    out = apply()
  if capture:
    captured = {f"{prefix}/{k}/kernel": v for k, v in captured.items()}
  return out, captured


@dataclasses.dataclass(frozen=True)
class BlockModel:
  """A model as embed → blocks → head (see the module docstring).

  Attributes:
    num_blocks: number of blocks.
    prefix: block i's params live under `prefix(i)` ('layers_3').
    embed: `(params, batch) -> h` [N, T, E].
    block_fn: `(i, block_params, h, batch) -> h'` (a Flax apply of block i alone).
    head: `(params, h, batch) -> output` (logits, or sentence embeddings).
    groups: `i -> Tuple[LinearGroup, ...]`, in the order the block computes them.
    skip_act: names of Dense layers whose inputs stay unquantized (the LM head).
  """
  num_blocks: int
  prefix: Callable[[int], str]
  embed: Callable[[Params, Any], jax.Array]
  block_fn: Callable[[int, Params, jax.Array, Any], jax.Array]
  head: Callable[[Params, jax.Array, Any], jax.Array]
  groups: Callable[[int], Tuple[LinearGroup, ...]]
  skip_act: Tuple[str, ...] = ()

  def block(self, i: int, params: Params, h: jax.Array, batch: Any,
            act: Optional[fake_quant.QuantSpec] = None, capture: bool = False):
    """Block i on h: `h'`, or `(h', {kernel path: its input})` when `capture`."""
    prefix = self.prefix(i)
    out, captured = _run(lambda: self.block_fn(i, params[prefix], h, batch), act, capture, prefix)
    return (out, captured) if capture else out

  def kernels(self, i: int) -> Tuple[str, ...]:
    return tuple(k for g in self.groups(i) for k in g.kernels)


def for_llama(model: llama_lib.Llama) -> BlockModel:
  """Block view of `Llama`; batch = tokens [N, T]. Each block has its layer's own widths
  (`Llama.layer_heads`, `layer_mlp`: a structurally pruned model)."""
  model = model.clone(dropout=0.0, binarizer="none", rope_2d=False)  # as PTQ always saw them
  blocks = [llama_lib.layer_block(model, i) for i in range(model.num_layers)]
  retention = model.attention == "retention"

  def embed(params, tokens):
    return jnp.take(params["embed"]["embedding"], tokens, axis=0).astype(model.dtype)

  def block_fn(i, block_params, h, tokens):
    positions = jnp.broadcast_to(jnp.arange(h.shape[1]), h.shape[:2])
    return blocks[i].apply({"params": block_params}, h, positions)[0]

  def head(params, h, tokens):
    h = llama_lib.rms_norm(h, params["final_norm"]["scale"], model.norm_eps)
    w = params["embed"]["embedding"].T if model.tie_embeddings else params["lm_head"]["kernel"]
    return (h @ w.astype(h.dtype)).astype(jnp.float32)

  def groups(i):
    p = f"layers_{i}"
    qkv = tuple(f"{p}/attn/{n}/kernel" for n in ("qkvg" if retention else "qkv"))
    v_out = (f"{p}/attn/v/kernel",) + ((f"{p}/attn/v/bias",) if model.qkv_bias else ())
    foldable = model.kv_heads == model.num_heads and not retention
    return (
        LinearGroup(qkv, (f"{p}/attn_norm/scale",)),
        # o reads v's heads; a fold into v is exact only when every query head has its own
        # kv head (no GQA sharing) and nothing nonlinear sits between (retention normalizes
        # each head and gates it).
        LinearGroup((f"{p}/attn/o/kernel",), v_out if foldable else ()),
        LinearGroup((f"{p}/mlp/gate/kernel", f"{p}/mlp/up/kernel"), (f"{p}/mlp_norm/scale",)),
        LinearGroup((f"{p}/mlp/down/kernel",), (f"{p}/mlp/up/kernel",)),
    )

  return BlockModel(model.num_layers, lambda i: f"layers_{i}", embed, block_fn, head, groups,
                    skip_act=("lm_head",))


def for_bert(encoder: bert_lib.BertEncoder) -> BlockModel:
  """Block view of `BertEncoder`; batch = (input_ids, attention_mask); head = the mean-pooled,
  normalized sentence embedding."""
  layer = bert_lib.BertLayer(encoder.num_heads, encoder.intermediate_size,
                             encoder.layer_norm_eps, encoder.dtype)

  def embed(params, batch):
    ids, _ = batch
    x = (jnp.take(params["word_embeddings"]["embedding"], ids, axis=0)
         + params["token_type_embeddings"]["embedding"][0]
         + params["position_embeddings"]["embedding"][:ids.shape[1]])
    norm = nn.LayerNorm(epsilon=encoder.layer_norm_eps, use_fast_variance=False)
    return norm.apply({"params": params["embeddings_norm"]}, x)

  def block_fn(i, block_params, h, batch):
    return layer.apply({"params": block_params}, h, jnp.asarray(batch[1]).astype(bool))

  def head(params, h, batch):
    return bert_lib.l2_normalize(bert_lib.mean_pool(h, jnp.asarray(batch[1])))

  def groups(i):
    # Post-LN: each LayerNorm output is also the residual stream, so a scale folded into
    # it would change the block's function; only attention_out (reading value's heads)
    # has an exact fold.
    p = f"layer_{i}"
    return (
        LinearGroup(tuple(f"{p}/{n}/kernel" for n in ("query", "key", "value"))),
        LinearGroup((f"{p}/attention_out/kernel",), (f"{p}/value/kernel", f"{p}/value/bias")),
        LinearGroup((f"{p}/intermediate/kernel",)),
        LinearGroup((f"{p}/output/kernel",)),
    )

  return BlockModel(encoder.num_layers, lambda i: f"layer_{i}", embed, block_fn, head, groups)


def fold_scales(params: Params, group: LinearGroup, s: jax.Array) -> Params:
  """`params` with input channels of `group` rescaled: producers / s, kernels' rows · s.

  The block computes the same function (exactly, up to float rounding); quantizing the
  rescaled kernels then sees the channel magnitudes SmoothQuant/AWQ chose.
  """
  if not group.producers:
    raise ValueError(f"group {group.kernels} has no producer to fold a scale into")
  for path in group.producers:
    params = set_path(params, path, get_path(params, path) / s.astype(get_path(params, path).dtype))
  for path in group.kernels:
    w = get_path(params, path)
    params = set_path(params, path, w * s[:, None].astype(w.dtype))
  return params
