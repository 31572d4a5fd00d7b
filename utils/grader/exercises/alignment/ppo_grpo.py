"""Part 10, alignment: GAE, PPO's clipped loss, GRPO's group advantages and loss (chapter alignment/ppo_grpo).

Four function exercises, graded against specifications written here: GAE as the definition's double sum (a
matrix of discounts (gamma * lam)^(s - t), in float64), the clipped surrogate with torch.minimum and a masked
mean, the group statistics with torch.std_mean, and DeepSeekMath's GRPO objective with the k3 estimator of the
KL divergence. tests/test_alignment.py checks them against loops and against numbers worked out by hand, and
their gradients against the closed-form derivatives.

The gradient cases pass every argument but the current log-probabilities by keyword, so only those require
grad: old and reference log-probabilities come from runs without a graph, and a reader who detaches them is
right.
"""

from __future__ import annotations

import warnings

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...registry import register

# =========================================================================== gae

def _traj(*shape, seed=0, dtype=f32, gamma=None, lam=None, positional=False, sparse=False, layout=None):
    """rewards (*batch, T) and values (*batch, T + 1). `sparse`: RLHF's shape of reward, a small penalty at every
    token and the score at the last one, with the value after the last token 0 (the episode ends)."""
    *batch, T = shape
    if layout == "transposed":
        rewards = randn(T, *batch, seed=seed, dtype=dtype).movedim(0, -1)
        values = randn(T + 1, *batch, seed=seed + 1, dtype=dtype).movedim(0, -1)
    else:
        rewards = randn(*shape, seed=seed, dtype=dtype)
        values = randn(*batch, T + 1, seed=seed + 1, dtype=dtype)
    if sparse:
        rewards = -0.05 * rewards.abs()
        rewards[..., -1] = randn(*batch, seed=seed + 2, dtype=dtype, scale=2.0)
        values[..., -1] = 0.0
    if positional:
        return call(rewards, values, gamma, lam)
    kw = {k: v for k, v in (("gamma", gamma), ("lam", lam)) if v is not None}
    return call(rewards, values, **kw)


def _gae_oracle(rewards, values, gamma=0.99, lam=0.95):
    """The definition: A_t = sum_{s >= t} (gamma lam)^(s - t) delta_s, as a (T, T) matrix of discounts, float64."""
    T = rewards.shape[-1]
    r, v = rewards.double(), values.double()
    delta = r + gamma * v[..., 1:] - v[..., :-1]                              # (..., T)
    steps = torch.arange(T, dtype=torch.float64)
    power = steps[None, :] - steps[:, None]                                   # (T, T): s - t
    discount = torch.where(power >= 0, torch.pow(torch.tensor(gamma * lam, dtype=torch.float64),
                                                 power.clamp(min=0)), torch.zeros((), dtype=torch.float64))
    advantages = delta @ discount.T                                           # A_t = sum_s discount[t, s] delta_s
    return advantages.to(rewards.dtype), (advantages + v[..., :-1]).to(rewards.dtype)


# A float32 loop accumulates T roundings that the float64 specification does not make: measured 3.8e-6 absolute on
# values of order 10 over T = 64.
LONG = {f32: (1e-5, 1e-5)}


def _gae_cases():
    return [
        case(_traj, 6, note="one trajectory of 6 steps, default gamma and lam"),
        case(_traj, 3, 8, seed=1, gamma=0.9, lam=0.8, note="3 trajectories, gamma=0.9, lam=0.8"),
        case(_traj, 2, 3, 5, seed=2, dtype=f64, gamma=0.95, lam=0.9, note="3-D, float64"),
        case(_traj, 4, 1, seed=3, note="T = 1"),
        case(_traj, 2, 6, seed=4, gamma=1.0, lam=1.0, note="gamma = lam = 1: the Monte-Carlo advantage"),
        case(_traj, 2, 6, seed=5, gamma=0.9, lam=0.0, note="lam = 0: the one-step TD error"),
        case(_traj, 2, 5, seed=6, gamma=0.0, note="gamma = 0: A = r - V"),
        case(_traj, 2, 10, seed=7, gamma=1.0, lam=0.95, sparse=True,
             note="RLHF: a penalty at every token, the score at the last, value 0 after the end"),
        case(_traj, 3, 7, seed=8, layout="transposed", note="non-contiguous inputs (transposed views)"),
        case(_traj, 1, 12, seed=9, dtype=f64, note="batch of one, float64"),
        case(_traj, 2, 64, seed=10, gamma=0.99, lam=0.95, note="64 steps", tolerance=LONG),
        case(_traj, 2, 5, seed=11, gamma=0.8, lam=0.7, positional=True, note="gamma and lam passed positionally"),
    ]


def _gae_linear(call):
    r, v = randn(2, 5, seed=120, dtype=f64), randn(2, 6, seed=121, dtype=f64)
    a1, _ = call(r, v, gamma=0.9, lam=0.8)
    a2, _ = call(2.0 * r, 2.0 * v, gamma=0.9, lam=0.8)
    if not torch.allclose(a2, 2.0 * a1):
        return msg("doubling the rewards and the values should double the advantages; the largest gap is {gap:.3g}",
                   gap=float((a2 - 2.0 * a1).abs().max()))
    return None


def _gae_exact_values(call):
    r = randn(3, 6, seed=122, dtype=f64)
    v = torch.zeros(3, 7, dtype=torch.float64)
    v[:, :-1] = torch.cumsum(r.flip(-1), -1).flip(-1)                        # the true returns with gamma = 1
    a, ret = call(r, v, gamma=1.0, lam=0.5)
    if a.abs().max() > 1e-9 or not torch.allclose(ret, v[:, :-1]):
        return msg("when the values are the exact returns (gamma = 1) every delta is 0, so the advantages should be "
                   "0 and the returns the values; the largest advantage is {a:.3g}", a=float(a.abs().max()))
    return None


def gae_gamma_only(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        delta = rewards[..., t] + gamma * values[..., t + 1] - values[..., t]
        last = delta + gamma * last
        advantages[..., t] = last
    return advantages, advantages + values[..., :T]


def gae_forward(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in range(T):
        delta = rewards[..., t] + gamma * values[..., t + 1] - values[..., t]
        last = delta + gamma * lam * last
        advantages[..., t] = last
    return advantages, advantages + values[..., :T]


def gae_no_bootstrap(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        next_value = values[..., t + 1] if t < T - 1 else 0.0
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        last = delta + gamma * lam * last
        advantages[..., t] = last
    return advantages, advantages + values[..., :T]


def gae_delta_without_gamma(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        delta = rewards[..., t] + values[..., t + 1] - values[..., t]
        last = delta + gamma * lam * last
        advantages[..., t] = last
    return advantages, advantages + values[..., :T]


def gae_returns_to_go(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    last, running = torch.zeros_like(rewards[..., 0]), torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        delta = rewards[..., t] + gamma * values[..., t + 1] - values[..., t]
        last = delta + gamma * lam * last
        advantages[..., t] = last
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    return advantages, returns


def gae_returns_next_value(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        delta = rewards[..., t] + gamma * values[..., t + 1] - values[..., t]
        last = delta + gamma * lam * last
        advantages[..., t] = last
    return advantages, advantages + values[..., 1:]


def gae_values_swapped(rewards, values, gamma=0.99, lam=0.95):
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        delta = rewards[..., t] + gamma * values[..., t] - values[..., t + 1]
        last = delta + gamma * lam * last
        advantages[..., t] = last
    return advantages, advantages + values[..., :T]


register(Exercise(
    name="gae",
    chapter="alignment/ppo_grpo",
    signature="gae(rewards, values, gamma=0.99, lam=0.95)",
    oracle=_gae_oracle,
    cases=_gae_cases,
    tolerance={f32: (1e-5, 2e-6)},
    properties=[
        Property("the advantages are linear in the rewards and the values", _gae_linear),
        Property("exact values give zero advantages", _gae_exact_values),
    ],
    hints=("compute every TD error first, delta_t = r_t + gamma V_{t+1} - V_t, using the value after the last step "
           "that `values` holds; then discount them from the end of the trajectory   (eqs. gae-delta, gae-def)",
           "walk t from T - 1 down to 0 keeping a running sum: A_t = delta_t + gamma * lam * A_{t+1}, with "
           "A_T = 0; time is the last axis, so index [..., t]",
           "A_t = delta_t + (gamma * lam) * A_{t+1} from the end; returns = A + values[..., :T], the values of "
           "the same steps   (eqs. gae-rec, gae-ret)"),
    mistakes=[
        Mistake("lambda ignored", gae_gamma_only,
                "your running sum is discounted by gamma alone: GAE discounts the TD errors by gamma * lam, "
                "A_t = delta_t + gamma * lam * A_{t+1}."),
        Mistake("accumulated forwards", gae_forward,
                "you accumulated from the first step forwards: A_t sums the TD errors of step t and the steps "
                "after it, so the loop runs from T - 1 down to 0."),
        Mistake("last value ignored", gae_no_bootstrap,
                "you treated the value after the last step as 0: `values` holds T + 1 entries, and V_T "
                "bootstraps the return of a trajectory that was cut off (values[..., T])."),
        Mistake("delta without gamma", gae_delta_without_gamma,
                "the TD error discounts the next value: delta_t = r_t + gamma * V_{t+1} - V_t."),
        Mistake("returns are rewards-to-go", gae_returns_to_go,
                "your returns are the discounted rewards-to-go: the value target of GAE is returns = advantages + "
                "values[..., :T] (the lambda-return), not the Monte-Carlo sum."),
        Mistake("returns with the next value", gae_returns_next_value,
                "returns = advantages + V_t of the same step, values[..., :T]; you added values[..., 1:]."),
        Mistake("values swapped in delta", gae_values_swapped,
                "the TD error is r_t + gamma * V_{t+1} - V_t: the next state's value is added, the current one "
                "subtracted."),
    ],
))


# =========================================================================== ppo_clip_loss

def _bool_mask(B, T, seed, layout):
    g = torch.Generator().manual_seed(seed)
    if layout == "all":
        return torch.ones(B, T, dtype=torch.bool)
    if layout == "one":
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[int(torch.randint(0, B, (1,), generator=g)), int(torch.randint(0, T, (1,), generator=g))] = True
        return mask
    mask = torch.rand(B, T, generator=g) < 0.6
    mask[torch.arange(B), torch.randint(0, T, (B,), generator=g)] = True      # at least one token per row
    if layout == "padding-row":
        mask[-1] = False                                                       # a padding sequence
    return mask


def _ppo_batch(B, T, seed=0, dtype=f32, spread=0.3, eps=None, mask="random", positional=False, layout=None,
               grad_keywords=False, same=False):
    if layout == "transposed":
        old = randn(T, B, seed=seed, dtype=dtype, scale=0.5, shift=-2.0).T
        new = old + randn(T, B, seed=seed + 1, dtype=dtype, scale=spread).T
        adv = randn(T, B, seed=seed + 2, dtype=dtype).T
    else:
        old = randn(B, T, seed=seed, dtype=dtype, scale=0.5, shift=-2.0)
        new = old.clone() if same else old + randn(B, T, seed=seed + 1, dtype=dtype, scale=spread)
        adv = randn(B, T, seed=seed + 2, dtype=dtype)
    m = _bool_mask(B, T, seed + 3, mask)
    if layout == "transposed":
        m = m.T.contiguous().T
    if grad_keywords:
        kw = {} if eps is None else {"clip_eps": eps}
        return call(new, old_logprobs=old, advantages=adv, mask=m, **kw)
    if positional:
        return call(new, old, adv, m, eps)
    return call(new, old, adv, m) if eps is None else call(new, old, adv, m, clip_eps=eps)


def _ppo_oracle(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    return -torch.masked_select(surrogate, mask).mean()


def _ppo_cases():
    return [
        case(_ppo_batch, 3, 6, note="3 sequences of 6 tokens, default clip_eps"),
        case(_ppo_batch, 4, 5, seed=1, dtype=f64, eps=0.1, note="clip_eps=0.1, float64"),
        case(_ppo_batch, 1, 7, seed=2, note="batch of one"),
        case(_ppo_batch, 2, 8, seed=3, spread=1.0, note="ratios far outside the band on both sides"),
        case(_ppo_batch, 3, 5, seed=4, same=True, note="ratio 1 everywhere (the first update of a batch)"),
        case(_ppo_batch, 3, 4, seed=5, mask="all", note="every token counts"),
        case(_ppo_batch, 4, 6, seed=6, mask="one", note="a single token counts"),
        case(_ppo_batch, 3, 6, seed=7, mask="padding-row", note="a sequence that is all padding"),
        case(_ppo_batch, 3, 5, seed=8, layout="transposed", note="non-contiguous inputs (transposed views)"),
        case(_ppo_batch, 2, 6, seed=9, eps=0.3, positional=True, note="clip_eps=0.3 passed positionally"),
        case(_ppo_batch, 3, 6, seed=10, dtype=f64, grad_keywords=True, grad=True,
             note="gradient with respect to the log-probabilities"),
        case(_ppo_batch, 2, 7, seed=11, dtype=f64, spread=1.0, eps=0.15, grad_keywords=True, grad=True,
             note="gradient, many ratios clipped"),
    ]


def _ratio_one_zero_advantage(call):
    logp = randn(3, 5, seed=130, dtype=f64, scale=0.5, shift=-2.0)
    loss = call(logp, logp.clone(), torch.zeros(3, 5, dtype=torch.float64), _bool_mask(3, 5, 131, "random"))
    if abs(float(loss)) > 1e-12:
        return msg("with the ratio 1 and zero advantages the loss should be 0; got {v:.6g}", v=float(loss))
    return None


# ratio 1.5 with A > 0 and ratio 0.5 with A < 0 moved in the advantage's favour: clipped, zero gradient; the other
# tokens are not clipped (the min picks the unclipped term)
CLIP_RATIOS = (1.5, 1.5, 0.5, 0.5, 1.0)
CLIP_SIGNS = (1.0, -1.0, 1.0, -1.0, 1.0)
CLIPPED = (True, False, False, True, False)


def _gradient_outside_band(loss, logp):
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return msg("the loss carries no gradient back to the log-probabilities")
    (grad,) = torch.autograd.grad(loss, logp)
    grad = grad.reshape(-1)
    for k, clipped in enumerate(CLIPPED):
        if clipped and abs(float(grad[k])) > 1e-12:
            return msg("token {k} has ratio {r} and advantage {a:+g}: it left the band in the advantage's favour, so "
                       "its gradient should be 0; got {g:.6g}", k=k, r=CLIP_RATIOS[k], a=CLIP_SIGNS[k],
                       g=float(grad[k]))
        if not clipped and abs(float(grad[k])) < 1e-9:
            return msg("token {k} has ratio {r} and advantage {a:+g}: the min keeps its unclipped term, so its "
                       "gradient should not be 0", k=k, r=CLIP_RATIOS[k], a=CLIP_SIGNS[k])
    return None


def _ppo_clipping_stops_gradient(call):
    old = torch.full((1, 5), -2.0, dtype=torch.float64)
    logp = (old + torch.log(torch.tensor([CLIP_RATIOS], dtype=torch.float64))).requires_grad_()
    adv = torch.tensor([CLIP_SIGNS], dtype=torch.float64)
    loss = call(logp, old, adv, torch.ones(1, 5, dtype=torch.bool), clip_eps=0.2)
    return _gradient_outside_band(loss, logp)


def ppo_max(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -torch.max(surr1, surr2)
    return (loss * mask).sum() / mask.sum()


def ppo_clip_advantage(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages
    surr2 = ratio * torch.clamp(advantages, 1 - clip_eps, 1 + clip_eps)
    loss = -torch.min(surr1, surr2)
    return (loss * mask).sum() / mask.sum()


def ppo_mean_all_tokens(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -torch.min(surr1, surr2)
    return (loss * mask).mean()


def ppo_sequence_mean(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -torch.min(surr1, surr2)
    return ((loss * mask).sum(-1) / mask.sum(-1)).mean()


def ppo_ratio_of_logprobs(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = logprobs / old_logprobs
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -torch.min(surr1, surr2)
    return (loss * mask).sum() / mask.sum()


def ppo_ratio_inverted(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(old_logprobs - logprobs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -torch.min(surr1, surr2)
    return (loss * mask).sum() / mask.sum()


def ppo_no_minus(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    objective = torch.min(surr1, surr2)
    return (objective * mask).sum() / mask.sum()


def ppo_clipped_term_only(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    loss = -torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    return (loss * mask).sum() / mask.sum()


register(Exercise(
    name="ppo_clip_loss",
    chapter="alignment/ppo_grpo",
    signature="ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2)",
    oracle=_ppo_oracle,
    cases=_ppo_cases,
    properties=[
        Property("a ratio of one and zero advantages give zero loss", _ratio_one_zero_advantage),
        Property("clipping stops the gradient outside the band", _ppo_clipping_stops_gradient),
    ],
    hints=("the ratio compares the new policy with the one that sampled the tokens, from log-probabilities; take "
           "the smaller (more pessimistic) of the plain and the clipped surrogate, and average over the tokens "
           "the mask keeps   (eqs. ppo-ratio, ppo-clip)",
           "the ratio is exp(logprobs - old_logprobs); clamp the ratio, never the advantage; torch.minimum of the two "
           "surrogates, then a minus sign, since the optimizer minimises",
           "loss = -mean over mask of min(r * A, clamp(r, 1 - eps, 1 + eps) * A), r = exp(logp - old_logp): "
           "sum of the masked entries divided by the number of True entries   (eq. ppo-clip)"),
    mistakes=[
        Mistake("max instead of min", ppo_max,
                "you took the max of the two surrogates: PPO takes the min, a pessimistic bound, so the update "
                "gains nothing by moving the ratio beyond 1 +/- eps."),
        Mistake("clip applied to the advantage", ppo_clip_advantage,
                "you clipped the advantage: clip the probability ratio, clamp(r, 1 - eps, 1 + eps) * A."),
        Mistake("mean over all tokens", ppo_mean_all_tokens,
                "you divided by every position, padding included: average over the tokens where mask is True, "
                "(loss * mask).sum() / mask.sum()."),
        Mistake("mean per sequence first", ppo_sequence_mean,
                "you averaged each sequence first and then the sequences (GRPO's aggregation): this loss is the "
                "mean over all masked tokens of the batch at once."),
        Mistake("ratio of log-probabilities", ppo_ratio_of_logprobs,
                "the ratio is of probabilities, pi / pi_old = exp(logprobs - old_logprobs), not of "
                "log-probabilities."),
        Mistake("ratio inverted", ppo_ratio_inverted,
                "the ratio is inverted: r = pi_new / pi_old = exp(logprobs - old_logprobs)."),
        Mistake("no minus sign", ppo_no_minus,
                "you returned the objective to maximise: the loss is its negative, -min(r * A, clip(r) * A)."),
        Mistake("clipped term only", ppo_clipped_term_only,
                "you kept only the clipped surrogate: take the min of r * A and clip(r) * A, or tokens whose ratio "
                "moved against the advantage get no gradient."),
    ],
))


# =========================================================================== grpo_advantages

def _group_rewards(N, G, seed=0, dtype=f32, kind="normal", eps=None, positional=False, strided=False,
                   keyword=False):
    g = torch.Generator().manual_seed(seed)
    if kind == "binary":
        rewards = torch.randint(0, 2, (N * G,), generator=g).to(dtype)
    elif kind == "equal-groups":
        rewards = torch.randint(0, 2, (N * G,), generator=g).to(dtype)
        rewards[:G] = 0.0                                                     # every answer of prompt 0 wrong
        rewards[G:2 * G] = 1.0                                                # every answer of prompt 1 right
    elif kind == "large":
        rewards = randn(N * G, seed=seed, dtype=dtype, scale=100.0, shift=1000.0)
    else:
        rewards = randn(2 * N * G, seed=seed, dtype=dtype)[::2] if strided else randn(N * G, seed=seed, dtype=dtype)
    if positional:
        return call(rewards, G, eps)
    kw = {} if eps is None else {"eps": eps}
    return call(rewards, group_size=G, **kw) if keyword else call(rewards, G, **kw)


def _grpo_adv_oracle(rewards, group_size, eps=1e-4):
    groups = rewards.reshape(-1, group_size)                                  # (N, G): groups are consecutive
    std, mean = torch.std_mean(groups, dim=1, keepdim=True)                   # unbiased std
    return ((groups - mean) / (std + eps)).reshape(-1)


def _adv_cases():
    return [
        case(_group_rewards, 2, 4, note="2 prompts, 4 answers each"),
        case(_group_rewards, 3, 8, seed=1, kind="binary", note="0/1 rewards of a verifier"),
        case(_group_rewards, 3, 4, seed=2, kind="equal-groups",
             note="a group of wrong answers and a group of right ones: their advantages are 0"),
        case(_group_rewards, 4, 2, seed=3, note="groups of 2"),
        case(_group_rewards, 1, 6, seed=4, note="one prompt"),
        case(_group_rewards, 4, 5, seed=5, dtype=f64, note="float64"),
        case(_group_rewards, 2, 4, seed=6, eps=0.1, note="eps=0.1"),
        case(_group_rewards, 3, 3, seed=7, dtype=f64, eps=1e-6, positional=True, note="eps passed positionally"),
        case(_group_rewards, 3, 4, seed=8, strided=True, note="non-contiguous rewards (every other element)"),
        case(_group_rewards, 2, 5, seed=9, kind="large", note="rewards around 1000"),
        case(_group_rewards, 2, 3, seed=10, keyword=True, note="group_size passed by keyword"),
    ]


def _groups_have_mean_zero(call):
    rewards = randn(5 * 4, seed=140, dtype=f64, scale=3.0, shift=2.0)
    means = call(rewards, 4).reshape(5, 4).mean(1)
    if means.abs().max() > 1e-9:
        return msg("each group's advantages should average to 0; the group means are {m}",
                   m=[round(v, 6) for v in means.tolist()])
    return None


def _shift_invariant(call):
    rewards = randn(3 * 4, seed=141, dtype=f64)
    a, b = call(rewards, 4), call(rewards + 5.0, 4)
    if not torch.allclose(a, b):
        return msg("adding 5 to every reward changed the advantages by up to {gap:.3g}; a group's baseline absorbs "
                   "it", gap=float((a - b).abs().max()))
    return None


def adv_biased_std(rewards, group_size, eps=1e-4):
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, unbiased=False, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def adv_whole_batch(rewards, group_size, eps=1e-4):
    return (rewards - rewards.mean()) / (rewards.std() + eps)


def adv_wrong_axis(rewards, group_size, eps=1e-4):
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=0, keepdim=True)
    with warnings.catch_warnings():         # with one prompt torch warns (std of one value); the diagnosis runs quietly
        warnings.simplefilter("ignore")
        std = grouped.std(dim=0, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def adv_eps_in_sqrt(rewards, group_size, eps=1e-4):
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    var = grouped.var(dim=1, keepdim=True)
    return ((grouped - mean) / torch.sqrt(var + eps)).view(-1)


def adv_no_eps(rewards, group_size, eps=1e-4):
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / std).view(-1)


def adv_mean_only(rewards, group_size, eps=1e-4):
    grouped = rewards.view(-1, group_size)
    return (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)


def adv_grouped_shape(rewards, group_size, eps=1e-4):
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return (grouped - mean) / (std + eps)


register(Exercise(
    name="grpo_advantages",
    chapter="alignment/ppo_grpo",
    signature="grpo_advantages(rewards, group_size, eps=1e-4)",
    oracle=_grpo_adv_oracle,
    cases=_adv_cases,
    properties=[
        Property("each group's advantages have mean zero", _groups_have_mean_zero),
        Property("adding a constant to every reward leaves the advantages unchanged", _shift_invariant),
    ],
    hints=("the answers to one prompt are consecutive: compare each reward with the mean and the spread of its own "
           "group only   (eq. grpo-adv)",
           "reshape to (N, group_size), take mean and std along dim=1 with keepdim=True (torch.std is unbiased by "
           "default), and flatten back to (N * group_size,)",
           "A = (r - mean_group) / (std_group + eps), std unbiased, eps added to the std (not under a square "
           "root)   (eq. grpo-adv)"),
    mistakes=[
        Mistake("biased std", adv_biased_std,
                "you used the biased standard deviation (unbiased=False, dividing by G): the contract is "
                "torch.std's default, unbiased (dividing by G - 1)."),
        Mistake("normalised over the whole batch", adv_whole_batch,
                "you normalised with the mean and std of the whole batch: GRPO compares each answer with the other "
                "answers to the same prompt, its group of group_size consecutive rewards."),
        Mistake("statistics along the wrong axis", adv_wrong_axis,
                "after view(-1, group_size) a group is a row: take mean and std along dim=1, not dim=0."),
        Mistake("eps inside the square root", adv_eps_in_sqrt,
                "eps is added to the standard deviation, (r - mean) / (std + eps), not to the variance under the "
                "square root."),
        Mistake("no eps", adv_no_eps,
                "a group whose rewards are all equal has std 0, and 0 / 0 is NaN: add eps to the std."),
        Mistake("mean only", adv_mean_only,
                "you subtracted the group mean but did not divide by the group's std + eps (that is Dr. GRPO's "
                "choice, not this contract)."),
        Mistake("grouped shape returned", adv_grouped_shape,
                "return one advantage per reward, shape (N * group_size,): flatten the (N, group_size) groups back."),
    ],
))


# =========================================================================== grpo_loss

def _grpo_batch(N, G, T, seed=0, dtype=f32, spread=0.3, kl_spread=0.2, eps=None, beta=None, positional=False,
                layout=None, lengths=None, grad_keywords=False, same=False):
    rows = N * G
    if layout == "transposed":
        old = randn(T, rows, seed=seed, dtype=dtype, scale=0.5, shift=-2.0).T
        logp = old + randn(T, rows, seed=seed + 1, dtype=dtype, scale=spread).T
        ref = logp + randn(T, rows, seed=seed + 2, dtype=dtype, scale=kl_spread).T
    else:
        old = randn(rows, T, seed=seed, dtype=dtype, scale=0.5, shift=-2.0)
        logp = old.clone() if same else old + randn(rows, T, seed=seed + 1, dtype=dtype, scale=spread)
        ref = logp.clone() if same else logp + randn(rows, T, seed=seed + 2, dtype=dtype, scale=kl_spread)
    advantages = randn(rows, seed=seed + 3, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 4)
    size = torch.randint(1, T + 1, (rows,), generator=g) if lengths is None else torch.tensor(lengths)
    mask = torch.arange(T)[None, :] < size[:, None]                          # right padding, >= 1 token each
    if layout == "transposed":
        mask = mask.T.contiguous().T
    kw = {k: v for k, v in (("clip_eps", eps), ("beta", beta)) if v is not None}
    if grad_keywords:
        return call(logp, old_logprobs=old, ref_logprobs=ref, advantages=advantages, mask=mask, **kw)
    if positional:
        return call(logp, old, ref, advantages, mask, eps, beta)
    return call(logp, old, ref, advantages, mask, **kw)


def _grpo_oracle(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    """DeepSeekMath's objective, negated: clipped surrogate minus beta * k3, each sequence's masked mean, then
    the mean over the sequences."""
    ratio = torch.exp(logprobs - old_logprobs)                                # (N*G, T)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    log_ref_ratio = ref_logprobs - logprobs
    k3 = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = -(surrogate - beta * k3)
    weights = mask.to(per_token.dtype)
    return ((per_token * weights).sum(-1) / weights.sum(-1)).mean()


def _grpo_cases():
    return [
        case(_grpo_batch, 2, 2, 5, note="2 prompts, 2 answers each, 5 tokens"),
        case(_grpo_batch, 2, 3, 4, seed=1, dtype=f64, eps=0.1, beta=0.1, note="clip_eps=0.1, beta=0.1, float64"),
        case(_grpo_batch, 1, 4, 6, seed=2, note="one prompt"),
        case(_grpo_batch, 2, 4, 8, seed=3, note="N * G = T = 8"),
        case(_grpo_batch, 1, 3, 12, seed=4, lengths=[1, 12, 5], note="answers of 1, 12 and 5 tokens"),
        case(_grpo_batch, 2, 2, 6, seed=5, beta=0.0, note="beta=0: no KL term"),
        case(_grpo_batch, 2, 3, 5, seed=6, same=True,
             note="ratio 1 and the reference equal to the policy: the loss is -mean(A)"),
        case(_grpo_batch, 2, 2, 7, seed=7, spread=1.0, note="ratios far outside the band"),
        case(_grpo_batch, 2, 2, 6, seed=8, kl_spread=2.0, beta=0.5, note="a reference far from the policy, beta=0.5"),
        case(_grpo_batch, 1, 3, 5, seed=9, layout="transposed", note="non-contiguous inputs (transposed views)"),
        case(_grpo_batch, 2, 2, 5, seed=10, eps=0.25, beta=0.02, positional=True,
             note="clip_eps and beta passed positionally"),
        case(_grpo_batch, 2, 3, 6, seed=11, dtype=f64, grad_keywords=True, grad=True,
             note="gradient with respect to the log-probabilities"),
        case(_grpo_batch, 1, 4, 7, seed=12, dtype=f64, spread=1.0, kl_spread=1.0, beta=0.2, grad_keywords=True,
             grad=True, note="gradient, many ratios clipped, beta=0.2"),
    ]


def _grpo_zero_when_nothing_moved(call):
    logp = randn(4, 5, seed=150, dtype=f64, scale=0.5, shift=-2.0)
    mask = torch.arange(5)[None, :] < torch.tensor([[5], [2], [4], [1]])
    loss = call(logp, logp.clone(), logp.clone(), torch.zeros(4, dtype=torch.float64), mask)
    if abs(float(loss)) > 1e-12:
        return msg("with the ratio 1, zero advantages and the reference equal to the policy the loss should be 0; "
                   "got {v:.6g}", v=float(loss))
    return None


def _grpo_kl_term_is_a_penalty(call):
    logp = randn(4, 5, seed=151, dtype=f64, scale=0.5, shift=-2.0)
    ref = logp + randn(4, 5, seed=152, dtype=f64)
    mask = torch.ones(4, 5, dtype=torch.bool)
    loss = float(call(logp, logp.clone(), ref, torch.zeros(4, dtype=torch.float64), mask, beta=0.1))
    if not loss > 0:
        return msg("with zero advantages only the KL term is left, beta times an estimate of a KL divergence, so the "
                   "loss should be positive; got {v:.6g}", v=loss)
    return None


def _grpo_clipping_stops_gradient(call):
    old = torch.full((5, 1), -2.0, dtype=torch.float64)
    logp = (old + torch.log(torch.tensor(CLIP_RATIOS, dtype=torch.float64))[:, None]).requires_grad_()
    loss = call(logp, old, logp.detach().clone(), torch.tensor(CLIP_SIGNS, dtype=torch.float64),
                torch.ones(5, 1, dtype=torch.bool), clip_eps=0.2, beta=0.0)
    return _gradient_outside_band(loss, logp)


def _grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages.unsqueeze(1)
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages.unsqueeze(1)
    return torch.min(surr1, surr2)


def _k3(logprobs, ref_logprobs):
    return torch.exp(ref_logprobs - logprobs) - (ref_logprobs - logprobs) - 1


def grpo_kl_reversed(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = _grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    kl = torch.exp(logprobs - ref_logprobs) - (logprobs - ref_logprobs) - 1
    per_token = -(surrogate - beta * kl)
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def grpo_kl_added(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = _grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    per_token = -(surrogate + beta * _k3(logprobs, ref_logprobs))
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def grpo_token_mean(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = _grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    per_token = -(surrogate - beta * _k3(logprobs, ref_logprobs))
    return (per_token * mask).sum() / mask.sum()


def grpo_mask_ignored(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = _grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    per_token = -(surrogate - beta * _k3(logprobs, ref_logprobs))
    return per_token.mean(dim=1).mean()


def grpo_advantages_not_unsqueezed(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2,
                                   beta=0.04):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    per_token = -(torch.min(surr1, surr2) - beta * _k3(logprobs, ref_logprobs))
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def grpo_k1(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    surrogate = _grpo_terms(logprobs, old_logprobs, ref_logprobs, advantages, clip_eps)
    per_token = -(surrogate - beta * (logprobs - ref_logprobs))
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def grpo_max(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages.unsqueeze(1)
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages.unsqueeze(1)
    per_token = -(torch.max(surr1, surr2) - beta * _k3(logprobs, ref_logprobs))
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def grpo_ratio_to_reference(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04):
    ratio = torch.exp(logprobs - ref_logprobs)
    surr1 = ratio * advantages.unsqueeze(1)
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages.unsqueeze(1)
    per_token = -(torch.min(surr1, surr2) - beta * _k3(logprobs, ref_logprobs))
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


register(Exercise(
    name="grpo_loss",
    chapter="alignment/ppo_grpo",
    signature="grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04)",
    oracle=_grpo_oracle,
    cases=_grpo_cases,
    properties=[
        Property("a ratio of one, zero advantages and the reference equal to the policy give zero loss",
                 _grpo_zero_when_nothing_moved),
        Property("the KL term is a penalty: with zero advantages the loss is positive", _grpo_kl_term_is_a_penalty),
        Property("clipping stops the gradient outside the band", _grpo_clipping_stops_gradient),
    ],
    hints=("PPO's clipped surrogate with one advantage per sequence, minus beta times an unbiased, never-negative "
           "estimate of KL(policy || reference); each sequence is averaged over its own tokens first   "
           "(eqs. grpo-obj, grpo-k3)",
           "broadcast the advantages over the tokens with advantages[:, None]; the KL estimate uses "
           "ref_logprobs - logprobs: exp(that) - that - 1; the loss is minus (surrogate - beta * KL)",
           "per token -(min(r * A, clamp(r, 1 - eps, 1 + eps) * A) - beta * (exp(ref - logp) - (ref - logp) - 1)); "
           "per sequence the sum over its masked tokens divided by their number; then the mean over the sequences   "
           "(eq. grpo-obj)"),
    mistakes=[
        Mistake("KL estimator reversed", grpo_kl_reversed,
                "the k3 estimator of KL(pi || pi_ref) uses the log-ratio ref - logp: exp(ref - logp) - (ref - "
                "logp) - 1. With logp - ref the exp term has mean E_pi[pi / pi_ref], not 1, under the policy's own "
                "samples: a biased estimate."),
        Mistake("KL added with the wrong sign", grpo_kl_added,
                "the KL term is a penalty: the objective is surrogate - beta * KL, so the loss is -(surrogate - "
                "beta * KL). Yours rewards moving away from the reference."),
        Mistake("token-level mean", grpo_token_mean,
                "you averaged over all masked tokens of the batch at once (DAPO's token-level loss): GRPO as in "
                "DeepSeekMath averages each sequence over its own tokens, then averages the sequences."),
        Mistake("mask ignored", grpo_mask_ignored,
                "you averaged over every position, padding included: divide each sequence's sum over its masked "
                "tokens by its number of masked tokens."),
        Mistake("advantages not broadcast per sequence", grpo_advantages_not_unsqueezed,
                "advantages has one entry per sequence, shape (N*G,): broadcast it over the tokens with "
                "advantages[:, None] (or unsqueeze(-1)); a bare (N*G,) lines up with the time axis instead."),
        Mistake("k1 estimator", grpo_k1,
                "you used logp - ref (the k1 estimator): its expectation is the KL, but a single token's value can "
                "be negative, and its variance is high. GRPO uses k3 = exp(ref - logp) - (ref - logp) - 1, never "
                "negative."),
        Mistake("max instead of min", grpo_max,
                "you took the max of the two surrogates: take the min, the pessimistic bound PPO uses."),
        Mistake("ratio against the reference", grpo_ratio_to_reference,
                "the ratio compares the policy with the old policy that sampled the answers, exp(logp - old); "
                "the reference model only enters through the KL term."),
    ],
))
