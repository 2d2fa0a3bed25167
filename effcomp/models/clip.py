"""CLIP (ViT image tower + causal text tower + projections), as transformers' `CLIPModel`.

    model, variables = effcomp.convert.clip.load_clip("path/to/clip")   # HF safetensors folder
    pixels = preprocess(images_0_1, model.config.vision.image_size)      # [B, H, W, 3] NHWC
    image = model.apply(variables, pixels, method=CLIP.encode_image)     # [B, projection_dim]
    text = model.apply(variables, ids, method=CLIP.encode_text)          # [T, projection_dim]
    logits_per_image = model.apply(variables, pixels, ids)               # [B, T]

Follows `transformers/models/clip/modeling_clip.py` (v5.24) line by line:
`CLIPVisionEmbeddings` (bias-free stride-p patch conv, class embedding prepended, learned
positions), `CLIPVisionModel` (pre_layrnorm → encoder → post_layernorm on the CLS token),
`CLIPTextEmbeddings` + `CLIPTextModel` (token + position embedding, causal mask combined
with the padding mask, final_layer_norm, pooled state at the EOS token), `CLIPEncoderLayer`
(pre-LN: x + attn(LN1(x)), x + mlp(LN2(x))), `CLIPModel.forward` (bias-free projections,
logits_per_image = exp(logit_scale) · normalized image @ normalized text.T). Config fields
and defaults are `configuration_clip.py`'s. Module names mirror HF's (`layers.3` is
`layers_3`), so `effcomp.convert.clip` maps checkpoints by name.

Images are NHWC here (JAX's layout); HF's `pixel_values` are NCHW. Parameters carry
logical axis names from `effcomp.train.sharding.LOGICAL_RULES`.
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.nn.dense import dense

# `transformers.image_utils.OPENAI_CLIP_MEAN / OPENAI_CLIP_STD` (CLIPImageProcessor's).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# `transformers/activations.py` ACT2FN entries CLIP checkpoints use.
ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # QuickGELUActivation
    "gelu": functools.partial(nn.gelu, approximate=False),  # GELUActivation (erf)
    "gelu_new": functools.partial(nn.gelu, approximate=True),  # NewGELUActivation (tanh)
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
}

# transformers' sub-config field names → ours.
_RENAMED = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads"}


def _fields_from_hf(cls, config: Mapping[str, Any], where: str) -> Dict[str, Any]:
  """`cls`'s fields from an HF sub-config dict; absent ones keep cls's defaults (which are
  configuration_clip.py's). ValueError naming an unsupported field."""
  names = {f.name for f in dataclasses.fields(cls)}
  fields = {_RENAMED.get(k, k): v for k, v in config.items() if _RENAMED.get(k, k) in names}
  values = {**{f.name: f.default for f in dataclasses.fields(cls)}, **fields}
  if values["hidden_act"] not in ACTIVATIONS:
    raise ValueError(f"config.json {where}.hidden_act={values['hidden_act']!r}: expected one "
                     f"of {sorted(ACTIVATIONS)}")
  if values["hidden_size"] % values["num_heads"]:
    raise ValueError(f"config.json {where}.hidden_size={values['hidden_size']} is not "
                     f"divisible by num_attention_heads={values['num_heads']}")
  return values


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """transformers' `CLIPTextConfig` fields the text tower uses, with its defaults."""
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_layers: int = 12
  num_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 49407

  @classmethod
  def from_hf(cls, config: Mapping[str, Any]) -> "CLIPTextConfig":
    """From config.json's `text_config` dict."""
    values = _fields_from_hf(cls, config, "text_config")
    eos = values["eos_token_id"]
    if isinstance(eos, (list, tuple)) and len(eos) == 1:
      values["eos_token_id"] = eos = eos[0]
    if not isinstance(eos, int):
      raise ValueError(f"config.json text_config.eos_token_id={eos!r}: expected one int "
                       "(the pooled state is read at that token)")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """transformers' `CLIPVisionConfig` fields the image tower uses, with its defaults."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_layers: int = 12
  num_heads: int = 12
  image_size: int = 224
  patch_size: int = 32
  num_channels: int = 3
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5

  @classmethod
  def from_hf(cls, config: Mapping[str, Any]) -> "CLIPVisionConfig":
    """From config.json's `vision_config` dict."""
    values = _fields_from_hf(cls, config, "vision_config")
    for name in ("image_size", "patch_size"):  # CLIPVisionEmbeddings assumes square ints.
      value = values[name]
      if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        values[name] = value[0]
      if not isinstance(values[name], int):
        raise ValueError(f"config.json vision_config.{name}={value!r}: expected one int "
                         "(square images and patches)")
    if values["image_size"] % values["patch_size"]:
      raise ValueError(f"config.json vision_config.patch_size={values['patch_size']} does "
                       f"not divide image_size={values['image_size']}")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """transformers' `CLIPConfig`: both towers, the projection width, logit_scale's init."""
  text: CLIPTextConfig = CLIPTextConfig()
  vision: CLIPVisionConfig = CLIPVisionConfig()
  projection_dim: int = 512
  logit_scale_init_value: float = 2.6592

  @classmethod
  def from_hf(cls, config: Mapping[str, Any]) -> "CLIPConfig":
    """From a CLIPModel config.json dict (legacy `*_config_dict` keys override, as in HF)."""
    if config.get("model_type", "clip") != "clip":
      raise ValueError(f"config.json model_type={config['model_type']!r}: expected 'clip'")
    text = {**(config.get("text_config") or {}), **(config.get("text_config_dict") or {})}
    vision = {**(config.get("vision_config") or {}),
              **(config.get("vision_config_dict") or {})}
    return cls(text=CLIPTextConfig.from_hf(text), vision=CLIPVisionConfig.from_hf(vision),
               projection_dim=config.get("projection_dim", cls.projection_dim),
               logit_scale_init_value=float(config.get("logit_scale_init_value",
                                                       cls.logit_scale_init_value)))


def layer_norm(eps: float, dtype, name: str) -> nn.LayerNorm:
  # Two-pass variance, as torch computes it; E[x²]-E[x]² loses digits on large activations.
  return nn.LayerNorm(
      epsilon=eps, dtype=dtype, use_fast_variance=False, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


def _embed(num: int, features: int, first_axis: Optional[str], dtype, name: str) -> nn.Embed:
  init = nn.initializers.normal(0.02)  # CLIP's initializer_range.
  return nn.Embed(num, features, dtype=dtype, name=name,
                  embedding_init=nn.with_logical_partitioning(init, (first_axis, "embed")))


class CLIPAttention(nn.Module):
  """Multi-head self-attention (`CLIPAttention`): q/k/v/out projections, all with bias.

  x: [batch, tokens, embed]; mask: [batch, tokens, tokens] bool (True = may attend) or None.
  """
  num_heads: int
  dtype: Any

  @nn.compact
  def __call__(self, x, mask=None):
    batch, tokens, hidden = x.shape
    head_dim = hidden // self.num_heads

    def heads(name):
      y = dense(hidden, "embed", "heads", self.dtype, name=name)(x)
      return y.reshape(batch, tokens, self.num_heads, head_dim)

    attended = jax.nn.dot_product_attention(
        heads("q_proj"), heads("k_proj"), heads("v_proj"),
        mask=None if mask is None else mask[:, None], scale=head_dim ** -0.5,
        implementation="xla")
    return dense(hidden, "heads", "embed", self.dtype, name="out_proj")(
        attended.reshape(batch, tokens, hidden))


class CLIPMLP(nn.Module):
  """fc2(act(fc1(x))) (`CLIPMLP`); x: [batch, tokens, embed]."""
  intermediate_size: int
  hidden_act: str
  dtype: Any

  @nn.compact
  def __call__(self, x):
    y = dense(self.intermediate_size, "embed", "mlp", self.dtype, name="fc1")(x)
    return dense(x.shape[-1], "mlp", "embed", self.dtype, name="fc2")(
        ACTIVATIONS[self.hidden_act](y))


class CLIPEncoderLayer(nn.Module):
  """`CLIPEncoderLayer` (pre-LN): x + self_attn(LN1(x)), then x + mlp(LN2(x)).

  config: a CLIPTextConfig or CLIPVisionConfig; x: [batch, tokens, embed]; mask: [batch,
  tokens, tokens] bool or None.
  """
  config: Any
  dtype: Any

  @nn.compact
  def __call__(self, x, mask=None):
    c = self.config
    y = layer_norm(c.layer_norm_eps, self.dtype, "layer_norm1")(x)
    x = x + CLIPAttention(c.num_heads, self.dtype, name="self_attn")(y, mask)
    y = layer_norm(c.layer_norm_eps, self.dtype, "layer_norm2")(x)
    return x + CLIPMLP(c.intermediate_size, c.hidden_act, self.dtype, name="mlp")(y)


class CLIPEncoder(nn.Module):
  """`CLIPEncoder`: `num_layers` CLIPEncoderLayers, named `layers_0` … (HF `layers.0` …).

  x: [batch, tokens, embed] → (x, layer 1 output, …, layer N output): N + 1 arrays, as
  transformers' `hidden_states` with output_hidden_states=True.
  """
  config: Any
  dtype: Any

  @nn.compact
  def __call__(self, x, mask=None) -> Tuple[jax.Array, ...]:
    hidden = [x]
    for i in range(self.config.num_layers):
      x = CLIPEncoderLayer(self.config, self.dtype, name=f"layers_{i}")(x, mask)
      hidden.append(x)
    return tuple(hidden)


class CLIPTextEmbeddings(nn.Module):
  """token_embedding(ids) + position_embedding(0 … tokens-1) (`CLIPTextEmbeddings`)."""
  config: CLIPTextConfig
  dtype: Any

  @nn.compact
  def __call__(self, input_ids):
    c, tokens = self.config, input_ids.shape[1]
    return (_embed(c.vocab_size, c.hidden_size, "vocab", self.dtype, "token_embedding")(input_ids)
            + _embed(c.max_position_embeddings, c.hidden_size, None, self.dtype,
                     "position_embedding")(jnp.arange(tokens)[None]))


class CLIPVisionEmbeddings(nn.Module):
  """[class_embedding; patch_embedding(x)] + position_embedding (`CLIPVisionEmbeddings`).

  pixel_values: [batch, H, W, C] (NHWC) → [batch, 1 + (H/p)·(W/p), embed].
  """
  config: CLIPVisionConfig
  dtype: Any

  @nn.compact
  def __call__(self, pixel_values):
    c, p = self.config, self.config.patch_size
    patches = nn.Conv(
        c.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False,
        dtype=self.dtype, name="patch_embedding",
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("height", "width", "conv_in", "embed")))(
                pixel_values.astype(self.dtype))
    batch = patches.shape[0]
    patches = patches.reshape(batch, -1, c.hidden_size)  # Row-major, as torch's flatten(2).
    cls = self.param("class_embedding",
                     nn.with_logical_partitioning(nn.initializers.normal(c.hidden_size ** -0.5),
                                                  ("embed",)), (c.hidden_size,))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(patches.dtype), (batch, 1, c.hidden_size)),
                         patches], axis=1)
    positions = (c.image_size // p) ** 2 + 1
    return x + _embed(positions, c.hidden_size, None, self.dtype, "position_embedding")(
        jnp.arange(positions)[None])


class CLIPTextTransformer(nn.Module):
  """The text tower (`CLIPTextModel`): causal encoder, final LayerNorm, EOS pooling.

  input_ids: [batch, tokens] int; attention_mask: [batch, tokens] (1 = real token) or None
  → (pooled [batch, hidden], last_hidden_state [batch, tokens, hidden]), float32.
  The pooled state is read, as in transformers, at argmax(input_ids) when eos_token_id == 2
  (checkpoints from before transformers PR #24773, whose EOT id is the vocabulary's
  largest) and otherwise at the first position holding eos_token_id.
  """
  config: CLIPTextConfig
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, input_ids, attention_mask=None):
    c = self.config
    batch, tokens = input_ids.shape
    if tokens > c.max_position_embeddings:
      raise ValueError(f"input_ids has {tokens} tokens; the model has "
                       f"max_position_embeddings={c.max_position_embeddings}")
    x = CLIPTextEmbeddings(c, self.dtype, name="embeddings")(input_ids)
    mask = jnp.tril(jnp.ones((tokens, tokens), bool))[None]
    if attention_mask is not None:  # Padded keys are masked too (masking_utils).
      mask = mask & jnp.asarray(attention_mask).astype(bool)[:, None, :]
    mask = jnp.broadcast_to(mask, (batch, tokens, tokens))
    x = CLIPEncoder(c, self.dtype, name="encoder")(x, mask)[-1]
    x = layer_norm(c.layer_norm_eps, self.dtype, "final_layer_norm")(x).astype(jnp.float32)
    legacy = c.eos_token_id == 2
    eos = jnp.argmax(input_ids if legacy else (input_ids == c.eos_token_id).astype(jnp.int32),
                     axis=-1)
    return x[jnp.arange(batch), eos], x


class CLIPVisionTransformer(nn.Module):
  """The image tower (`CLIPVisionModel`): embeddings, pre_layrnorm, encoder, post_layernorm.

  pixel_values: [batch, image_size, image_size, channels] NHWC, normalized (`preprocess`)
  → (pooled [batch, hidden] = post_layernorm(CLS state of the last layer), hidden_states:
  num_layers + 1 arrays [batch, 1 + patches, hidden], float32: the embeddings after
  pre_layrnorm, then each layer's output, as transformers' `hidden_states`).
  """
  config: CLIPVisionConfig
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, pixel_values):
    c = self.config
    expected = (c.image_size, c.image_size, c.num_channels)
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
      raise ValueError(f"pixel_values has shape {pixel_values.shape}; expected NHWC "
                       f"[batch, {', '.join(map(str, expected))}] (HF's NCHW transposed)")
    x = CLIPVisionEmbeddings(c, self.dtype, name="embeddings")(pixel_values)
    x = layer_norm(c.layer_norm_eps, self.dtype, "pre_layrnorm")(x)
    hidden = CLIPEncoder(c, self.dtype, name="encoder")(x)
    pooled = layer_norm(c.layer_norm_eps, self.dtype, "post_layernorm")(hidden[-1][:, 0])
    return pooled.astype(jnp.float32), tuple(h.astype(jnp.float32) for h in hidden)


def _projection(features: int, dtype, name: str) -> nn.Dense:
  return nn.Dense(features, use_bias=False, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                           ("embed", None)))


def l2_normalize(x):
  """x / ‖x‖₂ along the last axis (`_get_vector_norm` in modeling_clip.py: no epsilon)."""
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))


class CLIP(nn.Module):
  """`CLIPModel`: both towers, bias-free projections to projection_dim, and logit_scale.

  `__call__(pixel_values, input_ids, attention_mask=None)` → logits_per_image [images,
  texts] = exp(logit_scale) · normalized image embeds @ normalized text embeds.T
  (logits_per_text is its transpose). Initialize with `model.init(rng, pixel_values,
  input_ids)`; the methods below need all parameters.
  """
  config: CLIPConfig
  dtype: Any = "float32"

  def setup(self):
    self.text_model = CLIPTextTransformer(self.config.text, self.dtype)
    self.vision_model = CLIPVisionTransformer(self.config.vision, self.dtype)
    self.visual_projection = _projection(self.config.projection_dim, self.dtype,
                                         "visual_projection")
    self.text_projection = _projection(self.config.projection_dim, self.dtype, "text_projection")
    self.logit_scale = self.param(
        "logit_scale", nn.with_logical_partitioning(
            nn.initializers.constant(self.config.logit_scale_init_value), ()), ())

  def encode_image(self, pixel_values, return_hidden: bool = False):
    """Image embeds [batch, projection_dim] (`get_image_features`), unnormalized.

    pixel_values: [batch, H, W, C] NHWC, normalized by OPENAI_CLIP_MEAN/STD (`preprocess`).
    return_hidden: also return the vision tower's hidden states (num_layers + 1 arrays
    [batch, 1 + patches, hidden]; see CLIPVisionTransformer), e.g. for perceptual losses.
    """
    pooled, hidden = self.vision_model(pixel_values)
    embeds = self.visual_projection(pooled).astype(jnp.float32)
    return (embeds, hidden) if return_hidden else embeds

  def encode_text(self, input_ids, attention_mask=None):
    """Text embeds [batch, projection_dim] (`get_text_features`), unnormalized.

    input_ids: [batch, tokens] int; attention_mask: [batch, tokens] (1 = real) or None.
    """
    pooled, _ = self.text_model(input_ids, attention_mask)
    return self.text_projection(pooled).astype(jnp.float32)

  def __call__(self, pixel_values, input_ids, attention_mask=None):
    image = l2_normalize(self.encode_image(pixel_values))
    text = l2_normalize(self.encode_text(input_ids, attention_mask))
    return jnp.exp(self.logit_scale) * image @ text.T


def preprocess(images, size: int,
               mean: Tuple[float, ...] = OPENAI_CLIP_MEAN,
               std: Tuple[float, ...] = OPENAI_CLIP_STD):
  """CLIP pixel values [batch, size, size, 3] from images [batch, H, W, 3] in [0, 1].

  Bicubic resize (antialiased when shrinking; `jax.image.resize`) straight to size × size,
  then (x - mean) / std. Differentiable. An approximation of `CLIPImageProcessor`, which
  resizes the short side to `size` with PIL (on uint8, clamped), center-crops size × size,
  then normalizes: non-square images are stretched here rather than cropped, and values are
  not rounded or clamped.
  """
  if images.ndim != 4 or images.shape[-1] != len(mean):
    raise ValueError(f"images has shape {images.shape}; expected [batch, H, W, {len(mean)}] "
                     "(NHWC, values in [0, 1])")
  if not isinstance(size, int) or size < 1:
    raise ValueError(f"size={size!r}: expected a positive int (the model's image_size)")
  images = jnp.asarray(images, jnp.float32)
  resized = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]),
                             method="bicubic", antialias=True)
  return (resized - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
