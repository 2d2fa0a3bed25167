"""Write an official checkpoint as an effcomp run.

  python experiments/convert.py --source=adabin \\
      --checkpoint=Efficient-Computing/BinaryNetworks/AdaBin/cifar10/checkpoints/resnet20_1w1a/model.th \\
      --config=configs/adabin_resnet20_cifar10.py:official=true --workdir=workdirs/adabin_r20_official
  python experiments/evaluate.py --config=configs/adabin_resnet20_cifar10.py:official=true \\
      --workdir=workdirs/adabin_r20_official --config.data.manual_dir=/data/cifar10

`--source` names the checkpoint's format (`effcomp.runs.convert.SOURCES`, one converter per
official code base in `effcomp/convert/`); `--config` the effcomp model it becomes (with the
official code's compatibility fields, e.g. AdaBin's `:official=true`) and the task and data
it is evaluated on. The file is read with `torch.load(weights_only=True)` (or as
safetensors / npz); official code is never imported. Prints the converter's report: every
official tensor it did not use and every effcomp leaf it did not fill (an unfilled leaf or
a shape mismatch is an error). The run is what `evaluate.py`, `sample.py`, `upscale.py` and
`export.py` read; an existing run in `--workdir` is never overwritten.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp.runs import convert  # noqa: E402

flags.DEFINE_enum("source", None, sorted(convert.SOURCES), "The checkpoint's format.")
flags.DEFINE_string("checkpoint", None, "The official checkpoint file.")
FLAGS = flags.FLAGS


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)
  if not FLAGS.source or not FLAGS.checkpoint:
    cli.fail("error", ValueError(f"--source (one of {sorted(convert.SOURCES)}) and --checkpoint "
                                 "are required"), 2)

  def body():
    report = convert.import_checkpoint(FLAGS.source, FLAGS.checkpoint, FLAGS.config, FLAGS.workdir)
    print(report.lines())
    print(f"{FLAGS.checkpoint} → {FLAGS.workdir} ({FLAGS.config.model.name}, "
          f"{FLAGS.source} converter)")

  cli.run(body)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
