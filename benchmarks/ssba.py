"""Shift Sparse Block Attention against dense attention as the token grid grows.

At token grids 16² … 64² (256 … 4096 tokens), hidden 256, 4 heads, batch 1, each SSBA
setting (block b, shift 0 and b/2) is measured beside dense attention on the same input
and the same parameters: the sparsity (share of query-key pairs not computed,
`effcomp.nn.sparse_block_attention.sparsity`), the multiply-adds of q·kᵀ and attn·v as
run (`attention_macs`) and the jitted CPU time of one forward, both of the attention core
(q, k, v → output: `multi_head_attention` vs `block_attention`) and of the whole layer
(x → output with the qkv and output projections: `SelfAttention` vs `SparseBlockAttention`).
All functions of one grid are timed interleaved in one loop (`effcomp.quant.pack.
median_times`, medians), so load drift on the machine hits them alike. A second table
averages each block size over a shift-0 / shift-b/2 layer pair, what an SSBA DiT
alternates (the paper's "84.16 % average sparsity" is such an average over its layers, at
its own resolutions and block sizes, which the paper's public text does not give).

  python benchmarks/ssba.py [--grids=16,32,48,64] [--blocks=8,16] [--repeats=7]
"""

import os
import sys
import time
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp.nn.downsampled_attention import SelfAttention, multi_head_attention  # noqa: E402
from effcomp.nn.sparse_block_attention import (SparseBlockAttention, attention_macs,  # noqa: E402
                                               block_attention, sparsity)
from effcomp.quant.pack import median_times  # noqa: E402

flags.DEFINE_list("grids", ["16", "32", "48", "64"], "Token grid sides (grid² tokens).")
flags.DEFINE_list("blocks", ["8", "16"], "SSBA block sides (tokens); each with shift 0 and b/2.")
flags.DEFINE_integer("dim", 256, "Hidden width.")
flags.DEFINE_integer("heads", 4, "Attention heads.")
flags.DEFINE_integer("repeats", 7, "Timed runs of each function at the largest grid (medians); "
                     "smaller grids get more.")
FLAGS = flags.FLAGS

COLUMNS = ["grid", "tokens", "block", "shift", "sparsity", "attn GMACs dense",
           "attn GMACs SSBA", "attn MACs ratio", "layer MACs ratio", "core ms dense",
           "core ms SSBA", "core speedup", "layer ms dense", "layer ms SSBA", "layer speedup"]
PAIR_COLUMNS = ["grid", "tokens", "block", "avg sparsity", "attn MACs ratio",
                "layer MACs ratio", "core speedup", "layer speedup"]


def _normal(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def scaling_rows(grids: Sequence[int] = (16, 32, 48, 64), blocks: Sequence[int] = (8, 16),
                 dim: int = 256, heads: int = 4, batch: int = 1, repeats: int = 7,
                 seed: int = 0) -> List[Dict]:
  """One row per (grid, block, shift ∈ {0, b/2}) for blocks that divide the grid: sparsity,
  attention MACs dense vs SSBA (q·kᵀ + attn·v; `layer MACs ratio` adds the 4·N·dim²
  projections to both), and median CPU times (ms) of the jitted core and layer, dense and
  SSBA interleaved per grid, with speedup = dense time / SSBA time. `repeats` timed runs
  at the largest grid; a grid with k× fewer tokens gets k× more (at most 16×), as its
  millisecond timings are noisier."""
  rows, largest = [], max(grids) ** 2
  for side in grids:
    n, d = side * side, dim // heads
    x = _normal((batch, n, dim), seed)
    q, k, v = (_normal((batch, heads, n, d), seed + i) for i in (1, 2, 3))
    params = nn.unbox(SelfAttention(heads).init(jax.random.key(seed), x)["params"])
    settings = [(b, s) for b in blocks if side % b == 0 for s in sorted({0, b // 2})]
    layers = [jax.jit(SelfAttention(heads).apply)] + [
        jax.jit(SparseBlockAttention(heads, side, side, b, s).apply) for b, s in settings]
    cores = [jax.jit(multi_head_attention)] + [
        jax.jit(lambda q, k, v, b=b, s=s: block_attention(q, k, v, side, side, b, s))
        for b, s in settings]
    fns = [(f, ({"params": params}, x)) for f in layers] + [(f, (q, k, v)) for f in cores]
    times = median_times(fns, repeats * min(16, largest // n))
    layer_t, core_t = times[:len(layers)], times[len(layers):]
    dense_macs, projections = attention_macs(side, side, dim), 4 * n * dim * dim
    for i, (b, s) in enumerate(settings, start=1):
      macs = attention_macs(side, side, dim, b, s)
      rows.append({"grid": f"{side}²", "tokens": n, "block": b, "shift": s,
                   "sparsity": sparsity(side, side, b, s),
                   "attn GMACs dense": dense_macs / 1e9, "attn GMACs SSBA": macs / 1e9,
                   "attn MACs ratio": macs / dense_macs,
                   "layer MACs ratio": (macs + projections) / (dense_macs + projections),
                   "core ms dense": 1e3 * core_t[0], "core ms SSBA": 1e3 * core_t[i],
                   "core speedup": core_t[0] / core_t[i],
                   "layer ms dense": 1e3 * layer_t[0], "layer ms SSBA": 1e3 * layer_t[i],
                   "layer speedup": layer_t[0] / layer_t[i]})
      print(rows[-1], flush=True)
  return rows


def pair_rows(rows: List[Dict]) -> List[Dict]:
  """Each (grid, block) averaged over its shift-0 and shift-b/2 rows: mean sparsity, summed
  MACs and times (two dense layers against the SSBA pair)."""
  out = []
  for key in dict.fromkeys((r["grid"], r["block"]) for r in rows):
    pair = [r for r in rows if (r["grid"], r["block"]) == key]
    total = {c: sum(r[c] for r in pair) for c in ("attn GMACs dense", "attn GMACs SSBA",
                                                  "core ms dense", "core ms SSBA",
                                                  "layer ms dense", "layer ms SSBA")}
    proj = 4 * pair[0]["tokens"] * FLAGS.dim ** 2 * len(pair) / 1e9
    out.append({"grid": key[0], "tokens": pair[0]["tokens"], "block": key[1],
                "avg sparsity": float(np.mean([r["sparsity"] for r in pair])),
                "attn MACs ratio": total["attn GMACs SSBA"] / total["attn GMACs dense"],
                "layer MACs ratio": (total["attn GMACs SSBA"] + proj) / (
                    total["attn GMACs dense"] + proj),
                "core speedup": total["core ms dense"] / total["core ms SSBA"],
                "layer speedup": total["layer ms dense"] / total["layer ms SSBA"]})
  return out


def main(argv):
  del argv
  start = time.time()
  rows = scaling_rows([int(g) for g in FLAGS.grids], [int(b) for b in FLAGS.blocks],
                      FLAGS.dim, FLAGS.heads, 1, FLAGS.repeats)
  notes = (f"Hidden {FLAGS.dim}, {FLAGS.heads} heads, batch 1, float32, jitted, CPU "
           f"({os.cpu_count()} cores), medians of interleaved runs per grid ({FLAGS.repeats} at "
           "the largest grid, k× more at a grid of k× fewer tokens, at most 16×). "
           "`sparsity`: share of the N² query-key pairs SSBA does not compute (shifted "
           "partitions do not wrap around — Swin's cyclic shift + mask — and their smaller "
           "edge pieces are attended on their own, so no masked pair is computed). `attn "
           "GMACs`: q·kᵀ + attn·v as run; `layer MACs ratio` adds the qkv and output "
           "projections (4·N·dim², the same for both). `core`: q, k, v → output; `layer`: "
           "x → output with the projections. speedup = dense time / SSBA time. Wall time "
           f"of the benchmark: {(time.time() - start) / 60:.1f} min.")
  tables = [("Alternating layer pairs", "Each block size averaged over a shift-0 and a "
             "shift-b/2 layer, the pair an SSBA DiT alternates: mean sparsity, summed MACs "
             "and summed times.", pair_rows(rows), PAIR_COLUMNS)]
  common.write_results("ssba", rows, COLUMNS, notes=notes, tables=tables,
                       title="Shift Sparse Block Attention vs dense attention (CPU)",
                       extra={"dim": FLAGS.dim, "heads": FLAGS.heads,
                              "repeats": FLAGS.repeats})


if __name__ == "__main__":
  app.run(main)
