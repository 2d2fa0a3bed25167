"""Export a trained binary network to bit-packed 1-bit inference and check it.

  python experiments/export.py --config=configs/bnn_digits.py:model=vgg_small,method=adabin \\
      --workdir=workdirs/bnn_digits [--output=workdirs/bnn_digits/packed]
  python experiments/export.py --config=configs/binaryllm_tiny.py --workdir=workdirs/lm_tiny_1bit

A language model (`config.task.name == 'lm'` with a `binarizer`) is packed by
`effcomp.quant.binary_pack` and its validation perplexity compared before and after
(`effcomp.runs.export.export_binary_lm_and_check`). For classification runs:

Restores the newest params and BatchNorm statistics of the run in `--workdir`, packs every
binary layer, saves the packed model to `--output` (default `<workdir>/packed`), evaluates
packed and float models on the config's eval split and prints one summary: both
accuracies, the fraction of examples whose packed argmax equals the float one, the largest
logit difference, sizes, and packed-vs-float forward time (`effcomp.runs.export`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp.runs import export  # noqa: E402

flags.DEFINE_string("output", None, "Directory for the packed model (default: <workdir>/packed).")
FLAGS = flags.FLAGS


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)
  output = FLAGS.output or os.path.join(FLAGS.workdir or "", "packed")
  if FLAGS.config.task.name == "lm":
    cli.run(lambda: print(export.format_lm_summary(
        export.export_binary_lm_and_check(FLAGS.workdir, output))))
  else:
    cli.run(lambda: print(export.format_summary(
        export.export_and_check(FLAGS.config, FLAGS.workdir, output))))


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
