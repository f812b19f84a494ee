"""examples/quickstart.ipynb, run by nbclient in a real IPython kernel
against the test server (named by RWP_SERVER, which the notebook reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from _cluster import Cluster

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def read_notebook() -> Any:
    return nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]


def tagged(notebook: Any, tag: str) -> Any:
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell


def test_the_notebook_is_committed_without_outputs() -> None:
    notebook = read_notebook()
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert 'os.environ.get("RWP_SERVER", "localhost:50051")' in code[0].source, "the documented default"


def test_the_quickstart_notebook_runs_against_a_live_server(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RWP_SERVER", cluster.url)
    monkeypatch.delenv("RWP_TOKEN", raising=False)
    notebook = read_notebook()
    # Runs every cell in order in a fresh kernel (this interpreter's), in
    # tmp_path; a cell that raises fails the test with its traceback.
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    # The progress bar: one display, updated in place to the job's end.
    (display,) = [o for o in tagged(notebook, "progress").outputs if o.output_type == "display_data"]
    html = display.data["text/html"]
    assert '<progress value="14" max="14"' in html and "succeeded" in html, html
    assert "14/14" in display.data["text/plain"]

    printed = "".join(o.get("text", "") for o in tagged(notebook, "metrics").outputs)
    assert printed.count("update ") == 14 and "epoch 2: test loss" in printed, printed

    export = tmp_path / "quickstart.safetensors"
    assert export.stat().st_size > 0
    printed = "".join(o.get("text", "") for o in tagged(notebook, "export").outputs)
    assert f"step 14: {export.stat().st_size} bytes" in printed and "weights.conv1.weight" in printed, printed
