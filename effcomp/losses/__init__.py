"""Training losses beyond plain regression: distillation (DUKD, …) as pure functions."""
