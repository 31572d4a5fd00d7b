"""Part 1, foundations: cross-entropy, binary cross-entropy with logits, distillation (chapter foundations/losses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn, transposed
from ...registry import register


LOG_SOFTMAX_BUILTINS = (
    "torch.log_softmax", "F.log_softmax", "Tensor.log_softmax", "torch.special.log_softmax",
    "torch._log_softmax", "torch.logsumexp", "Tensor.logsumexp", "torch.special.logsumexp",
)
CE_BUILTINS = ("F.cross_entropy", "F.nll_loss", "torch._C._nn.cross_entropy_loss", "torch._C._nn.nll_loss",
               "torch._C._nn.nll_loss_nd") + LOG_SOFTMAX_BUILTINS
BCE_BUILTINS = ("F.binary_cross_entropy_with_logits", "torch.binary_cross_entropy_with_logits",
                "F.binary_cross_entropy", "F.logsigmoid", "torch._C._nn.log_sigmoid", "F.softplus",
                "torch._C._nn.softplus")
KD_BUILTINS = ("F.kl_div", "torch.kl_div")


def _targets(n, c, seed, ignore=(), ignore_index=-100):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, c, (n,), generator=g)
    for i in ignore:
        t[i] = ignore_index
    return t


# --------------------------------------------------------------------------- cross_entropy

def _ce(n, c, seed=0, dtype=f32, scale=1.0, shift=0.0, ignore=(), layout=None, **kw):
    logits = (transposed(n, c, seed=seed, dtype=dtype, scale=scale) if layout == "transposed"
              else randn(n, c, seed=seed, dtype=dtype, scale=scale, shift=shift))
    return call(logits, _targets(n, c, seed + 100, ignore, kw.get("ignore_index", -100)), **kw)


def _ce_class0_ignored(seed=30):
    logits = randn(6, 4, seed=seed)
    return call(logits, torch.tensor([0, 1, 0, 3, 2, 0]), ignore_index=0)


# lse(x) - x[y], with lse = m + log(sum(exp(x - m))) as torch.logsumexp computes it, rounds the lse to half an ulp
# of |x| in float32 (6.1e-5 for |x| in [1024, 2048)): measured abs error 2.03e-5 on "every logit near -2000" (loss
# 1.69). Only the cases of that magnitude get this bound.
LARGE_LOGITS = {f32: (1e-5, 1e-4)}


def _ce_cases():
    return [
        case(_ce, 4, 5, note="4 rows, 5 classes"),
        case(_ce, 8, 10, seed=1, dtype=f64, note="float64"),
        case(_ce, 1, 7, seed=2, note="batch of one"),
        case(_ce, 5, 2, seed=3, note="two classes"),
        case(_ce, 6, 5, seed=4, ignore=(1, 4), note="two rows with the default ignore_index -100"),
        case(_ce, 10, 6, seed=5, ignore=(0, 1, 2, 3, 5, 6, 7, 9), note="most rows ignored (8 of 10)"),
        case(_ce_class0_ignored, note="ignore_index=0: every row of class 0 is ignored"),
        case(_ce, 6, 5, seed=6, ignore=(2,), ignore_index=3, note="ignore_index=3 set on one row"),
        case(_ce, 5, 6, seed=7, label_smoothing=0.1, note="label_smoothing=0.1"),
        case(_ce, 7, 4, seed=8, dtype=f64, label_smoothing=0.35, ignore=(0, 3, 5),
             note="label_smoothing=0.35 with ignored rows"),
        case(_ce, 4, 5, seed=9, label_smoothing=1.0, note="label_smoothing=1.0 (uniform target)"),
        case(_ce, 6, 5, seed=10, scale=3000.0, note="logits in the thousands", tolerance=LARGE_LOGITS),
        case(_ce, 5, 5, seed=11, scale=2.0, shift=-2000.0, note="every logit near -2000", tolerance=LARGE_LOGITS),
        case(_ce, 5, 8, seed=12, scale=1500.0, label_smoothing=0.2, ignore=(1,),
             note="logits in the thousands, smoothing and an ignored row", tolerance=LARGE_LOGITS),
        case(_ce, 6, 5, seed=13, layout="transposed", note="non-contiguous (transposed) logits"),
        case(_ce, 5, 4, seed=14, dtype=f64, grad=True, note="gradient"),
        case(_ce, 8, 5, seed=15, dtype=f64, ignore=(0, 2, 3, 4, 6), label_smoothing=0.25, grad=True,
             note="gradient with ignored rows and label_smoothing=0.25"),
        case(_ce, 4, 6, seed=16, dtype=f64, scale=1000.0, grad=True, note="gradient, logits in the thousands"),
    ]


def _ce_shift_invariant(call):
    logits, target = randn(5, 7, seed=50, dtype=f64), _targets(5, 7, 51)
    a, b = call(logits, target), call(logits + 50.0, target)
    if not torch.allclose(a, b):
        return msg("adding 50 to every logit changed the loss from {a:.6g} to {b:.6g}", a=float(a), b=float(b))
    return None


def _log_softmax(x):
    m = x.amax(-1, keepdim=True)
    return x - m - torch.log(torch.exp(x - m).sum(-1, keepdim=True))


def _nll_rows(logp, target, ignore_index):
    keep = target != ignore_index
    return -logp.gather(1, torch.where(keep, target, 0)[:, None]).squeeze(1), keep


def ce_log_of_softmax(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    logp = torch.log(e / e.sum(-1, keepdim=True))
    nll, keep = _nll_rows(logp, target, ignore_index)
    loss = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    return (loss * keep).sum() / keep.sum()


def ce_no_shift(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = logits - torch.log(torch.exp(logits).sum(-1, keepdim=True))
    nll, keep = _nll_rows(logp, target, ignore_index)
    loss = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    return (loss * keep).sum() / keep.sum()


def ce_mean_over_all_rows(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _log_softmax(logits)
    nll, keep = _nll_rows(logp, target, ignore_index)
    loss = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    return (loss * keep).sum() / len(target)


def ce_no_ignore(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _log_softmax(logits)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    return ((1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)).mean()


def ce_hard_coded_ignore(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _log_softmax(logits)
    nll, keep = _nll_rows(logp, target, -100)
    loss = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    return (loss * keep).sum() / keep.sum()


def ce_smoothing_over_others(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _log_softmax(logits)
    nll, keep = _nll_rows(logp, target, ignore_index)
    C = logits.shape[-1]
    others = -(logp.sum(-1) - (-nll)) / (C - 1) if C > 1 else torch.zeros_like(nll)
    loss = (1 - label_smoothing) * nll + label_smoothing * others
    return (loss * keep).sum() / keep.sum()


def ce_smoothing_added(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _log_softmax(logits)
    nll, keep = _nll_rows(logp, target, ignore_index)
    loss = nll - label_smoothing * logp.mean(-1)
    return (loss * keep).sum() / keep.sum()


def ce_sum(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _log_softmax(logits)
    nll, keep = _nll_rows(logp, target, ignore_index)
    loss = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    return (loss * keep).sum()


def ce_builtin(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    return F.cross_entropy(logits, target, ignore_index=ignore_index, label_smoothing=label_smoothing)


register(Exercise(
    name="cross_entropy",
    chapter="foundations/losses",
    signature="cross_entropy(logits, target, *, ignore_index=-100, label_smoothing=0.0)",
    oracle=lambda logits, target, *, ignore_index=-100, label_smoothing=0.0: F.cross_entropy(
        logits, target, ignore_index=ignore_index, label_smoothing=label_smoothing),
    cases=_ce_cases,
    forbidden=CE_BUILTINS,
    properties=[Property("adding a constant to every logit leaves the loss unchanged", _ce_shift_invariant)],
    hints=("work with stable log-probabilities: a row's loss is minus the log-probability of its target class, "
           "averaged over the rows whose target is not ignore_index   (eqs. ce-def, ce-ignore)",
           "logp = x - m - log(sum(exp(x - m))) with m the row max; pick -logp[i, y_i] with gather after replacing "
           "ignored targets by a valid index, then divide by the number of kept rows",
           "logp = x - m - log(sum(exp(x - m))) per row; "
           "loss_i = (1 - eps) * (-logp[i, y_i]) + eps * mean_c(-logp[i, c]); "
           "average over rows with y_i != ignore_index   (eqs. ce-def, ce-smooth)"),
    mistakes=[
        Mistake("log of softmax", ce_log_of_softmax,
                "log(softmax(x)) underflows: with logits thousands apart a probability rounds to 0 and log(0) = "
                "-inf. Compute log-probabilities directly: x - m - log(sum(exp(x - m)))."),
        Mistake("no max shift", ce_no_shift,
                "your log-sum-exp overflows or underflows: exp(x) is inf for x near 1000 and 0 for x near -1000. "
                "Subtract the row max first: logsumexp(x) = m + log(sum(exp(x - m)))."),
        Mistake("mean over all rows", ce_mean_over_all_rows,
                "you divided by the number of rows, ignored ones included: PyTorch averages over the rows whose "
                "target is not ignore_index."),
        Mistake("ignore_index not handled", ce_no_ignore,
                "rows whose target equals ignore_index must be left out (their target, -100 by default, is not "
                "a class index): mask them before gathering and averaging."),
        Mistake("ignore_index hard-coded", ce_hard_coded_ignore,
                "you skip rows whose target is -100 whatever ignore_index is: compare with the ignore_index "
                "argument."),
        Mistake("smoothing over the other classes", ce_smoothing_over_others,
                "you keep 1 - eps on the true class and spread eps/(C-1) over the other classes only: a different "
                "loss. Label smoothing as Szegedy et al. (2016) define it, and as PyTorch implements it, puts eps/C "
                "on every class, the true one included: (1 - eps) * nll + eps * mean(-logp)."),
        Mistake("smoothing added to the full loss", ce_smoothing_added,
                "the smoothing term was added to the whole NLL: weight the NLL by (1 - eps), "
                "loss = (1 - eps) * nll + eps * mean_c(-logp)."),
        Mistake("sum instead of mean", ce_sum,
                "you summed the per-row losses: F.cross_entropy's default reduction is the mean over the "
                "non-ignored rows."),
        Mistake("calls the built-in", ce_builtin,
                "this exercise asks you to write cross-entropy yourself: F.cross_entropy, nll_loss, log_softmax "
                "and logsumexp are off limits; use exp, log, max, sum and gather."),
    ],
    bench=(lambda: call(randn(4096, 1024, seed=0), _targets(4096, 1024, 1)), F.cross_entropy),
))


# --------------------------------------------------------------------------- binary_cross_entropy_with_logits

def _bce(*shape, seed=0, dtype=f32, scale=1.0, shift=0.0, soft=False, layout=None):
    logits = (transposed(*shape, seed=seed, dtype=dtype, scale=scale) if layout == "transposed"
              else randn(*shape, seed=seed, dtype=dtype, scale=scale, shift=shift))
    g = torch.Generator().manual_seed(seed + 100)
    target = torch.rand(shape, generator=g, dtype=f64) if soft else torch.randint(0, 2, shape, generator=g)
    target = target.to(dtype)
    return call(logits, target)


def _bce_ladder(seed=20, dtype=f32):
    """Logits from -1e4 to 1e4 against both labels: every regime of the stable formula."""
    z = torch.tensor([-1e4, -500.0, -90.0, -30.0, -17.0, -1.0, 0.0, 1.0, 17.0, 30.0, 90.0, 500.0, 1e4], dtype=dtype)
    z = torch.stack([z, z])                                                     # (2, 13)
    target = torch.stack([torch.zeros(13), torch.ones(13)]).to(dtype)
    return call(z, target)


def _bce_cases():
    return [
        case(_bce, 8, note="1-D, hard labels"),
        case(_bce, 4, 6, seed=1, dtype=f64, note="2-D, float64"),
        case(_bce, 2, 3, 4, seed=2, soft=True, note="3-D, soft labels in [0, 1]"),
        case(_bce, 1, seed=3, note="a single element"),
        case(_bce, 5, 4, seed=4, scale=20.0, note="|logits| around 20 (sigmoid rounds to 0 or 1 in float32)"),
        case(_bce, 3, 5, seed=5, scale=1e4, soft=True, note="|logits| up to 1e4, soft labels"),
        case(_bce, 4, 4, seed=6, scale=10.0, shift=-200.0, note="only large negative logits (near -200)"),
        case(_bce, 4, 4, seed=7, scale=10.0, shift=200.0, note="only large positive logits (near 200)"),
        case(_bce_ladder, note="logits from -1e4 to 1e4 with both labels"),
        case(_bce, 6, 3, seed=8, dtype=f64, soft=True, layout="transposed", note="non-contiguous (transposed)"),
        case(_bce, 4, 5, seed=9, dtype=f64, soft=True, grad=True, note="gradient (logits and soft target)"),
        case(_bce_ladder, dtype=f64, grad=True, note="gradient, logits from -1e4 to 1e4"),
    ]


def _bce_flip(call):
    z = randn(3, 4, seed=60, dtype=f64)
    y = torch.rand(3, 4, generator=torch.Generator().manual_seed(61), dtype=f64)
    a, b = call(z, y), call(-z, 1 - y)
    if not torch.allclose(a, b):
        return msg("bce(-z, 1 - y) = {b:.6g} but bce(z, y) = {a:.6g}; they are the same quantity", a=float(a),
                   b=float(b))
    return None


def bce_naive(logits, target):
    p = 1 / (1 + torch.exp(-logits))
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()


def bce_softplus_overflow(logits, target):
    return (torch.log(1 + torch.exp(logits)) - target * logits).mean()


def bce_no_abs(logits, target):
    return (logits.clamp(min=0) - logits * target + torch.log1p(torch.exp(-logits))).mean()


def bce_no_log_term(logits, target):
    return (logits.clamp(min=0) - logits * target).mean()


def bce_abs_kink(logits, target):
    return (logits.clamp(min=0) - logits * target + torch.log1p(torch.exp(-logits.abs()))).mean()


def bce_sum(logits, target):
    return (logits.clamp(min=0) - logits * target + torch.log1p(torch.exp(-logits.abs()))).sum()


def bce_sum_last_axis(logits, target):
    loss = logits.clamp(min=0) - logits * target + torch.log1p(torch.exp(-logits.abs()))
    return loss.sum(-1).mean()


def bce_labels_swapped(logits, target):
    return (logits.clamp(min=0) - logits * (1 - target) + torch.log1p(torch.exp(-logits.abs()))).mean()


def bce_builtin(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target)


register(Exercise(
    name="binary_cross_entropy_with_logits",
    chapter="foundations/losses",
    signature="binary_cross_entropy_with_logits(logits, target)",
    oracle=lambda logits, target: F.binary_cross_entropy_with_logits(logits, target),
    cases=_bce_cases,
    forbidden=BCE_BUILTINS,
    properties=[Property("bce(-z, 1 - y) = bce(z, y)", _bce_flip)],
    hints=("rewrite the loss in z so that exp never sees a positive argument: (1 - y) * z + log(1 + exp(-z))   "
           "(eq. bce-stable)",
           "log(1 + exp(-z)) = log(exp(0) + exp(-z)) is a log-sum-exp of two terms: subtract their max m = max(-z, 0) "
           "inside and add it back outside",
           "m = max(-z, 0); loss = mean((1 - y) * z + m + log(exp(-m) + exp(-z - m)))   (eq. bce-stable)"),
    mistakes=[
        Mistake("log of sigmoid", bce_naive,
                "log(sigmoid(z)) and log(1 - sigmoid(z)) hit log(0) = -inf once sigmoid rounds to 0 or 1 (|z| > 17 "
                "in float32): use the stable form (1 - y)*z + m + log(exp(-m) + exp(-z - m)) with m = max(-z, 0), "
                "eq. (bce-stable)."),
        Mistake("softplus overflows", bce_softplus_overflow,
                "log(1 + exp(z)) overflows to inf for z > 88 in float32: rewrite it as max(z, 0) + "
                "log(1 + exp(-|z|))."),
        Mistake("missing abs", bce_no_abs,
                "with max(z, 0) in front, the log term must be log(1 + exp(-|z|)): log(1 + exp(-z)) is wrong for "
                "z < 0 (and overflows for z < -88)."),
        Mistake("missing log term", bce_no_log_term,
                "you kept max(z, 0) - z*y but dropped log(1 + exp(-|z|)): that term is what makes the loss smooth "
                "(log 2 at z = 0)."),
        Mistake("gradient wrong at z = 0", bce_abs_kink,
                "max(z, 0) - z*y + log1p(exp(-|z|)) has the right value, but at z = 0 autograd takes one-sided "
                "derivatives of max and |z| that do not add up: the gradient is 1 - y instead of sigmoid(0) - y. "
                "Write the log term as a shifted log-sum-exp, m + log(exp(-m) + exp(-z - m)) with m = max(-z, 0): "
                "the derivative through m cancels exactly."),
        Mistake("sum instead of mean", bce_sum,
                "you summed the element losses: the default reduction is the mean over every element."),
        Mistake("sum over the last axis", bce_sum_last_axis,
                "you summed over the last axis and averaged over the rest: PyTorch averages over every element."),
        Mistake("labels swapped", bce_labels_swapped,
                "the labels are swapped: the loss is -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], so the "
                "linear term is -z*y, not -z*(1 - y)."),
        Mistake("calls the built-in", bce_builtin,
                "this exercise asks you to write the loss yourself: F.binary_cross_entropy(_with_logits), "
                "logsigmoid and softplus are off limits; use exp, log1p, abs and clamp."),
    ],
    bench=(lambda: call(randn(4096, 1024, seed=0), torch.rand(4096, 1024, generator=torch.Generator().manual_seed(1))),
           F.binary_cross_entropy_with_logits),
))


# --------------------------------------------------------------------------- distillation_loss

def _kd(n, c, seed=0, dtype=f32, scale=1.0, temperature=None, positional=False, same=False):
    student = randn(n, c, seed=seed, dtype=dtype, scale=scale)
    teacher = student.clone() if same else randn(n, c, seed=seed + 100, dtype=dtype, scale=scale * 2)
    if temperature is None:
        return call(student, teacher)
    return call(student, teacher, temperature) if positional else call(student, teacher, temperature=temperature)


def _kd_oracle(student_logits, teacher_logits, temperature=2.0):
    T = temperature
    return F.kl_div(F.log_softmax(student_logits / T, -1), F.log_softmax(teacher_logits / T, -1),
                    reduction="batchmean", log_target=True) * T**2


def _kd_cases():
    return [
        case(_kd, 4, 10, note="default temperature 2"),
        case(_kd, 6, 5, seed=1, dtype=f64, temperature=4.0, note="temperature=4, float64"),
        case(_kd, 3, 7, seed=2, temperature=1.0, note="temperature=1 (no softening)"),
        case(_kd, 5, 6, seed=3, temperature=0.5, positional=True, note="temperature=0.5, passed positionally"),
        case(_kd, 1, 8, seed=4, temperature=3.0, note="batch of one"),
        case(_kd, 4, 6, seed=5, temperature=2.5, same=True, note="student equals teacher (the loss is 0)"),
        case(_kd, 4, 5, seed=6, scale=1000.0, temperature=1.0, note="logits in the thousands, temperature=1"),
        case(_kd, 3, 9, seed=7, dtype=f64, temperature=5.0, grad=True, note="gradient, temperature=5"),
        case(_kd, 4, 4, seed=8, dtype=f64, grad=True, note="gradient, default temperature"),
    ]


def _kd_nonnegative(call):
    for seed in range(3):
        s, t = randn(4, 6, seed=70 + seed, dtype=f64), randn(4, 6, seed=80 + seed, dtype=f64)
        v = float(call(s, t, temperature=3.0))
        if v < -1e-12:
            return msg("the loss is {v:.6g} < 0, but a KL divergence is never negative", v=v)
    return None


def _kd_parts(student_logits, teacher_logits, T):
    e_s = torch.exp(student_logits / T - (student_logits / T).amax(-1, keepdim=True))
    e_t = torch.exp(teacher_logits / T - (teacher_logits / T).amax(-1, keepdim=True))
    log_s = torch.log(e_s.sum(-1, keepdim=True))
    log_t = torch.log(e_t.sum(-1, keepdim=True))
    return (student_logits / T - (student_logits / T).amax(-1, keepdim=True) - log_s,
            teacher_logits / T - (teacher_logits / T).amax(-1, keepdim=True) - log_t)


def _kl(log_p_t, log_p_s):
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)             # (N,)


def kd_no_t2(student_logits, teacher_logits, temperature=2.0):
    log_s, log_t = _kd_parts(student_logits, teacher_logits, temperature)
    return _kl(log_t, log_s).mean()


def kd_times_t(student_logits, teacher_logits, temperature=2.0):
    log_s, log_t = _kd_parts(student_logits, teacher_logits, temperature)
    return _kl(log_t, log_s).mean() * temperature


def kd_reversed(student_logits, teacher_logits, temperature=2.0):
    log_s, log_t = _kd_parts(student_logits, teacher_logits, temperature)
    return _kl(log_s, log_t).mean() * temperature**2


def kd_mean_over_classes(student_logits, teacher_logits, temperature=2.0):
    log_s, log_t = _kd_parts(student_logits, teacher_logits, temperature)
    return _kl(log_t, log_s).mean() / student_logits.shape[-1] * temperature**2


def kd_teacher_not_softened(student_logits, teacher_logits, temperature=2.0):
    log_s, _ = _kd_parts(student_logits, teacher_logits, temperature)
    _, log_t = _kd_parts(student_logits, teacher_logits, 1.0)
    return _kl(log_t, log_s).mean() * temperature**2


def kd_student_not_softened(student_logits, teacher_logits, temperature=2.0):
    _, log_t = _kd_parts(student_logits, teacher_logits, temperature)
    log_s, _ = _kd_parts(student_logits, teacher_logits, 1.0)
    return _kl(log_t, log_s).mean() * temperature**2


def kd_soft_cross_entropy(student_logits, teacher_logits, temperature=2.0):
    log_s, log_t = _kd_parts(student_logits, teacher_logits, temperature)
    return -(log_t.exp() * log_s).sum(-1).mean() * temperature**2


def kd_log_of_softmax(student_logits, teacher_logits, temperature=2.0):
    T = temperature
    p_s = torch.softmax(student_logits / T, -1)
    p_t = torch.softmax(teacher_logits / T, -1)
    return (p_t * (torch.log(p_t) - torch.log(p_s))).sum(-1).mean() * T**2


def kd_detached_teacher(student_logits, teacher_logits, temperature=2.0):
    log_s, log_t = _kd_parts(student_logits, teacher_logits.detach(), temperature)
    return _kl(log_t, log_s).mean() * temperature**2


def kd_builtin(student_logits, teacher_logits, temperature=2.0):
    return _kd_oracle(student_logits, teacher_logits, temperature)


register(Exercise(
    name="distillation_loss",
    chapter="foundations/losses",
    signature="distillation_loss(student_logits, teacher_logits, temperature=2.0)",
    oracle=_kd_oracle,
    cases=_kd_cases,
    forbidden=KD_BUILTINS,
    properties=[Property("the loss is never negative", _kd_nonnegative)],
    hints=("soften both distributions with the same temperature and take KL(teacher || student), summed over "
           "classes, averaged over rows, scaled back by the temperature   (eq. kd-loss)",
           "compute log-probabilities with log_softmax(logits / T, -1) for both (never log(softmax(...))); the "
           "teacher's probabilities weight the sum",
           "T**2 * mean over rows of sum_c p_t * (log p_t - log p_s), p = softmax(logits / T)   (eq. kd-loss)"),
    mistakes=[
        Mistake("no T squared", kd_no_t2,
                "you left out the T**2 factor: softening by T shrinks the gradients by 1/T**2, and multiplying by "
                "T**2 restores their scale."),
        Mistake("T instead of T squared", kd_times_t,
                "you multiplied by T, not T**2: the gradient of the softened KL scales like 1/T**2."),
        Mistake("KL reversed", kd_reversed,
                "your KL is reversed: distillation uses KL(teacher || student) = sum p_t (log p_t - log p_s), "
                "the teacher's probabilities weighting the sum."),
        Mistake("mean over classes too", kd_mean_over_classes,
                "you averaged over the classes as well (kl_div's reduction='mean'): sum over classes, then "
                "average over the batch ('batchmean')."),
        Mistake("teacher not softened", kd_teacher_not_softened,
                "the teacher's logits were not divided by T: soften both distributions, softmax(teacher / T) "
                "and softmax(student / T)."),
        Mistake("student not softened", kd_student_not_softened,
                "the student's logits were not divided by T: soften both distributions with the same "
                "temperature."),
        Mistake("soft cross-entropy", kd_soft_cross_entropy,
                "you computed the soft cross-entropy -sum p_t log p_s, which is the KL plus the teacher's entropy: "
                "subtract sum p_t log p_t (its gradient for the student is the same, its value is not)."),
        Mistake("log of softmax", kd_log_of_softmax,
                "log(softmax(...)) underflows to -inf for logits far apart, and 0 * -inf is NaN: compute "
                "log-probabilities with log_softmax (or x - logsumexp(x))."),
        Mistake("teacher detached", kd_detached_teacher,
                "you detached the teacher's logits inside the loss: write the plain formula (the grader "
                "differentiates both arguments); detach the teacher in the training loop."),
        Mistake("calls kl_div", kd_builtin,
                "this exercise asks you to write the KL divergence yourself: F.kl_div is off limits; "
                "log_softmax and softmax are allowed."),
    ],
    bench=(lambda: call(randn(4096, 1024, seed=0), randn(4096, 1024, seed=1)), _kd_oracle),
))
