"""Part 9, efficient fine-tuning and inference: a Mixtral-style mixture of experts and the Switch/Mixtral
load-balancing loss (chapter efficiency/moe).

MoE is a module: a bias-free router and n_experts SwiGLU experts with random non-default weights (the std of a
trained layer, so that the router's probabilities are neither uniform nor one-hot); forward returns (out,
router_logits). The oracle loops over the experts and gathers the tokens routed to each one. Random weights make
ties in the top-k essentially impossible; the one case with tied logits (a uniform router) is for the loss only,
where the tie-break does not change the value.

load_balancing_loss is a function of the router logits; its oracle is the loop specification below, which
tests/test_efficiency_moe_kv.py checks against transformers' `load_balancing_loss_func` for one layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ....i18n import msg
from ...core import Case, Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn, transposed
from ...kinds import ModuleExercise, Script, Step
from ...references import SwiGLUSpec
from ...registry import register

# --------------------------------------------------------------------------- MoE: the oracle


class MoESpec(nn.Module):
    """Top-k routing as a loop over the experts: each expert runs on the tokens that chose it, weighted by the
    token's renormalised router probability."""

    def __init__(self, d_model, d_ff, n_experts, top_k=2):
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLUSpec(d_model, d_ff) for _ in range(n_experts))

    def forward(self, x):
        B, T, D = x.shape
        tokens = x.reshape(B * T, D)
        logits = self.router(tokens)                                   # (N, E)
        top = torch.softmax(logits, dim=-1).topk(self.top_k, dim=-1)
        weights = top.values / top.values.sum(-1, keepdim=True)        # (N, k)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, slots = torch.nonzero(top.indices == e, as_tuple=True)
            if len(rows):
                out = out.index_put((rows,), weights[rows, slots, None] * expert(tokens[rows]), accumulate=True)
        return out.view(B, T, D), logits


def trained_scale(state: dict, gen: torch.Generator) -> dict:
    """Weights randn / sqrt(fan_in): router logits of order one (probabilities neither uniform nor one-hot)."""
    return {name: (torch.randn(t.shape, generator=gen, dtype=torch.float64) / math.sqrt(t.shape[-1])).to(t.dtype)
            for name, t in state.items()}


# --------------------------------------------------------------------------- MoE: cases

def _script(init, shape, *, top_k=None, dtype=f32, seed=0, layout="contiguous", modes="T"):
    """One forward per letter of `modes` (T train, E eval, G train with backward) on inputs of `shape`."""
    make = transposed if layout == "transposed" else randn
    steps = [Step(call(make(*shape, dtype=dtype, seed=seed + k)), train=m in "TG", grad=m == "G")
             for k, m in enumerate(modes)]
    return Script(init=(init, {} if top_k is None else {"top_k": top_k}), steps=steps, dtype=dtype)


def moe_case(*args, note="", **kwargs):
    return Case(make=lambda: _script(*args, **kwargs), note=note)


def _moe_cases():
    return [
        moe_case((8, 16, 4), (2, 5, 8), note="4 experts, top_k=2 (the default)"),
        moe_case((8, 12, 8), (2, 6, 8), top_k=2, seed=1, note="8 experts, top_k=2"),
        moe_case((8, 12, 4), (3, 4, 8), top_k=1, seed=2, note="top_k=1 (Switch): the kept weight is 1"),
        moe_case((8, 12, 8), (2, 4, 8), top_k=3, seed=4, note="8 experts, top_k=3"),
        moe_case((8, 12, 4), (2, 3, 8), top_k=4, seed=5,
                 note="top_k = n_experts: every expert, weights = probabilities"),
        moe_case((8, 16, 4), (2, 5, 8), top_k=2, dtype=f64, seed=6, note="float64"),
        moe_case((8, 16, 4), (2, 6, 8), top_k=2, layout="transposed", seed=7,
                 note="a non-contiguous input (transposed)"),
        moe_case((8, 12, 8), (1, 1, 8), top_k=2, seed=8, note="batch of one, one token: most experts get no token"),
        moe_case((8, 12, 4), (2, 3, 8), top_k=2, dtype=f64, seed=10, modes="GE",
                 note="gradients of the input, the router and the experts, float64; then eval"),
    ]


def _per_token(make):
    """Without capacity limits every token is routed on its own: one token alone gives the same output."""
    torch.manual_seed(0)
    m = make(8, 16, 4, top_k=2).double()
    x = randn(2, 5, 8, dtype=f64, seed=41)
    with torch.no_grad():
        out, alone = m(x), m(x[1:2, 3:4])
    if not (isinstance(out, tuple) and isinstance(alone, tuple) and len(out) == 2 and len(alone) == 2):
        return msg("your forward did not return a pair (out, router_logits)")
    if not torch.allclose(alone[0], out[0][1:2, 3:4], rtol=1e-9, atol=1e-12):
        return msg("a token alone gives another output than inside the batch: each token must be routed on its own")
    return None


def _weights_sum_to_one(make):
    """With every expert a copy of expert 0, the output is expert 0's output whatever the routing, when the kept
    weights of each token sum to one."""
    torch.manual_seed(0)
    m = make(8, 16, 4, top_k=2).double()
    with torch.no_grad():
        for expert in m.experts[1:]:
            expert.load_state_dict(m.experts[0].state_dict())
        x = randn(2, 5, 8, dtype=f64, seed=42)
        got = m(x)
        want = m.experts[0](x)
    if not isinstance(got, tuple) or not torch.allclose(got[0], want, rtol=1e-9, atol=1e-12):
        return msg("with all experts equal, your output is not that expert's output: the top_k weights of each "
                   "token must sum to one (renormalise after the top-k)")
    return None


# --------------------------------------------------------------------------- MoE: mistakes, one flaw each

class _MoE(nn.Module):
    """A hand-written top-k MoE; each mistake overrides one step."""

    def __init__(self, d_model, d_ff, n_experts, top_k=2):
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLUSpec(d_model, d_ff) for _ in range(n_experts))

    def probs(self, logits):
        return torch.softmax(logits, dim=-1)

    def weights(self, top_p, top_logits):
        return top_p / top_p.sum(-1, keepdim=True)

    def returned(self, logits, B, T):
        return logits

    def forward(self, x):
        B, T, D = x.shape
        h = x.reshape(-1, D)
        logits = self.router(h)
        top_p, top_i = self.probs(logits).topk(self.top_k, dim=-1)
        top_logits = logits.gather(-1, top_i)
        w = self.weights(top_p, top_logits)
        out = torch.zeros_like(h)
        for k in range(self.top_k):
            for e, expert in enumerate(self.experts):
                sel = top_i[:, k] == e
                if sel.any():
                    out[sel] += w[sel, k, None] * expert(h[sel])
        return out.view(B, T, D), self.returned(logits, B, T)


class NotRenormalised(_MoE):
    def weights(self, top_p, top_logits):
        return top_p


class SoftmaxOverTokens(_MoE):
    def probs(self, logits):
        return torch.softmax(logits, dim=0)


class SoftmaxOfTopProbabilities(_MoE):
    def weights(self, top_p, top_logits):
        return torch.softmax(top_p, dim=-1)


class RawLogitWeights(_MoE):
    def weights(self, top_p, top_logits):
        return top_logits


class EqualWeights(_MoE):
    def weights(self, top_p, top_logits):
        return torch.full_like(top_p, 1.0 / self.top_k)


class ReturnsProbabilities(_MoE):
    def returned(self, logits, B, T):
        return torch.softmax(logits, dim=-1)


class LogitsPerSequence(_MoE):
    def returned(self, logits, B, T):
        return logits.view(B, T, -1)


register(ModuleExercise(
    name="MoE",
    chapter="efficiency/moe",
    signature="MoE(d_model, d_ff, n_experts, top_k=2); forward(x) -> (out, router_logits)",
    oracle=MoESpec,
    cases=_moe_cases,
    randomize=trained_scale,
    properties=[
        Property("a token alone is routed as inside the batch", _per_token),
        Property("the kept weights of a token sum to one", _weights_sum_to_one),
    ],
    hints=("flatten the tokens to (B*T, d_model); the router gives one logit per expert; keep each token's top_k "
           "experts and mix their outputs   (eqs. moe-gate, moe-out)",
           "softmax over the experts first, then topk on the probabilities, then divide the kept probabilities by "
           "their sum; return the router logits of shape (B*T, n_experts) as they came out of the router",
           "p = softmax(router(x), -1); w, idx = p.topk(top_k); w = w / w.sum(-1, keepdim=True); "
           "out[t] = sum_k w[t, k] * experts[idx[t, k]](x[t])   (eqs. moe-gate, moe-out)"),
    mistakes=[
        Mistake("kept probabilities not renormalised", NotRenormalised,
                "the weights of the kept experts do not sum to one: after softmax and top-k, divide the kept "
                "probabilities by their sum (Mixtral renormalises; without it the output shrinks)."),
        Mistake("softmax over tokens", SoftmaxOverTokens,
                "your router softmax runs over the tokens (dim=0): each token's probabilities must be a softmax "
                "over the experts, dim=-1."),
        Mistake("softmax of the kept probabilities", SoftmaxOfTopProbabilities,
                "you applied a softmax to the kept probabilities: softmax of probabilities is not a renormalisation. "
                "Divide them by their sum (or take the softmax of the kept logits, which is the same thing)."),
        Mistake("raw logits as weights", RawLogitWeights,
                "you weighted the experts by their raw router logits: turn the logits into probabilities with a "
                "softmax over the experts, keep the top_k and renormalise them."),
        Mistake("equal weights", EqualWeights,
                "you averaged the chosen experts with equal weights 1/top_k: weight each one by its renormalised "
                "router probability, or the router receives no gradient from the output."),
        Mistake("returns probabilities", ReturnsProbabilities,
                "the second output must be the router logits (before the softmax): the load-balancing loss takes "
                "logits and applies the softmax itself."),
        Mistake("logits of shape (B, T, E)", LogitsPerSequence,
                "return the router logits flattened over the tokens, shape (B*T, n_experts), as Mixtral does."),
    ],
))


# --------------------------------------------------------------------------- load_balancing_loss

def load_balancing_loss_spec(router_logits, n_experts, top_k):
    """The Switch/Mixtral loss as a loop: f[e] counts the top-k slots that chose expert e, over the tokens;
    P[e] is the mean router probability; loss = n_experts * sum_e f[e] * P[e]."""
    probs = torch.softmax(router_logits, dim=-1)                       # (N, E)
    chosen = probs.topk(top_k, dim=-1).indices                         # (N, k)
    N = probs.shape[0]
    f = torch.zeros(n_experts, dtype=probs.dtype)
    for t in range(N):
        for e in chosen[t].tolist():
            f[e] += 1.0 / N
    P = probs.mean(0)
    return n_experts * (f * P).sum()


def _logits(N, E, seed, dtype=f32, scale=1.0, layout="contiguous"):
    return transposed(N, E, seed=seed, dtype=dtype, scale=scale) if layout == "transposed" else \
        randn(N, E, seed=seed, dtype=dtype, scale=scale)


def _lbl(N, E, k, seed=0, keywords=False, **kw):
    x = _logits(N, E, seed, **kw)
    return call(x, n_experts=E, top_k=k) if keywords else call(x, E, k)


def _uniform(N, E, k, dtype=f32):
    return call(torch.zeros(N, E, dtype=dtype), E, k)


def _lbl_cases():
    return [
        case(_lbl, 10, 4, 2, note="10 tokens, 4 experts, top_k=2"),
        case(_lbl, 24, 8, 2, seed=1, note="24 tokens, 8 experts, top_k=2"),
        case(_lbl, 12, 4, 1, seed=2, note="top_k=1 (Switch)"),
        case(_lbl, 30, 8, 1, seed=3, note="8 experts, top_k=1"),
        case(_lbl, 20, 8, 3, seed=4, keywords=True, note="top_k=3, arguments by keyword"),
        case(_lbl, 16, 8, 2, seed=5, dtype=f64, note="float64"),
        case(_lbl, 9, 4, 2, seed=6, layout="transposed", note="non-contiguous (transposed) logits"),
        case(_lbl, 1, 4, 2, seed=7, note="a single token"),
        case(_lbl, 14, 4, 4, seed=8, note="top_k = n_experts: every expert chosen by every token"),
        case(_lbl, 20, 8, 2, seed=9, scale=8.0, note="confident router (large logits): nearly one-hot"),
        case(_uniform, 6, 4, 2, note="a uniform router (all logits 0): the loss is top_k, whatever the tie-break"),
        case(_lbl, 12, 8, 2, seed=10, dtype=f64, grad=True, note="gradient (it flows through P only)"),
    ]


def _balanced_minimum(fn):
    """A perfectly balanced uniform router gives top_k; a router that sends everything to one expert with all its
    probability gives n_experts (for top_k=1)."""
    got = fn(torch.zeros(8, 4, dtype=f64), 4, 1)
    if not isinstance(got, torch.Tensor) or not torch.allclose(got, torch.tensor(1.0, dtype=f64)):
        return msg("a uniform router with top_k=1 should give 1 (perfect balance), got {got}", got=str(got))
    collapsed = torch.full((8, 4), -30.0, dtype=f64)
    collapsed[:, 2] = 30.0
    got = fn(collapsed, 4, 1)
    if not isinstance(got, torch.Tensor) or not torch.allclose(got, torch.tensor(4.0, dtype=f64)):
        return msg("a router that sends every token to one expert should give n_experts = 4, got {got}", got=str(got))
    return None


def _counts(logits, k):
    return F.one_hot(torch.softmax(logits, -1).topk(k, -1).indices, logits.shape[-1]).to(logits.dtype)   # (N, k, E)


def lbl_no_factor(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    f = _counts(router_logits, top_k).sum(1).mean(0)
    return (f * p.mean(0)).sum()


def lbl_f_from_probabilities(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    f = p.mean(0)
    return n_experts * (f * p.mean(0)).sum()


def lbl_first_choice_only(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    f = F.one_hot(p.argmax(-1), n_experts).to(p.dtype).mean(0)
    return n_experts * (f * p.mean(0)).sum()


def lbl_f_over_slots(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    f = _counts(router_logits, top_k).sum(1).sum(0) / (router_logits.shape[0] * top_k)
    return n_experts * (f * p.mean(0)).sum()


def lbl_p_of_kept_only(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    mask = _counts(router_logits, top_k).sum(1)
    return n_experts * (mask.mean(0) * (p * mask).mean(0)).sum()


def lbl_softmax_over_tokens(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, 0)
    f = F.one_hot(p.topk(top_k, -1).indices, n_experts).to(p.dtype).sum(1).mean(0)
    return n_experts * (f * p.mean(0)).sum()


register(Exercise(
    name="load_balancing_loss",
    chapter="efficiency/moe",
    signature="load_balancing_loss(router_logits, n_experts, top_k)",
    oracle=load_balancing_loss_spec,
    cases=_lbl_cases,
    properties=[Property("1 when balanced (uniform, top_k=1), n_experts when collapsed", _balanced_minimum)],
    hints=("two statistics per expert: the fraction of routing slots it received (counts, not differentiable) "
           "and its mean router probability (differentiable); the loss is their dot product, scaled   "
           "(eq. moe-aux)",
           "softmax over the experts, topk to find each token's top_k experts, one_hot those indices and sum over "
           "the slots: f[e] = count / n_tokens (it sums to top_k over the experts); P = probs.mean(0)",
           "loss = n_experts * sum_e f[e] * P[e], a 0-d tensor   (eq. moe-aux)"),
    mistakes=[
        Mistake("missing n_experts factor", lbl_no_factor,
                "your loss lacks the factor n_experts: without it a perfectly balanced router gives top_k / "
                "n_experts instead of top_k, and the loss shrinks as experts are added."),
        Mistake("f from probabilities", lbl_f_from_probabilities,
                "your f is the mean router probability: f must count the tokens actually dispatched to each expert "
                "(one_hot of the top-k indices), not their probabilities."),
        Mistake("first choice only", lbl_first_choice_only,
                "you counted only each token's first choice (argmax): with top_k > 1 every one of the top_k slots "
                "counts for its expert."),
        Mistake("f divided by tokens * top_k", lbl_f_over_slots,
                "you divided the counts by n_tokens * top_k: transformers (Mixtral) divides by the number of "
                "tokens only, so that f sums to top_k and a uniform router gives a loss of top_k."),
        Mistake("P from the kept experts only", lbl_p_of_kept_only,
                "your P averages only the probabilities of the kept experts: P is the mean of the full softmax over "
                "all the experts, chosen or not."),
        Mistake("softmax over tokens", lbl_softmax_over_tokens,
                "your softmax runs over the tokens (dim=0): the router probabilities of a token are a softmax over "
                "the experts, dim=-1."),
    ],
))
