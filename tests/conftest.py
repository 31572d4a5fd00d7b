import functools

import pytest

from utils.notebook import load_solutions


@functools.cache
def _solutions(chapter: str, stubs: bool = False) -> dict:
    return load_solutions(chapter, stubs=stubs)


@pytest.fixture
def book():
    """book(chapter) -> namespace of the chapter's solution cells; book(chapter, stubs=True): exercise stubs."""
    return _solutions


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    """Tests never write to the reader's real progress file: each test records into its own file
    (HWLLM_NO_PROGRESS, which the tools set, is lifted so that the recording itself can be tested)."""
    monkeypatch.setenv("HWLLM_PROGRESS", str(tmp_path / "progress.json"))
    monkeypatch.delenv("HWLLM_NO_PROGRESS", raising=False)
