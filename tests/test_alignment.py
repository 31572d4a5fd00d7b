"""Part 10, alignment: what is specific to the graders of sequence_logprobs, dpo_loss, gae, ppo_clip_loss,
grpo_advantages and grpo_loss, beyond tests/test_exercises.py.

- the oracles against loop specifications written here (plain Python floats, one token at a time) on every case,
  and against numbers worked out by hand;
- the gradients of the oracles and of the book's solutions against the closed-form derivatives;
- the properties: they hold for the oracles and catch the wrong code they describe;
- wrong code as candidates write it (beyond the registered mistakes): rejected, and never given a wrong diagnosis;
- correct code in other styles (loops, one-hot einsum, softplus, a discount matrix, case analysis): accepted;
- bad input (an exception, numpy, a wrong shape or dtype, NaN, an edited input, a forbidden call, an endless loop,
  something that is not a function): a clear report in English and in Chinese, never a crash;
- the speed of a check (CPU time).
"""

import math
import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kindcheck import timed

from utils.grader import get, run
from utils.grader.exercises.alignment import dpo as D
from utils.grader.exercises.alignment import ppo_grpo as P
from utils.grader.sandbox import resolve
from utils.i18n import english_left, speaking

NAMES = ["sequence_logprobs", "dpo_loss", "gae", "ppo_clip_loss", "grpo_advantages", "grpo_loss"]
f64 = torch.float64


def _case(name, i):
    args, kwargs = get(name).all_cases()[i].make()
    return args, kwargs


def _bind(name, args, kwargs):
    """The call's arguments by parameter name (the cases pass some of them by keyword)."""
    params = {"sequence_logprobs": ["logits", "labels", "loss_mask"],
              "dpo_loss": ["policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                           "beta"],
              "gae": ["rewards", "values", "gamma", "lam"],
              "ppo_clip_loss": ["logprobs", "old_logprobs", "advantages", "mask", "clip_eps"],
              "grpo_advantages": ["rewards", "group_size", "eps"],
              "grpo_loss": ["logprobs", "old_logprobs", "ref_logprobs", "advantages", "mask", "clip_eps", "beta"]}[name]
    bound = dict(zip(params, args))
    bound.update(kwargs)
    return bound


def _tol(t):
    return dict(rel=1e-4, abs=1e-4) if t.dtype == torch.float32 else dict(rel=1e-10, abs=1e-10)


# =========================================================================== loop specifications

def seq_logprobs_loop(logits, labels, loss_mask):
    """One row, one position at a time: the label at t scored by the logits at t - 1, float64 Python arithmetic."""
    B, T, V = logits.shape
    out = []
    for b in range(B):
        total = 0.0
        for t in range(1, T):
            if not bool(loss_mask[b, t]):
                continue
            row = [float(v) for v in logits[b, t - 1].double()]
            m = max(row)
            lse = m + math.log(sum(math.exp(v - m) for v in row))
            total += row[int(labels[b, t])] - lse
        out.append(total)
    return out


def log_sigmoid(z):
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def dpo_loop(pc, pr, rc, rr, beta=0.1):
    margins = [beta * ((a - c) - (b - d)) for a, b, c, d in zip(pc, pr, rc, rr, strict=True)]
    loss = sum(-log_sigmoid(z) for z in margins) / len(margins)
    chosen = [beta * (a - c) for a, c in zip(pc, rc, strict=True)]
    rejected = [beta * (b - d) for b, d in zip(pr, rr, strict=True)]
    return loss, chosen, rejected


def gae_loop(rewards, values, gamma=0.99, lam=0.95):
    """The definition for one trajectory: A_t = sum_l (gamma lam)^l delta_{t+l}, a double loop."""
    T = len(rewards)
    delta = [rewards[t] + gamma * values[t + 1] - values[t] for t in range(T)]
    adv = [sum((gamma * lam) ** l * delta[t + l] for l in range(T - t)) for t in range(T)]
    return adv, [a + values[t] for t, a in enumerate(adv)]


def ppo_loop(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    total, count = 0.0, 0
    for lp, old, a, m in zip(*(x.flatten().tolist() for x in (logprobs, old_logprobs, advantages, mask)), strict=True):
        if not m:
            continue
        r = math.exp(lp - old)
        total += -min(r * a, min(max(r, 1 - clip_eps), 1 + clip_eps) * a)
        count += 1
    return total / count


def grpo_advantages_loop(rewards, group_size, eps=1e-4):
    values, out = rewards.tolist(), []
    for g in range(0, len(values), group_size):
        group = values[g:g + group_size]
        mean, std = statistics.mean(group), statistics.stdev(group)          # stdev: the unbiased estimate
        out += [(r - mean) / (std + eps) for r in group]
    return out


def grpo_loss_loop(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    per_answer = []
    for i in range(logprobs.shape[0]):
        total, count = 0.0, 0
        for t in range(logprobs.shape[1]):
            if not bool(mask[i, t]):
                continue
            lp, old, ref, a = float(logprobs[i, t]), float(old_logprobs[i, t]), float(ref_logprobs[i, t]), float(
                advantages[i])
            r = math.exp(lp - old)
            surrogate = min(r * a, min(max(r, 1 - clip_eps), 1 + clip_eps) * a)
            k3 = math.exp(ref - lp) - (ref - lp) - 1
            total += -(surrogate - beta * k3)
            count += 1
        per_answer.append(total / count)
    return sum(per_answer) / len(per_answer)


@pytest.mark.parametrize("i", range(len(get("sequence_logprobs").all_cases())))
def test_sequence_logprobs_oracle_matches_the_loop(i):
    args, kwargs = _case("sequence_logprobs", i)
    a = _bind("sequence_logprobs", args, kwargs)
    got = get("sequence_logprobs").oracle(**a)
    want = seq_logprobs_loop(a["logits"], a["labels"], a["loss_mask"])
    rel = 1e-5 if a["logits"].dtype == torch.float32 else 1e-12
    assert got.tolist() == pytest.approx(want, rel=rel, abs=max(rel, 1e-3 if a["logits"].abs().max() > 100 else rel))


@pytest.mark.parametrize("i", range(len(get("dpo_loss").all_cases())))
def test_dpo_oracle_matches_the_loop(i):
    args, kwargs = _case("dpo_loss", i)
    a = _bind("dpo_loss", args, kwargs)
    loss, chosen, rejected = get("dpo_loss").oracle(**a)
    want = dpo_loop(*(a[k].tolist() for k in ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps",
                                              "ref_rejected_logps")), beta=a.get("beta", 0.1))
    tol = _tol(loss)
    assert float(loss) == pytest.approx(want[0], **tol)
    assert chosen.tolist() == pytest.approx(want[1], **tol) and rejected.tolist() == pytest.approx(want[2], **tol)
    assert not chosen.requires_grad and not rejected.requires_grad


@pytest.mark.parametrize("i", range(len(get("gae").all_cases())))
def test_gae_oracle_matches_the_definition(i):
    args, kwargs = _case("gae", i)
    a = _bind("gae", args, kwargs)
    adv, ret = get("gae").oracle(**a)
    rewards, values = a["rewards"].double(), a["values"].double()
    flat_r, flat_v = rewards.reshape(-1, rewards.shape[-1]), values.reshape(-1, values.shape[-1])
    for row in range(flat_r.shape[0]):
        want_adv, want_ret = gae_loop(flat_r[row].tolist(), flat_v[row].tolist(), a.get("gamma", 0.99),
                                      a.get("lam", 0.95))
        assert adv.reshape(-1, adv.shape[-1])[row].tolist() == pytest.approx(want_adv, **_tol(adv))
        assert ret.reshape(-1, ret.shape[-1])[row].tolist() == pytest.approx(want_ret, **_tol(ret))


@pytest.mark.parametrize("i", range(len(get("ppo_clip_loss").all_cases())))
def test_ppo_oracle_matches_the_loop(i):
    args, kwargs = _case("ppo_clip_loss", i)
    a = _bind("ppo_clip_loss", args, kwargs)
    got = float(get("ppo_clip_loss").oracle(**a))
    assert got == pytest.approx(ppo_loop(**a), **_tol(a["logprobs"]))


@pytest.mark.parametrize("i", range(len(get("grpo_advantages").all_cases())))
def test_grpo_advantages_oracle_matches_statistics_stdev(i):
    args, kwargs = _case("grpo_advantages", i)
    a = _bind("grpo_advantages", args, kwargs)
    got = get("grpo_advantages").oracle(**a)
    want = grpo_advantages_loop(a["rewards"].double(), a["group_size"], a.get("eps", 1e-4))
    assert got.tolist() == pytest.approx(want, **_tol(got))


@pytest.mark.parametrize("i", range(len(get("grpo_loss").all_cases())))
def test_grpo_loss_oracle_matches_the_loop(i):
    args, kwargs = _case("grpo_loss", i)
    a = _bind("grpo_loss", args, kwargs)
    got = float(get("grpo_loss").oracle(**a))
    assert got == pytest.approx(grpo_loss_loop(**a), **_tol(a["logprobs"]))


# =========================================================================== numbers worked out by hand

def _impls(name, book):
    return [get(name).oracle, book(get(name).chapter)[name]]


def test_sequence_logprobs_by_hand(book):
    # V = 2. logits at 0 are [0, 0]: p = (1/2, 1/2); at 1 they are [0, log 3]: p = (1/4, 3/4); at 2 [log 4, 0]:
    # p = (4/5, 1/5). Labels [1, 0, 1, 0]: the label at 1 (id 0) is scored by position 0, log(1/2); the label at 2
    # (id 1) by position 1, log(3/4); the label at 3 (id 0) by position 2, log(4/5).
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)], [math.log(4), 0.0], [5.0, -5.0]]], dtype=f64)
    labels = torch.tensor([[1, 0, 1, 0]])
    response = torch.tensor([[False, False, True, True]])                  # the prompt is tokens 0 and 1
    everything = torch.ones(1, 4, dtype=torch.bool)
    for impl in _impls("sequence_logprobs", book):
        assert float(impl(logits, labels, response)) == pytest.approx(math.log(3 / 4) + math.log(4 / 5), rel=1e-12)
        assert float(impl(logits, labels, everything)) == pytest.approx(
            math.log(1 / 2) + math.log(3 / 4) + math.log(4 / 5), rel=1e-12)


def test_dpo_loss_by_hand(book):
    # policy chosen -10, reference chosen -11: log-ratio +1; policy rejected -12, reference -11: log-ratio -1.
    # beta = 0.5: z = 0.5 * (1 - (-1)) = 1, loss = log(1 + e^-1) = 0.313261687518..., rewards +0.5 and -0.5.
    pc, pr, rc, rr = (torch.tensor([v], dtype=f64) for v in (-10.0, -12.0, -11.0, -11.0))
    for impl in _impls("dpo_loss", book):
        loss, chosen, rejected = impl(pc, pr, rc, rr, beta=0.5)
        assert float(loss) == pytest.approx(0.31326168751822286, rel=1e-12)
        assert float(chosen) == pytest.approx(0.5) and float(rejected) == pytest.approx(-0.5)


def test_gae_by_hand(book):
    # rewards [1, 0], values [0.5, 0.25, 1.0], gamma = lam = 0.5:
    # delta_0 = 1 + 0.5 * 0.25 - 0.5 = 0.625, delta_1 = 0 + 0.5 * 1.0 - 0.25 = 0.25;
    # A_1 = 0.25, A_0 = 0.625 + 0.25 * 0.25 = 0.6875; returns = A + V = [1.1875, 0.5].
    r, v = torch.tensor([1.0, 0.0], dtype=f64), torch.tensor([0.5, 0.25, 1.0], dtype=f64)
    for impl in _impls("gae", book):
        adv, ret = impl(r, v, gamma=0.5, lam=0.5)
        assert adv.tolist() == pytest.approx([0.6875, 0.25]) and ret.tolist() == pytest.approx([1.1875, 0.5])


def test_ppo_clip_loss_by_hand(book):
    # ratios 1.5 and 0.5, advantages +1 and +1, eps 0.2: min(1.5, 1.2) = 1.2 and min(0.5, 0.5) = 0.5; the third
    # token (ratio 2, advantage -1) is masked out. loss = -(1.2 + 0.5) / 2 = -0.85.
    old = torch.full((1, 3), -1.0, dtype=f64)
    logp = old + torch.log(torch.tensor([[1.5, 0.5, 2.0]], dtype=f64))
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=f64)
    mask = torch.tensor([[True, True, False]])
    for impl in _impls("ppo_clip_loss", book):
        assert float(impl(logp, old, adv, mask)) == pytest.approx(-0.85, rel=1e-12)


def test_grpo_advantages_by_hand(book):
    # group [1, 0, 0, 0]: mean 0.25, unbiased variance (0.75^2 + 3 * 0.25^2) / 3 = 0.25, std 0.5;
    # group [2, 2]: std 0, advantages 0.
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0], dtype=f64)
    want = [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0.0, 0.0, 0.0, 0.0]
    for impl in _impls("grpo_advantages", book):
        assert impl(rewards, 4).tolist() == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_grpo_loss_by_hand(book):
    # two answers of 1 and 2 tokens, ratio 1 everywhere, advantages +1 and -1. Answer 0's only token: the reference
    # gives it log-prob logp + log 2, so k3 = 2 - log 2 - 1 = 1 - log 2; answer 1: reference equal, k3 = 0.
    # beta = 0.5: answer 0 -> -(1 - 0.5 (1 - log 2)); answer 1 -> mean of two tokens of -(-1) = 1.
    # loss = (-(1 - 0.5 (1 - log 2)) + 1) / 2 = 0.25 (1 - log 2) = 0.07671320486001367.
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -0.5]], dtype=f64)
    ref = logp.clone()
    ref[0, 0] += math.log(2)
    mask = torch.tensor([[True, False], [True, True]])
    adv = torch.tensor([1.0, -1.0], dtype=f64)
    for impl in _impls("grpo_loss", book):
        got = float(impl(logp, logp.clone(), ref, adv, mask, beta=0.5))
        assert got == pytest.approx(0.25 * (1 - math.log(2)), rel=1e-12)


# =========================================================================== gradients against closed forms

def test_sequence_logprobs_gradient_is_mask_times_onehot_minus_softmax(book):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 7, generator=g, dtype=f64)
    labels = torch.randint(0, 7, (3, 6), generator=g)
    mask = torch.rand(3, 6, generator=g) < 0.6
    # d/dlogits[b, t-1] of sum_t m_t (logits[b, t-1, y_t] - lse(logits[b, t-1])) = m_t (onehot(y_t) - softmax)
    want = torch.zeros_like(logits)
    want[:, :-1] = mask[:, 1:, None] * (F.one_hot(labels[:, 1:], 7).double() - torch.softmax(logits[:, :-1], -1))
    for impl in _impls("sequence_logprobs", book):
        x = logits.clone().requires_grad_()
        (grad,) = torch.autograd.grad(impl(x, labels, mask).sum(), x)
        torch.testing.assert_close(grad, want)


def test_dpo_gradient_is_beta_sigmoid_of_minus_the_margin(book):
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(5, generator=g, dtype=f64) * 3 - 20 for _ in range(4))
    beta = 0.3
    z = beta * ((pc - rc) - (pr - rr))
    weight = beta * torch.sigmoid(-z) / 5                                  # eq. (dpo-grad), per pair, mean over 5
    for impl in _impls("dpo_loss", book):
        a, b = pc.clone().requires_grad_(), pr.clone().requires_grad_()
        loss, _, _ = impl(a, b, rc, rr, beta=beta)
        ga, gb = torch.autograd.grad(loss, (a, b))
        torch.testing.assert_close(ga, -weight)
        torch.testing.assert_close(gb, weight)


def test_gae_jacobian_is_the_discount_matrix(book):
    T, gamma, lam = 5, 0.9, 0.7
    r, v = torch.randn(T, dtype=f64), torch.randn(T + 1, dtype=f64)
    s, t = torch.arange(T)[None, :], torch.arange(T)[:, None]
    want = torch.where(s >= t, (gamma * lam) ** (s - t).clamp(min=0).double(), torch.zeros((), dtype=f64))
    for impl in _impls("gae", book):
        jac = torch.autograd.functional.jacobian(lambda x, impl=impl: impl(x, v, gamma, lam)[0], r)
        torch.testing.assert_close(jac, want)


def _clip_gradient_formula(logp, old, adv, mask, eps):
    """d loss / d logp: -r A / n where the unclipped term is the min, 0 where the clipped one is (and off the mask)."""
    r = torch.exp(logp - old)
    unclipped_is_min = r * adv <= torch.clamp(r, 1 - eps, 1 + eps) * adv
    return torch.where(mask & unclipped_is_min, -r * adv, torch.zeros_like(r)) / mask.sum()


def test_ppo_gradient_matches_the_clipped_derivative(book):
    g = torch.Generator().manual_seed(2)
    old = torch.randn(4, 6, generator=g, dtype=f64) - 2
    logp = old + torch.randn(4, 6, generator=g, dtype=f64) * 0.6          # many ratios outside [0.8, 1.2]
    adv = torch.randn(4, 6, generator=g, dtype=f64)
    mask = torch.rand(4, 6, generator=g) < 0.7
    want = _clip_gradient_formula(logp, old, adv, mask, 0.2)
    for impl in _impls("ppo_clip_loss", book):
        x = logp.clone().requires_grad_()
        (grad,) = torch.autograd.grad(impl(x, old, adv, mask), x)
        torch.testing.assert_close(grad, want)
    r = torch.exp(logp - old)
    assert ((r > 1.2) & (adv > 0) & mask).any() and ((r < 0.8) & (adv < 0) & mask).any()   # both clipped regimes


def test_grpo_gradient_matches_the_formula(book):
    g = torch.Generator().manual_seed(3)
    old = torch.randn(4, 5, generator=g, dtype=f64) - 2
    logp = old + torch.randn(4, 5, generator=g, dtype=f64) * 0.6
    ref = logp + torch.randn(4, 5, generator=g, dtype=f64) * 0.5
    adv = torch.randn(4, generator=g, dtype=f64)
    mask = torch.arange(5)[None, :] < torch.tensor([[5], [2], [4], [1]])
    beta, eps = 0.3, 0.2
    r = torch.exp(logp - old)
    A = adv[:, None].expand(4, 5)
    surrogate = torch.where(r * A <= torch.clamp(r, 1 - eps, 1 + eps) * A, -r * A, torch.zeros_like(r))
    kl = beta * (1 - torch.exp(ref - logp))                                 # d k3 / d logp = 1 - e^(ref - logp)
    want = torch.where(mask, surrogate + kl, torch.zeros_like(r)) / mask.sum(-1, keepdim=True) / 4
    for impl in _impls("grpo_loss", book):
        x = logp.clone().requires_grad_()
        (grad,) = torch.autograd.grad(impl(x, old, ref, adv, mask, clip_eps=eps, beta=beta), x)
        torch.testing.assert_close(grad, want)


# =========================================================================== properties

def test_properties_hold_for_the_oracles():
    for name in NAMES:
        ex = get(name)
        for prop in ex.properties:
            assert prop.check(ex.oracle) is None, (name, prop.name)


def test_a_ratio_of_one_and_zero_advantages_give_zero_loss_and_catch_an_offset():
    assert P._ratio_one_zero_advantage(lambda lp, old, a, m, clip_eps=0.2: (lp - old).sum() - 1.0) is not None
    assert P._grpo_zero_when_nothing_moved(
        lambda lp, old, ref, a, m, clip_eps=0.2, beta=0.04: P._grpo_oracle(lp, old, ref, a, m) + 0.01) is not None


def test_the_clipping_property_catches_clip_only_and_no_clip():
    assert P._ppo_clipping_stops_gradient(P.ppo_clipped_term_only) is not None
    assert P._ppo_clipping_stops_gradient(
        lambda lp, old, a, m, clip_eps=0.2: -(torch.exp(lp - old) * a)[m].mean()) is not None
    assert P._ppo_clipping_stops_gradient(
        lambda lp, old, a, m, clip_eps=0.2: P._ppo_oracle(lp.detach(), old, a, m)) is not None
    assert P._grpo_clipping_stops_gradient(P.grpo_max) is not None


def test_group_mean_and_shift_properties_catch_wrong_normalisations():
    assert P._groups_have_mean_zero(P.adv_whole_batch) is not None
    assert P._shift_invariant(lambda r, G, eps=1e-4: r / r.reshape(-1, G).mean(1).repeat_interleave(G)) is not None


def test_kl_penalty_property_catches_a_kl_bonus():
    assert P._grpo_kl_term_is_a_penalty(P.grpo_kl_added) is not None


def test_dpo_properties_catch_beta_outside_and_a_swap():
    assert D._equal_policy_gives_log2(D.dpo_beta_outside) is not None
    assert D._chosen_up_loss_down(D.dpo_swapped) is not None


def test_sequence_logprobs_properties_catch_ignoring_the_mask_and_the_sign():
    assert D._mask_is_applied(D.seq_mask_ignored) is not None
    assert D._never_positive(D.seq_negative) is not None


def test_gae_properties_catch_a_constant_and_a_bias():
    assert P._gae_linear(lambda r, v, gamma=0.99, lam=0.95: (P._gae_oracle(r, v, gamma, lam)[0] + 1.0,) * 2) is not None
    assert P._gae_exact_values(P.gae_no_bootstrap) is None                  # V_T = 0 there: the property allows it
    assert P._gae_exact_values(P.gae_delta_without_gamma) is None           # gamma = 1 there: the same
    assert P._gae_exact_values(P.gae_values_swapped) is not None            # delta = r + gamma V_t - V_t+1 != 0
    assert P._gae_exact_values(P.gae_returns_next_value) is not None


# =========================================================================== the cases cover the issue

@pytest.mark.parametrize("name", NAMES)
def test_cases_cover_dtypes_layouts_and_a_batch_of_one(name):
    ex = get(name)
    notes = " ".join(c.note for c in ex.all_cases())
    dtypes = set()
    noncontiguous = False
    for c in ex.all_cases():
        args, kwargs = c.make()
        tensors = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
        dtypes |= {t.dtype for t in tensors if t.is_floating_point()}
        noncontiguous |= any(not t.is_contiguous() for t in tensors)
    assert {torch.float32, torch.float64} <= dtypes
    assert noncontiguous, f"{name}: no non-contiguous input"
    assert len(ex.mistakes) >= 5
    if name in ("sequence_logprobs", "dpo_loss", "ppo_clip_loss", "grpo_loss"):
        assert any(c.grad for c in ex.all_cases()), f"{name}: no gradient case"
    assert "batch of one" in notes or "one prompt" in notes or "one trajectory" in notes


def test_the_issue_s_edge_cases_are_there():
    seq = " ".join(c.note for c in get("sequence_logprobs").all_cases())
    for needed in ("prompt", "right padding", "left padding", "position 0", "thousands"):
        assert needed in seq, needed
    dpo = " ".join(c.note for c in get("dpo_loss").all_cases())
    for needed in ("hundreds", "equals the reference", "positionally"):
        assert needed in dpo, needed
    gae = " ".join(c.note for c in get("gae").all_cases())
    for needed in ("lam = 0", "gamma = lam = 1", "RLHF", "T = 1"):
        assert needed in gae, needed
    grpo = " ".join(c.note for c in get("grpo_loss").all_cases())
    for needed in ("1, 12 and 5 tokens", "N * G = T", "beta=0"):
        assert needed in grpo, needed
    adv = " ".join(c.note for c in get("grpo_advantages").all_cases())
    assert "their advantages are 0" in adv


def test_the_grad_cases_differentiate_the_policy_only():
    """Reference and old log-probabilities come by keyword: a reader who detaches them is not failed."""
    def detaches_ref(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
        return D._dpo_oracle(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps.detach(),
                             ref_rejected_logps.detach(), beta)

    def detaches_old(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        return P._ppo_oracle(logprobs, old_logprobs.detach(), advantages.detach(), mask, clip_eps)

    assert run("dpo_loss", detaches_ref).passed
    assert run("ppo_clip_loss", detaches_old).passed


@pytest.mark.parametrize("name", NAMES)
def test_forbidden_names_resolve(name):
    for fname in get(name).forbidden:
        assert callable(resolve(fname)), fname


# =========================================================================== wrong code as candidates write it

def seq_float32(logits, labels, loss_mask):
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels[:, 1:, None]).squeeze(-1)
    return (logp * loss_mask[:, 1:]).sum(-1)


def seq_batch_mean(logits, labels, loss_mask):
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:, None]).squeeze(-1)
    return (logp * loss_mask[:, 1:]).sum(-1).mean()


def seq_probability(logits, labels, loss_mask):
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:, None]).squeeze(-1)
    return (logp * loss_mask[:, 1:]).sum(-1).exp()


def seq_mask_on_logits(logits, labels, loss_mask):
    x = logits[:, :-1] * loss_mask[:, :-1, None]                           # zeroes logits instead of terms
    logp = torch.log_softmax(x, -1).gather(-1, labels[:, 1:, None]).squeeze(-1)
    return logp.sum(-1)


def seq_response_start_hardcoded(logits, labels, loss_mask):
    start = int(loss_mask[0].nonzero()[0])                                 # the first row's prompt length for all
    logp = torch.log_softmax(logits[:, start - 1:-1], -1).gather(-1, labels[:, start:, None]).squeeze(-1)
    return logp.sum(-1)


def dpo_hinge(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    c, r = policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps
    return torch.relu(1 - beta * (c - r)).mean(), (beta * c).detach(), (beta * r).detach()


def dpo_ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    c, r = policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps
    return ((c - r - 1 / (2 * beta)) ** 2).mean(), (beta * c).detach(), (beta * r).detach()


def dpo_rewards_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    c, r = policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps
    return -F.logsigmoid(beta * (c - r)).mean(), (beta * r).detach(), (beta * c).detach()


def dpo_label_smoothing(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    c, r = policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps
    z = beta * (c - r)
    return (-0.9 * F.logsigmoid(z) - 0.1 * F.logsigmoid(-z)).mean(), (beta * c).detach(), (beta * r).detach()


def dpo_mean_before_sigmoid(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                            beta=0.1):
    c, r = policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps
    return -F.logsigmoid(beta * (c - r).mean()), (beta * c).detach(), (beta * r).detach()


def gae_normalised(rewards, values, gamma=0.99, lam=0.95):
    adv, ret = P._gae_oracle(rewards, values, gamma, lam)
    return (adv - adv.mean()) / (adv.std() + 1e-8), ret                    # PPO code often whitens here


def gae_time_on_first_axis(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * values[t + 1] - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, adv + values[:T]


def gae_extra_discount(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        delta = rewards[..., t] + gamma * values[..., t + 1] - values[..., t]
        last = gamma * lam * (delta + last)                                # discounts delta_t itself too
        adv[..., t] = last
    return adv, adv + values[..., :T]


def gae_integer_lambda(rewards, values, gamma=0.99, lam=0.95):
    return P._gae_oracle(rewards, values, gamma, round(lam))                # lam read as an int


def gae_float_returns(rewards, values, gamma=0.99, lam=0.95):
    adv, ret = P._gae_oracle(rewards, values, gamma, lam)
    return adv, ret.tolist()


def ppo_whitened_advantages(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    a = (advantages - advantages[mask].mean()) / (advantages[mask].std() + 1e-8)
    return P._ppo_oracle(logprobs, old_logprobs, a, mask, clip_eps)


def ppo_clip_log_ratio(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    clipped = torch.exp(torch.clamp(log_ratio, -clip_eps, clip_eps))      # exp(+-eps) is not 1 +- eps
    loss = -torch.min(ratio * advantages, clipped * advantages)
    return (loss * mask).sum() / mask.sum()


def ppo_masked_sum(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    loss = -torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    return (loss * mask).sum()


def ppo_ratio_detached(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs).detach()
    loss = -torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    return (loss * mask).sum() / mask.sum()


def ppo_eps_hardcoded(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    return P._ppo_oracle(logprobs, old_logprobs, advantages, mask, 0.2)


def adv_eps_hardcoded(rewards, group_size, eps=1e-4):
    return P._grpo_adv_oracle(rewards, group_size, 1e-4)


def adv_minus_median(rewards, group_size, eps=1e-4):
    g = rewards.reshape(-1, group_size)
    return ((g - g.median(1, keepdim=True).values) / (g.std(1, keepdim=True) + eps)).reshape(-1)


def adv_float32(rewards, group_size, eps=1e-4):
    return P._grpo_adv_oracle(rewards.float(), group_size, eps)


def adv_sorted_within_groups(rewards, group_size, eps=1e-4):
    g = rewards.reshape(-1, group_size).sort(1).values
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).reshape(-1)


def adv_max_scaled(rewards, group_size, eps=1e-4):
    g = rewards.reshape(-1, group_size)
    centred = g - g.mean(1, keepdim=True)
    return (centred / (centred.abs().amax(1, keepdim=True) + eps)).reshape(-1)


def grpo_beta_ignored(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    return P._grpo_oracle(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps, 0.04)


def grpo_no_clip(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    ratio = torch.exp(logprobs - old_logprobs)
    d = ref_logprobs - logprobs
    per_token = -(ratio * advantages[:, None] - beta * (d.exp() - d - 1))
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


def grpo_k2(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = P._grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    per_token = -(surrogate - beta * 0.5 * (ref_logprobs - logprobs) ** 2)
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


def grpo_sum_over_tokens(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = P._grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    per_token = -(surrogate - beta * P._k3(logprobs, ref_logprobs))
    return (per_token * mask).sum(-1).mean()


def grpo_kl_detached(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = P._grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    per_token = -(surrogate - beta * P._k3(logprobs.detach(), ref_logprobs))
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


# (exercise, wrong implementation, the diagnoses that describe it: None means "no diagnosis")
WRONG = [
    ("sequence_logprobs", seq_float32, {None}),
    ("sequence_logprobs", seq_batch_mean, {None}),
    ("sequence_logprobs", seq_probability, {None}),
    ("sequence_logprobs", seq_mask_on_logits, {None}),
    ("sequence_logprobs", seq_response_start_hardcoded, {None}),
    ("dpo_loss", dpo_hinge, {None}),
    ("dpo_loss", dpo_ipo, {None}),
    ("dpo_loss", dpo_rewards_swapped, {None}),
    ("dpo_loss", dpo_label_smoothing, {None}),
    ("dpo_loss", dpo_mean_before_sigmoid, {None}),
    ("gae", gae_normalised, {None}),
    ("gae", gae_time_on_first_axis, {None}),
    ("gae", gae_extra_discount, {None}),
    ("gae", gae_integer_lambda, {None}),
    ("gae", gae_float_returns, {None}),
    ("ppo_clip_loss", ppo_whitened_advantages, {None}),
    ("ppo_clip_loss", ppo_clip_log_ratio, {None}),
    ("ppo_clip_loss", ppo_masked_sum, {None}),
    ("ppo_clip_loss", ppo_ratio_detached, {None}),
    ("ppo_clip_loss", ppo_eps_hardcoded, {None}),
    ("grpo_advantages", adv_eps_hardcoded, {None}),
    ("grpo_advantages", adv_minus_median, {None}),
    ("grpo_advantages", adv_float32, {None}),
    ("grpo_advantages", adv_sorted_within_groups, {None}),
    ("grpo_advantages", adv_max_scaled, {None}),
    ("grpo_loss", grpo_beta_ignored, {None}),
    ("grpo_loss", grpo_no_clip, {None}),
    ("grpo_loss", grpo_k2, {None}),
    ("grpo_loss", grpo_sum_over_tokens, {None}),
    ("grpo_loss", grpo_kl_detached, {None}),
]


@pytest.mark.parametrize("name,impl,allowed", WRONG, ids=[f"{n}: {f.__name__}" for n, f, _ in WRONG])
def test_wrong_code_is_rejected_without_a_wrong_diagnosis(name, impl, allowed):
    report = run(name, impl)
    assert not report.passed, f"a wrong {name} ({impl.__name__}) passes"
    assert report.status == "failed"
    assert report.failure.mistake in allowed, (
        f"{impl.__name__} was diagnosed as {report.failure.mistake!r}, expected one of {allowed}:\n{report}")
    assert str(report)


# =========================================================================== correct code in other styles

def seq_loops(logits, labels, loss_mask):
    B, T, _ = logits.shape
    rows = []
    for b in range(B):
        total = logits.new_zeros(())
        for t in range(1, T):
            if loss_mask[b, t]:
                total = total + torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
        rows.append(total)
    return torch.stack(rows)


def seq_logit_minus_logsumexp(logits, labels, loss_mask):
    picked = logits[:, :-1].gather(2, labels[:, 1:, None]).squeeze(2) - torch.logsumexp(logits[:, :-1], dim=2)
    return torch.where(loss_mask[:, 1:], picked, torch.zeros_like(picked)).sum(1)


def seq_one_hot_einsum(logits, labels, loss_mask):
    logp = F.log_softmax(logits, dim=-1)[:, :-1]
    onehot = F.one_hot(labels[:, 1:], logits.shape[-1]).to(logits.dtype)
    return torch.einsum("btv,btv,bt->b", logp, onehot, loss_mask[:, 1:].to(logits.dtype))


def seq_roll_labels(logits, labels, loss_mask):
    targets, keep = labels.roll(-1, dims=1), loss_mask.roll(-1, dims=1)    # position t now holds label t + 1
    keep[:, -1] = False
    logp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logp * keep).sum(-1)


def dpo_softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    return F.softplus(rejected - chosen).mean(), chosen.detach(), rejected.detach()


def dpo_logaddexp(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = ref_chosen_logps - ref_rejected_logps
    z = beta * (pi_logratios - ref_logratios)
    loss = torch.logaddexp(torch.zeros_like(z), -z).mean()
    with torch.no_grad():
        chosen, rejected = beta * (policy_chosen_logps - ref_chosen_logps), beta * (
            policy_rejected_logps - ref_rejected_logps)
    return loss, chosen, rejected


def gae_preallocated(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    adv = torch.empty_like(rewards)
    next_adv = torch.zeros_like(rewards[..., 0])
    for t in range(T - 1, -1, -1):
        delta = rewards[..., t] + gamma * values[..., t + 1] - values[..., t]
        next_adv = delta + gamma * lam * next_adv
        adv[..., t] = next_adv
    return adv, adv + values[..., :-1]


def gae_discount_matrix(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    delta = rewards + gamma * values[..., 1:] - values[..., :-1]
    idx = torch.arange(T)
    power = (idx[None, :] - idx[:, None]).to(rewards.dtype)
    weights = torch.where(power >= 0, torch.tensor(gamma * lam, dtype=rewards.dtype) ** power.clamp(min=0),
                          torch.zeros((), dtype=rewards.dtype))
    adv = torch.einsum("...s,ts->...t", delta, weights)
    return adv, adv + values[..., :T]


def gae_insert_front(rewards, values, gamma=0.99, lam=0.95):
    out, running = [], 0.0
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * values[..., t + 1] - values[..., t] + gamma * lam * running
        out.insert(0, running)
    adv = torch.stack(out, -1)
    return adv, adv + values[..., :-1]


def ppo_boolean_index(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    r, a = torch.exp(logprobs[mask] - old_logprobs[mask]), advantages[mask]
    return -torch.min(r * a, r.clamp(1 - clip_eps, 1 + clip_eps) * a).mean()


def ppo_case_analysis(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    r = torch.exp(logprobs - old_logprobs)
    objective = torch.where(advantages >= 0, torch.minimum(r, torch.full_like(r, 1 + clip_eps)) * advantages,
                            torch.maximum(r, torch.full_like(r, 1 - clip_eps)) * advantages)
    w = mask.to(r.dtype)
    return -(objective * w).sum() / w.sum()


def adv_loop_over_groups(rewards, group_size, eps=1e-4):
    pieces = []
    for start in range(0, rewards.shape[0], group_size):
        g = rewards[start:start + group_size]
        pieces.append((g - g.mean()) / (g.std() + eps))
    return torch.cat(pieces)


def adv_manual_std(rewards, group_size, eps=1e-4):
    g = rewards.unflatten(0, (-1, group_size))
    centred = g - g.mean(-1, keepdim=True)
    std = (centred.pow(2).sum(-1, keepdim=True) / (group_size - 1)).sqrt()
    return (centred / (std + eps)).flatten()


def grpo_loop_over_answers(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    losses = []
    for i in range(logprobs.shape[0]):
        m = mask[i]
        r = torch.exp(logprobs[i][m] - old_logprobs[i][m])
        a = advantages[i]
        d = ref_logprobs[i][m] - logprobs[i][m]
        tok = -(torch.min(r * a, torch.clamp(r, 1 - clip_eps, 1 + clip_eps) * a) - beta * (torch.exp(d) - d - 1))
        losses.append(tok.mean())
    return torch.stack(losses).mean()


def grpo_expm1(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    coef_1 = torch.exp(logprobs - old_logprobs)
    coef_2 = torch.clamp(coef_1, 1 - clip_eps, 1 + clip_eps)
    d = ref_logprobs - logprobs
    per_token_kl = torch.expm1(d) - d
    per_token_loss = -torch.min(coef_1 * advantages.unsqueeze(1), coef_2 * advantages.unsqueeze(1))
    per_token_loss = per_token_loss + beta * per_token_kl
    m = mask.float() if logprobs.dtype == torch.float32 else mask.double()
    return ((per_token_loss * m).sum(dim=1) / m.sum(dim=1)).mean()


VALID = [
    ("sequence_logprobs", seq_loops), ("sequence_logprobs", seq_logit_minus_logsumexp),
    ("sequence_logprobs", seq_one_hot_einsum), ("sequence_logprobs", seq_roll_labels),
    ("dpo_loss", dpo_softplus), ("dpo_loss", dpo_logaddexp),
    ("gae", gae_preallocated), ("gae", gae_discount_matrix), ("gae", gae_insert_front),
    ("ppo_clip_loss", ppo_boolean_index), ("ppo_clip_loss", ppo_case_analysis),
    ("grpo_advantages", adv_loop_over_groups), ("grpo_advantages", adv_manual_std),
    ("grpo_loss", grpo_loop_over_answers), ("grpo_loss", grpo_expm1),
]


@pytest.mark.parametrize("name,impl", VALID, ids=[f"{n}: {f.__name__}" for n, f in VALID])
def test_correct_code_in_another_style_passes(name, impl):
    report = run(name, impl)
    assert report.passed, f"a correct {name} ({impl.__name__}) is rejected:\n{report}"


# =========================================================================== bad input

def _raises(*args, **kwargs):
    raise ValueError("not today")


def _numpy_dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    loss, c, r = D._dpo_oracle(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return loss.detach().numpy(), c, r


def _per_pair_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    c, r = policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps
    return -F.logsigmoid(beta * (c - r)), (beta * c).detach(), (beta * r).detach()    # TRL's losses, not the mean


def _nan_seq(logits, labels, loss_mask):
    return torch.full(labels.shape[:1], float("nan"), dtype=logits.dtype)


def _gae_in_place(rewards, values, gamma=0.99, lam=0.95):
    rewards += gamma * values[..., 1:] - values[..., :-1]                  # the TD errors, written into rewards
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * lam * running
        adv[..., t] = running
    return adv, adv + values[..., :-1]


def _seq_cross_entropy(logits, labels, loss_mask):
    nll = F.nll_loss(torch.log_softmax(logits[:, :-1], -1).transpose(1, 2), labels[:, 1:], reduction="none")
    return -(nll * loss_mask[:, 1:]).sum(-1)


def _adv_float32_output(rewards, group_size, eps=1e-4):
    return P._grpo_adv_oracle(rewards, group_size, eps).float()


def _endless(*args, **kwargs):
    while True:
        pass


BAD = [
    ("grpo_loss", _raises, "exception"),
    ("dpo_loss", _numpy_dpo, "returned-numpy"),
    ("dpo_loss", _per_pair_loss, "wrong-shape"),
    ("sequence_logprobs", _nan_seq, "not-finite"),
    ("gae", _gae_in_place, "mutated-input"),
    ("sequence_logprobs", _seq_cross_entropy, "forbidden-call"),
    ("grpo_advantages", _adv_float32_output, "wrong-value"),
    ("ppo_clip_loss", 0.2, "wrong-type"),
]


@pytest.mark.parametrize("name,impl,kind", BAD, ids=[f"{n}: {k}" for n, _, k in BAD])
def test_bad_input_gives_a_clear_report_in_both_languages(name, impl, kind):
    report = run(name, impl)
    assert not report.passed and report.status == "failed"
    if kind == "wrong-value":                                              # float32 from float64: case 1 is float32
        assert report.kind in ("wrong-dtype", "wrong-value"), str(report)
    else:
        assert report.kind == kind, str(report)
    text = str(report)
    assert text and "Traceback" not in text
    with speaking("zh"):
        zh = str(report)
    body = "\n".join(zh.split("\n")[2:])                                  # all but the header and the call
    assert not english_left(body), f"English left in the Chinese report: {english_left(body)}\n{zh}"


def test_float32_output_for_float64_input_is_a_dtype_error():
    report = run("grpo_advantages", _adv_float32_output)
    ex = get("grpo_advantages")
    args, _ = ex.all_cases()[report.failure.case].make()
    assert args[0].dtype == torch.float64 and report.kind == "wrong-dtype", str(report)


def test_an_endless_loop_is_stopped(monkeypatch):
    ex = get("gae")
    monkeypatch.setattr(ex, "timeout", 0.5)
    report, seconds = timed(ex, _endless)
    assert report.kind == "timeout" and seconds < 5
    assert "endless loop" in str(report)


def test_numpy_arrays_as_input_are_not_what_the_cases_give():
    """The cases give tensors; a reader's numpy round trip comes back as numpy and is named."""
    def numpy_gae(rewards, values, gamma=0.99, lam=0.95):
        adv, ret = P._gae_oracle(torch.from_numpy(np.asarray(rewards)), torch.from_numpy(np.asarray(values)),
                                 gamma, lam)
        return adv.numpy(), ret.numpy()
    report = run("gae", numpy_gae)
    assert report.kind == "returned-numpy"


# =========================================================================== speed

@pytest.mark.parametrize("name", NAMES)
def test_a_check_of_the_book_solution_takes_under_a_second(name, book):
    ex = get(name)
    impl = book(ex.chapter)[name]
    ex.all_cases()
    for i in range(len(ex.all_cases())):
        ex.expected(i)                                                     # the oracle's outcomes are cached
    report, seconds = timed(ex, impl)
    assert report.passed and seconds < 1.0, (seconds, str(report))
