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
    """Tests never write to the reader's real progress file."""
    monkeypatch.setenv("HWLLM_PROGRESS", str(tmp_path / "progress.json"))
