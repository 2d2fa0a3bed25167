"""Building blocks shared by the models: attention variants, conditioning, re-param blocks."""
