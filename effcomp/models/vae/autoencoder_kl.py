"""The Stable Diffusion KL autoencoder (diffusers `AutoencoderKL`) in flax.linen, NHWC.

Follows diffusers 0.42 numerically, so its checkpoints load by transposing kernels only
(`diffusers_weights.py`):
  * `models/autoencoders/autoencoder_kl.py` `AutoencoderKL`: encoder → `quant_conv` (1×1)
    → (mean, logvar); `post_quant_conv` (1×1) → decoder.
  * `models/autoencoders/vae.py` `Encoder`: conv_in → down_blocks → mid_block →
    GroupNorm → SiLU → conv_out (2·latent channels); `Decoder`: conv_in → mid_block →
    up_blocks (channels reversed, `layers_per_block + 1` resnets each) → GroupNorm → SiLU
    → conv_out; `DiagonalGaussianDistribution` (logvar clamped to [-30, 20]).
  * `models/unets/unet_2d_blocks.py` `DownEncoderBlock2D`, `UpDecoderBlock2D`,
    `UNetMidBlock2D` (resnet → attention → resnet).
  * `models/resnet.py` `ResnetBlock2D` (no time embedding, GroupNorm eps 1e-6, SiLU).
  * `models/downsampling.py` `Downsample2D(padding=0)`: zero-pad (0, 1, 0, 1), 3×3 conv
    stride 2; `models/upsampling.py` `Upsample2D`: nearest ×2, 3×3 conv.
  * `models/attention_processor.py` `Attention(_from_deprecated_attn_block=True)` with
    `AttnProcessor2_0`: GroupNorm, one head of width C over the H·W positions, residual.

Parameter paths mirror diffusers' state-dict names with `_<i>` for `.<i>`
(`encoder/down_blocks_0/resnets_1/conv1/kernel` ↔ `encoder.down_blocks.0.resnets.1.conv1.weight`).
Every parameter carries logical axis names: conv kernels ("height", "width", "conv_in",
"conv_out"), attention projections ("embed", "heads") / ("heads", "embed"), norms ("norm").

Images are [batch, height, width, in_channels] in [-1, 1]; latents are
[batch, height/f, width/f, latent_channels] with f = 2^(len(block_out_channels) − 1).
The diffusion model sees `scale_latents(z) = (z − shift_factor) · scaling_factor`
(Rombach et al. 2022, LDM §4.3.2 and D.1).
"""

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.registry import MODELS

EPS = 1e-6  # GroupNorm eps of every norm in diffusers' Encoder/Decoder (`resnet_eps=1e-6`).
LOGVAR_RANGE = (-30.0, 20.0)  # `DiagonalGaussianDistribution` clamps logvar to this.
CONV_AXES = ("height", "width", "conv_in", "conv_out")
# PyTorch's default Conv2d/Linear weight init, kaiming_uniform(a=√5) = U(±1/√fan_in).
TORCH_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")

# Stable Diffusion's autoencoder (stabilityai/sd-vae-ft-ema, sd-vae-ft-mse config.json).
SD_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
              layers_per_block=2, latent_channels=4, norm_num_groups=32, scaling_factor=0.18215)
# A CPU-sized autoencoder for latent experiments on 32×32 / 64×64 images (f = 2). Its
# scaling factor is 1 until set from data with `latent_scaling_factor`.
SMALL_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                 latent_channels=4, norm_num_groups=8, scaling_factor=1.0)


def conv(features: int, kernel: int, dtype: Any, stride: int = 1, padding: Optional[int] = None,
         name: Optional[str] = None) -> nn.Conv:
  """A biased `kernel`×`kernel` conv (torch-style padding, default `kernel // 2`)."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad),) * 2,
                 dtype=dtype, name=name,
                 kernel_init=nn.with_logical_partitioning(TORCH_INIT, CONV_AXES),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))


def group_norm(groups: int, dtype: Any, name: str) -> nn.GroupNorm:
  """GroupNorm(groups, eps 1e-6) over H, W and each group's channels; float32 statistics."""
  return nn.GroupNorm(num_groups=groups, epsilon=EPS, dtype=dtype, name=name,
                      use_fast_variance=False,  # two-pass variance, as torch computes it
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


def linear(features: int, axes: Tuple[str, str], dtype: Any, name: str) -> nn.Dense:
  """A biased Dense layer with kernel [in, out] named by `axes`."""
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(TORCH_INIT, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


class ResnetBlock(nn.Module):
  """diffusers `ResnetBlock2D` (temb None): GN → SiLU → conv3 → GN → SiLU → conv3, plus the
  input (through a 1×1 `conv_shortcut` when the width changes).

  x: [B, H, W, C] → [B, H, W, features].
  """
  features: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.silu(group_norm(self.groups, self.dtype, "norm1")(x))
    h = conv(self.features, 3, self.dtype, name="conv1")(h)
    h = nn.silu(group_norm(self.groups, self.dtype, "norm2")(h))
    h = conv(self.features, 3, self.dtype, name="conv2")(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, self.dtype, name="conv_shortcut")(x)
    return x + h


class Attention(nn.Module):
  """The mid block's single-head self-attention over the H·W positions (diffusers
  `AttnProcessor2_0`): x + to_out(softmax(q kᵀ/√C) v), q, k, v = to_q/k/v(GN(x)).
  [B, H, W, C] → [B, H, W, C]; scores and softmax in float32."""
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = group_norm(self.groups, self.dtype, "group_norm")(x).reshape(b, h * w, c)
    q, k, v = (linear(c, ("embed", "heads"), self.dtype, n)(y) for n in ("to_q", "to_k", "to_v"))
    scores = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(scores / jnp.sqrt(jnp.float32(c)), axis=-1).astype(v.dtype)
    out = jnp.einsum("bqk,bkc->bqc", weights, v)
    out = linear(c, ("heads", "embed"), self.dtype, "to_out_0")(out)
    return x + out.reshape(b, h, w, c)


class Downsample(nn.Module):
  """diffusers `Downsample2D(use_conv=True, padding=0)`: zero-pad bottom/right by one, then a
  3×3 stride-2 conv. [B, H, W, C] → [B, H/2, W/2, C] (H, W even)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return conv(x.shape[-1], 3, self.dtype, stride=2, padding=0, name="conv")(x)


class Upsample(nn.Module):
  """diffusers `Upsample2D(use_conv=True)`: nearest-neighbour ×2, then a 3×3 conv.
  [B, H, W, C] → [B, 2H, 2W, C]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(x.shape[-1], 3, self.dtype, name="conv")(x)


class Stage(nn.Module):
  """`num_layers` ResnetBlocks to width `features`, then an optional resampler:
  diffusers `DownEncoderBlock2D` (resample 'down') / `UpDecoderBlock2D` (resample 'up')."""
  features: int
  num_layers: int
  groups: int
  resample: Optional[str] = None  # 'down', 'up' or None (the last stage)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      x = ResnetBlock(self.features, self.groups, self.dtype, name=f"resnets_{i}")(x)
    if self.resample == "down":
      x = Downsample(self.dtype, name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample(self.dtype, name="upsamplers_0")(x)
    return x


class MidBlock(nn.Module):
  """diffusers `UNetMidBlock2D` (one layer): resnet → attention (optional) → resnet."""
  groups: int
  add_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    x = ResnetBlock(width, self.groups, self.dtype, name="resnets_0")(x)
    if self.add_attention:
      x = Attention(self.groups, self.dtype, name="attentions_0")(x)
    return ResnetBlock(width, self.groups, self.dtype, name="resnets_1")(x)


class Encoder(nn.Module):
  """diffusers `vae.Encoder` (double_z): [B, H, W, C_in] → [B, H/f, W/f, 2·latent_channels]."""
  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  groups: int
  add_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    widths = tuple(self.block_out_channels)
    x = conv(widths[0], 3, self.dtype, name="conv_in")(x)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      x = Stage(width, self.layers_per_block, self.groups, None if last else "down", self.dtype,
                name=f"down_blocks_{i}")(x)
    x = MidBlock(self.groups, self.add_attention, self.dtype, name="mid_block")(x)
    x = nn.silu(group_norm(self.groups, self.dtype, "conv_norm_out")(x))
    return conv(2 * self.latent_channels, 3, self.dtype, name="conv_out")(x)


class Decoder(nn.Module):
  """diffusers `vae.Decoder` (group norm): [B, h, w, latent] → [B, h·f, w·f, out_channels]."""
  block_out_channels: Sequence[int]
  layers_per_block: int
  out_channels: int
  groups: int
  add_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    widths = tuple(reversed(tuple(self.block_out_channels)))
    x = conv(widths[0], 3, self.dtype, name="conv_in")(z)
    x = MidBlock(self.groups, self.add_attention, self.dtype, name="mid_block")(x)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      x = Stage(width, self.layers_per_block + 1, self.groups, None if last else "up", self.dtype,
                name=f"up_blocks_{i}")(x)
    x = nn.silu(group_norm(self.groups, self.dtype, "conv_norm_out")(x))
    return conv(self.out_channels, 3, self.dtype, name="conv_out")(x)


def sample_latent(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mean + exp(logvar / 2) · ε, ε ~ N(0, I) (`DiagonalGaussianDistribution.sample`)."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def latent_scaling_factor(latents: jax.Array) -> float:
  """1 / std of a batch of latents (LDM §4.3.2, D.1: unit-variance latents for diffusion)."""
  return float(1.0 / jnp.std(jnp.asarray(latents, jnp.float32)))


def check_config(block_out_channels: Sequence[int], layers_per_block: int, latent_channels: int,
                 norm_num_groups: int) -> None:
  """ValueError naming the field unless the autoencoder these fields describe can be built."""
  widths = tuple(block_out_channels)
  if not widths or any(int(w) <= 0 for w in widths):
    raise ValueError(f"block_out_channels={block_out_channels}: expected a non-empty sequence "
                     "of positive widths")
  if norm_num_groups <= 0 or any(w % norm_num_groups for w in widths):
    raise ValueError(f"norm_num_groups={norm_num_groups}: expected a positive divisor of every "
                     f"width in block_out_channels={widths}")
  if layers_per_block < 1:
    raise ValueError(f"layers_per_block={layers_per_block}: expected ≥ 1")
  if latent_channels < 1:
    raise ValueError(f"latent_channels={latent_channels}: expected ≥ 1")


@MODELS.register("autoencoder_kl")
class AutoencoderKL(nn.Module):
  """The KL-regularized autoencoder of latent diffusion (diffusers `AutoencoderKL`).

  `__call__(x, sample_posterior=True)` → (recon, mean, logvar); `encode(x)` → (mean,
  logvar); `decode(z)` → images. Call the others with `apply(..., method='encode')`.
  Sampling the posterior draws from the 'sample' RNG stream (`rngs={'sample': key}`).

  Attributes (diffusers config names):
    in_channels, out_channels: image channels in and out.
    block_out_channels: widths of the encoder stages (the decoder's, reversed); each stage
      but the last halves the resolution.
    layers_per_block: resnets per encoder stage (decoder stages get one more).
    latent_channels: channels of the latent z.
    norm_num_groups: GroupNorm groups (must divide every width).
    scaling_factor, shift_factor: `scale_latents(z) = (z − shift) · scale`.
    use_quant_conv, use_post_quant_conv: the 1×1 convs around the latent.
    mid_block_add_attention: attention in the encoder's and decoder's mid blocks.
    dtype: computation dtype (params stay float32; mean, logvar, recon are float32).
  """
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  latent_channels: int = 4
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float = 0.0
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    check_config(self.block_out_channels, self.layers_per_block, self.latent_channels,
                 self.norm_num_groups)
    widths = tuple(int(w) for w in self.block_out_channels)
    self.encoder = Encoder(widths, self.layers_per_block, self.latent_channels,
                           self.norm_num_groups, self.mid_block_add_attention, self.dtype)
    self.decoder = Decoder(widths, self.layers_per_block, self.out_channels,
                           self.norm_num_groups, self.mid_block_add_attention, self.dtype)
    if self.use_quant_conv:
      self.quant_conv = conv(2 * self.latent_channels, 1, self.dtype)
    if self.use_post_quant_conv:
      self.post_quant_conv = conv(self.latent_channels, 1, self.dtype)

  @property
  def downsampling_factor(self) -> int:
    """Image side / latent side: 2^(len(block_out_channels) − 1)."""
    return 2 ** (len(tuple(self.block_out_channels)) - 1)

  def encode(self, x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """x: [B, H, W, in_channels] in [-1, 1] → mean, logvar: [B, H/f, W/f, latent] float32."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"x.shape={x.shape}: expected [batch, height, width, "
                       f"{self.in_channels}] (NHWC, in_channels={self.in_channels})")
    h = self.encoder(x.astype(self.dtype))
    if self.use_quant_conv:
      h = self.quant_conv(h)
    mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z: jax.Array) -> jax.Array:
    """z: [B, h, w, latent_channels] (unscaled) → images [B, h·f, w·f, out_channels] float32."""
    if z.ndim != 4 or z.shape[-1] != self.latent_channels:
      raise ValueError(f"z.shape={z.shape}: expected [batch, height, width, "
                       f"{self.latent_channels}] (latent_channels={self.latent_channels})")
    z = z.astype(self.dtype)
    if self.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x: jax.Array, sample_posterior: bool = True
               ) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Encode, take a posterior sample (or its mean), decode: (recon, mean, logvar)."""
    mean, logvar = self.encode(x)
    z = sample_latent(self.make_rng("sample"), mean, logvar) if sample_posterior else mean
    return self.decode(z), mean, logvar

  def scale_latents(self, z: jax.Array) -> jax.Array:
    """The diffusion model's latents: (z − shift_factor) · scaling_factor."""
    return (z - self.shift_factor) * self.scaling_factor

  def unscale_latents(self, latents: jax.Array) -> jax.Array:
    """Inverse of `scale_latents`, what `decode` takes."""
    return latents / self.scaling_factor + self.shift_factor
