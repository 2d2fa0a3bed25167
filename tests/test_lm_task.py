"""The language-modelling task: training on python_docs, perplexity, sampling, distillation."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import run_python
from effcomp import config as config_lib
from effcomp import models
from effcomp import runs
from effcomp.data import pipeline, tokenizer
from effcomp.registry import TASKS
from effcomp.tasks import lm

TINY_MODEL = {"model.num_layers": 1, "model.embed_dim": 32, "model.num_heads": 2,
              "model.num_kv_heads": 1, "model.mlp_dim": 64, "model.vocab_size": 512}


def _config(steps=40, **overrides):
  base = {**TINY_MODEL, "task.tokenizer_vocab": 512, "task.seq_len": 32, "train.batch_size": 16,
          "eval.batch_size": 16, "train.progress_bar": False, "train.log_every": 10,
          "train.eval_every": 0, "checkpoint.every_steps": 20, "checkpoint.async_save": False,
          "optimizer.lr": 1e-2}
  return config_lib.load(f"configs/lm_tiny.py:steps={steps}", **{**base, **overrides})


def test_lm_tiny_config_is_the_documented_size():
  config = config_lib.load("configs/lm_tiny.py")
  model = runs.build_model(config.model, "float32")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert 5e6 <= n <= 6e6, n  # "5.3 M parameters"
  assert config.task.seq_len == 128 and config.data.eval_split == "validation"


def test_training_learns_and_writes_the_tokenizer_then_samples(tmp_path, data_dir):
  summary = runs.train(_config(), str(tmp_path))
  ev = summary["eval"]
  assert ev["perplexity"] == pytest.approx(math.exp(ev["loss"]), rel=1e-4)
  assert ev["perplexity"] < 200, ev  # uniform over 512 tokens is 512
  tok = tokenizer.load(str(tmp_path / "tokenizer.json"))
  assert tok.vocab_size == 512
  result = run_python(["experiments/sample.py", "--config=configs/lm_tiny.py:steps=40",
                       f"--workdir={tmp_path}", "--prompt=The class", "--max_new_tokens=12",
                       "--num_samples=2", *[f"--config.{k}={v}" for k, v in TINY_MODEL.items()]])
  samples = [l for l in result.stdout.splitlines() if l.startswith("--- prompt")]
  assert len(samples) == 2
  evaluated = runs.evaluate(_config(), str(tmp_path))
  assert evaluated["eval"]["perplexity"] == pytest.approx(ev["perplexity"], rel=1e-5)
  # A different tokenizer is not this run's: resuming or evaluating it is refused.
  with pytest.raises(ValueError, match="tokenizer.json differs"):
    runs.evaluate(_config(**{"task.tokenizer": "byte"}), str(tmp_path))


def test_eval_metrics_count_every_real_token_once():
  model = models.build("llama", vocab_size=259, num_layers=1, embed_dim=16, num_heads=2)
  rows = np.array([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 9, 9, 9]], np.int32)
  source = pipeline.ArraySource({"text": np.array([b"x"] * 3)})
  config = config_lib.load("configs/lm_tiny.py", **{"task.tokenizer": "byte"})
  task = TASKS.get("lm")(config, model, source, source)
  variables = task.init_fn(jax.random.key(0), {"tokens": rows})
  batch = {"tokens": rows, "mask": np.array([True, True, False])}
  metrics = task.eval_fn(variables["params"], {}, batch, 0, None).compute()
  logits = task.model.apply(variables, rows[:, :-1])
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, rows[:, 1:])
  expected = (nll[0].sum() + nll[1, :2].sum()) / 6  # row 1's pads and row 2 (masked) excluded
  assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-5)
  assert float(metrics["perplexity"]) == pytest.approx(math.exp(float(expected)), rel=1e-5)


def test_vocab_smaller_than_the_tokenizer_is_an_error():
  model = models.build("llama", vocab_size=100, num_layers=1, embed_dim=16, num_heads=2)
  source = pipeline.ArraySource({"text": np.array([b"x"])})
  config = config_lib.load("configs/lm_tiny.py", **{"task.tokenizer": "byte"})
  with pytest.raises(ValueError, match=r"vocab_size=100 is smaller .*259"):
    TASKS.get("lm")(config, model, source, source)


def test_distillation_terms_vanish_for_the_teacher_itself_and_have_gradients():
  model = models.build("llama", vocab_size=259, num_layers=2, embed_dim=16, num_heads=2)
  text = pipeline.ArraySource({"text": np.array([b"def f(x): return x + 1\n" * 8] * 4)})
  config = config_lib.load("configs/lm_tiny.py", **{
      "task.tokenizer": "byte", "task.seq_len": 16, "task.kd_weight": 1.0,
      "task.hidden_weight": 1.0, "task.kd_temperature": 2.0})
  task = TASKS.get("lm")(config, model, text, text, teacher_model=model)
  batch = {"tokens": task.train_source.arrays["tokens"][:4]}
  teacher = nn.unbox(task.teacher_init_fn(jax.random.key(0), batch))
  args = ({}, batch, jax.random.key(1), teacher, jnp.int32(0))
  _, (_, same) = task.loss_fn(teacher["params"], *args)
  assert float(same["kd"]) == pytest.approx(0.0, abs=1e-6)
  assert float(same["hidden"]) == pytest.approx(0.0, abs=1e-6)
  student = nn.unbox(task.init_fn(jax.random.key(7), batch))["params"]
  (loss, (_, other)), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(student, *args)
  assert float(other["kd"]) > 1e-3 and float(other["hidden"]) > 1e-3
  assert float(loss) == pytest.approx(float(other["cross_entropy"] + other["kd"] + other["hidden"]), rel=1e-5)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["layers_0"]["attn"]["q"]["kernel"]).sum()) > 0


def test_distillation_needs_a_teacher():
  model = models.build("llama", vocab_size=259, num_layers=1, embed_dim=16, num_heads=2)
  source = pipeline.ArraySource({"text": np.array([b"x"])})
  config = config_lib.load("configs/lm_tiny.py", **{"task.tokenizer": "byte", "task.kd_weight": 1.0})
  with pytest.raises(ValueError, match="teacher"):
    TASKS.get("lm")(config, model, source, source)
