"""ElasticDiT's Tiny DWT-Distilled VAE (T-DVAE) distilled from a small KL autoencoder.

The student (`effcomp.models.vae.tiny`, `SMALL_TINY_VAE`: Haar packet stem and head, conv
trunks at the latent's resolution) learns from a finished `configs/autoencoder_small.py`
run, frozen, with the DWT-domain terms of `effcomp.tasks.autoencoder` (distill=True):
latent matching to the teacher's posterior mean, sub-band L1 to the teacher's decoding of
its own latents and to the image, and the KL. Same data, crops and batch as the teacher's
config; Adam at 3e-3 with a cosine decay:

  python experiments/train.py --config=configs/autoencoder_small.py:data=digits \\
      --workdir=workdirs/ae_digits
  python experiments/train.py \\
      --config=configs/tiny_vae.py:data=digits,teacher=workdirs/ae_digits \\
      --workdir=workdirs/tiny_vae_digits
  python experiments/train.py \\
      --config=configs/diffusion_digits.py:model=U-DiT-T,autoencoder=workdirs/tiny_vae_digits \\
      --workdir=workdirs/udit_digits_tiny           # latent diffusion through the student

Arguments: data (photos | digits), teacher (the teacher's workdir; it must match data),
steps, seed. The paper: "SD3-level reconstruction with only 1/8× the computational cost"
(ElasticDiT, arXiv 2605.15684, abstract). Ours on the digits (16×16, the 2000-step
teacher at workdirs/ae_digits; `effcomp.runs.reconstruction.compare`, 360 test images):
  teacher (autoencoder_kl)  62.8 M multiply-adds (encode 20.4 M + decode 42.4 M), 657 K
                            params, PSNR 51.75 dB (8-bit; 52.48 dB in eval/psnr), SSIM 0.9999
  student (tiny_vae)         5.7 M (2.0 M + 3.7 M) = 1/11 of the teacher's, 89 K params,
                            PSNR 47.93 dB (48.18 dB), SSIM 0.9998; 17× faster on the CPU
                            (16 vs 286 ms per 256 images, encode + decode)
Its latents are the teacher's to 5·10⁻⁴ of their variance (latent_mse 0.009 vs 18.2): its
decoder on the teacher's latents reaches 46.5 dB, the teacher's decoder on its latents
46.2 dB. At 64×64 photos the student is 1/13 of the teacher (96 M vs 1.26 G).
lr 3e-3: at 2000 steps it gave 44.7 dB against 42.5 with the teacher's 1e-3; the
detail-band weights (1, 2, 2, 2) 42.5 against 42.0 with (1, 1, 1, 1) (one seed each).
Cost on 2 CPU cores, batch 16: digits 6000 steps in 3 minutes (≈ 32 steps/s, the
teacher's forward included; the teacher's own 2000 steps: 3 minutes); photos not timed.
"""

from effcomp import config as config_lib
from effcomp.models.vae import tiny
from effcomp.tasks import autoencoder

DATA = {"photos": dict(crop_size=64, image_size=0, channels=3),
        "digits": dict(crop_size=0, image_size=16, channels=1)}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, data="photos", teacher="", steps=6000, seed=0)
  if a.data not in DATA:
    raise ValueError(f"config argument data={a.data!r}: expected one of {sorted(DATA)}")
  d = DATA[a.data]
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {"name": "tiny_vae", **tiny.SMALL_TINY_VAE,
                  "in_channels": d["channels"], "out_channels": d["channels"]}
  config.task = autoencoder.task_defaults()
  config.task.crop_size, config.task.image_size = d["crop_size"], d["image_size"]
  config.task.distill = True
  config.teacher.workdir = a.teacher
  config.data.name = a.data
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = 16
  config.eval.batch_size = 16
  config.train.log_every = 50
  config.train.eval_every = 500
  config.checkpoint.every_steps = 500
  config.optimizer.name = "adam"
  config.optimizer.lr = 3e-3
  config.optimizer.schedule = "cosine"
  return config_lib.lock(config)
