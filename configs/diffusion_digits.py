"""Class-conditional diffusion on the embedded digits: DiT and U-DiT at CPU scale.

scikit-learn's 8×8 digits, upsampled to 16×16 (bilinear) in pixel space, 10 classes; DiT's
recipe (AdamW at a constant learning rate, EMA (with warm-up here), label dropout 0.1 for
classifier-free guidance; by default ε prediction with learned sigma on the linear
1000-step schedule) with small models. At this scale use objective=flow (or v): in
`docs/results/udit.md` (1000 steps) flow DiT-T/2 and U-DiT-T read as their class 96–98 %
of the time unguided, ε only 30 %:

  python experiments/train.py --config=configs/diffusion_digits.py:model=U-DiT-T,objective=flow \\
      --workdir=workdirs/udit_digits
  python experiments/sample.py --config=configs/diffusion_digits.py:model=U-DiT-T,objective=flow \\
      --workdir=workdirs/udit_digits --guidance_scale=2 --output=udit_digits.png

Arguments: model (a name of `SIZES`), objective ('eps' with learned sigma, DiT's; 'v',
'x0' with fixed variance; 'flow': rectified flow with logit-normal times, sampled with
Euler/Heun, `effcomp.tasks.diffusion`), sigma ('learned' / 'fixed'; default: learned for
'eps' as DiT, fixed otherwise), steps, batch, lr, seed, autoencoder (the workdir of
a `configs/autoencoder_small.py:data=digits` run, or of the tiny autoencoder distilled from
it by `configs/tiny_vae.py:data=digits`: latent diffusion on its 8×8×4 latents,
scaled by latent_scale, 0 = the autoencoder's scaling_factor; empty: pixel space), attention
(DiT / ElasticDiT: 'dense' or 'ssba:<block>', Shift Sparse Block Attention; empty: the
model's default). Sizes (multiply-adds per sample at 16×16×1,
`effcomp.metrics.flops.analytic_macs`): DiT-T/2 (hidden 128, 6 blocks, 4 heads, patch 2:
83 M, 1.87 M parameters) and U-DiT-T (hidden 32, blocks (1,1,2,1,1),
2 heads: 75 M, 1.91 M parameters, matched to DiT-T/2), U-DiT-T/small (hidden 24: a
fraction of DiT-T/2's cost). Cost on 2 CPU cores, batch 64: DiT-T/2 0.3 s a step, U-DiT-T
0.95 s, U-DiT-T/small 0.72 s. ElasticDiT-T (`effcomp.models.dit.elastic`): DiT-T/2 runnable
at 6, 4 or 2 blocks and patch 2 or 4, trained by the sandwich rule (three configurations a
step: the largest, the smallest and one drawn); `--config.task.elastic_depth=…` and
`--config.task.elastic_patch=…` pick the configuration evaluation and sampling run.
"""

from effcomp import config as config_lib
from effcomp import recipes

COMMON = {"input_size": 16, "in_channels": 1, "num_classes": 10}
OBJECTIVES = ("eps", "v", "x0", "flow")
# U-DiT's modifications, each overridable for ablations (--config.model.ffn=mlp, …).
UDIT_OPTIONS = {"down_factor": 2, "attn_type": "cosine", "rope": True, "ffn": "rep"}
SIZES = {
    "DiT-T/2": {"name": "dit", "hidden_size": 128, "depth": 6, "num_heads": 4, "patch_size": 2},
    "DiT-T/4": {"name": "dit", "hidden_size": 128, "depth": 6, "num_heads": 4, "patch_size": 4},
    "U-DiT-T": {"name": "udit", "hidden_size": 32, "depth": (1, 1, 2, 1, 1), "num_heads": 2,
                **UDIT_OPTIONS},
    "U-DiT-T/small": {"name": "udit", "hidden_size": 24, "depth": (1, 1, 2, 1, 1),
                      "num_heads": 2, **UDIT_OPTIONS},
    # ElasticDiT: DiT-T/2's weights at 6, 4 or 2 blocks and patch 2 or 4 (64 or 16 tokens).
    "ElasticDiT-T": {"name": "elastic_dit", "hidden_size": 128, "depth": 6, "num_heads": 4,
                     "patch_size": 2, "depths": (6, 4, 2), "patch_sizes": (2, 4)},
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="DiT-T/2", objective="eps", sigma="", steps=2000,
                           batch=64, lr=1e-3, seed=0, autoencoder="", latent_scale=0.0,
                           attention="")
  if a.model not in SIZES:
    raise ValueError(f"config argument model={a.model!r}: expected one of {sorted(SIZES)}")
  if a.objective not in OBJECTIVES:
    raise ValueError(f"config argument objective={a.objective!r}: expected one of {OBJECTIVES}")
  latent = {"input_size": 8, "in_channels": 4} if a.autoencoder else {}
  if a.sigma not in ("", "learned", "fixed") or (a.objective == "flow" and a.sigma == "learned"):
    raise ValueError(f"config argument sigma={a.sigma!r}: expected 'learned' or 'fixed' "
                     "(flow: 'fixed'), or empty for the objective's default")
  # DiT's hybrid loss (learned Σ) for ε by default; fixed variance for the others.
  learn_sigma = {"learn_sigma": a.sigma == "learned" or (not a.sigma and a.objective == "eps")}
  config = recipes.diffusion({**SIZES[a.model], **COMMON, **latent, **learn_sigma},
                             data_name="digits", steps=a.steps, batch_size=a.batch, lr=a.lr,
                             ema_decay=0.999, image_size=16)
  if a.attention:  # DiT / ElasticDiT: 'dense' or 'ssba:<block>'
    config.model.attention = a.attention
  config.task.objective = a.objective
  config.task.learn_sigma = learn_sigma["learn_sigma"]
  config.teacher.workdir = a.autoencoder
  config.task.latent_scale = a.latent_scale
  config.seed = a.seed
  # Thousands of steps, not DiT's 400K: without warm-up an EMA of 0.999 would still hold
  # much of the initialization (≈ 55 % after 600 steps) when it is sampled. For the same
  # reason the learning rate is 1e-3, not DiT's 1e-4: DiT-T/2 after 600 steps reached an
  # EMA eval loss of 0.038 with it, 0.064 with 3e-4 (and barely used its class label).
  config.train.ema_warmup = True
  config.eval.batch_size = 120
  config.train.log_every = 50
  config.train.eval_every = 500
  config.checkpoint.every_steps = 500
  config.data.cache_in_memory = True
  return config_lib.lock(config)
