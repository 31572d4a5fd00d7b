"""Part 7, generation: the speculative_accept grader (utils/grader/exercises/generation/speculative_decoding.py) and the
chapter generation/speculative_decoding.

The oracle is the exact law of one round's outcome `draft_tokens[:n] + [y]`. It is checked here against the theory:
with the draft tokens drawn from the draft model, the first output token is distributed exactly as the target's
(summing the law over every draft sequence), the expected length of a round is (1 - a^(K+1)) / (1 - a) when every
position has the same acceptance probability a, and the book's solution run many times reproduces the law. The
stated bounds are recomputed; wrong solutions written as candidates write them are rejected, correct solutions in
other styles pass, bad input gets a clear report.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import pytest
import torch

from utils.grader import get, run
from utils.grader.core import evaluate
from utils.grader.exercises.generation import speculative_decoding as decl

NAME = "speculative_accept"


def _random_pair(seed, K, V, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(K + 1, V, generator=g, dtype=torch.float64) * 1.5, -1).to(dtype)
    q = torch.softmax(torch.randn(K, V, generator=g, dtype=torch.float64) * 1.5, -1).to(dtype)
    return p, q


def _marginals(p, q, law_fn=decl.accept_law):
    """Sum the law over every draft sequence, weighted by its probability under the draft rows:
    (P(first output token = y), E[length of the output], P(not of the form draft[:n] + [y]))."""
    K, V = q.shape
    first = torch.zeros(V, dtype=torch.float64)
    length = 0.0
    invalid = 0.0
    for drafts in itertools.product(range(V), repeat=K):
        weight = math.prod(float(q[i, d]) for i, d in enumerate(drafts))
        law = law_fn(p, q, torch.tensor(drafts, dtype=torch.long))
        for n in range(K + 1):
            block = law[n * V:(n + 1) * V]
            length += weight * (n + 1) * float(block.sum())
            if n == 0:
                first += weight * block
            else:
                first[drafts[0]] += weight * float(block.sum())
        invalid += weight * float(law[-1])
    return first, length, invalid


# =========================================================================== the oracle against the theory

@pytest.mark.parametrize("seed,K,V", [(0, 1, 4), (1, 2, 3), (2, 3, 3), (3, 2, 5), (4, 0, 6)])
def test_the_first_output_token_is_distributed_as_the_target(seed, K, V):
    p, q = _random_pair(seed, K, V)
    first, _, invalid = _marginals(p, q)
    torch.testing.assert_close(first, p[0], rtol=0, atol=1e-12)
    assert invalid == 0.0


@pytest.mark.parametrize("mistake", ["resamples from the target", "residual reversed", "ratio inverted",
                                     "accepts when the target is likelier", "accepts with probability p"])
def test_the_laws_of_the_mistakes_are_not_the_target(mistake):
    p, q = _random_pair(11, 2, 4)
    law = next(m.law for m in get(NAME).mistakes if m.name == mistake)
    first, _, _ = _marginals(p, q, law)
    assert (first - p[0]).abs().sum() > 1e-3, mistake


@pytest.mark.parametrize("K", [1, 2, 3])
def test_the_expected_length_of_a_round_is_the_formula(K):
    """Every position with the same pair (p, q), so the same acceptance probability a = sum(min(p, q))."""
    g = torch.Generator().manual_seed(K)
    V = 4
    p_row = torch.softmax(torch.randn(V, generator=g, dtype=torch.float64), -1)
    q_row = torch.softmax(torch.randn(V, generator=g, dtype=torch.float64), -1)
    p, q = p_row.expand(K + 1, V).clone(), q_row.expand(K, V).clone()
    a = float(torch.minimum(p_row, q_row).sum())
    _, length, _ = _marginals(p, q)
    assert math.isclose(length, (1 - a ** (K + 1)) / (1 - a), rel_tol=1e-12)


def test_the_book_solution_reproduces_the_law(book):
    """8,000 rounds of the chapter's solution on one case: the counts fit the exact law (chi-square)."""
    solve = book("generation/speculative_decoding")["speculative_accept"]
    (p, q, drafts), _ = decl._spec_case(decl.P4, decl.Q4, decl.D4, dtype=torch.float64)
    law = decl.accept_law(p, q, drafts)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros_like(law)
    rounds = 8_000
    for _ in range(rounds):
        counts[int(decl.read_tokens(solve(p, q, drafts, generator=gen), (p, q, drafts), {}))] += 1
    support = law > 0
    assert counts[~support].sum() == 0
    chi2 = float((((counts - rounds * law) ** 2)[support] / (rounds * law[support])).sum())
    dof = int(support.sum()) - 1
    assert chi2 < dof + 8 * math.sqrt(2 * dof), (chi2, dof)          # far beyond any plausible fluctuation


def test_every_law_is_a_distribution_and_matches_the_names():
    ex = get(NAME)
    for case in ex.all_cases():
        args, kwargs = case.make()
        for law_fn in [ex.oracle] + [m.law for m in ex.mistakes if m.law is not None]:
            law = law_fn(*args, **kwargs)
            assert law.dtype == torch.float64 and (law >= 0).all()
            assert math.isclose(float(law.sum()), 1.0, abs_tol=1e-12)
            assert law.shape[-1] == len(ex.names(args, kwargs))


def test_the_cases_cover_the_issue():
    notes = " ".join(c.note for c in get(NAME).all_cases())
    for needed in ("every draft token may be rejected", "bonus token", "the first rejection stops", "float64",
                   "K=1", "K=0", "non-contiguous", "always accepted"):
        assert needed in notes, needed
    assert len(get(NAME).mistakes) >= 5 and len(get(NAME).ladder()) >= 3


def test_the_stated_bounds_hold():
    ex = get(NAME)
    fails = 0.0
    for plan, case in zip(ex.plans(), ex.all_cases()):
        args, kwargs = case.make()
        law = ex.oracle(*args, **kwargs).tolist()
        lo, hi, _ = plan.regions["target"]
        n = int(plan.n[0])
        for c, p in enumerate(law):
            fails += _tail(n, p, lo[0, c], hi[0, c])
        if plan.fresh:
            fails += math.fsum(p ** plan.calls for p in law)
    assert fails <= ex.false_rejection < 1e-6, f"a correct solution fails with probability {fails:.2e}"
    assert math.isclose(ex.bounds()["false rejection"], fails, rel_tol=1e-6, abs_tol=1e-15)
    bounds = ex.bounds()
    for m in ex.mistakes:
        assert bounds[m.name] <= m.passes <= 1e-6, f"{m.name}: {bounds[m.name]:.2e}"
    assert sum(int(p.n.sum()) for p in ex.plans()) == ex.samples


def _tail(n, p, lo, hi):
    """P(X < lo) + P(X > hi) for X ~ Binomial(n, p), in plain Python."""
    lo, hi = int(lo), int(hi)
    if p <= 0.0 or p >= 1.0:
        sure = 0 if p <= 0.0 else n
        return 0.0 if lo <= sure <= hi else 1.0

    def pmf(k):
        return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
                        + (n - k) * math.log1p(-p))
    return math.fsum(pmf(k) for k in range(0, lo)) + math.fsum(pmf(k) for k in range(hi + 1, n + 1))


# =========================================================================== correct solutions in other styles

def vectorised(target_probs, draft_probs, draft_tokens, generator=None):
    """All uniforms at once; the first rejection found with cumprod; the residual by inverse CDF."""
    K = draft_tokens.shape[0]
    rows = torch.arange(K)
    ratio = target_probs[rows, draft_tokens] / draft_probs[rows, draft_tokens]
    u = torch.rand(K, generator=generator, dtype=torch.float64)
    n = int((u < ratio).long().cumprod(0).sum())
    weights = target_probs[K] if n == K else (target_probs[n] - draft_probs[n]).clamp_min(0)
    cdf = weights.double().cumsum(0)
    v = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    y = min(int(torch.searchsorted(cdf, v, right=True)), weights.shape[0] - 1)
    return draft_tokens[:n].tolist() + [y]


def multiply_not_divide(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, x in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) * draft_probs[i, x] <= target_probs[i, x]:
            out.append(x)
            continue
        residual = torch.relu(target_probs[i] - draft_probs[i])
        return out + [int(torch.multinomial(residual / residual.sum(), 1, generator=generator))]
    return out + [int(torch.multinomial(target_probs[-1], 1, generator=generator))]


def gumbel_residual(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, x in enumerate(draft_tokens.tolist()):
        if float(torch.rand((), generator=generator)) < min(1.0, float(target_probs[i, x] / draft_probs[i, x])):
            out.append(x)
            continue
        residual = (target_probs[i] - draft_probs[i]).clamp(min=0).double()
        g = -torch.log(-torch.log(torch.rand(residual.shape, generator=generator, dtype=torch.float64)))
        return out + [int((residual.log() + g).argmax())]
    return out + [int(torch.multinomial(target_probs[len(out)], 1, generator=generator))]


@pytest.mark.parametrize("impl", [vectorised, multiply_not_divide, gumbel_residual])
def test_correct_solutions_in_other_styles_pass(impl):
    start = time.process_time()
    report = run(NAME, impl)
    assert report.passed, str(report)
    assert time.process_time() - start < 1.5


def test_the_book_solution_passes_within_a_second(book):
    start = time.process_time()
    report = run(NAME, book("generation/speculative_decoding")["speculative_accept"])
    assert report.passed, str(report)
    assert time.process_time() - start < 1.0


# =========================================================================== wrong solutions, as candidates write them

def residual_not_clamped(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, x in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, x] / draft_probs[i, x]:
            out.append(x)
            continue
        return out + [int(torch.multinomial(target_probs[i] - draft_probs[i], 1, generator=generator))]
    return out + [int(torch.multinomial(target_probs[len(out)], 1, generator=generator))]


def returns_a_tensor(target_probs, draft_probs, draft_tokens, generator=None):
    return torch.tensor(decl.resamples_from_target(target_probs, draft_probs, draft_tokens, generator))


def appends_tensors(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i in range(len(draft_tokens)):
        if torch.rand((), generator=generator) < target_probs[i, draft_tokens[i]] / draft_probs[i, draft_tokens[i]]:
            out.append(draft_tokens[i])
            continue
        return out + [torch.multinomial((target_probs[i] - draft_probs[i]).clamp(min=0), 1, generator=generator)[0]]
    return out + [torch.multinomial(target_probs[len(out)], 1, generator=generator)[0]]


def no_replacement_token(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, x in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) >= target_probs[i, x] / draft_probs[i, x]:
            return out
        out.append(x)
    return out + [int(torch.multinomial(target_probs[len(out)], 1, generator=generator))]


def residual_of_the_next_row(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    K = len(draft_tokens)
    for i, x in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, x] / draft_probs[i, x]:
            out.append(x)
            continue
        j = min(i + 1, K - 1)
        return out + [int(torch.multinomial((target_probs[j] - draft_probs[j]).clamp(min=0) + 1e-9, 1,
                                            generator=generator))]
    return out + [int(torch.multinomial(target_probs[len(out)], 1, generator=generator))]


def bonus_from_the_draft(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, x in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, x] / draft_probs[i, x]:
            out.append(x)
            continue
        return out + [int(torch.multinomial((target_probs[i] - draft_probs[i]).clamp(min=0), 1, generator=generator))]
    last = draft_probs[-1] if len(draft_tokens) else target_probs[0]
    return out + [int(torch.multinomial(last, 1, generator=generator))]


def one_uniform_per_round(target_probs, draft_probs, draft_tokens, generator=None):
    u = torch.rand((), generator=generator)
    out = []
    for i, x in enumerate(draft_tokens.tolist()):
        if u < target_probs[i, x] / draft_probs[i, x]:
            out.append(x)
            continue
        return out + [int(torch.multinomial((target_probs[i] - draft_probs[i]).clamp(min=0), 1, generator=generator))]
    return out + [int(torch.multinomial(target_probs[len(out)], 1, generator=generator))]


def counts_every_acceptance(target_probs, draft_probs, draft_tokens, generator=None):
    """Vectorised, but the number accepted is a sum, not the length of the accepted prefix."""
    K = len(draft_tokens)
    rows = torch.arange(K)
    u = torch.rand(K, generator=generator)
    n = int((u < target_probs[rows, draft_tokens] / draft_probs[rows, draft_tokens]).sum())
    weights = target_probs[K] if n == K else (target_probs[n] - draft_probs[n]).clamp(min=0)
    if weights.sum() == 0:
        weights = target_probs[n]
    return draft_tokens[:n].tolist() + [int(torch.multinomial(weights, 1, generator=generator))]


WRONG = [
    (residual_not_clamped, ("exception",)),
    (returns_a_tensor, ("wrong-type",)),
    (appends_tensors, ("wrong-type",)),
    (no_replacement_token, ("impossible-draw",)),
    (residual_of_the_next_row, ("impossible-draw", "distribution")),
    (bonus_from_the_draft, ("distribution", "impossible-draw")),
    (one_uniform_per_round, ("distribution", "impossible-draw")),
    (counts_every_acceptance, ("distribution", "impossible-draw")),
]


@pytest.mark.parametrize("impl,kinds", WRONG, ids=[f.__name__ for f, _ in WRONG])
def test_wrong_solutions_are_rejected_without_a_false_diagnosis(impl, kinds):
    report = run(NAME, impl)
    assert not report.passed
    assert report.kind in kinds, str(report)
    assert report.failure.mistake is None, str(report)


def test_a_list_of_tensors_is_named_as_such():
    report = run(NAME, appends_tensors)
    assert "append int(token)" in report.failure.problem.message


def test_a_known_mistake_written_another_way_is_named():
    def vectorised_resample_from_p(target_probs, draft_probs, draft_tokens, generator=None):
        K = draft_tokens.shape[0]
        rows = torch.arange(K)
        u = torch.rand(K, generator=generator, dtype=torch.float64)
        n = int((u < target_probs[rows, draft_tokens] / draft_probs[rows, draft_tokens]).long().cumprod(0).sum())
        return draft_tokens[:n].tolist() + [int(torch.multinomial(target_probs[n], 1, generator=generator))]

    report = run(NAME, vectorised_resample_from_p)
    assert not report.passed and report.failure.mistake == "resamples from the target", str(report)


# =========================================================================== bad input

def test_bad_results_get_a_clear_report():
    def raises(target_probs, draft_probs, draft_tokens, generator=None):
        return [int(draft_tokens[len(draft_tokens) + 3])]

    def edits(target_probs, draft_probs, draft_tokens, generator=None):
        target_probs[0] = 0.0
        return [0]

    cases = [(raises, "exception"), (lambda *a, generator=None: None, "returned-none"),
             (lambda *a, generator=None: "0 1", "wrong-type"), (lambda *a, generator=None: [0.5], "wrong-type"),
             (edits, "mutated-input"), (lambda *a, generator=None: [99], "impossible-draw")]
    for impl, kind in cases:
        report = run(NAME, impl)
        assert not report.passed and report.kind == kind, str(report)


def test_without_the_generator_keyword():
    report = run(NAME, lambda target_probs, draft_probs, draft_tokens: [0])
    assert report.kind == "exception" and "generator" in report.failure.problem.message


def test_not_attempted_endless_loop_and_forbidden_call():
    def stub(target_probs, draft_probs, draft_tokens, generator=None):
        raise NotImplementedError

    assert run(NAME, stub).status == "not attempted"

    def forever(target_probs, draft_probs, draft_tokens, generator=None):
        while True:
            pass

    quick = dataclasses.replace(get(NAME), timeout=0.3, forbidden=("torch.multinomial",))
    start = time.perf_counter()
    assert evaluate(quick, forever).kind == "timeout" and time.perf_counter() - start < 5
    report = evaluate(quick, multiply_not_divide)
    assert report.kind == "forbidden-call" and "torch.multinomial" in report.failure.problem.message


def test_the_report_is_chinese_too():
    from utils.i18n import english_left, speaking
    report = run(NAME, decl.no_bonus_token)
    with speaking("zh"):
        text = str(report)
    assert "奖励 token" in text
    body = "\n".join(text.split("\n")[2:])
    assert not english_left(body), english_left(body)
