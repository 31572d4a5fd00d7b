"""The result model of a check, and its rendering: Status, Problem, Failure, Report; text and HTML.

A report fits on one screen: the first failing case only, expected against got, the diagnosis, a hint.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from enum import Enum

from ..i18n import Msg, msg, tr


class Status(str, Enum):
    """What a check concluded. A str, so that the progress file and `report.status == "passed"` read plainly."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_ATTEMPTED = "not attempted"

    def __str__(self) -> str:
        return self.value


@dataclass
class Problem:
    """One way the result is wrong. `kind` is a stable key the tests and diagnoses use."""

    kind: str
    message: str
    where: str = ""                              # "output", "output[1]", "step 3, param 0", ...
    rows: list = field(default_factory=list)     # [(index, expected, got), ...]
    max_abs: float | None = None
    max_rel: float | None = None
    tolerance: tuple | None = None


@dataclass
class Failure:
    case: int
    note: str
    call: str
    problem: Problem
    diagnosis: str | None = None
    mistake: str | None = None
    frame: str | None = None


@dataclass
class Report:
    name: str
    signature: str
    status: Status
    n_cases: int
    n_passed: int
    failure: Failure | None = None
    checks: list = field(default_factory=list)   # what passed besides values: properties, purity, ...
    hint: str = ""               # the first rung of the exercise's hint ladder, never a later one
    hint_count: int = 0          # how many rungs the ladder has: the report points to `hint(name)` for the rest
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    @property
    def diagnosis(self) -> str | None:
        return self.failure.diagnosis if self.failure else None

    @property
    def kind(self) -> str | None:
        return self.failure.problem.kind if self.failure else None

    def __str__(self) -> str:
        return as_text(self)

    __repr__ = __str__      # Jupyter's text/plain and the terminal show the same one-screen report

    def _repr_html_(self) -> str:
        return as_html(self)


# --------------------------------------------------------------------------- rendering

NOT_ATTEMPTED = ("not attempted yet: replace `raise NotImplementedError(...)` with your code "
                 "and run this cell again.")


def number(v) -> str:
    """A scalar as a reader reads it: ints with separators, floats to 6 significant digits."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return repr(v)


def pair(expected, got) -> tuple[str, str]:
    """Expected and got, with as many digits as it takes to see that they differ (never "expected X, got X")."""
    if isinstance(expected, float) and isinstance(got, float) and expected != got:
        if math.isnan(expected) or math.isnan(got):
            return number(expected), number(got)
        for digits in (6, 9, 12, 17):
            e, g = f"{expected:.{digits}g}", f"{got:.{digits}g}"
            if e != g:
                return e, g
        return repr(expected), repr(got)
    return number(expected), number(got)


def lines(report: Report) -> list[tuple[str, str]]:
    """(label, text) rows shared by the text and HTML renderings."""
    rows = []
    if report.status is Status.NOT_ATTEMPTED:
        return [("", tr(NOT_ATTEMPTED))]
    if report.passed:
        rows.append(("", tr(msg("all {n} cases passed in {seconds:.2f} s", n=report.n_cases,
                                seconds=report.seconds))))
        rows.append((tr("checked"), tr("; ").join(tr(c) for c in report.checks)))
        return rows
    f = report.failure
    p = f.problem
    if f.call:
        total = (tr(msg("case {k} of {n}", k=f.case + 1, n=report.n_cases)) if f.case < report.n_cases
                 else tr("property check"))
        # a property's name and a call described in words (a msg) are translated; other calls are code
        call = tr(f.call) if isinstance(f.call, Msg) or f.case >= report.n_cases else f.call
        rows.append((total, call + (f"   [{tr(f.note)}]" if f.note else "")))
    rows.append((tr("problem"), tr(p.message)))
    if f.frame:
        rows.append((tr("in your code"), tr(f.frame)))
    for idx, exp, got in p.rows[:4]:
        at = f"[{', '.join(map(str, idx))}]" if idx else ""
        e, g = pair(exp, got)
        rows.append((f"{tr(p.where)}{at}", tr(msg("expected {expected}, got {got}", expected=e, got=g))))
    if p.max_abs is not None:
        error = msg("max abs {abs:.3g}, max rel {rel:.3g}", abs=p.max_abs, rel=p.max_rel)
        if p.tolerance:
            error = msg("max abs {abs:.3g}, max rel {rel:.3g} (tolerance rtol={rtol:g}, atol={atol:g})",
                        abs=p.max_abs, rel=p.max_rel, rtol=p.tolerance[0], atol=p.tolerance[1])
        rows.append((tr("error"), tr(error)))
    if f.diagnosis:
        rows.append((tr("diagnosis"), tr(f.diagnosis)))
    if report.hint:
        rows.append(hint_row(report))
    return rows


def hint_row(report: Report) -> tuple[str, str]:
    """The first rung only, and how to climb: ("hint 1 of 3", "... — more: `utils.hint("softmax")`"). Every
    notebook's setup cell has imported `utils`, so the call works as printed."""
    count = max(report.hint_count, 1)
    if count == 1:
        return tr("hint"), tr(report.hint)
    return (tr(msg("hint 1 of {count}", count=count)),
            tr(msg('{hint} — more: `utils.hint("{name}")`', hint=report.hint, name=report.name)))


_MARKS = {Status.PASSED: "✓ passed", Status.FAILED: "✗ failed", Status.NOT_ATTEMPTED: "… not attempted"}
_COLOURS = {Status.PASSED: "#1a7f37", Status.FAILED: "#cf222e", Status.NOT_ATTEMPTED: "#6e7781"}


def _headline(report: Report) -> tuple[str, str]:
    mark = tr(_MARKS[report.status])
    if report.status is Status.FAILED:
        mark += tr(msg(" ({k} of {n} cases passed before the failure)", k=report.n_passed, n=report.n_cases))
    return report.signature, mark


def as_text(report: Report) -> str:
    sig, mark = _headline(report)
    out = [f"{sig}: {mark}"]
    for label, text in lines(report):
        out.append(f"  {label}: {text}".rstrip() if label else f"  {text}")
    return "\n".join(out)


_CODE = re.compile(r"`([^`]+)`")


def rich(text: str) -> str:
    """Plain report text as HTML: escaped, `backticked` spans set as code, long words allowed to wrap."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


# Left-aligned whatever the notebook's table style (JupyterLab right-aligns and centres table cells); text wraps
# at spaces, and only a word longer than the line (a long call description) breaks inside.
_CELL = "text-align:left;vertical-align:top;padding:2px 10px 2px 0;border:none;background:none"
_TEXT = "white-space:pre-wrap;word-break:normal;overflow-wrap:anywhere"


def as_html(report: Report) -> str:
    sig, mark = _headline(report)
    colour = _COLOURS[report.status]
    body = "".join(
        f"<tr><th scope='row' style='{_CELL};color:#57606a;font-weight:normal;white-space:nowrap'>"
        f"{html.escape(label)}</th><td style='{_CELL};{_TEXT}'>{rich(text)}</td></tr>"
        for label, text in lines(report))
    return (f"<div class='hwllm-report' style='border-left:4px solid {colour};padding:6px 12px;margin:4px 0;"
            f"text-align:left;max-width:100%;overflow-x:auto'>"
            f"<div><b><code>{html.escape(sig)}</code></b> "
            f"<span style='color:{colour};font-weight:600'>{html.escape(mark)}</span></div>"
            f"<table style='border:none;margin:4px 0 0 0;border-collapse:collapse'>{body}</table></div>")


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(obj) -> None:
    """HTML in Jupyter, plain text anywhere else."""
    if in_notebook():
        from IPython.display import display
        bundle = {"text/plain": str(obj)}
        if hasattr(obj, "_repr_html_"):
            bundle["text/html"] = obj._repr_html_()
        display(bundle, raw=True)
    else:
        print(str(obj))
