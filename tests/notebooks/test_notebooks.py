"""The notebooks run top to bottom (on small slices) with a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {
        "forecast_backtest.ipynb", "autoscaling_backtest.ipynb"
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, traces_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGECAST_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("SURGECAST_TRACES", str(traces_dir))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    # every notebook shows a results table (a DataFrame's HTML) and a plot
    assert any("text/html" in o.get("data", {}) for o in outputs), "no table rendered"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure rendered"
