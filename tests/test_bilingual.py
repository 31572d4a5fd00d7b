"""One source, two languages: the Chinese sibling cells, their fingerprints, and the notebooks and checks built
from them (utils/bilingual.py, utils/notebook.py)."""

import re

import nbformat
import pytest
from test_notebook import tiny_book  # noqa: F401  (the fixture)

from utils import bilingual
from utils import notebook as gen

CJK = re.compile(r"[\u4e00-\u9fff]")


def _source(book):
    return book / "source" / "part" / "double.ipynb"


def _translate_all(book, edit=None):
    """Give every English prose cell of the tiny chapter a Chinese sibling, through export and import."""
    path = _source(book)
    nb = nbformat.read(path, as_version=4)
    text = bilingual.export(nb)
    blocks = text.split("----- zh -----\n")
    filled = blocks[0] + "".join(f"----- zh -----\n中文第 {i} 段 $y = 2x$\n" + b for i, b in enumerate(blocks[1:]))
    if edit:
        filled = edit(filled)
    assert bilingual.import_(nb, filled) == len(bilingual.pairs(nb))
    nbformat.write(nb, path)
    return nb


def test_missing_translations_are_listed_until_every_prose_cell_has_one(tiny_book):  # noqa: F811
    nb = nbformat.read(_source(tiny_book), as_version=4)
    n = len(bilingual.pairs(nb))
    assert n >= 5 and [s for s, _, _ in bilingual.problems(nb)] == ["missing"] * n
    assert len(gen.translation_problems(tiny_book)) >= n
    nb = _translate_all(tiny_book)
    assert bilingual.problems(nb) == []
    assert not any("double.ipynb" in p for p in gen.translation_problems(tiny_book))


def test_a_translation_goes_stale_when_its_english_changes(tiny_book):  # noqa: F811
    nb = _translate_all(tiny_book)
    en = next(c for c in nb.cells if bilingual.is_prose(c) and "Long derivation" in c.source)
    en.source = en.source.replace("Long derivation", "A longer derivation")
    assert bilingual.problems(nb) == [("stale", en.id, en.source.strip().splitlines()[0][:70])]
    again = bilingual.export(nb)                  # the export shows the new English and the old Chinese
    assert "A longer derivation" in again and f"en:{bilingual.fingerprint(en.source)}" in again
    bilingual.import_(nb, again)                  # importing it as it is re-fingerprints: the translator's call
    assert bilingual.problems(nb) == []


def test_whitespace_at_line_ends_does_not_make_a_translation_stale():
    assert bilingual.fingerprint("a  \nb\n\n") == bilingual.fingerprint("a\nb")
    assert bilingual.fingerprint("a b") != bilingual.fingerprint("a  b")


def test_an_orphaned_chinese_cell_is_reported(tiny_book):  # noqa: F811
    nb = _translate_all(tiny_book)
    i = next(i for i, c in enumerate(nb.cells) if bilingual.is_translation(c))
    stray = nbformat.v4.new_markdown_cell("孤立的中文", metadata={"hwllm": {"lang": "zh", "en": "0" * 12}})
    nb.cells.insert(i + 1, stray)
    assert [s for s, _, _ in bilingual.problems(nb)] == ["orphan"]


def test_each_language_gets_its_own_chapter_exercises_and_solutions(tiny_book):  # noqa: F811
    _translate_all(tiny_book)
    gen.generate(tiny_book)
    for folder in gen.READER_FOLDERS:
        en = nbformat.read(tiny_book / folder / "part" / "double.ipynb", as_version=4)
        zh = nbformat.read(tiny_book / "zh" / folder / "part" / "double.ipynb", as_version=4)
        en_md = [c.source for c in en.cells if c.cell_type == "markdown"]
        zh_md = [c.source for c in zh.cells if c.cell_type == "markdown"]
        assert not any(CJK.search(t) and "中文第" in t for t in en_md), folder
        assert any("中文第" in t for t in zh_md) and not any("Long derivation" in t for t in zh_md), folder
        assert [c.source for c in en.cells[1:] if c.cell_type == "code"] == \
               [c.source for c in zh.cells[1:] if c.cell_type == "code"], f"{folder}: code cells differ"
        assert 'utils.set_language("zh")' in zh.cells[0].source and "set_language" not in en.cells[0].source
        assert not any(bilingual.KEY in c.metadata for c in en.cells + zh.cells)
    exercise = nbformat.read(tiny_book / "zh" / "exercises" / "part" / "double.ipynb", as_version=4)
    text = "\n".join(c.source for c in exercise.cells)
    assert "练习本" in text and "zh/solutions/part/double.ipynb" in text and "raise NotImplementedError" in text
    assert gen.stale(tiny_book) == []


def test_the_chinese_chapter_keeps_the_english_cells_ids_and_tags(tiny_book):  # noqa: F811
    nb = _translate_all(tiny_book)
    zh = bilingual.in_language(nb, "zh")
    en = bilingual.in_language(nb, "en")
    assert [c.id for c in zh.cells] == [c.id for c in en.cells]
    assert [c.metadata.get("tags") for c in zh.cells] == [c.metadata.get("tags") for c in en.cells]


def test_export_and_import_reject_a_broken_file(tiny_book):  # noqa: F811
    nb = nbformat.read(_source(tiny_book), as_version=4)
    head = bilingual.export(nb).split("\n", 1)[0]
    with pytest.raises(ValueError):
        bilingual.import_(nb, head + "\nEnglish only, no zh line\n")
    with pytest.raises(KeyError):
        bilingual.set_translation(nb, "no-such-cell", "中文")


@pytest.mark.parametrize("path", gen.chapters(), ids=lambda p: p.stem)
def test_every_chapter_of_the_book_is_translated_and_current(path):
    problems = bilingual.problems(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}: " + "; ".join(f"{s} {i} ({h})" for s, i, h in problems[:5])


def test_the_chinese_intro_translates_the_current_english_intro():
    assert gen.intro_problem() is None, gen.intro_problem()


def test_line_breaks_inside_a_chinese_paragraph_are_joined_but_not_in_code_or_math():
    text = ("第一行\n第二行。\n\n- 列表\n- 项\n```python\n# 中文\n# 注释\n```\n"
            "$$\n\\text{中}\n\\text{文}\n$$\n英文 word\n继续")
    out = bilingual.join_cjk_lines(text)
    assert out.startswith("第一行第二行。\n\n- 列表\n- 项\n")         # a list item stays a line of its own
    assert "# 中文\n# 注释" in out and "\\text{中}\n\\text{文}" in out and "word\n继续" in out
    assert bilingual.join_cjk_lines("## 标题\n正文\n接着") == "## 标题\n正文接着"
