"""Compression recipes (issue 27): parsing, the composition rules (masks survive
quantization, factor pairs get quantized), the storage count, save/load, and the command."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python, small_llama, train_tiny_lm
from effcomp import config as config_lib
from effcomp.lowrank import factorized_dense
from effcomp.prune import masks as masks_lib
from effcomp.prune import storage
from effcomp.quant import fake_quant
from effcomp.quant.ptq import blocks, evaluate
from effcomp.runs import compress


@pytest.fixture(scope="module")
def small():
  return small_llama(32, 16)


def test_recipes_parse_and_bad_ones_say_why():
  steps = compress.parse_recipe("wanda:2:4+gptq:w4a16g128")
  assert steps == (compress.Step("prune", "wanda", "2:4"), compress.Step("quant", "gptq",
                                                                         "w4a16g128"))
  assert compress.parse_recipe("svdllm:0.5+rtn:w4a16")[0].kind == "lowrank"
  for bad, why in [("gptq:w4a16+wanda:0.5", "order"), ("wanda:0.5+svd:0.5", "do not combine"),
                   ("svd:0.5+gptq:w4a16", "only rtn"), ("prune:0.5", "not understood"),
                   ("wanda", "not understood"), ("", "expected")]:
    with pytest.raises(ValueError, match=why):
      compress.parse_recipe(bad)
  with pytest.raises(ValueError, match="source='hub'"):
    config_lib.load("configs/compress.py:source=hub")


def _kernels(bm, params):
  return {k: np.asarray(blocks.get_path(params, k)) for i in range(bm.num_blocks)
          for k in bm.kernels(i)}


def test_two_to_four_sparsity_survives_gptq_and_weights_sit_on_the_grid(small):
  model, params, tokens, calib = small
  bm = blocks.for_llama(model)
  c = compress.apply_recipe(bm, params, calib, compress.parse_recipe("wanda:2:4+gptq:w4a16g32"))
  assert [r["step"] for r in c.reports] == ["wanda:2:4", "gptq:w4a16g32"]
  assert set(c.masks) == set(c.quantized) == set(_kernels(bm, params))
  spec = fake_quant.QuantConfig.parse("w4a16g32").weight
  for path, w in _kernels(bm, c.params).items():
    keep = masks_lib.unpack(c.masks[path])
    assert np.all(w[~keep] == 0)  # the 2:4 pattern holds exactly
    assert np.all(np.count_nonzero(w.T.reshape(w.shape[1], -1, 4), axis=-1) <= 2)
    # Every kept weight is on a 4-bit grid of its group: at most 16 values per group column.
    groups = w.reshape(-1, 32, w.shape[1])
    assert max(len(np.unique(groups[g, :, o])) for g in range(len(groups))
               for o in range(w.shape[1])) <= 2 ** spec.bits
  assert c.act is not None and not c.act.enabled  # a16: activations stay float
  ppl = evaluate.perplexity(model, c.params, np.asarray(tokens), 0, act=c.act, wrap=compress.WRAP)
  assert np.isfinite(ppl)


def test_structured_pruning_then_gptq_runs_a_smaller_model(small):
  model, params, tokens, calib = small
  bm = blocks.for_llama(model)
  c = compress.apply_recipe(bm, params, calib, compress.parse_recipe("wanda_sp:0.5+gptq:w4a16g32"),
                            model=model)
  assert c.model.layer_heads == (2, 2) and c.model.layer_mlp == (48, 48)  # half the kv groups
  assert set(c.quantized) == set(_kernels(blocks.for_llama(c.model), c.params))
  logits = compress.forward(c.model)(c.params, tokens[:, :-1])
  assert logits.shape == (32, 16, 128) and np.all(np.isfinite(logits))
  assert sum(x.size for x in jax.tree.leaves(c.params)) < sum(
      x.size for x in jax.tree.leaves(params))
  with pytest.raises(ValueError, match="needs the LLaMA model"):
    compress.apply_recipe(bm, params, calib, compress.parse_recipe("taylor:0.25"))


def test_factor_pairs_are_quantized_and_counted(small):
  model, params, tokens, calib = small
  bm = blocks.for_llama(model)
  c = compress.apply_recipe(bm, params, calib, compress.parse_recipe("svdllm:0.5+rtn:w4a16g16"))
  q = c.params["layers_0"]["attn"]["q"]
  assert "kernel" not in q and set(factorized_dense.FACTORS) <= set(q)
  assert len(c.quantized) == 2 * len(_kernels(bm, params))
  spec = fake_quant.QuantConfig.parse("w4a16g16").weight
  for factor in factorized_dense.FACTORS:  # RTN is idempotent: a factor on its grid stays
    np.testing.assert_allclose(fake_quant.quantize_weight(q[factor], spec), q[factor], atol=1e-6)
  logits = compress.forward(model)(c.params, tokens[:, :-1])
  assert logits.shape == (32, 16, 128) and np.all(np.isfinite(logits))
  # Storage: float32 embeddings/norms/head + 4-bit factors with a 5-byte grid per group.
  assert compress.storage_bytes(c) == _expected_bytes(c, groups=lambda rows: -(-rows // 16))


def _expected_bytes(c, groups):
  """Storage by hand: 4 bytes a float, half a byte a 4-bit code (kept weights only), a bit a
  mask entry, a 4-byte scale and 1-byte zero per group and output."""
  total = 0.0
  for path, x in jax.tree_util.tree_flatten_with_path(c.params)[0]:
    key = "/".join(p.key for p in path)
    kept = np.count_nonzero(masks_lib.unpack(c.masks[key])) if key in c.masks else x.size
    total += x.size / 8 if key in c.masks else 0
    if key in c.quantized:
      total += kept / 2 + groups(x.shape[0]) * x.shape[1] * 5
    else:
      total += kept * 4
  return int(np.ceil(total))


def test_a_composed_model_saves_and_loads(small, tmp_path):
  model, params, tokens, calib = small
  bm = blocks.for_llama(model)
  c = compress.apply_recipe(bm, params, calib, compress.parse_recipe("sparsegpt:0.5+rtn:w4a16"))
  path = str(tmp_path / "c.npz")
  storage.save(path, c.params, c.masks)
  loaded, masks = storage.load(path)
  assert {k: m.shape for k, m in masks.items()} == {k: m.shape for k, m in c.masks.items()}
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, c.params))
  np.testing.assert_array_equal(compress.forward(model)(loaded, tokens[:, :-1]),
                                compress.forward(model)(c.params, tokens[:, :-1]))
  # 50 % of the block weights at 4 bits, plus their masks and per-channel grids.
  assert compress.storage_bytes(c) == _expected_bytes(c, groups=lambda rows: 1)


@pytest.mark.slow  # end to end, ≈ 60 s: make test-slow
def test_compress_command_on_a_trained_run(tmp_path, data_dir):
  lm_dir = tmp_path / "lm"
  train_tiny_lm(str(lm_dir))
  out = tmp_path / "c"
  result = run_python(["experiments/compress.py",
                       "--config=configs/compress.py:recipe=wanda:2:4+gptq:w4a16g32",
                       f"--workdir={out}", f"--config.source.workdir={lm_dir}",
                       "--config.calib.num_samples=16"])
  assert "validation perplexity" in result.stdout
  report = json.loads((out / "compress.json").read_text())
  assert report["perplexity"] < 3 * report["dense perplexity"], report
  assert report["size ratio"] < 0.9 and report["latency ratio"] > 0  # embeddings stay float
  params, masks = storage.load(str(out / "compressed.npz"))
  assert len(masks) == 7 and np.mean(params["layers_0"]["mlp"]["up"]["kernel"] == 0) >= 0.5
  bad = run_python(["experiments/compress.py", "--config=configs/compress.py:recipe=wanda:0.5",
                    f"--workdir={out}"], check=False)
  assert bad.returncode == 2 and "source.workdir" in bad.stderr


def test_latency_ratio_sees_a_smaller_matmul():
  x = jnp.ones((256, 512))
  matmul = lambda w: x @ w
  ratio = compress.latency_ratio(matmul, (jnp.ones((512, 1024)),), matmul, (jnp.ones((512, 32)),),
                                 repeats=5)
  assert 0 < ratio < 0.5
