"""Generate text from a trained language model, or images from a diffusion model or an
autoregressive image model.

  python experiments/sample.py --config=configs/lm_tiny.py --workdir=workdirs/lm_tiny \\
      --prompt="The for statement" --prompt="Return a new list" \\
      [--max_new_tokens=100 --temperature=0.8 --top_p=0.95 --num_samples=2 --seed=0]
  python experiments/sample.py --config=configs/diffusion_digits.py:model=U-DiT-T \\
      --workdir=workdirs/udit_digits [--num_samples=8 --guidance_scale=2 --sampler=ddpm \\
      --steps=250 --output=samples.png]
  python experiments/sample.py --config=configs/ar_image.py:tokenizer=workdirs/vq_digits \
      --workdir=workdirs/ar_digits [--num_samples=8 --guidance_scale=2 --temperature=1 \
      --top_k=0 --top_p=1 --vf_source=data --output=samples.png]

Language models: restores the newest checkpoint of the run in `--workdir` and its
`tokenizer.json`, and prints each prompt's continuations (KV-cached decoding;
`--temperature=0` is greedy). Diffusion models (`config.task.name == 'diffusion'`): writes
a PNG grid with one row per class and `--num_samples` samples per row, sampled from the
EMA weights (decoded by the run's autoencoder in latent mode). Autoregressive image models
(`ar_image`): the same grid, codes sampled with the KV cache, classifier-free guidance on
the logits, and decoded by the run's VQ tokenizer.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # first: it may re-execute this program (its docstring)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

from absl import app, flags, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)
from effcomp import runs  # noqa: E402
from effcomp.runs import sample  # noqa: E402

flags.DEFINE_multi_string("prompt", ["The "], "Prompt text (repeat the flag for several).")
flags.DEFINE_integer("max_new_tokens", 100, "Tokens to generate per sample.")
flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.")
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass (1 = plain sampling).")
flags.DEFINE_integer("num_samples", 1, "Samples per prompt (per class for diffusion).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_float("guidance_scale", 1.0, "Diffusion and AR images: classifier-free guidance "
                   "scale (1 = none).")
flags.DEFINE_integer("top_k", 0, "AR images: sample among the k most likely codes (0 = all).")
flags.DEFINE_enum("vf_source", "data", ["data", "generate"], "AR images with VF prompts: draw "
                  "the prompt from the training codes, or let the model write it.")
flags.DEFINE_string("sampler", None, "Diffusion: ddpm | ddim (diffusion models; default "
                    "ddpm) or euler | heun (flow models; default euler).")
flags.DEFINE_string("steps", "250", "Diffusion: sampling steps (respacing, e.g. 250 or ddim25).")
flags.DEFINE_string("output", None, "Diffusion: PNG path (default <workdir>/samples.png).")
FLAGS = flags.FLAGS


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)

  def body():
    run = runs.open(FLAGS.workdir, FLAGS.config)
    if run.task in ("diffusion", "ar_image"):
      output = FLAGS.output or os.path.join(FLAGS.workdir, "samples.png")
      options = (dict(temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                      vf_source=FLAGS.vf_source) if run.task == "ar_image" else {})
      print(sample.class_grid(run, output, num_samples=FLAGS.num_samples,
                              guidance_scale=FLAGS.guidance_scale, sampler=FLAGS.sampler,
                              steps=FLAGS.steps, seed=FLAGS.seed, **options))
      return
    texts = sample.texts(run, FLAGS.prompt, max_new_tokens=FLAGS.max_new_tokens,
                         temperature=FLAGS.temperature, top_p=FLAGS.top_p,
                         num_samples=FLAGS.num_samples, seed=FLAGS.seed)
    for prompt, samples in zip(FLAGS.prompt, texts):
      for j, text in enumerate(samples):
        print(f"--- prompt {prompt!r}, sample {j + 1}\n{prompt}{text}")
  cli.run(body)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
