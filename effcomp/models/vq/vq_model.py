"""LlamaGen's VQGAN image tokenizer (`VQModel`) in flax.linen, NHWC.

Follows FoundationVision/LlamaGen `tokenizer/tokenizer_image/vq_model.py` numerically, so its
released tokenizers (`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`) load by transposing kernels only
(`effcomp/convert/llamagen_vq.py`):
  * `Encoder`: conv_in → per level `num_res_blocks` ResnetBlocks (each followed by an
    AttnBlock at the last level) and a Downsample (all but the last level) → mid (resnet,
    attention, resnet) → GroupNorm → SiLU → conv_out (z_channels).
  * `Decoder`: conv_in → mid → per level, widths reversed, `num_res_blocks + 1` ResnetBlocks
    (attention at the first, lowest-resolution level) and an Upsample (all but the last)
    → GroupNorm → SiLU → conv_out.
  * `ResnetBlock`, `AttnBlock` (one head over H·W, 1×1 q/k/v/proj_out), `Downsample`
    (zero-pad (0, 1, 0, 1), 3×3 stride 2), `Upsample` (nearest ×2, 3×3 conv), GroupNorm eps
    1e-6: the same computations as diffusers' blocks, so `effcomp.models.vae.autoencoder_kl`'s
    modules are reused (its attention's 1×1 convs are Dense layers, its shortcut is named
    `conv_shortcut` where LlamaGen says `nin_shortcut`).
  * `quant_conv` (1×1, z_channels → codebook_embed_dim) → `VectorQuantizer`
    (`effcomp.nn.vector_quantize`, ℓ2-normalized codes) → `post_quant_conv` (1×1 back).

LlamaGen's GroupNorm has 32 groups; `norm_num_groups` lets CPU-size widths use fewer.
Dropout (LlamaGen's `dropout_p`, 0 in every released config) is not implemented.
Images are [B, H, W, in_channels] in [−1, 1]; codes are [B, H/f, W/f] int32 with
f = 2^(len(ch_mult) − 1).
"""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.vae.autoencoder_kl import (Attention, Downsample, ResnetBlock, Upsample, conv,
                                               group_norm)
from effcomp.nn import vector_quantize
from effcomp.registry import MODELS

# LlamaGen's `ModelArgs` with `VQ_16` / `VQ_8` (ImageNet 256: 16×16 / 32×32 codes).
VQ_16 = dict(channels=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
             codebook_size=16384, codebook_embed_dim=8, norm_num_groups=32)
VQ_8 = dict(VQ_16, ch_mult=(1, 2, 2, 4))
# A CPU-size tokenizer for the embedded 16×16 digits / 32×32 photo patches (f = 4).
VQ_SMALL = dict(channels=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=32,
                codebook_size=256, codebook_embed_dim=8, norm_num_groups=8)


class Encoder(nn.Module):
  """LlamaGen `Encoder`: [B, H, W, C] → [B, H/f, W/f, z_channels]."""
  channels: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  z_channels: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = conv(self.channels, 3, self.dtype, name="conv_in")(x)
    levels = len(self.ch_mult)
    for i, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        x = ResnetBlock(self.channels * mult, self.groups, self.dtype,
                        name=f"conv_blocks_{i}_res_{j}")(x)
        if i == levels - 1:
          x = Attention(self.groups, self.dtype, name=f"conv_blocks_{i}_attn_{j}")(x)
      if i != levels - 1:
        x = Downsample(self.dtype, name=f"conv_blocks_{i}_downsample")(x)
    x = _mid(x, self.groups, self.dtype)
    x = nn.silu(group_norm(self.groups, self.dtype, "norm_out")(x))
    return conv(self.z_channels, 3, self.dtype, name="conv_out")(x)


class Decoder(nn.Module):
  """LlamaGen `Decoder`: [B, h, w, z_channels] → [B, h·f, w·f, out_channels]."""
  channels: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  out_channels: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    mults = tuple(reversed(tuple(self.ch_mult)))
    x = conv(self.channels * mults[0], 3, self.dtype, name="conv_in")(z)
    x = _mid(x, self.groups, self.dtype)
    for i, mult in enumerate(mults):
      for j in range(self.num_res_blocks + 1):
        x = ResnetBlock(self.channels * mult, self.groups, self.dtype,
                        name=f"conv_blocks_{i}_res_{j}")(x)
        if i == 0:
          x = Attention(self.groups, self.dtype, name=f"conv_blocks_{i}_attn_{j}")(x)
      if i != len(mults) - 1:
        x = Upsample(self.dtype, name=f"conv_blocks_{i}_upsample")(x)
    x = nn.silu(group_norm(self.groups, self.dtype, "norm_out")(x))
    return conv(self.out_channels, 3, self.dtype, name="conv_out")(x)


def _mid(x, groups, dtype):
  """LlamaGen's `mid` ModuleList: resnet, attention, resnet (called inside a compact
  method, so the modules are the caller's `mid_0`, `mid_1`, `mid_2`)."""
  width = x.shape[-1]
  x = ResnetBlock(width, groups, dtype, name="mid_0")(x)
  x = Attention(groups, dtype, name="mid_1")(x)
  return ResnetBlock(width, groups, dtype, name="mid_2")(x)


def codebook_init(key, shape, dtype=jnp.float32):
  """U(−1/K, 1/K), rows then ℓ2-normalized (LlamaGen `VectorQuantizer.__init__` with
  codebook_l2_norm; the lookup normalizes again, so the scale only matters without it)."""
  return vector_quantize.normalize(jax.random.uniform(key, shape, dtype, -1.0 / shape[0],
                                                      1.0 / shape[0]))


@MODELS.register("vq_model")
class VQModel(nn.Module):
  """A VQGAN tokenizer: images ↔ grids of codebook indices.

  `__call__(x)` → (recon, indices, losses) with losses {'codebook', 'commitment',
  'entropy'} (`vector_quantize.quantize`); `encode(x)` → (z_q, indices, losses);
  `decode(z_q)` → images; `decode_code(indices)` → images; `tokenize(x)` → indices.

  Attributes (LlamaGen `ModelArgs` names where it has them):
    in_channels, out_channels: image channels.
    channels: base width (`ch`); ch_mult: per-level multipliers (f = 2^(levels − 1)).
    num_res_blocks: resnets per encoder level (decoder levels get one more).
    z_channels: width of the encoder output / decoder input.
    codebook_size, codebook_embed_dim: K codes of width D.
    codebook_l2_norm: cosine lookup on ℓ2-normalized codes.
    commit_loss_beta: β of the commitment loss; entropy_loss_ratio: weight of the entropy
      loss (0 in LlamaGen's released tokenizers).
    norm_num_groups: GroupNorm groups (32 in LlamaGen).
    dtype: computation dtype (params float32; images, z_q float32).
  """
  in_channels: int = 3
  out_channels: int = 3
  channels: int = 128
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  z_channels: int = 256
  codebook_size: int = 16384
  codebook_embed_dim: int = 8
  codebook_l2_norm: bool = True
  commit_loss_beta: float = 0.25
  entropy_loss_ratio: float = 0.0
  norm_num_groups: int = 32
  dtype: Any = jnp.float32

  def setup(self):
    widths = [self.channels * m for m in self.ch_mult]
    if not widths or min(widths) <= 0 or any(w % self.norm_num_groups for w in widths):
      raise ValueError(f"norm_num_groups={self.norm_num_groups}, channels={self.channels}, "
                       f"ch_mult={tuple(self.ch_mult)}: expected positive widths that the "
                       "group count divides")
    if self.num_res_blocks < 1 or self.codebook_size < 2:
      raise ValueError(f"num_res_blocks={self.num_res_blocks}, codebook_size="
                       f"{self.codebook_size}: expected ≥ 1 and ≥ 2")
    self.encoder = Encoder(self.channels, tuple(self.ch_mult), self.num_res_blocks,
                           self.z_channels, self.norm_num_groups, self.dtype)
    self.decoder = Decoder(self.channels, tuple(self.ch_mult), self.num_res_blocks,
                           self.out_channels, self.norm_num_groups, self.dtype)
    self.quant_conv = conv(self.codebook_embed_dim, 1, self.dtype)
    self.post_quant_conv = conv(self.z_channels, 1, self.dtype)
    self.codebook = self.param(
        "codebook", nn.with_logical_partitioning(codebook_init, ("vocab", "norm")),
        (self.codebook_size, self.codebook_embed_dim), jnp.float32)

  @property
  def downsampling_factor(self) -> int:
    return 2 ** (len(tuple(self.ch_mult)) - 1)

  def encode(self, x: jax.Array) -> Tuple[jax.Array, jax.Array, Dict[str, jax.Array]]:
    """x [B, H, W, in_channels] in [−1, 1] → (z_q [B, h, w, D], indices [B, h, w], losses)."""
    f = self.downsampling_factor
    if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f"x.shape={x.shape}: expected [batch, height, width, "
                       f"{self.in_channels}] with height and width multiples of {f}")
    h = self.quant_conv(self.encoder(x.astype(self.dtype)))
    return vector_quantize.quantize(h, self.codebook, beta=self.commit_loss_beta,
                                    l2_norm=self.codebook_l2_norm,
                                    entropy_weight=self.entropy_loss_ratio)

  def decode(self, z_q: jax.Array) -> jax.Array:
    """z_q [B, h, w, D] → images [B, h·f, w·f, out_channels] float32."""
    return self.decoder(self.post_quant_conv(z_q.astype(self.dtype))).astype(jnp.float32)

  def codes_to_latents(self, indices: jax.Array) -> jax.Array:
    """indices [B, h, w] → z_q [B, h, w, D] (`get_codebook_entry`)."""
    return vector_quantize.lookup_codebook(self.codebook, self.codebook_l2_norm)[indices]

  def decode_code(self, indices: jax.Array) -> jax.Array:
    """indices [B, h, w] int → images."""
    return self.decode(self.codes_to_latents(indices))

  def tokenize(self, x: jax.Array) -> jax.Array:
    """x → indices [B, h, w] int32."""
    return self.encode(x)[1]

  def __call__(self, x: jax.Array) -> Tuple[jax.Array, jax.Array, Dict[str, jax.Array]]:
    z_q, indices, losses = self.encode(x)
    return self.decode(z_q), indices, losses
