"""Diffusion SR on the embedded photos (CPU scale): DiT-SR, its adaLN ablation and ResShift's
U-Net, trained on the residual-shifting process with Real-ESRGAN-degraded LR at ×4.

`effcomp/tasks/diffusion_sr.py` (pixel space, 15 steps, κ = 2, x_0 prediction: DiT-SR's
process) on 64² HR patches of the seven training photos; eval: the full 15-step chain on
128² centre crops of the three test photos, degraded with fixed seeds. AdamW with warm-up
and cosine decay (ResShift/DiT-SR: lr 5e-5 → 2e-5 at batch 64 over 300K steps; a higher lr
here for a CPU budget), EMA of the weights.

  python experiments/train.py --config=configs/ditsr_photos.py:model=dit_sr \\
      --workdir=workdirs/ditsr
  python experiments/upscale.py --workdir=workdirs/ditsr --input=photo.png \\
      --output=photo_x4.png --tile=32

Arguments: model (dit_sr | dit_sr_adaln | resshift_unet), size (cpu | paper), steps,
batch, patch (HR side, multiple of 32 at CPU size), lr, seed, degradation
(realesrgan | bicubic).
"""

from effcomp import config as config_lib
from effcomp.tasks import diffusion_sr

# CPU sizes: three levels (64, 32, 16 px for 64² patches), windows of 8, width-64 stages.
_DITSR_CPU = {"name": "dit_sr", "model_channels": 32, "channel_mult": (1, 2, 2),
              "swin_embed_dim": 64, "swin_depth": 2, "num_head_channels": 32,
              "window_size": 8, "mlp_ratio": 2.0, "dropout": 0.0, "norm_groups": 8}
SIZES = {
    "cpu": {
        "dit_sr": _DITSR_CPU,
        "dit_sr_adaln": {**_DITSR_CPU, "conditioning": "adaln"},
        "resshift_unet": {"name": "resshift_unet", "model_channels": 32,
                          "channel_mult": (1, 2, 2), "num_res_blocks": 1,
                          "swin_embed_dim": 64, "swin_depth": 1, "num_head_channels": 32,
                          "window_size": 8, "mlp_ratio": 2.0, "norm_groups": 8},
    },
    "paper": {  # configs/realsr_DiT.yaml and ResShift's realsr_swinunet_realesrgan256_journal
        "dit_sr": {"name": "dit_sr"},
        "dit_sr_adaln": {"name": "dit_sr", "conditioning": "adaln"},
        "resshift_unet": {"name": "resshift_unet"},
    },
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="dit_sr", size="cpu", steps=1000, batch=8, patch=64,
                           lr=5e-4, seed=0, degradation="realesrgan")
  if a.size not in SIZES or a.model not in SIZES[a.size]:
    raise ValueError(f"config arguments model={a.model!r}, size={a.size!r}: expected a "
                     f"size in {sorted(SIZES)} and a model in {sorted(SIZES['cpu'])}")
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {**SIZES[a.size][a.model], "scale": 4}
  config.task = diffusion_sr.task_defaults()
  config.task.patch_size = a.patch
  config.task.degradation = a.degradation
  config.data.name = "photos"
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = a.batch
  config.train.log_every = 50
  config.train.eval_every = max(a.steps // 4, 1)
  config.train.ema_decay = 0.999  # ResShift / DiT-SR ema_rate
  config.train.ema_warmup = True  # short runs: min(0.999, (1 + t)/(10 + t))
  config.eval.batch_size = 3
  config.eval.use_ema = True
  config.checkpoint.every_steps = max(a.steps // 4, 1)
  config.optimizer.name = "adamw"
  config.optimizer.lr = a.lr
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = a.steps // 20
  return config_lib.lock(config)
