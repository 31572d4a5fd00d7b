"""The exercises do not give the answer away.

- An exercise notebook shows no line of a solution region anywhere (code, prose, hints, cheat sheet): the
  generator replaces the cheat sheet by a note, drops cells tagged `solution-only`, and `leaks` finds any other
  cell that repeats solution code (the rule for what counts as a solution line is `solution_lines`).
- `# BEGIN SOLUTION` / `# END SOLUTION` appear in no generated notebook, and `website_chapter` (the chapter as
  the website shows it) has no marker and collapses every exercise cell behind a "Show solution" toggle.
- Stub docstrings state the contract (shapes, arguments, the equation label), not the formula.
- A failed check's report shows the first rung of the hint ladder only; `hint(name)` climbs one rung per call.
"""

from __future__ import annotations

import ast
import html
import re
import symtable

import nbformat
import pytest
import torch

from utils import notebook as gen
from utils.grader import Case, Exercise, Mistake, run
from utils.grader.registry import EXERCISES, list_exercises
from utils.notebook import BEGIN, END, ROOT

CHAPTERS = [p.relative_to(ROOT / "source").as_posix() for p in gen.chapters()]


def _chapter(rel: str):
    return gen.normalise_chapter(nbformat.read(ROOT / "source" / rel, as_version=4), rel)


# --------------------------------------------------------------------------- no solution line in an exercise notebook

@pytest.mark.parametrize("rel", CHAPTERS)
def test_no_solution_line_appears_in_the_exercise_notebook(rel):
    found = gen.leaks(_chapter(rel), rel)
    assert not found, (f"exercises/{rel} shows solution code; mark the cell `solution-only`, rewrite it with "
                       "PyTorch built-ins, or state the hint as a formula:\n"
                       + "\n".join(f"  cell {cid} [{where}]: {line}" for cid, where, line in found))


def _fenced_blocks(cells) -> list[str]:
    """The code of some cells: each code cell, and each fenced block of the markdown cells."""
    blocks = []
    for c in cells:
        if c.cell_type == "code":
            blocks.append(c.source)
            continue
        block = None
        for line in c.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                block = [] if block is None else blocks.append("\n".join(block))
            elif block is not None:
                block.append(line)
    return [b for b in blocks if len(gen._squash(b)) >= gen.MIN_CHARS]


@pytest.mark.parametrize("language", gen.LANGUAGES)
@pytest.mark.parametrize("rel", CHAPTERS)
def test_the_cheat_sheet_is_left_out_of_the_exercise_notebook_and_closes_the_solution_sheet(rel, language):
    chapter = gen.chapter_notebook(_chapter(rel), rel, language=language)
    _, sheet, _ = gen.split_cheat_sheet(chapter.cells)
    assert sheet, f"{rel}: no cheat sheet ({language})"
    code = _fenced_blocks(sheet)
    assert code, f"{rel}: the cheat sheet has no code"
    exercise = gen._squash("\n".join(c.source for c in gen.exercise_notebook(chapter, rel, language=language).cells))
    shown = [block for block in code + [c.source for c in sheet] if gen._squash(block) in exercise]
    assert not shown, f"{gen.PREFIX[language]}exercises/{rel} still shows its cheat sheet: {shown[0][:200]}"
    assert ("cheatsheet" in exercise.lower() or "速查表" in exercise) and \
        f"{gen.PREFIX[language]}solutions/{rel}" in exercise
    solutions = gen._squash("\n".join(c.source for c in gen.solution_notebook(chapter, rel, language=language).cells))
    assert all(gen._squash(block) in solutions for block in code)


def test_the_rule_counts_computations_and_skips_plumbing():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"""\
class Norm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        {BEGIN}
        self.weight = nn.Parameter(torch.ones(d))
        {END}

    def forward(self, x):
        {BEGIN}
        super().__init__()
        B, T, _ = x.shape
        if self.mode == "rms":
            pass
        ms = x.pow(2).mean(-1, keepdim=True)              # a comment is not part of the line
        return x * torch.rsqrt(ms + self.eps) * self.weight
        self.eps = eps
        return output
        {END}
""")]
    lines = {line for line, _ in gen.solution_lines(nb)}
    assert lines == {"self.weight = nn.Parameter(torch.ones(d))",
                     "ms = x.pow(2).mean(-1, keepdim=True)  # a comment is not part of the line",
                     "return x * torch.rsqrt(ms + self.eps) * self.weight"}


def test_leaks_finds_a_cell_that_repeats_the_solution_and_solution_only_cells_are_dropped():
    chapter = nbformat.v4.new_notebook()
    chapter.cells = [
        nbformat.v4.new_code_cell("# setup", id="setup"),
        nbformat.v4.new_markdown_cell("# Double", id="title"),
        nbformat.v4.new_code_cell(f"def double(x):\n    {BEGIN}\n    return torch.mul(x, 2)\n    {END}", id="ex"),
        nbformat.v4.new_markdown_cell("## Cost", id="cost"),
        nbformat.v4.new_code_cell("def by_hand(x):\n    return torch.mul(x,  2)   # same code, other spacing",
                                  id="copy"),
        nbformat.v4.new_code_cell("def hidden(x):\n    return torch.mul(x, 2)", id="hidden",
                                  metadata={"tags": [gen.SOLUTION_ONLY_TAG]}),
        nbformat.v4.new_markdown_cell("<details><summary>Hint 2</summary>\n\n`return torch.mul(x, 2)`</details>",
                                      id="hint"),
    ]
    found = gen.leaks(chapter, "part/double.ipynb")
    assert [(cid, where) for cid, where, _ in found] == [("copy", "Cost"), ("hint", "Cost (hint)")]
    assert all(line == "return torch.mul(x, 2)" for _, _, line in found)
    sources = [c.source for c in gen.exercise_notebook(chapter, "part/double.ipynb").cells]
    assert not any("def hidden" in s for s in sources)


def test_the_cheat_sheet_ends_at_the_next_heading_of_its_level():
    md = nbformat.v4.new_markdown_cell
    cells = [md("## Cost\n\ntext", id="a"),
             md("## Cheat sheet\n\n```python\n# a comment, not a heading\nx = f(y)\n```\n\n### Formulas\n\n$$a$$",
                id="b"),
             nbformat.v4.new_code_cell("print(f(y))", id="c"),
             md("more sheet\n\n## Sources\n\n- a paper", id="d"),
             md("## After", id="e")]
    before, sheet, after = gen.split_cheat_sheet(cells)
    assert [c.id for c in before] == ["a"]
    assert [c.id for c in sheet] == ["b-sheet", "c", "d-sheet"] and sheet[-1].source == "more sheet"
    assert [c.id for c in after] == ["d-after", "e"] and after[0].source.startswith("## Sources")
    cells[1].source = "Some text first.\n\n# Cheat sheet\n\ncode"
    before, sheet, after = gen.split_cheat_sheet(cells)
    assert before[-1].source == "Some text first." and sheet[0].source == "# Cheat sheet\n\ncode"
    assert after == []      # a level-1 cheat sheet runs to the end


def _names(source: str) -> tuple[set, set]:
    """(names the cell binds at the top level, global names it reads), or two empty sets for a cell that is
    not plain Python (a magic)."""
    try:
        top = symtable.symtable(source, "<cell>", "exec")
    except SyntaxError:
        return set(), set()
    binds = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    reads, tables = set(), [top]
    while tables:
        table = tables.pop()
        reads |= {s.get_name() for s in table.get_symbols()
                  if s.is_referenced() and (table is top or s.is_global())}
        tables += table.get_children()
    return binds, reads - binds


def _dangling(chapter) -> list[str]:
    """Names that a cell of the exercise notebook reads and only a dropped cell or a solution region bound."""
    _, sheet, _ = gen.split_cheat_sheet(chapter.cells)
    in_sheet = {id(c) for c in sheet}
    bound_by_chapter, bound_by_exercise, missing = set(), set(), []
    for cell in chapter.cells[1:]:
        if cell.cell_type != "code":
            continue
        dropped = gen.SOLUTION_ONLY_TAG in cell.metadata.get("tags", []) or id(cell) in in_sheet
        exercise = None if dropped else gen.stub_source(cell.source)
        if exercise is not None:
            binds, reads = _names(exercise)
            lost = (reads & bound_by_chapter) - bound_by_exercise
            missing += [f"cell {cell.id} reads {name}" for name in sorted(lost)]
            bound_by_exercise |= binds
        bound_by_chapter |= _names(gen.solution_source(cell.source))[0]
    return missing


@pytest.mark.parametrize("rel", CHAPTERS)
def test_what_the_exercise_notebook_leaves_out_is_not_needed_later(rel):
    """A `solution-only` cell is dropped and a top-level solution region becomes a comment: no later cell of the
    exercise notebook may read a name that only those supplied (the notebook must run with every stub in place)."""
    missing = _dangling(_chapter(rel))
    assert not missing, (f"exercises/{rel} would fail with a NameError: a later cell reads what only a "
                         "`solution-only` cell or a solution region defines:\n  " + "\n  ".join(missing))


def test_a_name_only_a_dropped_cell_binds_is_caught():
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [code("# setup", id="s"), code("import torch\nx = torch.ones(2)", id="imports"),
                code("def helper(t):\n    return t * 2", id="only", metadata={"tags": [gen.SOLUTION_ONLY_TAG]}),
                code(f"{BEGIN}\ntable = helper(x)\n{END}", id="region"),
                code("def plot():\n    return helper(x) + table\n\nprint(x)", id="later"),
                code("helper = print\nhelper(x)", id="rebinds")]
    assert _dangling(nb) == ["cell later reads helper", "cell later reads table"]


# --------------------------------------------------------------------------- no marker anywhere; the website's toggles

def test_no_generated_notebook_holds_a_marker():
    for path, text in gen.outputs().items():
        if path.parts[-3] in ("exercises", "solutions"):
            assert BEGIN not in text and END not in text, path
    for folder in ("exercises", "solutions"):
        for path in (ROOT / folder).glob("*/*.ipynb"):
            text = path.read_text(encoding="utf-8")
            assert BEGIN not in text and END not in text, path


@pytest.mark.parametrize("rel", CHAPTERS)
def test_website_chapter_has_no_marker_and_collapses_every_exercise_cell(rel):
    chapter = _chapter(rel)
    page = gen.website_chapter(chapter)
    assert BEGIN not in nbformat.writes(page) and END not in nbformat.writes(page)
    assert len(page.cells) == len(chapter.cells)
    exercise_cells = 0
    for before, after in zip(chapter.cells, page.cells):
        assert after.id == before.id
        if gen.is_exercise_cell(before):
            exercise_cells += 1
            assert "hide-input" in after.metadata["tags"]
            assert after.metadata["mystnb"] == {"code_prompt_show": "Show solution",
                                                "code_prompt_hide": "Hide solution"}
            assert after.source == gen.solution_source(before.source)
        elif gen.SOLUTION_ONLY_TAG not in before.metadata.get("tags", []):
            assert after == before
    assert exercise_cells >= 1


def test_website_chapter_keeps_outputs_and_speaks_the_page_language():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"def f(x):\n    {BEGIN}\n    return x\n    {END}", metadata={"tags": ["a"]})
    cell.outputs = [nbformat.v4.new_output("stream", text="out")]
    only = nbformat.v4.new_code_cell("print(1)", metadata={"tags": [gen.SOLUTION_ONLY_TAG]})
    nb.cells = [cell, only]
    page = gen.website_chapter(nb, language="zh")
    assert page.cells[0].outputs == cell.outputs and page.cells[0].source == "def f(x):\n    return x"
    assert page.cells[0].metadata["tags"] == ["a", "hide-input"]
    assert page.cells[0].metadata["mystnb"]["code_prompt_show"] == gen.SOLUTION_PROMPTS["zh"][0]
    assert "hide-input" in page.cells[1].metadata["tags"]
    assert BEGIN in nb.cells[0].source           # the input notebook is not modified
    assert gen.website_chapter(page, language="zh") == page     # idempotent


# --------------------------------------------------------------------------- stub docstrings state the contract

# A docstring states the formula when it repeats a solution line, calls a math function, or writes arithmetic
# (`a * b`, `x / y`, `e^x`, `T**2`, `x - m` with spaces, `2i+1`). Hyphenated words (cross-entropy) and shapes
# like `(B, T, d)` are not arithmetic; the equation label, e.g. "eq. (sm-stable)", is how a docstring points
# at the formula.
MATH_CALL = re.compile(r"\b(exp|expm1|log|log1p|log2|sqrt|rsqrt|sum|mean|var|std|max|amax|min|amin|softmax|"
                       r"log_softmax|logsumexp|sigmoid|tanh|erf|Phi|KL|cos|sin|clamp|where|matmul|einsum|cumsum|"
                       r"pow|abs)\s*\(")
ARITHMETIC = re.compile(r"[\w)\]]\s*(?:\*\*|[*/@^])\s*[\w(\[-]|[\w)\]] [-+] [\w(\[]|\w\+\w")


def formula_in(docstring: str, lines) -> list[str]:
    """What in `docstring` states the solution: math calls, arithmetic, solution lines."""
    return ([m.group(0) for m in MATH_CALL.finditer(docstring)] + [m.group(0) for m in ARITHMETIC.finditer(docstring)]
            + [line for line, normal in lines if normal in gen._squash(docstring)])


def test_the_formula_rule():
    assert formula_in("Softmax along `dim`, eq. (sm-stable): exp(x - max) / sum(...)", [])
    assert formula_in("x * sigmoid(x), eq. (act-silu).", []) and formula_in("T**2 * KL(p || q)", [])
    assert formula_in("2 * b * s * L bytes", []) and formula_in("distances j - i", [])
    assert not formula_in("Mean cross-entropy over the rows whose target is not ignore_index, eq. (ce-def).", [])
    assert not formula_in("The (max_len, d_model) float32 table of eq. (pe-sin); returns closure() if given.", [])
    assert formula_in("It returns x.sum()", [("return x.sum()", "returnx.sum()")])


@pytest.mark.parametrize("rel", CHAPTERS)
def test_stub_docstrings_state_the_contract(rel):
    chapter = _chapter(rel)
    lines = gen.solution_lines(chapter)
    bad = []
    for cell in gen.exercise_notebook(chapter, rel).cells:
        if cell.cell_type != "code" or gen.STUB not in cell.source:
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node) or ""
                if formula_in(doc, lines):
                    bad.append(f"{node.name}: {doc!r} states {formula_in(doc, lines)}")
    assert not bad, (f"exercises/{rel}: a stub docstring states the formula; state the contract (shapes, dtypes, "
                     "arguments) and cite the equation label instead:\n  " + "\n  ".join(bad))


# --------------------------------------------------------------------------- the hint ladder

def test_every_exercise_has_a_ladder_that_starts_with_a_nudge():
    """At least two rungs; the first (the one a failed check shows) cites its equation and holds no solution line."""
    lines = {}
    for name in list_exercises():
        ex = EXERCISES[name]
        if ex.chapter not in lines:
            lines[ex.chapter] = gen.solution_lines(_chapter(f"{ex.chapter}.ipynb"))
        ladder = ex.ladder()
        assert len(ladder) >= 2, f"{name}: a ladder of {len(ladder)} rung(s); declare hints=(nudge, ..., formula)"
        assert re.search(r"\beqs?\. ", ladder[0]), f"{name}: the first rung cites no equation: {ladder[0]!r}"
        shown = [line for line, normal in lines[ex.chapter] if normal in gen._squash(ladder[0])]
        assert not shown, f"{name}: the first rung gives a line of the solution away: {shown}"


LADDER = ("a nudge: subtract something first (eq. t-stable)", "which axis? the one named by `dim`",
          "RUNG3 s = exp(x - m) / sum(exp(x - m))")


def _exercise(name, **hints):
    return Exercise(name=name, chapter="foundations/softmax", signature=f"{name}(x)",
                    oracle=lambda x: torch.softmax(x, -1),
                    cases=lambda: [Case(lambda: ((torch.linspace(-2, 2, 6).reshape(2, 3),), {}))],
                    mistakes=[Mistake("exp", lambda x: torch.exp(x), "you forgot to normalise")], **hints)


@pytest.fixture
def ladder(monkeypatch):
    list_exercises()                                     # the registry is loaded before our test exercises join it
    from utils import hints
    monkeypatch.setattr(hints, "_shown", {})
    monkeypatch.setitem(EXERCISES, "t_ladder", _exercise("t_ladder", hints=LADDER))
    monkeypatch.setitem(EXERCISES, "t_single", _exercise("t_single", hint="RUNG-ONLY the whole formula"))
    monkeypatch.setitem(EXERCISES, "t_none", _exercise("t_none"))
    return hints


def test_the_report_shows_the_first_rung_only_and_how_to_get_the_next(ladder):
    report = run("t_ladder", lambda x: torch.exp(x))
    assert not report.passed
    for shown in (str(report), html.unescape(report._repr_html_())):
        assert LADDER[0] in shown and LADDER[1] not in shown and "RUNG3" not in shown
        assert "hint 1 of 3" in shown and 'utils.hint("t_ladder")' in shown.split("more:")[-1]
    assert "RUNG3" not in repr(vars(report))        # not even stored in the report


def test_a_single_string_hint_still_works(ladder):
    assert EXERCISES["t_single"].ladder() == ("RUNG-ONLY the whole formula",)
    text = str(run("t_single", lambda x: torch.exp(x)))
    assert [line for line in text.splitlines() if "hint" in line] == ["  hint: RUNG-ONLY the whole formula"]
    assert "hint" not in str(run("t_none", lambda x: torch.exp(x))).split("diagnosis")[-1]


def test_hint_climbs_one_rung_per_call_and_can_jump(ladder, capsys):
    from utils import hint

    hint("t_ladder")
    first = capsys.readouterr().out
    assert LADDER[0] in first and LADDER[1] in first and "RUNG3" not in first and 'utils.hint("t_ladder")' in first
    hint("t_ladder")
    second = capsys.readouterr().out
    assert "3 of 3: RUNG3" in second and "last hint" in second
    hint("t_ladder")
    assert "RUNG3" in capsys.readouterr().out        # past the top it keeps showing the whole ladder
    ladder._shown.clear()
    hint("t_ladder", 1)
    assert "RUNG" not in capsys.readouterr().out
    hint("t_ladder")
    assert "2 of 3" in capsys.readouterr().out
    hint("t_single")
    assert "1 of 1: RUNG-ONLY" in capsys.readouterr().out
    hint("t_none")
    assert "no hints" in capsys.readouterr().out
    with pytest.raises(ValueError, match="from 1 to 3"):
        hint("t_ladder", 4)
    with pytest.raises(KeyError, match="t_ladder"):
        hint("t_ladderr")


def test_hints_render_as_html(ladder):
    page = ladder.hints_for("t_ladder", 2)._repr_html_()
    assert "<code>dim</code>" in page and "RUNG3" not in page and "hwllm-hints" in page
