"""Red-team the graders of parts 1 and 2 (foundations, normalization) with implementations a real reader writes.

VALID: correct implementations in styles that differ from the chapter's solution; every one must pass.
WRONG: plausible wrong implementations that are not exactly a registered mistake; every one must be rejected,
and a diagnosis, if the grader attaches one, must be one of those listed (each describes what the code does).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.grader import run

# =========================================================================== softmax / log_softmax


def softmax_by_lse(x, dim=-1):
    m = x.amax(dim, keepdim=True)
    lse = m + torch.log(torch.exp(x - m).sum(dim, keepdim=True))
    return torch.exp(x - lse)


def softmax_movedim(x, dim=-1):
    z = x.movedim(dim, -1)
    z = z - torch.max(z, dim=-1, keepdim=True)[0]
    e = z.exp()
    return (e * (1.0 / e.sum(-1, keepdim=True))).movedim(-1, dim)


def softmax_detached_max(x, dim=-1):
    e = torch.exp(x - x.detach().max(dim, keepdim=True).values)     # the shift is a constant: same gradient
    return e / e.sum(dim=dim, keepdim=True)


def softmax_in_float64(x, dim=-1):
    y = x.double()
    e = (y - y.amax(dim, keepdim=True)).exp()
    return (e / e.sum(dim, keepdim=True)).to(x.dtype)


def softmax_wrong_shift_in_denominator(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / torch.exp(x).sum(dim, keepdim=True)


def softmax_max_along_dim_sum_along_last(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def log_softmax_lse(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    return x - (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True)))


def log_softmax_movedim(x, dim=-1):
    z = x.movedim(dim, -1)
    z = z - z.max(-1, keepdim=True).values
    return (z - z.exp().sum(-1, keepdim=True).log()).movedim(-1, dim)


def log_softmax_detached_max(x, dim=-1):
    m = x.max(dim, keepdim=True).values.detach()
    s = x - m
    return s - torch.log(torch.sum(torch.exp(s), dim, keepdim=True))


def log_softmax_in_float64(x, dim=-1):
    y = x.double()
    m = y.amax(dim, keepdim=True)
    return (y - m - (y - m).exp().sum(dim, keepdim=True).log()).to(x.dtype)


def log_softmax_double_shift(x, dim=-1):
    m = x.max(dim, keepdim=True).values
    return x - m - torch.log(torch.exp(x).sum(dim, keepdim=True))


def log_softmax_mean_not_sum(x, dim=-1):
    m = x.max(dim, keepdim=True).values
    return x - m - torch.log(torch.exp(x - m).mean(dim, keepdim=True))


# =========================================================================== losses


def _logp(x):
    m = x.max(-1, keepdim=True).values
    return x - m - torch.log(torch.exp(x - m).sum(-1, keepdim=True))


def ce_gather(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _logp(logits)
    keep = target != ignore_index
    safe = torch.where(keep, target, torch.zeros_like(target))
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    smooth = -logp.mean(-1)
    loss = (1 - label_smoothing) * nll + label_smoothing * smooth
    return (loss * keep).sum() / keep.sum()


def ce_one_hot(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    N, C = logits.shape
    keep = target != ignore_index
    onehot = F.one_hot(target.masked_fill(~keep, 0), C).to(logits.dtype)
    q = onehot * (1 - label_smoothing) + label_smoothing / C
    m = torch.amax(logits, dim=1, keepdim=True)
    logp = logits - m - (logits - m).exp().sum(1, keepdim=True).log()
    per_row = -(q * logp).sum(1)
    return per_row[keep].mean()


def ce_boolean_index(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    keep = target != ignore_index
    x, y = logits[keep], target[keep]
    lse = x.max(1).values + torch.log(torch.exp(x - x.max(1, keepdim=True).values).sum(1))
    nll = lse - x[torch.arange(len(y)), y]
    uniform = lse - x.mean(1)
    return ((1 - label_smoothing) * nll + label_smoothing * uniform).mean()


def ce_smoothing_off_true_class(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    C = logits.shape[1]
    keep = target != ignore_index
    onehot = F.one_hot(target.masked_fill(~keep, 0), C).to(logits.dtype)
    q = onehot * (1 - label_smoothing) + (1 - onehot) * label_smoothing / C      # eps/C on the others only
    return (-(q * _logp(logits)).sum(1))[keep].mean()


def ce_smoothing_sign(logits, target, *, ignore_index=-100, label_smoothing=0.0):
    logp = _logp(logits)
    keep = target != ignore_index
    nll = -logp.gather(1, target.clamp(min=0)[:, None]).squeeze(1)
    loss = (1 - label_smoothing) * nll + label_smoothing * logp.mean(-1)
    return (loss * keep).sum() / keep.sum()


def bce_logaddexp(logits, target):
    return ((1 - target) * logits + torch.logaddexp(torch.zeros_like(logits), -logits)).mean()


def bce_logsigmoid_by_hand(logits, target):
    def log_sigmoid(z):
        return -torch.logaddexp(torch.zeros_like(z), -z)
    return -(target * log_sigmoid(logits) + (1 - target) * log_sigmoid(-logits)).mean()


def bce_where_clamped(logits, target):
    z = logits
    softplus_neg = torch.where(z >= 0, torch.log1p(torch.exp(-z.clamp(min=0))),
                               -z + torch.log1p(torch.exp(z.clamp(max=0))))
    return ((1 - target) * z + softplus_neg).mean()


def _bce_stable(z, y):
    m = (-z).clamp(min=0)
    return (1 - y) * z + m + torch.log(torch.exp(-m) + torch.exp(-z - m))


def bce_row_mean_summed(logits, target):
    loss = _bce_stable(logits, target)
    return loss.mean(-1).sum() if loss.dim() > 1 else loss.mean()


def bce_thresholded_target(logits, target):
    return _bce_stable(logits, (target > 0.5).to(logits.dtype)).mean()


def kd_log_softmax(student_logits, teacher_logits, temperature=2.0):
    T = temperature
    log_s, log_t = F.log_softmax(student_logits / T, -1), F.log_softmax(teacher_logits / T, -1)
    return (F.softmax(teacher_logits / T, -1) * (log_t - log_s)).sum(-1).mean() * T**2


def kd_logsumexp(student_logits, teacher_logits, temperature=2.0):
    s, t = student_logits / temperature, teacher_logits / temperature
    log_s = s - torch.logsumexp(s, dim=1, keepdim=True)
    log_t = t - torch.logsumexp(t, dim=1, keepdim=True)
    return (log_t.exp() * (log_t - log_s)).sum() / s.shape[0] * temperature * temperature


def kd_ce_minus_entropy(student_logits, teacher_logits, temperature=2.0):
    T = temperature
    log_s = torch.log_softmax(student_logits / T, dim=-1)
    log_t = torch.log_softmax(teacher_logits / T, dim=-1)
    p_t = log_t.exp()
    cross = -(p_t * log_s).sum(-1).mean()
    entropy = -(p_t * log_t).sum(-1).mean()
    return (cross - entropy) * T**2


def kd_xlogy(student_logits, teacher_logits, temperature=2.0):
    T = temperature
    p = torch.softmax(teacher_logits / T, -1)
    return (torch.xlogy(p, p) - p * torch.log_softmax(student_logits / T, -1)).sum(-1).mean() * T * T


def kd_divided_by_t2(student_logits, teacher_logits, temperature=2.0):
    T = temperature
    log_s, log_t = F.log_softmax(student_logits / T, -1), F.log_softmax(teacher_logits / T, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean() / T**2


def kd_sum_over_batch_mean_over_classes(student_logits, teacher_logits, temperature=2.0):
    T = temperature
    log_s, log_t = F.log_softmax(student_logits / T, -1), F.log_softmax(teacher_logits / T, -1)
    return (log_t.exp() * (log_t - log_s)).sum(0).mean() * T**2


# =========================================================================== activations


def sigmoid_via_tanh(x):
    return 0.5 * (1 + torch.tanh(0.5 * x))


def sigmoid_logaddexp(x):
    return torch.exp(-torch.logaddexp(torch.zeros_like(x), -x))


def sigmoid_clamped_input(x):
    return 1 / (1 + torch.exp(-x.clamp(-80, 80)))


def sigmoid_sign_typo(x):
    return 1 / (1 + torch.exp(x.clamp(-80, 80)))


def sigmoid_where_min_max(x):
    e = torch.exp(torch.minimum(x, torch.zeros_like(x)))  # minimum splits the gradient at 0, but where discards it
    return torch.where(x >= 0, 1 / (1 + torch.exp(-x.clamp(min=0))), e / (1 + e))


def tanh_via_sigmoid(x):
    return 2 * torch.sigmoid(2 * x) - 1


def tanh_clamped_naive(x):
    e = torch.exp(2 * x.clamp(-20, 20))
    return (e - 1) / (e + 1)


def tanh_strict_where(x):
    a = torch.exp(-2 * x.clamp(min=0))
    b = torch.exp(2 * x.clamp(max=0))
    return torch.where(x > 0, (1 - a) / (1 + a), (b - 1) / (b + 1))


def tanh_odd_split(x):
    def g(u):
        a = torch.exp(-2 * u)
        return (1 - a) / (1 + a)
    return g(x.clamp(min=0)) - g((-x).clamp(min=0))               # gradient 2 at x = 0


def tanh_sigmoid_of_x(x):
    return 2 * torch.sigmoid(x) - 1


def relu_where(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu_masked_fill(x):
    return x.masked_fill(x <= 0, 0.0)


def relu_bool_times(x):
    return (x > 0) * x


def relu_abs_average(x):
    return (x + x.abs()) / 2


def relu_returns_mask(x):
    return (x > 0).to(x.dtype)


def leaky_mask_scale(x, negative_slope=0.01):
    return x * torch.where(x > 0, torch.ones_like(x), torch.full_like(x, negative_slope))


def leaky_float32_slope(x, negative_slope=0.01):
    return x * torch.where(x > 0, 1.0, negative_slope)      # scalars make a float32 tensor: 0.01 rounded in float64


def leaky_relu_combo(x, negative_slope=0.01):
    r = F.relu(x)
    return r + negative_slope * (x - r)


def leaky_where_le(x, negative_slope=0.01):
    return torch.where(x <= 0, negative_slope * x, x)


def leaky_clamp_sum(x, negative_slope=0.01):
    return x.clamp(min=0) + negative_slope * x.clamp(max=0)          # gradient 1 + slope at x = 0


def leaky_sign_typo(x, negative_slope=0.01):
    return torch.where(x > 0, x, -negative_slope * x)


def elu_mask_arith(x, alpha=1.0):
    pos = (x > 0).to(x.dtype)
    return pos * x + (1 - pos) * alpha * (torch.exp(x.clamp(max=0)) - 1)


def elu_where_le(x, alpha=1.0):
    return torch.where(x <= 0, alpha * torch.expm1(x.clamp(max=0)), x)


def elu_clamp_sum(x, alpha=1.0):
    return x.clamp(min=0) + alpha * torch.expm1(x.clamp(max=0))      # gradient 1 + alpha at x = 0


def elu_clamp_typo(x, alpha=1.0):
    return torch.where(x > 0, x, alpha * torch.expm1(x.clamp(min=0)))


def gelu_erfc(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))
    return 0.5 * x * torch.erfc(-x / math.sqrt(2))


def gelu_ndtr_sigmoid(x, approximate="none"):
    if approximate == "none":
        return x * torch.special.ndtr(x)
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
    return x * torch.sigmoid(2 * u)                                  # 0.5 (1 + tanh u) = sigmoid(2u)


def gelu_dict(x, approximate="none"):
    forms = {
        "none": lambda: x * 0.5 * (1.0 + torch.erf(x / 2**0.5)),
        "tanh": lambda: x * 0.5 * (1.0 + torch.tanh((2 / math.pi) ** 0.5 * (x + 0.044715 * x**3))),
    }
    return forms[approximate]()


def gelu_factored(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x * (1 + 0.044715 * x * x)))
    return x * 0.5 * (1 + torch.erf(x * 0.7071067811865476))


def gelu_sqrt_2pi_typo(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 * math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_erf_over_2(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + torch.erf(x / 2))


def gelu_capitalised_tanh(x, approximate="none"):
    if approximate == "Tanh":                                        # never true: always the exact form
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def silu_clamped(x):
    return x / (1 + torch.exp(-x.clamp(min=-80)))


def silu_tanh(x):
    return x * 0.5 * (1 + torch.tanh(x / 2))


def silu_expit(x):
    return x * torch.special.expit(x)


def silu_sign_typo(x):
    return x * torch.sigmoid(-x)


def silu_sigmoid_in_place(x):
    return x * x.sigmoid_()


# =========================================================================== optimizers


class SGDData(torch.optim.Optimizer):
    """Old-school: everything through .data, the momentum buffer under its own key."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.data
                if group["weight_decay"] != 0:
                    d_p = d_p.add(p.data, alpha=group["weight_decay"])
                if group["momentum"] != 0:
                    st = self.state[p]
                    if "buf" not in st:
                        st["buf"] = torch.clone(d_p).detach()
                    else:
                        st["buf"].mul_(group["momentum"]).add_(d_p)
                    d_p = d_p.add(st["buf"], alpha=group["momentum"]) if group["nesterov"] else st["buf"]
                p.data.add_(d_p, alpha=-group["lr"])
        return loss


class SGDVelocityFromZero(torch.optim.Optimizer):
    """SGD with the buffer updated out of place and started at zero (equal to PyTorch's without dampening)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + group["weight_decay"] * p
                mu = group["momentum"]
                if mu:
                    buf = self.state[p]["buf"] = mu * self.state[p].get("buf", torch.zeros_like(p)) + g
                    g = g + mu * buf if group["nesterov"] else buf
                p.sub_(group["lr"] * g)
        return loss


class SGDOutOfPlace(torch.optim.Optimizer):
    """Out of place under no_grad, buffer started at zero (mu * 0 + g = g at the first step)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p
                if mu:
                    buf = mu * self.state[p].get("v", torch.zeros_like(p)) + g
                    self.state[p]["v"] = buf
                    g = g + mu * buf if group["nesterov"] else buf
                p.copy_(p - lr * g)
        return loss


class SGDDampenedFromGrad(SGDOutOfPlace):
    """Wrong: buf = mu * buf + (1 - mu) * g, started at g."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p
                if mu:
                    st = self.state[p]
                    st["v"] = g.clone() if "v" not in st else mu * st["v"] + (1 - mu) * g
                    g = g + mu * st["v"] if group["nesterov"] else st["v"]
                p.sub_(lr * g)


class SGDDecaySign(SGDOutOfPlace):
    """Wrong: g - wd * p."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad - wd * p
                if mu:
                    buf = mu * self.state[p].get("v", torch.zeros_like(p)) + g
                    self.state[p]["v"] = buf
                    g = g + mu * buf if group["nesterov"] else buf
                p.copy_(p - lr * g)


def _adam_init(self, params, lr, betas, eps, weight_decay):
    torch.optim.Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))


class AdamOutOfPlace(torch.optim.Optimizer):
    """Textbook Adam, out of place, moments kept in state as new tensors every step."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _adam_init(self, params, lr, betas, eps, weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd and not self.decoupled:
                    g = g + wd * p
                st = self.state[p]
                t = st.get("t", 0) + 1
                m = b1 * st.get("m", torch.zeros_like(p)) + (1 - b1) * g
                v = b2 * st.get("v", torch.zeros_like(p)) + (1 - b2) * g**2
                st.update(t=t, m=m, v=v)
                m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
                new = p * (1 - lr * wd) if (wd and self.decoupled) else p
                p.copy_(new - lr * m_hat / (torch.sqrt(v_hat) + eps))
        return loss


class AdamPaperStepSize(torch.optim.Optimizer):
    """Kingma & Ba's efficient form: alpha_t = lr * sqrt(1 - b2^t) / (1 - b1^t), eps_hat = eps * sqrt(1 - b2^t)."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _adam_init(self, params, lr, betas, eps, weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"].item()
                g = p.grad if (self.decoupled or not wd) else p.grad.add(p, alpha=wd)
                if self.decoupled:
                    p.mul_(1 - lr * wd)
                state["exp_avg"].lerp_(g, 1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                bc2_sqrt = math.sqrt(1 - b2**t)
                step_size = lr * bc2_sqrt / (1 - b1**t)
                denom = state["exp_avg_sq"].sqrt().add_(eps * bc2_sqrt)
                p.addcdiv_(state["exp_avg"], denom, value=-step_size)
        return loss


class AdamInPlaceAddcdiv(torch.optim.Optimizer):
    """PyTorch's own single-tensor order of operations, written with the in-place methods."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _adam_init(self, params, lr, betas, eps, weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in filter(lambda q: q.grad is not None, group["params"]):
                st = self.state[p]
                if len(st) == 0:
                    st["step"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                g = p.grad
                if group["weight_decay"]:
                    if self.decoupled:
                        p.add_(p, alpha=-group["lr"] * group["weight_decay"])
                    else:
                        g = g.add(p, alpha=group["weight_decay"])
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).add_(g * g, alpha=1 - b2)
                denom = (st["v"].sqrt() / math.sqrt(1 - b2 ** st["step"])).add_(group["eps"])
                p.addcdiv_(st["m"], denom, value=-group["lr"] / (1 - b1 ** st["step"]))
        return loss


class AdamWOutOfPlace(AdamOutOfPlace):
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        _adam_init(self, params, lr, betas, eps, weight_decay)


class AdamWPaperStepSize(AdamPaperStepSize):
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        _adam_init(self, params, lr, betas, eps, weight_decay)


class AdamWInPlaceAddcdiv(AdamInPlaceAddcdiv):
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        _adam_init(self, params, lr, betas, eps, weight_decay)


class AdamWCombinedUpdate(torch.optim.Optimizer):
    """p <- p - lr * (wd * p + m_hat / (sqrt(v_hat) + eps)): decay and step in one expression."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        _adam_init(self, params, lr, betas, eps, weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state.setdefault(p, {})
                st["t"] = st.get("t", 0) + 1
                st["m"] = torch.lerp(st.get("m", torch.zeros_like(p)), p.grad, 1 - b1)
                st["v"] = b2 * st.get("v", torch.zeros_like(p)) + (1 - b2) * p.grad.square()
                u = (st["m"] / (1 - b1 ** st["t"])) / ((st["v"] / (1 - b2 ** st["t"])).sqrt() + eps)
                p.sub_(lr * (wd * p + u))
        return loss


class AdamStepFromZero(AdamOutOfPlace):
    """Wrong: the step counter is read before it is incremented (t = 0 at the first step)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p
                st = self.state[p]
                t = st.get("t", 0)
                m = b1 * st.get("m", torch.zeros_like(p)) + (1 - b1) * g
                v = b2 * st.get("v", torch.zeros_like(p)) + (1 - b2) * g**2
                st.update(t=t + 1, m=m, v=v)
                p.sub_(lr * (m / (1 - b1 ** (t + 1e-12))) / (torch.sqrt(v / (1 - b2 ** (t + 1e-12))) + eps))


class AdamVNotSquared(AdamOutOfPlace):
    """Wrong: v accumulates |g| instead of g^2."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p
                st = self.state[p]
                t = st.get("t", 0) + 1
                m = b1 * st.get("m", torch.zeros_like(p)) + (1 - b1) * g
                v = b2 * st.get("v", torch.zeros_like(p)) + (1 - b2) * g.abs()
                st.update(t=t, m=m, v=v)
                p.sub_(lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps))


class AdamWDoubleDecay(AdamWOutOfPlace):
    """Wrong: decoupled decay AND wd * p added to the gradient."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p
                st = self.state[p]
                t = st.get("t", 0) + 1
                m = b1 * st.get("m", torch.zeros_like(p)) + (1 - b1) * g
                v = b2 * st.get("v", torch.zeros_like(p)) + (1 - b2) * g**2
                st.update(t=t, m=m, v=v)
                p.mul_(1 - lr * wd).sub_(lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps))


def cosine_min_progress(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_numpy_ge(step, max_lr, min_lr, warmup_steps, total_steps):
    if step >= total_steps:                                  # the cosine is exactly min_lr at total_steps
        return min_lr
    if step <= warmup_steps and warmup_steps > 0:            # max_lr at step = warmup either way
        return step / warmup_steps * max_lr
    ratio = (step - warmup_steps) / (total_steps - warmup_steps)
    return (max_lr - min_lr) * (np.cos(np.pi * ratio) + 1) / 2 + min_lr    # an np.float64 is a float


def cosine_torch_item(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return float(max_lr * step / warmup_steps)
    if step > total_steps:
        return float(min_lr)
    ratio = torch.tensor((step - warmup_steps) / (total_steps - warmup_steps), dtype=torch.float64)
    return (min_lr + 0.5 * (1 + torch.cos(math.pi * ratio)) * (max_lr - min_lr)).item()


def cosine_no_half(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step > total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def cosine_progress_over_total(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step > total_steps:
        return min_lr
    progress = (step - warmup_steps) / total_steps
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def _grads(parameters):
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_sum_of_squares(parameters, max_norm):
    grads = _grads(parameters)
    total = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.detach().mul_(coef)
    return total


def clip_cat_reassign(parameters, max_norm):
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    with_grad = [p for p in params if p.grad is not None]
    total = torch.cat([p.grad.flatten() for p in with_grad]).norm(2)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in with_grad:
        p.grad = p.grad * coef                                   # a new tensor, but the same values
    return total


def clip_if_above(parameters, max_norm):
    grads = _grads(parameters)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2) for g in grads]), 2)
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-6))
    return total


def clip_no_sqrt(parameters, max_norm):
    grads = _grads(parameters)
    total = sum((g**2).sum() for g in grads)
    for g in grads:
        g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def clip_eps_precedence(parameters, max_norm):
    grads = _grads(parameters)
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    for g in grads:
        g.mul_(torch.clamp(max_norm / total + 1e-6, max=1.0))
    return total


# =========================================================================== normalization


def _shape_c(v, x):
    return v.view(1, -1, *([1] * (x.dim() - 2)))


class BNVarLerp(nn.Module):
    """x.var(unbiased=False) for the forward pass, x.var(unbiased=True) and lerp_ for the running statistics."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        if self.training:
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(x.var(dim=dims, unbiased=True), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - _shape_c(mean, x)) / torch.sqrt(_shape_c(var, x) + self.eps)
        return x_hat * _shape_c(self.weight, x) + _shape_c(self.bias, x)


class BNChannelsLast(nn.Module):
    """Move channels to the last axis so that (C,) vectors broadcast; mean of squares by hand."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        z = x.movedim(1, -1)                                    # (N, *, C)
        if self.training:
            flat = z.reshape(-1, self.num_features)             # (n, C)
            n = flat.shape[0]
            mean = flat.mean(0)
            var = ((flat - mean) ** 2).mean(0)
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        y = (z - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return y.movedim(-1, 1)


class BNFlatReassign(nn.Module):
    """(C, n) view; running statistics reassigned (a registered buffer name stays a buffer)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        if self.training:
            flat = x.transpose(0, 1).reshape(x.shape[1], -1)
            var, mean = torch.var_mean(flat, dim=1, correction=0)
            n = flat.shape[1]
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean.detach()
            self.running_var = (1 - m) * self.running_var + m * var.detach() * (n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        return self.weight.reshape(shape) * (x - mean.reshape(shape)) / (var.reshape(shape) + self.eps).sqrt() \
            + self.bias.reshape(shape)


class BNDotData(BNVarLerp):
    """Running statistics replaced through .data, n as a float."""

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        if self.training:
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            n = x.numel() / x.size(1)
            m = self.momentum
            self.running_mean.data = (1 - m) * self.running_mean.data + m * mean.data
            self.running_var.data = (1 - m) * self.running_var.data + m * var.data * n / (n - 1)
        else:
            mean, var = self.running_mean, self.running_var
        sh = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean.view(sh)) / (var.view(sh) + self.eps).sqrt() * self.weight.view(sh) + self.bias.view(sh)


class BNRunningInTraining(BNVarLerp):
    """Wrong: updates the running statistics, then normalises with them in training mode as well."""

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        if self.training:
            with torch.no_grad():
                self.running_mean.lerp_(x.mean(dims), self.momentum)
                self.running_var.lerp_(x.var(dims, unbiased=True), self.momentum)
        x_hat = (x - _shape_c(self.running_mean, x)) / torch.sqrt(_shape_c(self.running_var, x) + self.eps)
        return x_hat * _shape_c(self.weight, x) + _shape_c(self.bias, x)


class BNBesselOverBatchOnly(BNVarLerp):
    """Wrong: the n / (n - 1) correction uses n = N, not the N * L (* H * W) values per channel."""

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        if self.training:
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            n = x.shape[0]
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - _shape_c(mean, x)) / torch.sqrt(_shape_c(var, x) + self.eps)
        return x_hat * _shape_c(self.weight, x) + _shape_c(self.bias, x)


class _LNBase(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(*self.normalized_shape))
            self.bias = nn.Parameter(torch.zeros(*self.normalized_shape))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def affine(self, y):
        return y if self.weight is None else y * self.weight + self.bias


class LNVar(_LNBase):
    def forward(self, x):
        dims = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        return self.affine((x - mean) / torch.sqrt(var + self.eps))


class LNFlatten(_LNBase):
    def forward(self, x):
        k = len(self.normalized_shape)
        flat = x.reshape(*x.shape[: x.dim() - k], -1)
        mu = flat.mean(-1, keepdim=True)
        c = flat - mu
        y = c * torch.rsqrt((c * c).mean(-1, keepdim=True) + self.eps)
        return self.affine(y.reshape(x.shape))


class LNVarMean(_LNBase):
    def forward(self, x):
        dims = [-(i + 1) for i in range(len(self.normalized_shape))]
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        return self.affine((x - mean) / (var + self.eps) ** 0.5)


class LNVarLastAxis(_LNBase):
    """Wrong: mean over the normalised axes, variance over the last axis only."""

    def forward(self, x):
        dims = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return self.affine((x - mean) / torch.sqrt(var + self.eps))


class LNStdPlusEps(_LNBase):
    """Wrong: unbiased std and eps outside, (x - mean) / (x.std() + eps)."""

    def forward(self, x):
        dims = tuple(range(-len(self.normalized_shape), 0))
        return self.affine((x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + self.eps))


class _RMSBase(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))


class RMSRsqrt(_RMSBase):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RMSChain(_RMSBase):
    def forward(self, x):
        return self.weight * (x / x.square().mean(dim=-1, keepdim=True).add(self.eps).sqrt())


class RMSVectorNorm(_RMSBase):
    def forward(self, x):
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) ** 2 / self.dim
        return x / torch.sqrt(ms + self.eps) * self.weight


class RMSBesselTypo(_RMSBase):
    """Wrong: sum of squares over dim - 1."""

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) / (self.dim - 1) + self.eps) * self.weight


class RMSZeroWeight(RMSRsqrt):
    """Wrong: weight starts at 0 (nn.RMSNorm starts at 1); invisible to cases that load random weights."""

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim, eps)
        self.weight = nn.Parameter(torch.zeros(dim))


class LNSwappedInit(LNVar):
    """Wrong: weight starts at 0 and bias at 1."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__(normalized_shape, eps, elementwise_affine)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.zeros(self.normalized_shape))
            self.bias = nn.Parameter(torch.ones(self.normalized_shape))


class BNZeroRunningVar(BNVarLerp):
    """Wrong: running_var starts at 0, so a fresh module in eval mode divides by sqrt(eps)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.running_var.zero_()


class RMSEpsNotAdded(_RMSBase):
    """Wrong: eps as a floor (max) instead of a sum."""

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True).clamp(min=self.eps)) * self.weight


# =========================================================================== the tables

VALID = [
    ("softmax", softmax_by_lse), ("softmax", softmax_movedim), ("softmax", softmax_detached_max),
    ("softmax", softmax_in_float64),
    ("log_softmax", log_softmax_lse), ("log_softmax", log_softmax_movedim), ("log_softmax", log_softmax_detached_max),
    ("log_softmax", log_softmax_in_float64),
    ("cross_entropy", ce_gather), ("cross_entropy", ce_one_hot), ("cross_entropy", ce_boolean_index),
    ("binary_cross_entropy_with_logits", bce_logaddexp),
    ("binary_cross_entropy_with_logits", bce_logsigmoid_by_hand),
    ("binary_cross_entropy_with_logits", bce_where_clamped),
    ("distillation_loss", kd_log_softmax), ("distillation_loss", kd_logsumexp),
    ("distillation_loss", kd_ce_minus_entropy), ("distillation_loss", kd_xlogy),
    ("sigmoid", sigmoid_via_tanh), ("sigmoid", sigmoid_logaddexp), ("sigmoid", sigmoid_clamped_input),
    ("sigmoid", sigmoid_where_min_max),
    ("tanh", tanh_via_sigmoid), ("tanh", tanh_clamped_naive), ("tanh", tanh_strict_where),
    ("relu", relu_where), ("relu", relu_masked_fill), ("relu", relu_bool_times),
    ("leaky_relu", leaky_mask_scale), ("leaky_relu", leaky_relu_combo), ("leaky_relu", leaky_where_le),
    ("elu", elu_mask_arith), ("elu", elu_where_le),
    ("gelu", gelu_erfc), ("gelu", gelu_ndtr_sigmoid), ("gelu", gelu_dict), ("gelu", gelu_factored),
    ("silu", silu_clamped), ("silu", silu_tanh), ("silu", silu_expit),
    ("SGD", SGDData), ("SGD", SGDOutOfPlace), ("SGD", SGDVelocityFromZero),
    ("Adam", AdamOutOfPlace), ("Adam", AdamPaperStepSize), ("Adam", AdamInPlaceAddcdiv),
    ("AdamW", AdamWOutOfPlace), ("AdamW", AdamWPaperStepSize), ("AdamW", AdamWInPlaceAddcdiv),
    ("AdamW", AdamWCombinedUpdate),
    ("cosine_lr", cosine_min_progress), ("cosine_lr", cosine_numpy_ge), ("cosine_lr", cosine_torch_item),
    ("clip_grad_norm_", clip_sum_of_squares), ("clip_grad_norm_", clip_cat_reassign),
    ("clip_grad_norm_", clip_if_above),
    ("BatchNorm", BNVarLerp), ("BatchNorm", BNChannelsLast), ("BatchNorm", BNFlatReassign), ("BatchNorm", BNDotData),
    ("LayerNorm", LNVar), ("LayerNorm", LNFlatten), ("LayerNorm", LNVarMean),
    ("RMSNorm", RMSRsqrt), ("RMSNorm", RMSChain), ("RMSNorm", RMSVectorNorm),
]

# (exercise, wrong implementation, the diagnoses that describe it: None means "no diagnosis")
WRONG = [
    ("softmax", softmax_wrong_shift_in_denominator, {None}),
    ("softmax", softmax_max_along_dim_sum_along_last, {None, "last axis always"}),
    ("log_softmax", log_softmax_double_shift, {None}),
    ("log_softmax", log_softmax_mean_not_sum, {None}),
    ("cross_entropy", ce_smoothing_off_true_class, {None}),
    ("cross_entropy", ce_smoothing_sign, {None}),
    ("binary_cross_entropy_with_logits", bce_row_mean_summed, {None}),
    ("binary_cross_entropy_with_logits", bce_thresholded_target, {None}),
    ("distillation_loss", kd_divided_by_t2, {None}),
    ("distillation_loss", kd_sum_over_batch_mean_over_classes, {None}),
    ("sigmoid", sigmoid_sign_typo, {None, "branches swapped"}),     # it computes sigmoid(-x), as that mistake does
    ("tanh", tanh_odd_split, {None}),
    ("tanh", tanh_sigmoid_of_x, {"tanh(x/2)"}),
    ("relu", relu_abs_average, {"gradient 1/2 at zero"}),
    ("relu", relu_returns_mask, {None}),
    ("leaky_relu", leaky_clamp_sum, {None}),
    ("leaky_relu", leaky_sign_typo, {None}),
    # off by 2e-8 relative in float64 on a case without zeros, where the mistake "gradient 1 at zero" equals the
    # reference: a mistake that does not show on a case must not be named for it (diagnose() in core.py)
    ("leaky_relu", leaky_float32_slope, {None}),
    ("elu", elu_clamp_sum, {None}),
    ("elu", elu_clamp_typo, {None}),
    ("gelu", gelu_sqrt_2pi_typo, {None}),
    ("gelu", gelu_erf_over_2, {None}),
    ("gelu", gelu_capitalised_tanh, {"approximate ignored (exact)"}),
    ("silu", silu_sign_typo, {None}),
    ("silu", silu_sigmoid_in_place, {None, "in place"}),
    ("SGD", SGDDampenedFromGrad, {None}),
    ("SGD", SGDDecaySign, {None}),
    ("Adam", AdamStepFromZero, {None}),
    ("Adam", AdamVNotSquared, {None}),
    ("AdamW", AdamWDoubleDecay, {None}),
    ("cosine_lr", cosine_no_half, {None}),
    ("cosine_lr", cosine_progress_over_total, {None}),
    ("clip_grad_norm_", clip_no_sqrt, {None}),
    ("clip_grad_norm_", clip_eps_precedence, {None, "no 1e-6 in the factor"}),
    ("BatchNorm", BNRunningInTraining, {None}),
    ("BatchNorm", BNBesselOverBatchOnly, {None}),
    ("LayerNorm", LNVarLastAxis, {None}),
    ("LayerNorm", LNStdPlusEps, {None, "unbiased variance", "eps outside the square root"}),
    ("LayerNorm", LNSwappedInit, {None}),
    ("BatchNorm", BNZeroRunningVar, {None}),
    ("RMSNorm", RMSZeroWeight, {None}),
    ("RMSNorm", RMSBesselTypo, {None}),
    ("RMSNorm", RMSEpsNotAdded, {None}),
]


@pytest.mark.parametrize("name,impl", VALID, ids=[f"{n}: {f.__name__}" for n, f in VALID])
def test_valid_variant_passes(name, impl):
    report = run(name, impl)
    assert report.passed, f"a correct {name} ({impl.__name__}) is rejected:\n{report}"


@pytest.mark.parametrize("name,impl,allowed", WRONG, ids=[f"{n}: {f.__name__}" for n, f, _ in WRONG])
def test_wrong_variant_is_rejected_without_a_wrong_diagnosis(name, impl, allowed):
    report = run(name, impl)
    assert not report.passed, f"a wrong {name} ({impl.__name__}) passes"
    assert report.status == "failed"
    assert report.failure.mistake in allowed, (
        f"{impl.__name__} was diagnosed as {report.failure.mistake!r}, expected one of {allowed}:\n{report}")
    assert str(report)     # the report renders


@pytest.mark.parametrize("name,impl", [("LayerNorm", LNSwappedInit), ("BatchNorm", BNZeroRunningVar),
                                       ("RMSNorm", RMSZeroWeight)])
def test_wrong_initial_state_is_caught_by_the_fresh_module_property(name, impl):
    report = run(name, impl)
    assert report.n_passed == report.n_cases, "every case loads random weights, so every case passes"
    assert report.failure.problem.kind == "property" and "freshly constructed" in report.failure.problem.message
