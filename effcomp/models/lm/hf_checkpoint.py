"""Hugging Face checkpoint folders on disk: `config.json` + safetensors (single or sharded).

    config, tensors = read_folder("path/to/model")    # {name: np.ndarray}
    write_folder("out/", config, tensors, max_shard_bytes=2 << 30)

The layout is the one `transformers`' `save_pretrained(safe_serialization=True)` writes:
`model.safetensors`, or `model-00001-of-0000N.safetensors` … plus
`model.safetensors.index.json` (`{"metadata": {"total_size": …}, "weight_map": {name:
file}}`). Tensors are read with the `safetensors` package's numpy API (bfloat16 as
`ml_dtypes.bfloat16`), so no PyTorch is needed.
"""

import json
import os
from typing import Any, Callable, Dict, Mapping, Tuple

import flax
import jax
import numpy as np
from safetensors import numpy as safetensors_np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"


def read_config(folder: str) -> Dict[str, Any]:
  """`folder/config.json` as a dict."""
  path = os.path.join(folder, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"folder={folder!r}: expected a Hugging Face model folder with "
                            f"{CONFIG_FILE}; {path} does not exist")
  with open(path) as f:
    return json.load(f)


def read_tensors(folder: str, stem: str = "model") -> Dict[str, np.ndarray]:
  """Every tensor of the checkpoint in `folder`: `<stem>.safetensors` or the shards its
  `<stem>.safetensors.index.json` lists (`stem`: 'model' for transformers,
  'diffusion_pytorch_model[.variant]' for diffusers)."""
  single, index = f"{stem}.safetensors", f"{stem}.safetensors.index.json"
  if os.path.isfile(os.path.join(folder, index)):
    with open(os.path.join(folder, index)) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.isfile(os.path.join(folder, single)):
    files = [single]
  else:
    found = sorted(os.listdir(folder)) if os.path.isdir(folder) else "no such folder"
    raise FileNotFoundError(f"folder={folder!r}: expected {single} or {index} "
                            f"(safetensors weights); found {found}")
  tensors: Dict[str, np.ndarray] = {}
  for name in files:
    tensors.update(safetensors_np.load_file(os.path.join(folder, name)))
  return tensors


def export_tensors(params: Any, shapes: Mapping[Tuple[str, ...], Tuple[int, ...]],
                   name_fn: Callable[[Tuple[str, ...]], str],
                   layout_fn: Callable[[np.ndarray, Tuple[str, ...]], np.ndarray]
                   ) -> Dict[str, np.ndarray]:
  """{checkpoint name: float32 array} of flax `params` (boxed or not) whose flattened paths
  and shapes must be `shapes`; `name_fn(path)` names a tensor, `layout_fn(array, path)`
  puts it in the checkpoint's layout (e.g. kernels transposed)."""
  flat = flax.traverse_util.flatten_dict(flax.linen.unbox(params))
  if set(flat) != set(shapes):
    raise ValueError(f"params do not fit the model: missing "
                     f"{sorted('/'.join(p) for p in set(shapes) - set(flat))}, unexpected "
                     f"{sorted('/'.join(p) for p in set(flat) - set(shapes))}")
  tensors = {}
  for path, value in flat.items():
    if tuple(value.shape) != tuple(shapes[path]):
      raise ValueError(f"param {'/'.join(path)}: shape {tuple(value.shape)}, expected "
                       f"{tuple(shapes[path])}")
    array = np.asarray(jax.device_get(value), np.float32)
    tensors[name_fn(path)] = np.require(layout_fn(array, path), requirements="C")
  return tensors


def read_folder(folder: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
  """(config.json dict, {tensor name: array}) of a Hugging Face model folder."""
  return read_config(folder), read_tensors(folder)


def write_folder(folder: str, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                 max_shard_bytes: int = 5 << 30) -> None:
  """Writes `config.json` and the tensors, sharded with an index past `max_shard_bytes`.

  Files are written under temporary names and renamed, so a failed write never leaves a
  half-written checkpoint under the final names.
  """
  if max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes={max_shard_bytes}: expected a positive byte count")
  os.makedirs(folder, exist_ok=True)
  shards, current, size = [], {}, 0
  for name in sorted(tensors):
    array = np.require(tensors[name], requirements="C")  # ascontiguousarray makes 0-d 1-d
    if current and size + array.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = array
    size += array.nbytes
  shards.append(current)

  def write_atomic(name: str, write) -> None:
    tmp = os.path.join(folder, f".{name}.tmp")
    write(tmp)
    os.replace(tmp, os.path.join(folder, name))

  if len(shards) == 1:
    names = [SINGLE_FILE]
  else:
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  for name, shard in zip(names, shards):
    write_atomic(name, lambda p, s=shard: safetensors_np.save_file(s, p, metadata={"format": "pt"}))
  stale = [SINGLE_FILE] if len(shards) > 1 else [INDEX_FILE]
  if len(shards) > 1:
    index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
             "weight_map": {t: n for n, s in zip(names, shards) for t in s}}
    write_atomic(INDEX_FILE, lambda p: _write_json(p, index))
  for name in stale:  # A previous export in another layout would shadow this one.
    if os.path.exists(os.path.join(folder, name)):
      os.remove(os.path.join(folder, name))
  write_atomic(CONFIG_FILE, lambda p: _write_json(p, dict(config)))


def _write_json(path: str, obj: Any) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
