"""Tasks (what to optimize and how to evaluate), registered in `effcomp.registry.TASKS`."""

from effcomp.tasks import (autoencoder, classification, diffusion, diffusion_sr, lm,  # noqa: F401
                           sr)  # (registration)
from effcomp.tasks.base import Task  # noqa: F401
