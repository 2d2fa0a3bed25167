"""Demo: a small CNN classifies scikit-learn's 8×8 digits (embedded data, no download).

  make demo
  # = python experiments/train.py --config=configs/demo.py --workdir=workdirs/demo

Expected: test accuracy ≥ 0.95 in about a minute on 2 CPU cores (400 steps of
batch 64). Outputs in the workdir: checkpoints/, tensorboard/, metrics.jsonl,
curves.png, summary.json, config.json, runs.jsonl.
Variants: `configs/demo.py:model=mlp`, `configs/demo.py:steps=100`,
`configs/demo.py:model=mlp,activation=tanh` (any name of `effcomp.nn.activations`,
including `circuit:tanh_i3f5_o1f7`, a bit-exact activation circuit; `benchmarks/circuits.py`).
"""

from effcomp import config as config_lib
from effcomp.tasks import classification


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="cnn", steps=400, activation="relu")
  config = config_lib.base_config()
  config.model = {"cnn": {"name": "cnn", "num_classes": 10, "widths": (32, 64), "convs_per_stage": 2},
                  "mlp": {"name": "mlp", "num_classes": 10, "widths": (256, 256)}}[a.model]
  config.model.activation = a.activation  # the hidden layers' (effcomp.nn.activations)
  config.task = classification.task_defaults()
  config.data.name = "digits"
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = 64
  config.train.log_every = 25
  config.train.eval_every = 100
  config.eval.batch_size = 128
  config.optimizer.name = "adamw"
  config.optimizer.lr = 3e-3
  config.optimizer.warmup_steps = min(20, a.steps // 5)
  config.optimizer.weight_decay = 1e-4
  config.checkpoint.every_steps = 100
  return config_lib.lock(config)
