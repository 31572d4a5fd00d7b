"""Only the reader's own actions write the reader's progress: CI's executor and nbval never do.

Each test executes the softmax chapter (whose check() cells would record progress) in a subprocess
with a clean environment: a temporary HOME, and neither HWLLM_NO_PROGRESS nor HWLLM_PROGRESS set, so
that only the tool itself can keep the kernel from writing <HOME>/.hand-written-llm/progress.json.
The control executes the same notebook with a plain nbclient and shows that the file is then written,
so the other two tests cannot pass for a wrong reason (a wrong path, a check that records nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.notebook import ROOT

NOTEBOOK = "chapters/foundations/softmax.ipynb"

PLAIN_NBCLIENT = f"""
import nbformat
from nbclient import NotebookClient
nb = nbformat.read({NOTEBOOK!r}, as_version=4)
NotebookClient(nb, timeout=120, resources={{"metadata": {{"path": "chapters/foundations"}}}}).execute()
"""


@pytest.fixture
def clean_home(tmp_path):
    """(env, progress file) for a subprocess: a fresh HOME, none of the progress variables."""
    import matplotlib

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HWLLM_NO_PROGRESS", "HWLLM_PROGRESS")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1")
    env["MPLCONFIGDIR"] = matplotlib.get_cachedir()  # the font cache, not rebuilt for a throwaway HOME
    return env, home / ".hand-written-llm" / "progress.json"


def run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_ci_executor_writes_no_progress(clean_home, tmp_path):
    env, progress = clean_home
    run([sys.executable, "-I", "utils/execute.py", "--no-stage", "--times", str(tmp_path / "times.json"),
         NOTEBOOK], env)  # as `make notebooks` runs it, less the staging (CI's build may be reading it)
    assert (tmp_path / "times.json").exists()  # it did execute the notebook
    assert not progress.exists(), f"the executor wrote the reader's progress: {progress.read_text()}"


def test_nbval_writes_no_progress(clean_home):
    env, progress = clean_home
    done = run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", NOTEBOOK], env)
    assert " passed" in done.stdout
    assert not progress.exists(), f"nbval wrote the reader's progress: {progress.read_text()}"


def test_control_a_plain_kernel_does_write_progress(clean_home):
    env, progress = clean_home
    run([sys.executable, "-c", PLAIN_NBCLIENT], env)
    assert progress.exists(), "a reader's kernel should record the checks of the softmax chapter"
    assert '"softmax"' in Path(progress).read_text()
