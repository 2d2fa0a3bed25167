"""Tasks (what to optimize and how to evaluate), registered in `effcomp.registry.TASKS`."""

from effcomp.tasks import autoencoder, classification, diffusion, lm, sr  # noqa: F401  (registration)
from effcomp.tasks.base import Task  # noqa: F401
