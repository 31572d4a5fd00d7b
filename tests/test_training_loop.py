"""The chapter classic_ml/training_loop and the init kind (utils/grader/kinds/init.py).

What is proved here (the training-loop exercises and dropout are also covered, kind by kind, by
tests/test_kind_training.py and tests/test_kind_stochastic.py, which import the same declarations):

- the oracles are nn.init's laws: with a shared generator, nn.init.xavier_uniform_ / kaiming_normal_ and a fill from
  the declared law give the very same numbers on every case; the fans equal nn.init's; nn.init's own functions pass
  the check (with the ban on them lifted); the dropout law matches F.dropout's frequencies;
- correct solutions in other styles pass; wrong ones written as candidates write them (beyond the registered
  mistakes) are rejected; bad input gets a clear report;
- the init kind: the stated false-rejection probability and each mistake's stated pass probability hold (recomputed
  from the laws); every two declared laws of a case are identical or far apart (so a diagnosis never depends on the
  draw); the KS statistic equals scipy's; the reader's random state is restored; verdicts repeat; a check is fast.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.grader.core import evaluate
from utils.grader.exercises.classic_ml import training_loop as T
from utils.grader.kinds import InitExercise, Law
from utils.grader.kinds.init import ks_distance, law_distance

INITS = [T.XAVIER_UNIFORM_, T.KAIMING_NORMAL_]
NN_INIT = {"xavier_uniform_": nn.init.xavier_uniform_, "kaiming_normal_": nn.init.kaiming_normal_}


# =========================================================================== the oracles against nn.init

@pytest.mark.parametrize("ex", INITS, ids=lambda e: e.name)
def test_the_declared_law_is_nn_inits_draw_for_draw(ex):
    """nn.init fills with tensor.uniform_(-a, a) / normal_(0, std) from the generator it is given: the law's own
    fill on the same generator must give the identical tensor, case by case."""
    for case in ex.all_cases():
        args, kwargs = case.make()
        w = args[0].detach()
        theirs = NN_INIT[ex.name](w.clone(), *args[1:], **kwargs, generator=torch.Generator().manual_seed(7))
        law = ex.oracle(*args, **kwargs)
        ours = w.clone()
        gen = torch.Generator().manual_seed(7)
        if law.family == "uniform":
            ours.uniform_(-law.scale, law.scale, generator=gen)
        else:
            ours.normal_(0.0, law.scale, generator=gen)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0, msg=case.note)


def test_the_fans_are_nn_inits():
    for shape in [(5, 3), (1, 7), (64, 32, 3, 3), (96, 48, 7), (4, 2, 3, 5, 2)]:
        w = torch.empty(shape)
        assert T.fans(w) == nn.init._calculate_fan_in_and_fan_out(w)


@pytest.mark.parametrize("ex", INITS, ids=lambda e: e.name)
def test_nn_inits_own_function_passes_the_check(ex):
    unbanned = dataclasses.replace(ex, forbidden=())
    report = evaluate(unbanned, NN_INIT[ex.name])
    assert report.passed, str(report)


def test_the_dropout_law_matches_f_dropout():
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) + 2.0
    torch.manual_seed(0)
    y = F.dropout(x, p=0.3, training=True)
    law = T.dropout_law(x[:1], p=0.3)[0]                  # P(0), P(x / (1 - p)), P(x), P(other)
    zero = float((y == 0).float().mean())
    scaled = float(torch.isclose(y, x / 0.7).float().mean())
    assert abs(zero - float(law[0])) < 0.005 and abs(scaled - float(law[1])) < 0.005
    assert torch.equal(T.dropout_law(x[:3], p=0.3, training=False)[:, 2], torch.ones(3, dtype=torch.float64))


# =========================================================================== correct solutions in other styles

def xavier_copy(w, gain=1.0):
    """A uniform tensor built aside and copied in."""
    fan_in, fan_out = math.prod(w.shape[1:]), w.shape[0] * math.prod(w.shape[2:])
    a = gain * (6.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        w.copy_(torch.rand(w.shape, dtype=w.dtype) * 2 * a - a)
    return w


def xavier_nn_uniform(w, gain=1.0):
    """nn.init.uniform_ (allowed: the exercise is the bound, not the draw)."""
    k = w[0, 0].numel()
    std = gain * math.sqrt(2.0 / (k * (w.size(0) + w.size(1))))
    return nn.init.uniform_(w, -math.sqrt(3.0) * std, math.sqrt(3.0) * std)


def kaiming_randn(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    receptive = w.numel() // (w.shape[0] * w.shape[1])
    fan = receptive * {"fan_in": w.shape[1], "fan_out": w.shape[0]}[mode]
    gain = 1.0 if nonlinearity in ("linear", "sigmoid") else 5 / 3 if nonlinearity == "tanh" else \
        math.sqrt(2.0) if nonlinearity == "relu" else math.sqrt(2.0 / (1 + a * a))
    with torch.no_grad():
        w.copy_(torch.randn(w.shape, dtype=w.dtype) * (gain / math.sqrt(fan)))
    return w


@torch.no_grad()
def kaiming_decorated(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = T.fans(w)
    var = nn.init.calculate_gain(nonlinearity, a) ** 2 / (fan_in if mode == "fan_in" else fan_out)
    return w.normal_(std=var ** 0.5)


CORRECT = [(T.XAVIER_UNIFORM_, xavier_copy), (T.XAVIER_UNIFORM_, xavier_nn_uniform),
           (T.KAIMING_NORMAL_, kaiming_randn), (T.KAIMING_NORMAL_, kaiming_decorated)]


@pytest.mark.parametrize("ex,impl", CORRECT, ids=[f.__name__ for _, f in CORRECT])
def test_correct_solutions_in_other_styles_pass(ex, impl):
    report = evaluate(ex, impl)
    assert report.passed, str(report)


# =========================================================================== wrong solutions (not registered)

def xavier_mean_fan(w, gain=1.0):
    """The average fan in the denominator: sqrt(6 / ((fan_in + fan_out) / 2))."""
    fan_in, fan_out = T.fans(w)
    a = gain * math.sqrt(6.0 / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        return w.uniform_(-a, a)


def xavier_numel_fan(w, gain=1.0):
    a = gain * math.sqrt(6.0 / w.numel())
    with torch.no_grad():
        return w.uniform_(-a, a)


def xavier_returns_clone(w, gain=1.0):
    fan_in, fan_out = T.fans(w)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        w.uniform_(-a, a)
    return w.clone()


def xavier_first_row_only(w, gain=1.0):
    fan_in, fan_out = T.fans(w)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        w[0].uniform_(-a, a)
    return w


def xavier_to_float64(w, gain=1.0):
    """Swaps the storage for a float64 one: w.data = ..."""
    fan_in, fan_out = T.fans(w)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    w.data = torch.empty(w.shape, dtype=torch.float64).uniform_(-a, a)
    return w


def kaiming_no_sqrt(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = T.fans(w)
    std = nn.init.calculate_gain(nonlinearity, a) / (fan_in if mode == "fan_in" else fan_out)
    with torch.no_grad():
        return w.normal_(0, std)


def kaiming_last_dim(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """fan_in from the last dimension (right for a matrix, wrong for a conv weight or fan_out)."""
    std = nn.init.calculate_gain(nonlinearity, a) / math.sqrt(w.shape[-1])
    with torch.no_grad():
        return w.normal_(0, std)


def kaiming_mode_typo(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = T.fans(w)
    fan = fan_in if mode == "fan-in" else fan_out
    with torch.no_grad():
        return w.normal_(0, nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan))


def kaiming_turns_on_grad(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    kaiming_decorated(w, a, mode, nonlinearity)
    return w.requires_grad_(True)


def kaiming_numpy(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = T.fans(w)
    std = nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    return np.random.default_rng(0).normal(0, std, size=tuple(w.shape))


WRONG = [(T.XAVIER_UNIFORM_, xavier_mean_fan, "impossible-draw"), (T.XAVIER_UNIFORM_, xavier_numel_fan, None),
         (T.XAVIER_UNIFORM_, xavier_returns_clone, "not-w"), (T.XAVIER_UNIFORM_, xavier_first_row_only, "not-in-place"),
         (T.XAVIER_UNIFORM_, xavier_to_float64, "wrong-shape"), (T.KAIMING_NORMAL_, kaiming_no_sqrt, "distribution"),
         (T.KAIMING_NORMAL_, kaiming_last_dim, "distribution"), (T.KAIMING_NORMAL_, kaiming_mode_typo, "distribution"),
         (T.KAIMING_NORMAL_, kaiming_turns_on_grad, "autograd"), (T.KAIMING_NORMAL_, kaiming_numpy, "not-in-place")]


@pytest.mark.parametrize("ex,impl,kind", WRONG, ids=[f.__name__ for _, f, _ in WRONG])
def test_wrong_solutions_are_rejected(ex, impl, kind):
    report = evaluate(ex, impl)
    assert not report.passed, f"{impl.__name__} passes"
    if kind:
        assert report.failure.problem.kind == kind, str(report)


def test_a_candidate_who_swaps_the_fans_is_named_however_written():
    def kaiming(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
        fan_out, fan_in = T.fans(w)                   # unpacked the wrong way round
        fan = fan_in if mode == "fan_in" else fan_out
        with torch.no_grad():
            w.normal_(0, nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan))
        return w

    assert evaluate(T.KAIMING_NORMAL_, kaiming).failure.mistake == "fan_in and fan_out swapped"


# =========================================================================== bad input

def test_bad_input_gives_a_clear_report():
    def raises(w, gain=1.0):
        return w.uniform_(-gain, gain, generator=7)

    report = evaluate(T.XAVIER_UNIFORM_, raises)
    assert report.kind == "exception" and "generator=7" in report.failure.frame

    def fills_nan(w, gain=1.0):
        return w.fill_(float("nan"))

    assert evaluate(T.XAVIER_UNIFORM_, fills_nan).kind == "not-in-place"

    def endless(w, gain=1.0):
        while True:
            pass

    start = time.perf_counter()
    report = evaluate(dataclasses.replace(T.XAVIER_UNIFORM_, timeout=0.5), endless)
    assert report.kind == "timeout" and time.perf_counter() - start < 10

    def builtin(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
        return torch.nn.init.kaiming_normal_(w, a, mode, nonlinearity)

    report = evaluate(T.KAIMING_NORMAL_, builtin)
    assert report.kind == "forbidden-call" and "nn.init.kaiming_normal_" in report.failure.problem.message

    def stub(w, gain=1.0):
        raise NotImplementedError

    assert evaluate(T.XAVIER_UNIFORM_, stub).status == "not attempted"
    assert evaluate(T.XAVIER_UNIFORM_, "xavier").kind == "wrong-type"


def test_the_distribution_report_gives_the_stds():
    report = evaluate(T.KAIMING_NORMAL_, kaiming_no_sqrt)
    assert "standard deviation" in report.failure.problem.message and "Kolmogorov-Smirnov" in str(report)


# =========================================================================== the init kind itself

@pytest.mark.parametrize("ex", INITS, ids=lambda e: e.name)
def test_the_stated_bounds_hold(ex):
    bounds = ex.bounds()
    assert bounds["false rejection"] <= ex.false_rejection < 1e-6
    for m in ex.mistakes:
        if m.law is not None:
            assert bounds[m.name] <= m.passes, (m.name, bounds[m.name])


@pytest.mark.parametrize("ex", INITS, ids=lambda e: e.name)
def test_every_two_laws_of_a_case_are_identical_or_far_apart(ex):
    """A diagnosis keys on the set of laws the values fit. A draw from law A lies within eps of A except with
    probability alpha; if A and B are more than 2 eps apart, it then lies more than eps from B (triangle
    inequality), so it never fits B: the set a draw fits is the same for every draw of the same law, and a
    reader's code is named whatever style it draws in. Two laws closer than that could fit one draw and not the next."""
    for case in ex.all_cases():
        args, _ = case.make()
        eps = ex.eps(args[0].numel())
        laws = list(ex.laws(case).values())
        for i, a in enumerate(laws):
            for b in laws[i + 1:]:
                same = a.family == b.family and math.isclose(a.scale, b.scale, rel_tol=1e-9)
                assert same or law_distance(a, b) > 2 * eps, (case.note, a, b)


def test_the_ks_distance_is_scipys():
    stats = pytest.importorskip("scipy.stats")
    x = torch.randn(5000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.7
    assert ks_distance(x, Law("normal", 0.7)) == pytest.approx(stats.kstest(x.numpy(), "norm", args=(0, 0.7)).statistic)
    assert ks_distance(x, Law("uniform", 1.5)) == pytest.approx(
        stats.kstest(x.numpy(), "uniform", args=(-1.5, 3.0)).statistic)


def test_the_dkw_threshold_holds_at_its_level():
    """With alpha = 0.05 the threshold eps = sqrt(ln(2 / alpha) / (2 n)) is exceeded in at most about 5% of samples."""
    n, runs = 400, 300
    eps = math.sqrt(math.log(2 / 0.05) / (2 * n))
    g = torch.Generator().manual_seed(11)
    over = sum(ks_distance(torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1, Law("uniform", 1.0)) > eps
               for _ in range(runs))
    assert over <= 0.05 * runs + 10


def test_false_rejection_outside_the_range_is_refused():
    with pytest.raises(ValueError):
        InitExercise(name="x", chapter="c", signature="x(w)", oracle=T.xavier_law, cases=list, false_rejection=1e-5)


def test_the_check_restores_the_readers_random_state():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    evaluate(T.KAIMING_NORMAL_, kaiming_decorated)
    assert torch.equal(torch.rand(3), expected)


def _verdict(report):
    f = report.failure
    return report.status, None if f is None else (f.case, f.problem.kind, f.problem.message, f.mistake)


@pytest.mark.parametrize("impl", [xavier_mean_fan, xavier_copy])
def test_verdicts_are_identical_run_after_run(impl):
    assert _verdict(evaluate(T.XAVIER_UNIFORM_, impl)) == _verdict(evaluate(T.XAVIER_UNIFORM_, impl))


@pytest.mark.parametrize("ex,impl", [CORRECT[0], CORRECT[2]], ids=["xavier", "kaiming"])
def test_a_check_takes_under_a_second_of_cpu(ex, impl):
    evaluate(ex, impl)
    start = time.process_time()
    assert evaluate(ex, impl).passed
    assert time.process_time() - start < 1.0


def test_the_cases_cover_what_the_brief_asks():
    notes = " ".join(c.note for ex in INITS for c in ex.all_cases())
    for word in ("Conv2d", "Conv1d", "float64", "non-contiguous", "nn.Parameter", "fan_out", "tanh", "linear", "relu",
                 "a = sqrt(5)"):
        assert word in notes, word
    dtypes = {c.make()[0][0].dtype for ex in INITS for c in ex.all_cases()}
    assert dtypes == {torch.float32, torch.float64}
