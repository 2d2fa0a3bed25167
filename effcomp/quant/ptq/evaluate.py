"""What a quantized model is measured by: LM perplexity, sentence-embedding agreement."""

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effcomp.quant import fake_quant
from effcomp.quant.ptq import blocks as blocks_lib


Wrap = Callable[[Callable[[], Any]], Any]


def _direct(fn: Callable[[], Any]) -> Any:
  return fn()


def perplexity(model, params, rows: np.ndarray, pad_id: int,
               act: Optional[fake_quant.QuantSpec] = None, batch_size: int = 32,
               wrap: Wrap = _direct) -> float:
  """Token-level perplexity of `model` on packed `rows` [N, T + 1] (targets = pad masked),
  with block-linear inputs fake-quantized per `act` (the LM head's stay in float).
  `wrap(fn)` runs each forward (e.g. `effcomp.lowrank`'s `apply_factorized`, for
  parameters holding factor pairs), inside the activation quantizer."""
  @jax.jit
  def nll(p, tokens):
    logits = blocks_lib.apply_with_act_quant(
        lambda: wrap(lambda: model.apply({"params": p}, tokens[:, :-1])), act,
        skip=("lm_head",))
    targets = tokens[:, 1:]
    weights = (targets != pad_id).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(losses * weights), jnp.sum(weights)

  total, count = 0.0, 0.0
  for start in range(0, len(rows), batch_size):
    chunk = np.asarray(rows[start:start + batch_size])
    if len(chunk) < batch_size:  # one compiled shape: pad with all-pad rows (no targets)
      chunk = np.concatenate([chunk, np.full((batch_size - len(chunk), chunk.shape[1]), pad_id,
                                             chunk.dtype)])
    s, c = nll(params, jnp.asarray(chunk))
    total, count = total + float(s), count + float(c)
  return float(np.exp(total / max(count, 1.0)))


def embedding_cosine(bm: blocks_lib.BlockModel, params_ref, params, batches: Sequence[Any],
                     act: Optional[fake_quant.QuantSpec] = None, wrap: Wrap = _direct) -> float:
  """Mean cosine between the embeddings of `params` (activations quantized per `act`, each
  block run inside `wrap`, as in `perplexity`) and of the reference `params_ref`, over the
  sentences of `batches` (BERT batches)."""
  @functools.partial(jax.jit, static_argnums=2)
  def embed(p, batch, compressed):
    h = bm.embed(p, batch)
    for i in range(bm.num_blocks):
      run = lambda h=h, i=i: bm.block(i, p, h, batch, act=act if compressed else None)
      h = wrap(run) if compressed else run()
    return bm.head(p, h, batch)

  cosines = []
  for batch in batches:
    a = embed(params_ref, batch, False)
    b = embed(params, batch, True)
    cosines.append(np.sum(np.asarray(a) * np.asarray(b), -1))  # unit vectors
  return float(np.mean(np.concatenate(cosines)))
