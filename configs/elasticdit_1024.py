"""ElasticDiT at the paper's scale: a latent rectified-flow DiT at 1024² (SD3-style), one
set of weights at depths 28 / 20 / 14 × patch 2 / 4, Shift Sparse Block Attention.

The paper (ElasticDiT, Du, Xie, Lu et al. 2026) trains a text-to-image flow DiT in the
Flux / SD3 setting; effcomp's DiT is class-conditional, so this is the same network and
objective on class labels (ImageNet, or any labelled 1024² image set in the ImageNet
layout), a stand-in for the text conditioning. Latents: SD3's VAE (16 channels, f = 8:
128×128×16 at 1024², its shift and scaling factors), imported once as an effcomp run
(`experiments/import_vae.py`) or the T-DVAE distilled from it (`configs/tiny_vae.py`).
Objective: rectified flow with SD3's logit-normal times and resolution shift 3.0; AdamW
1e-4, batch 256, EMA 0.9999; the sandwich rule each step (the largest, the smallest and one
random configuration, in-place distillation from the largest).

  python experiments/import_vae.py --diffusers=/data/sd3-vae --workdir=workdirs/sd3_vae
  python experiments/train.py --config=configs/elasticdit_1024.py \\
      --config.teacher.workdir=workdirs/sd3_vae --config.data.manual_dir=/data/imagenet \\
      --workdir=gs://bucket/elasticdit_1024
  python experiments/sample.py --config=configs/elasticdit_1024.py \\
      --workdir=gs://bucket/elasticdit_1024 --config.task.elastic_depth=14 \\
      --config.task.elastic_patch=4 --guidance_scale=4

Arguments: steps, batch, lr, autoencoder, block (SSBA block side in tokens; 0: dense).

Expected cost (an estimate, not measured here). Forward multiply-adds per image
(`effcomp.metrics.flops.jaxpr_macs`, 676 M parameters): 1887 G at (28, patch 2) with SSBA
16 (2910 G dense), 1348 G / 944 G at depths 20 / 14, and 471 / 337 / 236 G at patch 4; SSBA
skips 94.5 % of the query-key pairs at patch 2 and 80.5 % at patch 4 (87.5 % averaged over
the six configurations; the paper: 84.16 %). A sandwich step runs the largest, the smallest
and one of the other four (≈ 667 G on average): ≈ 2.8 T multiply-adds forward, ≈ 1.7e13
FLOPs forward + backward per image. 200K steps × 256 images ≈ 8.6e20 FLOPs: at 40 % of
8 H100s' bf16 peak (≈ 3.2e15 FLOP/s) about 3 days, plus the frozen VAE encoder at 1024²
(≈ 2.2 T multiply-adds per image, another ≈ 19 h) unless the latents are precomputed.
"""

from effcomp import config as config_lib
from effcomp import recipes

MODEL = {"name": "elastic_dit", "input_size": 128, "in_channels": 16, "hidden_size": 1152,
         "depth": 28, "num_heads": 16, "patch_size": 2, "depths": (28, 20, 14),
         "patch_sizes": (2, 4), "num_classes": 1000, "learn_sigma": False}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, steps=200_000, batch=256, lr=1e-4, autoencoder="", block=16)
  if a.block < 0:
    raise ValueError(f"config argument block={a.block}: expected ≥ 0 (0: dense attention)")
  model = {**MODEL, "attention": f"ssba:{a.block}" if a.block else "dense"}
  config = recipes.diffusion(model, data_name="imagenet", steps=a.steps, batch_size=a.batch,
                             lr=a.lr, ema_decay=0.9999)
  config.task.objective = "flow"
  config.task.learn_sigma = False
  config.task.flow_shift = 3.0  # SD3 at 1024²
  config.task.crop_size = 1024
  config.task.flip = True
  config.teacher.workdir = a.autoencoder
  config.data.eval_split = "validation"
  config.data.num_workers = 8
  config.train.compute_dtype = "bfloat16"
  config.eval.batch_size = 64
  config.train.log_every = 100
  config.train.eval_every = 10_000
  config.checkpoint.every_steps = 10_000
  return config_lib.lock(config)
