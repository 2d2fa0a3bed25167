"""Upscale an image file with a trained super-resolution run (regression or diffusion).

  python experiments/upscale.py --workdir=workdirs/sr_swinir_x2 --input=photo.jpg \\
      --output=photo_x2.png [--tile=128 --overlap=8] [--compare=before_after.png]

Reads a PNG or JPEG (any mode; converted to RGB), upscales it by the run's scale with the
newest checkpoint of `--workdir` (its recorded config; `--config` to override) and writes
a PNG. `--tile` > 0 processes LR tiles of that side overlapping by `--overlap` pixels
(memory stays bounded for large photos; with an overlap at least the model's receptive
radius the result equals one pass). `--compare` also writes a side-by-side PNG: the input
enlarged by MATLAB bicubic, and the model's output. A `diffusion_sr` run (DiT-SR, ResShift)
samples its few-step chain per tile from noise seeded by `--sample_seed`; tiles are
reflect-padded to the denoiser's size multiple.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from PIL import Image  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp import runs  # noqa: E402
from effcomp.runs import upscale  # noqa: E402
from effcomp.tasks import sr  # noqa: E402

flags.DEFINE_string("input", None, "The image to upscale (PNG or JPEG).")
flags.DEFINE_string("output", None, "Where to write the upscaled PNG.")
flags.DEFINE_integer("tile", 0, "LR tile side (0: the whole image at once).")
flags.DEFINE_integer("overlap", 8, "Overlap of neighbouring tiles, in LR pixels.")
flags.DEFINE_string("compare", None, "Optional side-by-side PNG: bicubic | model.")
flags.DEFINE_integer("sample_seed", 0, "Diffusion runs: the sampler's noise seed.")
FLAGS = flags.FLAGS


def upscale_file(config, workdir: str, input_path: str, output_path: str, *, tile: int = 0,
                 overlap: int = 8, compare_path: str = None, sample_seed: int = 0) -> tuple:
  """Writes the upscaled PNG (and the comparison) of the 'sr' or 'diffusion_sr' run in
  `workdir` (`config` None: the one it recorded); returns (input shape, output shape)."""
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"--input={input_path!r}: no such file")
  lr = np.asarray(Image.open(input_path).convert("RGB"))
  upscale_fn, scale = upscale.upscaler(runs.open(workdir, config), tile=tile, overlap=overlap,
                                       seed=sample_seed)
  out = upscale_fn(lr)
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  Image.fromarray(out).save(output_path, format="PNG")
  if compare_path:
    side = np.concatenate([sr.bicubic_upscale(lr, scale), out], axis=1)
    Image.fromarray(side).save(compare_path, format="PNG")
  return lr.shape, out.shape


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)
  if not FLAGS.input or not FLAGS.output:
    cli.fail("error", ValueError("--input and --output are required"), 2)
  if not FLAGS.workdir:
    cli.fail("error", ValueError("--workdir is required"), 2)

  def body():
    before, after = upscale_file(FLAGS.config, FLAGS.workdir, FLAGS.input, FLAGS.output,
                                 tile=FLAGS.tile, overlap=FLAGS.overlap,
                                 compare_path=FLAGS.compare, sample_seed=FLAGS.sample_seed)
    print(f"{FLAGS.input} {before[1]}×{before[0]} → {FLAGS.output} {after[1]}×{after[0]}")

  cli.run(body, config_required=False)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
