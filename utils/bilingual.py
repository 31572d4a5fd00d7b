"""Two languages from one source: every prose cell of a chapter and its Chinese sibling.

In `source/<part>/<topic>.ipynb` each English markdown cell is followed by its Chinese version, a markdown
cell whose metadata reads

    "hwllm": {"lang": "zh", "en": "<fingerprint of the English source it translates>"}

Code cells, equation labels and exercise names are shared. The Chinese notebook of a chapter is the source
with each English prose cell's text replaced by its sibling's (the English cell's id, tags and place are
kept); the English notebook is the source without the siblings.

A translation is *missing* when an English prose cell has no sibling, and *stale* when the sibling's
fingerprint is not the fingerprint of the English text as it is now (the English changed after it was
translated): `python -m utils.bilingual` lists both and CI fails on either.

    python -m utils.bilingual                      translation status of every chapter; exit 1 if incomplete
    python -m utils.bilingual export NB > FILE     the English and Chinese of NB side by side, for translating
    python -m utils.bilingual import NB FILE       write FILE's Chinese back into NB, with the fingerprints of
                                                   the English it shows (a stale entry stays stale)

The export file is plain text: one block per English prose cell,

    ===== <cell id> en:<fingerprint> =====
    <the English text>
    ----- zh -----
    <the Chinese text; empty when missing>

A Chinese text that only repeats `=====` lines is not possible; everything else is taken as written.
"""

from __future__ import annotations

import copy
import hashlib
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("en", "zh")
KEY = "hwllm"


def fingerprint(text: str) -> str:
    """12 hex digits of the SHA-1 of the English text, trailing white space of each line ignored."""
    norm = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()[:12]


def is_translation(cell) -> bool:
    return cell.get("metadata", {}).get(KEY, {}).get("lang") == "zh"


def is_prose(cell) -> bool:
    """An English cell that needs a Chinese sibling: every markdown cell with text."""
    return cell.cell_type == "markdown" and not is_translation(cell) and bool(cell.source.strip())


def pairs(nb) -> list[tuple[int, object, object | None]]:
    """(index, English prose cell, its Chinese sibling or None) for every English prose cell."""
    found = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        if is_prose(cell):
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            found.append((i, cell, nxt if nxt is not None and is_translation(nxt) else None))
    return found


def problems(nb) -> list[tuple[str, str, str]]:
    """(status, cell id, first line of the English) for each missing or stale translation, and each Chinese
    cell that follows no English prose cell (an orphan)."""
    out = []
    for _, en, zh in pairs(nb):
        head = en.source.strip().splitlines()[0][:70]
        if zh is None:
            out.append(("missing", en.get("id", "?"), head))
        elif zh.metadata[KEY].get("en") != fingerprint(en.source):
            out.append(("stale", en.get("id", "?"), head))
        elif not zh.source.strip():
            out.append(("missing", en.get("id", "?"), head))
    for i, cell in enumerate(nb.cells):
        if is_translation(cell) and not (i and is_prose(nb.cells[i - 1])):
            out.append(("orphan", cell.get("id", "?"), cell.source.strip()[:70]))
    return out


_CJK = "\u3000-\u303f\u3400-\u9fff\uff00-\uffef"
_SOFT_BREAK = re.compile(f"(?<=[{_CJK}])[ \t]*\n[ \t]*(?=[{_CJK}])")
_FENCED = re.compile(r"^(```|~~~|\$\$).*?^\1", re.M | re.S)


def join_cjk_lines(text: str) -> str:
    """A line break between two Chinese characters removed: markdown turns a line break inside a paragraph
    into a space, which Chinese does not have. Code blocks, display math and a heading's end are left alone."""
    def join(part: str) -> str:
        def one(m):
            line = part[part.rfind("\n", 0, m.start()) + 1: m.start()]
            return m.group(0) if line.lstrip().startswith("#") else ""
        return _SOFT_BREAK.sub(one, part)

    out, last = [], 0
    for m in _FENCED.finditer(text):
        out += [join(text[last:m.start()]), m.group(0)]
        last = m.end()
    out.append(join(text[last:]))
    return "".join(out)


def in_language(nb, lang: str):
    """The notebook in one language: English drops the siblings; Chinese puts each sibling's text in its
    English cell's place (a cell without a translation stays English), its lines joined where a line break
    would show as a space (`join_cjk_lines`)."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: expected one of {LANGUAGES}")
    nb = copy.deepcopy(nb)
    if lang == "zh":
        for _, en, zh in pairs(nb):
            if zh is not None and zh.source.strip():
                en.source = join_cjk_lines(zh.source)
    nb.cells = [c for c in nb.cells if not is_translation(c)]
    return nb


def set_translation(nb, cell_id: str, text: str, en_fingerprint: str | None = None) -> None:
    """Give the English prose cell `cell_id` the Chinese `text`, fingerprinted with `en_fingerprint` (by
    default the English as it is now)."""
    for i, en, zh in pairs(nb):
        if en.get("id") == cell_id:
            fp = en_fingerprint or fingerprint(en.source)
            if zh is None:
                zh = nbformat.v4.new_markdown_cell(text.strip("\n"), id=f"{cell_id}-zh")
                nb.cells.insert(i + 1, zh)
            zh.source = text.strip("\n")
            zh.metadata[KEY] = {"lang": "zh", "en": fp}
            return
    raise KeyError(f"no English prose cell with id {cell_id!r}")


_BLOCK = re.compile(r"^===== (?P<id>\S+) en:(?P<fp>[0-9a-f]{12}) =====$", re.M)
_ZH = "----- zh -----"


def export(nb) -> str:
    blocks = []
    for _, en, zh in pairs(nb):
        blocks.append(f"===== {en.id} en:{fingerprint(en.source)} =====\n{en.source.strip()}\n{_ZH}\n"
                      f"{zh.source.strip() if zh is not None else ''}\n")
    return "\n".join(blocks)


def import_(nb, text: str) -> int:
    """Write the Chinese of an export file into `nb`; return how many cells got a translation."""
    heads = list(_BLOCK.finditer(text))
    count = 0
    for k, m in enumerate(heads):
        body = text[m.end(): heads[k + 1].start() if k + 1 < len(heads) else len(text)]
        if _ZH not in body:
            raise ValueError(f"block {m['id']}: no '{_ZH}' line")
        zh = body.split(_ZH, 1)[1].strip("\n")
        if zh.strip():
            set_translation(nb, m["id"], zh, m["fp"])
            count += 1
    return count


def sources(root: Path = ROOT) -> list[Path]:
    return sorted((root / "source").glob("*/*.ipynb"))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"] and len(argv) == 2:
        sys.stdout.write(export(nbformat.read(argv[1], as_version=4)))
        return 0
    if argv[:1] == ["import"] and len(argv) == 3:
        nb = nbformat.read(argv[1], as_version=4)
        n = import_(nb, Path(argv[2]).read_text(encoding="utf-8"))
        nbformat.write(nb, argv[1])
        print(f"{argv[1]}: {n} translated cell(s) written")
        return 0
    if argv:
        print(__doc__)
        return 2
    bad = 0
    for path in sources():
        nb = nbformat.read(path, as_version=4)
        found = problems(nb)
        total = len(pairs(nb))
        print(f"{path.relative_to(ROOT)}: {total - sum(s != 'orphan' for s, _, _ in found)}/{total} translated")
        for status, cell_id, head in found:
            print(f"  {status:8} {cell_id}  {head}")
        bad += len(found)
    if bad:
        print(f"{bad} translation(s) missing, stale or orphaned: run `python -m utils.bilingual export` on the "
              "chapter, write the Chinese, and `import` it back", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
