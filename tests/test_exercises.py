"""Every registered exercise, generically: the book's solution passes, every mistake is rejected with its
own diagnosis, the exercise notebook's stub is 'not attempted', and nothing is registered half-done."""

import pytest

from utils.grader import get, list_exercises, run
from utils.grader.result import rich
from utils.i18n import english_left, missing, speaking, tr
from utils.notebook import ROOT

NAMES = list_exercises()
MISTAKES = [(name, m) for name in NAMES for m in get(name).mistakes]
MIN_MISTAKES = 5      # the issues ask for at least five named mistakes per exercise


@pytest.mark.parametrize("name", NAMES)
def test_book_solution_passes(name, book):
    ex = get(name)
    impl = book(ex.chapter)[name]
    report = run(name, impl)
    assert report.passed, f"the solution in chapters/{ex.chapter}.ipynb fails:\n{report}"


@pytest.mark.parametrize("name,mistake", MISTAKES, ids=[f"{n}: {m.name}" for n, m in MISTAKES])
def test_mistake_is_rejected_and_diagnosed(name, mistake):
    report = run(name, mistake.impl)
    assert not report.passed, f"mistake {mistake.name!r} passes the grader of {name}"
    assert report.failure.mistake == mistake.name, (
        f"mistake {mistake.name!r} was diagnosed as {report.failure.mistake!r}:\n{report}")
    assert report.diagnosis == mistake.message
    assert mistake.message in str(report) and rich(mistake.message) in report._repr_html_()
    missing().clear()
    with speaking("zh"):                   # the same report in Chinese: every row translated
        text = str(report)
    assert tr(mistake.message, "zh") in text
    body = text.split("\n")[0].split(": ", 1)[-1] + "\n" + "\n".join(text.split("\n")[2:])  # all but the call
    assert not english_left(body), f"English left in the Chinese report: {english_left(body)}\n{text}"
    assert not missing(), f"shown untranslated: {sorted(missing())}\n{text}"


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_not_attempted(name, book):
    ex = get(name)
    stub = book(ex.chapter, stubs=True)[name]
    report = run(name, stub)
    assert report.status == "not attempted", str(report)
    assert "not attempted" in str(report)


@pytest.mark.parametrize("name", NAMES)
def test_exercise_is_complete(name, book):
    ex = get(name)
    assert (ROOT / "chapters" / f"{ex.chapter}.ipynb").exists(), f"{name}: no chapter {ex.chapter}"
    assert len(ex.all_cases()) >= 5, f"{name}: fewer than 5 cases"
    assert len(ex.mistakes) >= MIN_MISTAKES, f"{name}: fewer than {MIN_MISTAKES} registered mistakes"
    assert len({m.name for m in ex.mistakes}) == len(ex.mistakes), f"{name}: two mistakes share a name"
    assert len({m.message for m in ex.mistakes}) == len(ex.mistakes), f"{name}: two mistakes share a message"
    assert name in book(ex.chapter), f"{name}: chapters/{ex.chapter}.ipynb has no solution cell defining it"
    assert ex.signature.startswith(name), f"{name}: the signature shown in reports names something else"


@pytest.mark.parametrize("name", NAMES)
def test_cases_are_deterministic(name):
    ex = get(name)
    first = [ex.outcome(ex.oracle, c, None) for c in ex.all_cases()]
    again = [ex.outcome(ex.oracle, c, None) for c in ex.all_cases()]
    from utils.grader.compare import same
    for i, (a, b) in enumerate(zip(first, again)):
        assert a.error is None, f"{name}: the oracle raises on case {i}: {a.error!r}"
        assert same([v for _, v in a.parts], [v for _, v in b.parts], rtol=0, atol=0), f"{name}: case {i} varies"
