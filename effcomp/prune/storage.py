"""A pruned model on disk: each masked kernel as its packed mask and its kept values.

    save("pruned.npz", params, masks); params, masks = load("pruned.npz")

One .npz written by `effcomp.quant.pack_int.save` (under a temporary name, then renamed):
every parameter that has no mask as it is ('params/<path>'), and every kernel in `masks` as
'params/<path>' = its kept weights in row-major order (a 1-D array of the kernel's dtype)
plus 'masks/<path>/bits' (np.packbits of the mask) and 'masks/<path>/shape'. At 50 %
sparsity a float32 kernel takes 16.5 of its dense 32 bits per weight. Weights outside a mask
are not stored: `load` returns them as zeros (`prune_model` leaves them zero anyway).
"""

from typing import Any, Dict, Tuple

import numpy as np
from flax import traverse_util

from effcomp.prune import masks as masks_lib
from effcomp.quant import pack_int
from effcomp.quant.ptq import blocks as blocks_lib


def save(path: str, params: Any, masks: Dict[str, masks_lib.PackedMask]) -> None:
  """Writes `params` with the kernels named in `masks` stored sparsely (module docstring)."""
  sparse = params
  stored = {}
  for key, packed in masks.items():
    w = np.asarray(blocks_lib.get_path(params, key))
    mask = masks_lib.unpack(packed)
    if mask.shape != w.shape:
      raise ValueError(f"masks[{key!r}] of shape {mask.shape}: expected {w.shape}, the kernel's")
    sparse = blocks_lib.set_path(sparse, key, w[mask])
    stored[key] = {"bits": np.asarray(packed.bits, np.uint8),
                   "shape": np.asarray(packed.shape, np.int64)}
  pack_int.save(path, {"params": sparse, "masks": stored})


def load(path: str) -> Tuple[Any, Dict[str, masks_lib.PackedMask]]:
  """(params with dense kernels, {kernel path: packed mask}) from a file `save` wrote."""
  tree = pack_int.load(path)
  params = tree["params"]
  masks = {}
  flat = traverse_util.flatten_dict(tree.get("masks", {}), sep="/")
  for key in sorted(k[:-len("/bits")] for k in flat if k.endswith("/bits")):
    packed = masks_lib.PackedMask(np.asarray(flat[f"{key}/bits"], np.uint8),
                                  tuple(int(d) for d in np.asarray(flat[f"{key}/shape"])))
    mask = masks_lib.unpack(packed)
    values = np.asarray(blocks_lib.get_path(params, key))
    if values.shape != (np.count_nonzero(mask),):
      raise ValueError(f"{path}: params/{key} holds {values.shape} values; its mask keeps "
                       f"{np.count_nonzero(mask)}")
    dense = np.zeros(mask.shape, values.dtype)
    dense[mask] = values
    params = blocks_lib.set_path(params, key, dense)
    masks[key] = packed
  return params, masks


def nbytes(params: Any, masks: Dict[str, masks_lib.PackedMask]) -> Tuple[int, int]:
  """(bytes `save` stores for the masked kernels: kept values + mask bits, their dense
  bytes)."""
  stored, dense = 0, 0
  for key, packed in masks.items():
    w = np.asarray(blocks_lib.get_path(params, key))
    stored += np.count_nonzero(masks_lib.unpack(packed)) * w.itemsize + packed.bits.nbytes
    dense += w.nbytes
  return int(stored), int(dense)
