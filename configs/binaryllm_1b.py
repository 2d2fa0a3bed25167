"""1-bit LLaMA-1.1B by progressive binarization on a TPU pod slice or a GPU node.

The student is the `lm_1b` architecture (TinyLlama-1.1B shape) with 1-bit q/k/v/o and MLP
weights (0.97 B of its 1.10 B parameters; embeddings, LM head and norms stay in full
precision), started from a trained `lm_1b` run and distilled from it
(`recipes.binary_lm_qat`: logit KL + normalized hidden-state MSE, binary-aware
initialization, dual scaling, 20 phases):

  launch/tpu_pod.sh run --config=configs/lm_1b.py --workdir=gs://bucket/lm_1b ...
  launch/tpu_pod.sh run --config=configs/binaryllm_1b.py:teacher=gs://bucket/lm_1b \\
      --workdir=gs://bucket/lm_1b_1bit --config.data.manual_dir=gs://bucket/wikitext
  python experiments/export.py --config=configs/binaryllm_1b.py:teacher=gs://bucket/lm_1b \\
      --workdir=gs://bucket/lm_1b_1bit   # packed: 1 bit per weight + 2 scale vectors a layer

Arguments as configs/binaryllm_tiny.py (teacher, method, init, dual, steps, phases, seed)
plus data (the teacher's dataset: wikitext103 default | wikitext2 | python_docs).
Cost (an estimate, not measured): 10,000 steps × 256 × 2,048 tokens = 5.2 B tokens. Per
token the student costs 6·N FLOPs, the frozen teacher's forward 2·N and the student's remat
another 2·N: 10 · 1.1e9 · 5.2e9 ≈ 5.7e19 FLOPs, ≈ 9 h on a TPU v4-32 (16 chips, 40 % MFU) or
≈ 5 h on 8 H100s. Memory: student params, gradients and AdamW state ≈ 18 GB in float32 plus
the teacher's 4.4 GB, all sharded over fsdp; with remat each chip keeps one block input per
layer. The paper's own token budgets are not in our references; this is our recipe at the
scale of its smaller models.
"""

from effcomp import config as config_lib
from effcomp import recipes


def get_config(arg=None):
  a = config_lib.parse_arg(arg, teacher="", method="progressive", init=True, dual=True,
                           steps=10000, phases=20, data="wikitext103", seed=0)
  config = recipes.binary_lm_qat(
      recipes.LM_1B, teacher_workdir=a.teacher, method=a.method, dual_scaling=a.dual,
      binary_init=a.init and a.dual and a.method == "progressive", steps=a.steps,
      batch_size=256, seq_len=2048, lr=4e-4, num_phases=a.phases, tokenizer_vocab=32768,
      data_name=a.data)
  config.seed = a.seed
  config.train.compute_dtype = "bfloat16"
  config.train.log_every = 20
  config.train.eval_every = 500
  config.eval.batch_size = 64
  config.checkpoint.every_steps = 500
  config.mesh.data, config.mesh.fsdp = 1, -1
  return config_lib.lock(config)
