"""Transformer compression toolkit (issue 27): pruning, low-rank and composed recipes on
lm_tiny and all-MiniLM-L6-v2, and retention against softmax attention.

1. lm_tiny (`configs/lm_tiny.py`, trained here unless `--lm_workdir` holds the run) and
   all-MiniLM-L6-v2 (real pretrained weights): every recipe of `RECIPES`
   (`effcomp/runs/compress.py`): magnitude, Wanda and SparseGPT at 50 % unstructured and
   2:4; structured pruning of 25 % and 50 % of each layer's heads and MLP channels by
   Wanda-sp and LLM-Pruner's Taylor score (`STRUCTURED`, lm_tiny only: a LLaMA); SVD, ASVD
   and SVD-LLM at 50 % of the block kernels' parameters; two composed recipes. Per row:
   size (MiB as stored, `compress.storage_bytes`, and its ratio to float32), validation
   perplexity (lm_tiny) or the mean cosine of sentence embeddings to the original's
   (MiniLM), the compression's wall time, and the CPU latency of a forward relative to the
   dense model, measured side by side.
2. Retention (RetNet) against softmax attention: lm_tiny trained from scratch both ways
   (`configs/lm_tiny.py:attention=retention`), the same budget: validation perplexity and
   greedy-decoding speed (tokens/s of the 64 tokens after a prompt of L tokens, from
   `generate` with L + 65 and L + 1 positions, medians of interleaved runs) at several L.

Expected (papers): Wanda ≈ SparseGPT ≫ magnitude at 50 % (Sun et al. 2024, Table 2);
ASVD / SVD-LLM ≫ SVD (Wang et al. 2024, Table 1); retention decodes in O(1) per token, so
its speed ratio grows with L (Sun et al. 2023, Fig. 5).

  python benchmarks/compress.py [--part=all|lm|minilm|retention] [--calib_samples=64]
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.models.lm import generate  # noqa: E402
from effcomp.quant import pack  # noqa: E402
from effcomp.quant.ptq import evaluate  # noqa: E402
from effcomp.runs import compress  # noqa: E402
from effcomp.runs import quantize as runs_quantize  # noqa: E402

flags.DEFINE_string("lm_workdir", os.path.join(ROOT, "workdirs", "bench_lm_tiny"),
                    "lm_tiny run to compress (trained here first if unfinished).")
flags.DEFINE_string("retention_workdir", os.path.join(ROOT, "workdirs", "bench_lm_tiny_retention"),
                    "lm_tiny with retention (trained here first if unfinished).")
flags.DEFINE_enum("part", "all", ["all", "lm", "minilm", "retention"], "What to measure.")
flags.DEFINE_integer("calib_samples", 64, "Calibration sequences.")
flags.DEFINE_list("contexts", ["64", "256", "1024"], "Prompt lengths of the decoding test.")
FLAGS = flags.FLAGS

STRUCTURED = ("wanda_sp:0.25", "taylor:0.25", "wanda_sp:0.5", "taylor:0.5")  # LLaMA only
RECIPES = (
    "magnitude:0.5", "wanda:0.5", "sparsegpt:0.5",
    "magnitude:2:4", "wanda:2:4", "sparsegpt:2:4",
    "svd:0.5", "asvd:0.5", "svdllm:0.5",
    "wanda:2:4+gptq:w4a16g128", "svdllm:0.5+rtn:w4a16g128",
)


def dense_row(params, **metric):
  """The uncompressed model's row: float32 size, no compression, latency 1."""
  return {"MB": compress.float32_bytes(params) / 2**20, "size ratio": 1.0, "compress s": 0.0,
          "latency ratio": 1.0, **metric}


def compress_rows(name, measure, src, dense, recipes):
  rows = [{"model": name, "recipe": "dense (float32)", **dense}]
  for recipe in recipes:
    _, row = measure(src, compress.parse_recipe(recipe))
    rows.append({"model": name, **{k: v for k, v in row.items() if k != "steps"}})
    print(rows[-1], flush=True)
  return rows


def lm_rows():
  src = runs_quantize.lm_source(runs.open(common.trained_lm_tiny(FLAGS.lm_workdir)),
                                FLAGS.calib_samples)
  dense = dense_row(src.params, perplexity=evaluate.perplexity(
      src.model, src.params, src.eval_rows, src.tokenizer.pad_id))
  return compress_rows("lm_tiny", compress.measure_lm, src, dense,
                       RECIPES[:6] + STRUCTURED + RECIPES[6:])


def minilm_rows():
  src = runs_quantize.encoder_source(FLAGS.calib_samples)
  dense = dense_row(src.encoder.params, cosine=1.0)
  return compress_rows("all-MiniLM-L6-v2", compress.measure_encoder, src, dense, RECIPES)


def retention_rows():
  runs_ = {name: runs.open(common.trained_lm_tiny(workdir, attention=name))
           for name, workdir in (("softmax", FLAGS.lm_workdir),
                                 ("retention", FLAGS.retention_workdir))}
  rows = []
  for name, run in runs_.items():
    src = runs_quantize.lm_source(run, 1)
    rows.append({"attention": name,
                 "params (M)": sum(x.size for x in jax.tree.leaves(run.params)) / 1e6,
                 "perplexity": evaluate.perplexity(src.model, src.params, src.eval_rows,
                                                   src.tokenizer.pad_id)})
  speed = []
  for context in map(int, FLAGS.contexts):
    prompt = jnp.ones((1, context), jnp.int32)
    keys = [(name, n) for name in runs_ for n in (1, 65)]
    seconds = dict(zip(keys, pack.median_times(
        [(jax.jit(lambda p, n=n, run=runs_[name]: generate.generate(
            run.model, p, prompt, max_new_tokens=n, rng=jax.random.key(0))),
          (runs_[name].params,)) for name, n in keys], repeats=5)))
    rate = {name: 64 / (seconds[(name, 65)] - seconds[(name, 1)]) for name in runs_}
    speed.append({"context": context, "softmax tokens/s": rate["softmax"],
                  "retention tokens/s": rate["retention"],
                  "retention / softmax": rate["retention"] / rate["softmax"]})
    print(speed[-1], flush=True)
  return rows, speed


def main(argv):
  del argv
  start = time.time()
  rows, tables = [], []
  if FLAGS.part in ("all", "lm"):
    rows += lm_rows()
  if FLAGS.part in ("all", "minilm"):
    rows += minilm_rows()
  if FLAGS.part in ("all", "retention"):
    attention, speed = retention_rows()
    tables = [("Retention vs softmax attention (lm_tiny, trained from scratch alike)",
               "Validation perplexity of python_docs; greedy decoding of 64 tokens after a "
               "prompt of `context` tokens, batch 1, CPU.", attention,
               ["attention", "params (M)", "perplexity"]),
              ("Decoding speed", "", speed,
               ["context", "softmax tokens/s", "retention tokens/s", "retention / softmax"])]
  notes = (
      "Size: bytes as stored (`compress.storage_bytes`: float32 arrays, pruned kernels as kept "
      "values + 1 mask bit per weight, quantized weights at their bits + a float32 scale and "
      "uint8 zero per group and output). Latency ratio: a jitted forward of the compressed "
      "params over the dense one (lm_tiny: 8 × 128 tokens; MiniLM: 32 sentences), medians of "
      "7 interleaved runs; CPU kernels are dense here, so only a smaller shape (factor pairs) "
      "can be faster, sparsity and fake-quantized weights cannot. Calibration: "
      f"{FLAGS.calib_samples} sequences. Wall time of the whole benchmark: "
      f"{(time.time() - start) / 60:.1f} min.")
  common.write_results(
      "compress", rows, ["model", "recipe", "MB", "size ratio", "perplexity", "cosine",
                         "compress s", "latency ratio"],
      title="Transformer compression: pruning, low-rank and composed recipes (CPU scale)",
      notes=notes, tables=tables)


if __name__ == "__main__":
  app.run(main)
