"""Every exercise of the book, by name.

Declarations live in `exercises/<part>/<topic>.py`, one module per chapter; importing a module
registers its exercises. `list_exercises()` gives them in reading order (the order of _toc.yml).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

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


def reading_order() -> list[str]:
    """Chapters ('foundations/softmax') in the order of _toc.yml; empty when the book is not beside us."""
    toc = Path(__file__).resolve().parents[2] / "_toc.yml"
    if not toc.exists():
        return []
    import yaml

    order = []

    def walk(node):
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith("chapters/"):
                order.append(f[len("chapters/"):].removesuffix(".ipynb"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(toc.read_text(encoding="utf-8")))
    return order


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
        raise KeyError(f"no exercise named {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return EXERCISES[name]
