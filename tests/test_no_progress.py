"""Only the reader's own actions write the reader's progress: CI's executor and nbval never do.

Each test executes a two-cell notebook whose check() of a correct softmax would record progress (a whole
chapter costs more and proves no more) in a subprocess with a clean environment: a temporary HOME, and
neither HWLLM_NO_PROGRESS nor HWLLM_PROGRESS set, so that only the tool itself can keep the kernel from
writing <HOME>/.hand-written-llm/progress.json. The control executes the same notebook with a plain nbclient
and shows that the file is then written, so the other two tests cannot pass for a wrong reason (a wrong path,
a check that records nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.notebook import ROOT

CELLS = [f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport torch\nfrom utils import check",
         "def softmax(x, dim=-1):\n    e = (x - x.amax(dim, keepdim=True)).exp()\n"
         "    return e / e.sum(dim, keepdim=True)\n\ncheck('softmax', softmax)"]

PLAIN_NBCLIENT = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=120).execute()
"""


@pytest.fixture
def notebook(tmp_path):
    """The notebook, inside the repository (under _build/, ignored by git) as the book's notebooks are: the tools
    are run on the book, and the repository's conftest.py is part of what keeps nbval from writing progress."""
    import nbformat

    path = ROOT / "_build" / "no-progress" / f"{tmp_path.name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS]), path)
    yield str(path.relative_to(ROOT))
    path.unlink()


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


def test_the_ci_executor_writes_no_progress(clean_home, tmp_path, notebook):
    env, progress = clean_home
    run([sys.executable, "-I", "utils/execute.py", "--no-stage", "--times", str(tmp_path / "times.json"),
         notebook], env)  # as `make notebooks` runs it, less the staging (CI's build may be reading it)
    assert (tmp_path / "times.json").exists()  # it did execute the notebook
    assert not progress.exists(), f"the executor wrote the reader's progress: {progress.read_text()}"


def test_nbval_writes_no_progress(clean_home, notebook):
    env, progress = clean_home
    done = run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", notebook], env)
    assert " passed" in done.stdout
    assert not progress.exists(), f"nbval wrote the reader's progress: {progress.read_text()}"


def test_control_a_plain_kernel_does_write_progress(clean_home, notebook):
    env, progress = clean_home
    run([sys.executable, "-c", PLAIN_NBCLIENT, notebook], env)
    assert progress.exists(), "a reader's kernel should record the check of softmax"
    assert '"softmax"' in Path(progress).read_text()
