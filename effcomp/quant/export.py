"""A trained binary network as a bit-packed inference model.

`pack_model` finds every `BinaryConv` / `BinaryDense` of a model (by running it once,
abstractly, under `flax.linen.intercept_methods`) and replaces its float kernel and
activation-binarizer params by a `pack.PackedConv2D` / `pack.PackedDense`: the kernel's
sign bits s_w = sign(w − β_w) packed 32 to a uint32 word, α_w, β_w per output channel
(`binary.weight_center_scale`) and the activation's (θ, α_a, β_a) with
a_b = α_a·sign(x − θ) + β_a (`binary.activation_affine`). Everything else (stem, BatchNorm
statistics, Maxout/RPReLU, shortcuts, head, biases) stays float in `float_variables`.
`packed_apply` runs the unchanged model with an interceptor that computes each binary
layer from its packed form, so the binary layers' float params are never read.

Each binary layer computes, over its K inputs (for a conv: the in-image taps of each output
position), the fold of `effcomp.quant.pack`:

  y[o] = α_a α_w[o] Σ s_a s_w + α_a β_w[o] Σ s_a + β_a α_w[o] Σ s_w + β_a β_w[o] K,
  Σ s_a s_w = K − 2·popcount(bits(a) XOR bits(w)).

Exactness. The sign bits are the ones the float graph uses (same θ, same β_w, sign(0) = +1).
- BNN (α = 1, β = 0): y = Σ s_a s_w is an integer below 2^24, so the packed layer equals the
  float one exactly, and so does the whole network's output.
- XNOR / Bi-Real / ReActNet (α_w = mean|w|) and AdaBin (affine α, β): the packed layer
  equals the float layer up to float32 rounding (the float conv sums K products
  α_a α_w s_a s_w + …, the fold multiplies the integer sums once), ~1e-6 of the output
  scale. Through a deep network that rounding can still flip a later sign where a
  pre-activation lies within rounding of its threshold, and one flipped sign moves the
  logits of that example visibly. Measured (`tests/test_export.py`, 64 inputs, random
  params and BatchNorm statistics): VGG-small all methods max |Δlogit| ≤ 1.5e-5; ResNet-20
  bireal/reactnet ≤ 2e-5, xnor and adabin 1–2 of 64 examples changed (max |Δlogit| 0.05–2.5,
  argmax agreement ≥ 63/64). VGG-small(0.25) trained 20 steps on digits: 360/360 argmax
  agree, max |Δlogit| 1.3e-5. Untrained nets with identity BatchNorm (mean 0, var 1) are
  far worse: a pre-activation exactly on the integer lattice (Σ s_a s_w = 0) meets the
  threshold 0 exactly, where the float sum's rounding decides the sign.
- AdaBin's `official` activation α_a·sign((x − β_a)/α_a) + α_a β_a equals
  |α_a|·sign(x − β_a) + α_a β_a (up to the tie x = β_a when α_a < 0); we pack it so.

Layers whose `weight_method` or `act_method` is 'none' (real weights or activations) are
left float and run as trained. Static metadata (paths, strides, padding, methods) lives in
`PackedModel.specs`; `save` / `load` store the arrays with orbax and the specs as JSON.
"""

import dataclasses
import json
import os
from typing import Any, Dict, NamedTuple, Tuple, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from effcomp.quant import binary, pack

BINARY_LAYERS = (binary.BinaryConv, binary.BinaryDense)
FORMAT_VERSION = 1
_ARRAYS, _METADATA = "arrays", "packed_model.json"
PackedLayer = Union[pack.PackedConv2D, pack.PackedDense]


class LayerSpec(NamedTuple):
  """Static description of one packed layer (hashable: a jit-static field)."""
  path: Tuple[str, ...]
  kind: str  # 'conv' | 'dense'
  in_size: int  # conv: input channels C; dense: input features K
  features: int
  kernel_size: Tuple[int, ...]  # (kh, kw); () for dense
  strides: Tuple[int, ...]  # (sh, sw); () for dense
  padding: Any  # 'SAME' | 'VALID' | ((top, bottom), (left, right)); None for dense
  weight_method: str
  act_method: str
  adabin_act_form: str
  use_bias: bool


@flax.struct.dataclass
class PackedModel:
  """float_variables: the model's variables without the packed layers' kernels and
  activation params; layers: packed layer of each spec, keyed by '/'.join(path)."""
  float_variables: Dict[str, Any]
  layers: Dict[str, PackedLayer]
  specs: Tuple[LayerSpec, ...] = flax.struct.field(pytree_node=False)


def _key(path) -> str:
  return "/".join(path)


def _padding(padding) -> Any:
  if isinstance(padding, str):
    return padding.upper()
  if isinstance(padding, int):
    return ((padding, padding),) * 2
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def _spec(module: nn.Module, x: Any) -> LayerSpec:
  conv = isinstance(module, binary.BinaryConv)
  return LayerSpec(
      path=tuple(module.path), kind="conv" if conv else "dense", in_size=int(x.shape[-1]),
      features=int(module.features),
      kernel_size=tuple(int(k) for k in module.kernel_size) if conv else (),
      strides=tuple(int(s) for s in module.strides) if conv else (),
      padding=_padding(module.explicit_padding()) if conv else None,
      weight_method=module.weight_method, act_method=module.act_method,
      adabin_act_form=module.adabin_act_form, use_bias=bool(module.use_bias))


def find_binary_layers(model: nn.Module, variables: Any, x: Any) -> Tuple[LayerSpec, ...]:
  """Specs of the packable binary layers `model.apply(variables, x, train=False)` calls,
  in call order; x may be a `jax.ShapeDtypeStruct` (the model runs abstractly)."""
  found = {}

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, BINARY_LAYERS):
      if "none" not in (module.weight_method, module.act_method):
        found.setdefault(tuple(module.path), _spec(module, args[0]))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return tuple(found.values())


def _subtree(tree: Any, path: Tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def pack_layer(spec: LayerSpec, params: Any) -> PackedLayer:
  """The packed form of one binary layer from its params {'kernel', 'act'?, 'bias'?}."""
  kernel = jnp.asarray(params["kernel"], jnp.float32)
  axes = (0, 1, 2) if spec.kind == "conv" else (0,)
  beta_w, alpha_w = binary.weight_center_scale(kernel, spec.weight_method, axes)
  theta, alpha_a, beta_a = binary.activation_affine(
      params.get("act", {}), spec.act_method, spec.adabin_act_form)
  if spec.act_method == "adabin" and spec.adabin_act_form == "official":
    alpha_a = jnp.abs(alpha_a)  # sign((x − β)/α) = sign(α)·sign(x − β)
  fn = pack.pack_conv2d if spec.kind == "conv" else pack.pack_dense
  return fn(kernel, alpha_w.reshape(-1), beta_w.reshape(-1), alpha_a, beta_a, theta)


def _without(params: Dict[str, Any], path: Tuple[str, ...], names=("kernel", "act")) -> None:
  """Deletes `names` of the layer at `path` from the nested dict, then empty parents."""
  nodes = [params]
  for name in path:
    nodes.append(nodes[-1][name])
  for name in names:
    nodes[-1].pop(name, None)
  for parent, name, node in reversed(list(zip(nodes[:-1], path, nodes[1:]))):
    if not node:
      del parent[name]


def pack_model(model: nn.Module, variables: Any, x: Any) -> PackedModel:
  """Packs every binary layer of `model` with `variables`; x: an example input batch
  (array or `jax.ShapeDtypeStruct`; only its shape is used, to trace the model)."""
  variables = flax.core.unfreeze(nn.unbox(variables))
  specs = find_binary_layers(model, variables, x)
  layers = {_key(s.path): pack_layer(s, _subtree(variables["params"], s.path)) for s in specs}
  for spec in specs:  # `variables` is our own copy (unfreeze copies the dicts)
    _without(variables["params"], spec.path)
  return PackedModel(variables, layers, specs)


def packed_apply(model: nn.Module, packed_model: PackedModel, x: jax.Array) -> jax.Array:
  """`model.apply(variables, x, train=False)` with each packed binary layer computed by
  XOR-popcount (`pack.apply_packed_conv2d` / `apply_packed_dense`); jit-able."""
  layers = packed_model.layers

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, BINARY_LAYERS):
      return next_fun(*args, **kwargs)
    key = _key(module.path)
    if key not in layers:
      if "none" in (module.weight_method, module.act_method):
        return next_fun(*args, **kwargs)  # a real-valued layer: left float by pack_model
      raise KeyError(f"binary layer {key!r} is not in the packed model "
                     f"(packed: {sorted(layers)})")
    inputs = args[0]
    if isinstance(module, binary.BinaryConv):
      y = pack.apply_packed_conv2d(layers[key], inputs, module.strides,
                                   _padding(module.explicit_padding()))
    else:
      y = pack.apply_packed_dense(layers[key], inputs)
    if module.use_bias:
      y = y + module.get_variable("params", "bias")
    return y.astype(module.dtype)

  with nn.intercept_methods(interceptor):
    return model.apply(packed_model.float_variables, x, train=False)


def _layer_arrays(layer: PackedLayer) -> Dict[str, jax.Array]:
  return {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)
          if f.metadata.get("pytree_node", True)}


def save(packed_model: PackedModel, directory: str) -> str:
  """Writes `directory`/arrays (orbax: temp dir, then rename) and the specs as
  `directory`/packed_model.json (temp file, then `os.replace`); returns `directory`."""
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  metadata_path = os.path.join(directory, _METADATA)
  if os.path.exists(metadata_path):  # no metadata = incomplete, until the arrays are in
    os.remove(metadata_path)
  layers = {}
  for spec in packed_model.specs:
    node = layers
    for name in spec.path[:-1]:
      node = node.setdefault(name, {})
    node[spec.path[-1]] = _layer_arrays(packed_model.layers[_key(spec.path)])
  tree = {"float_variables": packed_model.float_variables, "layers": layers}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, _ARRAYS), tree, force=True)
  metadata = {"format_version": FORMAT_VERSION,
              "layers": [spec._asdict() for spec in packed_model.specs]}
  tmp = f"{metadata_path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(metadata, f, indent=1)
  os.replace(tmp, metadata_path)
  return directory


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load(directory: str) -> PackedModel:
  """The `PackedModel` written by `save(…, directory)`."""
  directory = os.path.abspath(directory)
  metadata_path = os.path.join(directory, _METADATA)
  if not os.path.exists(metadata_path):
    raise FileNotFoundError(f"{directory} holds no complete packed model (no {_METADATA})")
  with open(metadata_path) as f:
    metadata = json.load(f)
  if metadata.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{metadata_path}: format_version {metadata.get('format_version')}, "
                     f"expected {FORMAT_VERSION}")
  specs = tuple(LayerSpec(**{k: _tuples(v) for k, v in s.items()}) for s in metadata["layers"])
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.restore(os.path.join(directory, _ARRAYS))
  layers = {}
  for spec in specs:
    arrays = {k: jnp.asarray(v) for k, v in _subtree(tree["layers"], spec.path).items()}
    if spec.kind == "conv":
      layers[_key(spec.path)] = pack.PackedConv2D(**arrays, in_channels=spec.in_size)
    else:
      layers[_key(spec.path)] = pack.PackedDense(**arrays, in_features=spec.in_size)
  return PackedModel(jax.tree.map(jnp.asarray, tree["float_variables"]), layers, specs)


def _size(a) -> int:
  return int(np.prod(np.shape(a) if not hasattr(a, "shape") else a.shape))


def _nbytes(tree: Any) -> int:
  return sum(_size(a) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


def size_report(packed_model: PackedModel, variables: Any) -> Dict[str, float]:
  """Bytes of the packed model against the float32 model (`variables`, all collections).

  float_bytes: every variable at 4 bytes; packed_bytes: per packed layer the sign words
  ceil(C/32)·kh·kw·O·4 (`pack.packed_size_bytes`), α_w, β_w, θ, α_a, β_a, plus the
  remaining float variables; binary_*: the binary layers alone (float: kernel + activation
  params). stored_bytes: what the arrays take in memory (words padded to cache tiles).
  Shapes suffice: both arguments may hold `jax.ShapeDtypeStruct`s (`jax.eval_shape`).
  """
  variables = nn.unbox(variables)
  float_bytes = 4 * sum(_size(a) for a in jax.tree.leaves(variables))
  binary_float = binary_packed = binary_words = 0
  for spec in packed_model.specs:
    params = _subtree(variables["params"], spec.path)
    layer = packed_model.layers[_key(spec.path)]
    binary_float += 4 * sum(_size(a) for a in jax.tree.leaves(
        {k: params[k] for k in ("kernel", "act") if k in params}))
    binary_words += pack.packed_size_bytes(layer)
    binary_packed += (pack.packed_size_bytes(layer, include_scales=True)
                      + 4 * (2 + _size(layer.threshold)))
  packed_bytes = binary_packed + _nbytes(packed_model.float_variables)
  return dict(float_bytes=float_bytes, packed_bytes=packed_bytes,
              ratio=float_bytes / packed_bytes, binary_float_bytes=binary_float,
              binary_packed_bytes=binary_packed, binary_words_bytes=binary_words,
              binary_ratio=binary_float / max(binary_packed, 1),
              stored_bytes=_nbytes(packed_model.layers) + _nbytes(packed_model.float_variables))
