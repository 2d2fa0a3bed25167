"""A small KL autoencoder for CPU-scale latent diffusion (`models.vae.SMALL_VAE`).

Trained on the embedded photos (random 64×64 patches at native scale, flips) or on the
digits (upsampled to 16×16, one channel), with LDM's L1 + 1e-6·KL loss:

  python experiments/train.py --config=configs/autoencoder_small.py:data=photos \\
      --workdir=workdirs/ae_photos
  python experiments/train.py --config=configs/autoencoder_small.py:data=digits \\
      --workdir=workdirs/ae_digits
  python experiments/train.py \\
      --config=configs/diffusion_digits.py:model=U-DiT-T,autoencoder=workdirs/ae_digits \\
      --workdir=workdirs/udit_digits_latent          # latent diffusion on its 8×8×4 latents

Arguments: data (photos | digits), steps, seed. The posterior mean is the latent; a latent
diffusion run scales it by `config.task.latent_scale` (set it to 1/std of the latents,
`models.vae.latent_scaling_factor`, as LDM does). Cost: a few minutes on 2 CPU cores.
"""

from effcomp import config as config_lib
from effcomp.models.vae import autoencoder_kl
from effcomp.tasks import autoencoder

DATA = {"photos": dict(crop_size=64, image_size=0, channels=3),
        "digits": dict(crop_size=0, image_size=16, channels=1)}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, data="photos", steps=2000, seed=0)
  if a.data not in DATA:
    raise ValueError(f"config argument data={a.data!r}: expected one of {sorted(DATA)}")
  d = DATA[a.data]
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {"name": "autoencoder_kl", **autoencoder_kl.SMALL_VAE,
                  "in_channels": d["channels"], "out_channels": d["channels"]}
  config.task = autoencoder.task_defaults()
  config.task.crop_size, config.task.image_size = d["crop_size"], d["image_size"]
  config.data.name = a.data
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = 16
  config.eval.batch_size = 16
  config.train.log_every = 50
  config.train.eval_every = 500
  config.checkpoint.every_steps = 500
  config.optimizer.name = "adam"
  config.optimizer.lr = 1e-3
  config.optimizer.schedule = "cosine"
  return config_lib.lock(config)
