"""Super-resolution on the embedded photos (CPU scale): ×2 / ×3 / ×4, bicubic LR.

The ten photos scikit-image and scikit-learn ship (`effcomp/data/photos.py`; train: 7,
test: astronaut, coffee, flower), random HR patches with flips/rotations and MATLAB-bicubic
LR made on the fly (`effcomp/tasks/sr.py`), L1 loss, Adam with a cosine schedule (BasicSR's
lightweight recipes use Adam 2e-4–5e-4 with step or cosine decay). Models at CPU size with
comparable parameter counts (`SIZES`), or the papers' sizes with `size=paper`:

  python experiments/train.py --config=configs/sr_photos.py:model=swinir,scale=2 \\
      --workdir=workdirs/sr_swinir_x2
  python experiments/evaluate.py --config=configs/sr_photos.py:model=swinir,scale=2 \\
      --workdir=workdirs/sr_swinir_x2                    # PSNR / SSIM (Y) per test image
  python experiments/upscale.py --workdir=workdirs/sr_swinir_x2 --input=photo.png \\
      --output=photo_x2.png

Arguments: model (edsr | swinir | iptv2 | lipt), size (cpu | paper), scale, steps, batch,
patch (HR patch side), lr, seed, degradation (bicubic | realesrgan), teacher (the workdir
of a finished SR run: distillation with kd), kd (none | output | dukd).
"""

from effcomp import config as config_lib
from effcomp.tasks import sr

# CPU sizes, 0.14–0.16 M parameters each at ×2 in inference form (IPT-V2's FFN and LIPT's
# HRM re-parameterized); the papers' lightweight sizes with size=paper (EDSR-baseline
# 1.37 M, SwinIR-light 0.91 M, IPT-V2-light 0.88 M, LIPT-Small 2.33 M).
SIZES = {
    "cpu": {
        "edsr": {"name": "edsr", "n_resblocks": 6, "n_feats": 32},
        "swinir": {"name": "swinir", "embed_dim": 40, "depths": (2, 2, 2),
                   "num_heads": (4, 4, 4), "window_size": 8},
        "iptv2": {"name": "iptv2", "embed_dim": 40, "depths": (2, 2, 2),
                  "num_heads": (4, 4, 4), "window_size": 8, "grid_size": 8},
        "lipt": {"name": "lipt", "channels": 20, "depth": 6},
    },
    "paper": {  # EDSR-baseline, SwinIR-light, IPT-V2-light (ours: no SR size published),
        "edsr": {"name": "edsr"},  # LIPT-Small
        "swinir": {"name": "swinir"},
        "iptv2": {"name": "iptv2"},
        "lipt": {"name": "lipt"},
    },
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="edsr", size="cpu", scale=2, steps=1000, batch=16,
                           patch=64, lr=5e-4, seed=0, degradation="bicubic", teacher="",
                           kd="none")
  if a.size not in SIZES or a.model not in SIZES[a.size]:
    raise ValueError(f"config arguments model={a.model!r}, size={a.size!r}: expected a "
                     f"size in {sorted(SIZES)} and a model in {sorted(SIZES['cpu'])}")
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {**SIZES[a.size][a.model], "scale": a.scale}
  config.task = sr.task_defaults()
  config.task.scale = a.scale
  config.task.patch_size = a.patch
  config.task.degradation = a.degradation
  config.task.eval_patch = 240  # HR centre crops of the 3 test photos (multiple of 2, 3, 4)
  config.task.kd = a.kd
  config.teacher.workdir = a.teacher
  config.data.name = "photos"
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = a.batch
  config.train.log_every = 50
  config.train.eval_every = max(a.steps // 4, 1)
  config.eval.batch_size = 3
  config.checkpoint.every_steps = max(a.steps // 4, 1)
  config.optimizer.name = "adam"
  config.optimizer.lr = a.lr
  config.optimizer.b2 = 0.99  # BasicSR / SwinIR: Adam betas (0.9, 0.99)
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = a.steps // 50
  return config_lib.lock(config)
