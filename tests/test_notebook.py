"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel of this interpreter
and its model learns the digits."""

import json
import os
import re
import sys

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


def _python3_kernelspec(jupyter_path, env) -> None:
  """A `python3` kernelspec whose kernel is this interpreter (not whatever `python` is
  first on PATH), with `env` added to the kernel's environment."""
  spec_dir = jupyter_path / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (effcomp tests)", "language": "python", "env": env}))


def _text(output) -> str:
  if output.output_type == "stream":
    return output.text
  return output.get("data", {}).get("text/plain", "")


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == "python3"
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, cell.source[:60]


def test_quickstart_runs_and_reaches_high_accuracy(tmp_path, monkeypatch, data_dir):
  _python3_kernelspec(tmp_path / "jupyter", {"EFFCOMP_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu"})
  # Kernelspecs found on JUPYTER_PATH take precedence over the user's and the venv's.
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's workdir lands here
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
  client = NotebookClient(nb, kernel_name="python3", timeout=300,
                          resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
  client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

  assert _text(nb.cells[0].outputs[0]).strip() == sys.executable
  code_cells = [c for c in nb.cells if c.cell_type == "code"]
  images = [c for c in code_cells if any("image/png" in o.get("data", {}) for o in c.outputs)]
  assert len(images) == 2  # the curves and the grid of digits
  final = "".join(_text(o) for o in code_cells[-1].outputs)
  match = re.search(r"test accuracy: ([0-9.]+)", final)
  assert match, final
  assert float(match.group(1)) >= 0.8, final
