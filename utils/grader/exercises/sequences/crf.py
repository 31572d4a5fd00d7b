"""Part 13, sequences: a linear-chain CRF's log-likelihood and Viterbi decoding (chapter sequences/crf).

Both oracles are plain specifications by brute force: every one of the K^L tag paths of a sequence of (masked)
length L is scored, the log partition function is the log-sum-exp of all of them, and the best path is the
maximum (the first in itertools order on a tie; random scores make ties vanishingly unlikely). The cases are
short enough (K^L at most a few thousand paths) for this to be exact and fast; masks give every batch element
its own length.
"""

from __future__ import annotations

from itertools import product

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f64
from ...kinds import PlainExercise
from ...registry import register

SIGNATURE_LL = ("crf_log_likelihood(emissions, tags, transitions, start_transitions, end_transitions, mask=None) "
                "-> (B,)")
SIGNATURE_VITERBI = "viterbi_decode(emissions, transitions, start_transitions, end_transitions, mask=None)"


# --------------------------------------------------------------------------- the brute-force specification

def _lengths(emissions, mask):
    B, T, _ = emissions.shape
    return [T] * B if mask is None else [int(n) for n in mask.sum(1).tolist()]


def _path_scores(e, transitions, start, end, paths):
    """Scores of many tag paths of one sequence: e (L, K) in float64, paths (P, L) long -> (P,)."""
    L = paths.shape[1]
    score = start[paths[:, 0]] + end[paths[:, -1]] + e[torch.arange(L), paths].sum(1)
    if L > 1:
        score = score + transitions[paths[:, :-1], paths[:, 1:]].sum(1)
    return score


def _all_paths(K, L):
    return torch.tensor(list(product(range(K), repeat=L)), dtype=torch.long).reshape(-1, L)     # (K^L, L)


def crf_log_likelihood_oracle(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    """log p(tags | x) = score(tags) - log sum over every path of exp(score(path)): every path enumerated."""
    K = emissions.shape[2]
    e64, tr, st, en = (t.to(f64) for t in (emissions, transitions, start_transitions, end_transitions))
    out = []
    for b, L in enumerate(_lengths(emissions, mask)):
        gold = _path_scores(e64[b, :L], tr, st, en, tags[b, :L].long()[None])[0]
        log_z = torch.logsumexp(_path_scores(e64[b, :L], tr, st, en, _all_paths(K, L)), 0)
        out.append(gold - log_z)
    return torch.stack(out).to(emissions.dtype)                                              # (B,)


def viterbi_oracle(emissions, transitions, start_transitions, end_transitions, mask=None):
    """The best of every path (the first of equal scores in itertools order): a specification."""
    K = emissions.shape[2]
    e64, tr, st, en = (t.detach().to(f64) for t in (emissions, transitions, start_transitions, end_transitions))
    out = []
    for b, L in enumerate(_lengths(emissions, mask)):
        paths = _all_paths(K, L)
        out.append(paths[int(_path_scores(e64[b, :L], tr, st, en, paths).argmax())].tolist())
    return out


# --------------------------------------------------------------------------- cases

def crf_inputs(B, T, K, seed, lengths=None, dtype=torch.float32, scale=1.0, layout="contiguous", tags=True):
    """Emissions (B, T, K), tags (B, T) (random everywhere, padding included), transitions (K, K), start and
    end (K,), and a mask of `lengths` (every sequence starts at t = 0), all from one seed."""
    g = torch.Generator().manual_seed(seed)
    if layout == "transposed":
        emissions = torch.randn(B, K, T, generator=g, dtype=f64).transpose(1, 2)              # (B, T, K) strided
    else:
        emissions = torch.randn(B, T, K, generator=g, dtype=f64)
    emissions = (emissions * scale).to(dtype)
    tag_ids = torch.randint(0, K, (B, T), generator=g)
    transitions = torch.randn(K, K, generator=g, dtype=f64).to(dtype)
    start, end = (torch.randn(K, generator=g, dtype=f64).mul(2).to(dtype) for _ in range(2))
    kwargs = {} if lengths is None else {"mask": torch.arange(T)[None] < torch.tensor(lengths)[:, None]}
    if tags:
        return call(emissions, tag_ids, transitions, start, end, **kwargs)
    return call(emissions, transitions, start, end, **kwargs)


def _ll_cases():
    return [
        case(crf_inputs, 2, 4, 3, 1, note="no mask: B=2, T=4, K=3"),
        case(crf_inputs, 3, 5, 3, 2, [5, 3, 1], note="masked lengths 5, 3, 1 (the padding holds random tags)"),
        case(crf_inputs, 1, 1, 4, 3, note="a single step: start + emission + end"),
        case(crf_inputs, 4, 3, 2, 4, [3, 3, 2, 1], note="two tags, masked"),
        case(crf_inputs, 2, 5, 3, 5, [2, 5], note="masked, the longest second"),
        case(crf_inputs, 2, 4, 4, 6, [4, 2], dtype=f64, note="float64"),
        case(crf_inputs, 1, 6, 3, 7, note="a batch of one, T=6 (729 paths)"),
        case(crf_inputs, 2, 4, 3, 8, [4, 3], layout="transposed", note="non-contiguous emissions"),
        case(crf_inputs, 2, 3, 1, 9, note="one tag: the only path has probability 1, log p = 0"),
        case(crf_inputs, 2, 4, 3, 10, [4, 2], scale=60.0, note="emissions of size 60: exp overflows in float32",
             tolerance={torch.float32: (1e-5, 1e-4)}),
        case(crf_inputs, 2, 4, 3, 11, [4, 3], dtype=f64, grad=True,
             note="gradients of emissions, transitions, start and end"),
    ]


def _viterbi_cases():
    return [
        case(crf_inputs, 2, 4, 3, 1, tags=False, note="no mask"),
        case(crf_inputs, 3, 5, 3, 2, [5, 3, 1], tags=False, note="masked lengths 5, 3, 1"),
        case(crf_inputs, 1, 1, 4, 3, tags=False, note="a single step"),
        case(crf_inputs, 4, 3, 2, 4, tags=False, note="two tags"),
        case(crf_inputs, 2, 5, 3, 5, [2, 5], tags=False, note="masked, longest second"),
        case(crf_inputs, 2, 4, 4, 6, [4, 3], dtype=f64, tags=False, note="float64"),
        case(crf_inputs, 1, 6, 3, 7, tags=False, note="a batch of one, T=6 (729 paths)"),
        case(crf_inputs, 2, 4, 3, 8, [4, 3], layout="transposed", tags=False, note="non-contiguous emissions"),
        case(crf_inputs, 3, 5, 3, 12, [5, 4, 2], scale=0.3, tags=False,
             note="weak emissions: the transitions decide the path"),
    ]


# --------------------------------------------------------------------------- properties

def _at_most_zero(call):
    args, kwargs = crf_inputs(3, 4, 3, 20, [4, 2, 1])
    worst = float(call(*args, **kwargs).max())
    if worst > 1e-5:
        return msg("a log-probability is {worst:.3g}, above 0", worst=worst)
    return None


def _sums_to_one(call):
    (emissions, _, transitions, start, end), _ = crf_inputs(1, 3, 3, 21, dtype=f64)
    paths = _all_paths(3, 3)                                                                # (27, 3)
    P = paths.shape[0]
    log_p = call(emissions.expand(P, 3, 3).contiguous(), paths, transitions, start, end)   # (27,)
    total = float(torch.exp(log_p).sum())
    if abs(total - 1) > 1e-6:
        return msg("the probabilities of the {n} tag paths of one sentence sum to {total:.6g}, not 1", n=P,
                   total=total)
    return None


# --------------------------------------------------------------------------- mistakes: one flaw each

def _forward_ll(emissions, tags, transitions, start_transitions, end_transitions, mask=None, *, end=True,
                start=True, reduce="logsumexp", use_mask=True, sign=1.0, total=False, transposed=False,
                first_emission=True, linear=False):
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None or not use_mask else mask
    trans = transitions.T if transposed else transitions
    st = start_transitions if start else torch.zeros_like(start_transitions)
    en = end_transitions if end else torch.zeros_like(end_transitions)
    idx = torch.arange(B)
    score = st[tags[:, 0]] + emissions[idx, 0, tags[:, 0]]                                  # (B,)
    alpha = st + (emissions[:, 0] if first_emission else torch.zeros_like(emissions[:, 0]))  # (B, K)
    for t in range(1, T):
        step = trans[tags[:, t - 1], tags[:, t]] + emissions[idx, t, tags[:, t]]
        score = score + step * mask[:, t]
        pairs = alpha[:, :, None] + trans[None] + emissions[:, t, None, :]                  # (B, K, K)
        if reduce == "max":
            new = pairs.amax(1)
        elif linear:
            new = torch.log(torch.exp(pairs).sum(1))
        else:
            new = torch.logsumexp(pairs, 1)
        alpha = torch.where(mask[:, t, None], new, alpha)
    last = tags[idx, mask.sum(1) - 1]
    score = score + en[last]
    final = alpha + en
    log_z = final.amax(1) if reduce == "max" else (torch.log(torch.exp(final).sum(1)) if linear
                                                   else torch.logsumexp(final, 1))
    out = sign * (score - log_z)
    return out.sum() if total else out


def _ll(**flaw):
    def crf_log_likelihood(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
        return _forward_ll(emissions, tags, transitions, start_transitions, end_transitions, mask, **flaw)
    return crf_log_likelihood


def _viterbi(emissions, transitions, start_transitions, end_transitions, mask=None, *, end=True, start=True,
             transposed=False, use_mask=True, drop_last=False):
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None or not use_mask else mask
    trans = transitions.T if transposed else transitions
    score = (start_transitions if start else 0) + emissions[:, 0]                          # (B, K)
    history = []
    for t in range(1, T):
        pairs = score[:, :, None] + trans[None]                                            # (B, K, K)
        history.append(pairs.argmax(1))
        score = torch.where(mask[:, t, None], pairs.amax(1) + emissions[:, t], score)
    if end:
        score = score + end_transitions
    last = score.argmax(1).tolist()
    pointers = torch.stack(history, 1).tolist() if history else [[]] * B                  # (B, T - 1, K)
    paths = []
    for b, n in enumerate(mask.sum(1).tolist()):
        tag = last[b]
        path = [] if drop_last else [tag]
        for t in range(n - 2, -1, -1):
            tag = pointers[b][t][tag]
            path.append(tag)
        paths.append(path[::-1])
    return paths


def _vit(**flaw):
    def viterbi_decode(emissions, transitions, start_transitions, end_transitions, mask=None):
        return _viterbi(emissions, transitions, start_transitions, end_transitions, mask, **flaw)
    return viterbi_decode


def _viterbi_greedy(emissions, transitions, start_transitions, end_transitions, mask=None):
    lengths = _lengths(emissions, mask)
    return [emissions[b, :n].argmax(-1).tolist() for b, n in enumerate(lengths)]


register(Exercise(
    name="crf_log_likelihood",
    chapter="sequences/crf",
    signature=SIGNATURE_LL,
    oracle=crf_log_likelihood_oracle,
    cases=_ll_cases,
    properties=[Property("log p(tags | x) <= 0", _at_most_zero),
                Property("the probabilities of every tag path of a sentence sum to 1", _sums_to_one)],
    hints=("log p(tags | x) is the score of the given path minus log Z, and log Z sums exp(score) over every path: "
           "the forward algorithm computes it in O(T K^2) instead of K^T   (eqs. crf-score, crf-prob, crf-forward)",
           "alpha_0 = start + emissions[:, 0]; at each step alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + "
           "transitions[i, j]) + emissions[:, t, j], kept unchanged where mask[:, t] is False; log Z = "
           "logsumexp(alpha_T + end)",
           "score = start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1, masked} transitions[y_{t-1}, y_t] + "
           "end[y_last], with y_last = tags[b, mask[b].sum() - 1]; return score - log Z, one value per sequence "
           "(B,)   (eq. crf-forward)"),
    mistakes=[
        Mistake("end transitions forgotten", _ll(end=False),
                "end_transitions is missing: add end[y_last] to the path's score and end to the last alpha before "
                "the final logsumexp (both, or the probabilities no longer sum to 1)."),
        Mistake("start transitions missing", _ll(start=False),
                "start_transitions is missing: a path's score starts with start[y_0] + emissions[0, y_0], and "
                "alpha_0 = start + emissions[:, 0]."),
        Mistake("max instead of logsumexp", _ll(reduce="max"),
                "your partition function takes a max over the previous tags: that is Viterbi's best score, not log "
                "Z. The forward algorithm sums over paths: logsumexp over i of alpha[i] + transitions[i, j]."),
        Mistake("mask ignored", _ll(use_mask=False),
                "the mask is ignored: each sequence ends at mask[b].sum() steps; padded steps add nothing to the "
                "score, leave alpha unchanged, and end_transitions applies at the last real tag."),
        Mistake("negative log-likelihood", _ll(sign=-1.0),
                "you return the negative log-likelihood: the contract asks for log p(tags | x) = score - log Z "
                "(at most 0); the training loss is its negative mean, taken outside this function."),
        Mistake("summed over the batch", _ll(total=True),
                "you return one number for the whole batch: the contract returns log p(tags | x) per sequence, a "
                "tensor of shape (B,); reduce it outside, for the loss."),
        Mistake("transitions transposed", _ll(transposed=True),
                "transitions[i, j] scores tag i followed by tag j: the step from y_{t-1} to y_t adds "
                "transitions[y_{t-1}, y_t], and alpha[i] + transitions[i, j] reaches tag j."),
        Mistake("first emission missing from log Z", _ll(first_emission=False),
                "log Z lacks the first step's emissions: alpha_0 = start + emissions[:, 0], not start alone."),
        Mistake("exp then log", _ll(linear=True),
                "your forward algorithm sums exp(...) and takes the log: large scores overflow to inf. Use "
                "torch.logsumexp, which subtracts the maximum first."),
    ],
))

register(PlainExercise(
    name="viterbi_decode",
    chapter="sequences/crf",
    signature=SIGNATURE_VITERBI,
    oracle=viterbi_oracle,
    cases=_viterbi_cases,
    hints=("the best path ending in tag j at step t extends the best path ending in some tag i at step t - 1: keep, "
           "for every tag, the best score so far and the tag it came from   (eq. crf-viterbi)",
           "score_0 = start + emissions[:, 0]; score_t[j] = max_i(score_{t-1}[i] + transitions[i, j]) + "
           "emissions[:, t, j], and the argmax i is the back-pointer; padded steps keep the score",
           "add end to the final scores, take the argmax as the last tag, then follow the back-pointers of steps n - "
           "1 down to 1; reverse; return a list of mask[b].sum() ints per sequence   (eq. crf-viterbi)"),
    mistakes=[
        Mistake("end transitions forgotten", _vit(end=False),
                "add end_transitions to the final scores before taking the best last tag"),
        Mistake("start transitions missing", _vit(start=False),
                "the first scores are start_transitions + emissions[:, 0]: the start scores are missing"),
        Mistake("transitions transposed", _vit(transposed=True),
                "transitions[i, j] scores tag i followed by tag j: the score of reaching j from i is "
                "score[i] + transitions[i, j]"),
        Mistake("greedy per step", _viterbi_greedy,
                "the best tag at each step alone is not the best path: keep, for every tag, the best score of a "
                "path ending there, and backtrack"),
        Mistake("mask ignored", _vit(use_mask=False),
                "each sequence ends at its masked length: a path has mask[b].sum() tags"),
        Mistake("backtracking drops the last tag", _vit(drop_last=True),
                "your backtracking is off by one: the path must start from the best last tag itself and then add "
                "one tag per back-pointer, mask[b].sum() tags in all; yours leaves the last tag out"),
    ],
))
