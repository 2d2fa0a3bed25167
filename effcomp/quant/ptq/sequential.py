"""The sequential pass of block-wise post-training methods: one block at a time.

GPTQ (IST-DASLab/gptq `llama.py` `llama_sequential`), Wanda and SparseGPT
(locuslab/wanda `lib/prune.py` `prune_wanda`, `prune_sparsegpt`) all walk a model the
same way: the calibration batches enter block 0 as embeddings; for block i they record the
inputs of its linears (forward hooks in the references, `BlockModel.block(capture=True)`
here), change the block's weights, and feed the *changed* block's output to block i + 1.
These are the two steps they share, each block compiled once:

    hs = [bm.embed(params, b) for b in calib]
    for i in range(bm.num_blocks):
      inputs = linear_inputs(bm, i, params, hs, calib, act)   # {kernel path: [x per batch]}
      params = ...                                            # change block i's kernels
      hs = block_outputs(bm, i, params, hs, calib, act)
"""

import functools
from typing import Any, Dict, List, Optional, Sequence

import jax

from effcomp.quant import fake_quant
from effcomp.quant.ptq import blocks as blocks_lib


@functools.partial(jax.jit, static_argnames=("bm", "i", "act", "capture"))
def run_block(bm: blocks_lib.BlockModel, i: int, block_params, h: jax.Array, batch: Any,
              act: Optional[fake_quant.QuantSpec], capture: bool):
  """Block i alone on h [N, T, E], compiled once per (model, block, activation quantizer):
  `h'`, or `(h', {kernel path: its input})` when `capture` (`BlockModel.block`)."""
  return bm.block(i, {bm.prefix(i): block_params}, h, batch, act=act, capture=capture)


def linear_inputs(bm: blocks_lib.BlockModel, i: int, params, hs: Sequence[jax.Array],
                  calib: Sequence[Any], act: Optional[fake_quant.QuantSpec]
                  ) -> Dict[str, List[jax.Array]]:
  """{kernel path: [its input [N, T, in] for each calibration batch]} of block i's linears.

  Args:
    bm: the block view.
    i: the block.
    params: the full parameter tree (block i's weights as they stand now).
    hs: block i's input for each calibration batch, [N, T, E].
    calib: the calibration batches (`bm`'s batch format), aligned with `hs`.
    act: the activation quantizer applied at every linear input (None: full precision).
  """
  out: Dict[str, List[jax.Array]] = {}
  for h, b in zip(hs, calib):
    for path, x in run_block(bm, i, params[bm.prefix(i)], h, b, act, True)[1].items():
      out.setdefault(path, []).append(x)
  return out


def block_outputs(bm: blocks_lib.BlockModel, i: int, params, hs: Sequence[jax.Array],
                  calib: Sequence[Any], act: Optional[fake_quant.QuantSpec]
                  ) -> List[jax.Array]:
  """Block i's outputs [N, T, E] for each calibration batch: block i + 1's inputs."""
  return [run_block(bm, i, params[bm.prefix(i)], h, b, act, False) for h, b in zip(hs, calib)]
