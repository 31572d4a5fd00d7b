"""End to end: a reader types a wrong softmax into the exercise notebook and runs it in a real kernel."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from utils.notebook import ROOT

WRONG = '''def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    e = torch.exp(x)                     # no max subtracted
    return e / e.sum(dim=dim, keepdim=True)
'''


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(ROOT / "exercises" / "foundations" / "softmax.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax("))
    cell.source = WRONG
    # run up to and including the softmax check cell
    stop = next(i for i, c in enumerate(nb.cells) if c.source.strip() == 'check("softmax", softmax)')
    nb.cells = nb.cells[: stop + 1]
    folder = tmp_path_factory.mktemp("reader")
    client = NotebookClient(nb, timeout=120, allow_errors=True, resources={"metadata": {"path": str(folder)}})
    client.execute(env={"HWLLM_PROGRESS": str(folder / "progress.json")})
    return nb.cells[stop]


def test_the_report_names_the_mistake_on_one_screen(executed):
    html = next(o["data"]["text/html"] for o in executed.outputs if o.get("output_type") == "display_data")
    assert "diagnosis" in html and "overflows" in html and "Subtract the max" in html
    text = next(o["data"]["text/plain"] for o in executed.outputs if o.get("output_type") == "display_data")
    assert len(text.splitlines()) <= 15


def test_the_cell_fails_with_check_failed_and_a_short_traceback(executed):
    error = next(o for o in executed.outputs if o.get("output_type") == "error")
    assert error["ename"] == "CheckFailed"
    assert "overflows" in error["evalue"]
    assert len(error["traceback"]) == 1 and "utils" not in error["traceback"][0]
