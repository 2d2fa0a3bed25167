"""Shared fixtures. Tests run on the CPU; a test needing N devices starts a subprocess
with XLA_FLAGS=--xla_force_host_platform_device_count=N (see `run_python`)."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from effcomp.models.lm import generate, llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data_dir per test worker; datasets are built into it on first use."""
  path = str(tmp_path_factory.getbasetemp() / "tfds")
  os.environ["EFFCOMP_DATA_DIR"] = path
  return path


@pytest.fixture(scope="session")
def vq_digits(tmp_path_factory, data_dir):
  """(workdir, summary) of a VQ tokenizer trained 30 steps on the digits
  (`configs/vq_tokenizer.py`), shared by the tokenizer's and the AR model's tests."""
  del data_dir
  from effcomp import config as config_lib, runs  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("vq_digits"))
  config = config_lib.load("configs/vq_tokenizer.py:data=digits,steps=30", **{
      "train.progress_bar": False, "train.eval_every": 0, "checkpoint.async_save": False,
      "train.batch_size": 16, "train.log_every": 10, "eval.batch_size": 360})
  return workdir, runs.train(config, workdir)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache_dir(tmp_path_factory):
  """Entry points the tests run cache their compilations in this session's folder
  (`effcomp.compilation_cache`), not in the user's ~/.cache."""
  path = str(tmp_path_factory.getbasetemp() / "jax_cache")
  os.environ["EFFCOMP_COMPILATION_CACHE"] = path
  return path


def subprocess_env(devices: int = 1, **extra) -> dict:
  env = dict(os.environ)
  env.update({"JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
              "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
  env.update({k: str(v) for k, v in extra.items()})
  return env


def run_python(code_or_args, *, devices: int = 1, timeout: int = 600, check: bool = True,
               **env) -> subprocess.CompletedProcess:
  """Runs `python -c code` (str) or `python *args` (list) with `devices` CPU devices."""
  args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
  result = subprocess.run([sys.executable, *args], cwd=ROOT, env=subprocess_env(devices, **env),
                          capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
                         f"stderr:\n{result.stderr[-4000:]}")
  return result


def train_args(workdir: str, config: str = "configs/demo.py", *overrides: str) -> list:
  return ["experiments/train.py", f"--config={config}", f"--workdir={workdir}",
          "--config.train.progress_bar=False", *overrides]


def small_llama(rows: int, batch: int):
  """(model, params, tokens [rows, 17], calibration batches of `batch` rows [batch, 16]): the
  two-layer GQA LLaMA (vocabulary 128, width 64) the PTQ, pruning and compression tests
  work on."""
  model = llama.Llama(vocab_size=128, num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2,
                      mlp_dim=96, tie_embeddings=False)
  tokens = jax.random.randint(jax.random.key(0), (rows, 17), 3, 128)
  params = nn.unbox(model.init(jax.random.key(1), tokens[:, :-1])["params"])
  calib = [np.asarray(tokens[i:i + batch, :-1]) for i in range(0, rows, batch)]
  return model, params, tokens, calib


def train_tiny_lm(workdir: str) -> None:
  """Trains a one-layer lm_tiny (width 32, GQA, 512-token BPE) for 30 steps in `workdir`:
  the LM run the quantize and compress commands are tested on."""
  run_python(train_args(workdir, "configs/lm_tiny.py:steps=30", "--config.model.num_layers=1",
                        "--config.model.embed_dim=32", "--config.model.num_heads=2",
                        "--config.model.num_kv_heads=1", "--config.model.mlp_dim=64",
                        "--config.model.vocab_size=512", "--config.task.tokenizer_vocab=512",
                        "--config.task.seq_len=32", "--config.train.batch_size=16",
                        "--config.eval.batch_size=16", "--config.train.eval_every=0"))


def assert_greedy_generation_recomputes(model, params, prompt, new_tokens: int = 6) -> None:
  """Cached greedy `generate` equals re-running the whole sequence for every new token."""
  out = generate.generate(model, params, prompt, max_new_tokens=new_tokens,
                          rng=jax.random.key(3))
  seq = prompt
  for _ in range(new_tokens):
    nxt = jnp.argmax(model.apply({"params": params}, seq)[:, -1], -1)
    seq = jnp.concatenate([seq, nxt[:, None].astype(seq.dtype)], 1)
  np.testing.assert_array_equal(out, seq)


def assert_causal(model, params, tokens, cut: int = 8) -> None:
  """Changing tokens from position `cut` on leaves the logits before it exactly as they were
  and changes those after it."""
  changed = tokens.at[:, cut:].set((tokens[:, cut:] + 5) % model.vocab_size)
  a = model.apply({"params": params}, tokens)
  b = model.apply({"params": params}, changed)
  np.testing.assert_allclose(a[:, :cut], b[:, :cut], atol=1e-6)
  assert np.abs(a[:, cut:] - b[:, cut:]).max() > 1e-3


def upscaled_size(tmp_path, workdir: str, lr_size: tuple) -> tuple:
  """(width, height) of a random uint8 LR of `lr_size` (H, W) upscaled by the run in
  `workdir` through `experiments/upscale.py`, in 8-pixel tiles overlapping by 2."""
  photo, out = str(tmp_path / "in.png"), str(tmp_path / "out.png")
  Image.fromarray(np.random.default_rng(2).integers(0, 256, (*lr_size, 3), np.uint8)).save(photo)
  run_python(["experiments/upscale.py", f"--workdir={workdir}", f"--input={photo}",
              f"--output={out}", "--tile=8", "--overlap=2"])
  return Image.open(out).size


def train_losses_on_one_and_eight_devices(tmp_path, config: str, *overrides: str) -> tuple:
  """The logged train/loss values of the same run on 1 device and on 8 (data 4 × fsdp 2,
  eval batch 8), each trained by `experiments/train.py` in its own subprocess."""
  from effcomp.train import metrics_writer  # pylint: disable=g-import-not-at-top
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  run_python(train_args(one, config, *overrides), devices=1)
  run_python(train_args(eight, config, *overrides, "--config.mesh.data=4", "--config.mesh.fsdp=2",
                        "--config.eval.batch_size=8"), devices=8)
  return tuple([r["train/loss"] for r in metrics_writer.read_jsonl(
      os.path.join(w, "metrics.jsonl")) if "train/loss" in r] for w in (one, eight))
