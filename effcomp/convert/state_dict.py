"""PyTorch state dicts ↔ effcomp variables, by a name map from effcomp paths to keys.

  tensors = read("model.th")                          # {key: float32 np.ndarray}
  variables, report = from_state_dict(tensors, template, name_map)
  tensors = to_state_dict(variables, name_map)         # the inverse (round trips)

`template` is the model's variables (arrays or `jax.ShapeDtypeStruct`s, e.g. from
`jax.eval_shape(model.init, ...)`), {collection: tree}; a leaf's path is (collection,
*names), e.g. ('params', 'stage0_block0', 'conv1', 'kernel') or ('batch_stats', ...,
'mean'). `name_map(path) -> (key, Layout) | None`: the official key holding that leaf and
how its layout differs (None: the leaf has no official counterpart). Several leaves may
read one key (e.g. slices of a fused tensor) through layouts that take the whole tensor.
"""

import argparse
import dataclasses
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import numpy as np
from safetensors import numpy as safetensors_np

Path = Tuple[str, ...]
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


@dataclasses.dataclass(frozen=True)
class Layout:
  """How an official tensor becomes an effcomp leaf and back (numpy arrays)."""
  name: str
  to_effcomp: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]


SAME = Layout("same", lambda a: a, lambda a: a)
# nn.Conv2d weight [out, in, kh, kw] ↔ flax conv kernel [kh, kw, in, out].
CONV = Layout("conv", lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
# nn.Linear weight [out, in] ↔ flax Dense kernel [in, out].
LINEAR = Layout("linear", lambda a: a.T, lambda a: a.T)
# A 1×1 nn.Conv2d weight [out, in, 1, 1] ↔ flax Dense kernel [in, out].
CONV1X1_AS_LINEAR = Layout("conv1x1", lambda a: a[:, :, 0, 0].T, lambda a: a.T[:, :, None, None])
# A conv or linear weight, told apart by rank (for name maps that do not know the module).
KERNEL = Layout("kernel", lambda a: CONV.to_effcomp(a) if a.ndim == 4 else LINEAR.to_effcomp(a),
                lambda a: CONV.to_torch(a) if a.ndim == 4 else LINEAR.to_torch(a))
NameMap = Callable[[Path], Optional[Tuple[str, Layout]]]
# flax leaf → torch parameter / buffer name of the same module.
_TORCH_LEAF = {"kernel": ("weight", KERNEL), "scale": ("weight", SAME), "bias": ("bias", SAME),
               "mean": ("running_mean", SAME), "var": ("running_var", SAME),
               "embedding": ("weight", SAME)}


def module_names(path: Path) -> Optional[Tuple[str, Layout]]:
  """The name map of a Flax model whose module names are the PyTorch module's (torchvision
  style): ('params', 'Mixed_5b', 'branch1x1', 'conv', 'kernel') ↔ 'Mixed_5b.branch1x1.conv.
  weight'; BatchNorm statistics ↔ running_mean / running_var."""
  _, *modules, leaf = path
  if leaf not in _TORCH_LEAF:
    return None
  name, layout = _TORCH_LEAF[leaf]
  return ".".join([*modules, name]), layout


@dataclasses.dataclass(frozen=True)
class Report:
  """What a conversion left out: official tensors no leaf read (e.g. buffers such as
  `num_batches_tracked`, or modules the official forward never calls), and effcomp leaves
  no tensor filled (`from_state_dict(..., fill_missing=…)` keeps the template's)."""
  unused: Tuple[str, ...]
  unfilled: Tuple[str, ...]

  def lines(self) -> str:
    return (f"unused official tensors ({len(self.unused)}): {', '.join(self.unused) or '-'}\n"
            f"unfilled effcomp leaves ({len(self.unfilled)}): {', '.join(self.unfilled) or '-'}")


def read(path: str, containers: Sequence[str] = ("state_dict", "model")) -> Dict[str, np.ndarray]:
  """The tensors of a checkpoint file as {key: float32 numpy array}.

  .pth/.pt/.th/.ckpt/.bin: `torch.load(map_location='cpu', weights_only=True)` (no code in
  the file is run); .safetensors; .npz. When the file holds a dict of dicts, the first of
  `containers` present is the state dict (e.g. BasicSR's 'params_ema', DiT's 'ema'); the
  prefixes `module.` (DataParallel) and `_orig_mod.` (torch.compile) are stripped.
  Non-tensor entries are dropped.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint={path!r}: no such file")
  if path.endswith(".safetensors"):
    raw = safetensors_np.load_file(path)
  elif path.endswith(".npz"):
    with np.load(path) as f:
      raw = {k: f[k] for k in f.files}
  else:
    raw = _torch_load(path)
    for name in containers:
      if isinstance(raw, Mapping) and isinstance(raw.get(name), Mapping):
        raw = raw[name]
        break
  if not isinstance(raw, Mapping):
    raise ValueError(f"checkpoint={path!r}: holds a {type(raw).__name__}, expected a state dict")
  tensors = {}
  for key, value in raw.items():
    array = value.detach().cpu().numpy() if hasattr(value, "detach") else value
    if isinstance(array, np.ndarray):
      for prefix in WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
      tensors[key] = array
  if not tensors:
    raise ValueError(f"checkpoint={path!r}: no tensors (top-level keys {sorted(raw)[:10]}; "
                     f"expected a state dict or one of {list(containers)})")
  return tensors


def _torch_load(path: str) -> Any:
  try:
    import torch  # optional: reads .pth checkpoints; effcomp itself never needs it
  except ImportError as e:
    raise ImportError(f"checkpoint={path!r} is a PyTorch file, which needs torch to read: "
                      "pip install torch (the CPU build is enough)") from e
  # Training scripts (DiT's and U-DiT's train.py) also save their argparse arguments.
  with torch.serialization.safe_globals([argparse.Namespace]):
    return torch.load(path, map_location="cpu", weights_only=True)


def leaves(template: Any) -> Dict[Path, Tuple[int, ...]]:
  """{path: shape} of every leaf of a variables tree (boxed, unboxed or abstract)."""
  flat = flax.traverse_util.flatten_dict(nn.unbox(template))
  return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def from_state_dict(tensors: Mapping[str, np.ndarray], template: Any, name_map: NameMap, *,
                    fill_missing: bool | Callable[[Path], bool] = False
                    ) -> Tuple[Dict[str, Any], Report]:
  """Variables shaped like `template` from the official `tensors`, and what was left out.

  `fill_missing`: True, or a predicate on a leaf's path, for leaves no tensor fills that
  keep the template's values (then `template` holds initialized variables, not shapes).

  Raises:
    ValueError: a tensor's shape (after its layout) differs from its leaf's, naming every
      such tensor; or effcomp leaves that no tensor fills (missing keys or leaves without a
      counterpart) and `fill_missing` does not cover, naming them.
  """
  shapes = leaves(template)
  flat_template = flax.traverse_util.flatten_dict(nn.unbox(template))
  keep = fill_missing if callable(fill_missing) else lambda path: fill_missing
  out, used, unfilled, misshapen, missing = {}, set(), [], [], []
  for path, shape in shapes.items():
    entry = name_map(path)
    if entry is None or entry[0] not in tensors:
      unfilled.append("/".join(path) + ("" if entry is None else f" (key {entry[0]})"))
      if not keep(path):
        missing.append(unfilled[-1])
      continue
    key, layout = entry
    array = np.asarray(layout.to_effcomp(np.asarray(tensors[key], np.float32)), np.float32)
    used.add(key)
    if array.shape != shape:
      misshapen.append(f"{key} {tuple(np.shape(tensors[key]))} → {array.shape} ≠ "
                       f"{'/'.join(path)} {shape}")
      continue
    out[path] = array
  if misshapen:
    raise ValueError("checkpoint does not fit the model: wrong shape " + "; ".join(misshapen))
  if missing:
    raise ValueError(f"checkpoint does not fit the model: no tensor for {len(missing)} "
                     f"leaves: {', '.join(missing)}")
  for path in shapes:
    if path not in out:
      if isinstance(flat_template[path], jax.ShapeDtypeStruct):
        raise ValueError("fill_missing keeps the template's values: pass initialized "
                         f"variables, not shapes ({'/'.join(path)} has no tensor)")
      out[path] = np.asarray(flat_template[path], np.float32)
  report = Report(tuple(sorted(set(tensors) - used)), tuple(unfilled))
  return flax.traverse_util.unflatten_dict(out), report


def to_state_dict(variables: Any, name_map: NameMap,
                  merge: Optional[Callable[[str, Iterable[Tuple[Path, np.ndarray]]], np.ndarray]]
                  = None) -> Dict[str, np.ndarray]:
  """The official state dict {key: float32 array} of effcomp `variables` (boxed or not).

  Leaves without a counterpart are skipped. Keys that several leaves read (fused tensors)
  need `merge(key, [(path, torch-layout array), …]) -> tensor`.
  """
  grouped: Dict[str, list] = {}
  for path, leaf in flax.traverse_util.flatten_dict(nn.unbox(variables)).items():
    entry = name_map(path)
    if entry is not None:
      key, layout = entry
      grouped.setdefault(key, []).append(
          (path, np.asarray(layout.to_torch(np.asarray(jax.device_get(leaf), np.float32)))))
  tensors = {}
  for key, parts in grouped.items():
    if len(parts) > 1:
      if merge is None:
        raise ValueError(f"key {key!r} is read by {len(parts)} leaves "
                         f"({', '.join('/'.join(p) for p, _ in parts)}): pass `merge`")
      tensors[key] = np.array(merge(key, parts), order="C")
    else:
      tensors[key] = np.array(parts[0][1], order="C")  # (0-d stays 0-d)
  return tensors
