"""End to end: a reader types a wrong softmax into the exercise notebook and runs it in a real kernel, in
English and in the Chinese notebook (whose setup cell switches the grader to Chinese)."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from utils.notebook import ROOT

WRONG = '''def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    e = torch.exp(x)                     # no max subtracted
    return e / e.sum(dim=dim, keepdim=True)
'''


# What the report must say in each language: the label of the diagnosis, and the overflow named.
SAYS = {"en": ("diagnosis", "overflows", "Subtract the max"), "zh": ("诊断", "溢", "最大值")}


@pytest.fixture(scope="module", params=["en", "zh"])
def executed(request, tmp_path_factory):
    lang = request.param
    folder = "exercises" if lang == "en" else "zh/exercises"
    nb = nbformat.read(ROOT / folder / "foundations" / "softmax.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax("))
    cell.source = WRONG
    # run up to and including the softmax check cell
    stop = next(i for i, c in enumerate(nb.cells) if c.source.strip() == 'check("softmax", softmax)')
    nb.cells = nb.cells[: stop + 1]
    folder = tmp_path_factory.mktemp("reader")
    client = NotebookClient(nb, timeout=120, allow_errors=True, resources={"metadata": {"path": str(folder)}})
    client.execute(env={"HWLLM_PROGRESS": str(folder / "progress.json")})
    return lang, nb.cells[stop]


def test_the_report_names_the_mistake_on_one_screen(executed):
    lang, cell = executed
    html = next(o["data"]["text/html"] for o in cell.outputs if o.get("output_type") == "display_data")
    for words in SAYS[lang]:
        assert words in html, f"{words!r} not in the {lang} report:\n{html}"
    text = next(o["data"]["text/plain"] for o in cell.outputs if o.get("output_type") == "display_data")
    assert len(text.splitlines()) <= 15
    if lang == "zh":
        from utils.i18n import english_left
        assert not english_left("\n".join(text.splitlines()[2:])), text


def test_the_cell_fails_with_check_failed_and_a_short_traceback(executed):
    lang, cell = executed
    error = next(o for o in cell.outputs if o.get("output_type") == "error")
    assert error["ename"] == "CheckFailed"
    assert SAYS[lang][1] in error["evalue"]
    assert len(error["traceback"]) == 1 and "utils" not in error["traceback"][0]
