"""The table of the reader's progress: every exercise of the book, in reading order, with its status."""

from __future__ import annotations

import html

from .grader.registry import EXERCISES, list_exercises
from .grader.result import show as display
from .tracking import load


class Progress:
    """A table of every exercise of the book with its status; HTML in Jupyter, text elsewhere."""

    def __init__(self, rows):
        self.rows = rows  # [(exercise, chapter, status, time)]

    def summary(self) -> str:
        n = len(self.rows)
        count = {s: sum(r[2] == s for r in self.rows) for s in ("passed", "failed", "not attempted")}
        return (f"{count['passed']} of {n} exercises passed, {count['failed']} failing, "
                f"{count['not attempted']} not attempted")

    def __str__(self) -> str:
        w = max([len(r[0]) for r in self.rows] + [8])
        c = max([len(r[1]) for r in self.rows] + [7])
        out = [f"{'exercise':<{w}}  {'chapter':<{c}}  {'status':<13}  last checked"]
        out += [f"{e:<{w}}  {ch:<{c}}  {s:<13}  {t}" for e, ch, s, t in self.rows]
        return "\n".join(out + ["", self.summary()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = {"passed": "#1a7f37", "failed": "#cf222e", "not attempted": "#6e7781"}
        body = "".join(
            f"<tr><td><code>{html.escape(e)}</code></td><td>{html.escape(ch)}</td>"
            f"<td style='color:{colour[s]}'>{s}</td><td>{t}</td></tr>" for e, ch, s, t in self.rows)
        return (f"<table><thead><tr><th>exercise</th><th>chapter</th><th>status</th><th>last checked</th>"
                f"</tr></thead><tbody>{body}</tbody></table><p>{html.escape(self.summary())}</p>")


def progress(show: bool = True) -> Progress:
    """Show (and return) the status of every exercise in the book."""
    seen = load()["exercises"]
    rows = []
    for name in list_exercises():
        entry = seen.get(name, {})
        rows.append((name, EXERCISES[name].chapter, entry.get("status", "not attempted"), entry.get("time", "")))
    table = Progress(rows)
    if show:
        display(table)
    return table
