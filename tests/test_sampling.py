"""Part 7, generation: the top_k_filter, top_p_filter, apply_repetition_penalty and sample_next_token graders
(utils/grader/exercises/generation/sampling.py) and the chapter generation/sampling.

The oracles (and the chapter's solutions) are checked against the field's reference, transformers'
TopKLogitsWarper, TopPLogitsWarper, RepetitionPenaltyLogitsProcessor and TemperatureLogitsWarper, on many random
inputs; every case is checked to sit clear of floating-point boundaries; the sampler's stated bounds are
recomputed from the exact laws. Wrong solutions written as candidates write them (none of them a registered
mistake) are rejected, correct solutions in other styles pass, and bad input gets a clear report, never a crash.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.grader import get, run
from utils.grader.exercises.generation import sampling as decl

lp = pytest.importorskip("transformers.generation.logits_process")

TOP_K, TOP_P, PENALTY, SAMPLE = "top_k_filter", "top_p_filter", "apply_repetition_penalty", "sample_next_token"
NEG_INF = float("-inf")


def _random_logits(g, B, V, dtype=torch.float64, ties=False):
    x = torch.randn(B, V, generator=g, dtype=torch.float64) * 2
    if ties:                                  # rounded to a coarse grid: many exact ties
        x = torch.round(x * 2) / 2
    return x.to(dtype)


def _cpu_seconds(name, impl):
    start = time.process_time()
    report = run(name, impl)
    return report, time.process_time() - start


# =========================================================================== the oracles against transformers

@pytest.mark.parametrize("seed", range(3))
def test_top_k_oracle_and_book_equal_transformers(seed, book):
    mine = book("generation/sampling")["top_k_filter"]
    g = torch.Generator().manual_seed(seed)
    for trial in range(40):
        B, V = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 40, (1,), generator=g))
        x = _random_logits(g, B, V, dtype=(torch.float32, torch.float64)[trial % 2], ties=trial % 3 == 0)
        for k in (1, 2, V // 2 + 1, V, V + 3):
            ref = lp.TopKLogitsWarper(top_k=k)(None, x.clone())
            assert torch.equal(decl.top_k_spec(x, k), ref), (seed, trial, k)
            assert torch.equal(mine(x, k), ref), (seed, trial, k)


def test_top_k_oracle_equals_transformers_on_3d_logits():
    x = _random_logits(torch.Generator().manual_seed(9), 6, 11, ties=True).reshape(2, 3, 11)
    for k in (1, 3, 11, 20):
        assert torch.equal(decl.top_k_spec(x, k), lp.TopKLogitsWarper(top_k=k)(None, x.clone()))


@pytest.mark.parametrize("V", [2, 7, 30, 120])
def test_top_p_oracle_and_book_equal_transformers(V, book):
    """float64 random logits: no cumulative sum lands within rounding of 1 - p, so the two must agree exactly."""
    mine = book("generation/sampling")["top_p_filter"]
    g = torch.Generator().manual_seed(100 + V)
    x = _random_logits(g, 40, V) * torch.linspace(0.1, 3.0, 40, dtype=torch.float64)[:, None]   # flat to peaked
    for p in (1e-4, 0.1, 0.5, 0.8, 0.95, 0.999, 1.0):
        for keep in (1, 2, 3):
            ref = lp.TopPLogitsWarper(top_p=p, min_tokens_to_keep=keep)(None, x.clone())
            assert torch.equal(decl.top_p_spec(x, p, keep), ref), (V, p, keep)
            assert torch.equal(mine(x, p, keep), ref), (V, p, keep)


@pytest.mark.parametrize("seed", range(3))
def test_repetition_oracle_and_book_equal_transformers(seed, book):
    mine = book("generation/sampling")["apply_repetition_penalty"]
    g = torch.Generator().manual_seed(200 + seed)
    for trial in range(30):
        B, V, T = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 5), (2, 40), (1, 30)))
        x = _random_logits(g, B, V, dtype=(torch.float32, torch.float64)[trial % 2])
        ids = torch.randint(0, V, (B, T), generator=g)
        x[0, ids[0, 0]] = 0.0                                 # a logit of exactly 0 among the penalised
        for penalty in (0.5, 1.0, 1.2, 2.0):
            ref = lp.RepetitionPenaltyLogitsProcessor(penalty=penalty)(ids, x.clone())
            assert torch.equal(decl.repetition_spec(x, ids, penalty), ref), (seed, trial, penalty)
            assert torch.equal(mine(x, ids, penalty), ref), (seed, trial, penalty)


def _warped_probs(row, temperature, top_k, top_p):
    """transformers' pipeline of generate(do_sample=True) on one row, in float64: its sampling distribution."""
    z = row.double()[None]
    if temperature != 1.0:
        z = lp.TemperatureLogitsWarper(float(temperature))(None, z)
    if top_k is not None:
        z = lp.TopKLogitsWarper(top_k=top_k)(None, z)
    if top_p is not None and top_p < 1.0:
        z = lp.TopPLogitsWarper(top_p=top_p)(None, z)
    return torch.softmax(z, -1)[0]


def test_the_sampler_law_is_transformers_sampling_distribution():
    g = torch.Generator().manual_seed(7)
    for trial in range(60):
        V = int(torch.randint(2, 20, (1,), generator=g))
        row = _random_logits(g, 1, V, ties=trial % 4 == 0)[0]
        T = [0.5, 0.8, 1.0, 1.7][trial % 4]
        top_k = [None, 1, 3, V + 2][trial % 3]
        top_p = [None, 0.3, 0.9, 1.0][trial % 4]
        law = decl.token_law(row[None], T, top_k, top_p)[0]
        assert law[-1] == 0
        torch.testing.assert_close(law[:-1], _warped_probs(row, T, top_k, top_p), rtol=0, atol=1e-12)


def test_temperature_zero_law_is_the_first_argmax():
    row = torch.tensor([[1.0, 3.0, 3.0, -1.0]])
    assert decl.token_law(row, 0)[0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert int(row.argmax(-1)) == 1            # torch.argmax returns the first maximal index too


# =========================================================================== the cases

def _tail_sums(row_probs):
    """Running sums of one row's probabilities in ascending order, as TopPLogitsWarper adds them, with the
    probability of each token (float64, Python)."""
    order = sorted(range(len(row_probs)), key=lambda j: row_probs[j])
    total, out = 0.0, []
    for rank, j in enumerate(order):
        total += row_probs[j]
        out.append((rank, row_probs[j], total))
    return out


def _top_p_args(case):
    args, kwargs = case.make()
    x = args[0]
    p = args[1] if len(args) > 1 else kwargs["p"]
    keep = args[2] if len(args) > 2 else kwargs.get("min_tokens_to_keep", 1)
    return x, p, keep


def test_no_top_p_case_sits_on_a_boundary():
    """Every running sum a top-p decision compares with 1 - p is at least 1e-4 away from it (the protected
    min_tokens_to_keep most likely aside), and tokens of equal probability share their fate: a float32 reader, a
    descending or ascending sum, and the float64 specification keep the same tokens."""
    for case in get(TOP_P).all_cases():
        x, p, keep = _top_p_args(case)
        V = x.shape[-1]
        for row in x.double().reshape(-1, V):
            probs = torch.softmax(row, -1).tolist()
            sums = _tail_sums(probs)
            for rank, prob, total in sums:
                if prob > 0 and rank < V - keep:
                    assert abs(total - (1 - p)) > 1e-4, (case.note, total)
            fate = {}
            for rank, prob, total in sums:
                removed = rank < V - keep and total <= 1 - p
                assert fate.setdefault(prob, removed) == removed, (case.note, prob)


def test_float32_transformers_agree_with_the_top_p_oracle_on_every_case():
    for case in get(TOP_P).all_cases():
        x, p, keep = _top_p_args(case)
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        ref = lp.TopPLogitsWarper(top_p=p, min_tokens_to_keep=keep)(None, rows.clone()).reshape(x.shape)
        assert torch.equal(decl.top_p_spec(x, p, keep), ref), case.note


def test_no_sampling_case_sits_on_a_boundary():
    """For the sampler: distinct logits at least 1e-4 apart (ties are exact), cumulative sums 1e-4 from 1 - top_p."""
    for case in get(SAMPLE).all_cases():
        (logits,), kw = case.make()
        T, top_k, top_p = kw.get("temperature", 1.0), kw.get("top_k"), kw.get("top_p")
        for row in {tuple(r) for r in logits.double().tolist()}:
            values = sorted(set(row))
            assert all(b - a > 1e-4 for a, b in zip(values, values[1:])), case.note
            if T == 0 or top_p is None or top_p >= 1:
                continue
            probs = decl.token_probs(list(row), T, top_k, None)
            for _rank, prob, total in _tail_sums(probs)[:-1]:
                if prob > 0:
                    assert abs(total - (1 - top_p)) > 1e-4, (case.note, total)


def test_the_cases_cover_the_issue():
    notes = {name: " ".join(c.note for c in get(name).all_cases()) for name in (TOP_K, TOP_P, PENALTY, SAMPLE)}
    for needed in ("ties at the k-th", "k = V", "k > V", "float64", "non-contiguous", "batch of one", "(B, T, V)",
                   "rows in different ranges", "1-D"):
        assert needed in notes[TOP_K], needed
    for needed in ("p near 0", "p near 1", "p = 1", "min_tokens_to_keep", "each row on its own", "float64",
                   "non-contiguous", "batch of one", "-inf"):
        assert needed in notes[TOP_P], needed
    for needed in ("each penalised once", "each row penalises its own", "< 1 rewards", "penalty 1 changes nothing",
                   "float64", "non-contiguous", "batch of one", "stay 0", "stay -inf"):
        assert needed in notes[PENALTY], needed
    for needed in ("temperature 0", "tied", "top_p", "float64", "non-contiguous", "batch of one", "different rows"):
        assert needed in notes[SAMPLE], needed
    for name in (TOP_K, TOP_P, PENALTY, SAMPLE):
        assert len(get(name).mistakes) >= 5 and len(get(name).ladder()) >= 3


def test_the_rows_of_a_case_keep_different_numbers_of_tokens():
    case = next(c for c in get(TOP_P).all_cases() if "peaked row" in c.note)
    x, p, keep = _top_p_args(case)
    assert torch.isfinite(decl.top_p_spec(x, p, keep)).sum(-1).tolist() == [1, 9]
    case = next(c for c in get(TOP_K).all_cases() if "ties at the k-th" in c.note)
    (x, k), _ = case.make()
    assert torch.isfinite(decl.top_k_spec(x, k)).sum(-1).tolist() == [5, 5]


# =========================================================================== correct solutions in other styles

def top_k_by_sort(logits, k):
    kth = logits.sort(dim=-1, descending=True).values[..., min(k, logits.shape[-1]) - 1, None]
    return torch.where(logits >= kth, logits, torch.full_like(logits, NEG_INF))


def top_k_by_kthvalue(logits, k):
    V = logits.shape[-1]
    kth = -torch.kthvalue(-logits, min(k, V), dim=-1, keepdim=True).values
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_by_rows(logits, k):
    out = logits.clone()
    flat = out.reshape(-1, logits.shape[-1])
    for row in flat:
        threshold = sorted(row.tolist(), reverse=True)[min(k, len(row)) - 1]
        row[row < threshold] = NEG_INF
    return flat.reshape(logits.shape)


def top_p_descending(logits, p, min_tokens_to_keep=1):
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs            # the mass of the likelier tokens
    keep = before < p
    keep[..., :min_tokens_to_keep] = True
    keep = torch.zeros_like(keep).scatter(-1, order, keep)
    return logits.masked_fill(~keep, NEG_INF)


def top_p_shifted(logits, p, min_tokens_to_keep=1):
    """The older transformers formulation: remove where the descending cumsum passes p, shifted right by one."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove = sorted_logits.softmax(-1).cumsum(-1) > p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., :min_tokens_to_keep] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def top_p_by_rows(logits, p, min_tokens_to_keep=1):
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(flat, NEG_INF)
    for r, row in enumerate(flat):
        probs = torch.softmax(row.double(), -1)
        mass = 0.0
        for rank, j in enumerate(torch.argsort(probs, descending=True).tolist()):
            if mass >= p and rank >= min_tokens_to_keep:
                break
            out[r, j] = row[j]
            mass += float(probs[j])
    return out.reshape(logits.shape)


def penalty_by_loop(logits, input_ids, penalty):
    out = logits.clone()
    for b, row in enumerate(input_ids.tolist()):
        for token in set(row):
            out[b, token] = out[b, token] / penalty if out[b, token] > 0 else out[b, token] * penalty
    return out


def penalty_by_mask(logits, input_ids, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, input_ids, True)
    factor = torch.where(logits > 0, 1 / torch.tensor(penalty, dtype=logits.dtype), penalty)
    return torch.where(seen, logits * factor, logits)


def sample_gumbel(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.max(-1).indices
    z = decl._filtered(logits.double(), temperature, top_k, top_p)
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64)
    return (z - torch.log(-torch.log(u))).argmax(-1)


def sample_inverse_cdf(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.double() / temperature
    if top_k is not None:
        z = top_k_by_sort(z, top_k)
    if top_p is not None:
        z = top_p_descending(z, top_p)
    cdf = z.softmax(-1).cumsum(-1)
    u = torch.rand(*cdf.shape[:-1], 1, generator=generator, dtype=torch.float64) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(cdf.shape[-1] - 1)


CORRECT = [(TOP_K, top_k_by_sort), (TOP_K, top_k_by_kthvalue), (TOP_K, top_k_by_rows),
           (TOP_P, top_p_descending), (TOP_P, top_p_shifted), (TOP_P, top_p_by_rows),
           (PENALTY, penalty_by_loop), (PENALTY, penalty_by_mask),
           (SAMPLE, sample_gumbel), (SAMPLE, sample_inverse_cdf)]


@pytest.mark.parametrize("name,impl", CORRECT, ids=[f"{n}: {f.__name__}" for n, f in CORRECT])
def test_correct_solutions_in_other_styles_pass(name, impl):
    report, seconds = _cpu_seconds(name, impl)
    assert report.passed, str(report)
    assert seconds < 1.0, f"{seconds:.2f} s of CPU"


@pytest.mark.parametrize("name", [TOP_K, TOP_P, PENALTY, SAMPLE])
def test_the_book_solution_passes_within_a_second(name, book):
    report, seconds = _cpu_seconds(name, book("generation/sampling")[name])
    assert report.passed, str(report)
    assert seconds < 1.0, f"{name}: {seconds:.2f} s of CPU"


# =========================================================================== wrong solutions, as candidates write them

def top_k_smallest(logits, k):
    kth = torch.sort(logits, dim=-1).values[..., min(k, logits.shape[-1]) - 1:min(k, logits.shape[-1])]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_returns_probabilities(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return torch.softmax(logits.masked_fill(logits < kth, NEG_INF), dim=-1)


def top_k_two_d_only(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1])).values[:, -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_nan(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("nan"))


def top_k_float32(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF).float()


def top_k_clamped_to_batch(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[0]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_renormalised_logits(logits, p, min_tokens_to_keep=1):
    kept = decl.top_p_spec(logits, p, min_tokens_to_keep)
    return torch.log_softmax(kept, dim=-1)


def top_p_threshold_on_probability(logits, p, min_tokens_to_keep=1):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < 1 - p, NEG_INF)


def top_p_keeps_least_likely(logits, p, min_tokens_to_keep=1):
    sorted_logits, order = torch.sort(logits, dim=-1)
    remove = sorted_logits.softmax(-1).cumsum(-1) <= 1 - p
    remove[..., :min_tokens_to_keep] = False
    remove[..., -1] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def top_p_on_logits(logits, p, min_tokens_to_keep=1):
    sorted_logits, order = torch.sort(logits, dim=-1)
    running = sorted_logits.cumsum(-1) / sorted_logits.sum(-1, keepdim=True)
    remove = running <= 1 - p
    remove[..., -min_tokens_to_keep:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def top_p_float32(logits, p, min_tokens_to_keep=1):
    return decl.top_p_spec(logits.float(), p, min_tokens_to_keep)


def penalty_positive_only(logits, input_ids, penalty):
    seen = logits.gather(1, input_ids)
    return logits.scatter(1, input_ids, torch.where(seen > 0, seen / penalty, seen))


def penalty_on_probabilities(logits, input_ids, penalty):
    probs = logits.softmax(-1)
    seen = probs.gather(1, input_ids)
    return probs.scatter(1, input_ids, seen / penalty)


def penalty_with_abs(logits, input_ids, penalty):
    seen = logits.gather(1, input_ids)
    return logits.scatter(1, input_ids, seen - seen.abs() * (1 - 1 / penalty))


def penalty_first_row_ids(logits, input_ids, penalty):
    out = logits.clone()
    ids = input_ids[0].unique()
    seen = out[:, ids]
    out[:, ids] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return out


def penalty_float32(logits, input_ids, penalty):
    seen = logits.gather(1, input_ids)
    return logits.scatter(1, input_ids, torch.where(seen > 0, seen / penalty, seen * penalty)).float()


def sample_one_uniform_per_batch(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    cdf = decl._filtered(logits.double(), temperature, top_k, top_p).softmax(-1).cumsum(-1)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return torch.searchsorted(cdf, u.expand(*cdf.shape[:-1], 1).contiguous(), right=True).squeeze(-1).clamp_max(
        cdf.shape[-1] - 1)


def sample_top_k_drops_ties(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    z = logits / temperature
    if top_k is not None:
        z = top_k_drops_ties_filter(z, top_k)
    return decl._multinomial(decl._filtered(z, 1.0, None, top_p), generator)


def top_k_drops_ties_filter(z, k):
    values, idx = torch.topk(z, min(k, z.shape[-1]), dim=-1)
    return torch.full_like(z, NEG_INF).scatter(-1, idx, values)


def sample_softmax_over_batch(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    probs = F.softmax(decl._filtered(logits, temperature, top_k, top_p), dim=0)
    return torch.multinomial(torch.nan_to_num(probs) + 1e-12, 1, generator=generator).squeeze(-1)


def sample_column(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    return torch.multinomial(decl._filtered(logits, temperature, top_k, top_p).softmax(-1), 1, generator=generator)


def sample_int32(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1).int()
    return decl._multinomial(decl._filtered(logits, temperature, top_k, top_p), generator).int()


def sample_temperature_after_filters(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return decl._multinomial(decl._filtered(logits, 1.0, top_k, top_p) / temperature, generator)


WRONG = [
    (TOP_K, top_k_smallest, ("wrong-value", "not-finite")),
    (TOP_K, top_k_returns_probabilities, ("wrong-value", "not-finite")),
    (TOP_K, top_k_two_d_only, ("exception", "wrong-value", "not-finite")),
    (TOP_K, top_k_nan, ("wrong-value",)),
    (TOP_K, top_k_float32, ("wrong-dtype",)),
    (TOP_K, top_k_clamped_to_batch, ("wrong-value", "not-finite", "exception")),
    (TOP_P, top_p_renormalised_logits, ("wrong-value",)),
    (TOP_P, top_p_threshold_on_probability, ("wrong-value", "not-finite")),
    (TOP_P, top_p_keeps_least_likely, ("wrong-value", "not-finite")),
    (TOP_P, top_p_on_logits, ("wrong-value", "not-finite")),
    (TOP_P, top_p_float32, ("wrong-dtype",)),
    (PENALTY, penalty_positive_only, ("wrong-value",)),
    (PENALTY, penalty_on_probabilities, ("wrong-value",)),
    (PENALTY, penalty_with_abs, ("wrong-value",)),
    (PENALTY, penalty_first_row_ids, ("wrong-value",)),
    (PENALTY, penalty_float32, ("wrong-dtype",)),
    (SAMPLE, sample_one_uniform_per_batch, ("distribution",)),
    (SAMPLE, sample_top_k_drops_ties, ("distribution",)),
    (SAMPLE, sample_softmax_over_batch, ("distribution", "impossible-draw")),
    (SAMPLE, sample_column, ("wrong-shape",)),
    (SAMPLE, sample_int32, ("wrong-dtype",)),
    (SAMPLE, sample_temperature_after_filters, ("distribution", "impossible-draw")),
]


@pytest.mark.parametrize("name,impl,kinds", WRONG, ids=[f"{n}: {f.__name__}" for n, f, _ in WRONG])
def test_wrong_solutions_are_rejected_without_a_false_diagnosis(name, impl, kinds):
    report = run(name, impl)
    assert not report.passed
    assert report.kind in kinds, str(report)
    assert report.failure.mistake is None, str(report)


def test_a_known_mistake_written_another_way_is_named():
    def divides_every_seen_logit(logits, input_ids, penalty):          # a loop instead of gather / scatter
        out = logits.clone()
        for b in range(out.shape[0]):
            for token in set(input_ids[b].tolist()):
                out[b, token] = out[b, token] / penalty
        return out

    def ties_dropped_with_a_mask(logits, k):
        chosen = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
        kept = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, chosen, True)
        return logits.masked_fill(~kept, NEG_INF)

    def fancy_indexing(logits, input_ids, penalty):
        out = logits.clone()
        seen = out[:, input_ids]                           # (B, B, T): every row's ids, in every row
        out[:, input_ids] = torch.where(seen > 0, seen / penalty, seen * penalty)
        return out

    def exp_without_max(logits, p, min_tokens_to_keep=1):
        e = torch.exp(logits)
        sorted_probs, order = (e / e.sum(-1, keepdim=True)).sort(dim=-1)
        remove = sorted_probs.cumsum(-1) <= 1 - p
        remove[..., -min_tokens_to_keep:] = False
        return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)

    for name, impl, mistake in ((PENALTY, divides_every_seen_logit, "always divides"),
                                (TOP_K, ties_dropped_with_a_mask, "ties dropped"),
                                (PENALTY, fancy_indexing, "whole batch"),
                                (TOP_P, exp_without_max, "softmax without the max shift")):
        report = run(name, impl)
        assert not report.passed and report.failure.mistake == mistake, str(report)


# =========================================================================== bad input

@pytest.mark.parametrize("name,impl,kind", [
    (TOP_K, lambda logits, k: logits[k + 10_000], "exception"),
    (TOP_K, lambda logits, k: None, "returned-none"),
    (TOP_K, lambda logits, k: logits.numpy(), "returned-numpy"),
    (TOP_K, lambda logits, k: logits.tolist(), "wrong-type"),
    (TOP_K, lambda logits, k: logits[..., :k], "wrong-shape"),
    (TOP_K, lambda logits, k: logits * float("nan"), "not-finite"),
    (TOP_P, lambda logits, p, min_tokens_to_keep=1: np.asarray(logits), "returned-numpy"),
    (TOP_P, lambda logits, p, min_tokens_to_keep=1: logits.masked_fill_(
        ~torch.isfinite(decl.top_p_spec(logits, p, min_tokens_to_keep)), NEG_INF), "mutated-input"),
    (PENALTY, lambda logits, input_ids, penalty: logits.index_put_((input_ids[:, :1].flatten(),), torch.tensor(0.0)),
     "exception"),
    (PENALTY, lambda logits, input_ids, penalty: logits.sum(), "wrong-shape"),
], ids=["raises", "None", "numpy", "list", "shape", "NaN", "numpy (top-p)", "in place", "raises (penalty)",
        "scalar"])
def test_bad_results_get_a_clear_report(name, impl, kind):
    report = run(name, impl)
    assert not report.passed and report.kind == kind, str(report)
    assert str(report)


def test_a_raising_filter_shows_the_readers_line():
    def top_k_filter(logits, k):
        values = torch.topk(logits, k).values                          # raises for k > V
        return logits.masked_fill(logits < values[..., -1:], NEG_INF)

    report = run(TOP_K, top_k_filter)
    assert report.kind == "exception" and "torch.topk(logits, k)" in report.failure.frame
    assert report.failure.mistake == "k not clamped"


def test_not_attempted_endless_loop_and_forbidden_call():
    def stub(logits, k):
        raise NotImplementedError

    assert run(TOP_K, stub).status == "not attempted"

    def forever(logits, k):
        while True:
            pass

    quick = dataclasses.replace(get(TOP_K), timeout=0.3, forbidden=("torch.topk",))
    from utils.grader.core import evaluate
    start = time.perf_counter()
    assert evaluate(quick, forever).kind == "timeout" and time.perf_counter() - start < 5
    report = evaluate(quick, decl.top_k_drops_ties)
    assert report.kind == "forbidden-call" and "torch.topk" in report.failure.problem.message
    assert evaluate(quick, top_k_by_sort).passed


def test_reports_are_chinese_too():
    from utils.i18n import english_left, speaking
    report = run(PENALTY, decl.penalty_always_divides)
    with speaking("zh"):
        text = str(report)
    assert "负的 logit" in text
    body = "\n".join(text.split("\n")[2:])
    assert not english_left(body), english_left(body)


def test_the_sampler_ignoring_the_generator_is_named():
    def sampler(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        if temperature == 0:
            return logits.argmax(-1)
        z = decl._filtered(logits, temperature, top_k, top_p)
        return (z - torch.log(-torch.log(torch.rand(z.shape)))).argmax(-1)

    report = run(SAMPLE, sampler)
    assert not report.passed and report.failure.mistake == "ignores the generator", str(report)


# =========================================================================== the stated bounds of the sampler

# The bounds the declaration states (a correct sampler fails with probability < 1e-6, each mistake with a law
# passes with at most its stated probability, the sample size) are recomputed from the exact laws in
# tests/test_kind_stochastic.py (test_the_stated_bounds_hold[sample_next_token]), for every stochastic declaration.

def test_the_mistake_without_a_law_raises_on_the_greedy_case():
    """'temperature 0 not handled' has no law: it never passes, since it raises on every temperature-0 case."""
    ex = get(SAMPLE)
    mistake = next(m for m in ex.mistakes if m.name == "temperature 0 not handled")
    greedy = [i for i, c in enumerate(ex.all_cases()) if c.make()[1].get("temperature") == 0]
    assert greedy
    for i in greedy:
        assert ex.outcome(mistake.impl, ex.all_cases()[i], ex.guard).error is not None


def test_every_law_is_a_distribution():
    ex = get(SAMPLE)
    for case in ex.all_cases():
        args, kwargs = case.make()
        for law_fn in [ex.oracle] + [m.law for m in ex.mistakes if m.law is not None]:
            law = law_fn(*args, **kwargs)
            assert law.dtype == torch.float64 and (law >= 0).all()
            assert torch.allclose(law.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-12)


def test_verdicts_repeat_run_after_run():
    for impl in (sample_one_uniform_per_batch, decl.ignores_generator):
        first, again = run(SAMPLE, impl), run(SAMPLE, impl)
        assert first.status == again.status
        if first.failure:
            assert (first.failure.case, first.failure.problem.message) == (again.failure.case,
                                                                          again.failure.problem.message)
