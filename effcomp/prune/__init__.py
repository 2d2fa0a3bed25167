"""Pruning of transformer linears: magnitude, Wanda, SparseGPT; unstructured and N:M."""
