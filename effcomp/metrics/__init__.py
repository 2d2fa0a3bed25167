"""Metrics computed on model outputs: FLOPs, FID, image quality."""
