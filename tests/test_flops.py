"""FLOPs accounting: the papers' GFLOPs and parameter counts, analytic vs jaxpr vs XLA counts."""

import jax
import jax.numpy as jnp
import pytest

from effcomp.metrics import flops
from effcomp.models.dit.dit import DiT
from effcomp.models.dit.udit import UDiT
from effcomp.nn.downsampled_attention import DownsampledAttention

TINY_DIT = dict(input_size=16, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
                num_classes=10)
TINY_UDIT = dict(input_size=16, hidden_size=16, num_heads=2, depth=(1, 1, 1, 1, 1), num_classes=10)


def _count(counter, model):
  """`counter` (jaxpr_macs or xla_flops) of model.apply on one sample, the params passed as an
  argument (abstract: only their shapes are needed; no constant folding)."""
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), *flops.example_inputs(model)))
  return counter(model.apply, params, *flops.example_inputs(model))  # shapes only


@pytest.mark.parametrize("name", sorted(flops.PAPER_GFLOPS))
def test_analytic_gflops_reproduce_the_published_values(name):
  ours = flops.analytic_macs(flops.build(name)).total / 1e9
  paper = flops.PAPER_GFLOPS[name]
  assert ours == pytest.approx(paper, rel=0.02)
  assert abs(ours - paper) < 0.006, (name, ours)  # in fact equal to the printed decimals


def test_gflops_at_512_match_udit_table_6():
  rows = flops.flops_table(sorted(flops.PAPER_GFLOPS_512), with_params=False, input_size=64)
  for row in rows:
    assert row["gflops"] == pytest.approx(row["paper_gflops"], rel=0.02), row
  assert rows[1]["gflops"] == pytest.approx(106.7, abs=0.05)  # U-DiT-B: 106.71


def test_dit_gflops_are_macs_plus_one_op_per_layernorm_element():
  count = flops.dit_macs(flops.build("DiT-XL/2"))
  assert count.matmul / 1e9 == pytest.approx(118.62, abs=0.005)  # the matmuls alone
  assert count.elementwise == (2 * 28 + 1) * 256 * 1152


@pytest.mark.parametrize("name", ["U-DiT-S", "U-DiT-B", "U-DiT-L"])
def test_udit_parameter_counts_match_table_8(name):
  params_m = flops.count_params(flops.build(name)) / 1e6
  assert params_m == pytest.approx(flops.PAPER_PARAMS_M[name], abs=0.006)


@pytest.mark.parametrize("model", [
    DiT(**TINY_DIT), DiT(**{**TINY_DIT, "patch_size": 4, "learn_sigma": False}),
    DiT(**{**TINY_DIT, "attention": "ssba:2"}),
    UDiT(**TINY_UDIT, ffn="dwconv"), UDiT(**TINY_UDIT, ffn="mlp", attn_type="dot", rope=False),
    UDiT(**TINY_UDIT, ffn="dwconv", down_factor=1, downsampler="conv3", down_shortcut=False)],
    ids=["dit", "dit-p4", "dit-ssba", "udit", "udit-vanilla", "udit-full-attention"])
def test_analytic_matmul_macs_equal_the_jaxpr_count(model):
  # batch 1: the analytic count is per sample (adaLN and embedders included).
  assert _count(flops.jaxpr_macs, model) == flops.analytic_macs(model).matmul


def test_rep_ffn_is_counted_merged_and_its_branches_cost_more_in_training():
  merged = flops.analytic_macs(UDiT(**TINY_UDIT, ffn="dwconv"))
  assert flops.analytic_macs(UDiT(**TINY_UDIT, ffn="rep")) == merged
  train_time = _count(flops.jaxpr_macs, UDiT(**TINY_UDIT, ffn="rep"))
  assert train_time > merged.matmul


def test_downsampling_saves_three_quarters_of_the_attention_matmuls():
  x = jax.ShapeDtypeStruct((1, 16, 16, 32), jnp.float32)
  macs = {}
  for f in (1, 2):
    module = DownsampledAttention(num_heads=4, down_factor=f, downsampler="none")
    params = jax.eval_shape(module.init, jax.random.key(0), x)
    macs[f] = flops.jaxpr_macs(module.apply, params, x)
  n, c = 16 * 16, 32
  assert macs[1] - macs[2] == 2 * n * n * c * 3 // 4  # q·kᵀ and attn·v: (HW)²C each, ÷ f²
  assert macs[2] == 4 * n * c * c + 2 * n * n * c // 4  # + qkv and out projections


@pytest.mark.parametrize("model", [DiT(**TINY_DIT), UDiT(**{**TINY_UDIT, "depth": (1, 0, 1, 0, 0)},
                                                          ffn="dwconv")],
                         ids=["dit", "udit"])
def test_xla_counts_a_multiply_add_as_two_flops(model):
  xla = _count(flops.xla_flops, flops.unrolled(model))
  macs = flops.analytic_macs(model).matmul
  # XLA: 2 per MAC plus ~1 per elementwise op (norms, softmax, GELU, modulation).
  assert 2 * macs <= xla <= 2.3 * macs, xla / macs


def test_flops_table_rows_and_markdown():
  rows = flops.flops_table(["DiT-XL/2", "U-DiT-S", "DiT-B/8"], with_params=False)
  assert [r["name"] for r in rows] == ["DiT-XL/2", "U-DiT-S", "DiT-B/8"]
  assert rows[0]["gflops"] == pytest.approx(118.64, abs=0.005)
  assert rows[0]["paper_gflops"] == 118.64 and rows[2]["paper_gflops"] is None
  text = flops.table_markdown(rows)
  assert "| U-DiT-S |" in text and "118.64" in text
  with pytest.raises(ValueError, match="name='DiT-M/2'"):
    flops.build("DiT-M/2")
