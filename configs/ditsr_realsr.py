"""DiT-SR's real-world ×4 recipe (configs/realsr_DiT.yaml of the paper's code), for when
the data is present, in pixel space.

Train on DIV2K's 800 training images (`manual_dir`; the paper also uses LSDIR, Flickr2K,
DIV8K, OST and 10K FFHQ faces — add them as builders to match it), 256² HR patches,
Real-ESRGAN's second-order degradation with the x4plus settings, the residual-shifting
process (15 steps, κ = 2, power 0.3, x_0 prediction), AdamW lr 5e-5 with 5000 warm-up
steps, batch 64, 300K steps, EMA 0.999; eval on centre crops of DIV2K 0801–0900 degraded
with fixed seeds:

  python experiments/train.py --config=configs/ditsr_realsr.py:model=dit_sr \\
      --workdir=workdirs/ditsr_realsr --config.data.manual_dir=/data/sr

Arguments: model (dit_sr | dit_sr_adaln | resshift_unet), the paper sizes.

Deviation: the paper trains on the 64² latents of a 4×-downsampling VQ autoencoder
(ResShift's `autoencoder_vq_f4.pth`); effcomp's task runs in pixel space (no VQ
autoencoder in effcomp yet), so every denoiser call costs about 16× the paper's.
Expected cost (`python configs/ditsr_realsr.py`: jaxpr multiply-adds of one denoiser call
at a 256² output, AdaFM's DFTs counted as the matrix products run here; training FLOP =
3 (forward + backward) × 2 × MACs × batch 64 × 300K steps). An estimate, not a measurement:

  | model | GMACs / call (256²) | training FLOP | at 20 TFLOP/s sustained |
  |---|---|---|---|
  | DiT-SR (60.8 M) | 778.5 | 9.0e19 | ≈ 52 chip-days |
  | DiT-SR, adaLN | 769.8 | 8.9e19 | ≈ 51 chip-days |
  | ResShift U-Net (118.6 M) | 810.4 | 9.3e19 | ≈ 54 chip-days |

In the paper's latent space (64² latents) each call costs about 1/16 of this (≈ 3.3
chip-days for DiT-SR), plus the VQ encoder; sampling one 256² output is 15 calls.
"""

import jax.numpy as jnp

from effcomp import config as config_lib
from effcomp import runs
from effcomp.metrics import flops
from effcomp.tasks import diffusion_sr

MODELS = {"dit_sr": {"name": "dit_sr"},
          "dit_sr_adaln": {"name": "dit_sr", "conditioning": "adaln"},
          "resshift_unet": {"name": "resshift_unet"}}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="dit_sr", seed=0)
  if a.model not in MODELS:
    raise ValueError(f"config argument model={a.model!r}: expected one of {sorted(MODELS)}")
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {**MODELS[a.model], "scale": 4}
  config.task = diffusion_sr.task_defaults()
  config.task.patch_size = 256
  config.task.eval_patch = 256
  config.data.name = "div2k"
  config.data.eval_split = "validation"
  config.data.num_workers = 8  # the degradation pipeline runs on the host
  config.train.steps = 300_000
  config.train.batch_size = 64
  config.train.log_every = 200
  config.train.eval_every = 10_000
  config.train.ema_decay = 0.999
  config.eval.batch_size = 8
  config.eval.use_ema = True
  config.checkpoint.every_steps = 10_000
  config.optimizer.name = "adamw"
  config.optimizer.lr = 5e-5
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "cosine"  # the reference: 5e-5 → lr_min 2e-5
  config.optimizer.end_lr_factor = 0.4
  config.optimizer.warmup_steps = 5000
  return config_lib.lock(config)


def cost(model: str) -> dict:
  """Multiply-adds of one denoiser call at 256² and the recipe's training FLOPs."""
  config = get_config(f"model={model}")
  x = jnp.zeros((1, 256, 256, 3))
  c = flops.recipe_cost(runs.build_model(config.model, "float32"),
                        [x, jnp.zeros((1,), jnp.int32), x], config.train.batch_size,
                        config.train.steps)
  return {"model": model, "GMACs / call (256²)": c["macs"] / 1e9,
          "training FLOP": c["training_flop"]}


if __name__ == "__main__":
  for name in MODELS:
    print(cost(name))
