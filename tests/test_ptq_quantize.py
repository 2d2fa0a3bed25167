"""Whole-model PTQ: every method on a small LLaMA, packing, and the quantize command."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python, small_llama, train_tiny_lm
from effcomp.quant import fake_quant, pack_int
from effcomp.quant.ptq import blocks, evaluate, quantize


@pytest.fixture(scope="module")
def small():
  model, params, tokens, calib = small_llama(32, 16)
  # A few large input channels, as trained LLMs have (what SmoothQuant/AWQ/CFP address).
  params["layers_0"]["attn_norm"]["scale"] = params["layers_0"]["attn_norm"]["scale"].at[:3].set(20.0)
  return model, params, tokens, calib


def _logit_error(model, params, q, tokens, qconfig):
  ref = model.apply({"params": params}, tokens[:, :-1])
  out = blocks.apply_with_act_quant(lambda: model.apply({"params": q}, tokens[:, :-1]),
                                    qconfig.act, skip=("lm_head",))
  return float(jnp.mean((out - ref) ** 2))


@pytest.mark.parametrize("setting", ["w3a16", "w4a4"])
def test_methods_quantize_every_block_linear_and_gptq_beats_rtn(small, setting):
  model, params, tokens, calib = small
  bm = blocks.for_llama(model)
  qconfig = fake_quant.QuantConfig.parse(setting)
  errors = {}
  for method in ("rtn", "gptq", "smoothquant", "awq"):
    q, report = quantize.quantize_model(bm, params, calib, qconfig, method)
    assert set(report["scales"]) == {k for i in range(2) for k in bm.kernels(i)}
    for path, (scale, zero) in report["scales"].items():  # every kernel lies on its grid
      w = blocks.get_path(q, path)
      packed = pack_int.pack_weight(w, qconfig.weight, scale, zero)
      np.testing.assert_allclose(pack_int.dequantize_weight(packed), w, atol=1e-6)
    np.testing.assert_array_equal(q["embed"]["embedding"], params["embed"]["embedding"])
    errors[method] = _logit_error(model, params, q, tokens, qconfig)
  assert errors["gptq"] < errors["rtn"], errors
  assert errors["awq"] < errors["rtn"], errors


def test_smoothquant_without_quantization_keeps_the_function(small):
  model, params, tokens, calib = small
  qconfig = fake_quant.QuantConfig.parse("w16a16")
  q, _ = quantize.quantize_model(blocks.for_llama(model), params, calib, qconfig, "smoothquant")
  assert float(jnp.abs(q["layers_0"]["attn_norm"]["scale"] - params["layers_0"]["attn_norm"]["scale"]).max()) > 1e-3
  assert _logit_error(model, params, q, tokens, qconfig) < 1e-8


def test_perplexity_counts_only_real_targets(small):
  model, params, tokens, _ = small
  rows = np.array(tokens[:5])
  rows[4, 6:] = 0  # a padded last row
  ppl = evaluate.perplexity(model, params, rows, pad_id=0, batch_size=4)
  logits = model.apply({"params": params}, rows[:, :-1])
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, rows[:, 1:, None], -1)[..., 0]
  mask = rows[:, 1:] != 0
  assert ppl == pytest.approx(float(jnp.exp(nll[mask].mean())), rel=1e-5)


def test_unknown_method_is_an_error(small):
  model, params, _, calib = small
  with pytest.raises(ValueError, match="method='xyz'"):
    quantize.quantize_model(blocks.for_llama(model), params, calib,
                            fake_quant.QuantConfig.parse("w4a16"), "xyz")


@pytest.mark.slow  # end to end, ≈ 45 s: make test-slow
def test_quantize_command_on_a_trained_run(tmp_path, data_dir):
  lm_dir = tmp_path / "lm"
  train_tiny_lm(str(lm_dir))
  out = tmp_path / "q"
  result = run_python(["experiments/quantize.py", "--config=configs/ptq.py:method=gptq,setting=w4a16g32",
                       f"--workdir={out}", f"--config.source.workdir={lm_dir}",
                       "--config.calib.num_samples=16"])
  assert "validation perplexity" in result.stdout
  report = json.loads((out / "ptq.json").read_text())
  assert report["perplexity"] < 1.2 * report["fp_perplexity"], report
  assert report["bytes"] < report["float_bytes"]
  packed = pack_int.load(str(out / "quantized.npz"))
  assert isinstance(packed["layers_0"]["attn"]["q"]["kernel"], pack_int.PackedWeight)
  bad = run_python(["experiments/quantize.py", "--config=configs/ptq.py:method=gptq",
                    f"--workdir={out}"], check=False)
  assert bad.returncode == 2 and "source.workdir" in bad.stderr


@pytest.mark.slow  # end to end, ≈ 40 s: make test-slow
def test_cbq_beats_rtn_and_its_kernels_pack_exactly(small):
  model, params, tokens, calib = small
  bm = blocks.for_llama(model)
  qconfig = fake_quant.QuantConfig.parse("w2a16g16")
  rtn, _ = quantize.quantize_model(bm, params, calib, qconfig, "rtn")
  options = {"steps": 40, "batch_size": 8, "cfp": False}
  q, report = quantize.quantize_model(bm, params, calib, qconfig, "cbq", options)
  assert set(report["scales"]) == {k for i in range(2) for k in bm.kernels(i)}
  for path, (scale, zero) in report["scales"].items():
    w = blocks.get_path(q, path)
    packed = pack_int.pack_weight(w, qconfig.weight, scale, zero)
    np.testing.assert_allclose(pack_int.dequantize_weight(packed), w, atol=1e-6)
  assert _logit_error(model, params, q, tokens, qconfig) < _logit_error(model, params, rtn, tokens, qconfig)
  # With CFP the weight outliers are clipped before reconstruction; it still runs end to end.
  q_cfp, _ = quantize.quantize_model(bm, params, calib, qconfig, "cbq", {**options, "cfp": True})
  assert np.isfinite(_logit_error(model, params, q_cfp, tokens, qconfig))
