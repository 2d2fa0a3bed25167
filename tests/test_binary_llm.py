"""1-bit LLMs: binary-aware initialization, which weights are binarized, packing, and the
distillation run from a trained teacher (1 and 8 devices)."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python, train_args
from effcomp import config as config_lib
from effcomp import runs
from effcomp.models.lm.llama import Llama
from effcomp.quant import binary_init, binary_pack, pack_int, progressive
from effcomp.runs import export
from effcomp.train import metrics_writer

TINY = {"model.num_layers": 2, "model.embed_dim": 32, "model.num_heads": 2,
        "model.num_kv_heads": 1, "model.mlp_dim": 64, "model.vocab_size": 320}
COMMON = {**TINY, "task.tokenizer": "byte", "task.seq_len": 32, "train.batch_size": 16,
          "eval.batch_size": 16, "train.progress_bar": False, "train.log_every": 1,
          "checkpoint.async_save": False}
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


def _model(binarizer="none", **kw):
  return Llama(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
               mlp_dim=48, qkv_bias=True, tie_embeddings=False, binarizer=binarizer, **kw)


def _params(model, seed=0):
  return nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32)))["params"]


def _tokens(shape=(3, 12), seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 64, shape))


def test_binary_aware_init_reduces_the_layer_output_error():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(0, 0.02, (64, 32)) * rng.lognormal(0, 0.5, (64, 1)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(512, 64)) * rng.lognormal(0, 1, 64), jnp.float32)
  gram = x.T @ x / x.shape[0]
  a, before, after = binary_init.fit_in_scale(w, gram, steps=50)
  assert after < 0.8 * before, (before, after)
  w_b = progressive.binarize_weight(w, "progressive", None, 20, a, jnp.ones(32))
  direct = jnp.sum((x @ w - x @ w_b) ** 2) / jnp.sum((x @ w) ** 2)
  assert float(direct) == pytest.approx(after, rel=1e-4)
  assert bool(jnp.all(a > 0))
  # The fitted a leaves the start of the schedule (t → 0: w_b = l·w) unchanged.
  z, u, v = progressive.binary_factors(w, "progressive", a, jnp.ones(32))
  np.testing.assert_allclose(u[:, None] * v[None, :] * z, w, rtol=1e-5, atol=1e-9)


def _binarized_projections(params, method):
  """params with the 7 projections' kernels replaced by their 1-bit weights."""
  def visit(node, name=""):
    if isinstance(node, dict) and name in PROJECTIONS:
      return {**node, "kernel": progressive.binarize_weight(node["kernel"], method)}
    return {k: visit(v, k) for k, v in node.items()} if isinstance(node, dict) else node
  return visit(params)


@pytest.mark.parametrize("method", ["bitnet", "xnor"])
def test_exactly_the_attention_and_mlp_projections_are_binarized(method):
  fp, binarized = _model(), _model(method)
  params = _params(binarized)
  tokens = _tokens()
  np.testing.assert_allclose(binarized.apply({"params": params}, tokens),
                             fp.apply({"params": _binarized_projections(params, method)}, tokens),
                             rtol=1e-5, atol=1e-5)
  # …and binarizing any one of them changes the output: none is left in full precision.
  assert not np.allclose(fp.apply({"params": params}, tokens),
                         binarized.apply({"params": params}, tokens), atol=1e-3)


def test_scales_exist_only_on_binarized_projections():
  params = _params(_model("progressive"))
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  scaled = {"/".join(k.key for k in path[:-1]) for path, _ in flat
            if path[-1].key in ("in_scale", "out_scale")}
  expected = {f"layers_{i}/{blk}/{p}" for i in range(2) for blk, names in
              (("attn", "qkvo"), ("mlp", ("gate", "up", "down"))) for p in names}
  assert scaled == expected
  assert set(_params(_model("progressive", dual_scaling=False))["layers_0"]["attn"]["q"]) == {"kernel", "bias"}


@pytest.mark.parametrize("method", ["bitnet", "xnor", "progressive"])
def test_packed_model_computes_what_the_trained_model_computes(tmp_path, method):
  model = _model(method)
  params = _params(model)
  if method == "progressive":  # non-trivial scales
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x * (1.5 + jnp.sin(jnp.arange(x.size, dtype=jnp.float32)))
        if p[-1].key in ("in_scale", "out_scale") else x, params)
  packed = binary_pack.pack_model(model, params)
  pack_int.save(str(tmp_path / "m.npz"), packed)
  float_model, float_params = binary_pack.unpack(model, pack_int.load(str(tmp_path / "m.npz")))
  assert float_model.binarizer == "none"
  tokens = _tokens()
  np.testing.assert_allclose(float_model.apply({"params": float_params}, tokens),
                             model.apply({"params": params}, tokens), rtol=1e-5, atol=1e-5)
  assert packed["layers_0"]["attn"]["q"]["sign_bits"].dtype == jnp.uint32
  assert "bias" in packed["layers_0"]["attn"]["q"] and "kernel" in packed["lm_head"]
  shapes = [(32, 32), (32, 16), (32, 16), (32, 32), (32, 48), (32, 48), (48, 32)] * 2
  assert binary_pack.nbytes(packed) == (  # one bit per weight in whole words, plus u and v
      sum(-(-i // 32) * o * 4 + (i + o) * 4 for i, o in shapes), sum(i * o * 4 for i, o in shapes))


def test_copy_weights_refuses_a_different_architecture():
  student = _params(_model("progressive"))
  teacher = _params(Llama(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4,
                          num_kv_heads=2, mlp_dim=64, qkv_bias=True, tie_embeddings=False))
  with pytest.raises(ValueError, match=r"layers_0/mlp/\w+/kernel.: teacher shape"):
    binary_init.copy_weights(student, teacher)
  copied = binary_init.copy_weights(student, _params(_model(), seed=3))
  np.testing.assert_array_equal(copied["embed"]["embedding"], _params(_model(), seed=3)["embed"]["embedding"])
  np.testing.assert_array_equal(copied["layers_0"]["attn"]["q"]["in_scale"], 1.0)


def _student_config(teacher, steps, **overrides):
  return config_lib.load(f"configs/binaryllm_tiny.py:teacher={teacher},steps={steps}",
                         **{**COMMON, "train.eval_every": 0, **overrides})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_dir):
  del data_dir
  workdir = str(tmp_path_factory.mktemp("teacher"))
  config = config_lib.load("configs/lm_tiny.py:steps=30,tokenizer=byte",
                           **{**COMMON, "train.eval_every": 0, "optimizer.lr": 1e-2})
  summary = runs.train(config, workdir)
  return workdir, summary["eval"]["perplexity"]


@pytest.mark.slow  # end to end, ≈ 30 s: make test-slow (packing alone: tests above)
def test_binary_student_starts_from_its_teacher_and_exports_losslessly(tmp_path, teacher):
  teacher_dir, teacher_ppl = teacher
  summary = runs.train(_student_config(teacher_dir, 20), str(tmp_path))
  rows = metrics_writer.read_jsonl(str(tmp_path / "metrics.jsonl"))
  init = rows[0]
  assert init["step"] == 0 and init["init/error_after"] < 0.8 * init["init/error_before"]
  ev = summary["eval"]
  # The schedule ends at the sign: the trained forward is the 1-bit model.
  assert ev["perplexity"] == pytest.approx(ev["perplexity_1bit"], rel=1e-6)
  assert ev["perplexity_1bit"] < 1.5 * teacher_ppl, (ev, teacher_ppl)
  result = export.export_binary_lm_and_check(str(tmp_path), str(tmp_path / "packed"))
  assert result["packed_perplexity"] == pytest.approx(result["trained_perplexity"], rel=1e-5)
  assert result["trained_perplexity"] == pytest.approx(ev["perplexity_1bit"], rel=1e-4)


def test_student_must_use_the_teachers_tokenizer(tmp_path, teacher):
  config = _student_config(teacher[0], 2, **{"task.tokenizer": "bpe", "task.tokenizer_vocab": 300})
  with pytest.raises(ValueError, match="differs from the teacher's"):
    runs.setup(config)


def _losses(workdir):
  rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return np.array([r["train/loss"] for r in rows if "train/loss" in r])


@pytest.mark.slow  # 8 devices, 40–90 s: make test-slow (keeps make test under 20 minutes)
def test_eight_devices_train_the_binary_student_like_one(tmp_path, teacher):
  # SGD: Adam turns float reduction-order noise in near-zero gradients into O(lr) updates.
  overrides = [f"--config.{k}={v}" for k, v in {**COMMON, "train.eval_every": 0,
                                                   "optimizer.name": "sgd", "optimizer.lr": 0.5,
                                                   "optimizer.grad_clip_norm": 0.0}.items()]
  config = f"configs/binaryllm_tiny.py:teacher={teacher[0]},steps=6"
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  run_python(train_args(one, config, *overrides), devices=1)
  run_python(train_args(eight, config, *overrides, "--config.mesh.data=2",
                        "--config.mesh.fsdp=2", "--config.mesh.tensor=2"), devices=8)
  np.testing.assert_allclose(_losses(eight), _losses(one), rtol=2e-5)
  assert len(_losses(one)) == 6
  assert json.loads(open(os.path.join(eight, "runs.jsonl")).readline())["devices"] == 8
