"""effcomp: efficient neural networks in JAX/Flax.

Binarized and quantized networks, efficient diffusion transformers, super-resolution
and hardware-friendly activation functions, trained by one sharded trainer
(`effcomp.train.trainer`).
"""

__version__ = "0.1.0"
