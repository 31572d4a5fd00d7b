"""Hints as a ladder: a failed check shows the first rung; `hint(name)` shows one more rung per call.

    from utils import hint
    hint("softmax")        # rungs 1 and 2; the next call adds rung 3, and so on up to the formula
    hint("softmax", 3)     # rungs 1 to 3

An exercise declares its ladder as `hints=("a nudge (eq. sm-stable)", ..., "the formula")`, or one string
`hint=...` (a ladder of one rung). The report of a failed check shows rung 1 and
`more: utils.hint("softmax")` (every notebook's setup cell imports `utils`);
each call of `hint` shows every rung up to the next one, so a reader who skipped the report loses nothing.
What has been shown is remembered per kernel (per Python process), never written to disk.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from .grader.registry import get
from .grader.result import rich, show
from .i18n import msg, tr

_shown: dict[str, int] = {}      # exercise name -> the highest rung shown (the report shows rung 1)


@dataclass
class Hints:
    """Rungs 1..`upto` of an exercise's ladder, rendered as text or HTML."""

    name: str
    rungs: tuple
    upto: int

    def _lines(self) -> list[tuple[str, str]]:
        rows = [(tr(msg("{k} of {n}", k=k, n=len(self.rungs))), tr(text))
                for k, text in enumerate(self.rungs[: self.upto], start=1)]
        if not self.rungs:
            rows.append(("", tr("this exercise has no hints; its statement and the equations it cites say it all")))
        elif self.upto < len(self.rungs):
            rows.append((tr("more"), f'`utils.hint("{self.name}")`'))
        else:
            rows.append(("", tr("that was the last hint; the solution notebook has the code")))
        return rows

    def __str__(self) -> str:
        out = [tr(msg("hints for {name}:", name=self.name))]
        out += [f"  {label}: {text}" if label else f"  {text}" for label, text in self._lines()]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cell = "text-align:left;vertical-align:top;padding:2px 10px 2px 0;border:none;background:none"
        body = "".join(f"<tr><th scope='row' style='{cell};color:#57606a;font-weight:normal;white-space:nowrap'>"
                       f"{html.escape(label)}</th><td style='{cell};white-space:pre-wrap'>{rich(text)}</td></tr>"
                       for label, text in self._lines())
        title = rich(tr(msg("hints for `{name}`", name=self.name)))
        return (f"<div class='hwllm-hints' style='border-left:4px solid #9a6700;padding:6px 12px;margin:4px 0;"
                f"text-align:left'><div><b>{title}</b></div>"
                f"<table style='border:none;margin:4px 0 0 0;border-collapse:collapse'>{body}</table></div>")


def hints_for(name: str, rung: int | None = None) -> Hints:
    """What `hint(name, rung)` shows, and remember it: every rung up to `rung`, by default the next one."""
    rungs = get(name).ladder()
    if rung is None:
        rung = _shown.get(name, 1) + 1
    elif not isinstance(rung, int) or isinstance(rung, bool) or not 1 <= rung <= max(len(rungs), 1):
        raise ValueError(tr(msg("{name} has {n} hint(s): ask for a rung from 1 to {n}", name=name, n=len(rungs))))
    upto = min(rung, len(rungs))
    _shown[name] = max(_shown.get(name, 1), upto)
    return Hints(name, rungs, upto)


def hint(name: str, rung: int | None = None) -> None:
    """Show the hints of exercise `name` up to the next rung (or up to `rung`, counted from 1)."""
    show(hints_for(name, rung))
