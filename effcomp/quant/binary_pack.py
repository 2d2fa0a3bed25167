"""Export of a 1-bit LLM: sign bits packed 32 to a word, plus two scale vectors per layer.

Every binarized kernel of a trained model (`Llama(binarizer=…)`) is stored as
`progressive.binary_factors` gives it, w_b = u ⊗ v ⊙ sign(z):

  {'sign_bits': uint32 [ceil(in/32), out]  (`pack.pack_bits` along `in`: bit = z ≥ 0),
   'in_scale': float32 [in] (u), 'out_scale': float32 [out] (v)}

in place of the layer's `kernel` (and the binarizer's own scales); biases, embeddings,
norms and the LM head stay as they are. The result is a plain tree of arrays, so
`pack_int.save`/`load` write and read it. `unpack` rebuilds float kernels
u[:, None]·v[None, :]·(±1) for the same model with `binarizer='none'`, which computes what
the trained model computes at the end of its schedule (`progress=None`).
"""

from typing import Any, Dict, Tuple

import jax.numpy as jnp

from effcomp.models.lm import llama as llama_lib
from effcomp.quant import pack, progressive

Params = Dict[str, Any]
_SCALES = ("in_scale", "out_scale")


def _is_binary_layer(node: Any) -> bool:
  return isinstance(node, dict) and "kernel" in node and getattr(node["kernel"], "ndim", 0) == 2


def _map_layers(params: Params, fn, names: Tuple[str, ...]) -> Params:
  """Applies fn(layer dict) to the dicts of the linear layers named in `names`."""
  out = {}
  for key, node in params.items():
    if isinstance(node, dict) and key in names and (_is_binary_layer(node) or "sign_bits" in node):
      out[key] = fn(node)
    elif isinstance(node, dict):
      out[key] = _map_layers(node, fn, names)
    else:
      out[key] = node
  return out


BINARIZED_LAYERS = ("q", "k", "v", "o", "gate", "up", "down")


def pack_model(model: llama_lib.Llama, params: Params) -> Params:
  """The packed tree of `model`'s params (module docstring); other params unchanged."""
  spec = model.binarize
  if spec is None:
    raise ValueError("pack_model: config.model.binarizer is 'none'; nothing is binarized")

  def pack_layer(layer):
    z, u, v = progressive.binary_factors(layer["kernel"], spec.method,
                                         layer.get("in_scale"), layer.get("out_scale"))
    rest = {k: x for k, x in layer.items() if k not in ("kernel",) + _SCALES}
    return {**rest, "sign_bits": pack.pack_bits(z, axis=0), "in_scale": u.astype(jnp.float32),
            "out_scale": v.astype(jnp.float32)}

  return _map_layers(params, pack_layer, BINARIZED_LAYERS)


def unpack(model: llama_lib.Llama, packed: Params) -> Tuple[llama_lib.Llama, Params]:
  """(the full-precision model, its params) computing the packed 1-bit model."""
  def unpack_layer(layer):
    u, v = layer["in_scale"], layer["out_scale"]
    signs = pack.unpack_bits(layer["sign_bits"], u.shape[0], axis=0)
    rest = {k: x for k, x in layer.items() if k not in ("sign_bits",) + _SCALES}
    return {**rest, "kernel": u[:, None] * v[None, :] * signs}

  return model.clone(binarizer="none"), _map_layers(packed, unpack_layer, BINARIZED_LAYERS)


def nbytes(packed: Params) -> Tuple[int, int]:
  """(bytes of the packed binarized layers: bits + scales, bytes of the same layers in
  float32)."""
  packed_bytes, float_bytes = 0, 0

  def visit(node):
    nonlocal packed_bytes, float_bytes
    if isinstance(node, dict) and "sign_bits" in node:
      n_in, n_out = node["in_scale"].shape[0], node["out_scale"].shape[0]
      packed_bytes += node["sign_bits"].size * 4 + (n_in + n_out) * 4
      float_bytes += n_in * n_out * 4
    elif isinstance(node, dict):
      for child in node.values():
        visit(child)

  visit(packed)
  return packed_bytes, float_bytes
