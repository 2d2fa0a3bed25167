"""effcomp: efficient neural networks in JAX/Flax.

Binarized and quantized networks, efficient diffusion transformers, super-resolution
and hardware-friendly activation functions, trained by one sharded trainer
(`effcomp.train.trainer`); `effcomp.runs` trains a config and opens a finished run
(`runs.train(config, workdir)`, `runs.open(workdir)`). The package is built in floors, each
importing only from those below it (docs/architecture.md).
"""

__version__ = "0.1.0"
