"""Post-training quantization of a trained language model (RTN, GPTQ, SmoothQuant, AWQ, CBQ).

  python experiments/quantize.py --config=configs/ptq.py:method=gptq,setting=w4a16g128 \\
      --workdir=workdirs/lm_tiny_gptq --config.source.workdir=workdirs/lm_tiny

Writes `<workdir>/ptq.json` (validation perplexity before/after, wall time, packed size)
and `<workdir>/quantized.npz` (integer codes packed into uint32 words, with their
scales and zero points), and prints one summary line.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp.runs import quantize  # noqa: E402


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)

  def body():
    r = quantize.quantize_run(cli.FLAGS.config, cli.FLAGS.workdir)
    print(f"{r['method']} {r['setting']}: validation perplexity {r['perplexity']:.3f} "
          f"(full precision {r['fp_perplexity']:.3f}); {r['seconds']:.1f} s; "
          f"{r.get('bytes', 0) / 2**20:.2f} MiB packed; {cli.FLAGS.workdir}/ptq.json")
  cli.run(body)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
