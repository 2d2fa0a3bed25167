"""absl entry points: `effcomp-train` / `experiments/train.py` and `effcomp-evaluate`.

  python experiments/train.py --config=configs/demo.py --workdir=/tmp/demo \\
      --config.optimizer.lr=1e-3 --config.train.steps=500

User errors (bad config values, unknown names, missing data) print one line and exit
with status 2; a non-finite loss exits with status 3 after keeping the last good
checkpoint.

Several processes: pass `--coordinator_address=host:port --num_processes=N
--process_id=i` (see launch/local_multiprocess.sh), or set `EFFCOMP_DISTRIBUTED=1` on a
TPU pod or under SLURM, where `jax.distributed.initialize()` finds its peers itself.
"""

import json
import os
import sys
from typing import List, Sequence, Tuple

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from effcomp import compilation_cache, hugepages, runs
from effcomp.train import checkpoint, trainer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_integer("step", None, "Evaluate: the checkpoint step (default: newest).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, TypeError)


def _initialize_distributed() -> None:
  if FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif os.environ.get("EFFCOMP_DISTRIBUTED") == "1":
    jax.distributed.initialize()  # TPU pod / SLURM: peers found from the environment.


def _one_line(error: BaseException) -> str:
  """The first non-empty line of `error`'s message, followed by its root cause's."""
  first = next((l.strip() for l in str(error).splitlines() if l.strip()), type(error).__name__)
  root = error
  while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
    root = root.__cause__ or root.__context__
  if root is not error:
    cause = next((l.strip() for l in str(root).splitlines() if l.strip()), type(root).__name__)
    if cause not in first:
      first = f"{first.rstrip(':')}: {cause}"
  return first


def named_pairs(flag: str, values: Sequence[str], meaning: str) -> List[Tuple[str, str]]:
  """[(name, value)] of repeated `--flag=<name>=<value>` arguments; a ValueError naming
  `flag` and `meaning` ('<kind>=<run workdir>') when there are none or one is malformed."""
  pairs = [tuple(v.split("=", 1)) for v in values]
  if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
    raise ValueError(f"--{flag}={list(values)}: expected one or more {meaning}")
  return pairs


def fail(kind: str, error: BaseException, code: int):
  print(f"effcomp: {kind}: {_one_line(error)}", file=sys.stderr)
  sys.exit(code)


def run(body, config_required: bool = True) -> None:
  """Checks --config/--workdir, starts jax.distributed if asked, turns on the persistent
  compilation cache (`effcomp.compilation_cache`) and runs `body()`, turning user errors
  into one line and an exit status (2, or 3 for a non-finite loss).
  `config_required=False`: programs that fall back to the config the run recorded."""
  if FLAGS.config is None and config_required:
    fail("error", ValueError("--config is required, e.g. --config=configs/demo.py"), 2)
  if not FLAGS.workdir:
    fail("error", ValueError("--workdir is required"), 2)
  _initialize_distributed()
  compilation_cache.enable()
  try:
    body()
  except trainer.NonFiniteLossError as e:
    fail("stopped", e, 3)
  except checkpoint.CorruptCheckpointError as e:
    fail("error", e, 2)
  except USER_ERRORS as e:
    if os.environ.get("EFFCOMP_TRACEBACK"):
      raise
    fail("error", e, 2)


def _print_train_summary(summary) -> None:
  if jax.process_index() != 0:
    return
  metric = summary["summary_metric"]
  value = summary["eval"].get(metric)
  lines = [
      "",
      "effcomp run summary",
      f"  steps            {summary['steps']}" + (" (preempted: checkpoint saved)" if summary["preempted"] else ""),
      f"  eval {metric:<12}{'' if value is None else f'{value:.4f}'}",
      f"  eval loss        {summary['eval'].get('loss', float('nan')):.4f}",
      f"  time             {summary['seconds']:.1f} s ({summary['steps_per_second']:.1f} steps/s)",
      f"  workdir          {summary['workdir']}",
      f"  checkpoints      {summary['checkpoints']}",
      f"  tensorboard      tensorboard --logdir {summary['tensorboard']}",
      f"  curves           {summary.get('curves', '')}",
  ]
  print("\n".join(lines))


def _train(argv) -> None:
  if len(argv) > 1:
    fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)
  run(lambda: _print_train_summary(runs.train(FLAGS.config, FLAGS.workdir)))


def _evaluate(argv) -> None:
  if len(argv) > 1:
    fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)
  run(lambda: print(json.dumps(runs.evaluate(FLAGS.config, FLAGS.workdir, FLAGS.step), indent=2)))


def parse_flags(argv):
  """absl's `flags_parser` for effcomp programs: absl flag parsing whose config-override errors are one line, not a traceback."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":", 1)[0]
      if not os.path.isfile(path):
        fail("error", FileNotFoundError(f"--config={path}: no such config file"), 2)
  try:
    return FLAGS(argv)
  except AttributeError as e:  # ml_collections: a --config.<key> the config does not have
    text = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ").replace("\n", " ")
    fail("error", ValueError(f"unknown config field {text}"), 2)
  except (flags.Error, *USER_ERRORS) as e:
    fail("error", e, 2)


def train_main() -> None:
  hugepages.reexec_with_hugepages()  # `effcomp-train` (a no-op after experiments/*.py)
  logging.set_verbosity(logging.WARNING)
  app.run(_train, flags_parser=parse_flags)


def evaluate_main() -> None:
  hugepages.reexec_with_hugepages()  # `effcomp-evaluate` (a no-op after experiments/*.py)
  logging.set_verbosity(logging.WARNING)
  app.run(_evaluate, flags_parser=parse_flags)
