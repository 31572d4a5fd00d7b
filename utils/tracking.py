"""The reader's progress: every check() records (exercise, status, time) in a small JSON file.

The file survives a crash mid-write (write to a temporary file, then atomic os.replace); a corrupt
file is set aside and a fresh one started, never an error. HWLLM_PROGRESS overrides the location.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import time
import warnings
from pathlib import Path


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
            where = f"; it was moved to {aside}"
        except OSError:
            where = ""
        warnings.warn(f"progress file {p} could not be read ({e}){where}; starting afresh", stacklevel=2)
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


def record(report) -> None:
    """Remember the latest result of an exercise. Never raises: progress must not break a check."""
    try:
        data = load()
        entry = data["exercises"].get(report.name, {})
        entry.update(status=report.status, time=time.strftime("%Y-%m-%d %H:%M:%S"),
                     cases=f"{report.n_passed}/{report.n_cases}")
        if report.status == "passed":
            entry["first_passed"] = entry.get("first_passed", entry["time"])
        data["exercises"][report.name] = entry
        save(data)
    except Exception as e:  # a read-only home, a full disk: tell, don't fail
        warnings.warn(f"could not record progress: {e}", stacklevel=2)


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
    from .grader import EXERCISES, list_exercises
    from .grader import show as display

    seen = load()["exercises"]
    rows = []
    for name in list_exercises():
        entry = seen.get(name, {})
        rows.append((name, EXERCISES[name].chapter, entry.get("status", "not attempted"), entry.get("time", "")))
    table = Progress(rows)
    if show:
        display(table)
    return table
