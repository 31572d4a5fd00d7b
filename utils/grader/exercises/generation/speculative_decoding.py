"""Part 7, generation: speculative decoding's acceptance step (chapter generation/speculative_decoding).

`speculative_accept(target_probs, draft_probs, draft_tokens, generator=None) -> list[int]` is graded with the
stochastic kind. Given the K draft tokens, what comes back is always `draft_tokens[:n] + [y]`: the first n
drafts accepted, then one token y (drawn from the residual at the first rejection, or the bonus token from
target_probs[K] when all K are accepted). The oracle is the exact law of the pair (n, y), computed here in
float64 from the acceptance probabilities min(1, p_i / q_i):

    P(n, y) = a_0 ... a_{n-1} (1 - a_n) r_n(y)    for n < K, r_n = max(0, p_n - q_n) / sum(max(0, p_n - q_n))
    P(K, y) = a_0 ... a_{K-1} p_K(y)

Each call gives one draw of (n, y); a case makes many calls on one generator. Anything that is not of the form
`draft_tokens[:n] + [one token]` is one more outcome, of probability 0. The laws of the registered mistakes are
the same computation with one step changed (tests/test_speculative_decoding.py recomputes the stated bounds
and checks, by simulation with draft tokens drawn from the draft model, that every output token of the oracle's
law is distributed as the target's).
"""

from __future__ import annotations

from functools import partial

import torch

from ....i18n import msg
from ...inputs import f64
from ...kinds import SamplingMistake, StochasticExercise, draws
from ...registry import register
from ...result import Problem

# =========================================================================== the law of (n, y)

def accept_law(target_probs, draft_probs, draft_tokens, *, accept="ratio", residual="p - q", bonus_row=None,
               stop=True, bonus=True):
    """(C,) float64 exact probabilities of the outcomes `draft_tokens[:n] + [y]`, index n * V + y, and of
    'anything else', index (K + 1) * V. The keyword-only flags give the laws of known mistakes."""
    p = target_probs.detach().double()
    q = draft_probs.detach().double()
    tokens = [int(t) for t in draft_tokens.tolist()]
    K, V = len(tokens), p.shape[-1]
    law = [0.0] * ((K + 1) * V + 1)
    reach = 1.0                                  # P(the first i drafts were all accepted)
    for i, d in enumerate(tokens):
        pi, qi = float(p[i, d]), float(q[i, d])
        a = {"ratio": min(1.0, pi / qi), "inverted": min(1.0, qi / pi) if pi > 0 else 1.0,
             "greedy": float(pi >= qi), "target only": pi}[accept]
        if a < 1.0:
            if residual == "p - q":
                r = (p[i] - q[i]).clamp_min(0)
            elif residual == "q - p":
                r = (q[i] - p[i]).clamp_min(0)
            else:                                # "target": resample from p itself
                r = p[i].clone()
            if float(r.sum()) == 0.0:            # nothing to draw from: such code raises (torch.multinomial)
                law[-1] += reach * (1 - a)
                reach *= a
                continue
            r = (r / r.sum()).tolist()
            if stop:
                for y in range(V):
                    law[i * V + y] += reach * (1 - a) * r[y]
            else:                                # the rejected token is replaced and the loop goes on: never valid
                law[-1] += reach * (1 - a)
        reach *= a
    row = K if bonus_row is None else bonus_row % (K + 1)
    if bonus:                                    # torch.multinomial normalises the row it draws from
        for y, py in enumerate((p[row] / p[row].sum()).tolist()):
            law[K * V + y] += reach * py
    elif K:                                      # all accepted, no bonus: draft_tokens[:K-1] + [draft_tokens[K-1]]
        law[(K - 1) * V + tokens[K - 1]] += reach
    else:
        law[-1] += reach
    return torch.tensor(law, dtype=torch.float64)


def _outcome_names(args, kwargs):
    """'draft_tokens[:2] + [4]' for every (n, y), then the catch-all."""
    target_probs, draft_tokens = args[0], args[2]
    K, V = int(draft_tokens.shape[0]), target_probs.shape[-1]
    names = [f"draft_tokens[:{n}] + [{y}]" for n in range(K + 1) for y in range(V)]
    return names + [msg("a list that is not draft_tokens[:n] + [one token]")]


def read_tokens(result, args, kwargs):
    """observe(): the outcome index of one call's result, or the Problem with its form."""
    target_probs, draft_tokens = args[0], args[2]
    K, V = int(draft_tokens.shape[0]), target_probs.shape[-1]
    if result is None:
        return Problem("returned-none", msg("output is None: return the list of tokens"))
    if isinstance(result, torch.Tensor):
        return Problem("wrong-type", msg("output is a torch.Tensor; return a list of Python ints (tokens.tolist())"))
    if not isinstance(result, (list, tuple)):
        return Problem("wrong-type", msg("output is a {name}; expected a list of ints", name=type(result).__name__))
    for i, t in enumerate(result):
        if isinstance(t, torch.Tensor):
            return Problem("wrong-type", msg("output[{i}] is a torch.Tensor; append int(token), so that the list "
                                             "holds Python ints", i=i))
        if isinstance(t, bool) or not isinstance(t, int):
            return Problem("wrong-type", msg("output[{i}] is a {name}; expected an int", i=i, name=type(t).__name__))
    drafts = [int(t) for t in draft_tokens.tolist()]
    n = len(result) - 1
    if 0 <= n <= K and list(result[:n]) == drafts[:n] and 0 <= result[n] < V:
        return torch.tensor(n * V + result[n])
    return torch.tensor((K + 1) * V)


# =========================================================================== the mistakes, as candidates write them

def _draw(probs, generator):
    return int(torch.multinomial(probs, 1, generator=generator))


def resamples_from_target(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, d] / draft_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw(target_probs[i], generator))
            return out
    return out + [_draw(target_probs[len(out)], generator)]


def residual_reversed(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, d] / draft_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw((draft_probs[i] - target_probs[i]).clamp(min=0), generator))
            return out
    return out + [_draw(target_probs[len(out)], generator)]


def no_bonus_token(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, d] / draft_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw((target_probs[i] - draft_probs[i]).clamp(min=0), generator))
            return out
    return out


def bonus_from_last_draft_row(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    K = len(draft_tokens)
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, d] / draft_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw((target_probs[i] - draft_probs[i]).clamp(min=0), generator))
            return out
    return out + [_draw(target_probs[K - 1], generator)]


def goes_on_after_rejection(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, d] / draft_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw((target_probs[i] - draft_probs[i]).clamp(min=0), generator))
    return out + [_draw(target_probs[len(draft_tokens)], generator)]


def accepts_when_target_is_likelier(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if target_probs[i, d] >= draft_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw((target_probs[i] - draft_probs[i]).clamp(min=0), generator))
            return out
    return out + [_draw(target_probs[len(out)], generator)]


def ratio_inverted(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < draft_probs[i, d] / target_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw((target_probs[i] - draft_probs[i]).clamp(min=0), generator))
            return out
    return out + [_draw(target_probs[len(out)], generator)]


def accepts_with_target_probability(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand((), generator=generator) < target_probs[i, d]:
            out.append(d)
        else:
            out.append(_draw((target_probs[i] - draft_probs[i]).clamp(min=0), generator))
            return out
    return out + [_draw(target_probs[len(out)], generator)]


def global_rng(target_probs, draft_probs, draft_tokens, generator=None):
    out = []
    for i, d in enumerate(draft_tokens.tolist()):
        if torch.rand(()) < target_probs[i, d] / draft_probs[i, d]:
            out.append(d)
        else:
            out.append(int(torch.multinomial((target_probs[i] - draft_probs[i]).clamp(min=0), 1)))
            return out
    return out + [int(torch.multinomial(target_probs[len(out)], 1))]


MISTAKES = [
    SamplingMistake("resamples from the target", resamples_from_target,
                    "after a rejection your code draws the replacement from the target's distribution p: draw it "
                    "from the residual max(0, p - q), normalised. Drawing from p gives the draft token's outcomes "
                    "too much probability (it was already offered through the draft)",
                    law=partial(accept_law, residual="target"), passes=1e-12),
    SamplingMistake("residual reversed", residual_reversed,
                    "your residual is max(0, q - p): the replacement must be drawn from max(0, p - q), the "
                    "probability the target has and the draft does not offer",
                    law=partial(accept_law, residual="q - p"), passes=1e-12),
    SamplingMistake("no bonus token", no_bonus_token,
                    "when all K draft tokens are accepted your code returns them alone: append one more token drawn "
                    "from target_probs[K], which the target computed for free in the same pass",
                    law=partial(accept_law, bonus=False), passes=1e-12),
    SamplingMistake("bonus from the wrong row", bonus_from_last_draft_row,
                    "your bonus token is drawn from target_probs[K - 1], the row of the last draft token: after K "
                    "accepted tokens the next token's distribution is target_probs[K]",
                    law=partial(accept_law, bonus_row=-2), passes=1e-12),
    SamplingMistake("goes on after a rejection", goes_on_after_rejection,
                    "your loop goes on after the first rejection: the draft tokens after it were drafted from a "
                    "prefix that is now wrong, so stop at the first rejection and return",
                    law=partial(accept_law, stop=False), passes=1e-12),
    SamplingMistake("accepts when the target is likelier", accepts_when_target_is_likelier,
                    "your code accepts a draft token exactly when p >= q and rejects it otherwise: a token with p < q "
                    "must still be accepted with probability p / q (compare a uniform draw with p / q)",
                    law=partial(accept_law, accept="greedy"), passes=1e-12),
    SamplingMistake("ratio inverted", ratio_inverted,
                    "your acceptance probability is q / p: accept draft token x with probability min(1, p(x) / q(x)), "
                    "target over draft", law=partial(accept_law, accept="inverted"), passes=1e-12),
    SamplingMistake("accepts with probability p", accepts_with_target_probability,
                    "your code accepts a draft token with probability p(x): divide by the draft's probability, "
                    "min(1, p(x) / q(x)), since the draft already chose x with probability q(x)",
                    law=partial(accept_law, accept="target only"), passes=1e-12),
    SamplingMistake("ignores the generator", global_rng,
                    "your code draws from the global RNG: pass generator=generator to torch.rand and "
                    "torch.multinomial, so that the same seed gives the same tokens", rng="global", passes=1e-12),
]


# =========================================================================== the cases

def _normalised(w):
    w = torch.as_tensor(w, dtype=torch.float64)
    return w / w.sum(-1, keepdim=True)


def _spec_case(target, draft, tokens, dtype=torch.float32, transpose=False):
    """(target_probs (K+1, V), draft_probs (K, V), draft_tokens (K,)); transposed: target_probs non-contiguous."""
    p, q = _normalised(target).to(dtype), _normalised(draft).reshape(-1, len(target[0])).to(dtype)
    if transpose:
        p = p.T.contiguous().T
    return (p, q, torch.tensor(tokens, dtype=torch.long)), {}


# V = 5, K = 3; at every draft token q > p, so each may be rejected
P3 = [[0.10, 0.30, 0.25, 0.20, 0.15], [0.35, 0.05, 0.20, 0.25, 0.15], [0.20, 0.20, 0.10, 0.40, 0.10],
      [0.02, 0.08, 0.80, 0.05, 0.05]]
Q3 = [[0.15, 0.55, 0.10, 0.10, 0.10], [0.10, 0.25, 0.30, 0.20, 0.15], [0.25, 0.10, 0.40, 0.15, 0.10]]
D3 = [1, 1, 2]

# K = 2, V = 4: the first draft is certainly accepted (p >= q), the second is impossible for the target
P2 = [[0.40, 0.30, 0.20, 0.10], [0.00, 0.50, 0.30, 0.20], [0.25, 0.25, 0.10, 0.40]]
Q2 = [[0.30, 0.30, 0.20, 0.20], [0.40, 0.20, 0.20, 0.20]]
D2 = [0, 0]

# K = 4, V = 4: acceptance about one half at each draft
P4 = [[0.30, 0.20, 0.30, 0.20], [0.15, 0.35, 0.20, 0.30], [0.25, 0.25, 0.25, 0.25], [0.40, 0.10, 0.20, 0.30],
      [0.10, 0.20, 0.30, 0.40]]
Q4 = [[0.10, 0.40, 0.30, 0.20], [0.40, 0.30, 0.20, 0.10], [0.20, 0.50, 0.20, 0.10], [0.20, 0.30, 0.20, 0.30]]
D4 = [1, 0, 1, 1]


def _cases():
    return [
        draws(_spec_case, P3, Q3, D3, seed=1, calls=250, note="K=3, V=5: every draft token may be rejected"),
        draws(_spec_case, P3, P3[:3], [0, 3, 2], seed=2, calls=80,
              note="the draft equals the target: all K accepted, then the bonus token from target_probs[K]"),
        draws(_spec_case, P2, Q2, D2, seed=3, calls=120,
              note="the 2nd draft token has target probability 0: always rejected there, the first rejection stops"),
        draws(_spec_case, P4, Q4, D4, seed=4, calls=250, dtype=f64, note="float64, K=4, acceptance about 1/2"),
        draws(_spec_case, P3[:2], Q3[:1], [1], seed=5, calls=150, note="K=1: a single draft token"),
        draws(_spec_case, P4[:1], Q4[:0], [], seed=6, calls=100,
              note="K=0, no draft: one token drawn from target_probs[0]"),
        draws(_spec_case, P3, Q3, [2, 0, 3], seed=7, calls=120, transpose=True,
              note="non-contiguous target_probs; drafts the target likes more: always accepted"),
    ]


register(StochasticExercise(
    name="speculative_accept",
    chapter="generation/speculative_decoding",
    signature="speculative_accept(target_probs, draft_probs, draft_tokens, generator=None)",
    oracle=accept_law,
    cases=_cases,
    mistakes=MISTAKES,
    observe=read_tokens,
    names=_outcome_names,
    false_rejection=1e-7,
    samples=1_070,
    hints=("go through the drafts in order: accept draft i with probability min(1, p_i(x) / q_i(x)); at the first "
           "rejection draw one token from the residual and stop; if none is rejected, draw a bonus token from "
           "target_probs[K]   (eq. spec-accept)",
           "one uniform per draft: torch.rand((), generator=generator) < p / q; the residual is "
           "(target_probs[i] - draft_probs[i]).clamp(min=0), and torch.multinomial normalises it for you",
           "for i, x in enumerate(drafts): if u_i < p_i[x] / q_i[x]: append x; else: append a draw from "
           "max(0, p_i - q_i) and return; after the loop append a draw from target_probs[K]   (eqs. spec-accept, "
           "spec-residual)"),
))
