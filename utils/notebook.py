"""One source, two languages, three notebooks each: source/<part>/<topic>.ipynb -> chapters/, exercises/ and
solutions/ (English) and zh/chapters/, zh/exercises/, zh/solutions/ (Chinese).

The source holds every prose cell in English followed by its Chinese sibling (utils/bilingual.py); code
cells are shared. The chapter notebooks are the source in one language, each opening with the setup cell
(the Chinese one also sets `utils.set_language("zh")`, so the grader reports in Chinese).

    python -m utils.notebook            regenerate every exercise notebook and solution sheet
    python -m utils.notebook --check    exit 1 when any generated file (or a chapter's setup cell) is stale
    python -m utils.notebook --leaks    list every solution line an exercise notebook still shows

In a chapter, the solution of an exercise sits between two comment lines:

    def softmax(x, dim=-1):
        \"\"\"Softmax along `dim`, eq. (sm-stable).\"\"\"
        # BEGIN SOLUTION
        e = torch.exp(x - x.amax(dim, keepdim=True))
        return e / e.sum(dim, keepdim=True)
        # END SOLUTION

The exercise notebook replaces each region by `raise NotImplementedError(...)` at the region's
indentation (a region at the top level of a cell becomes a comment, so the notebook still runs).
It gives no answer away: the chapter's cheat sheet (the section under a heading "Cheat sheet", up to
the next heading of the same or a higher level) is replaced by a note saying where to find it, and
cells tagged `solution-only` (a cell that shows solution code outside a marked region: a cost
measurement that re-implements the exercise, a picture drawn with the solution) are left out.
`python -m utils.notebook --leaks` lists every line of a solution region that an exercise notebook
still shows (the rule is in `solution_lines`). The solution sheet keeps the title, the setup, the
exercise statements (markdown cells tagged `exercise`), the solution cells, the check cells and the
cheat sheet. Every notebook, the chapter included, opens with the setup cell (tagged `setup`): it
installs this package on Colab and refuses a foreign `utils`.

`website_chapter(nb)` is the chapter as the website shows it: marker lines removed and every
exercise cell (and every `solution-only` code cell) collapsed behind a "Show solution" toggle.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import io
import keyword
import re
import sys
import tokenize
from pathlib import Path

import nbformat
import yaml

from . import bilingual

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write your code here, then run the check below.")'
TOP_LEVEL_STUB = "# Exercise: write your code here, then run the check below."
SETUP_TAG = "setup"
SOLUTION_ONLY_TAG = "solution-only"     # a cell that shows solution code: left out of the exercise notebook
CHEAT_SHEET = re.compile(r"^(?P<level>#{1,6})[ \t]+(?:cheat[ -]sheet|速查)", re.I | re.M)
LANGUAGES = ("en", "zh")
PREFIX = {"en": "", "zh": "zh/"}        # where each language's chapters/, exercises/, solutions/ live
READER_FOLDERS = ("chapters", "exercises", "solutions")
TEXT = {
    "en": {
        "cheat_sheet_note": ("*The cheat sheet (the formulas and the shortest correct code) is not in the exercise "
                             "notebook: it would give the answers away. Read it once your checks pass, at the end "
                             "of [the solution notebook]({url}) or on the chapter's page of the website.*"),
        "banner": ("**Exercise notebook.** Write your code where a cell says `raise NotImplementedError`, then run "
                   "the check below it. Generated from `source/{rel}`; the answers are in "
                   "[the solution notebook]({url})."),
        "answer_sheet": "*Answer sheet, generated from `source/{rel}`.*",
        "map_header": "| | chapter | 面试原题 / 常见问法 (interview question) | exercises |",
    },
    "zh": {
        "cheat_sheet_note": ("*练习本里没有速查表（公式和最短的正确代码）：它会直接给出答案。等你的检查都通过后，"
                             "再去[答案本]({url})末尾或网站上本章的页面看。*"),
        "banner": ("**练习本。** 在写着 `raise NotImplementedError` 的单元格里写你的代码，然后运行它下面的检查单元格。"
                   "本笔记本由 `source/{rel}` 生成；答案在[答案本]({url})里。"),
        "answer_sheet": "*答案本，由 `source/{rel}` 生成。*",
        "map_header": "| | 章节 | 面试原题 / 常见问法 | 练习 |",
    },
}
CHEAT_SHEET_NOTE = TEXT["en"]["cheat_sheet_note"]
# The website's toggle over each exercise cell (myst-nb's per-cell `code_prompt_show` / `code_prompt_hide`).
SOLUTION_PROMPTS = {"en": ("Show solution", "Hide solution"), "zh": ("显示参考答案", "隐藏参考答案")}
SOLUTION_ONLY_PROMPTS = {"en": ("Show code (it uses the solution)", "Hide code"),
                         "zh": ("显示代码（含参考答案）", "隐藏代码")}


class MarkerError(ValueError):
    pass


# --------------------------------------------------------------------------- configuration

def book_config(root: Path = ROOT) -> dict:
    """The repository URL and branch, written once in _config.yml (read once per content of the file: every
    generated notebook's setup cell and Colab links ask for it)."""
    return dict(_book_config((root / "_config.yml").read_text(encoding="utf-8")))


@functools.lru_cache(maxsize=4)
def _book_config(text: str) -> tuple:
    cfg = yaml.safe_load(text)
    repo = cfg["repository"]
    url = repo["url"].rstrip("/")
    owner_repo = "/".join(url.split("/")[-2:])
    return tuple({"url": url, "owner_repo": owner_repo, "branch": repo.get("branch", "main")}.items())


def colab_url(path: str, root: Path = ROOT) -> str:
    cfg = book_config(root)
    return f"https://colab.research.google.com/github/{cfg['owner_repo']}/blob/{cfg['branch']}/{path}"


def setup_source(root: Path = ROOT, language: str = "en") -> str:
    cfg = book_config(root)
    zh = ('\nutils.set_language("zh")   # 批改报告、提示和进度表都用中文' if language == "zh" else "")
    return f'''# Setup (generated by `make generate`): on Colab, install this book's helpers; everywhere, make
# sure that `import utils` finds this book's package and not some other module named utils.
import importlib
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "hand-written-llm @ git+{cfg['url']}@{cfg['branch']}"], check=True)
    importlib.invalidate_caches()
import utils

if getattr(utils, "__book__", None) != "hand-written-llm":
    raise ImportError(f"`import utils` found {{getattr(utils, '__file__', None) or list(utils.__path__)}}, "
                      "which is not this book's package. Rename that module, or run `make book` "
                      "(or `pip install -e .`) in the book's folder and restart the kernel."){zh}'''


# --------------------------------------------------------------------------- solution regions

def _marker_lines(source: str) -> list[tuple[int, str]]:
    """(line index, marker) of every BEGIN/END marker that is a real comment, not text in a string."""
    found = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and tok.string.strip() in (BEGIN, END):
                found.append((tok.start[0] - 1, tok.string.strip()))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # not plain Python (a magic, a fragment): fall back to whole lines
        for i, line in enumerate(source.splitlines()):
            if line.strip() in (BEGIN, END):
                found.append((i, line.strip()))
    return found


def regions(source: str) -> list[tuple[int, int]]:
    """(begin line, end line) of each solution region; raises MarkerError when markers don't pair."""
    pairs, start = [], None
    for i, marker in _marker_lines(source):
        if marker == BEGIN:
            if start is not None:
                raise MarkerError(f"line {i + 1}: {BEGIN} inside another region")
            start = i
        else:
            if start is None:
                raise MarkerError(f"line {i + 1}: {END} without {BEGIN}")
            pairs.append((start, i))
            start = None
    if start is not None:
        raise MarkerError(f"line {start + 1}: {BEGIN} is never closed")
    return pairs


def has_solution(source: str) -> bool:
    return bool(regions(source))


def stub_source(source: str) -> str:
    """The exercise version of a cell: each region replaced by a stub at its indentation."""
    lines = source.splitlines()
    out, last = [], 0
    for begin, end in regions(source):
        out += lines[last:begin]
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        out.append(indent + (STUB if indent else TOP_LEVEL_STUB))
        last = end + 1
    out += lines[last:]
    return "\n".join(out)


def solution_source(source: str) -> str:
    """The answer-sheet version of a cell: the code with the marker lines removed."""
    marks = {i for i, _ in _marker_lines(source)}
    regions(source)  # validate pairing
    return "\n".join(line for i, line in enumerate(source.splitlines()) if i not in marks)


# --------------------------------------------------------------------------- notebooks

_EQ_LABEL = re.compile(r"\s*\$\$[ \t]*\((?P<label>[\w:-]+)\)[ \t]*$", re.M)
_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<text>[^`]+)`")


def jupyter_markdown(source: str) -> str:
    """MyST-only syntax made readable in plain Jupyter and Colab.

    `$$ ... $$ (label)` becomes `$$ ... \\tag{label} $$`, and `{eq}`label`` becomes `(label)`; other
    roles keep their text.
    """
    source = _EQ_LABEL.sub(lambda m: f"\n\\tag{{{m['label']}}}\n$$", source)

    def role(m):
        text = re.sub(r"\s*<[^>]*>$", "", m["text"])
        return f"({text})" if m["role"] == "eq" else text

    return _ROLE.sub(role, source)


def _tags(cell) -> list:
    return list(cell.get("metadata", {}).get("tags", []))


def _clean(cell, jupyter: bool = False, keep: tuple = ("tags",)):
    cell = copy.deepcopy(cell)
    if jupyter and cell.cell_type == "markdown":
        cell.source = jupyter_markdown(cell.source)
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    meta = {k: v for k, v in cell.get("metadata", {}).items() if k in keep}
    cell.metadata = meta
    return cell


def _id(*parts) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:12]


def _notebook(cells, source_nb) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    if "colab" in source_nb.metadata:
        nb.metadata["colab"] = source_nb.metadata["colab"]
    return nb


def is_check_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith("check(")


def normalise_chapter(nb, rel: str, root: Path = ROOT):
    """The source of a chapter: outputs cleared, stable cell ids, the current setup cell first, each Chinese
    sibling's metadata kept."""
    nb = copy.deepcopy(nb)
    cells = [c for c in nb.cells if SETUP_TAG not in _tags(c)]
    setup = nbformat.v4.new_code_cell(setup_source(root), metadata={"tags": [SETUP_TAG, "remove-cell"]})
    cells = [setup] + [_clean(c, keep=("tags", bilingual.KEY)) for c in cells]
    for i, c in enumerate(cells):
        c.id = c.get("id") if (i and c.get("id")) else _id(rel, "setup" if i == 0 else str(i))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):  # duplicated ids (copy-pasted cells): renumber deterministically
        for i, c in enumerate(cells):
            c.id = _id(rel, str(i))
    nb.cells = cells
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info", "colab")}
    return nb


# --------------------------------------------------------------------------- the cheat sheet

_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^(#{1,6})[ \t]+\S")


def _headings(text: str) -> list[tuple[int, int, str]]:
    """(character offset, level, line) of each markdown heading of `text`, fenced code blocks skipped."""
    found, fence, offset = [], None, 0
    for line in text.splitlines(keepends=True):
        f = _FENCE.match(line)
        if fence is None and f:
            fence = f[1][0]
        elif fence is not None and f and f[1][0] == fence:
            fence = None
        elif fence is None and _HEADING.match(line):
            found.append((offset, len(_HEADING.match(line)[1]), line.rstrip("\n")))
        offset += len(line)
    return found


def _piece(cell, source: str, suffix: str):
    piece = copy.deepcopy(cell)
    piece.source = source.strip("\n")
    if suffix and piece.get("id"):
        piece.id = f"{piece.id}-{suffix}"
    return piece


def split_cheat_sheet(cells) -> tuple[list, list, list]:
    """(before, sheet, after): the cheat sheet is the section under the first markdown heading that reads
    "Cheat sheet" (or 速查), up to the next heading of the same or a higher level; a markdown cell in which
    the section starts or ends is split there. `sheet` is empty when the chapter has no cheat sheet."""
    cells = list(cells)
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        start = next(((off, level) for off, level, line in _headings(cell.source) if CHEAT_SHEET.match(line)), None)
        if start is None:
            continue
        off, level = start
        before = cells[:i] + ([_piece(cell, cell.source[:off], "before")] if cell.source[:off].strip() else [])
        sheet, rest = [], [(cell, cell.source[off:], True)] + [(c, c.source, False) for c in cells[i + 1:]]
        for k, (c, text, first) in enumerate(rest):
            heads = _headings(text) if c.cell_type == "markdown" else []
            end = next((o for o, lv, _ in heads if lv <= level and not (first and o == 0)), None)
            if end is None:
                sheet.append(_piece(c, text, "sheet") if first else c)
                continue
            if text[:end].strip():
                sheet.append(_piece(c, text[:end], "sheet"))
            after = [_piece(c, text[end:], "after")] + [c for c, _, _ in rest[k + 1:]]
            return before, sheet, after
        return before, sheet, []
    return cells, [], []


def chapter_notebook(source_nb, rel: str, root: Path = ROOT, language: str = "en"):
    """The chapter as readers of `language` get it: the (normalised) source in that language, with its setup."""
    nb = bilingual.in_language(source_nb, language)
    nb.cells[0].source = setup_source(root, language)
    return nb


def exercise_notebook(chapter_nb, rel: str, root: Path = ROOT, language: str = "en"):
    text = TEXT[language]
    answers = colab_url(f"{PREFIX[language]}solutions/{rel}", root)
    before, sheet, after = split_cheat_sheet(chapter_nb.cells)
    if sheet:
        heading = _headings(sheet[0].source)[0][2]
        note = text["cheat_sheet_note"].format(url=answers)
        sheet = [nbformat.v4.new_markdown_cell(f"{heading}\n\n{note}", id=f"{sheet[0].id}-note")]
    cells = []
    for i, cell in enumerate(before + sheet + after):
        if SOLUTION_ONLY_TAG in _tags(cell):
            continue
        c = _clean(cell, jupyter=True)
        c.id = _id("exercises", rel, cell.id)
        if c.cell_type == "code" and i:
            try:
                c.source = stub_source(c.source)
            except MarkerError as e:
                raise MarkerError(f"{rel}, cell {i}: {e}") from None
        cells.append(c)
        if i == 0:
            banner = text["banner"].format(rel=rel, url=answers)
            cells.append(nbformat.v4.new_markdown_cell(banner, id=_id("exercises", rel, "banner")))
    return _notebook(cells, chapter_nb)


def solution_notebook(chapter_nb, rel: str, root: Path = ROOT, language: str = "en"):
    cells, seen_title, seen_imports = [], False, False
    for i, cell in enumerate(chapter_nb.cells):
        keep = False
        c = _clean(cell, jupyter=True)
        if i == 0:
            keep = True
        elif c.cell_type == "markdown" and not seen_title:
            seen_title = keep = True
            c.source = c.source + "\n\n" + TEXT[language]["answer_sheet"].format(rel=rel)
        elif c.cell_type == "markdown" and "exercise" in _tags(c):
            keep = True
        elif c.cell_type == "code" and not seen_imports:
            seen_imports = keep = True
        elif c.cell_type == "code" and (has_solution(c.source) or is_check_cell(c)):
            keep = True
            c.source = solution_source(c.source)
        if keep:
            c.id = _id("solutions", rel, cell.id)
            cells.append(c)
    for cell in split_cheat_sheet(chapter_nb.cells)[1]:      # the cheat sheet closes the answer sheet
        c = _clean(cell, jupyter=True)
        if c.cell_type == "code":
            c.source = solution_source(c.source)
        c.id = _id("solutions", rel, cell.id, "sheet")
        cells.append(c)
    return _notebook(cells, chapter_nb)


def website_chapter(nb, language: str = "en"):
    """The chapter as the website shows it (to be applied to the executed chapter before the build).

    The `# BEGIN SOLUTION` / `# END SOLUTION` lines are removed, and every exercise cell (a code cell holding
    a solution region) is tagged `hide-input`, with myst-nb's per-cell prompts set to "Show solution" /
    "Hide solution": the page shows each solution collapsed under its statement. Code cells tagged
    `solution-only` are collapsed the same way. Outputs, ids and every other cell are kept as they are.
    """
    nb = copy.deepcopy(nb)
    prompts = {True: SOLUTION_PROMPTS.get(language, SOLUTION_PROMPTS["en"]),
               False: SOLUTION_ONLY_PROMPTS.get(language, SOLUTION_ONLY_PROMPTS["en"])}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        solution = has_solution(cell.source)
        if solution:
            cell.source = solution_source(cell.source)
        if solution or SOLUTION_ONLY_TAG in _tags(cell):
            tags = _tags(cell)
            cell.setdefault("metadata", {})["tags"] = tags + ["hide-input"] * ("hide-input" not in tags)
            show, hide = prompts[solution]
            cell.metadata.setdefault("mystnb", {}).update(code_prompt_show=show, code_prompt_hide=hide)
    return nb


def is_exercise_cell(cell) -> bool:
    """A code cell of the chapter that holds a solution region."""
    return cell.cell_type == "code" and has_solution(cell.source)


# --------------------------------------------------------------------------- answers given away

MIN_CHARS = 12
_OPERATORS = {"+", "-", "*", "/", "//", "%", "@", "**", "<", ">", "<=", ">=", "~", "&", "|", "^",
              "<<", ">>", "+=", "-=", "*=", "/=", "//=", "%=", "@=", "**=", "&=", "|=", "^=", "<<=", ">>="}


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _line_tokens(source: str) -> dict[int, list]:
    """{line index: tokens of that line, comments and layout left out}, or {} when `source` is not Python."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    per_line: dict[int, list] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in skip:
                per_line.setdefault(tok.start[0] - 1, []).append(tok)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return {}
    return per_line


def _computes(tokens) -> bool:
    """Does this line compute something: an operator (not `=`, `==`, `!=`, `.` or punctuation; not a decorator's
    `@`), or a call with at least one argument?"""
    for k, tok in enumerate(tokens):
        if tok.type != tokenize.OP:
            continue
        if tok.string in _OPERATORS and not (tok.string == "@" and k == 0):
            return True
        if tok.string == "(" and 0 < k < len(tokens) - 1 and tokens[k + 1].string != ")":
            prev = tokens[k - 1]
            if (prev.type == tokenize.NAME and not keyword.iskeyword(prev.string)) or prev.string in (")", "]"):
                return True
    return False


def solution_lines(nb) -> list[tuple[str, str]]:
    """(the line as written, its normal form) of every line of the chapter's solution regions that would give
    the answer away if an exercise notebook showed it.

    Normal form: the line's Python tokens without its comment, all whitespace removed. A line counts when its
    normal form has at least MIN_CHARS (12) characters and it computes something: an operator other than
    assignment, equality tests, attribute access and punctuation, or a call with at least one argument. Lines
    that only unpack, rename, return a name, dispatch on an argument or open a block (`B, T, _ = x.shape`,
    `state = self.state[p]`, `return out`, `if approximate == "tanh":`, `else:`, `super().__init__()`) are
    plumbing that every implementation shares; so is a line the exercise
    cells give outside their regions (scaffolding the reader is handed anyway).
    """
    given, found = set(), {}
    for cell in nb.cells:
        if not is_exercise_cell(cell):
            continue
        lines = cell.source.splitlines()
        inside = {i for b, e in regions(cell.source) for i in range(b + 1, e)}
        tokens = _line_tokens(cell.source)
        for i, line in enumerate(lines):
            if i in tokens:
                normal, computes = _squash("".join(t.string for t in tokens[i])), _computes(tokens[i])
            else:                                   # not Python (or a string's continuation): the raw line
                normal, computes = _squash(re.sub(r"(^|\s)#.*$", "", line)), True
            if i not in inside:
                given.add(normal)
            elif len(normal) >= MIN_CHARS and computes:
                found.setdefault(normal, re.sub(r"\s{2,}#", "  #", line.strip()))
    return [(line, normal) for normal, line in found.items() if normal not in given]


def leaks(chapter_nb, rel: str, root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(chapter cell id, where, solution line) for every cell of the exercise notebooks (both languages) that
    shows a line of a solution region (see `solution_lines`). `where` is the section heading above the cell,
    with "hint" when the cell holds collapsed hints, and the language when it is not English."""
    lines = solution_lines(chapter_nb)
    by_id = {}
    for cell in chapter_nb.cells:
        for suffix in ("", "-before", "-sheet", "-after", "-sheet-note"):
            by_id[_id("exercises", rel, cell.id + suffix)] = cell.id + suffix
    found, seen = [], set()
    for language in LANGUAGES:
        section = ""
        nb = bilingual.in_language(chapter_nb, language)
        for cell in exercise_notebook(nb, rel, root, language).cells:
            heads = _headings(cell.source) if cell.cell_type == "markdown" else []
            if heads:
                section = heads[-1][2].lstrip("# ").strip()
            text = _squash(cell.source)
            for line, normal in lines:
                cell_id = by_id.get(cell.id, cell.id)
                if normal in text and (cell_id, line) not in seen:     # a cell both languages share: once
                    seen.add((cell_id, line))
                    where = section + (" (hint)" if cell.cell_type == "markdown" and "<details" in cell.source
                                       else "") + (f" [{language}]" if language != "en" else "")
                    found.append((cell_id, where, line))
    return found


MAP_BEGIN = "<!-- chapter map: generated by `make generate` from _toc.yml and the grader; do not edit by hand -->"
MAP_END = "<!-- end of chapter map -->"
INTRO = {"en": Path("intro.md"), "zh": Path("zh") / "intro.md"}
# The Chinese intro says which English it translates: the intro without its chapter map, fingerprinted.
INTRO_FINGERPRINT = re.compile(r"<!-- translates intro\.md en:(?P<fp>[0-9a-f]{12}) -->")
GLOSSARY = Path("source") / "glossary.yml"


def caption(text: str, language: str) -> str:
    """A part's caption from _toc.yml, in `language` (the Chinese is in utils/locale/zh/book.yml)."""
    from .i18n import tr
    return tr(text, language)


def chapter_head(source_nb, language: str) -> tuple[str, str]:
    """(title, interview question) of a chapter in `language`: its first heading, and the 面试原题 / 常见问法
    line of its first prose cell."""
    nb = bilingual.in_language(source_nb, language)
    text = next(c.source for c in nb.cells if c.cell_type == "markdown")
    title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), "")
    prompt = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if "面试原题" in ln or "常见问法" in ln), "")
    return title, prompt


def chapter_map(root: Path = ROOT, language: str = "en") -> str:
    """The intro's table of chapters: part, chapter, the interview question, the exercises."""
    from .grader import EXERCISES, list_exercises

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    rows = [TEXT[language]["map_header"], "|---|---|---|---|"]
    names = list_exercises()
    number = 0
    for part in toc.get("parts", []):
        for entry in part.get("chapters", []):
            rel = entry["file"]
            if not rel.startswith("chapters/"):
                continue
            number += 1
            chapter = rel.removeprefix("chapters/")
            title, prompt = chapter_head(nbformat.read(root / "source" / f"{chapter}.ipynb", as_version=4), language)
            exercises = ", ".join(f"`{n}`" for n in names if EXERCISES[n].chapter == chapter)
            part_name = caption(part.get("caption", ""), language).split(":")[0].split("：")[0]
            rows.append(f"| {part_name} · {number} | [{title or rel}]({rel}.ipynb) | {prompt} | {exercises} |")
    return "\n".join(rows)


def _without_map(text: str) -> str:
    head, rest = text.split(MAP_BEGIN, 1)
    return head + rest.split(MAP_END, 1)[1]


def intro_fingerprint(root: Path = ROOT) -> str:
    """The fingerprint of the English intro, its generated chapter map left out."""
    return bilingual.fingerprint(_without_map((root / INTRO["en"]).read_text(encoding="utf-8")))


def intro_text(root: Path = ROOT, language: str = "en") -> str:
    text = (root / INTRO[language]).read_text(encoding="utf-8")
    head, rest = text.split(MAP_BEGIN, 1)
    _, tail = rest.split(MAP_END, 1)
    return f"{head}{MAP_BEGIN}\n{chapter_map(root, language)}\n{MAP_END}{tail}"


def intro_problem(root: Path = ROOT) -> str | None:
    """Why zh/intro.md is not a current translation of intro.md, or None."""
    path = root / INTRO["zh"]
    if not path.exists():
        return f"{INTRO['zh']} is missing: translate intro.md"
    m = INTRO_FINGERPRINT.search(path.read_text(encoding="utf-8"))
    if m is None:
        return f"{INTRO['zh']} does not say which English it translates (<!-- translates intro.md en:... -->)"
    if m["fp"] != intro_fingerprint(root):
        return (f"{INTRO['zh']} translates an older intro.md (en:{m['fp']}, now en:{intro_fingerprint(root)}): "
                "bring the Chinese up to date, then its fingerprint")
    return None


def glossary_text(root: Path = ROOT, language: str = "en") -> str:
    """The glossary page, 中英术语对照: every term of the book, English and Chinese, and the chapter that
    introduces it; from source/glossary.yml."""
    data = yaml.safe_load((root / GLOSSARY).read_text(encoding="utf-8"))
    titles = {}
    from .grader.registry import reading_order
    for rel in reading_order():
        path = root / "source" / f"{rel}.ipynb"
        if not path.exists():
            continue
        titles[rel] = chapter_head(nbformat.read(path, as_version=4), language)[0]
    order = {c: i for i, c in enumerate(titles)}
    if language == "en":                    # alphabetical; in Chinese, by the chapter that introduces the term
        terms = sorted(data["terms"], key=lambda t: t["en"].lower())
    else:
        terms = sorted(data["terms"], key=lambda t: (order.get(t.get("chapter"), len(order)), t["en"].lower()))
    if language == "en":
        lines = ["# Glossary: English and Chinese terms (中英术语对照)", "", data["intro"]["en"], "",
                 "| English | 中文 | introduced in |", "|---|---|---|"]
    else:
        lines = ["# 中英术语对照 (Glossary)", "", data["intro"]["zh"], "",
                 "| 中文 | English | 首次出现 |", "|---|---|---|"]
    for t in terms:
        where = t.get("chapter", "")
        link = f"[{titles.get(where, where)}](chapters/{where}.ipynb)" if where else ""
        pair = (t["en"], t["zh"]) if language == "en" else (t["zh"], t["en"])
        lines.append(f"| {pair[0]} | {pair[1]} | {link} |")
    return "\n".join(lines) + "\n"


def search_dictionary(root: Path = ROOT) -> str:
    """jieba's user dictionary for the Chinese site's search: every Chinese term of the glossary is one word,
    so that a query such as 旋转位置编码 finds its chapter (without it, jieba splits the term into pieces
    and the search finds none of them whole)."""
    data = yaml.safe_load((root / GLOSSARY).read_text(encoding="utf-8"))
    words = sorted({t["zh"].split("（")[0].split("(")[0].strip() for t in data["terms"]})
    return "".join(f"{w} 100 n\n" for w in words if w and " " not in w)


def zh_book_files(root: Path = ROOT) -> dict[Path, str]:
    """zh/_config.yml and zh/_toc.yml: the Chinese book, built from zh/ with the same page paths."""
    from .i18n import tr
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    config["title"] = tr(config["title"], "zh")
    config["exclude_patterns"] = [p for p in config.get("exclude_patterns", []) if p != "zh"]
    config.setdefault("repository", {})["path_to_book"] = "zh"     # launch buttons open zh/chapters/...
    sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["language"] = "zh_CN"
    sphinx["html_static_path"] = [f"../{p}" for p in sphinx.get("html_static_path", [])]
    if "html_favicon" in sphinx:
        sphinx["html_favicon"] = f"../{sphinx['html_favicon']}"
    sphinx["html_search_options"] = {"dict": "search_dict.txt"}
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    for part in toc.get("parts", []):
        part["caption"] = tr(part["caption"], "zh")
    note = "# Generated by `make generate` from ../{} (the Chinese book); do not edit.\n"
    dump = lambda d: yaml.safe_dump(d, allow_unicode=True, sort_keys=False)  # noqa: E731
    files = {root / "zh" / "_config.yml": note.format("_config.yml") + dump(config),
             root / "zh" / "_toc.yml": note.format("_toc.yml") + dump(toc)}
    if (root / GLOSSARY).exists():
        files[root / "zh" / "search_dict.txt"] = search_dictionary(root)
    return files


ORDER_FILE = Path("utils") / "book_order.py"


def book_order_text(root: Path = ROOT) -> str:
    """utils/book_order.py: the parts and chapters of _toc.yml in reading order, shipped with the package."""
    from .grader.registry import book_parts
    body = "\n".join(f"    ({caption!r}, (\n" + "".join(f"        {c!r},\n" for c in chapters_) + "    )),"
                     for caption, chapters_ in book_parts())
    return ('"""The book\'s parts and chapters in reading order, for a package installed without the book beside '
            'it.\n\nGenerated from _toc.yml by `make generate`; do not edit."""\n\n'
            f"PARTS = (\n{body}\n)\n")


def chapters(root: Path = ROOT) -> list[Path]:
    """The sources of the chapters: source/<part>/<topic>.ipynb."""
    return sorted((root / "source").glob("*/*.ipynb"))


def _dump(nb) -> str:
    return nbformat.writes(nb, version=4) + "\n"


def chapter_outputs(path: Path, root: Path = ROOT) -> dict[Path, str]:
    """The files generated from one source: the source normalised, and its three notebooks per language."""
    rel = path.relative_to(root / "source").as_posix()
    source = normalise_chapter(nbformat.read(path, as_version=4), rel, root)
    files = {path: _dump(source)}
    for language in LANGUAGES:
        base = root / PREFIX[language]
        nb = chapter_notebook(source, rel, root, language)
        files[base / "chapters" / rel] = _dump(nb)
        files[base / "exercises" / rel] = _dump(exercise_notebook(nb, rel, root, language))
        files[base / "solutions" / rel] = _dump(solution_notebook(nb, rel, root, language))
    return files


def outputs(root: Path = ROOT) -> dict[Path, str]:
    """Every file the generator owns, with its up-to-date text."""
    files = {}
    for path in chapters(root):
        files.update(chapter_outputs(path, root))
    for language in LANGUAGES:
        if (root / INTRO[language]).exists():
            files[root / INTRO[language]] = intro_text(root, language)
        if (root / GLOSSARY).exists():
            files[root / PREFIX[language] / "glossary.md"] = glossary_text(root, language)
    if (root / "_toc.yml").exists():
        files[root / ORDER_FILE] = book_order_text(root)
        files.update(zh_book_files(root))
    from .question_map import page_files  # the interview questions page, both languages
    files.update(page_files(root))
    return files


def _orphans(root: Path, owned) -> list[Path]:
    """Generated notebooks whose source is gone."""
    found = []
    for language in LANGUAGES:
        for folder in READER_FOLDERS:
            found += [p for p in (root / PREFIX[language] / folder).glob("*/*.ipynb") if p not in owned]
    return found


def stale(root: Path = ROOT) -> list[Path]:
    want = outputs(root)
    bad = [p for p, text in want.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    return bad + _orphans(root, set(want))


def generate(root: Path = ROOT, only: Path | None = None) -> list[Path]:
    """Write every stale generated file and remove orphans; with `only` (a source notebook), just the files
    generated from it (while a chapter is being written, without touching the rest of the book)."""
    written = []
    want = chapter_outputs(only.resolve(), root) if only else outputs(root)
    for path, text in want.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    for p in [] if only else _orphans(root, set(want)):
        p.unlink()
        written.append(p)
    return written


# --------------------------------------------------------------------------- the book's solutions

def load_solutions(chapter: str, root: Path = ROOT, stubs: bool = False) -> dict:
    """Execute a chapter's imports cell and its solution cells; return the namespace.

    `chapter` is 'foundations/softmax'. The tests grade these objects, so the solutions are taken
    from the chapter itself, never copied. With stubs=True the cells are the exercise versions.
    """
    path = root / "source" / f"{chapter}.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and SETUP_TAG not in _tags(c)]
    if not code:
        raise ValueError(f"{path} has no code cells")
    namespace: dict = {"__name__": f"chapter_{chapter.replace('/', '_')}"}
    for i, cell in enumerate([code[0]] + [c for c in code[1:] if has_solution(c.source)]):
        source = stub_source(cell.source) if stubs else solution_source(cell.source)
        exec(compile(source, f"<{chapter} solution cell {i}>", "exec"), namespace)
    return namespace


def translation_problems(root: Path = ROOT) -> list[str]:
    """Every missing, stale or orphaned translation of the book's sources, and the intro's."""
    found = [f"{path.relative_to(root).as_posix()} {status} {cell_id}: {head}"
             for path in chapters(root)
             for status, cell_id, head in bilingual.problems(nbformat.read(path, as_version=4))]
    intro = intro_problem(root)
    return found + ([intro] if intro else [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.notebook", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale")
    parser.add_argument("--leaks", action="store_true",
                        help="list the lines of solution regions that an exercise notebook still shows; exit 1 if any")
    parser.add_argument("--only", type=Path, metavar="SOURCE",
                        help="write only the notebooks generated from this source notebook")
    args = parser.parse_args(argv)
    if args.leaks:
        count = 0
        for path in chapters():
            rel = path.relative_to(ROOT / "source").as_posix()
            for cell_id, where, line in leaks(nbformat.read(path, as_version=4), rel):
                print(f"source/{rel}  cell {cell_id}  [{where}]  {line}")
                count += 1
        print(f"{count} solution line(s) shown in exercise notebooks")
        return 1 if count else 0
    if args.check:
        bad = stale()
        for p in bad:
            print(f"stale: {p.relative_to(ROOT)}")
        untranslated = translation_problems()
        for line in untranslated:
            print(f"translation: {line}")
        if bad:
            print("run `make generate` and commit the result", file=sys.stderr)
        if untranslated:
            print("translate with `python -m utils.bilingual export/import` (see README, Adding a chapter)",
                  file=sys.stderr)
        if bad or untranslated:
            return 1
        print(f"generated notebooks are up to date and every prose cell has its current Chinese "
              f"({len(chapters())} chapters, {len(LANGUAGES)} languages)")
        return 0
    written = generate(only=args.only)
    for p in written:
        print(f"wrote {p.relative_to(ROOT)}")
    print(f"{len(written)} file(s) written, {len(chapters())} chapters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
