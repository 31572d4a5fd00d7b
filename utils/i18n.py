"""The reader's language, English or Chinese, for every message the grader and the notebooks' helpers show.

    utils.set_language("zh")     or the environment variable HWLLM_LANG=zh (the Chinese notebooks' setup cell
                                 sets it); "en" is the default

Messages are written in English in the code and translated when they are shown. A message with values in it
is built with `msg(template, **fields)`: a `str` holding the English (so code and tests that read messages
see English), which also remembers its template, so that `tr()` can format the Chinese template with the
same fields. A plain string is translated by looking it up whole.

The Chinese lives in catalogs, `utils/locale/zh/*.yml`: English template -> Chinese template. The English
is the key, so a message whose English changes has no translation until the catalog follows, and the tests
fail (tests/test_i18n.py: every message the code can show is in the catalog, and no report shown in Chinese
keeps an untranslated English sentence).

    python -m utils.locale        list the messages of the code that have no Chinese, and those built so that they
                                  cannot be translated (exit 1 if any): `main()` below
"""

from __future__ import annotations

import ast
import os
import re
from contextlib import contextmanager
from functools import cache
from pathlib import Path

ENV = "HWLLM_LANG"
LANGUAGES = ("en", "zh")
LOCALE = Path(__file__).resolve().parent / "locale"
_chosen: str | None = None
_missing: set[str] = set()


def set_language(lang: str) -> None:
    """Show the grader's reports, hints and progress in `lang`: "en" or "zh"."""
    global _chosen
    lang = str(lang).lower().replace("_", "-").split("-")[0]
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: choose one of {', '.join(LANGUAGES)}")
    _chosen = lang


def language() -> str:
    """The language chosen with set_language, else HWLLM_LANG, else English."""
    if _chosen:
        return _chosen
    env = os.environ.get(ENV, "").lower().replace("_", "-").split("-")[0]
    return env if env in LANGUAGES else "en"


@contextmanager
def speaking(lang: str):
    """`with speaking("zh"):` shows messages in `lang` inside the block only."""
    global _chosen
    before = _chosen
    set_language(lang)
    try:
        yield
    finally:
        _chosen = before


_CODE_SPAN = re.compile(r"`[^`]*`")
_ENGLISH_RUN = re.compile(r"\b[A-Za-z]{2,}(?:[ ,;:'-]+[A-Za-z]{2,}){3,}\b")


def english_left(text: str) -> list[str]:
    """Runs of four or more English words outside code spans: what a message shown in Chinese should not keep
    (a name or a term in English, as Chinese engineers write them, is one or two words)."""
    return _ENGLISH_RUN.findall(_CODE_SPAN.sub(" ", text))


class Msg(str):
    """An English message that remembers its template and fields, so that it can be shown in Chinese."""

    template: str
    fields: dict

    def __new__(cls, template: str, /, **fields):
        self = super().__new__(cls, template.format(**fields) if fields else template)
        self.template, self.fields = template, fields
        return self

    def __reduce__(self):            # pickles (reports cross process boundaries) keep the template
        return (_rebuild, (self.template, self.fields))


def _rebuild(template, fields):
    return Msg(template, **fields)


msg = Msg


@cache
def catalog(lang: str) -> dict[str, str]:
    """English -> `lang`, merged from every catalog file of the language."""
    import yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    merged: dict[str, str] = {}
    for path in sorted((LOCALE / lang).glob("*.yml")):
        merged.update(yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {})
    return merged


def _field(value, lang):
    """A field of a message: another message is translated; a plain string only if the catalog has it (names,
    shapes and code are data, shown as they are)."""
    if isinstance(value, Msg):
        return tr(value, lang)
    if isinstance(value, str) and value:
        return catalog(lang).get(value, value)
    return value


def tr(text, lang: str | None = None) -> str:
    """`text` in the reader's language (or `lang`). A message without a translation stays English and is
    remembered (see `missing()`)."""
    if text is None:
        return text
    lang = lang or language()
    if lang == "en" or not str(text).strip():
        return str(text)
    cat = catalog(lang)
    if isinstance(text, Msg):
        template = cat.get(text.template)
        if template is None:
            _missing.add(text.template)
            return str(text)
        return template.format(**{k: _field(v, lang) for k, v in text.fields.items()})
    if text in cat:
        return cat[text]
    _missing.add(str(text))
    return str(text)


def missing() -> set[str]:
    """Every message shown untranslated since the process started (or since `missing().clear()`)."""
    return _missing


# --------------------------------------------------------------------------- the messages the code can show

# Calls whose arguments are messages the reader sees: (positional index or keyword) per callee name.
SHOWN = {
    "msg": ((0, None),),
    "tr": ((0, None),),
    "Problem": ((1, "message"),),
    "Mistake": ((2, "message"),),
    "SamplingMistake": ((2, "message"),),
    "Property": ((0, "name"),),
    "case": ((None, "note"),),
    "Case": ((1, "note"),),
}
LISTS = ("hints",)                    # keyword arguments holding a tuple or list of messages


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def shown_messages(root: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """({message: where} for every literal message in the package, [where a message is built by f-string or +,
    which cannot be translated]).

    A message is a literal argument at a place listed in SHOWN or LISTS (`hint=` included); `msg()`'s
    template is the key of a message with values."""
    root = root or Path(__file__).resolve().parent
    found, bad = {}, []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            spots = []
            for pos, kw in SHOWN.get(_callee(node), ()):
                if pos is not None and pos < len(node.args):
                    spots.append(node.args[pos])
                spots += [k.value for k in node.keywords if k.arg == kw]
            spots += [k.value for k in node.keywords if k.arg == "hint"]
            for k in node.keywords:
                if k.arg in LISTS and isinstance(k.value, (ast.Tuple, ast.List)):
                    spots += k.value.elts
            for value in spots:
                where = f"{rel}:{value.lineno}"
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value.strip():
                    found.setdefault(value.value, where)
                elif isinstance(value, (ast.JoinedStr, ast.BinOp)):
                    bad.append(where)
    return found, bad


def untranslated(lang: str = "zh") -> list[tuple[str, str]]:
    """(where, message) for every message of the code that the catalog of `lang` lacks."""
    cat = catalog(lang)
    found, _ = shown_messages()
    return [(where, text) for text, where in found.items() if text not in cat]


def main() -> int:
    gaps = untranslated()
    _, bad = shown_messages()
    for where, text in gaps:
        print(f"{where}: {text!r}")
    for where in bad:
        print(f"{where}: a message built with an f-string or +: use msg(template, **fields)")
    print(f"{len(gaps)} message(s) without Chinese, {len(bad)} built so they cannot be translated")
    return 1 if gaps or bad else 0
