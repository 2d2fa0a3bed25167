"""Hugging Face LLaMA / Mistral / Qwen2 checkpoints ↔ effcomp `Llama` and its params.

    model, params = load("path/to/hf_model")               # config.json + safetensors
    logits = model.apply({"params": params}, tokens)
    save("out/", model, params, model_type="qwen2", dtype="bfloat16")

Names, defaults and architecture follow `transformers` 5.24:
  * `models/llama/{configuration,modeling}_llama.py` — weight names, `attention_bias`
    (biases on q, k, v *and* o_proj), `mlp_bias`, `head_dim`.
  * `models/mistral/{configuration,modeling}_mistral.py` — no biases; `sliding_window`
    (default 4096; `None` in Mistral v0.2+).
  * `models/qwen2/{configuration,modeling}_qwen2.py` — q/k/v biases always, o_proj none;
    `use_sliding_window`, `max_window_layers`, `layer_types`.
  * `modeling_rope_utils.py` (`RotaryEmbeddingConfigMixin`) — RoPE settings live in
    `rope_parameters = {"rope_type", "rope_theta", …}`; configs written by transformers
    4.x keep `rope_theta` at the top level and scaling in `rope_scaling` (`type` or
    `rope_type`). Both layouts are read; the exported config carries both.
  * `configuration_utils.py` — `dtype` (5.x) and `torch_dtype` (4.x) name the weights' dtype.

Sliding-window attention (Mistral `sliding_window`, Qwen2 `use_sliding_window`) is not
implemented by `Llama`: such checkpoints load with a warning, and their logits are exact
only while the whole context (prompt plus generated tokens) is ≤ the window, since
transformers lets query q see keys k with q - window < k ≤ q (`masking_utils.py`).
Every other feature `Llama` lacks (scaled RoPE, MLP/o_proj biases, other activations)
is a `ValueError` naming the config field.

effcomp kernels are `[in, out]`, HF `nn.Linear.weight` is `[out, in]`: 2-D projection
weights are transposed both ways; embeddings and norm scales are copied as they are.
"""

import re
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from effcomp.models.lm import hf_checkpoint
from effcomp.models.lm.llama import Llama

SUPPORTED = ("llama", "mistral", "qwen2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM"}
# Config-class defaults of the fields a config.json may omit (configuration_*.py).
DEFAULTS = {
    "llama": {"num_key_value_heads": None, "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
    "mistral": {"num_key_value_heads": 8, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                "sliding_window": 4096},
    "qwen2": {"num_key_value_heads": 32, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28},
}
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads")
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
# Non-persistent buffers some older checkpoints still contain; recomputed by `Llama`.
IGNORED = re.compile(r"(^|\.)rotary_emb\.(inv_freq|original_inv_freq)$")


def _field(config: Mapping[str, Any], name: str) -> Any:
  """`config[name]`, else the config class's default (an explicit null stays None)."""
  if name in REQUIRED and config.get(name) is None:
    raise ValueError(f"config.json lacks required field {name!r}")
  if name in config:
    return config[name]
  return DEFAULTS[config["model_type"]].get(name)


def rope_theta(config: Mapping[str, Any]) -> float:
  """RoPE base of an HF config; `ValueError` unless its RoPE is the unscaled default."""
  # transformers 5 lets a legacy `rope_scaling` win over `rope_parameters`.
  rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
  if any(isinstance(v, dict) for v in rope.values()):
    raise ValueError(f"rope_parameters={rope}: RoPE per layer type is not supported")
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"rope_type={rope_type!r} (rope_parameters/rope_scaling={rope}): only "
                     "unscaled 'default' RoPE is supported")
  partial = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
  if partial != 1.0:
    raise ValueError(f"partial_rotary_factor={partial}: only full rotary dims are supported")
  return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def sliding_window(config: Mapping[str, Any]) -> Optional[int]:
  """The attention window transformers applies to some layer, or None (full attention)."""
  if config["model_type"] == "mistral":
    return _field(config, "sliding_window")
  if config["model_type"] == "qwen2" and _field(config, "use_sliding_window"):
    layers = _field(config, "num_hidden_layers")
    types = config.get("layer_types") or [
        "sliding_attention" if i >= _field(config, "max_window_layers") else "full_attention"
        for i in range(layers)]
    if "sliding_attention" in types:
      return _field(config, "sliding_window")
  return None


def _check_supported(config: Mapping[str, Any]) -> None:
  model_type = config.get("model_type")
  if model_type not in SUPPORTED:
    raise ValueError(f"model_type={model_type!r}: supported model types are {SUPPORTED}")
  if _field(config, "hidden_act") not in (None, "silu"):
    raise ValueError(f"hidden_act={config['hidden_act']!r}: only 'silu' (SwiGLU) is supported")
  if model_type == "llama":
    for name in ("mlp_bias", "attention_bias"):  # attention_bias also biases o_proj.
      if config.get(name):
        raise ValueError(f"{name}={config[name]}: Llama has no MLP or o_proj biases")
  window = sliding_window(config)
  if window is not None:
    warnings.warn(f"sliding_window={window}: attention is exact only for contexts of ≤ "
                  f"{window} tokens (effcomp's Llama attends to the whole context)")


def model_from_hf_config(config: Mapping[str, Any], dtype: str = "float32") -> Llama:
  """The `Llama` an HF LLaMA/Mistral/Qwen2 `config.json` describes, computing in `dtype`."""
  _check_supported(config)
  heads = _field(config, "num_attention_heads")
  return Llama(
      vocab_size=_field(config, "vocab_size"),
      num_layers=_field(config, "num_hidden_layers"),
      embed_dim=_field(config, "hidden_size"),
      num_heads=heads,
      num_kv_heads=_field(config, "num_key_value_heads") or heads,
      head_dim=_field(config, "head_dim") or 0,
      mlp_dim=_field(config, "intermediate_size"),
      rope_theta=rope_theta(config),
      norm_eps=float(_field(config, "rms_norm_eps")),
      tie_embeddings=bool(_field(config, "tie_word_embeddings")),
      qkv_bias=config["model_type"] == "qwen2",
      dtype=dtype)


def hf_config_from_model(model: Llama, model_type: str = "llama", *,
                         max_position_embeddings: int = 4096,
                         dtype: str = "float32") -> Dict[str, Any]:
  """A `config.json` dict for `model` that `AutoConfig` (4.x and 5.x) loads.

  Args:
    model: the effcomp model.
    model_type: one of SUPPORTED; 'qwen2' needs `model.qkv_bias`, the others need it off.
    max_position_embeddings: context length recorded for HF (RoPE itself has no limit).
    dtype: dtype of the saved weights.
  """
  if model_type not in SUPPORTED:
    raise ValueError(f"model_type={model_type!r}: supported model types are {SUPPORTED}")
  if model.layer_heads or model.layer_mlp or model.attention != "softmax":
    raise ValueError("model has per-layer widths (structured pruning) or retention: a "
                     f"{model_type} config.json describes neither; save it as an effcomp run")
  if model.qkv_bias != (model_type == "qwen2"):
    raise ValueError(f"model_type={model_type!r} with qkv_bias={model.qkv_bias}: q/k/v "
                     "biases exist in 'qwen2' (always) and not in 'llama'/'mistral'")
  config = {
      "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
      "vocab_size": model.vocab_size, "hidden_size": model.embed_dim,
      "intermediate_size": model.hidden_dim, "num_hidden_layers": model.num_layers,
      "num_attention_heads": model.num_heads, "num_key_value_heads": model.kv_heads,
      "head_dim": model.dims_per_head, "hidden_act": "silu", "rms_norm_eps": model.norm_eps,
      "rope_parameters": {"rope_type": "default", "rope_theta": model.rope_theta},
      "rope_theta": model.rope_theta, "tie_word_embeddings": model.tie_embeddings,
      "max_position_embeddings": max_position_embeddings, "initializer_range": 0.02,
      "attention_dropout": 0.0, "use_cache": True, "dtype": dtype, "torch_dtype": dtype,
      "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
  if model_type == "llama":
    config.update(attention_bias=False, mlp_bias=False)
  elif model_type == "mistral":
    config.update(sliding_window=None)
  else:
    config.update(use_sliding_window=False, sliding_window=None,
                  max_window_layers=model.num_layers,
                  layer_types=["full_attention"] * model.num_layers)
  return config


def hf_name(path: Tuple[str, ...]) -> str:
  """HF tensor name of the effcomp param at `path`, e.g. ('layers_0', 'attn', 'q', 'kernel')."""
  leaf = {"kernel": "weight", "bias": "bias", "scale": "weight"}
  if path == ("embed", "embedding"):
    return "model.embed_tokens.weight"
  if path == ("final_norm", "scale"):
    return "model.norm.weight"
  if path == ("lm_head", "kernel"):
    return "lm_head.weight"
  match = re.fullmatch(r"layers_(\d+)", path[0])
  if match and len(path) == 3 and path[1] in ("attn_norm", "mlp_norm"):
    norm = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}[path[1]]
    return f"model.layers.{match[1]}.{norm}.weight"
  if match and len(path) == 4 and path[1] in ("attn", "mlp") and path[3] in leaf:
    module = {"attn": "self_attn", "mlp": "mlp"}[path[1]]
    return f"model.layers.{match[1]}.{module}.{path[2]}_proj.{leaf[path[3]]}"
  raise ValueError(f"parameter {'/'.join(path)} has no Hugging Face counterpart")


def param_shapes(model: Llama) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  """{effcomp param path: shape} of `model` (traced, nothing allocated)."""
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  flat = flax.traverse_util.flatten_dict(nn.unbox(variables["params"]))
  return {path: tuple(x.shape) for path, x in flat.items()}


def _hf_layout(array: np.ndarray, path: Tuple[str, ...]) -> np.ndarray:
  """effcomp [in, out] kernel ↔ HF [out, in] weight (its own inverse); others as they are."""
  return array.T if path[-1] == "kernel" else array


def _hf_shape(shape: Tuple[int, ...], path: Tuple[str, ...]) -> Tuple[int, ...]:
  return shape[::-1] if path[-1] == "kernel" else shape


def params_from_hf(tensors: Mapping[str, np.ndarray], model: Llama) -> Dict[str, Any]:
  """effcomp params (nested dict of float32 numpy arrays) of `model` from HF tensors.

  Raises:
    ValueError: naming every missing, misshapen or unexpected tensor.
  """
  params, missing, misshapen = {}, [], []
  shapes = param_shapes(model)
  for path, shape in shapes.items():
    name = hf_name(path)
    if name not in tensors:
      missing.append(name)
    elif tuple(tensors[name].shape) != _hf_shape(shape, path):
      misshapen.append(f"{name} {tuple(tensors[name].shape)} ≠ {_hf_shape(shape, path)}")
    else:
      params[path] = _hf_layout(np.asarray(tensors[name]), path).astype(np.float32)
  expected = {hf_name(path) for path in shapes}
  unexpected = sorted(n for n in tensors if n not in expected and not IGNORED.search(n))
  embed = tensors.get("model.embed_tokens.weight")
  if model.tie_embeddings and "lm_head.weight" in unexpected and embed is not None:
    # Tied checkpoints may store the shared matrix twice; a different one is an error.
    if not np.array_equal(tensors["lm_head.weight"], embed):
      raise ValueError("lm_head.weight differs from model.embed_tokens.weight, but the config "
                       "ties them (tie_word_embeddings=True)")
    unexpected.remove("lm_head.weight")
  if missing or misshapen or unexpected:
    raise ValueError(f"checkpoint does not fit the model: missing {missing}, wrong shape "
                     f"{misshapen}, unexpected {unexpected}")
  return flax.traverse_util.unflatten_dict(params)


def params_to_hf(params: Any, model: Llama) -> Dict[str, np.ndarray]:
  """HF tensors {name: float32 numpy array} of `model`'s params (boxed or unboxed)."""
  return hf_checkpoint.export_tensors(params, param_shapes(model), hf_name, _hf_layout)


def load(folder: str, dtype: str = "float32") -> Tuple[Llama, Dict[str, Any]]:
  """(model computing in `dtype`, float32 params) of the HF checkpoint in `folder`."""
  config, tensors = hf_checkpoint.read_folder(folder)
  model = model_from_hf_config(config, dtype=dtype)
  return model, params_from_hf(tensors, model)


def save(folder: str, model: Llama, params: Any, model_type: str = "llama",
         max_shard_bytes: int = 5 << 30, dtype: str = "float32",
         extra_config: Optional[Mapping[str, Any]] = None) -> None:
  """Writes `model` and `params` as an HF checkpoint `from_pretrained` loads.

  Args:
    folder: output folder (created; a previous export there is replaced).
    model, params: the effcomp model and its (boxed or unboxed) params.
    model_type: 'llama', 'mistral' or 'qwen2' (see `hf_config_from_model`).
    max_shard_bytes: safetensors files larger than this are split, with an index.
    dtype: 'float32' or 'bfloat16' weights on disk.
    extra_config: fields overriding the config, e.g. {'eos_token_id': 2}.
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
  config = hf_config_from_model(model, model_type, dtype=dtype)
  config.update(extra_config or {})
  tensors = {name: array.astype(DTYPES[dtype])
             for name, array in params_to_hf(params, model).items()}
  hf_checkpoint.write_folder(folder, config, tensors, max_shard_bytes)
