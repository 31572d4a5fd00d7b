"""The grader's contract: bad input of every kind gets its own clear message and never escapes as a crash;
check() shows, records and raises as promised; module and optimizer classes are driven correctly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.grader import (
    Case,
    CheckFailed,
    Exercise,
    ModuleExercise,
    OptimizerExercise,
    OptimizerRun,
    Property,
    Script,
    Step,
    check,
    get,
    list_exercises,
    run,
)
from utils.grader.inputs import call, case, randn


def good_softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def good_log_softmax(x, dim=-1):
    z = x - x.amax(dim, keepdim=True)
    return z - torch.exp(z).sum(dim, keepdim=True).log()


# --------------------------------------------------------------------------- bad inputs, one each

def test_a_raising_function_shows_the_readers_own_line():
    def softmax(x, dim=-1):
        total = x.sum(dim)
        return total[10_000]   # the reader's bug

    report = run("softmax", softmax)
    assert report.kind == "exception"
    assert "IndexError" in report.failure.problem.message
    assert "total[10_000]" in report.failure.frame and "in softmax" in report.failure.frame
    assert "utils/grader" not in str(report)


def test_wrong_shape():
    report = run("softmax", lambda x, dim=-1: good_softmax(x, dim).sum(dim))
    assert report.kind == "wrong-shape"
    assert "shape" in report.failure.problem.message and "expected (7,)" in report.failure.problem.message


def test_wrong_dtype():
    report = run("softmax", lambda x, dim=-1: good_softmax(x, dim).double())
    assert report.kind == "wrong-dtype"
    assert "torch.float64" in report.failure.problem.message and "torch.float32" in report.failure.problem.message


def test_nan_where_the_answer_is_finite():
    report = run("softmax", lambda x, dim=-1: good_softmax(x, dim) * torch.nan)
    assert report.kind == "not-finite"
    assert "NaN" in report.failure.problem.message


def test_numpy_instead_of_torch():
    report = run("softmax", lambda x, dim=-1: np.exp(x.numpy()) / np.exp(x.numpy()).sum(dim, keepdims=True))
    assert report.kind == "returned-numpy"
    assert "numpy" in report.failure.problem.message and "torch.Tensor" in report.failure.problem.message


def test_a_list_instead_of_a_tensor():
    report = run("softmax", lambda x, dim=-1: good_softmax(x, dim).tolist())
    assert report.kind == "wrong-type" and "list" in report.failure.problem.message


def test_forgotten_return():
    def softmax(x, dim=-1):
        good_softmax(x, dim)

    report = run("softmax", softmax)
    assert report.kind == "returned-none" and "return" in report.failure.problem.message


def test_mutating_the_input():
    def softmax(x, dim=-1):
        x.sub_(x.amax(dim, keepdim=True))
        e = x.exp()
        return e / e.sum(dim, keepdim=True)

    report = run("softmax", softmax)
    assert report.kind == "mutated-input"
    assert "in place" in report.failure.problem.message


def _from_import(x, dim=-1):
    from torch.nn.functional import softmax as sm
    return sm(x, dim)


@pytest.mark.parametrize("impl,name", [
    (lambda x, dim=-1: torch.softmax(x, dim), "torch.softmax"),
    (lambda x, dim=-1: F.softmax(x, dim), "F.softmax"),
    (lambda x, dim=-1: x.softmax(dim), "Tensor.softmax"),
    (lambda x, dim=-1: torch.special.softmax(x, dim), "torch.special.softmax"),
    (lambda x, dim=-1: nn.Softmax(dim)(x), "F.softmax"),
    (_from_import, "F.softmax"),
    (lambda x, dim=-1: torch.exp(x - torch.logsumexp(x, dim, keepdim=True)), "torch.logsumexp"),
    (lambda x, dim=-1: torch.exp(x.log_softmax(dim)), "Tensor.log_softmax"),
], ids=["torch.softmax", "F.softmax", "method", "special", "nn.Softmax", "from-import", "logsumexp", "log_softmax"])
def test_forbidden_calls_are_intercepted_and_named(impl, name):
    report = run("softmax", impl)
    assert report.kind == "forbidden-call"
    assert name in report.failure.problem.message


def test_forbidden_calls_are_allowed_again_after_the_check():
    run("softmax", lambda x, dim=-1: torch.softmax(x, dim))
    assert torch.allclose(torch.softmax(torch.zeros(3), 0), torch.full((3,), 1 / 3))


@pytest.fixture
def quick_timeout():
    ex = get("softmax")
    before = ex.timeout
    ex.timeout = 0.5
    yield
    ex.timeout = before


def test_an_endless_loop_is_stopped(quick_timeout):
    def softmax(x, dim=-1):
        while True:
            try:
                x = x + 0
            except Exception:   # a reader's catch-all must not swallow the time limit
                pass

    start = time.perf_counter()
    report = run("softmax", softmax)
    assert time.perf_counter() - start < 5
    assert report.kind == "timeout"
    assert "endless loop" in report.failure.problem.message
    assert run("softmax", good_softmax).passed   # nothing left armed after the stop
    time.sleep(0.7)
    assert run("softmax", good_softmax).passed


def test_something_that_is_not_a_function():
    report = run("softmax", 42)
    assert report.kind == "wrong-type" and "expects your function" in report.failure.problem.message


def test_unknown_exercise_suggests_the_name():
    with pytest.raises(KeyError, match="did you mean 'softmax'"):
        run("sofmax", good_softmax)


# --------------------------------------------------------------------------- check(), reports, progress

def test_check_passes_quietly_and_records(capsys):
    from utils.tracking import load
    assert check("softmax", good_softmax).passed
    out = capsys.readouterr().out
    assert "passed" in out
    assert load()["exercises"]["softmax"]["status"] == "passed"


def test_check_raises_check_failed_after_showing_the_report(capsys):
    from utils.tracking import load

    def no_shift(x, dim=-1):
        return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)

    with pytest.raises(CheckFailed, match="overflows") as info:
        check("softmax", no_shift)
    assert isinstance(info.value, AssertionError)
    out = capsys.readouterr().out
    assert "diagnosis" in out and "Subtract the max" in out
    assert load()["exercises"]["softmax"]["status"] == "failed"


def test_a_stub_is_not_attempted_and_does_not_raise(capsys):
    def softmax(x, dim=-1):
        raise NotImplementedError("Exercise: write your code here")

    assert check("softmax", softmax).status == "not attempted"
    assert "not attempted" in capsys.readouterr().out


def test_a_report_fits_on_one_screen():
    report = run("softmax", lambda x, dim=-1: torch.exp(x) / torch.exp(x).sum(dim, keepdim=True))
    text = str(report)
    assert len(text.splitlines()) <= 15
    assert "case" in text and "expected" in text and "got" in text and "diagnosis" in text and "hint" in text


def test_html_report_escapes_the_readers_text():
    def softmax(x, dim=-1):
        raise ValueError("<script>alert(1)</script>")

    html = run("softmax", softmax)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_progress_write_is_atomic(monkeypatch):
    import utils.tracking as progress
    check("softmax", good_softmax)
    before = progress.path().read_text()

    def crash(*args, **kwargs):
        raise OSError("disk vanished mid-write")

    monkeypatch.setattr(progress.os, "replace", crash)
    with pytest.warns(UserWarning, match="could not record progress"):
        check("log_softmax", good_log_softmax)
    assert progress.path().read_text() == before
    assert not list(progress.path().parent.glob(".progress-*"))


def test_a_corrupt_progress_file_is_set_aside():
    import utils.tracking as progress
    progress.path().parent.mkdir(parents=True, exist_ok=True)
    progress.path().write_text("{not json")
    with pytest.warns(UserWarning, match="could not be read"):
        check("softmax", good_softmax)
    assert progress.load()["exercises"]["softmax"]["status"] == "passed"
    assert list(progress.path().parent.glob("progress.json.corrupt-*"))


def test_progress_table_lists_every_exercise():
    from utils import progress
    check("softmax", good_softmax)
    table = progress(show=False)
    assert [r[0] for r in table.rows] == list_exercises()
    assert dict((r[0], r[2]) for r in table.rows)["softmax"] == "passed"
    assert f"1 of {len(list_exercises())} exercises passed" in table.summary()
    assert "softmax" in str(table) and "<table" in table._repr_html_()


def test_list_exercises_follows_the_table_of_contents():
    names = list_exercises()
    assert names[:2] == ["softmax", "log_softmax"]


# --------------------------------------------------------------------------- properties, modules, optimizers

def _rows(seed):
    return call(randn(3, 4, seed=seed))


def test_a_broken_property_is_reported_by_name():
    ex = Exercise(name="double", chapter="foundations/softmax", signature="double(x)", oracle=lambda x: 2 * x,
                  cases=lambda: [case(_rows, seed=s) for s in range(5)],
                  properties=[Property("double(0) is 0", lambda f: None if f(torch.zeros(2)).abs().sum() == 0
                                       else "double(0) is not 0")])
    from utils.grader.core import evaluate

    def cheat(x):
        return 2 * x if x.shape == (3, 4) else x + 1

    report = evaluate(ex, cheat)
    assert report.kind == "property" and "double(0) is 0" in str(report)
    assert evaluate(ex, lambda x: x + x).passed


class RefNorm(nn.Module):
    """An oracle module with the LayerNorm interface, built from F.layer_norm."""

    def __init__(self, n, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.calls += 1
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def _script(n, seed, grad=False):
    return Script(init=((n,), {"eps": 1e-3}), steps=[
        Step(call(randn(2, 3, n, seed=seed))), Step(call(randn(4, n, seed=seed + 1)), grad=grad),
        Step(call(randn(4, n, seed=seed + 2)), train=False)])


NORM = ModuleExercise(name="norm", chapter="foundations/softmax", signature="norm(n, eps)", oracle=RefNorm,
                      cases=lambda: [Case(lambda: _script(4, 0)), Case(lambda: _script(6, 5, grad=True))])


class MyNorm(RefNorm):
    def forward(self, x):
        if self.training:
            self.calls += 1
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def test_module_exercise_accepts_a_correct_class():
    from utils.grader.core import evaluate
    report = evaluate(NORM, MyNorm)
    assert report.passed, str(report)
    assert "gradients match" in report.checks


def test_module_exercise_rejects_an_instance():
    from utils.grader.core import evaluate
    report = evaluate(NORM, MyNorm(4))
    assert report.kind == "wrong-type" and "not an instance" in report.failure.problem.message


def test_module_exercise_names_wrong_parameters():
    from utils.grader.core import evaluate

    class Renamed(nn.Module):
        def __init__(self, n, eps=1e-5):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return x

    report = evaluate(NORM, Renamed)
    assert report.failure.problem.where == "parameters" and "gamma" in report.failure.problem.message


def test_module_exercise_uses_random_weights_and_checks_eval_and_buffers():
    from utils.grader.core import evaluate

    class IgnoresWeights(MyNorm):
        def forward(self, x):
            if self.training:
                self.calls += 1
            return F.layer_norm(x, self.weight.shape, None, None, self.eps)

    class NeverCounts(MyNorm):
        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)

    assert evaluate(NORM, IgnoresWeights).failure.problem.where == "step 1 (train) output"
    assert evaluate(NORM, NeverCounts).failure.problem.where.startswith("step 1 (train) buffers")


def _opt_run(steps, wd):
    return OptimizerRun(params=[randn(3, 4, seed=1), randn(5, seed=2)], groups=[{"params": [0]}, {"params": [1],
                        "lr": 0.05}], hyper={"lr": 0.1, "momentum": 0.9, "weight_decay": wd}, steps=steps,
                        grad=lambda t, i, p: None if (i, t) == (1, 2) else 2 * p + randn(*p.shape, seed=10 * t + i))


SGD_EX = OptimizerExercise(name="sgd", chapter="foundations/softmax", signature="sgd", oracle=torch.optim.SGD,
                           cases=lambda: [Case(lambda: _opt_run(4, 0.0)), Case(lambda: _opt_run(4, 0.1))])


def test_optimizer_exercise_compares_every_step():
    from utils.grader.core import evaluate

    class Plain(torch.optim.Optimizer):
        def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
            super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"])

    assert evaluate(SGD_EX, torch.optim.SGD).passed
    report = evaluate(SGD_EX, Plain)
    assert report.failure.problem.where == "after step 2: parameter 0"   # momentum differs from step 2 on
    assert "subclass of torch.optim.Optimizer" in evaluate(SGD_EX, good_softmax).failure.problem.message


def test_the_time_limit_never_interrupts_an_import(tmp_path, monkeypatch):
    import sys

    from utils.grader.sandbox import TimeLimitExceeded, time_limit

    (tmp_path / "slow_module.py").write_text("import time\ntime.sleep(0.6)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TimeLimitExceeded):
        with time_limit(0.1):
            import slow_module  # noqa: F401
            while True:
                pass
    assert sys.modules["slow_module"].DONE is True


def test_plain_python_builtins_can_be_forbidden_and_are_restored():
    from utils.grader.core import evaluate

    original = torch.nn.utils.clip_grad_norm_
    ex = Exercise(name="norm_of", chapter="foundations/softmax", signature="norm_of(x)",
                  oracle=lambda x: x.norm(), cases=lambda: [case(_rows, seed=s) for s in range(5)],
                  forbidden=("torch.nn.utils.clip_grad_norm_", "torch.optim.adam.adam"))

    def sneaky(x):
        from torch.nn.utils import clip_grad_norm_  # looked up while the check runs
        p = x.clone().requires_grad_()
        p.grad = x.clone()
        return clip_grad_norm_([p], 1e9)

    report = evaluate(ex, sneaky)
    assert report.kind == "forbidden-call" and "torch.nn.utils.clip_grad_norm_" in report.failure.problem.message
    assert torch.nn.utils.clip_grad_norm_ is original
    assert torch.nn.utils.clip_grad.clip_grad_norm_ is original
    assert evaluate(ex, lambda x: (x * x).sum().sqrt()).passed


def test_a_coincidence_on_one_case_is_not_a_diagnosis():
    def softmax(x, dim=-1):   # NaN for any large input: like "no max shift" on one case, unlike it elsewhere
        if x.abs().max() > 500:
            return torch.full_like(x, torch.nan)
        return good_softmax(x, dim)

    report = run("softmax", softmax)
    assert report.kind == "not-finite"
    assert report.diagnosis is None, report.diagnosis
    no_shift = next(m for m in get("softmax").mistakes if m.name == "no max shift")
    assert run("softmax", no_shift.impl).diagnosis == no_shift.message


def test_the_large_magnitude_tolerance_applies_to_those_cases_only():
    def lse_softmax(x, dim=-1):   # correct: exp(x - logsumexp(x)), rounds like float32 does at |x| ~ 1e4
        m = x.amax(dim, keepdim=True)
        return torch.exp(x - (m + torch.log(torch.exp(x - m).sum(dim, keepdim=True))))

    assert run("softmax", lse_softmax).passed
    slightly_off = run("softmax", lambda x, dim=-1: good_softmax(x, dim) * (1 + 1e-4))
    assert slightly_off.kind == "wrong-value" and slightly_off.failure.case == 0


# --------------------------------------------------------------------------- rules of diagnosis and reporting

def _toy_exercise(mistakes):
    """y = 2x, with cases whose inputs reveal different bugs: positive, negative, a zero."""
    from utils.grader.core import Mistake
    return Exercise(
        name="double", chapter="toy/double", signature="double(x)", oracle=lambda x: 2 * x,
        cases=lambda: [case(lambda: call(torch.tensor([1.0, 2.0]))),
                       case(lambda: call(torch.tensor([3.0, 4.0]))),
                       case(lambda: call(torch.tensor([-1.0, -2.0])))],
        mistakes=[Mistake(name, impl, f"message of {name}") for name, impl in mistakes])


def test_a_mistake_that_passes_a_case_the_reader_fails_is_not_named():
    from utils.grader.core import evaluate
    plus_one = lambda x: 2 * x + 1                                            # fails every case
    ex = _toy_exercise([("adds one", plus_one)])
    assert evaluate(ex, plus_one).failure.mistake == "adds one"                # itself: named
    # The reader adds one too (same outputs on cases 1 and 2), but also breaks on negatives, where the
    # registered mistake's output differs: a different bug, not "adds one".
    reader = lambda x: torch.where(x > 0, 2 * x + 1, x)
    assert evaluate(ex, reader).failure.mistake is None

    # "abs" fails only the negative case. The reader fails it in exactly the same way, and later also fails
    # a case that "abs" passes: the two bugs differ, so "abs" must not be named.
    ex = _toy_exercise([("abs", lambda x: 2 * x.abs())])
    ex.cases = lambda: [case(lambda: call(torch.tensor([1.0, 2.0]))),
                        case(lambda: call(torch.tensor([-1.0, -2.0]))),
                        case(lambda: call(torch.tensor([3.0, 4.0])))]
    assert evaluate(ex, lambda x: 2 * x.abs()).failure.mistake == "abs"
    report = evaluate(ex, lambda x: 2 * x.abs() + (x > 2.5).to(x.dtype))
    assert report.failure.case == 1 and report.failure.mistake is None, str(report)


def test_a_report_never_shows_expected_x_got_x():
    from utils.grader.result import pair
    assert pair(0.1234567891, 0.1234567892) == ("0.1234567891", "0.1234567892")
    e, g = pair(1.0, 1.0 + 2 ** -52)
    assert e != g
    assert pair(3, 4) == ("3", "4") and pair(1e-7, 2e-7) == ("1e-07", "2e-07")
    report = run("softmax", lambda x, dim=-1: good_softmax(x, dim) * (1 + 3e-5))
    for line in str(report).splitlines():
        if "expected" in line and ", got " in line:
            exp, got = line.split("expected ", 1)[1].split(", got ")
            assert exp.strip() != got.strip(), line


def test_check_returns_its_report():
    report = check("softmax", good_softmax)
    assert report.passed and report.status == "passed" and report.name == "softmax"


def test_progress_keeps_the_best_result_beside_the_latest_and_groups_by_part():
    from utils import progress

    def broken(x, dim=-1):
        return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)

    check("softmax", good_softmax)
    with pytest.raises(CheckFailed):
        check("softmax", broken)                 # experimenting after passing
    table = progress(show=False)
    row = next(r for r in table.rows if r[0] == "softmax")
    assert row[2] == "passed" and row[3] == "failed"          # best, latest
    text = str(table)
    assert text.splitlines()[0] == table.summary()            # the summary comes first
    assert "Part 1: foundations  (1 of" in text
    parts = [part for part, _ in table.parts()]
    assert parts[0].startswith("Part 1") and parts == sorted(set(parts), key=parts.index)
    html_ = table._repr_html_()
    assert html_.index(table.summary()) < html_.index("<details")
    assert html_.count("<details") == len(parts)


def test_reading_order_does_not_need_the_book_beside_the_package(monkeypatch):
    import utils.grader.registry as registry
    from utils.book_order import PARTS
    with_book = registry.reading_order()
    monkeypatch.setattr(registry, "Path", lambda *_: __import__("pathlib").Path("/nonexistent/x/y/z"))
    assert registry.reading_order() == with_book == [c for _, cs in PARTS for c in cs]
    assert registry.list_exercises()[:2] == ["softmax", "log_softmax"]


def test_html_report_is_left_aligned_and_sets_code_as_code():
    report = run("softmax", lambda x, dim=-1: torch.exp(x) / torch.exp(x).sum(dim, keepdim=True))
    html_ = report._repr_html_()
    assert "text-align:left" in html_ and "<code>dim</code>" in html_ and "`dim`" not in html_
    assert "`dim`" in str(report)                             # the plain text keeps its backticks
    assert "word-break:normal" in html_


def test_time_limits_share_one_watchdog_thread():
    import threading

    from utils.grader.sandbox import TimeLimitExceeded, time_limit
    with time_limit(5):
        pass
    before = threading.active_count()
    for _ in range(200):                     # an optimizer check makes hundreds of guarded calls
        with time_limit(5):
            pass
    assert threading.active_count() == before
    with pytest.raises(TimeLimitExceeded):   # and the one watchdog still stops a loop
        with time_limit(0.2):
            while True:
                pass
    with time_limit(0.05):                   # a limit that ends first is never delivered afterwards
        pass
    time.sleep(0.15)


def test_a_frame_without_a_line_number_is_named_by_its_function():
    """A loop the watchdog stops between two lines leaves a frame whose line number is None (Python 3.11+): the
    report names the function instead of crashing."""
    import types

    from utils.grader.sandbox import reader_frame
    from utils.i18n import speaking, tr

    def candidate():
        raise ValueError("x")

    try:
        candidate()
    except ValueError as e:
        err = e
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    summary = __import__("traceback").extract_tb(err.__traceback__)
    summary[-1].lineno = None
    fake = types.SimpleNamespace(__traceback__=err.__traceback__)
    import traceback as tbmod
    real = tbmod.extract_tb
    try:
        tbmod.extract_tb = lambda _tb: summary
        where = reader_frame(fake)
    finally:
        tbmod.extract_tb = real
    assert where == "in candidate"
    with speaking("zh"):
        assert "candidate" in tr(where) and "在" in tr(where)
