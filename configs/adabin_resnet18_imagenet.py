"""AdaBin ResNet-18/34 (1W/1A) on ImageNet (Tu et al. 2022, §4.2; official code
BinaryNetworks/AdaBin/imagenet): SGD momentum 0.9, lr 0.1, weight decay 1e-5, cosine,
batch 256, 120 epochs, random-resized 224 crops + flip; 256-resize / 224 center crop to
evaluate.

One-step (paper Table 4: ResNet-18 63.1 %, ResNet-34 66.4 % top-1):
  python experiments/train.py --config=configs/adabin_resnet18_imagenet.py \\
      --workdir=workdirs/adabin_r18 --config.data.manual_dir=/data/imagenet
  python experiments/train.py --config=configs/adabin_resnet18_imagenet.py:depth=34 ...

Two-step, ReActNet-style (Liu et al. 2020, §4.1; paper: ResNet-18 66.4 %): a
full-precision teacher, then step 1 binary activations / real weights and step 2 both
binary initialized from step 1, each distilled from the teacher (Adam lr 5e-4 → 0 linear,
weight decay 1e-5 in step 1 and 0 in step 2, as in ReActNet):
  python experiments/train.py --config=configs/adabin_resnet18_imagenet.py:method=none \\
      --workdir=workdirs/fp_r18 ...                                         # teacher
  python experiments/train.py --config=configs/adabin_resnet18_imagenet.py:stage=1 \\
      --workdir=workdirs/r18_step1 --config.teacher.workdir=workdirs/fp_r18 ...
  python experiments/train.py --config=configs/adabin_resnet18_imagenet.py:stage=2 \\
      --workdir=workdirs/r18_step2 --config.teacher.workdir=workdirs/fp_r18 \\
      --config.init.workdir=workdirs/r18_step1 ...

Official weights: `:official=true` is the official code's forward and input normalization
(`recipes.adabin_official`), for checkpoints of its code converted by
`experiments/convert.py --source=adabin`.

Data: `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` in `manual_dir`.
Cost: 600k steps of batch 256 (120 epochs); ResNet-18 ≈ 1.8 GFLOPs/image: ≈ 2.5 days
on 8 V100s or ≈ 1 day on a TPU v4-32 (launch/tpu_pod.sh); the two-step recipe doubles it.
"""

from effcomp import config as config_lib
from effcomp import recipes


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method="adabin", depth=18, epochs=120, stage=0, official=False)
  recipes.check_method(a.method)
  if a.depth not in (18, 34):
    raise ValueError(f"config argument depth={a.depth}: expected 18 or 34")
  if a.stage not in (0, 1, 2):
    raise ValueError(f"config argument stage={a.stage}: expected 0 (one-step), 1 or 2")
  model = {"name": f"bnn_resnet{a.depth}", "num_classes": 1000, "method": a.method,
           "weight_method": "none" if a.stage == 1 else ""}
  config = recipes.imagenet(model, epochs=a.epochs)
  if a.stage:
    config.teacher.model = {"name": f"bnn_resnet{a.depth}", "num_classes": 1000, "method": "none"}
    config.task.distill_weight = 1.0  # ReActNet trains on the teacher's distribution only
    config.task.distill_temperature = 1.0
    config.optimizer.name = "adamw"
    config.optimizer.lr = 5e-4
    config.optimizer.schedule = "linear"
    config.optimizer.weight_decay = 1e-5 if a.stage == 1 else 0.0
  if a.official:
    config = recipes.adabin_official(config)
  return config_lib.lock(config)
