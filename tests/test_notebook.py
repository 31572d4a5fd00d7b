"""The generator: solution regions, exercise and solution notebooks, staleness, the setup cell, the intro map."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import nbformat
import pytest

from utils import notebook as gen
from utils.notebook import MarkerError, regions, solution_source, stub_source

B, E = gen.BEGIN, gen.END


def test_two_regions_in_one_cell():
    src = textwrap.dedent(f"""\
        def f(x):
            \"\"\"Doc.\"\"\"
            {B}
            return x + 1
            {E}

        def g(x):
            {B}
            y = x * 2
            return y
            {E}
        """)
    out = stub_source(src)
    assert out.count("raise NotImplementedError") == 2
    assert "x + 1" not in out and "x * 2" not in out
    assert '"""Doc."""' in out and "def g(x):" in out
    ns = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError):
        ns["f"](1)


def test_a_cell_that_is_all_solution_becomes_a_comment_and_still_runs():
    src = f"{B}\nanswer = 6 * 7\nprint(answer)\n{E}"
    out = stub_source(src)
    assert "answer" not in out and out.strip().startswith("#")
    exec(out, {})


def test_indentation_of_nested_regions_is_kept():
    src = textwrap.dedent(f"""\
        class Norm:
            def __init__(self, n):
                {B}
                self.n = n
                {E}

            def forward(self, x):
                if x is None:
                    {B}
                    return 0
                    {E}
                return x
        """)
    out = stub_source(src)
    lines = out.splitlines()
    assert lines[2] == "        " + gen.STUB
    assert "            " + gen.STUB in lines
    compile(out, "<cell>", "exec")


def test_markers_inside_strings_are_not_markers():
    src = textwrap.dedent(f'''\
        TEXT = """
        {B}
        """
        def f():
            s = "{B}"
            {B}
            return s
            {E}
        ''')
    assert len(regions(src)) == 1
    out = stub_source(src)
    assert f'    s = "{B}"' in out and out.count(B) == 2   # both string occurrences survive
    assert "return s" not in out


def test_unpaired_markers_are_errors():
    with pytest.raises(MarkerError, match="never closed"):
        regions(f"{B}\nx = 1\n")
    with pytest.raises(MarkerError, match="without"):
        regions(f"x = 1\n{E}\n")
    with pytest.raises(MarkerError, match="inside another"):
        regions(f"{B}\n{B}\n{E}\n{E}\n")


def test_solution_source_only_drops_the_marker_lines():
    src = f"def f(x):\n    {B}\n    return x\n    {E}\n"
    assert solution_source(src) == "def f(x):\n    return x"


def test_jupyter_markdown_turns_myst_labels_into_tags():
    md = "$$\na = b\n$$ (eq-a)\n\nBy {eq}`eq-a` and {doc}`the intro <../intro>`."
    out = gen.jupyter_markdown(md)
    assert "\\tag{eq-a}" in out and "(eq-a)" in out and "{eq}" not in out and "the intro" in out


# --------------------------------------------------------------------------- a tiny book in a temporary folder

CHAPTER = [
    ("markdown", "# Double\n\n> **面试原题**: 手写 double\n\nIntro prose.", []),
    ("code", "import torch\n\nfrom utils import check", []),
    ("markdown", "Long derivation $$x$$ (d-eq)", []),
    ("markdown", "## Exercise 1: `double`", ["exercise"]),
    ("code", f"def double(x):\n    \"\"\"Eq. (d-eq).\"\"\"\n    {B}\n    return 2 * x\n    {E}", []),
    ("markdown", "<details><summary>Hint 1</summary>multiply</details>", []),
    ("code", 'check("double", double)', []),
    ("code", "print(torch.ones(2) * 2)", []),
    ("code", "def timed_double(x):\n    return 2 * x", ["solution-only"]),
    ("markdown", "## Cheat sheet\n\n$$y = 2x$$\n\n```python\ndef double(x):\n    return x + x  # cheat\n```", []),
    ("markdown", "## Sources\n\n- The doubling paper", []),
]


@pytest.fixture
def tiny_book(tmp_path):
    root = tmp_path / "book"
    (root / "source" / "part").mkdir(parents=True)
    shutil.copy(gen.ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n  - caption: 'Part 1: part'\n"
                                   "    chapters:\n      - file: chapters/part/double\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [(nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(
        src, metadata={"tags": tags} if tags else {}) for kind, src, tags in CHAPTER]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="stale output")]
    nbformat.write(nb, root / "source" / "part" / "double.ipynb")
    return root


def test_generate_then_nothing_is_stale(tiny_book):
    assert gen.stale(tiny_book)
    written = gen.generate(tiny_book)
    assert {p.relative_to(tiny_book).as_posix() for p in written} == {
        "source/part/double.ipynb", "utils/book_order.py", "zh/_config.yml", "zh/_toc.yml",
        *(f"{lang}{folder}/part/double.ipynb" for lang in ("", "zh/") for folder in ("chapters", "exercises",
                                                                                     "solutions"))}
    assert gen.stale(tiny_book) == []
    assert gen.generate(tiny_book) == []     # idempotent


def test_editing_a_chapter_makes_its_copies_stale(tiny_book):
    gen.generate(tiny_book)
    path = tiny_book / "source" / "part" / "double.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[5].source = nb.cells[5].source.replace("2 * x", "x + x")
    nbformat.write(nb, path)
    stale = {p.relative_to(tiny_book).as_posix() for p in gen.stale(tiny_book)}
    assert "solutions/part/double.ipynb" in stale


def test_an_orphaned_generated_notebook_is_stale_and_removed(tiny_book):
    gen.generate(tiny_book)
    orphan = tiny_book / "exercises" / "part" / "gone.ipynb"
    shutil.copy(tiny_book / "exercises" / "part" / "double.ipynb", orphan)
    assert orphan in gen.stale(tiny_book)
    gen.generate(tiny_book)
    assert not orphan.exists()


def test_exercise_notebook_keeps_the_narrative_and_stubs_the_solution(tiny_book):
    gen.generate(tiny_book)
    nb = nbformat.read(tiny_book / "exercises" / "part" / "double.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "setup" in nb.cells[0].metadata["tags"] and "google.colab" in nb.cells[0].source
    assert "Exercise notebook" in nb.cells[1].source
    assert "Long derivation" in text and "Hint 1" in text and 'check("double", double)' in text
    assert "return 2 * x" not in text and "raise NotImplementedError" in text and '"""Eq. (d-eq)."""' in text
    assert "timed_double" not in text                                   # the solution-only cell is left out
    assert "return x + x" not in text and "## Cheat sheet" in text and "solutions/part/double.ipynb" in text
    assert nb.cells[-1].source == "## Sources\n\n- The doubling paper"  # what follows the cheat sheet stays
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
    assert "\\tag{d-eq}" in text


def test_solution_sheet_is_compact(tiny_book):
    gen.generate(tiny_book)
    nb = nbformat.read(tiny_book / "solutions" / "part" / "double.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "return 2 * x" in text and B not in text and 'check("double", double)' in text
    assert "## Exercise 1" in text and "# Double" in text
    assert "Long derivation" not in text and "Hint 1" not in text and "print(torch.ones" not in text
    assert nb.cells[-1].source.startswith("## Cheat sheet") and "return x + x  # cheat" in text
    assert "timed_double" not in text and "doubling paper" not in text


def test_the_chapter_itself_gets_the_setup_cell_and_loses_its_outputs(tiny_book):
    gen.generate(tiny_book)
    nb = nbformat.read(tiny_book / "chapters" / "part" / "double.ipynb", as_version=4)
    assert nb.cells[0].metadata["tags"] == ["setup", "remove-cell"]
    assert sum("google.colab" in c.source for c in nb.cells) == 1
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")


def test_the_setup_cell_installs_from_the_configured_repository(tiny_book):
    cfg = gen.book_config(tiny_book)
    src = gen.setup_source(tiny_book)
    assert f"git+{cfg['url']}@{cfg['branch']}" in src
    assert gen.colab_url("exercises/x.ipynb", tiny_book).startswith(
        f"https://colab.research.google.com/github/{cfg['owner_repo']}/blob/{cfg['branch']}/")


def test_the_setup_cell_refuses_a_foreign_utils(tmp_path):
    (tmp_path / "utils.py").write_text("x = 1\n")
    script = tmp_path / "setup_cell.py"
    script.write_text(gen.setup_source())
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "not this book's package" in result.stderr and str(tmp_path / "utils.py") in result.stderr


def test_the_setup_cell_accepts_our_utils():
    result = subprocess.run([sys.executable, "-c", gen.setup_source()], cwd=gen.ROOT / "exercises",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_intro_map_lists_the_chapters_of_the_toc(tiny_book):
    (tiny_book / "intro.md").write_text(f"# Intro\n\n{gen.MAP_BEGIN}\nold\n{gen.MAP_END}\n")
    gen.generate(tiny_book)
    text = (tiny_book / "intro.md").read_text()
    assert "[Double](chapters/part/double.ipynb)" in text and "手写 double" in text and "old" not in text


def test_load_solutions_takes_the_code_from_the_chapter(tiny_book):
    ns = gen.load_solutions("part/double", root=tiny_book)
    assert ns["double"](3) == 6
    stubs = gen.load_solutions("part/double", root=tiny_book, stubs=True)
    with pytest.raises(NotImplementedError):
        stubs["double"](3)


def test_the_repository_is_up_to_date():
    assert gen.stale() == [], "run `make generate`"
