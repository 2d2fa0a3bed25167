"""A tiny autoencoder whose conv trunks run below the image resolution, between Haar
wavelet packets: ElasticDiT's Tiny DWT-Distilled VAE (T-DVAE) as effcomp builds it.

ElasticDiT (Du, Xie, Lu et al. 2026, arXiv 2605.15684) replaces the SD3 VAE by "a Tiny
DWT-Distilled VAE (T-DVAE)" with "SD3-level reconstruction at 1/8 of the compute". Its
code is not public and the abstract gives no architecture, so this one is effcomp's,
built from the closest public designs:
  * LiteVAE (Sadat et al., NeurIPS 2024, arXiv 2405.14477): the encoder starts with a
    multi-level Haar DWT, so its networks see the image at a fraction of its side.
  * TAESD (madebyollin/taesd, `taesd.py`), a tiny autoencoder distilled from the SD VAE
    with the teacher's latent API: plain conv `Block`s (conv3 → ReLU → conv3 → ReLU →
    conv3, plus the input through a 1×1 conv if the width changes, then ReLU), no norms
    and no attention; stride-2 conv3 to go down, nearest ×2 + conv3 to go up.
  * The decoder predicts wavelet coefficients and inverts the DWT (the wavelet-space
    decoder of Gyawali et al. 2019, "Wavelets to the Rescue", arXiv 1911.05627), so its
    last layers run at low resolution too.

Encoder: x [B, H, W, in_channels] → `haar_packets(x, dwt_levels)` ([B, H/2^L, W/2^L,
4^L·in_channels], orthonormal, lossless: `effcomp.nn.haar`) → conv3 → stages of
`encoder_blocks` Blocks at widths `block_out_channels` (a stride-2 conv3 before each stage
but the first) → conv3 → (mean, logvar) [B, H/f, W/f, latent_channels].
Decoder: z → conv3 → ReLU → the stages reversed (`decoder_blocks` Blocks each, nearest ×2
+ conv3 before each but the first) → conv3 to 4^L·out_channels sub-bands →
`inverse_haar_packets` → [B, H, W, out_channels].
f = 2^(dwt_levels + len(block_out_channels) − 1). With `SMALL_TINY_VAE` the trunks run
at the latent's resolution only; the teacher (`SMALL_VAE`) runs half its layers at the
image's, with a mid-block attention: 1/11 of its multiply-adds (tests/test_tiny_vae.py).

The posterior is diagonal Gaussian as `AutoencoderKL`'s (logvar clamped alike), so the
model has `AutoencoderKL`'s interface and plugs in wherever it does: `encode(x)` →
(mean, logvar), `decode(z)`, `__call__(x, sample_posterior)` → (recon, mean, logvar),
`scale_latents`, `downsampling_factor`. Distilled (the `autoencoder` task with
`distill=True`), its latents are the teacher's, so it also decodes the teacher's latents.
"""

from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.vae.autoencoder_kl import LOGVAR_RANGE, conv, sample_latent
from effcomp.nn.haar import haar_packets, inverse_haar_packets
from effcomp.registry import MODELS

# Paired with `autoencoder_kl.SMALL_VAE` (f = 2, 4 latent channels): one DWT level and one
# stage of width 32, so encoder and decoder run at the latent's resolution.
SMALL_TINY_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(32,), dwt_levels=1,
                      encoder_blocks=1, decoder_blocks=2, latent_channels=4, scaling_factor=1.0)
# Paired with `autoencoder_kl.SD_VAE` (f = 8, 4 latent channels; SD3's has 16): one DWT
# level, then three stages of width 128 (f = 2 · 2 · 2): 1/14 of SD_VAE's multiply-adds
# at 256² (33 G vs 447 G, `effcomp.metrics.flops.jaxpr_macs` of encode + decode).
SD_TINY_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(128, 128, 128), dwt_levels=1,
                   encoder_blocks=1, decoder_blocks=2, latent_channels=4,
                   scaling_factor=0.18215)


class Block(nn.Module):
  """TAESD's `Block`: ReLU(conv3(ReLU(conv3(ReLU(conv3(x))))) + skip(x)), skip a 1×1 conv
  when the width changes. [B, H, W, C] → [B, H, W, features]."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.relu(conv(self.features, 3, self.dtype, name="conv_0")(x))
    h = nn.relu(conv(self.features, 3, self.dtype, name="conv_1")(h))
    h = conv(self.features, 3, self.dtype, name="conv_2")(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, self.dtype, name="skip")(x)
    return nn.relu(h + x)


class TinyEncoder(nn.Module):
  """Haar packets → conv trunk: [B, H, W, C] → [B, H/f, W/f, 2·latent_channels]."""
  block_out_channels: Sequence[int]
  dwt_levels: int
  num_blocks: int
  latent_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    widths = tuple(self.block_out_channels)
    x = conv(widths[0], 3, self.dtype, name="conv_in")(haar_packets(x, self.dwt_levels))
    for i, width in enumerate(widths):
      if i:
        x = conv(width, 3, self.dtype, stride=2, name=f"down_{i}")(x)
      for j in range(self.num_blocks):
        x = Block(width, self.dtype, name=f"stage_{i}_block_{j}")(x)
    return conv(2 * self.latent_channels, 3, self.dtype, name="conv_out")(x)


class TinyDecoder(nn.Module):
  """Conv trunk → Haar sub-bands → inverse packets: [B, h, w, latent] → [B, h·f, w·f, C]."""
  block_out_channels: Sequence[int]
  dwt_levels: int
  num_blocks: int
  out_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    widths = tuple(reversed(tuple(self.block_out_channels)))
    x = nn.relu(conv(widths[0], 3, self.dtype, name="conv_in")(z))
    for i, width in enumerate(widths):
      if i:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = conv(width, 3, self.dtype, name=f"up_{i}")(x)
      for j in range(self.num_blocks):
        x = Block(width, self.dtype, name=f"stage_{i}_block_{j}")(x)
    bands = conv(4 ** self.dwt_levels * self.out_channels, 3, self.dtype, name="conv_out")(x)
    return inverse_haar_packets(bands, self.dwt_levels)


def check_config(block_out_channels: Sequence[int], dwt_levels: int, encoder_blocks: int,
                 decoder_blocks: int, latent_channels: int) -> None:
  """ValueError naming the field unless the tiny autoencoder these fields describe exists."""
  widths = tuple(block_out_channels)
  if not widths or any(int(w) <= 0 for w in widths):
    raise ValueError(f"block_out_channels={block_out_channels}: expected a non-empty sequence "
                     "of positive widths")
  if dwt_levels < 0:
    raise ValueError(f"dwt_levels={dwt_levels}: expected ≥ 0")
  for name, value in (("encoder_blocks", encoder_blocks), ("decoder_blocks", decoder_blocks),
                      ("latent_channels", latent_channels)):
    if value < 1:
      raise ValueError(f"{name}={value}: expected ≥ 1")


@MODELS.register("tiny_vae")
class TinyVAE(nn.Module):
  """The T-DVAE student (module docstring): `AutoencoderKL`'s interface and latent shape.

  Attributes:
    in_channels, out_channels: image channels in and out.
    block_out_channels: widths of the trunk stages (encoder order; the decoder's reversed);
      each stage after the first halves the resolution.
    dwt_levels: Haar packet levels of the encoder's stem and the decoder's head (each
      halves the side the trunks run at).
    encoder_blocks, decoder_blocks: Blocks per encoder / decoder stage.
    latent_channels: channels of the latent z.
    scaling_factor, shift_factor: `scale_latents(z) = (z − shift) · scale` (the teacher's,
      when distilled).
    dtype: computation dtype (params stay float32; mean, logvar, recon are float32).
  """
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (32,)
  dwt_levels: int = 1
  encoder_blocks: int = 1
  decoder_blocks: int = 2
  latent_channels: int = 4
  scaling_factor: float = 1.0
  shift_factor: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    check_config(self.block_out_channels, self.dwt_levels, self.encoder_blocks,
                 self.decoder_blocks, self.latent_channels)
    widths = tuple(int(w) for w in self.block_out_channels)
    self.encoder = TinyEncoder(widths, self.dwt_levels, self.encoder_blocks,
                               self.latent_channels, self.dtype)
    self.decoder = TinyDecoder(widths, self.dwt_levels, self.decoder_blocks, self.out_channels,
                               self.dtype)

  @property
  def downsampling_factor(self) -> int:
    """Image side / latent side: 2^(dwt_levels + len(block_out_channels) − 1)."""
    return 2 ** (self.dwt_levels + len(tuple(self.block_out_channels)) - 1)

  def encode(self, x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """x: [B, H, W, in_channels] in [-1, 1], H and W divisible by f → mean, logvar:
    [B, H/f, W/f, latent] float32."""
    f = self.downsampling_factor
    if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f"x.shape={x.shape}: expected [batch, height, width, {self.in_channels}] "
                       f"(NHWC, in_channels={self.in_channels}) with height and width "
                       f"divisible by the downsampling factor {f}")
    h = self.encoder(x.astype(self.dtype))
    mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z: jax.Array) -> jax.Array:
    """z: [B, h, w, latent_channels] (unscaled) → images [B, h·f, w·f, out_channels]
    float32."""
    if z.ndim != 4 or z.shape[-1] != self.latent_channels:
      raise ValueError(f"z.shape={z.shape}: expected [batch, height, width, "
                       f"{self.latent_channels}] (latent_channels={self.latent_channels})")
    return self.decoder(z.astype(self.dtype)).astype(jnp.float32)

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
