"""Training recipes shared by several `configs/` files (big_vision's configs/common.py).

Each returns an unlocked `ConfigDict` that a config file finishes and locks.
"""

import ml_collections
from etils import epath

from effcomp import config as config_lib
from effcomp.quant import binary, progressive
from effcomp.tasks import classification, lm
from effcomp.tasks import diffusion as diffusion_task

# Language-model architectures several configs share (configs/lm_*.py, configs/binaryllm_*.py).
LM_TINY = {"vocab_size": 4096, "num_layers": 4, "embed_dim": 256, "num_heads": 4,
           "num_kv_heads": 2, "mlp_dim": 704, "tie_embeddings": False}
LM_1B = {"vocab_size": 32768, "num_layers": 22, "embed_dim": 2048, "num_heads": 32,
         "num_kv_heads": 4, "mlp_dim": 5632, "tie_embeddings": False, "remat": True}

# torchvision's ImageNet statistics, which the official AdaBin code normalizes by on CIFAR-10
# and ImageNet alike (cifar10/main.py, imagenet/main.py: transforms.Normalize).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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


def adabin_official(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` (an AdaBin recipe) with the official code's forward and inputs, for its
  released checkpoints (`experiments/convert.py --source=adabin`): activations
  α·(sign((x − β)/α) + β) (`adabin_act_form='official'`), EDE at its fixed t, k
  (`progressive=False`) and torchvision `Normalize` by ImageNet's statistics."""
  config.model.update(adabin_act_form="official", progressive=False)
  config.task.mean, config.task.std = IMAGENET_MEAN, IMAGENET_STD
  return config


def lm_pretraining(model: dict, *, steps: int, batch_size: int, seq_len: int, lr: float,
                   tokenizer: str = "bpe", tokenizer_vocab: int = 4096,
                   data_name: str = "python_docs") -> ml_collections.ConfigDict:
  """LLaMA-style pretraining: AdamW (β = 0.9, 0.95, weight decay 0.1), 5% linear warmup,
  cosine to 10% of `lr`, gradient clipping at 1.0 (Touvron et al. 2023, §2.2)."""
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


def binary_lm_qat(model: dict, *, teacher_workdir: str, method: str, dual_scaling: bool,
                  binary_init: bool, steps: int, batch_size: int, seq_len: int, lr: float,
                  num_phases: int = 20, tokenizer_vocab: int = 4096,
                  data_name: str = "python_docs") -> ml_collections.ConfigDict:
  """A 1-bit student of the FP LM in `teacher_workdir`, trained by distillation.

  The student is the teacher's architecture (recorded in its workdir; `model` when the
  teacher is not trained yet or not readable from here) with `binarizer=method`
  (`effcomp.quant.progressive`), starting from the teacher's weights (`init_from_teacher`;
  binary-aware initialization of the input-channel scales when `binary_init`), trained with OneBit's loss: T=1 logit KL + normalized
  hidden-state MSE from the frozen teacher (Xu et al. 2024, eq. 8–10: α = 1, no
  ground-truth CE), AdamW without weight decay (the latent weights' magnitude is their
  distance to a sign flip), 5% warmup, cosine to 10%, clipping at 1.0. The teacher's
  tokenizer is used.
  """
  if method not in progressive.METHODS[1:]:
    raise ValueError(f"config argument method={method!r}: expected one of {progressive.METHODS[1:]}")
  if not teacher_workdir:
    raise ValueError("config argument teacher: the workdir of the full-precision LM run")
  if (epath.Path(teacher_workdir) / "config.json").exists():  # the teacher's architecture
    recorded = config_lib.from_workdir(teacher_workdir).model
    model = {k: v for k, v in recorded.items() if k not in ("name", "binarizer",
                                                            "binarizer_phases", "dual_scaling")}
  config = lm_pretraining(model, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                          tokenizer=f"{teacher_workdir.rstrip('/')}/tokenizer.json",
                          tokenizer_vocab=tokenizer_vocab, data_name=data_name)
  config.model.update(binarizer=method, binarizer_phases=num_phases, dual_scaling=dual_scaling)
  config.teacher.workdir = teacher_workdir  # its recorded model is the teacher
  config.task.update(ce_weight=0.0, kd_weight=1.0, hidden_weight=1.0, init_from_teacher=True,
                     binary_init_steps=50 if binary_init else 0)
  config.optimizer.weight_decay = 0.0
  return config


def diffusion(model: dict, *, data_name: str, steps: int, batch_size: int, lr: float,
              ema_decay: float, image_size: int = 0) -> ml_collections.ConfigDict:
  """Class-conditional diffusion as DiT trains it: ε prediction with learned sigma on the
  linear 1000-step schedule, AdamW at a constant `lr` without weight decay, EMA of the
  weights (evaluated and sampled), label dropout 0.1 in the model (Peebles & Xie 2023,
  §4 "Training")."""
  config = config_lib.base_config()
  config.model = model
  config.task = diffusion_task.task_defaults()
  config.task.image_size = image_size
  config.data.name = data_name
  config.train.steps = steps
  config.train.batch_size = batch_size
  config.train.ema_decay = ema_decay
  config.eval.use_ema = True
  config.optimizer.name = "adamw"
  config.optimizer.lr = lr
  config.optimizer.schedule = "constant"
  config.optimizer.weight_decay = 0.0
  return config


def llamagen(config: ml_collections.ConfigDict, *, paper: bool, steps: int, batch_size: int,
             eval_batch_size: int, lr: float, weight_decay: float
             ) -> ml_collections.ConfigDict:
  """`config` with LlamaGen's optimizer (AdamW, β₂ 0.95; constant lr at paper size, cosine
  on the CPU) and the schedule of a paper-size run on ImageNet (`paper`: eval / checkpoint
  every 10K steps, 8 data workers, the validation split) or of a CPU run on embedded data
  (every 500 steps, data in memory): the VQ tokenizer's and the AR model's shared recipe."""
  config.data.cache_in_memory = not paper
  config.train.steps = steps
  config.train.batch_size = batch_size
  config.eval.batch_size = eval_batch_size
  config.train.log_every = 100 if paper else 50
  config.train.eval_every = config.checkpoint.every_steps = 10_000 if paper else 500
  config.optimizer.name = "adamw"
  config.optimizer.lr = lr
  config.optimizer.b2 = 0.95
  config.optimizer.weight_decay = weight_decay
  config.optimizer.schedule = "constant" if paper else "cosine"
  if paper:
    config.data.eval_split = "validation"
    config.data.num_workers = 8
  return config
