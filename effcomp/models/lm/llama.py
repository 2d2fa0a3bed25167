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
keys/values written at positions `cache['index'] …` (see `generate.py`). Hidden states
after each block are sown into the 'intermediates' collection (`hidden`) for
feature distillation.
"""

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.quant.binary_linear import BinarizeSpec, BinaryLinear
from effcomp.registry import MODELS

Cache = Dict[str, Any]  # {'index': int32 [], 'layers': ({'k': [B,S,KV,D], 'v': …}, …)}
INIT_STD = 0.02  # HF `initializer_range`: normal(0, 0.02) for every weight matrix.


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


def rope_angles(positions: jax.Array, head_dim: int, theta: float) -> Tuple[jax.Array, jax.Array]:
  """cos, sin of shape [..., head_dim] for integer `positions` [...] (rotate-half layout)."""
  if head_dim % 2:
    raise ValueError(f"head_dim={head_dim}: RoPE needs an even head dimension")
  inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def rope_angles_2d(positions: jax.Array, head_dim: int, theta: float
                   ) -> Tuple[jax.Array, jax.Array]:
  """2-D RoPE: cos, sin [..., head_dim] for integer (row, column) `positions` [..., 2].

  LlamaGen's `precompute_freqs_cis_2d` (autoregressive/models/gpt.py): the rotated pairs
  split in two halves, the first turned by the row, the second by the column, each with
  frequencies `theta^(-2i / (head_dim/2))`; here in the rotate-half layout of `rope_angles`
  (pairs (i, i + head_dim/2)) rather than LlamaGen's interleaved pairs, the same rotations
  on a permutation of the head dimensions.
  """
  if head_dim % 4:
    raise ValueError(f"head_dim={head_dim}: 2-D RoPE needs a multiple of 4")
  if positions.shape[-1] != 2:
    raise ValueError(f"positions.shape={positions.shape}: 2-D RoPE expects [..., 2] (row, column)")
  half = head_dim // 2
  inv_freq = 1.0 / theta ** (jnp.arange(0, half, 2, dtype=jnp.float32) / half)
  freqs = jnp.concatenate([positions[..., 0:1].astype(jnp.float32) * inv_freq,
                           positions[..., 1:2].astype(jnp.float32) * inv_freq], axis=-1)
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates `x` [B, T, H, D] by the angles of `cos`/`sin` [B, T, D] (pairs i, i+D/2)."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


def linear(features: int, axes: Tuple[str, str], use_bias: bool, dtype, name: str) -> nn.Dense:
  """A Dense layer with kernel [in, out] named by `axes`, normal(0.02) init, zero bias."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def project(x: jax.Array, features: int, axes: Tuple[str, str], use_bias: bool, dtype, name: str,
            binarize: Optional[BinarizeSpec] = None, progress: Optional[jax.Array] = None
            ) -> jax.Array:
  """`linear(...)(x)`, or the same projection with 1-bit weights when `binarize` is set
  (`BinaryLinear`: same param names and axes, plus its scales); call inside a compact
  method."""
  if binarize is None:
    return linear(features, axes, use_bias, dtype, name)(x)
  return BinaryLinear(features, axes, binarize, use_bias, dtype, name=name,
                      kernel_init=nn.initializers.normal(INIT_STD))(x, progress)


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

  @nn.compact
  def __call__(self, x, positions, cache=None, index=None, progress=None, deterministic=True):
    attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.rope_theta,
                     self.qkv_bias, self.dtype, self.binarize, self.rope_2d, name="attn")
    y, cache = attn(RMSNorm(self.norm_eps, name="attn_norm")(x), positions, cache, index, progress)
    drop = nn.Dropout(self.dropout, deterministic=deterministic)
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
    """An empty cache for `batch_size` sequences of up to `max_len` tokens."""
    shape = (batch_size, max_len, self.kv_heads, self.dims_per_head)
    layer = lambda: {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    return {"index": jnp.zeros((), jnp.int32),
            "layers": tuple(layer() for _ in range(self.num_layers))}

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
    x = nn.Dropout(self.token_dropout, deterministic=deterministic)(embed(tokens))
    block_cls = nn.remat(Block, static_argnums=(6,)) if self.remat else Block
    new_layers = []
    for i in range(self.num_layers):
      block = block_cls(self.num_heads, self.kv_heads, self.dims_per_head, self.hidden_dim,
                        self.rope_theta, self.norm_eps, self.qkv_bias, self.dtype, self.binarize,
                        self.rope_2d, self.dropout, name=f"layers_{i}")
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


def num_params(params) -> int:
  """Number of scalars in a (possibly boxed) parameter tree."""
  return sum(x.size for x in jax.tree.leaves(nn.unbox(params)))

