"""Models, registered by name in `effcomp.registry.MODELS`.

Importing this package registers every model; `build(name, **kwargs)` constructs one.
"""

import dataclasses
from typing import Any

from effcomp.registry import MODELS
from effcomp.models import bnn, cnn, detect, dit, lm, mlp, sr, vae, vq  # noqa: F401  (registration)


def build(name: str, **kwargs: Any):
  """The registered model `name` with `kwargs`; unknown fields are a ValueError."""
  cls = MODELS.get(name)
  fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f"config.model: {name!r} has no field(s) {', '.join(unknown)}; "
                     f"valid: {', '.join(sorted(fields))}")
  return cls(**kwargs)
