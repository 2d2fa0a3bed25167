"""Before/after figure of the SR benchmark's runs → docs/results/sr_before_after.png.

Reads the runs `benchmarks/sr.py` trained (`--runs_dir`), takes a centre crop of each test
photo, makes its MATLAB-bicubic LR at `--scale`, and lays out per photo: the LR enlarged
by bicubic interpolation | each model's output (`--models`) | the HR, with each panel's
PSNR (Y) printed above it.

  python benchmarks/sr.py && python benchmarks/sr_figure.py [--scale=4]
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from effcomp import runs  # noqa: E402
from effcomp.data import imresize, sources  # noqa: E402
from effcomp.metrics import image as image_metrics  # noqa: E402
from effcomp.tasks import sr  # noqa: E402

flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_sr"),
                    "Where benchmarks/sr.py trained its runs.")
flags.DEFINE_integer("scale", 4, "Which scale's runs to show.")
flags.DEFINE_list("models", ["edsr", "iptv2", "lipt"], "Runs to show (<model>_x<scale>).")
flags.DEFINE_integer("crop", 144, "HR crop side (a multiple of the scale).")
FLAGS = flags.FLAGS

OUTPUT = os.path.join("docs", "results", "sr_before_after.png")


def label(image, text):
  """The uint8 image with a 14-pixel white caption strip above it."""
  strip = Image.new("RGB", (image.shape[1], 14), "white")
  ImageDraw.Draw(strip).text((2, 1), text, fill="black")
  return np.concatenate([np.asarray(strip), image])


def main(argv):
  del argv
  s, size = FLAGS.scale, FLAGS.crop
  opened = {name: runs.open(os.path.join(FLAGS.runs_dir, f"{name}_x{s}"))
            for name in FLAGS.models}
  source = sources.get_source("photos", "test")
  rows = []
  for i in range(len(source)):
    image = sr.modcrop(np.asarray(source[i]["image"]), s)
    top, left = (image.shape[0] - size) // 2 // s * s, (image.shape[1] - size) // 2 // s * s
    hr = image[top:top + size, left:left + size]
    lr = imresize.bicubic_degrade(hr, s)
    panels = [("bicubic", sr.bicubic_upscale(lr, s))]
    panels += [(name, sr.upscale(run.model, run.variables, lr)) for name, run in
               opened.items()]
    row = [label(out, f"{name} {image_metrics.psnr(out, hr, s):.2f} dB") for name, out in panels]
    rows.append(np.concatenate(row + [label(hr, "HR")], axis=1))
  Image.fromarray(np.concatenate(rows)).save(os.path.join(ROOT, OUTPUT))
  print(f"wrote {OUTPUT}")


if __name__ == "__main__":
  app.run(main)
