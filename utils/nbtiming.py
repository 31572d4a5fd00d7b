"""pytest plugin (`-p utils.nbtiming`): per-notebook execution time under nbval, and the 15 s budget.

nbval reports one item per cell; this adds up every phase of every cell of a notebook (the kernel's
start included), prints a table at the end, and fails the session when a notebook is over budget.
"""

from __future__ import annotations

import os
from collections import defaultdict

BUDGET = float(os.environ.get("HWLLM_NOTEBOOK_BUDGET", "15"))
_seconds: dict = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _seconds:
        return
    tr = terminalreporter
    tr.section(f"notebook execution time (budget {BUDGET:g} s each)")
    for path, sec in sorted(_seconds.items(), key=lambda kv: -kv[1]):
        flag = "  OVER BUDGET" if sec > BUDGET else ""
        tr.write_line(f"{sec:6.1f} s  {path}{flag}")
    tr.write_line(f"{sum(_seconds.values()):6.1f} s  total over {len(_seconds)} notebooks")


def pytest_sessionfinish(session, exitstatus):
    over = [p for p, s in _seconds.items() if s > BUDGET]
    if over and session.exitstatus == 0:
        session.exitstatus = 1
