"""A LLaMA-style decoder-only language model (LLaMA 1–3, Mistral, Qwen2 architecture).

Pre-norm blocks `x + Attn(RMSNorm(x))`, `x + SwiGLU(RMSNorm(x))`, rotary position
embeddings (RoPE), grouped-query attention (`num_kv_heads` ≤ `num_heads`), optional
q/k/v biases (Qwen2), tied or untied input/output embeddings.

Follows `transformers`' `models/llama/modeling_llama.py` numerically, so Hugging Face
checkpoints load without permuting weights (`effcomp.models.lm.hf`):
  * RMSNorm: `w · x / sqrt(mean(x²) + eps)`, computed in float32 (`LlamaRMSNorm`).
  * RoPE in the "rotate half" layout: the rotated pairs are (i, i + head_dim/2), with
    `inv_freq = theta^(-2i/head_dim)` (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`).
  * SwiGLU: `down(silu(gate(x)) · up(x))` (`LlamaMLP`).
  * Attention: softmax(q·kᵀ/√head_dim + causal mask) in float32; each group of
    `num_heads / num_kv_heads` query heads shares one key/value head (`repeat_kv`).

Every weight carries logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`, `norm`)
so the foundation trainer shards it on any (data, fsdp, tensor) mesh. Projections are
2-D kernels `[in, out]` (HF's `nn.Linear` weight transposed), the layout the
post-training quantizers and binarizers work on.

Incremental decoding: `init_cache(batch, max_len)` gives an empty key/value cache;
`apply(params, tokens, cache=cache)` returns `(logits, cache)` with the new tokens'
keys/values written at positions `cache['index'] …` (see `generate.py`).

`attention='retention'` swaps softmax attention for RetNet's multi-scale retention
(`Retention`, math in `effcomp.nn.retention`): parallel form without a cache, recurrent
form with one, whose cache is then a fixed-size state per layer. Hidden states
after each block are sown into the 'intermediates' collection (`hidden`) for
feature distillation.
"""

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.lm.multiscale_retention import Retention
from effcomp.models.lm.projection import INIT_STD, linear, project
from effcomp.models.lm.rope import apply_rope, rope_angles, rope_angles_2d
from effcomp.nn import retention
from effcomp.nn.dropout import Dropout
from effcomp.quant.binary_linear import BinarizeSpec
from effcomp.registry import MODELS

# {'index': int32 [], 'layers': ({'k': [B,S,KV,D], 'v': …}, …)}; with retention, each layer
# is {'kv': [B,H,D,D], 'scale': [H]} (`effcomp.nn.retention.State`).
Cache = Dict[str, Any]
ATTENTIONS = ("softmax", "retention")


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """`scale · x / sqrt(mean(x²) + eps)`, in float32, returned in `x.dtype`."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (scale.astype(jnp.float32) * x32).astype(x.dtype)


class RMSNorm(nn.Module):
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (x.shape[-1],), jnp.float32)
    return rms_norm(x, scale, self.eps)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, q_positions: jax.Array,
                     k_positions: jax.Array) -> jax.Array:
  """Grouped-query causal attention.

  Args:
    q: [B, T, H, D]; k, v: [B, S, KV, D] with H a multiple of KV.
    q_positions: [B, T] sequence indices of the queries; k_positions: [S] of the keys.
      Query t sees key s iff k_positions[s] ≤ q_positions[t] (cache slots not yet
      written have indices beyond every query and stay invisible).

  Returns:
    [B, T, H, D] in q's dtype; scores and softmax in float32.
  """
  b, t, h, d = q.shape
  kv = k.shape[2]
  if h % kv:
    raise ValueError(f"num_heads={h} is not a multiple of num_kv_heads={kv}")
  q = q.reshape(b, t, kv, h // kv, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
  scores = scores / jnp.sqrt(jnp.float32(d))
  visible = k_positions[None, None, None, None, :] <= q_positions[:, None, None, :, None]
  scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", weights, v)
  return out.reshape(b, t, h, d)


class Attention(nn.Module):
  """Multi-head (grouped-query) self-attention with RoPE and an optional KV cache."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  qkv_bias: bool = False
  dtype: Any = jnp.float32
  binarize: Optional[BinarizeSpec] = None
  rope_2d: bool = False

  @nn.compact
  def __call__(self, x, positions, cache: Optional[Dict[str, jax.Array]] = None,
               index: Optional[jax.Array] = None, progress: Optional[jax.Array] = None):
    """`positions`: [B, T] RoPE positions ([B, T, 2] rows and columns with `rope_2d`);
    causality follows the sequence order (from `index` with a cache)."""
    b, t, embed = x.shape
    h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
    proj = lambda y, n, axes, bias, name: project(y, n, axes, bias, self.dtype, name,
                                                  self.binarize, progress)
    q = proj(x, h * d, ("embed", "heads"), self.qkv_bias, "q").reshape(b, t, h, d)
    k = proj(x, kv * d, ("embed", "kv"), self.qkv_bias, "k").reshape(b, t, kv, d)
    v = proj(x, kv * d, ("embed", "kv"), self.qkv_bias, "v").reshape(b, t, kv, d)
    cos, sin = (rope_angles_2d if self.rope_2d else rope_angles)(positions, d, self.rope_theta)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q_positions = jnp.broadcast_to(jnp.arange(t) + (0 if index is None else index), (b, t))
    if cache is None:
      k_positions = jnp.arange(t)
    else:
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, index, 0, 0))
      cache = {"k": k, "v": v}
      k_positions = jnp.arange(k.shape[1])
      k, v = k.astype(self.dtype), v.astype(self.dtype)
    out = causal_attention(q, k, v, q_positions, k_positions).reshape(b, t, h * d)
    return proj(out, embed, ("heads", "embed"), False, "o"), cache


class SwiGLU(nn.Module):
  mlp_dim: int
  dtype: Any = jnp.float32
  binarize: Optional[BinarizeSpec] = None

  @nn.compact
  def __call__(self, x, progress: Optional[jax.Array] = None):
    proj = lambda y, n, axes, name: project(y, n, axes, False, self.dtype, name, self.binarize,
                                            progress)
    gate = proj(x, self.mlp_dim, ("embed", "mlp"), "gate")
    up = proj(x, self.mlp_dim, ("embed", "mlp"), "up")
    return proj(nn.silu(gate) * up, x.shape[-1], ("mlp", "embed"), "down")


class Block(nn.Module):
  """x + Attention(RMSNorm(x)); x + SwiGLU(RMSNorm(x))."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_theta: float
  norm_eps: float
  qkv_bias: bool = False
  dtype: Any = jnp.float32
  binarize: Optional[BinarizeSpec] = None
  rope_2d: bool = False
  dropout: float = 0.0
  attention: str = "softmax"
  head_ids: Tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x, positions, cache=None, index=None, progress=None, deterministic=True):
    if self.attention == "retention":
      attn = Retention(self.num_heads, self.num_kv_heads, self.head_dim, self.rope_theta,
                       self.qkv_bias, self.dtype, self.binarize, self.rope_2d, self.norm_eps,
                       self.head_ids, name="attn")
    else:
      attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.rope_theta,
                       self.qkv_bias, self.dtype, self.binarize, self.rope_2d, name="attn")
    y, cache = attn(RMSNorm(self.norm_eps, name="attn_norm")(x), positions, cache, index, progress)
    drop = Dropout(self.dropout, deterministic=deterministic)
    x = x + drop(y)
    mlp = SwiGLU(self.mlp_dim, self.dtype, self.binarize, name="mlp")
    x = x + drop(mlp(RMSNorm(self.norm_eps, name="mlp_norm")(x), progress))
    return x, cache


@MODELS.register("llama")
class Llama(nn.Module):
  """LLaMA-style decoder LM: tokens [B, T] int → logits [B, T, vocab_size] float32.

  Attributes:
    vocab_size: rows of the embedding table (≥ the tokenizer's vocabulary).
    num_layers, embed_dim, num_heads: depth, width, query heads.
    num_kv_heads: key/value heads (grouped-query attention); 0 = num_heads.
    head_dim: per-head width; 0 = embed_dim // num_heads.
    mlp_dim: SwiGLU hidden width; 0 = LLaMA's rule, 8/3·embed_dim rounded up to 64.
    rope_theta, norm_eps: RoPE base, RMSNorm epsilon.
    tie_embeddings: output projection = embedding matrixᵀ (no separate lm_head).
    qkv_bias: biases on q/k/v (Qwen2).
    remat: recompute each block in the backward pass (activation memory of one block).
    dtype: compute dtype; parameters stay float32.
    binarizer: 1-bit weights for q/k/v/o and the MLP ('none' | 'bitnet' | 'xnor' |
      'progressive', `effcomp.quant.progressive`); embeddings, LM head and norms stay
      full precision.
    binarizer_phases: phases of the progressive schedule (tanh phases, then sign).
    dual_scaling: progressive binarizer with input- and output-channel scales.
    rope_2d: 2-D RoPE over (row, column) positions of an image-token grid (LlamaGen;
      `rope_angles_2d`); the caller passes `positions` [B, T, 2].
    dropout: on each block's attention and MLP outputs (LlamaGen's resid_dropout_p and
      ffn_dropout_p); token_dropout: on the token embeddings (its token_dropout_p). Active
      only in calls with `deterministic=False` and a 'dropout' RNG.
    attention: 'softmax' | 'retention' (RetNet multi-scale retention, `Retention`: adds a
      gate projection `g` per block; the cache becomes a fixed-size recurrent state).
    layer_heads: query heads of each layer (structured pruning, `effcomp.prune.structured`);
      () = num_heads everywhere. Layer l has layer_heads[l] / g key/value heads, g =
      num_heads / kv_heads the GQA group size, so each must be a multiple of g: pruning
      removes whole kv groups and keeps the ratio. head_dim stays that of the full model.
    layer_mlp: SwiGLU hidden width of each layer; () = hidden_dim everywhere.
    layer_head_ids: each layer's heads' indices in the unpruned model; () = 0 … H_l − 1.
      Retention's decay γ_h depends on the head index, so a kept head keeps its own γ.
  """
  vocab_size: int = 4096
  num_layers: int = 4
  embed_dim: int = 256
  num_heads: int = 4
  num_kv_heads: int = 0
  head_dim: int = 0
  mlp_dim: int = 0
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  qkv_bias: bool = False
  remat: bool = False
  dtype: str = "float32"
  binarizer: str = "none"
  binarizer_phases: int = 20
  dual_scaling: bool = True
  rope_2d: bool = False
  dropout: float = 0.0
  token_dropout: float = 0.0
  attention: str = "softmax"
  layer_heads: Tuple[int, ...] = ()
  layer_mlp: Tuple[int, ...] = ()
  layer_head_ids: Tuple[Tuple[int, ...], ...] = ()

  def _check_fields(self):
    """Raises ValueError on an unknown `attention` or inconsistent per-layer widths."""
    if self.attention not in ATTENTIONS:
      raise ValueError(f"attention={self.attention!r}: expected one of "
                       f"{', '.join(map(repr, ATTENTIONS))}")
    group = self.num_heads // self.kv_heads
    for name in ("layer_heads", "layer_mlp", "layer_head_ids"):
      if getattr(self, name) and len(getattr(self, name)) != self.num_layers:
        raise ValueError(f"{name} has {len(getattr(self, name))} entries: expected one per "
                         f"layer ({self.num_layers})")
    for i in range(self.num_layers):
      h, ids = self.heads_of(i), self.head_ids_of(i)
      if h < 1 or h % group or self.mlp_of(i) < 1:
        raise ValueError(f"layer {i}: {h} heads, mlp width {self.mlp_of(i)}: expected ≥ 1 "
                         f"heads, a multiple of the GQA group size {group}, and mlp ≥ 1")
      if ids and len(ids) != h:
        raise ValueError(f"layer_head_ids[{i}] has {len(ids)} entries: expected {h}")

  def heads_of(self, i: int) -> int:
    """Query heads of layer i."""
    return self.layer_heads[i] if self.layer_heads else self.num_heads

  def kv_heads_of(self, i: int) -> int:
    """Key/value heads of layer i: its query heads / the GQA group size."""
    return self.heads_of(i) // (self.num_heads // self.kv_heads)

  def mlp_of(self, i: int) -> int:
    """SwiGLU hidden width of layer i."""
    return self.layer_mlp[i] if self.layer_mlp else self.hidden_dim

  def head_ids_of(self, i: int) -> Tuple[int, ...]:
    """Original indices of layer i's heads; () when unpruned."""
    return tuple(self.layer_head_ids[i]) if self.layer_head_ids else ()

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def dims_per_head(self) -> int:
    return self.head_dim or self.embed_dim // self.num_heads

  @property
  def hidden_dim(self) -> int:
    return self.mlp_dim or -(-(8 * self.embed_dim // 3) // 64) * 64

  @property
  def binarize(self) -> Optional[BinarizeSpec]:
    if self.binarizer == "none":
      return None
    return BinarizeSpec(self.binarizer, self.binarizer_phases, self.dual_scaling)

  def init_cache(self, batch_size: int, max_len: int, dtype=jnp.float32) -> Cache:
    """An empty cache for `batch_size` sequences of up to `max_len` tokens (retention:
    a float32 state of fixed size whatever `max_len` and `dtype`)."""
    self._check_fields()
    d = self.dims_per_head
    if self.attention == "retention":
      layer = lambda i: retention.init_state(batch_size, self.heads_of(i), d, d)
    else:
      shape = lambda i: (batch_size, max_len, self.kv_heads_of(i), d)
      layer = lambda i: {"k": jnp.zeros(shape(i), dtype), "v": jnp.zeros(shape(i), dtype)}
    return {"index": jnp.zeros((), jnp.int32),
            "layers": tuple(layer(i) for i in range(self.num_layers))}

  @nn.compact
  def __call__(self, tokens: jax.Array, positions: Optional[jax.Array] = None,
               cache: Optional[Cache] = None, progress: Optional[jax.Array] = None,
               deterministic: bool = True):
    """Logits [B, T, vocab] (float32); with `cache`, `(logits, updated cache)`.

    Args:
      tokens: [B, T] token ids.
      positions: [B, T] positions; default `arange(T)` (plus `cache['index']`); with
        `rope_2d`, [B, T, 2] (row, column), required.
      cache: from `init_cache`; the tokens are written at `cache['index']` onwards.
      progress: with a `binarizer`, the position ∈ [0, 1] in its training schedule;
        None means the final 1-bit weights.
      deterministic: False applies `dropout` / `token_dropout` (training).
    """
    self._check_fields()
    if self.embed_dim % self.num_heads and not self.head_dim:
      raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads="
                       f"{self.num_heads}; set head_dim")
    b, t = tokens.shape
    index = None if cache is None else cache["index"]
    if positions is None and self.rope_2d:
      raise ValueError("rope_2d=True: pass positions [batch, tokens, 2] (row, column)")
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t)[None] + (0 if index is None else index), (b, t))
    embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="embed",
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(INIT_STD), ("vocab", "embed")))
    x = Dropout(self.token_dropout, deterministic=deterministic)(embed(tokens))
    block_cls = nn.remat(Block, static_argnums=(6,)) if self.remat else Block
    new_layers = []
    for i in range(self.num_layers):
      block = layer_block(self, i, block_cls, name=f"layers_{i}")
      x, layer_cache = block(x, positions, None if cache is None else cache["layers"][i], index,
                             progress, deterministic)
      new_layers.append(layer_cache)
      self.sow("intermediates", "hidden", x)
    x = RMSNorm(self.norm_eps, name="final_norm")(x)
    if self.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = linear(self.vocab_size, ("embed", "vocab"), False, self.dtype, "lm_head")(x)
    logits = logits.astype(jnp.float32)
    if cache is None:
      return logits
    return logits, {"index": index + t, "layers": tuple(new_layers)}


def layer_block(model: Llama, i: int, block_cls=Block, **kwargs) -> Block:
  """Layer i of `model` as a `Block` with that layer's own widths (`kwargs`: e.g. name); a
  plain function so that it also builds a standalone block outside `Llama.__call__`."""
  return block_cls(model.heads_of(i), model.kv_heads_of(i), model.dims_per_head,
                   model.mlp_of(i), model.rope_theta, model.norm_eps, model.qkv_bias,
                   model.dtype, model.binarize, model.rope_2d, model.dropout, model.attention,
                   model.head_ids_of(i), **kwargs)


def num_params(params) -> int:
  """Number of scalars in a (possibly boxed) parameter tree."""
  return sum(x.size for x in jax.tree.leaves(nn.unbox(params)))

