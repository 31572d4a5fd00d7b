"""Every chapter follows the anatomy of DESIGN.md, so readers find the same things in the same places."""

from __future__ import annotations

import re

import nbformat
import pytest

from utils.grader import EXERCISES, list_exercises
from utils.notebook import ROOT, chapters, has_solution, is_check_cell

CHAPTERS = [p.relative_to(ROOT / "source").with_suffix("").as_posix() for p in chapters()]
SECTIONS = ("Pitfalls", "Interview follow-ups", "Cost", "Cheat sheet")


def _notebook(chapter):
    return nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)


def _markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_title_prompt_goals_and_time(chapter):
    first = next(c for c in _notebook(chapter).cells if c.cell_type == "markdown").source
    assert first.startswith("# "), "the first markdown cell opens with the title"
    assert ("面试原题" in first or "常见问法" in first) and re.search(r"[\u4e00-\u9fff]", first), \
        "the interview prompt in Chinese (面试原题 if quoted from interview reports, else 常见问法)"
    assert "**Time**" in first and "**You will be able to**" in first


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_sections_of_the_anatomy(chapter):
    text = _markdown(_notebook(chapter))
    headings = re.findall(r"^##+ (.+)$", text, flags=re.M)
    for section in SECTIONS:
        assert any(h.startswith(section) for h in headings), f"{chapter}: no '{section}' section"
    assert any(h.startswith(("Intuition", "Derivation")) for h in headings)
    assert re.search(r"\$\$[ \t]*\([\w:-]+\)", text), f"{chapter}: no labelled equation `$$ ... $$ (label)`"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_exercise_has_statement_solution_hints_and_check(chapter):
    nb = _notebook(chapter)
    cells = nb.cells
    names = [n for n in list_exercises() if EXERCISES[n].chapter == chapter]
    assert names, f"{chapter}: no exercise registered for this chapter"
    statements = [c for c in cells if c.cell_type == "markdown" and "exercise" in c.metadata.get("tags", [])]
    assert len(statements) >= 1
    for name in names:
        check = [i for i, c in enumerate(cells) if is_check_cell(c) and c.source.strip() == f'check("{name}", {name})']
        assert len(check) == 1, f"{chapter}: one check cell `check(\"{name}\", {name})`"
        before = cells[: check[0]]
        solution = [c for c in before if c.cell_type == "code" and has_solution(c.source)
                    and re.search(rf"^(def|class) {name}\b", c.source, flags=re.M)]
        assert solution, f"{chapter}: the cell defining {name} has no marked solution before its check"
        hints = [c for c in before if c.cell_type == "markdown" and "<details>" in c.source]
        assert hints, f"{chapter}: no collapsed hints before the check of {name}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_committed_without_outputs(chapter):
    for c in _notebook(chapter).cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None


def test_equation_labels_are_unique_across_the_book():
    """Sphinx numbers equations per chapter but resolves {eq} labels across the book: a label defined in two
    chapters breaks the build (a warning, and the site build fails on warnings)."""
    where = {}
    for chapter in CHAPTERS:
        for c in _notebook(chapter).cells:
            if c.cell_type == "markdown" and c.metadata.get("hwllm", {}).get("lang") != "zh":
                for label in re.findall(r"\$\$\s*\(([^)\s]+)\)", c.source):
                    where.setdefault(label, set()).add(chapter)
    assert not {k: v for k, v in where.items() if len(v) > 1}


def test_every_chapter_is_in_the_table_of_contents():
    from utils.grader.registry import reading_order
    assert sorted(reading_order()) == sorted(CHAPTERS)


# --------------------------------------------------------------------------- the Chinese chapter

ZH_SECTIONS = ("常见错误", "面试追问", "速查")
CJK = re.compile(r"[\u4e00-\u9fff]")


def _zh(chapter):
    return nbformat.read(ROOT / "zh" / "chapters" / f"{chapter}.ipynb", as_version=4)


def _prose(text: str) -> str:
    """Markdown without math, code, links' targets and HTML tags: the words a reader reads."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$|```.*?```|`[^`]*`|\]\([^)]*\)|<[^>]+>|\{\w+\}", " ", text, flags=re.S)
    return text


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_chinese_chapter_has_the_same_anatomy(chapter):
    en, zh = _markdown(_notebook(chapter)), _markdown(_zh(chapter))
    heads_en = re.findall(r"^(#+) ", en, flags=re.M)
    heads_zh = re.findall(r"^(#+) ", zh, flags=re.M)
    assert heads_en == heads_zh, f"{chapter}: the Chinese headings are not the English ones' levels and number"
    zh_headings = re.findall(r"^##+ (.+)$", zh, flags=re.M)
    for section in ZH_SECTIONS:
        assert any(section in h for h in zh_headings), f"{chapter}: no '{section}' section in Chinese"
    labels = sorted(re.findall(r"\$\$[ \t]*\(([\w:-]+)\)", en))
    assert labels == sorted(re.findall(r"\$\$[ \t]*\(([\w:-]+)\)", zh)), f"{chapter}: equation labels differ"
    assert sorted(re.findall(r"\{eq\}`([^`]+)`", en)) == sorted(re.findall(r"\{eq\}`([^`]+)`", zh)), \
        f"{chapter}: equation references differ"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_chinese_chapter_is_written_in_chinese(chapter):
    words = _prose(_markdown(_zh(chapter)))
    cjk, latin = len(CJK.findall(words)), len(re.findall(r"[A-Za-z]", words))
    assert cjk >= 1500 and cjk / (cjk + latin) >= 0.5, f"{chapter}: {cjk} Chinese characters, {latin} Latin letters"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_interview_follow_ups_end_with_the_spoken_answer_and_the_chain(chapter):
    en, zh = _markdown(_notebook(chapter)), _markdown(_zh(chapter))
    assert re.search(r"^###+ Say it in 30 seconds", en, flags=re.M), f"{chapter}: no 'Say it in 30 seconds'"
    assert re.search(r"^###+ The follow-up chain", en, flags=re.M), f"{chapter}: no 'The follow-up chain'"
    assert re.search(r"^###+ 30 秒口述版", zh, flags=re.M), f"{chapter}: no '30 秒口述版'"
    assert re.search(r"^###+ 追问链", zh, flags=re.M), f"{chapter}: no '追问链'"
    chain = re.split(r"^###+ The follow-up chain", en, flags=re.M)[1]
    assert len(re.findall(r"^\d+\. \*\*", chain, flags=re.M)) >= 4, f"{chapter}: the chain has fewer than 4 steps"
