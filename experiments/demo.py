"""The effcomp demo: a full-precision and an AdaBin 1-bit VGG-small on the embedded digits,
the binary one exported to bit-packed XOR+popcount inference.

  python experiments/demo.py --workdir=workdirs/demo      # what `make demo` runs

Prints test accuracy of both networks, the packed model's accuracy and agreement with the
float graph, model sizes, and packed-vs-float forward time. About 2 minutes on 2 CPU cores.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp import compilation_cache  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.runs import export  # noqa: E402

flags.DEFINE_string("workdir", "workdirs/demo", "Where both runs and the packed model go.")
flags.DEFINE_integer("steps", 400, "Training steps of each network.")
FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  start = time.time()
  results = {}
  for method in ("none", "adabin"):
    config = config_lib.load(
        f"configs/bnn_digits.py:model=vgg_small,method={method},steps={FLAGS.steps}")
    print(f"== training VGG-small, {'full precision' if method == 'none' else 'AdaBin 1-bit'}")
    results[method] = runs.train(config, os.path.join(FLAGS.workdir, method))
  adabin_dir = os.path.join(FLAGS.workdir, "adabin")
  print("== exporting the AdaBin network to packed bits")
  packed = export.export_and_check(config, adabin_dir, os.path.join(adabin_dir, "packed"))

  fp, ab = results["none"], results["adabin"]
  print("\n".join([
      "",
      "effcomp demo summary (digits test set, 360 images)",
      f"  full-precision VGG-small   accuracy {fp['eval']['accuracy']:.4f}",
      f"  AdaBin 1-bit VGG-small     accuracy {ab['eval']['accuracy']:.4f}",
      export.format_summary(packed).strip().replace("effcomp export summary", "  packed export:"),
      f"  total time                 {time.time() - start:.0f} s",
      f"  workdirs                   {os.path.abspath(FLAGS.workdir)}/{{none,adabin}} "
      "(checkpoints, tensorboard, curves.png)",
  ]))


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  compilation_cache.enable()
  app.run(main)
