"""diffusers `AutoencoderKL` folders ↔ effcomp `AutoencoderKL` and its params.

    model, params = load("path/to/sd-vae-ft-ema")   # config.json + safetensors weights
    mean, logvar = model.apply({"params": params}, images, method="encode")
    save("out/", model, params)                     # AutoencoderKL.from_pretrained reads it

The folder layout is what diffusers' `ModelMixin.save_pretrained` writes
(`modeling_utils.py`, `utils/constants.py`): `config.json` and
`diffusion_pytorch_model[.<variant>].safetensors`, or shards listed in
`diffusion_pytorch_model[.<variant>].safetensors.index.json`. Config defaults are those of
`AutoencoderKL.__init__` (`autoencoders/autoencoder_kl.py`).

Names: a flax path element `name_<i>` is diffusers' `name.<i>`; leaves `kernel` → `weight`
(conv HWIO ↔ OIHW, dense [in, out] ↔ [out, in]), GroupNorm `scale` → `weight`, `bias` →
`bias`. Checkpoints saved before diffusers 0.14 name the attention projections `query`,
`key`, `value`, `proj_attn`; they are renamed as diffusers' `ModelMixin.
_convert_deprecated_attention_blocks` does (and 1×1-conv shaped [C, C, 1, 1] ones squeezed).
"""

import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import numpy as safetensors_np

from effcomp.models.lm import hf_checkpoint
from effcomp.models.vae.autoencoder_kl import AutoencoderKL, check_config

WEIGHTS_NAME = "diffusion_pytorch_model"
CONFIG_NAME = hf_checkpoint.CONFIG_FILE
DIFFUSERS_VERSION = "0.42.1"  # recorded in saved configs: the version the tests compare with
# `AutoencoderKL.__init__` defaults, for fields a config.json may omit.
DEFAULTS = dict(in_channels=3, out_channels=3, block_out_channels=(64,), layers_per_block=1,
                act_fn="silu", latent_channels=4, norm_num_groups=32, scaling_factor=0.18215,
                shift_factor=None, use_quant_conv=True, use_post_quant_conv=True,
                mid_block_add_attention=True)
DOWN_BLOCK, UP_BLOCK = "DownEncoderBlock2D", "UpDecoderBlock2D"
DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
DTYPES = {"float32": np.float32, "float16": np.float16}


def _field(config: Mapping[str, Any], name: str) -> Any:
  return config[name] if name in config else DEFAULTS[name]


def model_from_config(config: Mapping[str, Any], dtype: str = "float32") -> AutoencoderKL:
  """The `AutoencoderKL` a diffusers `config.json` describes, computing in `dtype`.

  Raises:
    ValueError: for a config of another class or a feature this model lacks (other block
      types or activations), naming the field.
  """
  class_name = config.get("_class_name", "AutoencoderKL")
  if class_name != "AutoencoderKL":
    raise ValueError(f"_class_name={class_name!r}: expected 'AutoencoderKL'")
  if _field(config, "act_fn") != "silu":
    raise ValueError(f"act_fn={config['act_fn']!r}: only 'silu' is supported")
  widths = tuple(int(w) for w in _field(config, "block_out_channels"))
  for key, block in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
    types = list(config.get(key, [block] * len(widths)))
    if types != [block] * len(widths):
      raise ValueError(f"{key}={types}: expected {len(widths)} × {block!r}, one per "
                       f"block_out_channels entry {widths}")
  fields = dict(
      in_channels=int(_field(config, "in_channels")),
      out_channels=int(_field(config, "out_channels")),
      block_out_channels=widths,
      layers_per_block=int(_field(config, "layers_per_block")),
      latent_channels=int(_field(config, "latent_channels")),
      norm_num_groups=int(_field(config, "norm_num_groups")),
      scaling_factor=float(_field(config, "scaling_factor")),
      shift_factor=float(_field(config, "shift_factor") or 0.0),
      use_quant_conv=bool(_field(config, "use_quant_conv")),
      use_post_quant_conv=bool(_field(config, "use_post_quant_conv")),
      mid_block_add_attention=bool(_field(config, "mid_block_add_attention")))
  check_config(widths, fields["layers_per_block"], fields["latent_channels"],
               fields["norm_num_groups"])
  return AutoencoderKL(**fields, dtype=dtype)


def config_from_model(model: AutoencoderKL) -> Dict[str, Any]:
  """A diffusers `config.json` dict for `model`."""
  widths = [int(w) for w in model.block_out_channels]
  return {
      "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION,
      "in_channels": model.in_channels, "out_channels": model.out_channels,
      "down_block_types": [DOWN_BLOCK] * len(widths), "up_block_types": [UP_BLOCK] * len(widths),
      "block_out_channels": widths, "layers_per_block": model.layers_per_block, "act_fn": "silu",
      "latent_channels": model.latent_channels, "norm_num_groups": model.norm_num_groups,
      "scaling_factor": model.scaling_factor, "shift_factor": model.shift_factor or None,
      "use_quant_conv": model.use_quant_conv, "use_post_quant_conv": model.use_post_quant_conv,
      "mid_block_add_attention": model.mid_block_add_attention, "force_upcast": True,
      "latents_mean": None, "latents_std": None}


def diffusers_name(path: Tuple[str, ...]) -> str:
  """diffusers tensor name of the param at `path`, e.g. ('decoder', 'up_blocks_0',
  'upsamplers_0', 'conv', 'kernel') → 'decoder.up_blocks.0.upsamplers.0.conv.weight'."""
  leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}
  if path[-1] not in leaf:
    raise ValueError(f"parameter {'/'.join(path)} has no diffusers counterpart")
  return ".".join([re.sub(r"_(\d+)$", r".\1", p) for p in path[:-1]] + [leaf[path[-1]]])


def _diffusers_shape(shape: Tuple[int, ...]) -> Tuple[int, ...]:
  """HWIO conv kernel → OIHW; [in, out] dense kernel → [out, in]; vectors unchanged."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(shape[::-1])


def _to_diffusers(array: np.ndarray) -> np.ndarray:
  return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T


def _from_diffusers(array: np.ndarray) -> np.ndarray:
  return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T


def param_shapes(model: AutoencoderKL) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  """{param path: shape} of `model` (traced, nothing allocated)."""
  side = model.downsampling_factor
  x = jnp.zeros((1, side, side, model.in_channels), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, sample_posterior=False))
  flat = flax.traverse_util.flatten_dict(nn.unbox(variables["params"]))
  return {path: tuple(v.shape) for path, v in flat.items()}


def _rename_deprecated(tensors: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Renames pre-0.14 mid-block attention tensors (query → to_q, …, proj_attn → to_out.0)."""
  renamed = {}
  pattern = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
  for name, array in tensors.items():
    match = pattern.match(name)
    if match:
      name = f"{match[1]}.{DEPRECATED_ATTENTION[match[2]]}.{match[3]}"
      if array.ndim == 4 and array.shape[2:] == (1, 1):  # 1×1-conv projections
        array = array[:, :, 0, 0]
    renamed[name] = array
  return renamed


def params_from_diffusers(tensors: Mapping[str, np.ndarray], model: AutoencoderKL
                          ) -> Dict[str, Any]:
  """`model`'s params (nested dict of float32 numpy arrays) from diffusers tensors.

  Raises:
    ValueError: naming every missing, misshapen and unexpected tensor.
  """
  tensors = _rename_deprecated(tensors)
  shapes = param_shapes(model)
  params, missing, misshapen = {}, [], []
  for path, shape in shapes.items():
    name, expected = diffusers_name(path), _diffusers_shape(shape)
    if name not in tensors:
      missing.append(name)
    elif tuple(tensors[name].shape) != expected:
      misshapen.append(f"{name} {tuple(tensors[name].shape)} ≠ {expected}")
    else:
      params[path] = _from_diffusers(np.asarray(tensors[name], np.float32))
  unexpected = sorted(set(tensors) - {diffusers_name(path) for path in shapes})
  if missing or misshapen or unexpected:
    raise ValueError(f"checkpoint does not fit the model: missing {sorted(missing)}, wrong "
                     f"shape {misshapen}, unexpected {unexpected}")
  return flax.traverse_util.unflatten_dict(params)


def params_to_diffusers(params: Any, model: AutoencoderKL) -> Dict[str, np.ndarray]:
  """diffusers tensors {name: float32 numpy array} of `model`'s (boxed or unboxed) params."""
  return hf_checkpoint.export_tensors(params, param_shapes(model), diffusers_name,
                                      lambda array, path: _to_diffusers(array))


def read_tensors(folder: str, variant: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Every tensor of the diffusers weights in `folder` (single file or sharded index)."""
  return hf_checkpoint.read_tensors(
      folder, WEIGHTS_NAME if variant is None else f"{WEIGHTS_NAME}.{variant}")


def load(folder: str, dtype: str = "float32", variant: Optional[str] = None
         ) -> Tuple[AutoencoderKL, Dict[str, Any]]:
  """(model computing in `dtype`, float32 params) of the diffusers AutoencoderKL in `folder`.

  Args:
    folder: holds `config.json` and the safetensors weights.
    dtype: the model's computation dtype (params are float32 whatever is on disk).
    variant: a weights variant, e.g. 'fp16' for `diffusion_pytorch_model.fp16.safetensors`.
  """
  model = model_from_config(hf_checkpoint.read_config(folder), dtype=dtype)
  return model, params_from_diffusers(read_tensors(folder, variant), model)


def save(folder: str, model: AutoencoderKL, params: Any, dtype: str = "float32") -> None:
  """Writes `config.json` and `diffusion_pytorch_model.safetensors` (float32 or float16)."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
  tensors = {n: a.astype(DTYPES[dtype]) for n, a in params_to_diffusers(params, model).items()}
  os.makedirs(folder, exist_ok=True)
  safetensors_np.save_file(tensors, os.path.join(folder, f"{WEIGHTS_NAME}.safetensors"),
                           metadata={"format": "pt"})
  with open(os.path.join(folder, CONFIG_NAME), "w") as f:
    json.dump(config_from_model(model), f, indent=2, sort_keys=True)
    f.write("\n")
