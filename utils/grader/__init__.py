"""utils.grader: check the reader's implementation of an exercise against PyTorch.

    check(name, impl)   run every case, show the report, record progress, raise CheckFailed on failure
    run(name, impl)     the same, silently: returns a Report (.passed, .status, str(report))
    list_exercises()    every registered exercise name, in reading order

The engine: core.py (declarations, the function kind, judge/diagnose/evaluate), protocol.py (how every
kind drives code through a case), kinds/ (modules, optimizers, schedules, ...), result.py (the report),
compare.py, sandbox.py (forbidden calls, time limit), registry.py; declarations in exercises/<part>/.
"""

from __future__ import annotations

from ..i18n import tr
from ..tracking import record
from . import lazy_dynamo
from .core import Case, Exercise, Mistake, Property, evaluate
from .kinds import ModuleExercise, OptimizerExercise, OptimizerRun, Script, Step
from .registry import EXERCISES, get, list_exercises, register
from .result import Report, Status, in_notebook, show

lazy_dynamo.install()        # an optimizer check must not wait 2 s for torch._dynamo it never uses


class CheckFailed(AssertionError):
    """A case of the exercise failed; the report above says which and why."""


def run(name: str, impl) -> Report:
    """Grade `impl` silently and return the Report."""
    return evaluate(get(name), impl)


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    """A failed check is explained by the report above it: show its gist, not the grader's frames, wrapped at
    spaces (notebook front ends break long error lines anywhere, even inside a word)."""
    import textwrap
    text = textwrap.fill(f"{etype.__name__}: {value}", width=100, subsequent_indent="    ",
                         break_long_words=False, break_on_hyphens=False)
    stb = ["\x1b[31m" + text.replace(": ", ":\x1b[39m ", 1)]
    shell._showtraceback(etype, value, stb)
    return stb


def _quiet_check_failures() -> None:
    """In Jupyter, CheckFailed still fails the cell (so CI notices) but prints a single line."""
    from IPython import get_ipython
    shell = get_ipython()
    if shell is not None and not shell.custom_exceptions:
        shell.set_custom_exc((CheckFailed,), _short_traceback)


def _execution_count():
    from IPython import get_ipython
    shell = get_ipython()
    return getattr(shell, "execution_count", None)


class Checked(Report):
    """The Report that `check` returns. It was shown already: when `check(...)` is the last line of a cell,
    Jupyter does not show it a second time; displayed from a later cell, it shows as any Report."""

    def _ipython_display_(self):
        if getattr(self, "shown_in", None) == _execution_count():
            return
        show(self)


def check(name: str, impl) -> Report:
    """Grade `impl`, show the report, record progress; raise CheckFailed when a case fails."""
    __tracebackhide__ = True  # IPython and pytest hide this frame
    report = run(name, impl)
    if in_notebook():
        _quiet_check_failures()
    show(report)
    record(report)
    if report.status is Status.FAILED:
        reason = report.diagnosis or report.failure.problem.message
        raise CheckFailed(f"{name}: {tr(reason)}") from None
    report.__class__ = Checked
    report.shown_in = _execution_count() if in_notebook() else None
    return report


__all__ = ["Case", "CheckFailed", "EXERCISES", "Exercise", "Mistake", "ModuleExercise", "OptimizerExercise",
           "OptimizerRun", "Property", "Report", "Status", "Script", "Step", "check", "get", "list_exercises",
           "register", "run", "show"]
