"""AdaBin VGG-small (1W/1A) on CIFAR-10, the paper's recipe (Tu et al. 2022, §4.1): SGD
momentum 0.9, lr 0.1, weight decay 1e-4, cosine, batch 128, 400 epochs, crop + flip.

  python experiments/train.py --config=configs/adabin_vggsmall_cifar10.py[:method=bireal] \\
      --workdir=workdirs/adabin_vggsmall --config.data.manual_dir=/data/cifar10

Expected (paper, Table 3): AdaBin 92.3 % top-1; FP VGG-small 94.1 %.
Cost: 156,000 steps; VGG-small is ≈ 0.6 GFLOPs/image, ≈ 6 hours on a V100-class GPU.
"""

from effcomp import config as config_lib
from effcomp import recipes


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method="adabin", epochs=400)
  recipes.check_method(a.method)
  config = recipes.cifar10({"name": "bnn_vgg_small", "num_classes": 10, "method": a.method},
                           epochs=a.epochs)
  return config_lib.lock(config)
