"""Post-training quantization of language models: RTN, GPTQ, SmoothQuant, AWQ, CBQ."""
