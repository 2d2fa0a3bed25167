"""A depthwise k×k 'same' convolution that is fast on CPUs, with `nn.Conv`'s parameters.

XLA's CPU backend runs grouped convolutions with one channel per group
(`feature_group_count = C`) through a slow generic path: a 5×5 depthwise conv on
[64, 16, 16, 64] takes 0.12 s forward + backward on 2 cores, where the same result as a
sum of k² shifted, per-channel-scaled copies of the zero-padded input takes 0.047 s
(0.06 s vs 0.006 s on a [64, 4, 4, 256] map; measured side by side). U-DiT's FFN and
downsampler are depthwise convs, so this decides its CPU speed. On accelerators the
convolution primitive is the better kernel and stays in use (`impl='auto'`).

Both implementations compute the same function (zero 'SAME' padding, odd k, stride 1) and
`DepthwiseConv` declares exactly `nn.Conv(C, (k, k), feature_group_count=C)`'s parameters
(`kernel` [k, k, 1, C], `bias` [C]), so checkpoints move freely between them.
"""

import contextlib
import contextvars
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "shifted", "conv")
_AUTO = contextvars.ContextVar("depthwise_conv_auto_impl", default=None)


@contextlib.contextmanager
def auto_impl(impl: str) -> Iterator[None]:
  """Within the block (at trace time), impl='auto' means `impl`: e.g. 'conv' so that a
  jaxpr shows each depthwise conv as one convolution (`metrics.flops.jaxpr_macs`). Only
  functions traced inside the block see it: jax reuses the cached trace of a function it
  has traced before."""
  if impl not in IMPLS[1:]:
    raise ValueError(f"impl={impl!r}: expected one of {IMPLS[1:]}")
  token = _AUTO.set(impl)
  try:
    yield
  finally:
    _AUTO.reset(token)


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, impl: str = "auto") -> jax.Array:
  """x: [B, H, W, C], kernel: [k, k, 1, C] (odd k) → [B, H, W, C], zero 'SAME' padding.

  impl: 'shifted' (sum of k² shifted copies), 'conv' (`lax.conv_general_dilated` with
  C groups) or 'auto' (shifted on CPU, conv elsewhere; see `auto_impl`)."""
  kh, kw = kernel.shape[:2]
  if kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[-1]:
    raise ValueError(f"kernel shape {kernel.shape}: expected [k, k, 1, {x.shape[-1]}]")
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f"kernel size {kh}×{kw}: expected odd sizes ('SAME' padding is centred)")
  if impl not in IMPLS:
    raise ValueError(f"impl={impl!r}: expected one of {IMPLS}")
  if impl == "auto":
    impl = _AUTO.get() or ("shifted" if jax.default_backend() == "cpu" else "conv")
  if impl == "conv":
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1])
  return _shifted(x, kernel)


def _pad_same(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """x zero-padded by k//2 on each side of H and W (odd k: 'SAME')."""
  return jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))


def _shifted_sum(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Σ_ij pad(x)[:, i:i+H, j:j+W] · kernel[i, j, 0]: the 'SAME' depthwise correlation."""
  kh, kw = kernel.shape[:2]
  height, width = x.shape[1:3]
  padded = _pad_same(x, kh, kw)
  out = jnp.zeros_like(x)
  for i in range(kh):
    for j in range(kw):
      out = out + padded[:, i:i + height, j:j + width, :] * kernel[i, j, 0]
  return out


@jax.custom_vjp
def _shifted(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _shifted_sum(x, kernel)


def _shifted_fwd(x, kernel):
  return _shifted_sum(x, kernel), (x, kernel)


def _shifted_bwd(residuals, g):
  """The transposes written as shifted sums too: ∂x is the correlation of g with the
  flipped kernel (one fused loop, as the forward); ∂kernel is `_kernel_grad`. Autodiff of
  the forward would keep k² padded cotangents alive instead (10 GB of temporaries in
  U-DiT-S's step on CPU, issue 22)."""
  x, kernel = residuals
  dx = _shifted_sum(g, kernel[::-1, ::-1])
  return dx, _kernel_grad(x, g, *kernel.shape[:2]).astype(kernel.dtype)


# Bytes of padded input rows one `_kernel_grad` step reads k² times: small enough to stay
# in a core's L2 cache (≥ 512 KiB on current server CPUs) beside the cotangent rows.
_BLOCK_BYTES = 384 * 1024


def _kernel_grad(x: jax.Array, g: jax.Array, kh: int, kw: int) -> jax.Array:
  """∂kernel[i, j, 0, c] = Σ_bhw pad(x)[b, h+i, w+j, c]·g[b, h, w, c], in float32.

  A `lax.scan` over blocks of R rows of one image (R the largest divisor of H whose
  padded rows fit `_BLOCK_BYTES`): each block is read from memory once and all k² taps
  reduce it while it sits in cache. The k² whole-tensor reductions this replaces each
  streamed pad(x) and g from memory: 5× slower for U-DiT's 5×5 FFN conv on 2 cores
  (24 ms → 4 ms on [8, 16, 16, 384], 109 ms → 14 ms on [8, 32, 32, 384]).
  """
  batch, height, width, c = x.shape
  padded = _pad_same(x, kh, kw)
  row_bytes = (width + kw - 1) * c * padded.dtype.itemsize
  rows = max([r for r in range(1, height + 1)
              if height % r == 0 and (r + kh - 1) * row_bytes <= _BLOCK_BYTES] or [1])
  blocks = height // rows

  def step(acc, index):
    image, top = index // blocks, (index % blocks) * rows
    xs = lax.dynamic_slice(padded, (image, top, 0, 0), (1, rows + kh - 1, width + kw - 1, c))[0]
    gs = lax.dynamic_slice(g, (image, top, 0, 0), (1, rows, width, c))[0]
    taps = [jnp.sum(xs[i:i + rows, j:j + width] * gs, axis=(0, 1), dtype=jnp.float32)
            for i in range(kh) for j in range(kw)]
    return acc + jnp.stack(taps), None

  acc, _ = lax.scan(step, jnp.zeros((kh * kw, c), jnp.float32), jnp.arange(batch * blocks))
  return acc.reshape(kh, kw, 1, c)


_shifted.defvjp(_shifted_fwd, _shifted_bwd)


class DepthwiseConv(nn.Module):
  """A depthwise k×k stride-1 'same' conv with bias over the last axis of [B, H, W, C]."""
  kernel_size: int
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.xavier_uniform()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, k = x.shape[-1], self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, 1, c), jnp.float32)
    bias = self.param("bias", self.bias_init, (c,), jnp.float32) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = depthwise_conv2d(x, kernel, self.impl)
    return y + bias if bias is not None else y
