"""The stochastic kind (utils/grader/kinds/stochastic.py), on realistic declarations of the book's fixed
signatures: sample_next_token (Part 7), dropout (Part 11, the book's own declaration), kmeans_plus_plus (Part 11).

What the tests prove, for each declaration: correct solutions in several styles pass (multinomial, inverse
CDF, Gumbel-max; bernoulli, rand < 1 - p); every registered mistake is rejected and diagnosed by name;
plausible unregistered wrong solutions are rejected without a false diagnosis (one uniform for the whole
batch, top-k dropping ties, ...); a reader ignoring the generator is named; bad input gets a clear message;
verdicts are identical run after run; a check is fast; and the bounds each declaration states (the
probability that a correct solution fails, that each mistake passes, the sample size) are recomputed here,
in plain Python from the exact laws, and hold.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kindcheck import named, timed

from utils.grader.core import evaluate
from utils.grader.exercises.classic_ml.training_loop import DROPOUT
from utils.grader.exercises.generation.sampling import (
    _filtered,
    ignores_generator,
    temperature_multiplied,
    token_probs,
)
from utils.grader.registry import get

# =========================================================================== sample_next_token (Part 7)
# sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None) -> (B,) int64:
# divide by the temperature, then top-k (ties with the k-th kept), then top-p (transformers' TopPLogitsWarper),
# then draw from the softmax with `generator`; temperature 0 is greedy argmax.


def sample_multinomial(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    probs = _filtered(logits, temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_inverse_cdf(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Probabilities filtered in probability space (descending top-p), one uniform per row, float64."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_k is not None and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[..., -1:]
        probs = torch.where(probs >= kth, probs, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    if top_p is not None:
        p_sorted, order = probs.sort(dim=-1, descending=True)
        before = p_sorted.cumsum(-1) - p_sorted                 # mass of the likelier tokens
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before < top_p)
        probs = torch.where(keep, probs, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.rand(*probs.shape[:-1], 1, generator=generator, dtype=torch.float64) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def sample_gumbel(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Gumbel-max: argmax(z + G), one Gumbel per logit."""
    if temperature == 0:
        return logits.max(dim=-1).indices
    z = _filtered(logits.double(), temperature, top_k, top_p)
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64)
    return (z - torch.log(-torch.log(u))).argmax(-1)


def sample_python_rows(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """A row at a time, as many readers write it: correct, only slower."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = _filtered(logits, temperature, top_k, top_p).softmax(-1)
    out = [torch.multinomial(row, 1, generator=generator) for row in probs.reshape(-1, probs.shape[-1])]
    return torch.cat(out).reshape(probs.shape[:-1])


CORRECT_SAMPLERS = [sample_multinomial, sample_inverse_cdf, sample_gumbel]


# The sampling chapter's own declaration (utils/grader/exercises/generation/sampling.py).
SAMPLE_NEXT_TOKEN = get("sample_next_token")


# =========================================================================== dropout (Part 11)
# dropout(x, p=0.5, training=True, generator=None): inverted dropout: each entry zeroed with probability p,
# survivors scaled by 1 / (1 - p); identity when not training or p == 0. The declaration is the book's own
# (utils/grader/exercises/classic_ml/training_loop.py); below, correct solutions in three styles.

def dropout_bernoulli(x, p=0.5, training=True, generator=None):
    if not training or p == 0:
        return x
    mask = torch.bernoulli(torch.full_like(x, 1 - p), generator=generator)
    return x * mask / (1 - p)


def dropout_rand(x, p=0.5, training=True, generator=None):
    if not training or p == 0:
        return x.clone()
    keep = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return torch.where(keep, x / (1 - p), torch.zeros_like(x))


def dropout_uniform_(x, p=0.5, training=True, generator=None):
    if not training:
        return x
    u = torch.empty_like(x).uniform_(generator=generator)
    return x * (u < 1 - p).to(x.dtype) * (1.0 / (1.0 - p))


# =========================================================================== kmeans_plus_plus (Part 11)
# kmeans_plus_plus(x, k, generator=None) -> (k, D): the first centroid uniform, each next one drawn with
# probability proportional to its squared distance to the nearest chosen centroid.


def kmeanspp_multinomial(x, k, generator=None):
    idx = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    d2 = ((x - x[idx[0]]) ** 2).sum(-1)
    for _ in range(1, k):
        i = int(torch.multinomial(d2, 1, generator=generator))
        idx.append(i)
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(-1))
    return x[idx].clone()


def kmeanspp_inverse_cdf(x, k, generator=None):
    N = x.shape[0]
    first = min(int(torch.rand((), generator=generator, dtype=torch.float64) * N), N - 1)
    centroids = [x[first]]
    for _ in range(1, k):
        d2 = torch.cdist(x.double(), torch.stack(centroids).double()).pow(2).min(-1).values
        cdf = d2.cumsum(0)
        u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
        centroids.append(x[int(torch.searchsorted(cdf, u, right=True).clamp_max(N - 1))])
    return torch.stack(centroids)


# The chapter's own declaration (utils/grader/exercises/classic_ml/kmeans.py).
KMEANS_PLUS_PLUS = get("kmeans_plus_plus")


DECLARATIONS = [SAMPLE_NEXT_TOKEN, DROPOUT, KMEANS_PLUS_PLUS]
CORRECT = [(SAMPLE_NEXT_TOKEN, f) for f in CORRECT_SAMPLERS] + \
          [(DROPOUT, f) for f in (dropout_bernoulli, dropout_rand, dropout_uniform_)] + \
          [(KMEANS_PLUS_PLUS, f) for f in (kmeanspp_multinomial, kmeanspp_inverse_cdf)]
MISTAKES = [(ex, m) for ex in DECLARATIONS for m in ex.mistakes]


# --------------------------------------------------------------------------- correct solutions, every style

@pytest.mark.parametrize("ex,impl", CORRECT, ids=[f"{ex.name}: {f.__name__}" for ex, f in CORRECT])
def test_correct_solutions_pass_within_a_second(ex, impl):
    report, seconds = timed(ex, impl)
    assert report.passed, str(report)
    assert seconds < 1.0, f"{ex.name} took {seconds:.2f} s"


def test_a_row_at_a_time_sampler_passes():
    assert evaluate(SAMPLE_NEXT_TOKEN, sample_python_rows).passed


# --------------------------------------------------------------------------- registered mistakes

@pytest.mark.parametrize("ex,mistake", MISTAKES, ids=[f"{ex.name}: {m.name}" for ex, m in MISTAKES])
def test_every_mistake_is_rejected_and_named(ex, mistake):
    seconds = named(ex, mistake)
    assert seconds < 3.0, f"{mistake.name}: {seconds:.2f} s"     # the first diagnosis runs every mistake


# --------------------------------------------------------------------------- other ways of writing known mistakes

def _gumbel_global(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    z = _filtered(logits, temperature, top_k, top_p)
    return (z - torch.log(-torch.log(torch.rand(z.shape)))).argmax(-1)


def _numpy_rng(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    probs = _filtered(logits.double(), temperature, top_k, top_p).softmax(-1)
    u = torch.from_numpy(np.random.rand(*probs.shape[:-1], 1))
    return torch.searchsorted(probs.cumsum(-1), u * probs.sum(-1, keepdim=True), right=True).squeeze(-1)


def _python_random(x, p=0.5, training=True, generator=None):
    if not training or p == 0:
        return x
    keep = torch.tensor([random.random() >= p for _ in range(x.numel())]).reshape(x.shape)
    return torch.where(keep, x / (1 - p), torch.zeros_like(x))


def _greedy_max(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return logits.max(dim=-1).indices


def _global_seeded(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    torch.manual_seed(generator.initial_seed())
    return torch.multinomial(_filtered(logits, temperature, top_k, top_p).softmax(-1), 1).squeeze(-1)


def _temperature_times_inverse_cdf(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return sample_inverse_cdf(logits * temperature, 1.0, top_k, top_p, generator)


def _scaled_by_keep_rand(x, p=0.5, training=True, generator=None):
    if not training or p == 0:
        return x
    return torch.where(torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p, x * (1 - p), 0.0)


@pytest.mark.parametrize("ex,impl,name", [
    (SAMPLE_NEXT_TOKEN, _gumbel_global, "ignores the generator"),
    (SAMPLE_NEXT_TOKEN, _numpy_rng, "ignores the generator"),
    (DROPOUT, _python_random, "dropout ignores the generator"),
    (SAMPLE_NEXT_TOKEN, _greedy_max, "always argmax"),
    (SAMPLE_NEXT_TOKEN, _global_seeded, "re-seeds a generator"),
    (SAMPLE_NEXT_TOKEN, _temperature_times_inverse_cdf, "temperature multiplied"),
    (DROPOUT, _scaled_by_keep_rand, "multiplies by 1 - p"),
], ids=["gumbel, global torch RNG", "numpy RNG", "python random", "torch.max", "torch.manual_seed inside",
        "inverse CDF, temperature multiplied", "rand, times 1 - p"])
def test_a_known_mistake_written_another_way_is_named(ex, impl, name):
    report = evaluate(ex, impl)
    assert not report.passed and report.failure.mistake == name, str(report)


# --------------------------------------------------------------------------- plausible wrong solutions, not registered

def _one_uniform_per_batch(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Rows correlated: a single uniform drives every row."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = _filtered(logits.double(), temperature, top_k, top_p).softmax(-1)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return torch.searchsorted(probs.cumsum(-1), u.expand(*probs.shape[:-1], 1).contiguous(), right=True
                              ).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def _top_k_drops_ties(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    z = logits / temperature
    if top_k is not None and top_k < z.shape[-1]:
        vals, idx = torch.topk(z, top_k, dim=-1)
        z = torch.full_like(z, float("-inf")).scatter(-1, idx, vals)
    return sample_multinomial(z, 1.0, None, top_p, generator)


def _softmax_over_batch(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    probs = F.softmax(_filtered(logits, temperature, top_k, top_p), dim=0)
    return torch.multinomial(torch.nan_to_num(probs) + 1e-12, 1, generator=generator).squeeze(-1)


def _exp_without_max(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    e = torch.exp(_filtered(logits, temperature, top_k, top_p))
    return torch.multinomial(e / e.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)


def _keeps_column_shape(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return sample_multinomial(logits, temperature, top_k, top_p, generator).unsqueeze(-1)


def _int32_tokens(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return sample_multinomial(logits, temperature, top_k, top_p, generator).int()


def _one_coin_for_all(x, p=0.5, training=True, generator=None):
    if not training or p == 0:
        return x
    keep = torch.rand((), generator=generator) >= p
    return x / (1 - p) if keep else torch.zeros_like(x)


def _in_place(x, p=0.5, training=True, generator=None):
    if not training or p == 0:
        return x
    return x.mul_(torch.bernoulli(torch.full_like(x, 1 - p), generator=generator) / (1 - p))


def _float64_out(x, p=0.5, training=True, generator=None):
    return dropout_rand(x, p, training, generator).double()


def _random_subset(x, k, generator=None):
    return x[torch.randperm(x.shape[0], generator=generator)[:k]].clone()


def _indices_not_points(x, k, generator=None):
    return torch.randperm(x.shape[0], generator=generator)[:k]


UNREGISTERED = [
    (SAMPLE_NEXT_TOKEN, _one_uniform_per_batch, ("distribution",)),
    (SAMPLE_NEXT_TOKEN, _top_k_drops_ties, ("distribution",)),
    (SAMPLE_NEXT_TOKEN, _softmax_over_batch, ("distribution", "impossible-draw")),
    (SAMPLE_NEXT_TOKEN, _exp_without_max, ("exception",)),
    (SAMPLE_NEXT_TOKEN, _keeps_column_shape, ("wrong-shape",)),
    (SAMPLE_NEXT_TOKEN, _int32_tokens, ("wrong-dtype",)),
    (DROPOUT, _one_coin_for_all, ("distribution", "impossible-draw")),
    (DROPOUT, _in_place, ("mutated-input",)),
    (DROPOUT, _float64_out, ("wrong-dtype",)),
    (KMEANS_PLUS_PLUS, _random_subset, ("distribution", "impossible-draw")),
    (KMEANS_PLUS_PLUS, _indices_not_points, ("wrong-shape",)),
]


@pytest.mark.parametrize("ex,impl,kinds", UNREGISTERED, ids=[f.__name__.strip("_") for _, f, _ in UNREGISTERED])
def test_plausible_wrong_solutions_are_rejected_without_a_false_diagnosis(ex, impl, kinds):
    report = evaluate(ex, impl)
    assert not report.passed
    assert report.kind in kinds, str(report)
    assert report.failure.mistake is None, str(report)


def test_dropout_in_place_names_the_argument():
    report = evaluate(DROPOUT, _in_place)
    assert "`x` in place" in report.failure.problem.message


def test_rows_drawn_from_one_uniform_are_seen_in_the_counts():
    report = evaluate(SAMPLE_NEXT_TOKEN, _one_uniform_per_batch)
    assert report.failure.case == 0 and "came up" in report.failure.problem.message


# --------------------------------------------------------------------------- the generator and the global RNGs

def test_the_check_leaves_the_global_rngs_as_they_were():
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    evaluate(SAMPLE_NEXT_TOKEN, ignores_generator)
    evaluate(DROPOUT, _python_random)
    evaluate(SAMPLE_NEXT_TOKEN, _numpy_rng)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


@pytest.mark.parametrize("impl", [sample_gumbel, ignores_generator, _gumbel_global, _numpy_rng, temperature_multiplied,
                                  _one_uniform_per_batch])
def test_verdicts_are_identical_run_after_run(impl):
    first, again = evaluate(SAMPLE_NEXT_TOKEN, impl), evaluate(SAMPLE_NEXT_TOKEN, impl)
    assert first.status == again.status
    if first.failure:
        assert (first.failure.case, first.failure.problem.message, first.failure.mistake) == \
               (again.failure.case, again.failure.problem.message, again.failure.mistake)


def test_the_oracle_outcome_is_deterministic_and_all_checks_hold():
    for ex in DECLARATIONS:
        for case in ex.all_cases():
            out = ex.outcome(ex.oracle, case, None)
            assert [v for _, v in out.parts] == [v for _, v in ex.outcome(ex.oracle, case, None).parts]
            assert all(v.holds for _, v in out.parts)


# --------------------------------------------------------------------------- bad input

def test_a_raising_sampler_shows_the_call_and_the_readers_line():
    def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        probs = logits.softmax(-1)
        return probs[10_000]
    report = evaluate(SAMPLE_NEXT_TOKEN, sample)
    assert report.kind == "exception" and "IndexError" in report.failure.problem.message
    assert "probs[10_000]" in report.failure.frame


def test_a_sampler_without_the_generator_keyword():
    report = evaluate(SAMPLE_NEXT_TOKEN, lambda logits, temperature=1.0, top_k=None, top_p=None: logits.argmax(-1))
    assert report.kind == "exception" and "generator" in report.failure.problem.message


@pytest.mark.parametrize("impl,kind", [
    (lambda logits, temperature=1.0, top_k=None, top_p=None, generator=None: None, "returned-none"),
    (lambda logits, temperature=1.0, top_k=None, top_p=None, generator=None: logits.argmax(-1).numpy(),
     "returned-numpy"),
    (lambda logits, temperature=1.0, top_k=None, top_p=None, generator=None: logits.argmax(-1).tolist(),
     "wrong-type"),
    (lambda logits, temperature=1.0, top_k=None, top_p=None, generator=None: logits.softmax(-1), "wrong-shape"),
    (lambda logits, temperature=1.0, top_k=None, top_p=None, generator=None: logits.argmax(-1) + 100,
     "impossible-draw"),
], ids=["None", "numpy", "list", "probabilities", "ids out of range"])
def test_results_of_the_wrong_form_are_named(impl, kind):
    report = evaluate(SAMPLE_NEXT_TOKEN, impl)
    assert report.kind == kind, str(report)


def test_ids_outside_the_vocabulary_are_named_as_such():
    report = evaluate(SAMPLE_NEXT_TOKEN, lambda logits, temperature=1.0, top_k=None, top_p=None, generator=None:
                      logits.argmax(-1) + 100)
    assert "an id outside 0..7" in report.failure.problem.message


def test_not_attempted_not_callable_endless_loop_and_forbidden_call():
    def stub(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        raise NotImplementedError
    assert evaluate(SAMPLE_NEXT_TOKEN, stub).status == "not attempted"
    assert evaluate(SAMPLE_NEXT_TOKEN, 3).kind == "wrong-type"

    quick = dataclasses.replace(SAMPLE_NEXT_TOKEN, timeout=0.3, forbidden=("torch.multinomial",))

    def forever(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        while True:
            pass
    start = time.perf_counter()
    assert evaluate(quick, forever).kind == "timeout" and time.perf_counter() - start < 3
    report = evaluate(quick, sample_multinomial)
    assert report.kind == "forbidden-call" and "torch.multinomial" in report.failure.problem.message
    assert evaluate(quick, sample_gumbel).passed


# --------------------------------------------------------------------------- the stated bounds, recomputed

def _log_pmf(n, p, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_mass(n, p, lo, hi):
    """P(lo <= X <= hi) for X ~ Binomial(n, p), summed term by term in plain Python."""
    lo, hi = max(lo, 0), min(hi, n)
    if lo > hi:
        return 0.0
    if p <= 0.0 or p >= 1.0:
        sure = 0 if p <= 0.0 else n
        return 1.0 if lo <= sure <= hi else 0.0
    return math.fsum(math.exp(_log_pmf(n, p, k)) for k in range(lo, hi + 1))


def _case_laws(ex, law_fn):
    """Per case: (plan, law rows per group (G, C), the full law (S, C))."""
    out = []
    for case, plan in zip(ex.all_cases(), ex.plans()):
        args, kwargs = case.make()
        law = law_fn(*args, **kwargs).to(torch.float64).reshape(plan.law.shape)
        out.append((plan, law[plan.first].tolist(), law.tolist()))
    return out


def _agree(law, calls, independent):
    """P(`calls` independent calls give the same draws), from the full law (S, C), in plain Python."""
    per_slot = [math.fsum(p ** calls for p in row) for row in law]
    return math.prod(per_slot) if independent else min(per_slot)


def recomputed_bounds(ex):
    """The false-rejection probability and every mistake's passing probability, from the exact laws and the
    regions the kind applies, in plain Python: the statements are checked against these."""
    fails = 0.0
    for plan, rows, law in _case_laws(ex, ex.oracle):
        lo, hi, _ = plan.regions["target"]
        for g, row in enumerate(rows):
            n = int(plan.n[g])
            for c, p in enumerate(row):
                fails += binomial_mass(n, p, 0, int(lo[g, c]) - 1) + binomial_mass(n, p, int(hi[g, c]) + 1, n)
                assert p not in (0.0, 1.0) or (int(lo[g, c]), int(hi[g, c])) == ((0, 0) if p == 0 else (n, n))
        if plan.fresh:
            fails += _agree(law, plan.calls, ex.independent)
    passes = {}
    for m in ex.mistakes:
        if m.law is None and m.rng == "generator":
            continue        # drawn like the target: caught by an exact case (temperature 0), not by these tests
        bound = 1.0
        for plan, rows, law in _case_laws(ex, m.law or ex.oracle):
            lo, hi, _ = plan.regions["target"]
            for g, row in enumerate(rows):
                for c, q in enumerate(row):
                    bound = min(bound, binomial_mass(int(plan.n[g]), q, int(lo[g, c]), int(hi[g, c])))
            if m.rng == "global":
                bound = min(bound, _agree(law, 2, ex.independent) ** plan.rerun)
            if m.rng == "fixed" and plan.fresh:
                bound = 0.0
        passes[m.name] = bound
    return fails, passes


@pytest.mark.parametrize("ex", DECLARATIONS, ids=[ex.name for ex in DECLARATIONS])
def test_the_stated_bounds_hold(ex):
    fails, passes = recomputed_bounds(ex)
    assert fails <= ex.false_rejection < 1e-6, f"{ex.name}: a correct solution fails with probability {fails:.2e}"
    computed = ex.bounds()
    assert math.isclose(computed["false rejection"], fails, rel_tol=1e-6, abs_tol=1e-15)
    for m in ex.mistakes:
        if m.name in passes:
            assert passes[m.name] <= m.passes <= 1e-6, \
                f"{ex.name}: {m.name} passes with probability {passes[m.name]:.2e}"
            assert computed[m.name] <= max(passes[m.name] * (1 + 1e-6), 1e-300)


@pytest.mark.parametrize("ex", DECLARATIONS, ids=[ex.name for ex in DECLARATIONS])
def test_the_stated_sample_size_and_the_laws(ex):
    assert sum(int(p.n.sum()) for p in ex.plans()) == ex.samples
    for i in range(len(ex.all_cases())):
        for name in ex.laws():
            ex.region(i, name)          # every mistake's law is constant where the target's is
    for case in ex.all_cases():
        args, kwargs = case.make()
        for law_fn in [ex.oracle] + [m.law for m in ex.mistakes if m.law is not None]:
            law = law_fn(*args, **kwargs)
            assert law.dtype == torch.float64 and (law >= 0).all()
            assert torch.allclose(law.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-12)
            assert law.shape[-1] == len(ex.names(args, kwargs))


def test_no_sampling_case_sits_on_a_boundary():
    """float32 readers and the float64 law decide every token alike: distinct logits are at least 1e-4 apart
    (ties are exact), and each cumulative probability is at least 1e-4 away from 1 - top_p (as
    TopPLogitsWarper sums them, in ascending order)."""
    for case in SAMPLE_NEXT_TOKEN.all_cases():
        (logits,), kw = case.make()
        T, top_k, top_p = kw.get("temperature", 1.0), kw.get("top_k"), kw.get("top_p")
        for row in {tuple(r) for r in logits.double().tolist()}:
            values = sorted(set(row))
            assert all(b - a > 1e-4 for a, b in zip(values, values[1:])), case.note
            if T == 0 or top_p is None:
                continue
            p = token_probs(list(row), T, top_k, None)
            total = 0.0
            for j in sorted(range(len(p)), key=lambda j: p[j]):
                total += p[j]
                if p[j] > 0:
                    assert abs(total - (1 - top_p)) > 1e-4, (case.note, total)


def test_fixed_seeds_make_the_sizes_of_the_tests_the_declared_ones():
    """Every count test of the target is sized at the same level, and the sizes sum to at most half the
    statement (the other half goes to the fresh-draws checks)."""
    for ex in DECLARATIONS:
        tests = sum(int(((p.law[p.first] > 0) & (p.law[p.first] < 1)).sum()) for p in ex.plans())
        assert sum(p.size for p in ex.plans()) <= ex.false_rejection / 2
        assert all(p.size <= tests * ex.false_rejection / 2 / max(tests, 1) for p in ex.plans())
