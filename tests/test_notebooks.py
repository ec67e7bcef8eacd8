"""The notebooks under notebooks/ run top to bottom (offline, CPU) and are committed without outputs.

Each notebook is copied into a temporary directory and executed there by nbclient, in an IPython
kernel started with this interpreter: a kernel spec written for ``sys.executable`` under a name of
its own, so never a system Python's ``python3`` kernel (the first cell run checks it). The kernel's
``tempfile`` outputs and IPython directory land under pytest's temporary directory. A failing cell
fails the test with that cell's source and traceback.
"""

import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600
KERNEL_NAME = "kcnn-test-python"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Run first in the kernel: the notebook must run on the interpreter the suite runs on.
CHECK_INTERPRETER = f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable"


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.cells and notebook.cells[0].cell_type == "markdown", "the first cell says what it shows"
    dirty = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; clear them "
                       "(e.g. `jupyter nbconvert --clear-output --inplace`) before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    work, scratch, jupyter = tmp_path / "work", tmp_path / "tmp", tmp_path / "jupyter"
    work.mkdir()
    scratch.mkdir()
    shutil.copy(path, work / path.name)
    # a kernel spec of this interpreter, found first (JUPYTER_PATH), under a name no other spec has
    write_kernel_spec(jupyter / "kernels" / KERNEL_NAME)  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    notebook = nbformat.read(work / path.name, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(CHECK_INTERPRETER))
    client = NotebookClient(notebook, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            resources={"metadata": {"path": str(work)}})
    env = {**os.environ, "TMPDIR": str(scratch), "IPYTHONDIR": str(tmp_path / "ipython")}
    start = time.perf_counter()
    failure = None
    try:
        client.execute(env=env)
    except CellExecutionError as error:
        failed = next((index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
                       and any(output.output_type == "error" for output in cell.get("outputs", []))), None)
        where = ("the interpreter check" if failed == 0 else "a cell" if failed is None
                 else f"cell {failed - 1} (counting from 0, markdown cells included)")
        failure = f"{path.name}: {where} failed:\n{ANSI.sub('', str(error))}"
    if failure:  # outside the except block: the report shows the cell's error once, without ANSI colours
        pytest.fail(failure, pytrace=False)
    print(f"{path.name}: {time.perf_counter() - start:.0f} s")
