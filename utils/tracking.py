"""The reader's progress file: every check() the reader runs records (exercise, status, time) in it.

Only the reader's own actions write it: the book's tools (CI, the website build, nbval, pytest) set
HWLLM_NO_PROGRESS=1 for the kernels they start, and then `record` writes nothing. This module imports
nothing of the grader; the table of progress (utils.progress_table) reads the registry and this file.

The file survives a crash mid-write (write to a temporary file, then atomic os.replace); a corrupt
file is set aside and a fresh one started, never an error. HWLLM_PROGRESS overrides the location.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from .i18n import msg, tr


def path() -> Path:
    env = os.environ.get("HWLLM_PROGRESS")
    return Path(env) if env else Path.home() / ".hand-written-llm" / "progress.json"


def load() -> dict:
    p = path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("exercises", {}), dict):
            raise ValueError("unexpected structure")
        return data
    except FileNotFoundError:
        return {"exercises": {}}
    except (ValueError, OSError) as e:
        aside = p.with_name(f"{p.name}.corrupt-{int(time.time())}")
        try:
            p.replace(aside)
            where = msg("; it was moved to {aside}", aside=str(aside))
        except OSError:
            where = ""
        warnings.warn(tr(msg("progress file {path} could not be read ({error}){where}; starting afresh",
                             path=str(p), error=str(e), where=where)), stacklevel=2)
        return {"exercises": {}}


def save(data: dict) -> None:
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".progress-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


RANK = {"not attempted": 0, "failed": 1, "passed": 2}


def record(report) -> None:
    """Remember the latest result of an exercise and the best one so far (passing, then experimenting and
    failing, still reads "passed" as the best). Never raises: progress must not break a check."""
    if os.environ.get("HWLLM_NO_PROGRESS") == "1":
        return
    try:
        data = load()
        entry = data["exercises"].get(report.name, {})
        status = str(report.status)
        entry.update(status=status, time=time.strftime("%Y-%m-%d %H:%M:%S"),
                     cases=f"{report.n_passed}/{report.n_cases}")
        if RANK.get(status, 0) >= RANK.get(entry.get("best", "not attempted"), 0):
            entry["best"] = status
        if status == "passed":
            entry["first_passed"] = entry.get("first_passed", entry["time"])
        data["exercises"][report.name] = entry
        save(data)
    except Exception as e:  # a read-only home, a full disk: tell, don't fail
        warnings.warn(tr(msg("could not record progress: {error}", error=str(e))), stacklevel=2)


def record_practice(name: str, mode: str, *, passed: bool, seconds: float | None = None,
                    mistake: str | None = None) -> None:
    """Remember a submission of a mock interview (mode "interview") or a find-the-bug drill (mode "drill") under
    the exercise's entry, key "practice" (a store written before practice existed has none and still loads):

        attempts, passes, best_seconds, last_seconds     interview submissions, interviews passed, times to pass
        drill_attempts, drills                           drill submissions, the mistakes whose drill was fixed

    `seconds` is the time from the start of the session to its first pass (None otherwise). Never raises."""
    if os.environ.get("HWLLM_NO_PROGRESS") == "1":
        return
    try:
        data = load()
        entry = data["exercises"].setdefault(name, {})
        practice = entry.get("practice") if isinstance(entry.get("practice"), dict) else {}
        if mode == "drill":
            practice["drill_attempts"] = practice.get("drill_attempts", 0) + 1
            if passed and mistake and mistake not in practice.get("drills", []):
                practice["drills"] = practice.get("drills", []) + [mistake]
        else:
            practice["attempts"] = practice.get("attempts", 0) + 1
            if passed and seconds is not None:
                practice["passes"] = practice.get("passes", 0) + 1
                practice["last_seconds"] = round(float(seconds), 1)
                best = practice.get("best_seconds")
                practice["best_seconds"] = round(float(seconds), 1) if best is None else min(best, round(seconds, 1))
        practice["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        entry["practice"] = practice
        save(data)
    except Exception as e:  # a read-only home, a full disk: tell, don't fail
        warnings.warn(tr(msg("could not record progress: {error}", error=str(e))), stacklevel=2)


def best_seconds(entry: dict) -> float | None:
    """The fastest pass of a mock interview on this exercise, from its progress entry (None: never passed)."""
    practice = entry.get("practice")
    return practice.get("best_seconds") if isinstance(practice, dict) else None
