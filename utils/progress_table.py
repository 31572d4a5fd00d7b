"""The table of the reader's progress: a summary first, then every exercise of the book by part, in reading
order, with its best result beside the latest."""

from __future__ import annotations

import html

from .grader.registry import EXERCISES, list_exercises, part_of
from .grader.result import show as display
from .i18n import msg, tr
from .tracking import load

COLOUR = {"passed": "#1a7f37", "failed": "#cf222e", "not attempted": "#6e7781"}
HEADINGS = ("exercise", "chapter", "best", "latest", "last checked")


class Progress:
    """Every exercise with its best and latest result; HTML in Jupyter (a collapsible section per part), text
    elsewhere. rows: [(exercise, chapter, best, latest, last checked)]."""

    def __init__(self, rows):
        self.rows = rows

    def summary(self) -> str:
        n = len(self.rows)
        count = {s: sum(r[2] == s for r in self.rows) for s in ("passed", "failed", "not attempted")}
        return tr(msg("{passed} of {n} exercises passed, {failed} failing, {waiting} not attempted",
                      passed=count["passed"], n=n, failed=count["failed"], waiting=count["not attempted"]))

    @staticmethod
    def heading(part: str, rows: list, gap: str) -> str:
        """'Part 1: foundations  (3 of 4 passed)'; a caption the catalog has is translated."""
        return tr(msg("{part}{gap}({passed} of {n} passed)", part=part, gap=gap,
                      passed=sum(r[2] == "passed" for r in rows), n=len(rows)))

    def parts(self) -> list[tuple[str, list]]:
        groups: dict = {}
        for row in self.rows:
            groups.setdefault(part_of(row[1]), []).append(row)
        return list(groups.items())

    def __str__(self) -> str:
        exercise, chapter, best, latest, last = map(tr, HEADINGS)
        w = max([len(r[0]) for r in self.rows] + [len(exercise)])
        c = max([len(r[1]) for r in self.rows] + [len(chapter)])
        out = [self.summary(), ""]
        for part, rows in self.parts():
            out.append(self.heading(part, rows, "  "))
            out.append(f"  {exercise:<{w}}  {chapter:<{c}}  {best:<13}  {latest:<13}  {last}")
            out += [f"  {e:<{w}}  {ch:<{c}}  {tr(b):<13}  {tr(s):<13}  {t}" for e, ch, b, s, t in rows]
            out.append("")
        return "\n".join(out).rstrip()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cell = "text-align:left;padding:2px 12px 2px 0"
        sections = []
        for part, rows in self.parts():
            passed = sum(r[2] == "passed" for r in rows)
            body = "".join(
                f"<tr><td style='{cell}'><code>{html.escape(e)}</code></td><td style='{cell}'>{html.escape(ch)}</td>"
                f"<td style='{cell};color:{COLOUR[b]};font-weight:600'>{tr(b)}</td>"
                f"<td style='{cell};color:{COLOUR[s]}'>{tr(s)}</td><td style='{cell}'>{t}</td></tr>"
                for e, ch, b, s, t in rows)
            head = "".join(f"<th style='{cell}'>{tr(h)}</th>" for h in HEADINGS)
            sections.append(f"<details{' open' if passed < len(rows) else ''}><summary>"
                            f"{html.escape(self.heading(part, rows, ' '))}</summary>"
                            f"<table style='margin:4px 0 8px 0'>"
                            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>")
        return (f"<div class='hwllm-progress' style='text-align:left'><p><b>{html.escape(self.summary())}</b></p>"
                + "".join(sections) + "</div>")


def progress(show: bool = True) -> Progress:
    """Show (and return) the best and latest result of every exercise in the book."""
    seen = load()["exercises"]
    rows = []
    for name in list_exercises():
        entry = seen.get(name, {})
        latest = entry.get("status", "not attempted")
        rows.append((name, EXERCISES[name].chapter, entry.get("best", latest), latest, entry.get("time", "")))
    table = Progress(rows)
    if show:
        display(table)
    return table
