"""Evaluate AI-generated-image detectors as GenImage does: accuracy, AUC and AP of each
detector on each test generator (the cross-generator matrix, as a heat-map PNG) and its
accuracy on the degraded images of its own generator.

  python experiments/evaluate_detection.py --workdir=results/genimage \\
      --detector=sd14=workdirs/genimage_r50_sd14 [--detector=adm=workdirs/genimage_r50_adm] \\
      --test=genimage_sd14,genimage_sd15,genimage_midjourney,genimage_adm,genimage_glide,\\
genimage_wukong,genimage_vqdm,genimage_biggan [--degradations]

Each `--detector` is `<train generator name>=<run workdir>` (a finished
`configs/genimage_detect.py` run); `--test` the GenImage datasets to test on (validation
splits; the run's `data_dir` / `manual_dir`). With `--degradations`, each detector is also
tested on its first test dataset under the paper's six degradations
(`effcomp.data.genimage.DEGRADATIONS`). Writes `--workdir`/detection.json (every number)
and `--workdir`/cross_generator_accuracy.png (rows: detectors, columns: test sets).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402
import numpy as np  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp import runs  # noqa: E402
from effcomp.runs import detection  # noqa: E402

flags.DEFINE_multi_string("detector", [], "<train generator>=<detector run workdir> (repeat).")
flags.DEFINE_list("test", [], "GenImage datasets to test on (genimage_<key>).")
flags.DEFINE_bool("degradations", False, "Also test on the degraded images of the first "
                  "test dataset.")
FLAGS = flags.FLAGS


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)

  def body():
    pairs = cli.named_pairs("detector", FLAGS.detector, "<train generator>=<run workdir>")
    if not FLAGS.test:
      raise ValueError("--test: expected one or more test sets (genimage_<key>)")
    os.makedirs(FLAGS.workdir, exist_ok=True)
    results = {name: detection.evaluate(runs.open(workdir), FLAGS.test,
                                        degradations=FLAGS.degradations)
               for name, workdir in pairs}
    matrix = np.array([[results[name][t]["accuracy"] for t in FLAGS.test] for name, _ in pairs])
    png = detection.heatmap(matrix, [name for name, _ in pairs], FLAGS.test,
                            os.path.join(FLAGS.workdir, "cross_generator_accuracy.png"))
    path = os.path.join(FLAGS.workdir, "detection.json")
    with open(path, "w") as f:
      json.dump({"detectors": dict(pairs), "results": results}, f, indent=2)
    for name, _ in pairs:
      print(name, " ".join(f"{t}={results[name][t]['accuracy']:.3f}" for t in FLAGS.test))
    print(path, png)

  cli.run(body, config_required=False)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
