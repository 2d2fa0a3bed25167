"""DiT / U-DiT on class-conditional ImageNet 256×256 in Stable Diffusion's latent space.

The papers' recipe (DiT, Peebles & Xie 2023, §4 "Training"; U-DiT, Tian et al. 2024,
§4.1, which keeps it): ImageNet train images center-cropped to 256 (ADM's
`center_crop_arr`) and flipped at random, encoded by the SD autoencoder
(stabilityai/sd-vae-ft-ema, f = 8: 32×32×4 latents scaled by its 0.18215), ε prediction with
learned σ on the linear 1000-step schedule (L_simple + L_vlb), AdamW at a constant 1e-4
without weight decay, batch 256, EMA 0.9999, 400K steps; evaluation samples 250 DDPM steps
(FID-50K with `effcomp.metrics.fid` and the pytorch-fid Inception weights).

Nothing is downloaded at run time. Put the autoencoder's diffusers folder (config.json +
diffusion_pytorch_model.safetensors) and ImageNet (`effcomp/data/imagenet.py` says where)
on the machine, make the autoencoder an effcomp run once, then train:

  python experiments/import_vae.py --diffusers=/data/sd-vae-ft-ema --workdir=workdirs/sd_vae
  python experiments/train.py --config=configs/dit_imagenet256.py:model=U-DiT-B \\
      --config.teacher.workdir=workdirs/sd_vae --config.data.manual_dir=/data/imagenet \\
      --workdir=gs://bucket/udit_b_in256
  python experiments/sample.py --config=configs/dit_imagenet256.py:model=U-DiT-B \\
      --workdir=gs://bucket/udit_b_in256 --guidance_scale=1.5 --num_samples=4

Arguments: model (a name of `effcomp.models.dit.DIT_SIZES` or `UDIT_SIZES`: DiT-S/2 …
DiT-XL/2, U-DiT-S/B/L and their '-vanilla' forms), steps, batch, lr, autoencoder (the
imported workdir; also settable as --config.teacher.workdir).

Expected cost (an estimate, not measured here). Per image, one training step costs about
3 × the forward pass, a forward multiply-add being 2 FLOPs: DiT-XL/2 (118.6 GMACs)
→ 7.1e11 FLOPs, U-DiT-B (22.2 GMACs) → 1.3e11, plus the frozen VAE encoder's forward at
256×256 (136.4 GMACs by `effcomp.metrics.flops.jaxpr_macs` → 2.7e11 FLOPs, the same for
every model, so it dominates the small ones unless the latents are precomputed). 400K
steps × 256 images: DiT-XL/2 ≈ 7.3e19 + 2.8e19 (VAE) FLOPs, U-DiT-B ≈ 1.4e19 + 2.8e19.
DiT reports 5.7 steps/s for XL/2 on a TPU v3-256 (≈ 19.5 h for 400K); at 40 % of 8 H100s'
bf16 peak (≈ 3.2e15 FLOP/s) DiT-XL/2 takes ≈ 9 h and U-DiT-B ≈ 3.6 h (two thirds of it
the VAE). U-DiT's depthwise convs and sub-map reshapes run at a lower utilisation than
DiT's large matmuls: expect its time to shrink less than its FLOPs.
"""

from effcomp import config as config_lib
from effcomp import recipes
from effcomp.models.dit import DIT_SIZES, UDIT_SIZES


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model="DiT-XL/2", steps=400_000, batch=256, lr=1e-4,
                           autoencoder="")
  if a.model in DIT_SIZES:
    model = {"name": "dit", **DIT_SIZES[a.model]}
  elif a.model in UDIT_SIZES:
    model = {"name": "udit", **UDIT_SIZES[a.model]}
  else:
    raise ValueError(f"config argument model={a.model!r}: expected one of "
                     f"{sorted(DIT_SIZES) + sorted(UDIT_SIZES)}")
  model.update(input_size=32, in_channels=4, num_classes=1000, learn_sigma=True)
  config = recipes.diffusion(model, data_name="imagenet", steps=a.steps, batch_size=a.batch,
                             lr=a.lr, ema_decay=0.9999)
  config.task.crop_size = 256
  config.task.flip = True
  config.teacher.workdir = a.autoencoder
  config.data.eval_split = "validation"
  config.data.num_workers = 8
  config.eval.batch_size = 256
  config.train.log_every = 100
  config.train.eval_every = 10_000
  config.checkpoint.every_steps = 10_000
  return config_lib.lock(config)
