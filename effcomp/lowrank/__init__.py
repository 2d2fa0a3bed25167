"""Low-rank factorization of linear layers: plain, ASVD-scaled and SVD-LLM-whitened SVD."""
