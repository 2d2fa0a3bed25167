"""Frozen image tokenizers (`IMAGE_TOKENIZERS`): a finished `vq` run turns images into code
grids and back, and tokenizes a dataset split once, caching the codes beside its weights.

  tokenizer = IMAGE_TOKENIZERS.get("run")("workdirs/vq_digits")
  arrays = tokenizer.tokenize(source, "digits_train_16", images_fn)   # {'tokens', 'label'}
  images = tokenizer.decode(codes)                                  # [−1, 1]

The cache, `<workdir>/tokens/<key>-<digest>.npz`, is named by the caller's key (dataset,
split, preprocessing) and a digest of the tokenizer's variables and of the split's size, so
new weights or another split never reuse stale codes; it is written atomically (temporary
file, then rename) by process 0.
"""

import dataclasses
import hashlib
import os
from typing import Any, Callable, Dict

import jax
import numpy as np
import tqdm
from etils import epath

from effcomp.data.pipeline import read_batch
from effcomp.registry import IMAGE_TOKENIZERS
from effcomp.runs.run import Run, open_frozen
from effcomp.tasks import vq

CACHE_DIR = "tokens"


@dataclasses.dataclass(frozen=True)
class ImageTokenizer:
  """A frozen `vq` run: `encode` images [B, H, W, C] in [−1, 1] → codes [B, h, w] int32,
  `decode` codes → images in [−1, 1]."""
  run: Run
  variables: Any
  encode_fn: Callable[[Any, jax.Array], jax.Array]
  decode_fn: Callable[[Any, jax.Array], jax.Array]
  digest: str  # of the variables: names the cache files (`variables_digest`)

  @property
  def codebook_size(self) -> int:
    return self.run.model.codebook_size

  def encode(self, images: jax.Array) -> jax.Array:
    return self.encode_fn(self.variables, images)

  def decode(self, codes: jax.Array) -> jax.Array:
    return self.decode_fn(self.variables, codes)

  def tokenize(self, source: Any, key: str,
               images_fn: Callable[[np.ndarray], jax.Array], batch_size: int = 256
               ) -> Dict[str, np.ndarray]:
    """{'tokens': [N, h·w] int32 in raster order, 'label': [N]} of every record of `source`
    (its 'image' made model input by `images_fn`), from the cache when present."""
    path = epath.Path(self.run.workdir) / CACHE_DIR / f"{key}-{self.digest}-{len(source)}.npz"
    if path.exists():
      with path.open("rb") as f, np.load(f) as cached:
        return {k: cached[k] for k in cached.files}
    tokens, labels = [], []
    for start in tqdm.trange(0, len(source), batch_size, desc=f"tokenizing {key}",
                             disable=len(source) <= batch_size):
      batch = read_batch(source, range(start, min(start + batch_size, len(source))))
      codes = np.asarray(self.encode(images_fn(batch["image"])))
      tokens.append(codes.reshape(len(codes), -1).astype(np.int32))
      labels.append(np.asarray(batch["label"]))
    arrays = {"tokens": np.concatenate(tokens), "label": np.concatenate(labels)}
    if jax.process_index() == 0:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
      with tmp.open("wb") as f:
        np.savez(f, **arrays)
      tmp.rename(path)
    return arrays


def variables_digest(variables: Any) -> str:
  """12 hex digits of the SHA-1 of every leaf's bytes."""
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(variables):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:12]


@IMAGE_TOKENIZERS.register("run")
def load_run_tokenizer(workdir: str) -> ImageTokenizer:
  run, variables = open_frozen(workdir, "vq", f"tokenizer run:{workdir}",
                               "configs/vq_tokenizer.py")
  variables = vq.tokenizer_variables(variables)
  model = run.model
  return ImageTokenizer(run, variables,
                        jax.jit(lambda v, x: model.apply(v, x, method="tokenize")),
                        jax.jit(lambda v, c: model.apply(v, c, method="decode_code")),
                        variables_digest(variables))
