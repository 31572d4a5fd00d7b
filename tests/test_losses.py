"""What is specific to the loss exercises (cross_entropy, binary_cross_entropy_with_logits, distillation_loss),
beyond tests/test_exercises.py: the oracles agree with independent loop computations, the cases the issue asks
for exist and matter, bad submissions are rejected for the right reason, and the properties catch wrong code."""

import math

import pytest
import torch
import torch.nn.functional as F

from utils.grader.core import evaluate
from utils.grader.exercises.foundations import losses as L  # (registers the exercises)
from utils.grader.registry import EXERCISES
from utils.grader.sandbox import resolve

CHAPTER = "foundations/losses"
NAMES = ["cross_entropy", "binary_cross_entropy_with_logits", "distillation_loss"]


def _args(ex, i):
    args, kwargs = ex.all_cases()[i].make()
    return args, kwargs


# --------------------------------------------------------------------------- oracles against loop specifications

def _ce_loop(logits, target, ignore_index=-100, label_smoothing=0.0):
    """Cross-entropy with PyTorch's label smoothing, one row and one class at a time, in float64."""
    N, C = logits.shape
    total, count = 0.0, 0
    for i in range(N):
        y = int(target[i])
        if y == ignore_index:
            continue
        row = [float(v) for v in logits[i].double()]
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        q = [label_smoothing / C + (1 - label_smoothing) * (c == y) for c in range(C)]
        total += sum(-q[c] * (row[c] - lse) for c in range(C))
        count += 1
    return total / count


def test_cross_entropy_oracle_matches_loop_on_every_case():
    ex = EXERCISES["cross_entropy"]
    for i, case in enumerate(ex.all_cases()):
        (logits, target), kw = case.make()
        got = float(ex.oracle(logits, target, **kw))
        want = _ce_loop(logits, target, kw.get("ignore_index", -100), kw.get("label_smoothing", 0.0))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5), f"case {i} ({case.note})"


def _bce_loop(logits, target):
    total = 0.0
    for z, y in zip(logits.double().flatten().tolist(), target.double().flatten().tolist(), strict=True):
        softplus = max(z, 0.0) + math.log1p(math.exp(-abs(z)))       # log(1 + e^z), exact in float64
        total += softplus - y * z
    return total / logits.numel()


def test_bce_oracle_matches_loop_on_every_case():
    ex = EXERCISES["binary_cross_entropy_with_logits"]
    for i, case in enumerate(ex.all_cases()):
        (logits, target), _ = case.make()
        assert float(ex.oracle(logits, target)) == pytest.approx(_bce_loop(logits, target), rel=1e-5, abs=1e-6), i


def _kd_loop(s, t, T):
    N, C = s.shape
    total = 0.0
    for i in range(N):
        rs = [float(v) / T for v in s[i].double()]
        rt = [float(v) / T for v in t[i].double()]
        ls = max(rs) + math.log(sum(math.exp(v - max(rs)) for v in rs))
        lt = max(rt) + math.log(sum(math.exp(v - max(rt)) for v in rt))
        total += sum(math.exp(rt[c] - lt) * ((rt[c] - lt) - (rs[c] - ls)) for c in range(C))
    return T**2 * total / N


def test_distillation_oracle_matches_loop_on_every_case():
    ex = EXERCISES["distillation_loss"]
    for i, case in enumerate(ex.all_cases()):
        args, kw = case.make()
        s, t = args[:2]
        T = args[2] if len(args) > 2 else kw.get("temperature", 2.0)
        assert float(ex.oracle(*args, **kw)) == pytest.approx(_kd_loop(s, t, T), rel=1e-5, abs=1e-6), i


def test_distillation_gradient_is_T_times_softened_difference():
    """d/dz_s of T^2 KL = T (p_s - p_t) / N: the T^2 factor of the chapter's derivation."""
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 5, dtype=torch.float64)
    for T in (1.0, 2.0, 7.0):
        (g,) = torch.autograd.grad(L._kd_oracle(s, t, T), s)
        expected = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1)) / 3
        torch.testing.assert_close(g, expected)


# --------------------------------------------------------------------------- the cases the issue asks for

def test_cross_entropy_cases_cover_the_issue():
    ex = EXERCISES["cross_entropy"]
    kinds = {"most ignored": False, "custom ignore_index": False, "smoothing": set(), "thousands": False,
             "grad with ignored": False}
    for case in ex.all_cases():
        (logits, target), kw = case.make()
        ignored = (target == kw.get("ignore_index", -100)).float().mean().item()
        kinds["most ignored"] |= ignored > 0.5
        kinds["custom ignore_index"] |= kw.get("ignore_index", -100) != -100
        if kw.get("label_smoothing", 0.0):
            kinds["smoothing"].add(kw["label_smoothing"])
        kinds["thousands"] |= logits.abs().max().item() >= 1000
        kinds["grad with ignored"] |= case.grad and ignored > 0
    assert kinds["most ignored"] and kinds["custom ignore_index"] and kinds["thousands"]
    assert kinds["grad with ignored"]
    assert len(kinds["smoothing"]) >= 3, kinds["smoothing"]


def test_distillation_cases_use_non_default_temperatures():
    temps = set()
    for case in EXERCISES["distillation_loss"].all_cases():
        args, kw = case.make()
        temps.add(args[2] if len(args) > 2 else kw.get("temperature", 2.0))
    assert {0.5, 1.0, 4.0, 5.0} <= temps


def test_bce_cases_reach_1e4_and_both_signs():
    zs = torch.cat([c.make()[0][0].flatten().double() for c in EXERCISES["binary_cross_entropy_with_logits"]
                    .all_cases()])
    assert zs.max() >= 1e4 and zs.min() <= -1e4 and (zs == 0).any()


@pytest.mark.parametrize("name", NAMES)
def test_at_least_four_mistakes(name):
    assert len(EXERCISES[name].mistakes) >= 4


# --------------------------------------------------------------------------- bad submissions

@pytest.mark.parametrize("name", NAMES)
def test_forbidden_names_resolve(name):
    for fname in EXERCISES[name].forbidden:
        assert callable(resolve(fname)), fname


@pytest.mark.parametrize("impl", [
    lambda logits, target, **kw: torch.nn.CrossEntropyLoss(**kw)(logits, target),
    lambda logits, target, **kw: F.nll_loss(torch.log_softmax(logits, -1), target, **{
        k: v for k, v in kw.items() if k == "ignore_index"}),
    lambda logits, target, **kw: -(logits - logits.logsumexp(-1, keepdim=True)).gather(1, target[:, None]).mean(),
])
def test_cross_entropy_builtins_are_forbidden(impl):
    report = evaluate(EXERCISES["cross_entropy"], impl)
    assert report.kind == "forbidden-call", str(report)


def test_bce_builtins_are_forbidden():
    for impl in (lambda z, y: torch.nn.BCEWithLogitsLoss()(z, y),
                 lambda z, y: F.binary_cross_entropy(torch.sigmoid(z), y),
                 lambda z, y: (F.softplus(z) - y * z).mean(),
                 lambda z, y: -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()):
        assert evaluate(EXERCISES["binary_cross_entropy_with_logits"], impl).kind == "forbidden-call"


def test_cross_entropy_per_row_losses_are_a_shape_error(book):
    ce = book(CHAPTER)["cross_entropy"]

    def per_row(logits, target, **kw):
        return ce(logits[:1], target[:1], **kw).expand(len(target)).clone()
    report = evaluate(EXERCISES["cross_entropy"], per_row)
    assert report.kind == "wrong-shape"


def test_python_float_is_a_type_error(book):
    bce = book(CHAPTER)["binary_cross_entropy_with_logits"]
    report = evaluate(EXERCISES["binary_cross_entropy_with_logits"], lambda z, y: float(bce(z, y)))
    assert report.kind == "wrong-type"


def test_not_callable_is_rejected():
    report = evaluate(EXERCISES["distillation_loss"], 3.0)
    assert report.kind == "wrong-type"


def test_popular_bce_form_fails_only_on_the_gradient_at_zero():
    """max(z, 0) - zy + log1p(exp(-|z|)) passes every value case and fails the gradient case with z = 0."""
    report = evaluate(EXERCISES["binary_cross_entropy_with_logits"], L.bce_abs_kink)
    ex = EXERCISES["binary_cross_entropy_with_logits"]
    assert report.kind == "gradient"
    assert ex.all_cases()[report.failure.case].grad
    assert report.n_passed == report.failure.case and report.n_passed >= 10


def test_book_bce_gradient_at_zero_is_half_minus_y(book):
    bce = book(CHAPTER)["binary_cross_entropy_with_logits"]
    z = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.25, 0.5], dtype=torch.float64)
    (g,) = torch.autograd.grad(bce(z, y), z)
    torch.testing.assert_close(g, (0.5 - y) / 4)


def test_detached_teacher_fails_on_the_teacher_gradient():
    report = evaluate(EXERCISES["distillation_loss"], L.kd_detached_teacher)
    assert report.kind == "gradient" and "input 1" in report.failure.problem.where


# --------------------------------------------------------------------------- properties catch wrong code

def test_shift_invariance_property_catches_a_wrong_loss():
    assert L._ce_shift_invariant(lambda logits, target: logits.mean()) is not None
    assert L._ce_shift_invariant(lambda logits, target: F.cross_entropy(logits, target)) is None


def test_bce_flip_property_catches_a_wrong_loss():
    assert L._bce_flip(lambda z, y: (z.clamp(min=0) - z * y).mean() * 0 + z.mean()) is not None
    assert L._bce_flip(F.binary_cross_entropy_with_logits) is None


def test_kd_nonnegative_property_catches_a_negative_loss():
    assert L._kd_nonnegative(lambda s, t, temperature=2.0: -L._kd_oracle(s, t, temperature)) is not None
    assert L._kd_nonnegative(L._kd_oracle) is None


def test_book_distillation_is_zero_for_identical_logits(book):
    kd = book(CHAPTER)["distillation_loss"]
    s = torch.randn(4, 7, dtype=torch.float64)
    assert abs(float(kd(s, s.clone(), 3.0))) < 1e-12
