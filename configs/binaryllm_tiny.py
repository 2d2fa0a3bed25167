"""1-bit lm_tiny by progressive binarization, and the baselines, on 2 CPU cores.

The student is the 5.0 M-parameter `lm_tiny` with 1-bit q/k/v/o and MLP weights (3.9 M of
its weights; embeddings, LM head and norms stay full precision), started from a trained
`lm_tiny` run and distilled from it (`recipes.binary_lm_qat`).

  python experiments/train.py --config=configs/lm_tiny.py --workdir=workdirs/lm_tiny
  python experiments/train.py \\
      --config=configs/binaryllm_tiny.py:teacher=workdirs/lm_tiny,method=progressive \\
      --workdir=workdirs/lm_tiny_1bit
  python experiments/export.py --config=configs/binaryllm_tiny.py:teacher=workdirs/lm_tiny \\
      --workdir=workdirs/lm_tiny_1bit        # packed 1-bit weights + their perplexity

Arguments: teacher (the FP run's workdir; its tokenizer is used), method (progressive |
bitnet | xnor), init (binary-aware initialization, progressive only), dual (dual scaling,
progressive only), steps, phases (progressive schedule: tanh phases, then sign), seed.
Ablations: `init=false`, `dual=false` (no scales, so no initialization either).
Cost and results: `benchmarks/binaryllm.py` trains every method for the same steps and
writes docs/results/binaryllm.md (≈ 5 minutes per method on 2 CPU cores).
"""

from effcomp import config as config_lib
from effcomp import recipes


def get_config(arg=None):
  a = config_lib.parse_arg(arg, teacher="workdirs/lm_tiny", method="progressive", init=True,
                           dual=True, steps=240, phases=20, seed=0)
  config = recipes.binary_lm_qat(
      recipes.LM_TINY, teacher_workdir=a.teacher, method=a.method, dual_scaling=a.dual,
      binary_init=a.init and a.dual and a.method == "progressive", steps=a.steps,
      batch_size=16, seq_len=128, lr=1e-3, num_phases=a.phases)
  config.seed = a.seed
  config.train.log_every = 10
  config.train.eval_every = 40
  config.eval.batch_size = 32
  config.checkpoint.every_steps = 120
  config.data.cache_in_memory = True
  return config_lib.lock(config)
