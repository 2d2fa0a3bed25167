"""Binary networks on the embedded digits data (8×8 upsampled to 16×16 on the device).

The small-scale stand-in for the CIFAR-10 experiments of AdaBin (Tu et al. 2022, Table 3):
the same architectures and binarizers under one shared recipe, cheap enough to rank all
methods with several seeds on 2 CPU cores (`benchmarks/bnn.py`).

  python experiments/train.py --config=configs/bnn_digits.py:model=resnet20,method=adabin \\
      --workdir=workdirs/bnn_digits

Arguments: model = resnet20 | vgg_small (width 0.25), method = none (full precision) |
bnn | xnor | bireal | reactnet | adabin, steps, seed; for ablations nonlinearity (maxout |
rprelu | identity | hardtanh | relu; default: the method's own) and progressive (False: the
EDE estimator keeps the AdaBin code's fixed t = 0.1, k = 10).
Cost (measured by `benchmarks/bnn.py`, 400 steps on 2 CPU cores): ResNet-20 ≈ 35–50 s,
VGG-small(0.25) ≈ 25–35 s per run, compilation included.
"""

from effcomp import config as config_lib
from effcomp import recipes
from effcomp.tasks import classification

MODELS = {"resnet20": {"name": "bnn_resnet20"}, "vgg_small": {"name": "bnn_vgg_small", "width": 0.25}}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="resnet20", method="adabin", steps=800, seed=0,
                           nonlinearity="", progressive=True)
  if a.model not in MODELS:
    raise ValueError(f"config argument model={a.model!r}: expected one of {sorted(MODELS)}")
  recipes.check_method(a.method)
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {**MODELS[a.model], "num_classes": 10, "method": a.method,
                  "nonlinearity": a.nonlinearity, "progressive": a.progressive}
  config.task = classification.task_defaults()
  config.task.resize = 16
  config.data.name = "digits"
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = 64
  config.train.log_every = 50
  config.train.eval_every = 0
  config.eval.batch_size = 120
  config.optimizer.name = "adam"
  config.optimizer.lr = 2e-3
  config.optimizer.warmup_steps = a.steps // 20
  config.checkpoint.every_steps = a.steps
  return config_lib.lock(config)
