"""Generate text from a trained language model.

  python experiments/sample.py --config=configs/lm_tiny.py --workdir=workdirs/lm_tiny \\
      --prompt="The for statement" --prompt="Return a new list" \\
      [--max_new_tokens=100 --temperature=0.8 --top_p=0.95 --num_samples=2 --seed=0]

Restores the newest checkpoint of the run in `--workdir` and its `tokenizer.json`, and
prints each prompt's continuations (KV-cached decoding; `--temperature=0` is greedy).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from effcomp import cli  # noqa: E402  (defines --config and --workdir)

flags.DEFINE_multi_string("prompt", ["The "], "Prompt text (repeat the flag for several).")
flags.DEFINE_integer("max_new_tokens", 100, "Tokens to generate per sample.")
flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.")
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass (1 = plain sampling).")
flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
FLAGS = flags.FLAGS


def sample_texts(model, params, tok, prompts, *, max_new_tokens: int, temperature: float,
                 top_p: float, num_samples: int, seed: int) -> list[list[str]]:
  """For each prompt, `num_samples` continuations (the generated text only)."""
  import jax
  import jax.numpy as jnp
  from effcomp.models.lm import generate
  if max_new_tokens < 1 or num_samples < 1:
    raise ValueError(f"--max_new_tokens={max_new_tokens}, --num_samples={num_samples}: "
                     "expected ≥ 1")
  out = []
  for i, prompt in enumerate(prompts):
    ids = [tok.bos_id] + tok.encode(prompt)
    batch = jnp.tile(jnp.asarray(ids, jnp.int32)[None], (num_samples, 1))
    tokens = generate.generate(model, params, batch, max_new_tokens=max_new_tokens,
                               rng=jax.random.key(seed + i), temperature=temperature,
                               top_p=top_p, eos_id=tok.eos_id, pad_id=tok.pad_id)
    out.append([tok.decode([int(t) for t in row[len(ids):]]) for row in tokens])
  return out


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail("error", ValueError(f"unexpected arguments {argv[1:]}"), 2)

  def body(_):
    from effcomp.tasks import lm
    model, params, tok = lm.restore(FLAGS.config, FLAGS.workdir)
    texts = sample_texts(model, params, tok, FLAGS.prompt, max_new_tokens=FLAGS.max_new_tokens,
                         temperature=FLAGS.temperature, top_p=FLAGS.top_p,
                         num_samples=FLAGS.num_samples, seed=FLAGS.seed)
    for prompt, samples in zip(FLAGS.prompt, texts):
      for j, text in enumerate(samples):
        print(f"--- prompt {prompt!r}, sample {j + 1}\n{prompt}{text}")
  cli.run(body)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(_main, flags_parser=cli.parse_flags)
