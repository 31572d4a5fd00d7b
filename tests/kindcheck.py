"""What the tests of every kind of exercise (tests/test_kind_*.py) check in the same way."""

from __future__ import annotations

import time

from utils.grader.core import evaluate


def timed(ex, impl):
    """(report, seconds): CPU seconds of this process, what the check costs whatever else the machine runs
    (CI runs the unit tests beside the website build, so wall time here would measure the build too)."""
    start = time.process_time()
    report = evaluate(ex, impl)
    return report, time.process_time() - start


def named(ex, mistake) -> float:
    """A registered mistake is rejected and diagnosed by its own name and message; returns the seconds."""
    report, seconds = timed(ex, mistake.impl)
    assert not report.passed, f"{mistake.name} passes"
    assert report.failure.mistake == mistake.name, str(report)
    assert mistake.message in str(report)
    return seconds
