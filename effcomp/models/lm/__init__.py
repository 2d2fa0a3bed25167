"""Transformer language models: a LLaMA-style decoder, a BERT encoder, HF checkpoint I/O."""

from effcomp.models.lm import llama  # noqa: F401,E402  (registration)
