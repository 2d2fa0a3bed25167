"""Runs: the top floor of effcomp, where a config becomes a trained run and a run's workdir
becomes a model to act on. `experiments/`, `benchmarks/`, the CLI and notebooks use it;
the floors below work on arrays, modules and `Task`s (docs/architecture.md).

  summary = runs.train(config, workdir)       # the trainer on the config's Task
  result = runs.evaluate(config, workdir)     # a checkpoint's eval metrics
  run = runs.open(workdir)                    # Run(workdir, config, model, variables)

and the acts on an opened run, one module each: `sample` (text, class grids), `upscale`
(SR runs), `export` (bit-packed binary networks), `quantize` (PTQ of LM runs), `convert`
(weights from other frameworks written as runs), `reconstruction` (autoencoder runs' PSNR,
SSIM and multiply-adds side by side), `genimage` (mini-GenImage folders of a generator's
samples beside real images).
"""

from effcomp.runs import encoders  # noqa: F401  (registers FEATURE_ENCODERS, DEGRADATION_SCORERS)
from effcomp.runs import rewards  # noqa: F401  (registers REWARDS["classifier"])
from effcomp.runs import tokenizers  # noqa: F401  (registers IMAGE_TOKENIZERS["run"])
from effcomp.runs.build import build_model, build_task  # noqa: F401
from effcomp.runs.run import Run, open_run as open  # noqa: F401  (runs.open)
from effcomp.runs.training import evaluate, setup, train  # noqa: F401
