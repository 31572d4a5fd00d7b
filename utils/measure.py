"""Measurements the chapters show: wall-clock time (median of repeats) and comparisons with built-ins."""

from __future__ import annotations

import statistics
import time


def median_time(fn, *args, repeats: int = 7, warmup: int = 2, **kwargs) -> float:
    """Median seconds of `fn(*args, **kwargs)` over `repeats` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_times(candidates: dict, *args, repeats: int = 7, warmup: int = 2, **kwargs) -> list[tuple]:
    """[(label, seconds, ratio to the first candidate)] for each `label: fn` in `candidates`."""
    rows = [(label, median_time(fn, *args, repeats=repeats, warmup=warmup, **kwargs))
            for label, fn in candidates.items()]
    base = rows[0][1]
    return [(label, t, t / base) for label, t in rows]


def format_times(rows: list[tuple]) -> str:
    """A small fixed-width table of compare_times' rows."""
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'median':>10}  {'ratio':>6}"]
    lines += [f"{label:<{width}}  {t * 1e3:>8.3f}ms  {ratio:>5.2f}x" for label, t, ratio in rows]
    return "\n".join(lines)
