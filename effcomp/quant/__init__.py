"""Quantizers and binarizers: estimators, binary layers, packing."""
