"""Train any effcomp config.

  python experiments/train.py --config=configs/demo.py --workdir=workdirs/demo \\
      [--config.train.steps=1000 --config.optimizer.lr=3e-3 ...]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from effcomp import cli  # noqa: E402

if __name__ == "__main__":
  cli.train_main()
