"""Part 1, foundations: softmax and log-softmax (chapter foundations/softmax)."""

from __future__ import annotations

from functools import partial

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn, strided, transposed
from ...registry import register


SOFTMAX_BUILTINS = (
    "torch.softmax", "F.softmax", "Tensor.softmax", "torch.special.softmax", "torch._softmax", "F.softmin",
    "torch.log_softmax", "F.log_softmax", "Tensor.log_softmax", "torch.special.log_softmax",
    "torch._log_softmax", "torch.logsumexp", "Tensor.logsumexp", "torch.special.logsumexp",
)


# --------------------------------------------------------------------------- cases shared by both

def _x_dim(tensor, dim=None, positional=False, edit=None):
    x = tensor()
    if edit is not None:
        x = edit(x)
    if dim is None:
        return call(x)
    return call(x, dim) if positional else call(x, dim=dim)


def _T(*shape, **kw):
    return partial(randn, *shape, **kw)


def _with_neg_inf(x):
    x = x.clone()
    x[:, ::3] = -torch.inf          # masked positions, as attention masks produce
    return x


def _rows_far_apart(x):
    return x + torch.arange(x.shape[0], dtype=x.dtype)[:, None] * -3000.0


# Correct code may compute x - logsumexp(x) (the definition); at |x| ~ 1e4 float32 rounds the lse to half an
# ulp of |x| (4.9e-4 below 16384), measured up to 1.43e-4 on "rows thousands apart" and 1.1e-5 on "x + 1000", the
# same for torch.exp(x - torch.logsumexp(x, dim, keepdim=True)). Only the cases of that magnitude get this bound:
# relative for softmax, absolute for log_softmax (whose outputs near 0 leave rtol nothing to work with).
LARGE_SOFTMAX = {f32: (1e-3, 1e-6)}
LARGE_LOG_SOFTMAX = {f32: (1e-5, 1e-3)}


def _common_cases(large=None):
    return [
        case(_x_dim, _T(7), note="1-D input, default dim"),
        case(_x_dim, _T(3, 7, seed=1), -1),
        case(_x_dim, _T(3, 7, seed=2, dtype=f64), -1, note="float64"),
        case(_x_dim, _T(3, 7, seed=3), 0, note="dim=0"),
        case(_x_dim, _T(4, 4, seed=4), 0, note="square input, dim=0"),
        case(_x_dim, _T(2, 3, 4, seed=5), 1, note="3-D, middle axis"),
        case(_x_dim, _T(2, 3, 4, seed=6, dtype=f64), -2, note="negative dim"),
        case(_x_dim, _T(2, 3, 4, seed=7), 0, positional=True, note="dim passed positionally"),
        case(_x_dim, _T(2, 3, 4, 5, seed=8), 2, note="4-D"),
        case(_x_dim, _T(1, 6, seed=9), note="batch of one, default dim"),
        case(_x_dim, _T(4, 1, seed=10), -1, note="a single element per slice"),
        case(_x_dim, partial(transposed, 6, 5, seed=11), -1, note="non-contiguous (transposed) view"),
        case(_x_dim, partial(strided, 3, 8, seed=12, dtype=f64), 0, note="non-contiguous (strided) view"),
        case(_x_dim, _T(4, 6, seed=13, scale=30.0, shift=1000.0), -1, note="large values (x + 1000)",
             tolerance=large),
        case(_x_dim, _T(5, 6, seed=14, scale=1e4), -1, note="extreme values, |x| up to 1e4", tolerance=large),
        case(_x_dim, _T(4, 5, seed=15, scale=10.0), -1, edit=_rows_far_apart,
             note="rows thousands apart from each other", tolerance=large),
        case(_x_dim, _T(3, 7, seed=16), -1, edit=_with_neg_inf, note="-inf entries (masked positions)"),
        case(_x_dim, _T(3, 5, seed=17, dtype=f64), -1, grad=True, note="gradient"),
        case(_x_dim, _T(4, 3, seed=18, dtype=f64), 0, grad=True, note="gradient along dim=0"),
    ]


def _shift_invariant(call, fn_name):
    x = randn(4, 9, seed=40)
    a, b = call(x, dim=-1), call(x + 100.0, dim=-1)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        return msg("{fn}(x + 100) differs from {fn}(x) by {gap:.3g}", fn=fn_name, gap=float((a - b).abs().max()))
    return None


# --------------------------------------------------------------------------- softmax

def _softmax_sums_to_one(call):
    x = randn(2, 5, 3, seed=41, dtype=f64)
    for dim in (0, 1, 2, -1):
        s = call(x, dim=dim).sum(dim)
        if not torch.allclose(s, torch.ones_like(s)):
            return msg("slices along dim={dim} sum to {sums}..., not 1", dim=dim, sums=s.flatten()[:3].tolist())
    return None


def softmax_no_shift(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim, keepdim=True)


def softmax_last_axis(x, dim=-1):
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def softmax_no_keepdim(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum(dim)


def softmax_global_max(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim, keepdim=True)


def softmax_total_sum(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum()


def softmax_in_place(x, dim=-1):
    x -= x.max(dim, keepdim=True).values
    e = torch.exp(x)
    return e / e.sum(dim, keepdim=True)


def softmax_max_tuple(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def softmax_builtin(x, dim=-1):
    return torch.softmax(x, dim)


def softmax_detached(x, dim=-1):
    x = x.detach()
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum(dim, keepdim=True)


register(Exercise(
    name="softmax",
    chapter="foundations/softmax",
    signature="softmax(x, dim=-1)",
    oracle=lambda x, dim=-1: torch.softmax(x, dim),
    cases=partial(_common_cases, LARGE_SOFTMAX),
    forbidden=SOFTMAX_BUILTINS,
    properties=[
        Property("every slice along dim sums to 1", _softmax_sums_to_one),
        Property("softmax(x + c) = softmax(x)", partial(_shift_invariant, fn_name="softmax")),
    ],
    hints=("subtract each slice's maximum along dim before exp, so that no exponent is positive   (eq. sm-stable)",
           "reduce along dim with keepdim=True (amax, or max(...).values) so the max and the sum broadcast back "
           "against x; never modify x in place",
           "s = exp(x - max(x, dim, keepdim=True)) / sum(exp(x - max), dim, keepdim=True)   (eq. sm-stable)"),
    mistakes=[
        Mistake("no max shift", softmax_no_shift,
                "your softmax overflows: exp(x) is inf for large x and inf/inf is NaN. Subtract the max along "
                "`dim` before exp; softmax is shift-invariant, so the result is unchanged."),
        Mistake("last axis always", softmax_last_axis,
                "you reduced over the last axis whatever `dim` is: pass `dim` to max and sum."),
        Mistake("no keepdim", softmax_no_keepdim,
                "the sum lost its reduced axis: use keepdim=True so that it broadcasts against x along `dim`."),
        Mistake("global max", softmax_global_max,
                "you subtracted the max of the whole tensor: slices far below it underflow to 0/0 = NaN. Take "
                "the max along `dim` (keepdim=True)."),
        Mistake("total sum", softmax_total_sum,
                "you divided by the sum of the whole tensor: normalise each slice along `dim` separately."),
        Mistake("in place", softmax_in_place,
                "you changed the caller's tensor in place (x -= ...): compute into new tensors."),
        Mistake("max returns a tuple", softmax_max_tuple,
                "x.max(dim) returns (values, indices): use x.max(dim, keepdim=True).values or x.amax(dim, "
                "keepdim=True)."),
        Mistake("calls the built-in", softmax_builtin,
                "this exercise asks you to write softmax yourself: torch.softmax, F.softmax and logsumexp are "
                "off limits; use exp, max and sum."),
        Mistake("detached", softmax_detached,
                "your result is cut from the autograd graph (.detach() / .data / no_grad): gradients cannot "
                "flow back to x."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0), dim=-1), torch.softmax),
))


# --------------------------------------------------------------------------- log_softmax

def _log_softmax_cases():
    return _common_cases(LARGE_LOG_SOFTMAX) + [
        case(_x_dim, lambda: torch.tensor([[0.0, -200.0], [5.0, -300.0]]), -1,
             note="[0, -200]: a probability too small for float32"),
        case(_x_dim, lambda: torch.tensor([[0.0, -800.0, 1.0]], dtype=f64), -1,
             note="[0, -800, 1] in float64"),
    ]


def _exp_sums_to_one(call):
    x = randn(3, 4, 5, seed=42, dtype=f64)
    for dim in (0, 1, -1):
        s = call(x, dim=dim).exp().sum(dim)
        if not torch.allclose(s, torch.ones_like(s)):
            return msg("exp(log_softmax(x, dim={dim})) sums to {sums}..., not 1", dim=dim,
                       sums=s.flatten()[:3].tolist())
    return None


def log_softmax_of_softmax(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return torch.log(e / e.sum(dim, keepdim=True))


def log_softmax_no_shift(x, dim=-1):
    return x - torch.log(torch.exp(x).sum(dim, keepdim=True))


def log_softmax_forgot_max(x, dim=-1):
    m = x.max(dim, keepdim=True).values
    return x - torch.log(torch.exp(x - m).sum(dim, keepdim=True))


def log_softmax_last_axis(x, dim=-1):
    m = x.max(-1, keepdim=True).values
    return x - m - torch.log(torch.exp(x - m).sum(-1, keepdim=True))


def log_softmax_no_keepdim(x, dim=-1):
    m = x.max(dim, keepdim=True).values
    return x - m - torch.log(torch.exp(x - m).sum(dim))


def log_softmax_in_place(x, dim=-1):
    x -= x.max(dim, keepdim=True).values
    return x - torch.log(torch.exp(x).sum(dim, keepdim=True))


def log_softmax_builtin(x, dim=-1):
    return x - torch.logsumexp(x, dim, keepdim=True)


def log_softmax_sign(x, dim=-1):
    m = x.max(dim, keepdim=True).values
    return m + torch.log(torch.exp(x - m).sum(dim, keepdim=True)) - x


register(Exercise(
    name="log_softmax",
    chapter="foundations/softmax",
    signature="log_softmax(x, dim=-1)",
    oracle=lambda x, dim=-1: torch.log_softmax(x, dim),
    cases=_log_softmax_cases,
    forbidden=SOFTMAX_BUILTINS,
    properties=[
        Property("exp(log_softmax(x)) sums to 1 along dim", _exp_sums_to_one),
        Property("log_softmax(x + c) = log_softmax(x)", partial(_shift_invariant, fn_name="log_softmax")),
    ],
    hints=("never form the probabilities: subtract the log of the normaliser from the shifted logits   (eq. lsm)",
           "the log-sum-exp is stable with the slice max m taken out: m + log(sum(exp(x - m)))",
           "log_softmax(x) = x - m - log(sum(exp(x - m), dim, keepdim=True)) with m = max(x, dim)   (eq. lsm)"),
    mistakes=[
        Mistake("log of softmax", log_softmax_of_softmax,
                "log(softmax(x)) underflows: a probability below float's smallest number rounds to 0 and "
                "log(0) = -inf. Compute x - m - log(sum(exp(x - m))) directly."),
        Mistake("no max shift", log_softmax_no_shift,
                "your log-sum-exp overflows: exp(x) is inf for large x. Subtract the max first: "
                "logsumexp(x) = m + log(sum(exp(x - m)))."),
        Mistake("forgot to add the max back", log_softmax_forgot_max,
                "you subtracted log(sum(exp(x - m))) but not m itself: log_softmax = x - m - log(sum(exp(x - m)))."),
        Mistake("last axis always", log_softmax_last_axis,
                "you reduced over the last axis whatever `dim` is: pass `dim` to max and sum."),
        Mistake("no keepdim", log_softmax_no_keepdim,
                "the log-sum-exp lost its reduced axis: use keepdim=True so that it broadcasts along `dim`."),
        Mistake("in place", log_softmax_in_place,
                "you changed the caller's tensor in place (x -= ...): compute into new tensors."),
        Mistake("calls the built-in", log_softmax_builtin,
                "this exercise asks you to write log_softmax yourself: torch.logsumexp, log_softmax and softmax "
                "are off limits; use exp, log, max and sum."),
        Mistake("sign flipped", log_softmax_sign,
                "the sign is flipped: log_softmax = x - logsumexp(x), which is never positive."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0), dim=-1), torch.log_softmax),
))
