"""Mesh construction and logical-axis → mesh-axis rules."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from effcomp.train import sharding
from tests.conftest import run_python


@pytest.mark.parametrize("sizes, n, shape", [
    ({"data": -1, "fsdp": 1, "tensor": 1}, 8, (8, 1, 1)),
    ({"data": 2, "fsdp": -1, "tensor": 1}, 8, (2, 4, 1)),
    ({"data": 1, "fsdp": 4, "tensor": 2}, 8, (1, 4, 2)),
])
def test_mesh_shape_resolves_minus_one(sizes, n, shape):
  assert sharding.mesh_shape(sizes, n) == shape


@pytest.mark.parametrize("sizes, message", [
    ({"data": -1, "fsdp": -1, "tensor": 1}, "at most one"),
    ({"data": 3, "fsdp": 1, "tensor": 1}, "3 devices; 8 are available"),
    ({"data": -1, "fsdp": 3, "tensor": 1}, "not divisible"),
])
def test_mesh_shape_errors(sizes, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(sizes, 8)


class _FakeMesh:
  shape = {"data": 2, "fsdp": 4, "tensor": 1}


def test_logical_to_spec_shards_divisible_dims_and_replicates_others():
  mesh = _FakeMesh()
  assert sharding.logical_to_spec(("embed", "mlp"), (64, 256), mesh) == P("fsdp", None)
  # 'mlp' falls back to fsdp when 'tensor' has size 1 and fsdp is free.
  assert sharding.logical_to_spec(("mlp", "classes"), (64, 10), mesh) == P("fsdp", None)
  # 10 classes do not divide by 4 fsdp shards: replicated rather than an error.
  assert sharding.logical_to_spec(("embed", "classes"), (10, 10), mesh) == P(None, None)
  assert sharding.logical_to_spec(("batch", None), (16, 3), mesh) == P(("data", "fsdp"), None)
  with pytest.raises(ValueError, match="no sharding rule"):
    sharding.logical_to_spec(("nonsense",), (8,), mesh)


def test_params_are_sharded_over_eight_devices():
  """On 8 devices with fsdp=8 each device holds 1/8 of the divisible weights."""
  code = """
import jax, flax.linen as nn, numpy as np
from effcomp.train import sharding
from effcomp.models.mlp import MLP
mesh = sharding.create_mesh({'data': 1, 'fsdp': -1, 'tensor': 1})
m = MLP(num_classes=16, widths=(64, 64))
boxed = jax.eval_shape(m.init, jax.random.PRNGKey(0), np.zeros((1, 64)))
sh = sharding.tree_shardings(boxed, mesh)
params = jax.jit(lambda r: nn.unbox(m.init(r, np.zeros((1, 64)))), out_shardings=sh)(jax.random.PRNGKey(0))
total = sum(x.nbytes for x in jax.tree.leaves(params))
print(total, sharding.per_device_bytes(params))
"""
  out = run_python(code, devices=8).stdout.split()
  total, per_device = int(out[-2]), int(out[-1])
  sharded = 4 * (64 * 64 * 2 + 64 * 16 + 64 + 64)  # kernels and hidden biases
  replicated = 4 * 16  # the 16-way head bias ('classes' is never sharded)
  assert total == sharded + replicated
  assert per_device == sharded // 8 + replicated
