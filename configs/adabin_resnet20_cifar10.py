"""AdaBin ResNet-20 (1W/1A) on CIFAR-10, the paper's recipe (Tu et al. 2022, §4.1; official
code BinaryNetworks/AdaBin/cifar10/main.py): SGD momentum 0.9, lr 0.1, weight decay 1e-4,
cosine to 0, batch 128, 400 epochs, pad-4 random crop + horizontal flip.

  python experiments/train.py --config=configs/adabin_resnet20_cifar10.py \\
      --workdir=workdirs/adabin_resnet20 --config.data.manual_dir=/data/cifar10
  # the baselines under the same recipe: method = none (FP) | bnn | xnor | bireal | reactnet
  python experiments/train.py --config=configs/adabin_resnet20_cifar10.py:method=xnor ...

Official weights: `:official=true` is the official code's forward and input normalization
(`recipes.adabin_official`); its released checkpoint becomes a run with
  python experiments/convert.py --source=adabin --checkpoint=.../resnet20_1w1a/model.th \
      --config=configs/adabin_resnet20_cifar10.py:official=true --workdir=workdirs/adabin_r20_official
and evaluates (88.02 % by its record) with experiments/evaluate.py and the same config.

Data: `cifar-10-python.tar.gz` in `manual_dir` (the error message says where).
Expected (paper, Table 3): AdaBin 88.1 % top-1; FP ResNet-20 92.1 %. The official code
normalizes inputs by mean/std; effcomp scales to [0, 1] (the stem's BatchNorm absorbs it).
Cost: 156,000 steps; ResNet-20 is ≈ 41 MFLOPs/image, ≈ 2 hours on one V100-class GPU;
on 2 CPU cores ≈ 1 s/step (weeks): use an accelerator. `:epochs=N` shortens it.
"""

from effcomp import config as config_lib
from effcomp import recipes


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method="adabin", epochs=400, official=False)
  recipes.check_method(a.method)
  config = recipes.cifar10({"name": "bnn_resnet20", "num_classes": 10, "method": a.method},
                           epochs=a.epochs)
  if a.official:
    config = recipes.adabin_official(config)
  return config_lib.lock(config)
