"""LlamaGen's VQ image tokenizer (`vq_model`) trained by the `vq` task.

CPU size (`VQ_SMALL`, f = 4, 256 codes of width 8, ℓ2-normalized): on the digits resized to
16×16 (4×4 = 16 tokens per digit) or on 32×32 patches of the embedded photos:

  python experiments/train.py --config=configs/vq_tokenizer.py:data=digits \\
      --workdir=workdirs/vq_digits
  python experiments/evaluate.py --config=configs/vq_tokenizer.py:data=digits \\
      --workdir=workdirs/vq_digits              # psnr, codebook usage and perplexity

With `gan`, LlamaGen's PatchGAN term joins at half the steps (`task.gan_weight` 0.5,
`task.disc_start` = steps / 2, a 2-layer discriminator of width 32 at this size):

  python experiments/train.py --config=configs/vq_tokenizer.py:data=photos,gan \
      --workdir=workdirs/vq_photos_gan

Paper size (`size=paper`: LlamaGen's VQ-16, 16384 codes of width 8, f = 16, 256×256 →
16×16 tokens; `vq_train.py`'s recipe without its LPIPS term: AdamW 1e-4, β = (0.9, 0.95),
weight decay 0.05, batch 128, 40 epochs of ImageNet ≈ 400K steps; its PatchGAN, 3 layers of
width 64, weight 0.5 from step 20000, always on at this size):

  python experiments/train.py --config=configs/vq_tokenizer.py:data=imagenet,size=paper \\
      --config.data.manual_dir=/data/imagenet --workdir=gs://bucket/vq16

Its released weights load instead of training (`effcomp/convert/llamagen_vq.py`):

  python experiments/convert.py --source=llamagen_vq --checkpoint=/data/vq_ds16_c2i.pt \\
      --config=configs/vq_tokenizer.py:data=imagenet,size=paper --workdir=workdirs/vq16

Expected cost of the paper size (an estimate, not measured here): the VQ-16 forward at
256² is about 190 GMACs per image (encoder ≈ 60, decoder ≈ 130 by
`effcomp.metrics.flops.jaxpr_macs` scaling), a training step ≈ 3 × that = 1.1e12 FLOPs
per image (the PatchGAN's three calls add ≈ 3 × 3 GMACs per image); 400K steps × 128
images ≈ 5.8e19 FLOPs, ≈ 5 h on 8 H100s at 40 % of their bf16 peak (LlamaGen trained it on 8
A100s for about 2 days with LPIPS and the GAN).

Arguments: data (digits | photos | imagenet), size (cpu | paper), gan (the adversarial
term at CPU size), steps, seed.
"""

from effcomp import config as config_lib
from effcomp import recipes
from effcomp.models.vq import VQ_16, VQ_SMALL
from effcomp.tasks import vq

DATA = {"digits": dict(crop_size=0, image_size=16, channels=1),
        "photos": dict(crop_size=32, image_size=0, channels=3),
        "imagenet": dict(crop_size=256, image_size=0, channels=3)}
SIZES = {"cpu": VQ_SMALL, "paper": VQ_16}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, data="digits", size="cpu", gan=False, steps=0, seed=0)
  if a.data not in DATA or a.size not in SIZES:
    raise ValueError(f"config arguments data={a.data!r}, size={a.size!r}: expected data in "
                     f"{sorted(DATA)}, size in {sorted(SIZES)}")
  d, paper = DATA[a.data], a.size == "paper"
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {"name": "vq_model", **SIZES[a.size], "in_channels": d["channels"],
                  "out_channels": d["channels"]}
  config.task = vq.task_defaults()
  config.task.crop_size, config.task.image_size = d["crop_size"], d["image_size"]
  config.data.name = a.data
  steps = a.steps or (400_000 if paper else 1500)
  if paper:
    config.task.update(gan_weight=0.5, disc_start=20_000, disc_dim=64, disc_layers=3)
  else:
    config.task.update(gan_weight=0.5 if a.gan else 0.0, disc_start=steps // 2, disc_dim=32,
                       disc_layers=2)
  return config_lib.lock(recipes.llamagen(
      config, paper=paper, steps=steps,
      batch_size=128 if paper else 32, eval_batch_size=64 if paper else 128,
      lr=1e-4 if paper else 1e-3, weight_decay=0.05 if paper else 0.0))
