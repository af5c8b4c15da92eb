"""The walk-through notebook runs top to bottom against the real data and the committed bundle."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "cxr_walkthrough.ipynb"


def test_walkthrough_notebook_executes():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "patients in both train and validation: 0" in outputs
    assert "auc" in outputs and "confusion at threshold" in outputs
