"""Running a model whose nn.Dense layers hold two factors instead of one kernel.

A factorized layer keeps its parameter path and bias and replaces 'kernel' [in, out] by
'kernel_a' [in, r] and 'kernel_b' [r, out] (`replace_kernel`). `factorized_layers()` intercepts
every `nn.Dense.__call__` (`flax.linen.intercept_methods`, as `effcomp.quant.ptq.blocks` does
for activation quantization) and, where the layer has 'kernel_a', computes

    y = (x @ A) @ B + b      (x: [..., in], y: [..., out]; r·(in + out) multiply-adds a token)

without calling the Dense's own `__call__`, so the missing 'kernel' is never looked up and the
model code stays as it is. Dense layers without factors run unchanged.

Interceptors run in the order they were entered (flax: the first registered is outermost).
This one does not call on, so interceptors entered inside it do not see factorized layers:
enter it last, e.g. `blocks.apply_with_act_quant(lambda: apply_factorized(fn), act)`.
"""

import contextlib
from typing import Any, Callable, Dict, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.quant.ptq import blocks as blocks_lib

Params = Dict[str, Any]
FACTORS = ("kernel_a", "kernel_b")


def _interceptor(next_fun, args, kwargs, context):
  module = context.module
  if (not isinstance(module, nn.Dense) or context.method_name != "__call__"
      or not module.has_variable("params", "kernel_a")):
    return next_fun(*args, **kwargs)
  a, b = (nn.unbox(module.get_variable("params", n)) for n in FACTORS)
  bias = nn.unbox(module.get_variable("params", "bias")) if module.use_bias else None
  x, a, b, bias = module.promote_dtype(args[0], a, b, bias, dtype=module.dtype)
  y = jnp.matmul(jnp.matmul(x, a, precision=module.precision), b, precision=module.precision)
  return y if bias is None else y + bias


@contextlib.contextmanager
def factorized_layers() -> Iterator[None]:
  """Within this context, nn.Dense layers with 'kernel_a'/'kernel_b' compute x @ A @ B + b."""
  with nn.intercept_methods(_interceptor):
    yield


def apply_factorized(fn: Callable[[], Any]) -> Any:
  """Runs `fn()` (a Flax apply, traced or not) with factorized layers computed as x @ A @ B + b."""
  with factorized_layers():
    return fn()


def replace_kernel(params: Params, path: str, a: jax.Array, b: jax.Array) -> Params:
  """A copy of `params` where the kernel at `path` ('…/q/kernel') is replaced by the factors
  '…/q/kernel_a' = a [in, r] and '…/q/kernel_b' = b [r, out]; the layer's bias stays."""
  parent, _, leaf = path.rpartition("/")
  if leaf != "kernel":
    raise ValueError(f"path={path!r}: expected the path of a Dense kernel ('…/kernel')")
  layer = blocks_lib.get_path(params, parent)
  w = layer["kernel"]
  if a.ndim != 2 or b.ndim != 2 or (a.shape[0], b.shape[1]) != w.shape or a.shape[1] != b.shape[0]:
    raise ValueError(f"factors of shapes {a.shape}, {b.shape}: expected [in, r] and [r, out] "
                     f"for the kernel of shape {w.shape} at {path!r}")
  new = {k: v for k, v in layer.items() if k != "kernel"}
  new.update(kernel_a=a, kernel_b=b)
  return blocks_lib.set_path(params, parent, new)


def merge_factors(params: Params) -> Params:
  """A copy of `params` with every factor pair multiplied back into a kernel A @ B [in, out]."""
  if not isinstance(params, Mapping):
    return params
  if all(n in params for n in FACTORS):
    a, b = params["kernel_a"], params["kernel_b"]
    merged = {k: v for k, v in params.items() if k not in FACTORS}
    merged["kernel"] = jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
    return merged
  return {k: merge_factors(v) for k, v in params.items()}


def count_params(params: Params) -> int:
  """The number of parameters (array elements) in a tree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
