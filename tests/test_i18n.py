"""The grader speaks the reader's language: every message it can show has its Chinese, and a report shown in
Chinese keeps no English sentence. (The per-mistake reports in Chinese are checked in test_exercises.)"""

import re

import pytest
import torch

from utils import i18n
from utils.grader import get, list_exercises, run
from utils.i18n import Msg, catalog, english_left, msg, speaking, tr

FIELD = re.compile(r"\{(\w*)[^{}]*\}")


def test_every_message_of_the_code_has_chinese():
    gaps = i18n.untranslated("zh")
    assert not gaps, "messages without Chinese (add them to utils/locale/zh/*.yml):\n" + "\n".join(
        f"  {where}: {text!r}" for where, text in gaps[:40])


def test_no_message_is_built_so_that_it_cannot_be_translated():
    _, bad = i18n.shown_messages()
    assert not bad, "messages built with f-strings or +; use msg(template, **fields):\n  " + "\n  ".join(bad)


def test_catalog_entries_are_well_formed():
    cat = catalog("zh")
    assert len(cat) > 100
    for en, zh in cat.items():
        assert isinstance(zh, str) and zh.strip(), f"empty translation of {en!r}"
        assert sorted(FIELD.findall(en)) == sorted(FIELD.findall(zh)), f"fields differ: {en!r} -> {zh!r}"
        if re.search(r"[A-Za-z]{3,}", FIELD.sub("", _strip_code(en))):
            assert re.search(r"[\u4e00-\u9fff]", zh), f"not Chinese: {en!r} -> {zh!r}"


def _strip_code(text):
    return re.sub(r"`[^`]*`", "", text)


def test_language_is_chosen_by_call_or_environment(monkeypatch):
    monkeypatch.setattr(i18n, "_chosen", None)
    monkeypatch.delenv(i18n.ENV, raising=False)
    assert i18n.language() == "en"
    monkeypatch.setenv(i18n.ENV, "zh_CN")
    assert i18n.language() == "zh"
    i18n.set_language("en")
    assert i18n.language() == "en"             # the call wins over the environment
    with speaking("zh"):
        assert i18n.language() == "zh"
    assert i18n.language() == "en"
    with pytest.raises(ValueError):
        i18n.set_language("fr")


def test_a_message_with_values_is_english_text_and_translates_with_its_values():
    m = msg("case {k} of {n}", k=3, n=19)
    assert m == "case 3 of 19" and isinstance(m, str)
    with speaking("zh"):
        text = tr(m)
    assert "3" in text and "19" in text and re.search(r"[\u4e00-\u9fff]", text)
    import pickle
    again = pickle.loads(pickle.dumps(m))
    assert isinstance(again, Msg) and again.template == m.template


def _softmax_overflows(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim, keepdim=True)


def _raises(x, dim=-1):
    raise ValueError("boom")


def _numpy(x, dim=-1):
    return torch.softmax(x, dim).numpy()


def _nan(x, dim=-1):
    return torch.full_like(x, float("nan"))


def _wrong_shape(x, dim=-1):
    return torch.softmax(x, dim).sum(dim)


def _forbidden(x, dim=-1):
    return torch.softmax(x, dim)


def _edits_input(x, dim=-1):
    x.sub_(x.amax(dim, keepdim=True))
    return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)


def _endless(x, dim=-1):
    while True:
        pass


def _stub(x, dim=-1):
    raise NotImplementedError


BAD = [_softmax_overflows, _raises, _numpy, _nan, _wrong_shape, _forbidden, _edits_input, _stub, _endless,
       "not a function"]


@pytest.mark.parametrize("impl", BAD, ids=lambda f: getattr(f, "__name__", "string"))
def test_reports_on_bad_input_are_chinese(impl, monkeypatch):
    if impl is _endless:
        monkeypatch.setattr(get("softmax"), "timeout", 0.3)
    report = run("softmax", impl)
    i18n.missing().clear()
    with speaking("zh"):
        text, html = str(report), report._repr_html_()
    assert re.search(r"[\u4e00-\u9fff]", text), text
    assert not english_left(text.split("\n", 2)[-1] if report.failure and report.failure.call else text), text
    assert not i18n.missing(), f"shown untranslated: {sorted(i18n.missing())}\n{text}"
    assert "<table" in html or "not" in text


def test_the_overflow_is_named_in_chinese():
    report = run("softmax", _softmax_overflows)
    with speaking("zh"):
        text = str(report)
    assert report.failure.mistake and tr(report.diagnosis, "zh") in text
    assert "溢" in text, text


@pytest.mark.parametrize("name", list_exercises())
def test_every_hint_has_chinese(name):
    for rung in get(name).ladder():
        assert rung in catalog("zh"), f"{name}: hint without Chinese: {rung!r}"
