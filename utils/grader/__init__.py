"""utils.grader: check the reader's implementation of an exercise against PyTorch.

    check(name, impl)   run every case, show the report, record progress, raise CheckFailed on failure
    run(name, impl)     the same, silently: returns a Report (.passed, str(report))
    list_exercises()    every registered exercise name
"""

from __future__ import annotations

from .core import Case, Exercise, Mistake, Property, Report, evaluate
from .kinds import ModuleExercise, OptimizerExercise, OptimizerRun, Script, Step
from .registry import EXERCISES, get, list_exercises, register


class CheckFailed(AssertionError):
    """A case of the exercise failed; the report above says which and why."""


def run(name: str, impl) -> Report:
    """Grade `impl` silently and return the Report."""
    return evaluate(get(name), impl)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    """A failed check is explained by the report above it: show one line, not the grader's frames."""
    stb = [f"\x1b[31m{etype.__name__}\x1b[39m: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def _quiet_check_failures() -> None:
    """In Jupyter, CheckFailed still fails the cell (so CI notices) but prints a single line."""
    from IPython import get_ipython
    shell = get_ipython()
    if shell is not None and not shell.custom_exceptions:
        shell.set_custom_exc((CheckFailed,), _short_traceback)


def show(obj) -> None:
    """HTML in Jupyter, plain text anywhere else."""
    if _in_notebook():
        from IPython.display import display
        display(obj)
    else:
        print(str(obj))


def check(name: str, impl) -> Report:
    """Grade `impl`, show the report, record progress; raise CheckFailed when a case fails."""
    __tracebackhide__ = True  # IPython and pytest hide this frame
    from ..tracking import record

    report = run(name, impl)
    if _in_notebook():
        _quiet_check_failures()
    show(report)
    record(report)
    if report.status == "failed":
        reason = report.diagnosis or report.failure.problem.message
        raise CheckFailed(f"{name}: {reason}") from None
    return None


__all__ = ["Case", "CheckFailed", "EXERCISES", "Exercise", "Mistake", "ModuleExercise", "OptimizerExercise",
           "OptimizerRun", "Property", "Report", "Script", "Step", "check", "get", "list_exercises",
           "register", "run", "show"]
