"""Device mesh and logical-axis sharding (the maxtext pattern).

Every parameter is declared with logical axis names (`nn.with_logical_partitioning`);
one table, `LOGICAL_RULES`, maps them onto the mesh axes ('data', 'fsdp', 'tensor').
The same model code therefore runs on one CPU device or a pod slice: only the mesh
shape (from `config.mesh`) changes.
"""

import math
from typing import Any, Mapping, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
# The mesh axes a global batch is split over.
BATCH_AXES = ("data", "fsdp")

# Logical axis name → mesh axis (or tuple of axes, or None = replicated), in order of
# preference: a name listed twice falls back to its second entry when the first mesh
# axis is already used by another dimension, has size 1, or does not divide the
# dimension (flax's rule semantics). Weights shard over 'tensor' along their
# output/heads dimension and over 'fsdp' along whichever dimension is left; a batch
# splits over data × fsdp.
LOGICAL_RULES: Tuple[Tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("mlp", "fsdp"),
    ("heads", "tensor"),
    ("heads", "fsdp"),
    ("kv", None),
    ("vocab", "tensor"),
    ("vocab", "fsdp"),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("conv_out", "fsdp"),
    ("height", None),
    ("width", None),
    ("classes", None),
    ("norm", None),
)


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> Tuple[int, ...]:
  """Resolves `{'data': -1, 'fsdp': 2, 'tensor': 1}` against `num_devices`."""
  shape = [int(sizes[a]) for a in MESH_AXES]
  free = [i for i, s in enumerate(shape) if s == -1]
  if len(free) > 1:
    raise ValueError(f"config.mesh={dict(sizes)}: at most one axis may be -1")
  fixed = math.prod(s for s in shape if s != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"config.mesh={dict(sizes)}: {num_devices} devices are not divisible "
                       f"by the fixed axes' product {fixed}")
    shape[free[0]] = num_devices // fixed
  if math.prod(shape) != num_devices:
    raise ValueError(f"config.mesh={dict(sizes)} has {math.prod(shape)} devices; "
                     f"{num_devices} are available")
  return tuple(shape)


def create_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `Mesh` with axes `MESH_AXES` over all (or the given) devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(sizes, len(devices))
  try:  # Topology-aware device order on TPU/GPU.
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_to_spec(logical: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[Tuple[str, Any]] = LOGICAL_RULES) -> P:
  """PartitionSpec for one array: each logical dim → the first rule that fits.

  A rule fits when its mesh axes are unused by the array's other dimensions, larger
  than 1, and divide the dimension. A dimension no rule fits stays replicated (small
  layers, e.g. a 10-way classifier head on 8 devices, then run instead of failing).
  """
  known = {name for name, _ in rules}
  used, spec = set(), []
  for name, dim in zip(logical, shape):
    if name is not None and name not in known:
      raise ValueError(f"logical axis {name!r} has no sharding rule; known: {', '.join(sorted(known))}")
    chosen = None
    for rule_name, axes in rules:
      if rule_name != name:
        continue
      if axes is None:
        break
      axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes)
                   if a not in used and mesh.shape[a] > 1)
      if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0:
        chosen = axes
        break
    if chosen:
      used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
  return P(*spec)


def tree_shardings(abstract_tree: Any, mesh: Mesh,
                   rules: Sequence[Tuple[str, Any]] = LOGICAL_RULES) -> Any:
  """NamedShardings for a (possibly `nn.Partitioned`-boxed) abstract pytree.

  Boxed leaves are sharded by their logical names; unboxed leaves are replicated.
  The result has the structure of `nn.unbox(abstract_tree)`.
  """
  def leaf_sharding(x):
    if isinstance(x, nn.LogicallyPartitioned):
      return NamedSharding(mesh, logical_to_spec(x.names, x.value.shape, mesh, rules))
    if isinstance(x, nn.Partitioned):
      return NamedSharding(mesh, P(*x.names))
    return NamedSharding(mesh, P())
  return jax.tree.map(leaf_sharding, abstract_tree,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data × fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def num_batch_shards(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Assembles each process's host batch into one globally sharded `jax.Array`. Fields of
  a dict batch that hold text or Python objects (a dataset's `file_name`) stay on the host:
  they are left out."""
  sharding = batch_sharding(mesh)
  if isinstance(local_batch, dict):
    local_batch = {k: v for k, v in local_batch.items() if np.asarray(v).dtype.kind not in "SUO"}

  def to_global(x):
    x = np.asarray(x)
    x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype))  # int64 → int32 unless jax_enable_x64
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(to_global, local_batch)


def per_device_bytes(tree: Any) -> int:
  """Bytes of `tree` held by the first addressable device (its shard of each array)."""
  device = jax.local_devices()[0]
  total = 0
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      if shard.device == device:
        total += shard.data.nbytes
  return total
