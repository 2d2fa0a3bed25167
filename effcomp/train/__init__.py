"""The one trainer: mesh and sharding, train state, optimizer, checkpoints, metrics."""
