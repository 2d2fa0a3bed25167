"""A 1.1 B-parameter LLaMA-style LM (the TinyLlama-1.1B shape) for a TPU pod slice or a GPU node.

22 blocks, width 2,048, 32 query / 4 key-value heads, SwiGLU 5,632, untied embeddings,
32,768-token BPE, context 2,048, bf16 compute with per-block rematerialization; weights
and optimizer state sharded over `fsdp` (all devices by default; add `tensor` for
larger slices: `--config.mesh.fsdp=8 --config.mesh.tensor=4`).

  launch/tpu_pod.sh run --config=configs/lm_1b.py --workdir=gs://bucket/lm_1b \\
      --config.task.tokenizer=gs://bucket/tok32k/tokenizer.json \\
      --config.data.manual_dir=gs://bucket/wikitext

Arguments: data (wikitext103 default | wikitext2 | python_docs), steps, seed.
Cost: 2,000 steps × 512 × 2,048 tokens = 2.1 B tokens; 6·N·D ≈ 1.4e19 FLOPs: ≈ 2.5 h on a
TPU v4-32 (16 chips at 40 % MFU), ≈ 3 h on 8 H100s. Memory: params, gradients and AdamW
state are ≈ 18 GB in float32 (≈ 1.1 GB per chip with fsdp=16); with remat each chip keeps
one block input per layer for its 32 × 2,048 tokens (≈ 6 GB in bf16).
WikiText-103 (≈ 0.12 B tokens) is small for this model: this config is the pipeline at
scale and the starting point for a larger corpus, not a compute-optimal run.
"""

from effcomp import config as config_lib
from effcomp import recipes


def get_config(arg=None):
  a = config_lib.parse_arg(arg, data="wikitext103", steps=2000, seed=0)
  config = recipes.lm_pretraining(recipes.LM_1B, steps=a.steps, batch_size=512,
                                  seq_len=2048, lr=4e-4,
                                  tokenizer_vocab=32768, data_name=a.data)
  config.seed = a.seed
  config.train.compute_dtype = "bfloat16"
  config.train.log_every = 20
  config.train.eval_every = 250
  config.eval.batch_size = 64
  config.checkpoint.every_steps = 250
  config.mesh.data, config.mesh.fsdp = 1, -1
  return config_lib.lock(config)
