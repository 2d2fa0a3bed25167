"""Hugging Face `CLIPModel` folders (config.json + safetensors) → `effcomp.models.clip.CLIP`.

    model, variables = load_clip("path/to/clip-vit-base-patch32")
    embeds = model.apply(variables, pixels_nhwc, method=CLIP.encode_image)   # models.clip.CLIP

The Flax modules carry transformers' module names (`models/clip/modeling_clip.py`), with
`layers_3` for `layers.3`, so the name map is the generic one (`state_dict.module_names`):
`vision_model.encoder.layers.0.self_attn.q_proj.weight` [out, in] ↔ `params/vision_model/
encoder/layers_0/self_attn/q_proj/kernel` [in, out]; `patch_embedding.weight` [O, I, kh, kw]
↔ flax HWIO; LayerNorm weight ↔ scale; `class_embedding` and `logit_scale` as they are.
Non-persistent `position_ids` buffers, which checkpoints written by older transformers
still hold, are ignored; any other tensor the model does not read is an error.
"""

import re
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from effcomp.convert import state_dict
from effcomp.models import clip
from effcomp.models.lm import hf_checkpoint

CONTAINERS = ()
# Buffers of CLIPTextEmbeddings / CLIPVisionEmbeddings (arange), recomputed by the model.
IGNORED = re.compile(r"(^|\.)embeddings\.position_ids$")
# Parameters that are not a module's weight/bias: the same name in both.
_DIRECT = {"class_embedding", "logit_scale"}


def check_model(model) -> None:
  if not isinstance(model, clip.CLIP):
    raise ValueError(f"model: {type(model).__name__}; Hugging Face CLIPModel weights are an "
                     "effcomp.models.clip.CLIP")


def _name(path: state_dict.Path) -> Optional[Tuple[str, state_dict.Layout]]:
  """('params', …, 'layers_0', …, leaf) → ('….layers.0.…weight', layout)."""
  if path[-1] in _DIRECT:
    return ".".join(re.sub(r"^layers_(\d+)$", r"layers.\1", p) for p in path[1:]), state_dict.SAME
  entry = state_dict.module_names(path)
  if entry is None:
    return None
  key, layout = entry
  return re.sub(r"(^|\.)layers_(\d+)\.", r"\1layers.\2.", key), layout


def name_map(model) -> state_dict.NameMap:
  """effcomp path → (HF CLIPModel tensor name, layout)."""
  check_model(model)
  return _name


def abstract_variables(model: clip.CLIP) -> Dict[str, Any]:
  """`model`'s variables as shapes (boxed), traced with one image and one 1-token text."""
  v = model.config.vision
  pixels = jnp.zeros((1, v.image_size, v.image_size, v.num_channels), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), pixels, jnp.zeros((1, 1), jnp.int32))


def variables_from_hf(tensors: Mapping[str, np.ndarray], model: clip.CLIP) -> Dict[str, Any]:
  """{'params': …} of `model` (float32 numpy) from `transformers.CLIPModel` tensors.

  Raises:
    ValueError: naming every misshapen tensor, every tensor the model needs and `tensors`
      lacks, or every tensor the model does not use (other than `position_ids` buffers).
  """
  variables, report = state_dict.from_state_dict(tensors, abstract_variables(model),
                                                 name_map(model))
  unexpected = [k for k in report.unused if not IGNORED.search(k)]
  if unexpected:
    raise ValueError(f"checkpoint does not fit the model: {len(unexpected)} unexpected "
                     f"tensor(s) {', '.join(unexpected)} (expected transformers.CLIPModel's)")
  return variables


def load_clip(folder: str, dtype: Any = "float32") -> Tuple[clip.CLIP, Dict[str, Any]]:
  """(CLIP computing in `dtype`, float32 variables) of the HF CLIPModel folder `folder`.

  Raises FileNotFoundError for a folder without config.json or safetensors, and ValueError
  (prefixed with the folder) for an unsupported config or tensors that do not fit it.
  """
  config_dict, tensors = hf_checkpoint.read_folder(folder)
  try:
    model = clip.CLIP(clip.CLIPConfig.from_hf(config_dict), dtype=dtype)
    return model, variables_from_hf(tensors, model)
  except ValueError as e:
    raise ValueError(f"folder={folder!r}: {e}") from e
