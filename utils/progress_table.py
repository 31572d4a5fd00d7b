"""The table of the reader's progress: a summary first, then every exercise of the book by part, in reading
order, with its best result beside the latest."""

from __future__ import annotations

import html

from .grader.registry import EXERCISES, list_exercises, part_of
from .grader.result import show as display
from .i18n import msg, tr
from .tracking import best_seconds, load

COLOUR = {"passed": "#1a7f37", "failed": "#cf222e", "not attempted": "#6e7781"}
HEADINGS = ("exercise", "chapter", "best", "latest", "last checked", "best time")


class Progress:
    """Every exercise with its best and latest result; HTML in Jupyter (a collapsible section per part), text
    elsewhere. rows: [(exercise, chapter, best, latest, last checked, best interview time)], the time as
    "m:ss" or "" (rows of five, as before practice existed, read as having no time)."""

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

    @staticmethod
    def timed(row) -> str:
        return row[5] if len(row) > 5 else ""

    def __str__(self) -> str:
        exercise, chapter, best, latest, last, fastest = map(tr, HEADINGS)
        w = max([len(r[0]) for r in self.rows] + [len(exercise)])
        c = max([len(r[1]) for r in self.rows] + [len(chapter)])
        out = [self.summary(), ""]
        for part, rows in self.parts():
            out.append(self.heading(part, rows, "  "))
            out.append(f"  {exercise:<{w}}  {chapter:<{c}}  {best:<13}  {latest:<13}  {last:<19}  {fastest}")
            out += [f"  {r[0]:<{w}}  {r[1]:<{c}}  {tr(r[2]):<13}  {tr(r[3]):<13}  {r[4]:<19}  {self.timed(r)}".rstrip()
                    for r in rows]
            out.append("")
        return "\n".join(out).rstrip()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cell = "text-align:left;padding:2px 12px 2px 0"
        sections = []
        for part, rows in self.parts():
            passed = sum(r[2] == "passed" for r in rows)
            body = "".join(
                f"<tr><td style='{cell}'><code>{html.escape(r[0])}</code></td>"
                f"<td style='{cell}'>{html.escape(r[1])}</td>"
                f"<td style='{cell};color:{COLOUR[r[2]]};font-weight:600'>{tr(r[2])}</td>"
                f"<td style='{cell};color:{COLOUR[r[3]]}'>{tr(r[3])}</td><td style='{cell}'>{r[4]}</td>"
                f"<td style='{cell}'>{self.timed(r)}</td></tr>"
                for r in rows)
            head = "".join(f"<th style='{cell}'>{tr(h)}</th>" for h in HEADINGS)
            sections.append(f"<details{' open' if passed < len(rows) else ''}><summary>"
                            f"{html.escape(self.heading(part, rows, ' '))}</summary>"
                            f"<table style='margin:4px 0 8px 0'>"
                            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>")
        return (f"<div class='hwllm-progress' style='text-align:left'><p><b>{html.escape(self.summary())}</b></p>"
                + "".join(sections) + "</div>")


def clock(seconds: float) -> str:
    """12:05 for 725 seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress(show: bool = True) -> Progress:
    """Show (and return) the best and latest result of every exercise in the book."""
    seen = load()["exercises"]
    rows = []
    for name in list_exercises():
        entry = seen.get(name, {})
        latest = entry.get("status", "not attempted")
        fastest = best_seconds(entry)
        rows.append((name, EXERCISES[name].chapter, entry.get("best", latest), latest, entry.get("time", ""),
                     "" if fastest is None else clock(fastest)))
    table = Progress(rows)
    if show:
        display(table)
    return table
