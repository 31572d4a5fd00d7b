"""Part 7, generation: temperature, top-k, top-p and the repetition penalty (chapter generation/sampling).

Three filters of the logits, graded as functions against plain specifications written here (a sort for top-k,
a loop over each row for top-p and for the repetition penalty; tests/test_sampling.py checks them against
transformers' TopKLogitsWarper, TopPLogitsWarper and RepetitionPenaltyLogitsProcessor), and the sampler,
graded with the stochastic kind against the exact law of the token it draws.

Every case keeps its decisions away from floating-point ties: distinct logits differ by more than 1e-4, and
every cumulative probability a top-p rule compares with 1 - p is at least 1e-4 away from it (tested), so a
float32 reader and the float64 specification keep the same tokens.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f64, randn
from ...kinds import SamplingMistake, StochasticExercise, draws, index_names, indices
from ...registry import register

NEG_INF = float("-inf")


# =========================================================================== inputs shared by the filters

def _rows(rows, dtype=torch.float32, shift=0.0):
    """Logits given row by row (exact values: ties are ties), (len(rows), V)."""
    return (torch.tensor(rows, dtype=torch.float64) + shift).to(dtype)


def _far_apart(B, V, seed=0, dtype=torch.float32):
    """Rows whose logits lie in different ranges (row b around 8b): a filter of the whole batch keeps other rows'."""
    x = randn(B, V, seed=seed, dtype=torch.float64) + 8.0 * torch.arange(B, dtype=torch.float64)[:, None]
    return x.to(dtype)


def _transposed(B, V, seed=0, dtype=torch.float32, scale=1.0):
    """(B, V) logits that are a transposed view of a (V, B) tensor: not contiguous along the vocabulary."""
    return randn(V, B, seed=seed, dtype=dtype, scale=scale).T


def _with_neg_inf(B, V, seed=0, every=3):
    """Logits some of whose entries are already -inf (masked earlier, or removed by top-k)."""
    x = randn(B, V, seed=seed, scale=2.0)
    x[:, ::every] = NEG_INF
    return x


TIES_AT_KTH = [1.5, 0.4, 2.0, 0.4, -0.3, 0.1, -1.0, 0.4]      # k = 3: the 3rd largest, 0.4, appears three times
TIES_AT_TOP = [3.0, 1.0, 3.0, -0.5, 3.0, 0.2, 1.0, -2.0]      # k = 2: three entries tie for the largest
PEAKED_AND_FLAT = [[6.0, 1.0, 0.5, 0.3, 0.1, 0.0, -0.2, -0.4, -0.6, -0.9],      # one token holds ~97%
                   [0.10, 0.05, 0.16, 0.02, 0.13, 0.08, 0.19, 0.11, 0.04, 0.00]]  # nearly uniform


# =========================================================================== top_k_filter

def top_k_spec(logits, k):
    """Entries strictly below the k-th largest value of their row become -inf (entries equal to it stay)."""
    kept = min(k, logits.shape[-1])
    kth = torch.sort(logits, dim=-1, descending=True).values[..., kept - 1:kept]      # (..., 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def _x(build, *args, k_kw=False, k=None, **kwargs):
    x = build(*args, **kwargs)
    return call(x, k=k) if k_kw else call(x, k)


def _top_k_cases():
    return [
        case(_x, randn, 4, 10, seed=1, k=3, note="k=3, a batch of 4 rows"),
        case(_x, randn, 12, seed=2, k=5, note="1-D logits (one row)"),
        case(_x, _rows, [TIES_AT_KTH, TIES_AT_KTH[::-1]], k=3,
             note="ties at the k-th value: every entry equal to the k-th survives"),
        case(_x, _rows, [TIES_AT_TOP], k=2, note="three entries tie for the largest, k=2: all three survive"),
        case(_x, randn, 3, 9, seed=3, k=1, note="k=1 (greedy): only the maximum of each row survives"),
        case(_x, randn, 2, 7, seed=4, k=7, note="k = V changes nothing"),
        case(_x, randn, 2, 7, seed=5, k=50, note="k > V changes nothing"),
        case(_x, _far_apart, 3, 12, seed=6, k=4, note="rows in different ranges: each row keeps its own top k"),
        case(_x, randn, 3, 40, seed=7, dtype=f64, k=10, note="float64"),
        case(_x, _transposed, 4, 11, seed=8, k=4, note="non-contiguous (transposed) logits"),
        case(_x, randn, 1, 500, seed=9, scale=3.0, k=50, note="batch of one, V=500, k=50"),
        case(_x, randn, 2, 3, 16, seed=10, k=5, note="(B, T, V) logits: every row on its own"),
        case(_x, _with_neg_inf, 2, 9, seed=11, k=6,
             note="-inf entries, and k larger than the finite entries of the row"),
        case(_x, randn, 3, 8, seed=12, k=2, k_kw=True, note="k passed by keyword"),
    ]


def top_k_drops_ties(logits, k):
    values, idx = torch.topk(logits, min(k, logits.shape[-1]), dim=-1)
    return torch.full_like(logits, NEG_INF).scatter(-1, idx, values)


def top_k_removes_kth(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, NEG_INF)


def top_k_keeps_one_more(logits, k):
    kth = torch.sort(logits, dim=-1, descending=True).values[..., k:k + 1]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_zero(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def top_k_finite_sentinel(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -1e9)


def top_k_in_place(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    logits[logits < kth] = NEG_INF
    return logits


def top_k_unclamped(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_whole_batch(logits, k):
    kth = torch.topk(logits.flatten(), min(k, logits.numel())).values[-1]
    return logits.masked_fill(logits < kth, NEG_INF)


def _keeps_exactly_k(call):
    x = randn(5, 30, seed=40)
    for k in (1, 4, 29):
        kept = torch.isfinite(call(x, k)).sum(-1)
        if not bool((kept == k).all()):
            return msg("with distinct logits and k={k}, rows keep {kept} tokens, not {k}", k=k,
                       kept=kept.tolist())
    return None


def _top_k_idempotent(call):
    x = _rows([TIES_AT_KTH])
    once = call(x, 3)
    twice = call(once, 3)
    if not torch.equal(once, twice):
        return msg("top_k_filter(top_k_filter(x, k), k) differs from top_k_filter(x, k)")
    return None


register(Exercise(
    name="top_k_filter",
    chapter="generation/sampling",
    signature="top_k_filter(logits, k)",
    oracle=top_k_spec,
    cases=_top_k_cases,
    properties=[
        Property("distinct logits: exactly k finite entries per row", _keeps_exactly_k),
        Property("filtering twice changes nothing", _top_k_idempotent),
    ],
    hints=("only the k-th largest value of each row matters: everything strictly below it goes   (eq. samp-topk)",
           "torch.topk(logits, k, dim=-1).values[..., -1:] is the k-th largest with a kept axis, so it broadcasts "
           "against the row; clamp k to the vocabulary size first",
           "kth = topk(logits, min(k, V)).values[..., -1:]; return logits.masked_fill(logits < kth, -inf)   "
           "(eq. samp-topk)"),
    mistakes=[
        Mistake("ties dropped", top_k_drops_ties,
                "your code keeps exactly k tokens (the indices topk returned), so entries tied with the k-th value "
                "are dropped: compare every entry with the k-th value and keep those >= it (logits < kth -> -inf)"),
        Mistake("removes the k-th", top_k_removes_kth,
                "your comparison removes the k-th largest itself (logits <= kth): only entries strictly below the "
                "k-th value go, so use logits < kth"),
        Mistake("keeps k + 1", top_k_keeps_one_more,
                "your threshold is the (k+1)-th largest value: after a descending sort the k-th largest sits at "
                "index k - 1 (or use topk(...).values[..., -1:])"),
        Mistake("zero instead of -inf", top_k_zero,
                "your removed entries are set to 0, which is an ordinary logit (exp(0) = 1): set them to "
                "float('-inf'), so that the softmax gives them probability exactly 0"),
        Mistake("finite sentinel", top_k_finite_sentinel,
                "your removed entries hold a large negative number (-1e9): the contract, like transformers, writes "
                "float('-inf'), the one value that stays impossible through every later step (a temperature, "
                "a penalty, an isinf check)"),
        Mistake("in place", top_k_in_place,
                "you changed the caller's logits in place (logits[...] = -inf): return a new tensor (masked_fill, "
                "not masked_fill_ or item assignment)"),
        Mistake("k not clamped", top_k_unclamped,
                "torch.topk raises when k is larger than the vocabulary: clamp it, min(k, logits.shape[-1]); "
                "k >= V keeps every token"),
        Mistake("whole batch", top_k_whole_batch,
                "your k-th largest value is taken over the whole tensor, not per row: use topk(..., dim=-1) and keep "
                "the reduced axis ([..., -1:]) so that each row is compared with its own k-th value"),
    ],
))


# =========================================================================== top_p_filter

def top_p_spec(logits, p, min_tokens_to_keep=1):
    """The rule, one row at a time in float64: walk the tokens from least to most likely, adding up their
    probabilities; a token goes while that running total (itself included) is <= 1 - p, except the
    `min_tokens_to_keep` most likely ones."""
    V = logits.shape[-1]
    rows = logits.detach().double().reshape(-1, V).tolist()
    remove = torch.zeros(len(rows), V, dtype=torch.bool)
    for r, row in enumerate(rows):
        top = max(row)
        weights = [math.exp(v - top) for v in row]             # exp(-inf) = 0
        total_weight = math.fsum(weights)
        probs = [w / total_weight for w in weights]
        running = 0.0
        for rank, j in enumerate(sorted(range(V), key=lambda j: probs[j])):     # ascending
            running += probs[j]
            if rank < V - min_tokens_to_keep and running <= 1 - p:
                remove[r, j] = True
    return logits.masked_fill(remove.reshape(logits.shape), NEG_INF)


def _xp(build, *args, p=0.9, keep=None, p_kw=False, keep_kw=True, **kwargs):
    x = build(*args, **kwargs)
    pos, kw = [x], {}
    if p_kw:
        kw["p"] = p
    else:
        pos.append(p)
    if keep is not None:
        if keep_kw:
            kw["min_tokens_to_keep"] = keep
        else:
            pos.append(keep)
    return tuple(pos), kw


def _top_p_cases():
    return [
        case(_xp, randn, 4, 12, seed=1, scale=1.5, p=0.9, note="p=0.9, a batch of 4 rows"),
        case(_xp, randn, 10, seed=2, scale=1.5, p=0.5, note="1-D logits (one row), p=0.5"),
        case(_xp, _rows, PEAKED_AND_FLAT, p=0.9,
             note="a peaked row keeps one token, a flat row keeps nine: each row on its own"),
        case(_xp, randn, 3, 16, seed=3, scale=2.0, p=1e-4, note="p near 0: only the most likely token survives"),
        case(_xp, randn, 2, 24, seed=12, scale=3.0, p=0.999,
             note="p near 1 (0.999): only the far tail goes"),
        case(_xp, randn, 2, 9, seed=5, p=1.0, note="p = 1 keeps every token"),
        case(_xp, randn, 3, 12, seed=6, scale=2.0, p=0.1, keep=3,
             note="min_tokens_to_keep=3 with p=0.1: the three most likely survive"),
        case(_xp, randn, 2, 10, seed=7, scale=2.0, p=0.3, keep=2, keep_kw=False,
             note="min_tokens_to_keep=2 passed positionally"),
        case(_xp, randn, 3, 40, seed=8, dtype=f64, scale=2.0, p=0.7, note="float64"),
        case(_xp, _transposed, 4, 11, seed=9, scale=1.5, p=0.8, note="non-contiguous (transposed) logits"),
        case(_xp, randn, 1, 200, seed=10, scale=2.5, p=0.95, note="batch of one, V=200"),
        case(_xp, randn, 2, 3, 10, seed=11, scale=1.5, p=0.6, note="(B, T, V) logits: every row on its own"),
        case(_xp, _with_neg_inf, 2, 12, seed=12, p=0.7, note="-inf entries (after top-k) stay -inf"),
        case(_xp, randn, 3, 10, seed=13, scale=2.0, shift=1000.0, p=0.8, note="large logits (x + 1000)"),
        case(_xp, randn, 2, 10, seed=14, scale=1.5, p=0.75, p_kw=True, note="p passed by keyword"),
    ]


def _probs_sorted(logits, descending):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=descending)
    return sorted_logits.softmax(-1), order


def top_p_drops_crossing(logits, p, min_tokens_to_keep=1):
    probs, order = _probs_sorted(logits, descending=True)
    remove = probs.cumsum(-1) > p
    remove[..., :min_tokens_to_keep] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def top_p_ascending_sort(logits, p, min_tokens_to_keep=1):
    probs, order = _probs_sorted(logits, descending=False)        # meant descending
    remove = probs.cumsum(-1) - probs >= p
    remove[..., :min_tokens_to_keep] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def top_p_not_scattered(logits, p, min_tokens_to_keep=1):
    probs, _ = _probs_sorted(logits, descending=False)
    remove = probs.cumsum(-1) <= 1 - p
    remove[..., -min_tokens_to_keep:] = False
    return logits.masked_fill(remove, NEG_INF)


def top_p_ignores_min_tokens(logits, p, min_tokens_to_keep=1):
    probs, order = _probs_sorted(logits, descending=False)
    remove = probs.cumsum(-1) <= 1 - p
    remove[..., -1] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def top_p_in_place(logits, p, min_tokens_to_keep=1):
    probs, order = _probs_sorted(logits, descending=False)
    remove = probs.cumsum(-1) <= 1 - p
    remove[..., -min_tokens_to_keep:] = False
    return logits.masked_fill_(remove.scatter(-1, order, remove), NEG_INF)


def top_p_scatter_dim_1(logits, p, min_tokens_to_keep=1):
    probs, order = _probs_sorted(logits, descending=False)
    remove = probs.cumsum(-1) <= 1 - p
    remove[..., -min_tokens_to_keep:] = False
    return logits.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def top_p_no_max_shift(logits, p, min_tokens_to_keep=1):
    sorted_logits, order = torch.sort(logits, dim=-1)
    e = torch.exp(sorted_logits)
    remove = (e / e.sum(-1, keepdim=True)).cumsum(-1) <= 1 - p
    remove[..., -min_tokens_to_keep:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def _top_p_keeps_the_nucleus(call):
    x = randn(6, 25, seed=41, scale=2.0, dtype=f64)
    probs = torch.softmax(x, -1)
    for p in (0.3, 0.8):
        kept = torch.isfinite(call(x, p))
        mass = (probs * kept).sum(-1)
        if bool((mass < p).any()):
            return msg("with p={p} the kept tokens of a row hold {mass} of the probability, less than p", p=p,
                       mass=round(float(mass.min()), 4))
        smallest = torch.where(kept, probs, torch.ones_like(probs)).amin(-1)
        if bool((mass - smallest >= p).any()):
            return msg("with p={p} a row keeps a token it could drop and still hold p of the probability", p=p)
    return None


register(Exercise(
    name="top_p_filter",
    chapter="generation/sampling",
    signature="top_p_filter(logits, p, min_tokens_to_keep=1)",
    oracle=top_p_spec,
    cases=_top_p_cases,
    properties=[Property("the kept tokens are the smallest set holding at least p of the probability",
                         _top_p_keeps_the_nucleus)],
    hints=("sort each row by probability and add the probabilities up: a token goes when it and every less likely "
           "token together hold <= 1 - p; the token that carries the total past p stays   (eq. samp-topp)",
           "torch.sort gives the order; softmax of the sorted logits, cumsum along the row, a boolean mask of the "
           "tokens to remove, then scatter(-1, order, mask) puts the mask back in vocabulary order",
           "ascending sort; remove = probs_sorted.cumsum(-1) <= 1 - p; remove[..., -min_tokens_to_keep:] = False; "
           "logits.masked_fill(remove.scatter(-1, order, remove), -inf)   (eq. samp-topp)"),
    mistakes=[
        Mistake("drops the crossing token", top_p_drops_crossing,
                "your top-p removes the token that carries the running total past p (cumsum > p): that token "
                "belongs to the nucleus. A token goes only when it and every less likely token hold <= 1 - p "
                "(descending: when the tokens before it already hold p)"),
        Mistake("ascending sort read as descending", top_p_ascending_sort,
                "torch.sort sorts in ascending order by default, so your running total starts from the least "
                "likely token and you keep the tail: pass descending=True, or sort ascending and remove the "
                "tokens whose running total is <= 1 - p"),
        Mistake("mask not scattered back", top_p_not_scattered,
                "your mask is in sorted order but is applied to the unsorted logits: put it back in vocabulary "
                "order with mask.scatter(-1, order, mask) before masked_fill"),
        Mistake("ignores min_tokens_to_keep", top_p_ignores_min_tokens,
                "your code always keeps at least one token, whatever min_tokens_to_keep says: the "
                "min_tokens_to_keep most likely tokens must survive"),
        Mistake("in place", top_p_in_place,
                "you changed the caller's logits in place (masked_fill_): return a new tensor with masked_fill"),
        Mistake("scatter along dim 1", top_p_scatter_dim_1,
                "your mask is scattered back along dim 1, which is the vocabulary only for 2-D logits: use dim=-1 "
                "so that 1-D and (B, T, V) logits work too"),
        Mistake("softmax without the max shift", top_p_no_max_shift,
                "your probabilities come from exp(logits) without subtracting the max, which overflows to inf and "
                "NaN for large logits: use softmax (or subtract each row's max first)"),
    ],
))


# =========================================================================== apply_repetition_penalty

def repetition_spec(logits, input_ids, penalty):
    """For each row, each distinct token id of that row once: a positive logit divided by the penalty, a negative
    one multiplied (a loop over rows and ids)."""
    out = logits.detach().clone()
    for b in range(out.shape[0]):
        for token in set(input_ids[b].tolist()):
            value = out[b, token]
            out[b, token] = value * penalty if value < 0 else value / penalty
    return out


def _penalty_case(B, V, T, seed=0, penalty=1.2, dtype=torch.float32, transpose=False, repeat=None,
                  zeros=False, neg_inf=False, positional=True, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = (_transposed(B, V, seed=seed, dtype=dtype, scale=scale) if transpose
              else randn(B, V, seed=seed, dtype=dtype, scale=scale))
    ids = torch.randint(0, V, (B, T), generator=g)
    if repeat is not None:                      # a few tokens repeated all over the history
        ids = ids % repeat
    if zeros:
        logits = logits.clone()
        logits[:, ids[0, :2]] = 0.0
    if neg_inf:
        logits = logits.clone()
        logits[:, ids[0, :2]] = NEG_INF
    return call(logits, ids, penalty) if positional else call(logits, input_ids=ids, penalty=penalty)


def _disjoint_rows():
    """Two rows whose histories share no token: what row 0 has seen must not touch row 1."""
    logits = randn(2, 12, seed=20, scale=2.0)
    ids = torch.tensor([[0, 1, 2, 3, 1, 0], [6, 7, 8, 9, 10, 6]])
    return call(logits, ids, 1.5)


def _boundary_ids():
    logits = randn(3, 10, seed=21, scale=2.0)
    ids = torch.tensor([[0, 9, 0], [9, 9, 9], [5, 0, 9]])
    return call(logits, ids, 1.3)


def _repetition_cases():
    return [
        case(_penalty_case, 2, 10, 6, seed=1, note="penalty 1.2, positive and negative logits"),
        case(_penalty_case, 2, 12, 20, seed=2, repeat=3,
             note="a history that repeats three tokens many times: each penalised once"),
        case(_disjoint_rows, note="rows with different histories: each row penalises its own tokens"),
        case(_penalty_case, 3, 15, 8, seed=3, penalty=0.8, note="penalty 0.8 < 1 rewards repetition"),
        case(_penalty_case, 2, 10, 5, seed=4, penalty=1.0, note="penalty 1 changes nothing"),
        case(_penalty_case, 2, 30, 12, seed=5, dtype=f64, penalty=1.7, note="float64, penalty 1.7"),
        case(_penalty_case, 4, 11, 6, seed=6, transpose=True, note="non-contiguous (transposed) logits"),
        case(_penalty_case, 1, 16, 1, seed=7, penalty=2.0, note="batch of one, a history of one token"),
        case(_penalty_case, 1, 500, 200, seed=8, penalty=1.3, note="V=500, a history of 200 tokens"),
        case(_penalty_case, 2, 10, 6, seed=9, zeros=True, note="logits equal to 0 stay 0"),
        case(_penalty_case, 2, 10, 6, seed=10, neg_inf=True, note="-inf logits stay -inf"),
        case(_boundary_ids, note="ids 0 and V - 1, the ends of the vocabulary"),
        case(_penalty_case, 2, 9, 4, seed=11, positional=False, note="input_ids and penalty passed by keyword"),
    ]


def penalty_always_divides(logits, input_ids, penalty):
    seen = logits.gather(1, input_ids)
    return logits.scatter(1, input_ids, seen / penalty)


def penalty_per_occurrence(logits, input_ids, penalty):
    out = logits.clone()
    for b in range(out.shape[0]):
        for token in input_ids[b].tolist():
            out[b, token] = out[b, token] * penalty if out[b, token] < 0 else out[b, token] / penalty
    return out


def penalty_in_place(logits, input_ids, penalty):
    seen = logits.gather(1, input_ids)
    logits.scatter_(1, input_ids, torch.where(seen < 0, seen * penalty, seen / penalty))
    return logits


def penalty_whole_batch(logits, input_ids, penalty):
    out = logits.clone()
    ids = torch.unique(input_ids)
    seen = out[:, ids]
    out[:, ids] = torch.where(seen < 0, seen * penalty, seen / penalty)
    return out


def penalty_swapped(logits, input_ids, penalty):
    seen = logits.gather(1, input_ids)
    return logits.scatter(1, input_ids, torch.where(seen < 0, seen / penalty, seen * penalty))


def penalty_subtracted(logits, input_ids, penalty):
    seen = logits.gather(1, input_ids)
    return logits.scatter(1, input_ids, seen - penalty)


def penalty_last_token_only(logits, input_ids, penalty):
    last = input_ids[:, -1:]
    seen = logits.gather(1, last)
    return logits.scatter(1, last, torch.where(seen < 0, seen * penalty, seen / penalty))


def _penalty_lowers_seen_tokens(call):
    logits = randn(3, 20, seed=42, scale=2.0, dtype=f64)
    ids = torch.tensor([[1, 4, 4, 7], [0, 19, 3, 3], [2, 2, 2, 2]])
    out = call(logits, ids, 1.5)
    probs, new = torch.softmax(logits, -1), torch.softmax(out, -1)
    for b in range(3):
        for t in set(ids[b].tolist()):
            if not float(out[b, t]) <= float(logits[b, t]):
                return msg("the logit of a seen token went up (row {b}, token {t}: {before:.4g} -> {after:.4g})",
                           b=b, t=t, before=float(logits[b, t]), after=float(out[b, t]))
        unseen = [t for t in range(20) if t not in set(ids[b].tolist())]
        if not bool((new[b, unseen] >= probs[b, unseen] - 1e-12).all()):
            return msg("a token that was never seen lost probability (row {b})", b=b)
    return None


register(Exercise(
    name="apply_repetition_penalty",
    chapter="generation/sampling",
    signature="apply_repetition_penalty(logits, input_ids, penalty)",
    oracle=repetition_spec,
    cases=_repetition_cases,
    properties=[Property("penalty > 1 never raises a seen token's logit", _penalty_lowers_seen_tokens)],
    hints=("every token id that occurs in a row's history is penalised once; what 'penalised' means depends on the "
           "sign of its logit   (eq. samp-rep)",
           "gather the logits of the row's ids (logits.gather(1, input_ids)), change them, and scatter them back "
           "into a copy: an id that occurs twice gets the same new value twice, so it is penalised once",
           "seen = logits.gather(1, input_ids); logits.scatter(1, input_ids, torch.where(seen < 0, seen * penalty, "
           "seen / penalty))   (eq. samp-rep)"),
    mistakes=[
        Mistake("always divides", penalty_always_divides,
                "your code divides every seen logit by the penalty: a negative logit divided by 1.2 moves towards 0, "
                "so a repeated token with a negative logit becomes more likely. Multiply negative logits by the "
                "penalty and divide positive ones"),
        Mistake("once per occurrence", penalty_per_occurrence,
                "a token that occurs several times in the history is penalised once per occurrence: the penalty "
                "applies once per distinct token (gather / scatter, or a set of ids)"),
        Mistake("in place", penalty_in_place,
                "you changed the caller's logits in place (scatter_ / item assignment): return a new tensor"),
        Mistake("whole batch", penalty_whole_batch,
                "every row is penalised for the tokens of every row's history: penalise each row only for the ids "
                "in its own row of input_ids (gather and scatter along dim 1)"),
        Mistake("sign rule swapped", penalty_swapped,
                "your sign rule is reversed: positive logits must be divided by the penalty and negative ones "
                "multiplied, so that both move down when penalty > 1"),
        Mistake("subtracts the penalty", penalty_subtracted,
                "your code subtracts the penalty from the logit: that is the additive presence penalty of some APIs, "
                "not this one. CTRL's repetition penalty scales the logit: divide a positive logit by it, multiply "
                "a negative one"),
        Mistake("last token only", penalty_last_token_only,
                "only the last token of the history is penalised: every token id that occurs anywhere in the row of "
                "input_ids is"),
    ],
))


# =========================================================================== sample_next_token (stochastic)

def _softmax_kept(z, keep):
    top = max(v for v, k in zip(z, keep) if k)
    e = [math.exp(v - top) if k else 0.0 for v, k in zip(z, keep)]
    total = math.fsum(e)
    return [v / total for v in e]


def token_probs(z, temperature=1.0, top_k=None, top_p=None, *, scale=None, top_p_first=False, drop_crossing=False):
    """The exact probabilities of one row of logits (a plain specification, float64). The keyword-only flags
    give the laws of known mistakes."""
    V = len(z)
    if temperature == 0:
        best = max(range(V), key=lambda j: (z[j], -j))
        return [float(j == best) for j in range(V)]
    z = [v * temperature for v in z] if scale == "multiply" else [v / temperature for v in z]
    keep = [True] * V

    def top_k_step():
        if top_k is not None and top_k < V:
            kth = sorted((v for v, k in zip(z, keep) if k), reverse=True)[min(top_k, sum(keep)) - 1]
            for j in range(V):
                keep[j] = keep[j] and z[j] >= kth

    def top_p_step():
        if top_p is None or top_p >= 1.0:
            return
        probs = _softmax_kept(z, keep)
        running = 0.0
        if drop_crossing:        # descending, remove once the running total (itself included) passes top_p
            for rank, j in enumerate(sorted(range(V), key=lambda j: -probs[j])):
                running += probs[j]
                if running > top_p and rank > 0:
                    keep[j] = False
            return
        for j in sorted(range(V), key=lambda j: probs[j])[:-1]:    # ascending; the likeliest always stays
            running += probs[j]
            if running <= 1 - top_p:
                keep[j] = False

    for step in (top_p_step, top_k_step) if top_p_first else (top_k_step, top_p_step):
        step()
    return _softmax_kept(z, keep)


def token_law(logits, temperature=1.0, top_k=None, top_p=None, **flags):
    """(..., V) logits -> (..., V + 1) exact probabilities per row (the last outcome, an id outside 0..V-1: 0)."""
    V = logits.shape[-1]
    rows = logits.detach().double().reshape(-1, V)
    table, seen = [], {}
    for row in rows.tolist():
        key = tuple(row)
        if key not in seen:
            seen[key] = token_probs(row, temperature, top_k, top_p, **flags) + [0.0]
        table.append(seen[key])
    return torch.tensor(table, dtype=torch.float64).reshape(*logits.shape[:-1], V + 1)


def _filtered(logits, temperature, top_k, top_p):
    """temperature, top-k (ties kept), top-p as TopPLogitsWarper: the logits a sampler draws from."""
    z = logits / temperature
    if top_k is not None:
        kth = torch.topk(z, min(top_k, z.shape[-1]), dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, NEG_INF)
    if top_p is not None:
        sorted_z, order = torch.sort(z, dim=-1)
        remove = sorted_z.softmax(-1).cumsum(-1) <= 1 - top_p
        remove[..., -1] = False
        z = z.masked_fill(remove.scatter(-1, order, remove), NEG_INF)
    return z


def _multinomial(z, generator):
    probs = z.softmax(-1)
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(probs.shape[:-1])


def temperature_multiplied(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return _multinomial(_filtered(logits * temperature, 1.0, top_k, top_p), generator)


def top_p_before_top_k(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    z = _filtered(logits, temperature, None, top_p)
    return _multinomial(_filtered(z, 1.0, top_k, None), generator)


def sampler_drops_crossing_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    probs = _filtered(logits, temperature, top_k, None).softmax(-1)
    if top_p is not None:
        p_sorted, order = probs.sort(dim=-1, descending=True)
        remove = p_sorted.cumsum(-1) > top_p
        remove[..., 0] = False
        probs = probs.masked_fill(remove.scatter(-1, order, remove), 0.0)
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(probs.shape[:-1])


def always_argmax(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return logits.argmax(-1)


def softmax_before_temperature(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    probs = F.softmax(logits, dim=-1) / temperature           # the division no longer changes the shape
    probs = probs / probs.sum(-1, keepdim=True)
    return _multinomial(_filtered(probs.log(), 1.0, top_k, top_p), generator)


def greedy_not_handled(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return _multinomial(_filtered(logits, temperature, top_k, top_p), generator)


def ignores_generator(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    probs = _filtered(logits, temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(probs.shape[:-1])


def reseeds_generator(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    own = torch.Generator().manual_seed(generator.initial_seed())
    return _multinomial(_filtered(logits, temperature, top_k, top_p), own)


def _argmax_law(logits, temperature=1.0, top_k=None, top_p=None):
    return token_law(logits, 0)


def _softmax_first_law(logits, temperature=1.0, top_k=None, top_p=None):
    return token_law(logits, 0 if temperature == 0 else 1.0, top_k, top_p)


SAMPLING_MISTAKES = [
    SamplingMistake("temperature multiplied", temperature_multiplied,
                    "your code multiplies the logits by the temperature: divide them (logits / temperature), so "
                    "that a temperature below 1 sharpens the distribution",
                    law=partial(token_law, scale="multiply"), passes=1e-12),
    SamplingMistake("top-p before top-k", top_p_before_top_k,
                    "your code applies top-p before top-k: filter by top-k first, then apply top-p to what is left "
                    "(renormalised)", law=partial(token_law, top_p_first=True), passes=1e-12),
    SamplingMistake("top-p drops the crossing token", sampler_drops_crossing_token,
                    "your top-p removes the token whose probability carries the running total past top_p: keep it "
                    "(a token goes only when the tokens less likely than it and itself total <= 1 - top_p)",
                    law=partial(token_law, drop_crossing=True), passes=1e-12),
    SamplingMistake("always argmax", always_argmax,
                    "your code always returns the most likely token: sample from the distribution (greedy argmax "
                    "is only for temperature == 0)", law=_argmax_law, passes=1e-12),
    SamplingMistake("softmax before temperature", softmax_before_temperature,
                    "your code divides the probabilities by the temperature after the softmax, where the "
                    "renormalisation undoes it: divide the logits, then take the softmax",
                    law=_softmax_first_law, passes=1e-12),
    SamplingMistake("temperature 0 not handled", greedy_not_handled,
                    "temperature == 0 must mean greedy decoding: your code divides the logits by 0 (inf and NaN "
                    "probabilities). Return logits.argmax(-1) when temperature == 0"),
    SamplingMistake("ignores the generator", ignores_generator,
                    "your code draws from the global RNG: pass generator=generator to torch.multinomial / torch.rand, "
                    "so that the same seed gives the same tokens", rng="global", passes=1e-12),
    SamplingMistake("re-seeds a generator", reseeds_generator,
                    "your code builds a new generator from the seed on every call, so every call draws the same "
                    "tokens: draw from the generator you are given", rng="fixed", passes=0.0),
]


# ---- the cases: one row repeated for many draws per call, several calls on one generator

A = [2.0, 1.2, 0.8, 0.3, -0.2, -0.9, -1.5, -2.4]         # distinct logits, V = 8
C = [1.0, 2.2, 0.1, -0.5, 1.6, -1.2, 0.6, -2.0]
D = [0.9, 0.7, 1.1, 0.5, 0.8, 0.3, 1.0, 0.6]              # flat: top-p before or after top-k differs


def _logits_case(rows, copies, dtype=torch.float32, shift=0.0, transpose=False, **kwargs):
    """`copies` copies of each row, interleaved: (len(rows) * copies, V); transposed: a non-contiguous view."""
    x = (torch.tensor(rows, dtype=torch.float64) + shift).to(dtype).repeat(copies, 1)
    if transpose:
        x = x.T.contiguous().T
    return call(x, **kwargs)


def _greedy_case(B, V, data):
    return call(randn(B, V, seed=data, scale=2.0), temperature=0)


def _sampling_cases():
    return [
        draws(_logits_case, [A], 1000, temperature=0.7, seed=1, calls=3, note="temperature 0.7, one row 1,000 times"),
        draws(_logits_case, [TIES_AT_KTH], 500, top_k=3, seed=2, calls=3,
              note="top_k=3, the k-th tied three times"),
        draws(_logits_case, [C], 500, top_p=0.8, seed=3, calls=3, note="top_p=0.8"),
        draws(_logits_case, [D], 500, temperature=0.8, top_k=4, top_p=0.6, seed=4, calls=3,
              note="top_k=4 and top_p=0.6 together"),
        draws(_greedy_case, 16, 10, 11, seed=5, calls=2, note="temperature 0: greedy argmax of 16 different rows"),
        draws(_logits_case, [A, C, D], 200, temperature=1.3, top_p=0.9, seed=6, calls=2,
              note="three different rows, 200 times each"),
        draws(_logits_case, [A], 500, shift=1000.0, seed=7, calls=2, note="large logits (x + 1000)"),
        draws(_logits_case, [C], 500, torch.float64, top_k=20, top_p=1.0, seed=8, calls=2,
              note="float64, top_k >= V and top_p = 1 change nothing"),
        draws(_logits_case, [D], 400, transpose=True, temperature=2.0, seed=9, calls=2,
              note="non-contiguous logits, temperature 2"),
        draws(_logits_case, [C], 1, top_k=1, seed=10, calls=2, note="batch of one, top_k=1: always the argmax"),
        draws(_logits_case, [A], 1, top_p=0.5, seed=11, calls=600, note="batch of one, 600 calls, top_p=0.5"),
    ]


register(StochasticExercise(
    name="sample_next_token",
    chapter="generation/sampling",
    signature="sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None)",
    oracle=token_law,
    cases=_sampling_cases,
    mistakes=SAMPLING_MISTAKES,
    observe=indices,
    names=index_names("token"),
    false_rejection=1e-7,
    samples=12_134,
    hints=("temperature first, then top-k, then top-p, then one draw per row from the softmax, with the generator "
           "you are given; temperature 0 is argmax   (eq. samp-order)",
           "divide the logits by the temperature (never the probabilities); filter with -inf; "
           "torch.multinomial(probs, 1, generator=generator) draws one token per row of a 2-D tensor",
           "if temperature == 0: return logits.argmax(-1); z = top_p(top_k(logits / temperature)); "
           "return torch.multinomial(z.softmax(-1), 1, generator=generator).squeeze(-1)   (eq. samp-order)"),
))
