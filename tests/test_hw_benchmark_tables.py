"""benchmarks/common.write_results with several tables (the circuits benchmark's two)."""

import json

from benchmarks import common


def test_write_results_appends_the_extra_tables(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "ROOT", str(tmp_path))
  common.write_results("t", [{"a": 1}], ["a"], title="T",
                       tables=[("More", "Some notes.", [{"b": 2.5, "c": "x|y"}], ["b", "c"])])
  md = (tmp_path / "docs" / "results" / "t.md").read_text()
  assert md.startswith("# T\n")
  assert "| a |\n|---|\n| 1 |\n\n## More\n\nSome notes.\n\n| b | c |\n|---|---|\n| 2.5 | x\\|y |\n" in md
  record = json.loads((tmp_path / "benchmarks" / "results" / "t.json").read_text())
  assert record["rows"] == [{"a": 1}] and record["tables"] == {"More": [{"b": 2.5, "c": "x|y"}]}


def test_write_results_without_extra_tables_has_one_table(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "ROOT", str(tmp_path))
  common.write_results("t", [{"a": 1}], ["a"], title="T")
  md = (tmp_path / "docs" / "results" / "t.md").read_text()
  assert md.endswith("| a |\n|---|\n| 1 |\n") and "##" not in md
  assert "tables" not in json.loads((tmp_path / "benchmarks" / "results" / "t.json").read_text())
