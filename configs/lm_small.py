"""A 125 M-parameter LLaMA-style LM (GPT-3 Small / OPT-125M scale) for one accelerator.

12 blocks, width 768, 12 query / 4 key-value heads, SwiGLU 2048, untied embeddings, a
32,768-token byte-level BPE, context 1,024; AdamW recipe of `recipes.lm_pretraining`,
bf16 compute.

  python experiments/train_tokenizer.py --dataset=wikitext103 --vocab_size=32768 \\
      --workdir=workdirs/tok32k --data_dir=...        # once (≈ 1–2 min)
  python experiments/train.py --config=configs/lm_small.py --workdir=workdirs/lm_small \\
      --config.task.tokenizer=workdirs/tok32k/tokenizer.json \\
      --config.data.manual_dir=/data/wikitext         # holds wikitext-103-raw-v1.zip

Arguments: data (wikitext103 default | wikitext2 | python_docs), steps, seed.
Cost: 4,000 steps × 128 × 1,024 tokens = 0.52 B tokens (≈ 4 epochs of WikiText-103);
6·N·D ≈ 3.9e17 FLOPs: ≈ 45 min on one H100 at 40 % MFU, ≈ 15 min on a TPU v4-8.
On python_docs (0.34 M tokens) it overfits within a few hundred steps: use lm_tiny there.
"""

from effcomp import config as config_lib
from effcomp import recipes

MODEL = {"vocab_size": 32768, "num_layers": 12, "embed_dim": 768, "num_heads": 12,
         "num_kv_heads": 4, "mlp_dim": 2048, "tie_embeddings": False}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, data="wikitext103", steps=4000, seed=0)
  config = recipes.lm_pretraining(MODEL, steps=a.steps, batch_size=128, seq_len=1024, lr=6e-4,
                                  tokenizer_vocab=32768, data_name=a.data)
  config.seed = a.seed
  config.train.compute_dtype = "bfloat16"
  config.train.log_every = 50
  config.train.eval_every = 500
  config.eval.batch_size = 64
  config.checkpoint.every_steps = 500
  return config_lib.lock(config)
