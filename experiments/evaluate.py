"""Evaluate a checkpoint of a run.

  python experiments/evaluate.py --config=configs/demo.py --workdir=workdirs/demo [--step=N]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from effcomp import cli  # noqa: E402

if __name__ == "__main__":
  cli.evaluate_main()
