"""RetNet's multi-scale retention as a drop-in for the LLaMA decoder's attention
(`Llama(attention='retention')`; the math is `effcomp.nn.retention`'s)."""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.lm.projection import project
from effcomp.models.lm.rope import apply_rope, rope_angles, rope_angles_2d
from effcomp.nn import retention
from effcomp.quant.binary_linear import BinarizeSpec


class Retention(nn.Module):
  """Multi-scale retention (RetNet §2.2) in `Attention`'s place, with its call signature.

  torchscale's `MultiScaleRetention.forward`: q, k, v, g = projections of x; k ·= 1/√d;
  q, k rotated by position; retention per head with decay γ_h (`effcomp.nn.retention`:
  parallel form without a cache, recurrent with a cache and one token, chunkwise with a
  cache and several); per-head RMS norm; out = o(swish(g) ⊙ ·). Deviations, so that it
  drops into the LLaMA block: key and value widths are `head_dim` (RetNet widens values
  to 2·embed and narrows its FFN instead); `num_kv_heads` < `num_heads` shares k and v
  across query heads as in GQA; the rotation is effcomp's RoPE (rotate-half pairs,
  frequencies theta^(−2i/d)) rather than torchscale's `theta_shift` (interleaved pairs,
  10000^(−i/(d/2−1))): the same position rotation, on a permutation of the head
  dimensions with slightly different frequencies; the norm's epsilon is `norm_eps`;
  weights start normal(0.02) like the other projections, not xavier(2^−2.5). The parallel
  form omits `parallel_forward`'s score-row division (a float16-range guard; retention
  runs in float32 here): the head norm undoes it only up to its epsilon, so with it the
  training forward and cached decoding would differ by ~1e-4, without it they agree.
  """
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  qkv_bias: bool = False
  dtype: Any = jnp.float32
  binarize: Optional[BinarizeSpec] = None
  rope_2d: bool = False
  norm_eps: float = 1e-5
  head_ids: Tuple[int, ...] = ()  # the heads' indices in the unpruned layer (γ of each)

  @nn.compact
  def __call__(self, x, positions, cache: Optional[retention.State] = None,
               index: Optional[jax.Array] = None, progress: Optional[jax.Array] = None):
    """x [B, T, embed], positions as in `Attention`; `cache` the layer's retention state
    (`index` unused: the state holds the past). Returns ([B, T, embed], new state)."""
    b, t, embed = x.shape
    h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
    if h % kv:
      raise ValueError(f"num_heads={h} is not a multiple of num_kv_heads={kv}")
    proj = lambda y, n, axes, bias, name: project(y, n, axes, bias, self.dtype, name,
                                                  self.binarize, progress)
    q = proj(x, h * d, ("embed", "heads"), self.qkv_bias, "q").reshape(b, t, h, d)
    k = proj(x, kv * d, ("embed", "kv"), self.qkv_bias, "k").reshape(b, t, kv, d)
    v = proj(x, kv * d, ("embed", "kv"), self.qkv_bias, "v").reshape(b, t, kv, d)
    g = proj(x, h * d, ("embed", "heads"), False, "g")
    cos, sin = (rope_angles_2d if self.rope_2d else rope_angles)(positions, d, self.rope_theta)
    q, k = apply_rope(q, cos, sin), apply_rope(k * d ** -0.5, cos, sin)
    k, v = jnp.repeat(k, h // kv, axis=2), jnp.repeat(v, h // kv, axis=2)  # as `causal_attention`
    gamma = retention.decay_rates(h)
    if self.head_ids:  # a structurally pruned layer: each kept head keeps its own decay
      gamma = retention.decay_rates(max(self.head_ids) + 1)[jnp.asarray(self.head_ids)]
    if cache is None:  # without the score-row division, which decoding cannot reproduce
      out = retention.parallel_retention(q, k, v, gamma, normalize_scores=False)
    elif t == 1:
      out, cache = retention.recurrent_retention(q[:, 0], k[:, 0], v[:, 0], gamma, cache)
      out = out[:, None]
    else:
      out, cache = retention.chunk_retention(q, k, v, gamma, cache)
    out = retention.head_rms_norm(out, self.norm_eps).reshape(b, t, h * d).astype(self.dtype)
    return proj(nn.silu(g) * out, embed, ("heads", "embed"), False, "o"), cache
