"""Evaluate a checkpoint of a run.

  python experiments/evaluate.py --config=configs/demo.py --workdir=workdirs/demo [--step=N]
  python experiments/evaluate.py --config=configs/sr_photos.py:model=swinir,scale=2 \\
      --workdir=workdirs/sr_swinir_x2 --test_sets=photos,set5,set14 [--tile=128]

Every task: the config's eval metrics at the newest (or `--step`) checkpoint, as JSON.
Super-resolution runs with `--test_sets`: PSNR and SSIM (Y channel, `scale` border
pixels cropped, BasicSR's conventions) of whole images of each named dataset's test split
(`effcomp.tasks.sr.evaluate_sets`), per set and per image, as JSON; diffusion SR runs
sample each image by their whole chain.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config, --workdir, --step)
from effcomp import runs  # noqa: E402
from effcomp.runs import upscale  # noqa: E402
from effcomp.tasks import sr  # noqa: E402

flags.DEFINE_list("test_sets", None, "SR runs: datasets to test on whole images, e.g. "
                  "photos,set5,set14,b100,urban100,manga109,div2k.")
flags.DEFINE_integer("tile", 0, "SR runs: upscale in LR tiles of this side (0: whole image).")
FLAGS = flags.FLAGS


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)

  def body():
    if FLAGS.test_sets:
      if FLAGS.config.task.name not in upscale.TASKS:
        raise ValueError(f"--test_sets: for super-resolution runs {upscale.TASKS}, not "
                         f"{FLAGS.config.task.name!r}")
      d = FLAGS.config.data
      upscale_fn, scale = upscale.upscaler(runs.open(FLAGS.workdir, FLAGS.config), tile=FLAGS.tile)
      out = sr.evaluate_sets(upscale_fn, scale, FLAGS.test_sets, data_dir=d.data_dir,
                             manual_dir=d.manual_dir)
    else:
      out = runs.evaluate(FLAGS.config, FLAGS.workdir, FLAGS.step)
    print(json.dumps(out, indent=2))
  cli.run(body)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
