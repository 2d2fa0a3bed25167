"""A 5.0 M-parameter LLaMA-style LM pretrained on the embedded Python-docs corpus.

The CPU-sized language model the LLM compression work (post-training quantization,
progressive binarization) measures on: 4 blocks, width 256, 4 query / 2 key-value heads
(GQA), SwiGLU 704, untied embeddings, byte-level BPE with 4,096 tokens trained on the
training split (≈ 338 k training tokens), sequences of 128.

  python experiments/train.py --config=configs/lm_tiny.py --workdir=workdirs/lm_tiny
  python experiments/evaluate.py --config=configs/lm_tiny.py --workdir=workdirs/lm_tiny
  python experiments/sample.py --config=configs/lm_tiny.py --workdir=workdirs/lm_tiny \\
      --prompt="The for statement"

Arguments: steps (default 500), tokenizer (bpe | byte | path to a tokenizer.json), seed,
attention (softmax | retention: RetNet's multi-scale retention in every block, which adds
a 256×256 gate per block, `Llama.attention`; also `--config.model.attention=retention`).
With tokenizer=byte the vocabulary is 320 rows (259 byte ids rounded up to 64): the
embeddings then hold 0.16 M of the 3.1 M parameters, as in large LLMs where the blocks
carry nearly all weights (with the 4,096-token BPE they hold 2.1 M of 5.0 M).
Cost: 500 steps × 4,096 tokens (≈ 6 epochs) ≈ 11 minutes on 2 CPU cores, data and
compilation included (measured by `benchmarks/lm.py`, which also records the validation
perplexity after every 100 steps and the curves).
"""

from effcomp import config as config_lib
from effcomp import recipes


def get_config(arg=None):
  a = config_lib.parse_arg(arg, steps=500, tokenizer="bpe", seed=0, attention="softmax")
  model = dict(recipes.LM_TINY, attention=a.attention)
  if a.tokenizer == "byte":
    model["vocab_size"] = 320
  config = recipes.lm_pretraining(model, steps=a.steps, batch_size=32,
                                  seq_len=128, lr=3e-3, tokenizer=a.tokenizer)
  config.seed = a.seed
  config.train.log_every = 10
  config.train.eval_every = 100
  config.checkpoint.every_steps = 100
  config.data.cache_in_memory = True
  return config_lib.lock(config)
