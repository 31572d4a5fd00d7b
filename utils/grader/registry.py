"""Every exercise of the book, by name.

Declarations live in `exercises/<part>/<topic>.py`, one module per chapter; importing a module
registers its exercises. `list_exercises()` gives them in reading order (the order of _toc.yml).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ..i18n import msg, tr

EXERCISES: dict = {}
_loaded = False


def register(*exercises):
    for ex in exercises:
        if ex.name in EXERCISES:
            raise ValueError(f"exercise {ex.name!r} is registered twice")
        EXERCISES[ex.name] = ex


def _load():
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import exercises
    for part in pkgutil.iter_modules(exercises.__path__):
        package = importlib.import_module(f"{exercises.__name__}.{part.name}")
        for topic in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{topic.name}")


def book_parts() -> tuple:
    """((caption, (chapter, ...)), ...) from _toc.yml when the book is beside the package; otherwise from
    utils/book_order.py, which `make generate` writes from _toc.yml and which ships with the package (Colab
    installs utils alone: the progress table must still follow the book, not the alphabet)."""
    toc = Path(__file__).resolve().parents[2] / "_toc.yml"
    if toc.exists():
        import yaml
        parts = yaml.safe_load(toc.read_text(encoding="utf-8")).get("parts", [])
        found = ((p.get("caption", ""), tuple(e["file"].removeprefix("chapters/") for e in p.get("chapters", [])
                                              if e.get("file", "").startswith("chapters/")))
                 for p in parts)
        return tuple((caption, chapters) for caption, chapters in found if chapters)   # not the appendix
    try:
        from ..book_order import PARTS
    except ImportError:
        return ()
    return PARTS


def reading_order() -> list[str]:
    """Chapters ('foundations/softmax') in reading order."""
    return [c for _, chapters in book_parts() for c in chapters]


def part_of(chapter: str) -> str:
    """The caption of the part that holds `chapter` ('Part 1: foundations'), or its folder name."""
    return next((caption for caption, chapters in book_parts() if chapter in chapters), chapter.split("/")[0])


def list_exercises() -> list[str]:
    _load()
    order = {chapter: i for i, chapter in enumerate(reading_order())}
    names = list(EXERCISES)
    return sorted(names, key=lambda n: (order.get(EXERCISES[n].chapter, len(order)), names.index(n)))


def get(name: str):
    _load()
    if name not in EXERCISES:
        import difflib
        close = difflib.get_close_matches(name, EXERCISES, n=1)
        raise KeyError(tr(msg("no exercise named {name!r}; did you mean {close!r}?", name=name, close=close[0]) if close
                          else msg("no exercise named {name!r}", name=name)))
    return EXERCISES[name]
