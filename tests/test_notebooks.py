"""The notebooks run headless with their small settings, and are stored without outputs.

Each notebook reads ``REPRODUCE_NOTEBOOK_SMALL=1`` in its parameters cell (tiny data, one epoch,
smoke options), so executing it checks the whole path it documents. The kernel is ``python3``;
jupyter_client runs a ``python`` kernel command with this interpreter (``sys.executable``), so the
kernel is the venv's. Notebook 3 starts two extra Python processes (pytest on the contract tests,
``python -m reproduce.table``): it is the slow tier.

Stored notebooks carry no outputs (small diffs, no stale results): clear them with
``python tests/test_notebooks.py notebooks/*.ipynb`` (:func:`strip_outputs`, with nbformat from the
dev extra; ``jupyter nbconvert`` is not installed by it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICK = ["01_quickstart.ipynb", "02_comet_masks.ipynb"]
SLOW = ["03_tables_and_new_method.ipynb"]


def strip_outputs(path: Path) -> None:
    """Remove outputs and execution counts from a stored notebook, in place."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def execute(name: str, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("REPRODUCE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' temporary folders land in the test's tmp dir
    monkeypatch.delenv("REPRODUCE_PLUGINS", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    executed = [c for c in nb.cells if c.cell_type == "code"]
    assert executed and all(c.execution_count is not None for c in executed)


@pytest.mark.parametrize("name", QUICK)
def test_notebook_runs_headless_with_small_settings(name, monkeypatch, tmp_path):
    execute(name, monkeypatch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_slow_notebook_runs_headless_with_small_settings(name, monkeypatch, tmp_path):
    execute(name, monkeypatch, tmp_path)


def test_the_kernel_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    assert argv[0] in ("python", "python3", sys.executable), f"kernel python3 runs {argv[0]}, not {sys.executable}"


@pytest.mark.parametrize("name", QUICK + SLOW)
def test_notebook_is_stored_without_outputs_and_with_a_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}: code cells {dirty} hold outputs; run `python tests/test_notebooks.py notebooks/*.ipynb`"
    parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "REPRODUCE_NOTEBOOK_SMALL" in parameters[0].source


def test_strip_outputs_clears_an_executed_notebook(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells[0].execution_count = 1
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    strip_outputs(path)
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.outputs == [] and cell.execution_count is None


def test_the_documented_strip_command_clears_outputs(tmp_path):
    """``python tests/test_notebooks.py <notebooks>``, as notebooks/README.md tells."""
    import subprocess

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells[0].execution_count = 1
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    readme = (NOTEBOOKS / "README.md").read_text()
    assert "python tests/test_notebooks.py notebooks/*.ipynb" in readme and "nbconvert --clear-output" not in readme
    subprocess.run([sys.executable, str(Path(__file__)), str(path)], check=True, capture_output=True, timeout=120)
    assert nbformat.read(path, as_version=4).cells[0].outputs == []


if __name__ == "__main__":  # python tests/test_notebooks.py notebooks/*.ipynb
    for name in sys.argv[1:]:
        strip_outputs(Path(name))
        print(f"cleared {name}")
