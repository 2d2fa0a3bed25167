"""The papers' super-resolution recipes on DIV2K (BasicSR's), for when the data is present.

Train on DIV2K's 800 training images (a `manual_dir` builder: `effcomp/data/sr.py` prints
the expected layout when the files are missing), random HR patches with flips/rotations
and MATLAB-bicubic LR made on the fly (BasicSR pre-crops sub-images and pre-computes the
LR; the pairs are the same), L1, Adam β = (0.9, 0.99),
step decay ×0.5 at the milestones; eval during training on centre crops of DIV2K
0801–0900; the papers' test sets afterwards on whole images:

  python experiments/train.py --config=configs/sr_div2k.py:model=swinir,scale=2 \\
      --workdir=workdirs/swinir_light_x2 --config.data.manual_dir=/data/sr
  python experiments/evaluate.py --workdir=workdirs/swinir_light_x2 \\
      --test_sets=set5,set14,b100,urban100,manga109 --config.data.manual_dir=/data/sr

Recipes (BasicSR options/train/*, SwinIR's train_swinir_sr_lightweight.json):
  edsr    EDSR-baseline   gt 96·s/2 (LR 48²), batch 16, lr 1e-4, 300K, halve at 200K
  swinir  SwinIR-light    LR 64², batch 64, lr 2e-4, 500K, halve at 250/400/450/475K
  iptv2   IPT-V2 (light)  as SwinIR-light (no official code or recipe found)
  lipt    LIPT-Small      as SwinIR-light (its own schedule is not reproduced here)
×3 and ×4 train from scratch here (EDSR and SwinIR fine-tune them from the ×2 model).

Expected cost at ×2 (`python configs/sr_div2k.py`: the jaxpr multiply-add count of one LR
training patch, ×2 FLOPs per MAC, ×3 for forward + backward; not measured on hardware;
hours at a sustained 20 TFLOP/s, about an A100 in float32):
  EDSR-baseline   3.16 GMACs / 48² patch  → 9.1e16 FLOP  ≈ 1.3 h
  SwinIR-light    4.28 GMACs / 64² patch  → 8.2e17 FLOP  ≈ 11 h
  IPT-V2 (light)  4.27 GMACs / 64² patch  → 8.2e17 FLOP  ≈ 11 h
  LIPT-Small     24.1  GMACs / 64² patch  → 4.6e18 FLOP  ≈ 64 h
plus the host's bicubic LR per patch (8 data workers) and the evaluation.
"""

import jax.numpy as jnp

from effcomp import config as config_lib
from effcomp import runs
from effcomp.metrics import flops
from effcomp.tasks import sr

RECIPES = {  # name: (model fields, LR patch side, batch, lr, steps, milestones)
    "edsr": ({"name": "edsr", "n_resblocks": 16, "n_feats": 64}, 48, 16, 1e-4, 300_000,
             (200_000,)),
    "swinir": ({"name": "swinir"}, 64, 64, 2e-4, 500_000, (250_000, 400_000, 450_000, 475_000)),
    "iptv2": ({"name": "iptv2"}, 64, 64, 2e-4, 500_000, (250_000, 400_000, 450_000, 475_000)),
    "lipt": ({"name": "lipt"}, 64, 64, 2e-4, 500_000, (250_000, 400_000, 450_000, 475_000)),
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="swinir", scale=2, seed=0)
  if a.model not in RECIPES:
    raise ValueError(f"config argument model={a.model!r}: expected one of {sorted(RECIPES)}")
  model, lr_patch, batch, lr, steps, milestones = RECIPES[a.model]
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {**model, "scale": a.scale}
  config.task = sr.task_defaults()
  config.task.scale = a.scale
  config.task.patch_size = lr_patch * a.scale
  config.task.eval_patch = 480  # centre crops of DIV2K 0801–0900 (a multiple of 2, 3, 4)
  config.data.name = "div2k"
  config.data.eval_split = "validation"
  config.data.num_workers = 8  # MATLAB bicubic per patch on the host
  config.train.steps = steps
  config.train.batch_size = batch
  config.train.log_every = 100
  config.train.eval_every = 5000
  config.eval.batch_size = 8
  config.checkpoint.every_steps = 5000
  config.optimizer.name = "adam"
  config.optimizer.lr = lr
  config.optimizer.b2 = 0.99
  config.optimizer.schedule = "multistep"
  config.optimizer.milestones = milestones
  config.optimizer.gamma = 0.5
  return config_lib.lock(config)


def cost(model: str, scale: int = 2) -> dict:
  """Multiply-adds of one training patch (forward) and the recipe's training FLOPs."""
  config = get_config(f"model={model},scale={scale}")
  side = config.task.patch_size // scale
  c = flops.recipe_cost(runs.build_model(config.model, "float32"),
                        [jnp.zeros((1, side, side, 3))], config.train.batch_size,
                        config.train.steps)
  return {"model": model, "GMACs / patch": c["macs"] / 1e9, "training FLOP": c["training_flop"]}


if __name__ == "__main__":
  for name in RECIPES:
    print(cost(name))
