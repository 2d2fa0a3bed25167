"""Compress a trained LM (or all-MiniLM-L6-v2) by a recipe: prune, factorize, quantize.

  python experiments/compress.py --config=configs/compress.py:recipe=wanda:2:4+gptq:w4a16g128 \\
      --workdir=workdirs/lm_tiny_wanda24_gptq --config.source.workdir=workdirs/lm_tiny

Writes `<workdir>/compress.json` (size, validation perplexity or embedding cosine, the
compression's wall time, CPU latency ratio, one report per step) and
`<workdir>/compressed.npz` (`effcomp.prune.storage`), and prints one summary line.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp.runs import compress  # noqa: E402


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)

  def body():
    r = compress.compress_run(cli.FLAGS.config, cli.FLAGS.workdir)
    metric = (f"validation perplexity {r['perplexity']:.3f} (dense {r['dense perplexity']:.3f})"
              if "perplexity" in r else f"embedding cosine {r['cosine']:.4f}")
    print(f"{r['recipe']}: {metric}; {r['MB']:.2f} MiB ({r['size ratio']:.3f} of float32); "
          f"{r['compress s']:.1f} s; latency × {r['latency ratio']:.2f}; "
          f"{cli.FLAGS.workdir}/compress.json")
  cli.run(body)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
