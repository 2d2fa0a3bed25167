"""Make a diffusers autoencoder folder an effcomp run, the latent space of diffusion runs.

  python experiments/import_vae.py --diffusers=/data/sd-vae-ft-ema --workdir=workdirs/sd_vae
  python experiments/train.py --config=configs/dit_imagenet256.py:model=U-DiT-B \\
      --config.teacher.workdir=workdirs/sd_vae ...

Reads `config.json` and `diffusion_pytorch_model[.<variant>].safetensors` from
`--diffusers` (what diffusers' `save_pretrained` writes, e.g. stabilityai/sd-vae-ft-ema
downloaded beforehand: nothing is fetched here) and writes `--workdir` as a finished
`autoencoder` run: its `config.json` (the model as an `autoencoder_kl` config) and a step-0
checkpoint of the params (`effcomp.runs.convert.import_diffusers_vae`). Any diffusion
config then uses it with `config.teacher.workdir`. An existing checkpoint in `--workdir`
is an error, never overwritten.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp.runs import convert  # noqa: E402

flags.DEFINE_string("diffusers", None, "Folder of a diffusers AutoencoderKL (config.json + "
                    "safetensors weights).", required=True)
flags.DEFINE_string("workdir", None, "The effcomp run to create.", required=True)
flags.DEFINE_string("variant", None, "Weights variant, e.g. fp16 for "
                    "diffusion_pytorch_model.fp16.safetensors.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  model = convert.import_diffusers_vae(FLAGS.diffusers, FLAGS.workdir, variant=FLAGS.variant)
  print(f"{FLAGS.workdir}: autoencoder_kl with latents of {model.latent_channels} channels, "
        f"downsampling ×{model.downsampling_factor}, scaling factor {model.scaling_factor}")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
