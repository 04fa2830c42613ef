"""Execute every notebook in ``notebooks/`` with nbclient, and check they are stored stripped.

The kernel is this interpreter: a kernelspec named ``bigquant-test`` whose argv is
``sys.executable`` is written to a temporary Jupyter data directory put first on
``JUPYTER_PATH``, so the notebooks run in the environment the tests run in (the venv
made by ``pip install -e .[test]``), whatever other ``python3`` kernels are installed.
Each notebook runs with its working directory in a fresh temporary directory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # three notebooks, one of them on a LocalCluster: `-m "not slow"` skips them

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "bigquant-test"
#: Seconds any one cell may take before the notebook fails.
CELL_TIMEOUT = 180


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory):
    """Install a kernelspec running ``sys.executable`` and put it first on JUPYTER_PATH."""
    data_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = data_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bigquant tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as mp:
        jupyter_path = [str(data_dir), os.environ.get("JUPYTER_PATH", "")]
        mp.setenv("JUPYTER_PATH", os.pathsep.join(jupyter_path))
        # a notebook's own figures go to the inline backend, whatever the test run uses
        mp.delenv("MPLBACKEND", raising=False)
        mp.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        # notebooks that generate big images size them by this: small for the tests
        mp.setenv("BIGQUANT_NOTEBOOK_SIDE", "2048")
        yield KERNEL_NAME


def test_there_are_notebooks():
    assert NOTEBOOK_DIR.joinpath("image_quantization.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has stored outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"


def _marked(path: Path) -> Any:
    """The notebook as a test parameter, marked ``distributed`` if it starts a Dask cluster."""
    source = path.read_text(encoding="utf-8")
    starts_cluster = "LocalCluster(" in source or "connect(" in source
    marks = [pytest.mark.distributed] if starts_cluster else []
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("path", [_marked(p) for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, kernel_name: str):
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable, end='')"))
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{path.name} drew no figure"
    # figures are shown once, by the inline backend, never again as a cell's result
    assert all(out.output_type == "display_data" for out in figures)
    # the kernel ran this interpreter
    assert nb.cells[-1].outputs[0]["text"] == sys.executable
