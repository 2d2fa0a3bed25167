"""A dense layer whose weights carry logical axis names (shardable on any mesh)."""

import flax.linen as nn


def dense(features: int, in_axis: str, out_axis: str, dtype, name: str | None = None) -> nn.Dense:
  """`nn.Dense` whose kernel is [in_axis, out_axis] and bias [out_axis] for sharding."""
  return nn.Dense(
      features, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (in_axis, out_axis)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_axis,)))
