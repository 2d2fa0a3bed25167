"""Write mini-GenImage: effcomp's own generators beside the real images they learned from,
in GenImage's folder layout (`effcomp/runs/genimage.py`, read by `genimage_mini_<kind>`).

  python experiments/make_genimage.py --workdir=data/mini_genimage \\
      --generator=ar=workdirs/bench_ar/ar --generator=flow=workdirs/bench_ar/dit_flow \\
      [--num_train=1000 --num_val=300 --guidance_scale=1 --sampler=euler --steps=25 --seed=0]

`--workdir` is the mini-GenImage root (one `effcomp_<kind>/` folder per `--generator`, with
its `provenance.json`; an existing folder is never overwritten); each `--generator`
is `<kind>=<run workdir>` with kind one of `effcomp.data.genimage.MINI_KINDS` and a
finished class-conditional image run (`diffusion` or `ar_image`: the generated images are
drawn for the classes of the real images beside them) or super-resolution run
(`diffusion_sr`, `onestep_sr`, `sr`: its upscaled LR patches beside the HR patches).

  python experiments/make_genimage.py --workdir=data/mini_genimage \
      --generator=diffusion_sr=workdirs/ditsr --generator=onestep_sr=workdirs/onestep_tadsr
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp import runs  # noqa: E402
from effcomp.runs import genimage, upscale  # noqa: E402

flags.DEFINE_multi_string("generator", [], "<kind>=<run workdir> (repeat the flag).")
flags.DEFINE_integer("num_train", 1000, "Generated (and as many real) training images.")
flags.DEFINE_integer("num_val", 300, "Generated (and as many real) validation images.")
flags.DEFINE_float("guidance_scale", 1.0, "Classifier-free guidance (1 = none).")
flags.DEFINE_string("sampler", None, "Diffusion runs: ddpm | ddim | euler | heun "
                    "(default: the run's).")
flags.DEFINE_string("steps", "250", "Diffusion runs: sampling steps (e.g. 25 or ddim25).")
flags.DEFINE_float("temperature", 1.0, "AR runs: softmax temperature.")
flags.DEFINE_integer("seed", 0, "Sampling and selection seed.")
FLAGS = flags.FLAGS


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)

  def body():
    for kind, workdir in cli.named_pairs("generator", FLAGS.generator, "<kind>=<run workdir>"):
      run = runs.open(workdir)
      if run.task in upscale.TASKS:
        print(json.dumps(genimage.write_sr_generator(
            run, kind, FLAGS.workdir, num_train=FLAGS.num_train, num_val=FLAGS.num_val,
            seed=FLAGS.seed)))
        continue
      options = {"temperature": FLAGS.temperature} if run.task == "ar_image" else {}
      provenance = genimage.write_generator(
          run, kind, FLAGS.workdir, num_train=FLAGS.num_train, num_val=FLAGS.num_val,
          guidance_scale=FLAGS.guidance_scale, sampler=FLAGS.sampler, steps=FLAGS.steps,
          seed=FLAGS.seed, **options)
      print(json.dumps(provenance))

  cli.run(body, config_required=False)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
