"""Part 10, alignment: a response's log-probability and the DPO loss (chapter alignment/dpo).

Two function exercises. `sequence_logprobs` is graded against F.cross_entropy on the shifted logits (the
label of position t is predicted by the logits of position t - 1) with the loss mask applied to the labels'
positions; `dpo_loss` against F.binary_cross_entropy_with_logits of the scaled margin with a target of one,
which is -log sigmoid (TRL's "sigmoid" loss), and the implicit rewards beta * (policy - reference), detached.
tests/test_alignment.py checks both oracles against loops written from the definitions and against numbers
worked out by hand.

The gradient cases of dpo_loss pass the reference log-probabilities by keyword: only the policy's
log-probabilities require grad (the reference model runs without a graph), so a reader who detaches the
reference is not failed, while rewards that still carry the graph change the gradient and are named.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...registry import register

CE_BUILTINS = ("F.cross_entropy", "F.nll_loss", "torch._C._nn.cross_entropy_loss", "torch._C._nn.nll_loss",
               "torch._C._nn.nll_loss_nd", "torch._C._nn.nll_loss2d")


# =========================================================================== sequence_logprobs

def _labels(B, T, V, seed, strided=False):
    g = torch.Generator().manual_seed(seed)
    if strided:
        return torch.randint(0, V, (B, 2 * T), generator=g)[:, ::2]        # a non-contiguous view
    return torch.randint(0, V, (B, T), generator=g)


def _loss_mask(B, T, seed, layout):
    """(B, T) bool: which labels count. "response": a prompt of 1..T-1 tokens, then the response; "right-pad":
    prompt, response, then padding; "left-pad": padding, prompt, response; "all"; "first-only": position 0 alone
    (which no logits predict: the sum is empty)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T)
    if layout == "all":
        return torch.ones(B, T, dtype=torch.bool)
    if layout == "first-only":
        return t[None, :].expand(B, T) == 0
    prompt = torch.randint(1, T - 1, (B, 1), generator=g)                 # 1 .. T-2 prompt tokens
    if layout == "response":
        return t[None, :] >= prompt
    end = prompt + 1 + torch.randint(0, T, (B, 1), generator=g) % (T - prompt)   # at least one response token
    if layout == "right-pad":
        return (t[None, :] >= prompt) & (t[None, :] < end)
    pad = T - end                                                          # left padding moves everything right
    return (t[None, :] >= prompt + pad) & (t[None, :] < end + pad)


def _lm_batch(B, T, V, seed=0, dtype=f32, scale=2.0, layout="response", logits_layout=None, strided_labels=False,
              keyword=False):
    if logits_layout == "transposed":
        logits = randn(B, V, T, seed=seed, dtype=dtype, scale=scale).transpose(1, 2)    # (B, T, V), non-contiguous
    else:
        logits = randn(B, T, V, seed=seed, dtype=dtype, scale=scale)
    labels = _labels(B, T, V, seed + 100, strided_labels)
    mask = _loss_mask(B, T, seed + 200, layout)
    return call(logits, labels, loss_mask=mask) if keyword else call(logits, labels, mask)


def _seq_logprobs_oracle(logits, labels, loss_mask):
    """F.cross_entropy of the shifted logits: the label at t is scored by the logits at t - 1."""
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")   # (B, T-1)
    return -torch.where(loss_mask[:, 1:], nll, torch.zeros_like(nll)).sum(-1)


# log_softmax then gather and cross_entropy round differently: measured 3.1e-5 absolute on sums of about -1.1e4
# ("logits in the thousands"), a relative 3e-9; float32's default atol 1e-6 would fail a correct gather there.
LARGE = {f32: (1e-5, 1e-3)}


def _seq_cases():
    return [
        case(_lm_batch, 2, 6, 11, note="a prompt then the response (the prompt's labels masked)"),
        case(_lm_batch, 3, 8, 7, seed=1, dtype=f64, note="float64"),
        case(_lm_batch, 1, 5, 9, seed=2, note="batch of one"),
        case(_lm_batch, 4, 7, 6, seed=3, layout="right-pad", note="prompt, response, then right padding"),
        case(_lm_batch, 3, 9, 8, seed=4, layout="left-pad", note="left padding, prompt, then response"),
        case(_lm_batch, 2, 6, 5, seed=5, layout="all", note="every position counts: loss_mask[:, 0] has no logits"),
        case(_lm_batch, 3, 4, 6, seed=6, layout="first-only",
             note="only position 0 is marked, and no logits predict it: the sums are 0"),
        case(_lm_batch, 2, 3, 4, seed=7, layout="response", note="T = 3"),
        case(_lm_batch, 2, 6, 50, seed=8, dtype=f64, layout="right-pad", note="a vocabulary of 50"),
        case(_lm_batch, 3, 7, 9, seed=9, logits_layout="transposed", note="non-contiguous (transposed) logits"),
        case(_lm_batch, 2, 6, 8, seed=10, strided_labels=True, layout="right-pad",
             note="non-contiguous labels (every other column)"),
        case(_lm_batch, 2, 6, 7, seed=11, keyword=True, note="loss_mask passed by keyword"),
        case(_lm_batch, 3, 6, 12, seed=12, scale=1000.0, layout="right-pad",
             note="logits in the thousands (probabilities below float32's range)", tolerance=LARGE),
        case(_lm_batch, 2, 5, 6, seed=13, dtype=f64, grad=True, note="gradient"),
        case(_lm_batch, 3, 7, 5, seed=14, dtype=f64, layout="left-pad", grad=True,
             note="gradient with left padding"),
    ]


def _mask_is_applied(call):
    logits, labels = randn(2, 6, 5, seed=60, dtype=f64), _labels(2, 6, 5, 61)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 3:] = True
    changed = logits.clone()
    changed[:, 3:] += 7.0 * randn(2, 3, 5, seed=62, dtype=f64)      # logits at 3..5 only score labels at 4..6
    changed[:, :2] += 7.0 * randn(2, 2, 5, seed=63, dtype=f64)      # logits at 0, 1 score labels 1, 2: masked
    a, b = call(logits, labels, mask), call(changed, labels, mask)
    c = call(logits[:, :4].clone(), labels[:, :4].clone(), mask[:, :4].clone())
    d = call(changed[:, :4].clone(), labels[:, :4].clone(), mask[:, :4].clone())
    if not torch.allclose(c, d):
        return msg("changing the logits that only predict masked labels changed the result from {a} to {b}",
                   a=[round(v, 4) for v in c.tolist()], b=[round(v, 4) for v in d.tolist()])
    if torch.allclose(a, b):
        return msg("changing the logits that predict the labels at positions 4 and 5 left the result unchanged "
                   "({a})", a=[round(v, 4) for v in a.tolist()])
    return None


def _never_positive(call):
    for seed in range(3):
        out = call(randn(3, 7, 9, seed=70 + seed, dtype=f64), _labels(3, 7, 9, 80 + seed),
                   torch.ones(3, 7, dtype=torch.bool))
        if (out > 1e-12).any():
            return msg("a log-probability is never positive, but the result holds {v:.6g}", v=float(out.max()))
    return None


def _logp_gather(logits, labels):
    """(B, T-1): log-probabilities of labels[:, 1:] under logits[:, :-1], stable (a helper of the mistakes)."""
    x = logits[:, :-1]
    logp = x - x.amax(-1, keepdim=True) - torch.log(torch.exp(x - x.amax(-1, keepdim=True)).sum(-1, keepdim=True))
    return logp.gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)


def seq_no_shift(logits, labels, loss_mask):
    logps = torch.log_softmax(logits, dim=-1)
    per_token = torch.gather(logps, 2, labels.unsqueeze(2)).squeeze(2)
    return (per_token * loss_mask).sum(-1)


def seq_mask_not_shifted(logits, labels, loss_mask):
    logps = torch.log_softmax(logits[:, :-1, :], dim=-1)
    per_token = torch.gather(logps, 2, labels[:, 1:].unsqueeze(2)).squeeze(2)
    return (per_token * loss_mask[:, :-1]).sum(-1)


def seq_shift_backwards(logits, labels, loss_mask):
    logps = torch.log_softmax(logits[:, 1:, :], dim=-1)
    per_token = torch.gather(logps, 2, labels[:, :-1].unsqueeze(2)).squeeze(2)
    return (per_token * loss_mask[:, :-1]).sum(-1)


def seq_mean(logits, labels, loss_mask):
    logps = torch.log_softmax(logits[:, :-1, :], dim=-1)
    per_token = torch.gather(logps, 2, labels[:, 1:].unsqueeze(2)).squeeze(2)
    mask = loss_mask[:, 1:]
    return (per_token * mask).sum(-1) / mask.sum(-1)


def seq_mask_ignored(logits, labels, loss_mask):
    logps = torch.log_softmax(logits[:, :-1, :], dim=-1)
    return torch.gather(logps, 2, labels[:, 1:].unsqueeze(2)).squeeze(2).sum(-1)


def seq_log_of_softmax(logits, labels, loss_mask):
    probs = torch.softmax(logits[:, :-1, :], dim=-1)
    per_token = torch.log(torch.gather(probs, 2, labels[:, 1:].unsqueeze(2)).squeeze(2))
    return (per_token * loss_mask[:, 1:]).sum(-1)


def seq_softmax_over_time(logits, labels, loss_mask):
    logps = torch.log_softmax(logits[:, :-1, :], dim=1)
    per_token = torch.gather(logps, 2, labels[:, 1:].unsqueeze(2)).squeeze(2)
    return (per_token * loss_mask[:, 1:]).sum(-1)


def seq_negative(logits, labels, loss_mask):
    logps = torch.log_softmax(logits[:, :-1, :], dim=-1)
    per_token = torch.gather(logps, 2, labels[:, 1:].unsqueeze(2)).squeeze(2)
    return -(per_token * loss_mask[:, 1:]).sum(-1)


def seq_builtin(logits, labels, loss_mask):
    B, T, V = logits.shape
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction="none")
    return -(nll.view(B, T - 1) * loss_mask[:, 1:]).sum(-1)


register(Exercise(
    name="sequence_logprobs",
    chapter="alignment/dpo",
    signature="sequence_logprobs(logits, labels, loss_mask)",
    oracle=_seq_logprobs_oracle,
    cases=_seq_cases,
    forbidden=CE_BUILTINS,
    properties=[
        Property("only the logits that predict a marked label matter", _mask_is_applied),
        Property("a sum of log-probabilities is never positive", _never_positive),
    ],
    hints=("the logits at position t - 1 predict the label at position t: shift both by one, and let the mask "
           "of the labels' positions choose which terms to sum   (eq. dpo-seq-logp)",
           "take log_softmax of logits[:, :-1] over the vocabulary (dim=-1), pick each label's entry with gather "
           "along dim=-1, and keep the entries where loss_mask[:, 1:] is True",
           "log p(y|x) = sum over t >= 1 with loss_mask[:, t] of log_softmax(logits[:, t-1])[labels[:, t]], one "
           "sum per row: shape (B,)   (eq. dpo-seq-logp)"),
    mistakes=[
        Mistake("no shift", seq_no_shift,
                "the logits at position t predict the token at t + 1, not the token at t: pair logits[:, :-1] with "
                "labels[:, 1:] (and the mask loss_mask[:, 1:])."),
        Mistake("mask not shifted", seq_mask_not_shifted,
                "you shifted the logits and the labels but not the mask: after the shift the label at position t "
                "is labels[:, t], so its mask is loss_mask[:, 1:], not loss_mask[:, :-1]."),
        Mistake("shifted the wrong way", seq_shift_backwards,
                "you shifted the wrong way: logits[:, 1:] with labels[:, :-1] asks each position to predict the "
                "token before it. Pair logits[:, :-1] with labels[:, 1:]."),
        Mistake("mean instead of sum", seq_mean,
                "you averaged over the response's tokens: a sequence's log-probability is the sum of its tokens' "
                "log-probabilities (the average is SimPO's length-normalised reward, a different quantity)."),
        Mistake("mask ignored", seq_mask_ignored,
                "you summed over every position, prompt and padding included: keep only the labels where "
                "loss_mask[:, 1:] is True."),
        Mistake("log of softmax", seq_log_of_softmax,
                "log(softmax(x)) underflows: a probability below float32's smallest number rounds to 0 and "
                "log(0) = -inf. Use log_softmax (x - logsumexp(x))."),
        Mistake("softmax over the time axis", seq_softmax_over_time,
                "your log_softmax normalises over the time axis (dim=1): normalise over the vocabulary, dim=-1."),
        Mistake("negative log-likelihood", seq_negative,
                "the sign is flipped: you returned the negative log-likelihood (a loss, never negative); "
                "return the log-probability itself, a sum of log_softmax entries (never positive)."),
        Mistake("calls cross_entropy", seq_builtin,
                "this exercise asks you to pick the log-probabilities yourself: F.cross_entropy and F.nll_loss "
                "are off limits; use log_softmax and gather."),
    ],
    bench=(lambda: _lm_batch(8, 512, 8192, seed=0), seq_builtin),        # F.cross_entropy on the flattened shift
))


# =========================================================================== dpo_loss

def _pairs(B, seed=0, dtype=f32, spread=3.0, beta=None, positional=False, same=False, grad_keywords=False):
    """Summed log-probabilities of B preference pairs: the reference's around -40, the policy's moved by `spread`."""
    ref_chosen = randn(B, seed=seed, dtype=dtype, scale=10.0, shift=-40.0)
    ref_rejected = randn(B, seed=seed + 1, dtype=dtype, scale=10.0, shift=-40.0)
    if same:
        chosen, rejected = ref_chosen.clone(), ref_rejected.clone()
    else:
        chosen = ref_chosen + randn(B, seed=seed + 2, dtype=dtype, scale=spread)
        rejected = ref_rejected + randn(B, seed=seed + 3, dtype=dtype, scale=spread)
    kw = {} if beta is None or positional else {"beta": beta}
    if grad_keywords:                       # only the policy's log-probabilities require grad
        return call(chosen, rejected, ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected, **kw)
    if positional and beta is not None:
        return call(chosen, rejected, ref_chosen, ref_rejected, beta)
    return call(chosen, rejected, ref_chosen, ref_rejected, **kw)


def _strided_pairs(B, seed=0):
    chosen, rejected, ref_c, ref_r = (randn(2 * B, seed=seed + k, scale=8.0, shift=-30.0)[::2] for k in range(4))
    return call(chosen, rejected, ref_c, ref_r, beta=0.5)


def _dpo_oracle(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    """-log sigmoid(beta * margin), written as the binary cross-entropy of the margin with target 1."""
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    margin = beta * (chosen - rejected)
    loss = F.binary_cross_entropy_with_logits(margin, torch.ones_like(margin))
    return loss, (beta * chosen).detach(), (beta * rejected).detach()


def _dpo_cases():
    return [
        case(_pairs, 4, note="4 pairs, default beta 0.1"),
        case(_pairs, 8, seed=1, dtype=f64, beta=0.5, note="beta=0.5, float64"),
        case(_pairs, 1, seed=2, beta=0.2, note="batch of one"),
        case(_pairs, 5, seed=3, beta=0.3, positional=True, note="beta passed positionally"),
        case(_pairs, 6, seed=4, beta=0.25, same=True, note="the policy equals the reference: loss log 2, rewards 0"),
        case(_pairs, 6, seed=5, spread=150.0, beta=1.0,
             note="margins in the hundreds, beta=1 (sigmoid rounds to 0 or 1 in float32)"),
        case(_pairs, 4, seed=6, dtype=f64, spread=400.0, beta=2.0, note="margins in the thousands, float64"),
        case(_pairs, 5, seed=7, beta=0.01, note="a small beta, 0.01"),
        case(_strided_pairs, 6, seed=8, note="non-contiguous inputs (every other element)"),
        case(_pairs, 5, seed=9, dtype=f64, grad_keywords=True, grad=True,
             note="gradient with respect to the policy's log-probabilities"),
        case(_pairs, 4, seed=10, dtype=f64, spread=30.0, beta=0.5, grad_keywords=True, grad=True,
             note="gradient, large margins, beta=0.5"),
    ]


def _equal_policy_gives_log2(call):
    ref_c, ref_r = randn(5, seed=90, dtype=f64, shift=-20.0), randn(5, seed=91, dtype=f64, shift=-25.0)
    loss, chosen, rejected = call(ref_c.clone(), ref_r.clone(), ref_c, ref_r, beta=0.3)
    if abs(float(loss) - math.log(2)) > 1e-9 or chosen.abs().max() > 1e-12 or rejected.abs().max() > 1e-12:
        return msg("with the policy equal to the reference the loss should be log 2 = 0.693147 and both rewards 0; "
                   "got loss {loss:.6g}", loss=float(loss))
    return None


def _chosen_up_loss_down(call):
    ref_c, ref_r = randn(4, seed=92, dtype=f64, shift=-20.0), randn(4, seed=93, dtype=f64, shift=-20.0)
    pol_c, pol_r = ref_c + randn(4, seed=94, dtype=f64), ref_r + randn(4, seed=95, dtype=f64)
    low, _, _ = call(pol_c, pol_r, ref_c, ref_r)
    high, _, _ = call(pol_c + 1.0, pol_r, ref_c, ref_r)
    if not float(high) < float(low):
        return msg("raising the chosen responses' log-probabilities should lower the loss; it went from {a:.6g} "
                   "to {b:.6g}", a=float(low), b=float(high))
    return None


def _rewards(chosen, rejected, ref_chosen, ref_rejected, beta):
    return (beta * (chosen - ref_chosen)).detach(), (beta * (rejected - ref_rejected)).detach()


def dpo_rewards_attached(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                         beta=0.1):
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards, rejected_rewards


def dpo_no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    logits = policy_chosen_logps - policy_rejected_logps
    loss = -F.logsigmoid(beta * logits).mean()
    return (loss, *_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta))


def dpo_log_of_sigmoid(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    loss = -torch.log(torch.sigmoid(beta * logits)).mean()
    return (loss, *_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta))


def dpo_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    logits = (policy_rejected_logps - ref_rejected_logps) - (policy_chosen_logps - ref_chosen_logps)
    loss = -F.logsigmoid(beta * logits).mean()
    return (loss, *_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta))


def dpo_beta_outside(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    loss = -beta * F.logsigmoid(logits).mean()
    return (loss, *_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta))


def dpo_sum(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(beta * logits).sum()
    return (loss, *_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta))


def dpo_rewards_without_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                             beta=0.1):
    chosen_rewards = (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = (policy_rejected_logps - ref_rejected_logps).detach()
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(beta * logits).mean()
    return loss, chosen_rewards, rejected_rewards


def dpo_mean_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(beta * logits).mean()
    return loss, chosen_rewards.mean(), rejected_rewards.mean()


register(Exercise(
    name="dpo_loss",
    chapter="alignment/dpo",
    signature="dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1)",
    oracle=_dpo_oracle,
    cases=_dpo_cases,
    properties=[
        Property("a policy equal to the reference gives loss log 2 and zero rewards", _equal_policy_gives_log2),
        Property("raising the chosen log-probabilities lowers the loss", _chosen_up_loss_down),
    ],
    hints=("the implicit reward of a response is beta times how much more likely the policy makes it than the "
           "reference; the loss is the logistic loss of the chosen reward minus the rejected one   (eqs. "
           "dpo-reward, dpo-loss)",
           "write -log(sigmoid(z)) as -F.logsigmoid(z): the composed form is -inf once sigmoid rounds to 0. The "
           "rewards are reported, not trained: .detach() them",
           "loss = mean(-logsigmoid(beta * ((pc - rc) - (pr - rr)))); chosen_rewards = beta * (pc - rc) and "
           "rejected_rewards = beta * (pr - rr), one per pair, detached   (eq. dpo-loss)"),
    mistakes=[
        Mistake("rewards not detached", dpo_rewards_attached,
                "the rewards you return still carry the autograd graph: they are for logging, so detach them "
                "(beta * (policy - ref)).detach(); anything that sums them into a loss would train on them."),
        Mistake("no reference model", dpo_no_reference,
                "the reference model is missing: the margin is (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - "
                "log ref(y_l)), not log pi(y_w) - log pi(y_l)."),
        Mistake("log of sigmoid", dpo_log_of_sigmoid,
                "log(sigmoid(z)) is -inf once sigmoid(z) rounds to 0 (z below about -88.7 in float32, where exp(-z) "
                "overflows): use F.logsigmoid(z), which stays finite."),
        Mistake("chosen and rejected swapped", dpo_swapped,
                "the sign of the margin is flipped: this loss prefers the rejected response. The margin is the "
                "chosen reward minus the rejected reward."),
        Mistake("beta outside the sigmoid", dpo_beta_outside,
                "beta multiplies the margin inside the sigmoid, -logsigmoid(beta * margin), not the loss: with "
                "beta outside, the loss is a different function of the margin (and 0.1 * log 2 at equality)."),
        Mistake("sum instead of mean", dpo_sum,
                "you summed the per-pair losses: the loss is their mean over the batch."),
        Mistake("rewards without beta", dpo_rewards_without_beta,
                "the implicit rewards are beta * (log pi - log ref): you returned the log-ratios without beta."),
        Mistake("batch-mean rewards", dpo_mean_rewards,
                "return one reward per pair, shape (B,): you returned their batch means (what a trainer logs)."),
    ],
))
