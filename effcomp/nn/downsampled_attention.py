"""Self-attention on token-downsampled sub-maps (U-DiT), and the plain multi-head attention.

U-DiT ("U-DiTs: Downsample Tokens in U-Shaped Diffusion Transformers", Tian et al.,
NeurIPS 2024, Sec. 3 and App. A.1; official `udit_models.py`: `DownSampler`,
`DownSample_Attn`, `precompute_freqs_cis_2d`, `apply_rotary_emb`). A feature map
x: [B, H, W, C] is

  1. filtered by the downsampler: a depthwise k×k conv in parallel with a shortcut,
     x + DWConv(x) (Table 7's best design; reference `downsampler='dwconv5'`,
     `down_shortcut=1`);
  2. split into f² sub-maps x[:, i::f, j::f] ("pixel unshuffle" into a sub-map axis;
     sub-map p = i·f + j, einops 'b d (h dh) (w dw) -> b (dh dw) (h w) d');
  3. mapped to q, k, v by one Linear shared by all sub-maps; self-attention runs within
     each sub-map of (H/f)·(W/f) tokens — optionally with 2-D RoPE on q, k and
     cosine-similarity logits (Swin-V2, reference `attn_type='v2'`);
  4. merged back (every token returns to the pixel it came from) and projected by a 1×1
     conv (`to_out`; applied here before the merge, which is the same map because it
     acts on each token alone).

No element is dropped: the tensor keeps B·H·W·C elements throughout, and the attention
matmuls cost f²·(HW/f²)²·C = (HW)²·C/f², a quarter of full attention at f = 2 (paper
Sec. 3, "Complexity analysis"). With f = 1 and downsampler 'none' this is ordinary full
self-attention (the paper's DiT-UNet baseline).
"""

import math
from typing import Any, Optional, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.nn.depthwise_conv import DepthwiseConv

ATTN_TYPES = ("dot", "cosine")
# Swin-V2 clamps the learned logit scale at log(100); the reference writes the constant
# rounded, clamp(max=4.6052) (udit_models.py), which is used here so weights port exactly.
LOG_MAX_LOGIT_SCALE = 4.6052
LOG_INIT_LOGIT_SCALE = math.log(10.0)


def space_to_submaps(x: jax.Array, factor: int) -> jax.Array:
  """[B, H, W, C] → [B, f², (H/f)·(W/f), C]; sub-map i·f + j holds x[:, i::f, j::f]."""
  b, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f"down_factor={factor} must divide the feature map {h}×{w}")
  x = x.reshape(b, h // factor, factor, w // factor, factor, c).transpose(0, 2, 4, 1, 3, 5)
  return x.reshape(b, factor * factor, (h // factor) * (w // factor), c)


def submaps_to_space(x: jax.Array, factor: int, height: int, width: int) -> jax.Array:
  """Inverse of `space_to_submaps`: [B, f², (H/f)·(W/f), C] → [B, H, W, C]."""
  b, _, _, c = x.shape
  x = x.reshape(b, factor, factor, height // factor, width // factor, c).transpose(0, 3, 1, 4, 2, 5)
  return x.reshape(b, height, width, c)


def rope2d_angles(height: int, width: int, head_dim: int, theta: float = 10000.0) -> jax.Array:
  """RoPE2D rotation angles [height·width, head_dim/2] (reference `precompute_freqs_cis_2d`).

  Frequencies ω_k = θ^(−4k/head_dim), k < head_dim/4. Token n (row-major, column
  x = n mod width, row y = n div width) rotates its complex pair 2k by x·ω_k and pair
  2k + 1 by y·ω_k. The reference handles square maps (x = n mod √N), the same here.
  """
  if head_dim % 4:
    raise ValueError(f"head_dim={head_dim}: RoPE2D needs a head dimension divisible by 4")
  freqs = 1.0 / theta ** (jnp.arange(0, head_dim, 4, dtype=jnp.float32) / head_dim)
  pos = jnp.arange(height * width)
  xs, ys = (pos % width).astype(jnp.float32), (pos // width).astype(jnp.float32)
  angles = jnp.stack([xs[:, None] * freqs, ys[:, None] * freqs], axis=-1)  # [N, D/4, 2]
  return angles.reshape(height * width, head_dim // 2)


def apply_rope_halves(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotates x: [..., N, D] by `angles` [N, D/2], x's head dimension laid out in halves
  (real parts x[:D/2], imaginary parts x[D/2:]): (re + i·im)·e^{i·angle}.

  The reference (`apply_rotary_emb`, view_as_complex) pairs interleaved entries
  (x[2i], x[2i+1]); `SelfAttention` de-interleaves q, k and v in the one transpose that
  moves heads forward (q·k is a sum over d, unchanged by a permutation of d applied to both;
  v's permutation is undone on the way out), so this computes the reference's rotation
  without the strided pair gathers (issue 22).
  """
  half = x.shape[-1] // 2
  xf = x.astype(jnp.float32)
  re, im = xf[..., :half], xf[..., half:]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  return jnp.concatenate([re * cos - im * sin, re * sin + im * cos], axis=-1).astype(x.dtype)


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(‖x‖, eps) over the last axis (torch.nn.functional.normalize)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@jax.custom_vjp
def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q·kᵀ)·v over the last two axes of q, k: [..., N, D], v: [..., N, Dv] → v's
  dtype; logits and softmax in float32, q pre-scaled by the caller.

  Written for CPU speed (issue 22), the same function as `softmax(q @ k.T) @ v`: the
  forward divides the [N, Dv] output by the row sums instead of the [N, N] weights, and
  the custom VJP is the flash-attention backward on the saved exponentials e and row sums
  s (P = e/s is formed inside the fused passes that read e, never stored):
    dv = eᵀ·(g/s),  dP = g·vᵀ,  dlogits = P ∘ (dP − rowsum(g ∘ out)),
    dq = dlogits·k,  dk = dlogitsᵀ·q.
  Autodiff of the softmax instead keeps P and reduces P ∘ dP over another [N, N] pass.
  """
  return _softmax_attention_fwd(q, k, v)[0]


def _softmax_attention_fwd(q, k, v):
  logits = jnp.einsum("...qd,...kd->...qk", q, k, preferred_element_type=jnp.float32)
  e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  s = jnp.sum(e, axis=-1, keepdims=True)
  out = (jnp.einsum("...qk,...kd->...qd", e.astype(v.dtype), v,
                    preferred_element_type=jnp.float32) / s).astype(v.dtype)
  return out, (q, k, v, out, e, s)


def _softmax_attention_bwd(residuals, g):
  q, k, v, out, e, s = residuals
  g32 = g.astype(jnp.float32)
  dv = jnp.einsum("...qk,...qd->...kd", e, g32 / s)
  dp = jnp.einsum("...qd,...kd->...qk", g, v, preferred_element_type=jnp.float32)
  dlogits = e / s * (dp - jnp.sum(g32 * out.astype(jnp.float32), axis=-1, keepdims=True))
  dq = jnp.einsum("...qk,...kd->...qd", dlogits, k.astype(jnp.float32))
  dk = jnp.einsum("...qk,...qd->...kd", dlogits, q.astype(jnp.float32))
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def multi_head_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                         logit_scale: Optional[jax.Array] = None) -> jax.Array:
  """softmax(q·kᵀ/√D)·v per head; with `logit_scale` [heads] (cosine attention, Swin-V2):
  softmax(cos(q, k)·exp(min(logit_scale, log 100)))·v.

  q, k, v: [..., heads, N, D] (any leading batch axes) → [..., heads, N, D] in v's dtype.
  The scale multiplies q (N·D elements) rather than the [N, N] logits.
  """
  d = q.shape[-1]
  if logit_scale is None:
    q = q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
  else:
    scale = jnp.exp(jnp.minimum(logit_scale.astype(jnp.float32), LOG_MAX_LOGIT_SCALE))
    q = _l2_normalize(q.astype(jnp.float32)) * scale[:, None, None]
    k = _l2_normalize(k.astype(jnp.float32))
  return softmax_attention(q, k, v)


def xavier_dense(features: int, axes: Tuple[Optional[str], Optional[str]], dtype, name: str,
                 zero: bool = False) -> nn.Dense:
  """Dense with kernel [in, out] named `axes`, Xavier-uniform (DiT/U-DiT `_basic_init`) or
  zero kernel, zero bias."""
  init = nn.initializers.zeros if zero else nn.initializers.xavier_uniform()
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(init, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def conv_inits(depthwise: bool, init=None) -> dict:
  """`kernel_init` / `bias_init` of a (depthwise) conv: Xavier-uniform (or `init`) kernel,
  zero bias, with their logical axis names."""
  names = ("height", "width", None, "embed") if depthwise else (
      "height", "width", "conv_in", "conv_out")
  return dict(kernel_init=nn.with_logical_partitioning(
      init or nn.initializers.xavier_uniform(), names),
              bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (names[-1],)))


class SelfAttention(nn.Module):
  """Multi-head self-attention over the token axis of x: [..., N, C] → [..., N, C].

  `qkv` is one Linear C → 3C laid out [3, heads, head_dim] (timm `Attention`, U-DiT
  `to_qkv(...).chunk(3)`), `out` the output projection. attn_type 'dot' (DiT) or 'cosine'
  (U-DiT; a learned per-head `logit_scale`, initialized to log 10).
  """
  num_heads: int
  attn_type: str = "dot"
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, rope_angles: Optional[jax.Array] = None) -> jax.Array:
    *lead, n, c = x.shape
    if c % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the width {c}")
    if self.attn_type not in ATTN_TYPES:
      raise ValueError(f"attn_type={self.attn_type!r}: expected one of {ATTN_TYPES}")
    h, d = self.num_heads, c // self.num_heads
    qkv = nn.Dense(3 * c, use_bias=self.use_bias, dtype=self.dtype, name="qkv",
                   kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                            ("embed", "heads")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("heads",)))(x)
    # One transpose moves (q, k, v) and heads ahead of the tokens; with RoPE it also
    # de-interleaves each head's pairs into halves (`apply_rope_halves`), undone on the way out.
    rope = rope_angles is not None
    pattern = "... n (three h d two) -> three ... h n (two d)" if rope else (
        "... n (three h d) -> three ... h n d")
    q, k, v = einops.rearrange(qkv, pattern, three=3, h=h, **({"two": 2} if rope else {}))
    if rope:
      q, k = apply_rope_halves(q, rope_angles), apply_rope_halves(k, rope_angles)
    scale = None
    if self.attn_type == "cosine":
      scale = self.param("logit_scale", nn.with_logical_partitioning(
          nn.initializers.constant(LOG_INIT_LOGIT_SCALE), ("norm",)), (h,), jnp.float32)
    out = multi_head_attention(q, k, v, scale)
    out = einops.rearrange(out, "... h n (two d) -> ... n (h d two)" if rope else
                           "... h n d -> ... n (h d)", **({"two": 2} if rope else {}))
    return xavier_dense(c, ("heads", "embed"), self.dtype, "out")(out)


def parse_downsampler(name: str) -> Tuple[int, bool]:
  """'none' → (0, False); 'dwconv<k>' → (k, True) depthwise; 'conv<k>' → (k, False) dense.

  The reference reads the kernel size from the last character ('dwconv5' → 5).
  """
  for prefix, depthwise in (("dwconv", True), ("conv", False)):
    if name.startswith(prefix) and name[len(prefix):].isdigit():
      k = int(name[len(prefix):])
      if k % 2 == 1:
        return k, depthwise
  if name == "none":
    return 0, False
  raise ValueError(f"downsampler={name!r}: expected 'none', 'dwconv<k>' or 'conv<k>' with odd k")


class DownsampledAttention(nn.Module):
  """U-DiT's self-attention on f² downsampled sub-maps (module docstring).

  x: [B, H, W, C] → [B, H, W, C]; f = `down_factor` must divide H and W.
  Attributes:
    num_heads: attention heads (head_dim = C / num_heads; divisible by 4 with `rope`).
    down_factor: f; 1 = full attention over all H·W tokens.
    downsampler: 'dwconv<k>' (reference default 'dwconv5'), 'conv<k>' or 'none' (plain
      pixel unshuffle, Table 7's first row).
    down_shortcut: add the input to the downsampler's output (x + DWConv(x)).
    attn_type: 'cosine' (reference 'v2') or 'dot' (reference None: q·kᵀ/√d).
    rope: RoPE2D on q and k over each sub-map's (H/f)×(W/f) grid (reference 'rope2d').
  """
  num_heads: int
  down_factor: int = 2
  downsampler: str = "dwconv5"
  down_shortcut: bool = True
  attn_type: str = "cosine"
  rope: bool = True
  rope_theta: float = 10000.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, height, width, c = x.shape
    f = self.down_factor
    if f < 1 or height % f or width % f:
      raise ValueError(f"down_factor={f} must be ≥ 1 and divide the map {height}×{width}")
    if c % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the width {c}")
    kernel, depthwise = parse_downsampler(self.downsampler)
    if kernel:
      inits = conv_inits(depthwise)
      if depthwise:
        y = DepthwiseConv(kernel, dtype=self.dtype, name="downsampler", **inits)(x)
      else:
        y = nn.Conv(c, (kernel, kernel), padding="SAME", dtype=self.dtype, name="downsampler",
                    **inits)(x)
      x = x + y if self.down_shortcut else y
    angles = None
    if self.rope:
      angles = rope2d_angles(height // f, width // f, c // self.num_heads, self.rope_theta)
    tokens = SelfAttention(self.num_heads, self.attn_type, True, self.dtype, name="attn")(
        space_to_submaps(x, f), angles)
    return submaps_to_space(tokens, f, height, width)
