"""U-DiT: a U-shaped diffusion transformer with token-downsampled self-attention.

Tian et al., "U-DiTs: Downsample Tokens in U-Shaped Diffusion Transformers" (NeurIPS
2024); follows the official YuchuanTian/U-DiT `udit_models.py` (`U_DiT`, `U_DiTBlock`,
`FeedForward`, `Downsample`, `Upsample`, `FinalLayer`):

  x [B, H, W, C] ─conv3×3→ h ─ encoder1 (h, H) ─Down→ encoder2 (2h, H/2) ─Down→
  latent (4h, H/4) ─Up→ ⊕encoder2 ─1x1→ decoder2 (2h, H/2) ─Up→ ⊕encoder1 ─1x1→
  decoder1 (2h, H) ─conv3×3→ FinalLayer (adaLN, conv3×3 → C or 2C)

Down = conv3×3 (n → n/2, no bias) + PixelUnshuffle(2); Up = conv3×3 (n → 2n) +
PixelShuffle(2); ⊕ concatenates the skip connection (channels last). Each stage has
`depth[s]` blocks of two layers (the reference `U_DiTBlock` holds attn1/mlp1 and
attn2/mlp2), each layer x += g·Attn(mod(LN(x))), x += g·FFN(mod(LN(x))) with adaLN-Zero.
Stages 1 / 2 / 3 get their own timestep and label embedders of width h / 2h / 4h
(c1: encoder1; c3: latent; c2: the rest and the final layer).

The paper's modifications are fields, so each can be ablated (Table 9, Table 10's
"vanilla" = attn_type='dot', rope=False, ffn='mlp'):
  * token downsampling (`down_factor`, `downsampler`, `down_shortcut`), see
    `effcomp.nn.downsampled_attention`;
  * cosine-similarity attention (`attn_type='cosine'`) and RoPE2D (`rope`);
  * FFN: 'mlp' (1×1 conv, tanh-GELU, 1×1), 'dwconv' (1×1, GELU, depthwise 5×5, 1×1) or
    'rep' (training-time re-parameterization: 1×1 pairs through hidden/2 and a
    depthwise 5×5 + 3×3 + 1×1 + identity branch set); `reparameterize` folds a 'rep'
    model's parameters into the equivalent 'dwconv' model (reference `add_buffer`).

Deviation: the reference draws label dropout independently in each stage's label
embedder; here one draw per sample is shared by the three stages (so a dropped label is
dropped everywhere, as it is when sampling with guidance).
"""

from collections.abc import Mapping
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.dit.dit import (LabelEmbedder, TimestepEmbedder, adaln, guided_output,
                                    label_drop_mask, layer_norm, modulate)
from effcomp.nn import layer_scan, lean_backward
from effcomp.nn.depthwise_conv import DepthwiseConv, depthwise_conv2d
from effcomp.nn.pixel_shuffle import pixel_shuffle, pixel_unshuffle
from effcomp.nn.downsampled_attention import (ATTN_TYPES, DownsampledAttention, conv_inits,
                                              xavier_dense)
from effcomp.registry import MODELS

STAGES = ("encoder1", "encoder2", "latent", "decoder2", "decoder1")
FFN_TYPES = ("rep", "dwconv", "mlp")
REP_KERNELS = (5, 3, 1)
VANILLA = dict(attn_type="dot", rope=False, ffn="mlp")  # Table 10: no modifications.
# What a scanned stage keeps for the backward pass: the outputs of matmuls with weights.
SCAN_SAVES = jax.checkpoint_policies.dots_with_no_batch_dims_saveable

_WIDTHS = {"S": (96, 4), "B": (192, 8), "L": (384, 16)}  # Table 8: channel, heads.
UDIT_SIZES = {f"U-DiT-{k}": dict(hidden_size=w, num_heads=h) for k, (w, h) in _WIDTHS.items()}
UDIT_SIZES.update({f"U-DiT-{k}-vanilla": dict(hidden_size=w, num_heads=h, **VANILLA)
                   for k, (w, h) in _WIDTHS.items()})


def conv(features: int, kernel: int, dtype, name: str, use_bias: bool = True,
         depthwise: bool = False, init=None) -> nn.Module:
  """A stride-1 'same' k×k conv (dense or depthwise), Xavier-uniform kernel, zero bias."""
  inits = conv_inits(depthwise, init)
  if depthwise:
    return DepthwiseConv(kernel, use_bias=use_bias, dtype=dtype, name=name, **inits)
  return nn.Conv(features, (kernel, kernel), padding="SAME", use_bias=use_bias, dtype=dtype,
                 name=name, **inits)


class FeedForward(nn.Module):
  """x: [B, H, W, C] → [B, H, W, C] with hidden width `hidden` (module docstring)."""
  hidden: int
  kind: str = "rep"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, hid = x.shape[-1], self.hidden
    dense = lambda n, axes, name: xavier_dense(n, axes, self.dtype, name)
    if self.kind == "mlp":
      h = lean_backward.gelu(dense(hid, ("embed", "mlp"), "fc1")(x), approximate=True)
      return dense(c, ("mlp", "embed"), "fc2")(h)
    if self.kind == "dwconv":
      h = lean_backward.gelu(dense(hid, ("embed", "mlp"), "project_in")(x), approximate=False)
      h = conv(hid, 5, self.dtype, "dwconv", depthwise=True)(h)
      return dense(c, ("mlp", "embed"), "project_out")(h)
    if self.kind != "rep":
      raise ValueError(f"ffn={self.kind!r}: expected one of {FFN_TYPES}")
    h = dense(hid // 2, ("embed", "mlp"), "project_in_0")(x)
    h = lean_backward.gelu(dense(hid, ("mlp", "mlp"), "project_in_1")(h), approximate=False)
    # h + Σ_k DWConv_k(h) run as the one depthwise 5×5 it equals (the branches' kernels
    # and the identity folded each step, so the gradients reach every branch): a third of
    # the convolution work of running the branches, the same function.
    kernel, bias = fold_rep_branches({f"dwconv_{k}": RepBranch(k, name=f"dwconv_{k}")(hid)
                                      for k in REP_KERNELS})
    h, kernel, bias = nn.dtypes.promote_dtype(h, kernel, bias, dtype=self.dtype)
    h = depthwise_conv2d(h, kernel) + bias
    h = dense(hid // 2, ("mlp", "mlp"), "project_out_0")(h)
    return dense(c, ("mlp", "embed"), "project_out_1")(h)


class RepBranch(nn.Module):
  """The parameters of one depthwise k×k branch of the 'rep' FFN, declared as
  `conv(..., depthwise=True)` declares them (same names, shapes, `conv_inits`)."""
  kernel_size: int

  @nn.compact
  def __call__(self, channels: int) -> dict:
    k, inits = self.kernel_size, conv_inits(depthwise=True)
    return {"kernel": self.param("kernel", inits["kernel_init"], (k, k, 1, channels),
                                 jnp.float32),
            "bias": self.param("bias", inits["bias_init"], (channels,), jnp.float32)}


def fold_rep_branches(p: Mapping) -> Tuple[jax.Array, jax.Array]:
  """{'dwconv_5', 'dwconv_3', 'dwconv_1'} branch params → (kernel [5, 5, 1, C], bias [C])
  of the one depthwise 5×5 equal to identity + the three branches (`add_buffer`)."""
  big = max(REP_KERNELS)
  kernel = sum(jnp.pad(p[f"dwconv_{k}"]["kernel"] + (k == 1),
                       ((big // 2 - k // 2,) * 2, (big // 2 - k // 2,) * 2, (0, 0), (0, 0)))
               for k in REP_KERNELS)
  return kernel, sum(p[f"dwconv_{k}"]["bias"] for k in REP_KERNELS)


def _merge_rep_ffn(p: dict) -> dict:
  """One 'rep' FFN's params → the 'dwconv' FFN computing the same function."""
  def chain(a, b):  # (x @ w1 + b1) @ w2 + b2
    return {"kernel": a["kernel"] @ b["kernel"], "bias": a["bias"] @ b["kernel"] + b["bias"]}
  kernel, bias = fold_rep_branches(p)
  return {"project_in": chain(p["project_in_0"], p["project_in_1"]),
          "dwconv": {"kernel": kernel, "bias": bias},
          "project_out": chain(p["project_out_0"], p["project_out_1"])}


def reparameterize(params: Any) -> Any:
  """Params of a U-DiT with ffn='rep' → params of the same model with ffn='dwconv'.

  Folds the 1×1 pairs into one 1×1 each and the 5×5 + 3×3 + 1×1 + identity branches into
  one depthwise 5×5 (reference `FeedForward.add_buffer`); exact up to float rounding.
  Takes (possibly boxed) params, returns unboxed ones.
  """
  params = nn.unbox(params)
  if isinstance(params, Mapping) and "project_in_0" in params:
    return _merge_rep_ffn(params)
  if isinstance(params, Mapping):
    return {k: reparameterize(v) for k, v in params.items()}
  return params


class UDiTLayer(nn.Module):
  """Downsampled attention + FFN with adaLN-Zero on x: [B, H, W, C], c: [B, C]."""
  num_heads: int
  mlp_ratio: float
  down_factor: int
  downsampler: str
  down_shortcut: bool
  attn_type: str
  rope: bool
  ffn: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    idx = (slice(None), None, None)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln(
        c, 6, self.dtype, "adaLN_modulation")
    attn = DownsampledAttention(self.num_heads, self.down_factor, self.downsampler,
                                self.down_shortcut, self.attn_type, self.rope, dtype=self.dtype,
                                name="attn")
    ffn = FeedForward(int(x.shape[-1] * self.mlp_ratio), self.ffn, self.dtype, name="ffn")
    x = x + gate_msa[idx] * attn(modulate(layer_norm(self.dtype, "norm1")(x), shift_msa, scale_msa))
    return x + gate_mlp[idx] * ffn(modulate(layer_norm(self.dtype, "norm2")(x), shift_mlp,
                                            scale_mlp))


@MODELS.register("udit")
class UDiT(nn.Module):
  """U-DiT: x [B, H, W, C], t [B], y [B] → [B, H, W, C or 2C] (float32).

  Attributes (reference `U_DiT` and `U_DiT_S/B/L`; defaults = U-DiT with all mods):
    input_size, in_channels, hidden_size (h: stage widths h, 2h, 4h, 2h, 2h),
    depth (blocks per stage, 2 layers each), num_heads (the same in every stage),
    mlp_ratio, class_dropout_prob, num_classes, learn_sigma: as DiT.
    down_factor: token downsampling per layer (int, or one per stage).
    downsampler, down_shortcut, attn_type, rope: `DownsampledAttention`.
    ffn: 'rep' | 'dwconv' | 'mlp' (module docstring).
    remat: recompute each layer in the backward pass (all of it).
    scan_layers: run a stage's layers as one `lax.scan` (`effcomp.nn.layer_scan`; the
      parameter tree is the same either way); a bool or one per stage. Default: the three inner
      stages scanned (U-DiT-S's train step compiles in 33 s instead of 58 s), the two
      full-resolution stages unrolled, where stacking each layer's residuals for the
      backward costs more time than the scan saves (issue 22's profile). A scanned stage
      keeps only its weight matmuls' outputs for the backward pass and recomputes the rest
      (norms, activations, attention, depthwise convs) there (`SCAN_SAVES`): U-DiT-S's
      step on 2 CPU cores 2.8 → 2.6 s, its temporaries 3.3 → 2.4 GiB.
  """
  input_size: int = 32
  in_channels: int = 4
  hidden_size: int = 96
  depth: Tuple[int, ...] = (2, 5, 8, 5, 2)
  num_heads: int = 4
  mlp_ratio: float = 2.0
  class_dropout_prob: float = 0.1
  num_classes: int = 1000
  learn_sigma: bool = True
  down_factor: Union[int, Tuple[int, ...]] = 2
  downsampler: str = "dwconv5"
  down_shortcut: bool = True
  attn_type: str = "cosine"
  rope: bool = True
  ffn: str = "rep"
  remat: bool = False
  scan_layers: Union[bool, Tuple[bool, ...]] = (False, True, True, True, False)
  dtype: str = "float32"

  @property
  def out_channels(self) -> int:
    return 2 * self.in_channels if self.learn_sigma else self.in_channels

  @property
  def stage_channels(self) -> Tuple[int, ...]:
    h = self.hidden_size
    return (h, 2 * h, 4 * h, 2 * h, 2 * h)

  @property
  def stage_sizes(self) -> Tuple[int, ...]:
    s = self.input_size
    return (s, s // 2, s // 4, s // 2, s)

  @property
  def down_factors(self) -> Tuple[int, ...]:
    f = self.down_factor
    factors = (f,) * 5 if isinstance(f, int) else tuple(f)
    if len(factors) != 5:
      raise ValueError(f"down_factor={f}: expected an int or one per stage {STAGES}")
    return factors

  def check(self, x_shape: Optional[Sequence[int]] = None) -> None:
    """ValueError naming the field when the configuration (or x's shape) cannot work."""
    if len(self.depth) != 5:
      raise ValueError(f"depth={self.depth}: expected 5 entries, one per stage {STAGES}")
    if self.ffn not in FFN_TYPES:
      raise ValueError(f"ffn={self.ffn!r}: expected one of {FFN_TYPES}")
    if self.attn_type not in ATTN_TYPES:
      raise ValueError(f"attn_type={self.attn_type!r}: expected one of {ATTN_TYPES}")
    if self.hidden_size % 2 or self.input_size % 4:
      raise ValueError(f"hidden_size={self.hidden_size} must be even and input_size="
                       f"{self.input_size} a multiple of 4 (two 2× downsamplings)")
    for stage, c, size, f in zip(STAGES, self.stage_channels, self.stage_sizes, self.down_factors):
      if c % self.num_heads or (self.rope and (c // self.num_heads) % 4):
        raise ValueError(f"num_heads={self.num_heads}: stage {stage} width {c} needs a head "
                         "dimension that is an integer (and a multiple of 4 with rope)")
      if f < 1 or size % f:
        raise ValueError(f"down_factor={f} must divide stage {stage}'s {size}×{size} map")
      if self.ffn == "rep" and int(c * self.mlp_ratio) % 2:
        raise ValueError(f"mlp_ratio={self.mlp_ratio}: ffn='rep' needs an even hidden width")
    expected = (self.input_size, self.input_size, self.in_channels)
    if x_shape is not None and (len(x_shape) != 4 or tuple(x_shape[1:]) != expected):
      raise ValueError(f"x has shape {tuple(x_shape)}; expected [batch, "
                       f"{', '.join(map(str, expected))}] (NHWC: input_size, in_channels)")

  def _stage(self, s: int, x: jax.Array, c: jax.Array) -> jax.Array:
    args = (self.num_heads, self.mlp_ratio, self.down_factors[s], self.downsampler,
            self.down_shortcut, self.attn_type, self.rope, self.ffn, self.dtype)
    names = [f"{STAGES[s]}_{i}" for i in range(2 * self.depth[s])]
    scan = self.scan_layers if isinstance(self.scan_layers, bool) else self.scan_layers[s]
    if scan and names and not self.is_initializing():
      x = layer_scan.scan_layers(self, [UDiTLayer(*args)], [[n] for n in names], x, c,
                                 remat=True, policy=None if self.remat else SCAN_SAVES)
    else:
      layer_cls = nn.remat(UDiTLayer) if self.remat else UDiTLayer
      for name in names:
        x = layer_cls(*args, name=name)(x, c)
    self.sow("intermediates", STAGES[s], x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False,
               force_drop_ids: Optional[jax.Array] = None) -> jax.Array:
    """As `DiT.__call__`; stage outputs are sown into 'intermediates' (names `STAGES`)."""
    self.check(x.shape)
    h, dt = self.hidden_size, self.dtype
    like_linear = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", (0, 1, 2), 3)
    x = conv(h, 3, dt, "x_embedder", init=like_linear)(x.astype(dt))
    drop = label_drop_mask(self, y, self.class_dropout_prob, train, force_drop_ids)
    c1, c2, c3 = (TimestepEmbedder(w, dtype=dt, name=f"t_embedder_{k}")(t)
                  + LabelEmbedder(self.num_classes, w, self.class_dropout_prob, dt,
                                  name=f"y_embedder_{k}")(y, drop)
                  for k, w in ((1, h), (2, 2 * h), (3, 4 * h)))
    enc1 = self._stage(0, x, c1)
    enc2 = self._stage(1, pixel_unshuffle(conv(h // 2, 3, dt, "down1_2", False)(enc1), 2), c2)
    lat = self._stage(2, pixel_unshuffle(conv(h, 3, dt, "down2_3", False)(enc2), 2), c3)
    x = pixel_shuffle(conv(8 * h, 3, dt, "up3_2", False)(lat), 2)
    x = xavier_dense(2 * h, ("conv_in", "conv_out"), dt, "reduce_chan_level2")(
        jnp.concatenate([x, enc2], axis=-1))
    x = self._stage(3, x, c2)
    x = pixel_shuffle(conv(4 * h, 3, dt, "up2_1", False)(x), 2)
    x = xavier_dense(2 * h, ("conv_in", "conv_out"), dt, "reduce_chan_level1")(
        jnp.concatenate([x, enc1], axis=-1))
    x = conv(2 * h, 3, dt, "output")(self._stage(4, x, c2))
    shift, scale = adaln(c2, 2, dt, "final_adaLN_modulation")
    x = modulate(layer_norm(dt, "final_norm")(x), shift, scale)
    x = conv(self.out_channels, 3, dt, "final_out_proj", init=nn.initializers.zeros)(x)
    return x.astype(jnp.float32)

  def forward_with_cfg(self, x: jax.Array, t: jax.Array, y: jax.Array, cfg_scale: float,
                       guided_channels: Optional[int] = None) -> jax.Array:
    """As `DiT.forward_with_cfg`."""
    half = x[: x.shape[0] // 2]
    out = self(jnp.concatenate([half, half], axis=0), t, y)
    return guided_output(out, cfg_scale, guided_channels or self.in_channels)
