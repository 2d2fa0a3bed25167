"""benchmarks/speed.py's row arithmetic and step_profile's grouping (the timings
themselves need the official code)."""

import pytest
import torch

from benchmarks import speed, step_profile


def test_train_row_ratios_compile_and_goals():
  times = {"effcomp": [[1.0, 1.2, 1.1], [2.0, 2.2, 2.1]],
           "torch": [[2.5, 2.5, 2.5], [2.5, 2.5, 2.5]]}
  row = speed.summarize("udit_s", times, {"effcomp": 34.0, "torch": 3.0}, 30.4)
  assert row["effcomp s"] == pytest.approx(1.6)  # median of all six calls
  assert row["ratio"] == pytest.approx(1.6 / 2.5)
  assert row["ratio over rounds"] == "0.44–0.84"  # rounds' medians 1.1 and 2.1 over 2.5
  assert row["meets goal"]
  assert row["effcomp compile s"] == 30.4
  assert row["compile ≤ 30 s"] is False
  assert row["calls per side"] == 6
  assert row["effcomp spread s"] == "1–2.2"


def test_inference_row_is_a_throughput_ratio_without_a_compile_goal():
  times = {"effcomp": [[0.1, 0.1]], "torch": [[0.3, 0.3]]}
  row = speed.summarize("minilm", times, {"effcomp": 40.0, "torch": 0.2}, 39.0)
  assert row["ratio"] == pytest.approx(3.0)
  assert row["meets goal"] and row["compile ≤ 30 s"] is None
  slow = speed.summarize("minilm", {"effcomp": [[0.3]], "torch": [[0.3]]},
                         {"effcomp": 1.0, "torch": 1.0}, 0.5)
  assert not slow["meets goal"]  # 1.0× is below the 1.25× goal


def test_unequal_rounds_are_refused():
  with pytest.raises(ValueError, match="times"):
    speed.summarize("dit_s2", {"effcomp": [[1.0]], "torch": []}, {"effcomp": 1, "torch": 1},
                    0.5)


def test_op_groups_name_pass_module_and_primitive():
  group = step_profile.group_of
  assert group("jit(step)/transpose(jvp(UDiT))/stage_1/layers_0/attn/dot_general") == (
      "bwd · attn · dot_general")
  assert group("jit(step)/jvp(DiTSR)/body/ffn/closed_call/mul") == "fwd · ffn · mul"
  assert group("jit(step)/add") == "opt/other · - · add"
  assert group("?/convolution") == "? (no metadata) · convolution"


def test_torch_profile_splits_matmuls_from_other_ops():
  a, b = torch.randn(256, 256), torch.randn(256, 256)
  rows = {r["op group"]: r for r in step_profile.torch_profile(
      lambda: torch.relu(a @ b).sum(), steps=2, top=3)}
  dense, other, total = (rows[k] for k in (step_profile.DENSE, step_profile.OTHER, "(all)"))
  assert dense["ms per step"] > 0 and other["ms per step"] > 0
  assert dense["ms per step"] + other["ms per step"] == pytest.approx(total["ms per step"])
  assert dense["share"] + other["share"] == pytest.approx(1.0)
  assert "aten::mm" in rows and len(rows) == 3 + 3
