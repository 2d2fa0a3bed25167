"""Training recipes shared by several `configs/` files (big_vision's configs/common.py).

Each returns an unlocked `ConfigDict` that a config file finishes and locks.
"""

import ml_collections

from effcomp import config as config_lib
from effcomp.quant import binary
from effcomp.tasks import classification

CIFAR10_TRAIN_EXAMPLES = 50_000
IMAGENET_TRAIN_EXAMPLES = 1_281_167


def check_method(method: str) -> None:
  if method not in binary.METHODS:
    raise ValueError(f"config argument method={method!r}: expected one of {binary.METHODS}")


def _sgd_classification(model: dict, data_name: str, *, train_examples: int, epochs: int,
                        batch_size: int, lr: float, weight_decay: float
                        ) -> tuple[ml_collections.ConfigDict, int]:
  """What the CIFAR-10 and ImageNet BNN recipes share: classification with SGD (momentum
  0.9) and a cosine schedule over `epochs`; returns `(config, steps_per_epoch)`."""
  steps_per_epoch = train_examples // batch_size
  config = config_lib.base_config()
  config.model = model
  config.task = classification.task_defaults()
  config.data.name = data_name
  config.train.steps = epochs * steps_per_epoch
  config.train.batch_size = batch_size
  config.eval.batch_size = 500
  config.optimizer.name = "sgd"
  config.optimizer.lr = lr
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = weight_decay
  config.optimizer.schedule = "cosine"
  return config, steps_per_epoch


def cifar10(model: dict, *, epochs: int, batch_size: int = 128, lr: float = 0.1,
            weight_decay: float = 1e-4) -> ml_collections.ConfigDict:
  """CIFAR-10 BNN recipe of AdaBin/IR-Net: SGD + cosine, pad-4 crop + flip, eval every 10 epochs."""
  config, steps_per_epoch = _sgd_classification(
      model, "cifar10", train_examples=CIFAR10_TRAIN_EXAMPLES, epochs=epochs,
      batch_size=batch_size, lr=lr, weight_decay=weight_decay)
  config.task.augment = "flip_crop"
  config.data.cache_in_memory = True  # 150 MB of uint8
  config.train.log_every = 100
  config.train.eval_every = 10 * steps_per_epoch
  config.checkpoint.every_steps = 5 * steps_per_epoch
  return config


def imagenet(model: dict, *, epochs: int, batch_size: int = 256, lr: float = 0.1,
             weight_decay: float = 1e-5) -> ml_collections.ConfigDict:
  """ImageNet recipe of AdaBin: SGD + cosine, random-resized 224 crops + flip, 8 workers."""
  config, steps_per_epoch = _sgd_classification(
      model, "imagenet", train_examples=IMAGENET_TRAIN_EXAMPLES, epochs=epochs,
      batch_size=batch_size, lr=lr, weight_decay=weight_decay)
  config.task.image_size = 224
  config.data.eval_split = "validation"
  config.data.num_workers = 8
  config.train.log_every = 200
  config.train.eval_every = 5 * steps_per_epoch
  config.checkpoint.every_steps = 2000
  return config


def lm_pretraining(model: dict, *, steps: int, batch_size: int, seq_len: int, lr: float,
                   tokenizer: str = "bpe", tokenizer_vocab: int = 4096,
                   data_name: str = "python_docs") -> ml_collections.ConfigDict:
  """LLaMA-style pretraining: AdamW (β = 0.9, 0.95, weight decay 0.1), 5% linear warmup,
  cosine to 10% of `lr`, gradient clipping at 1.0 (Touvron et al. 2023, §2.2)."""
  from effcomp.tasks import lm  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.model = {"name": "llama", **model}
  config.task = lm.task_defaults()
  config.task.tokenizer = tokenizer
  config.task.tokenizer_vocab = tokenizer_vocab
  config.task.seq_len = seq_len
  config.data.name = data_name
  config.data.eval_split = "validation"
  config.train.steps = steps
  config.train.batch_size = batch_size
  config.eval.batch_size = batch_size
  config.optimizer.name = "adamw"
  config.optimizer.lr = lr
  config.optimizer.b1, config.optimizer.b2 = 0.9, 0.95
  config.optimizer.weight_decay = 0.1
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = max(1, steps // 20)
  config.optimizer.end_lr_factor = 0.1
  config.optimizer.grad_clip_norm = 1.0
  return config
