"""Part 1, foundations: SGD, Adam, AdamW, warmup-cosine schedule, gradient clipping (chapter foundations/optimizers).

The three optimizers are graded by `OptimizerExercise`: the reader's class and the torch.optim class start from
the same parameters, receive the same gradients (seeded noise plus a pull towards zero, so an error feeds back into
later gradients), and every parameter is compared after every step. The mistakes are small single-tensor optimizers
built on `_SGD` / `_Adam` below, each overriding exactly one piece.

`cosine_lr` is driven over every step of a schedule (both boundaries and past the end) by `ScheduleExercise`;
`clip_grad_norm_` by `GradientsExercise`, whose outcome holds the returned norm and every gradient after the call.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from ....i18n import msg
from ...core import Case, Mistake, Property
from ...inputs import f32, f64, randn
from ...kinds import GradientsExercise, OptimizerExercise, OptimizerRun, ScheduleExercise, eager
from ...registry import register



# --------------------------------------------------------------------------- optimizer runs

def _grad_fn(scale=1.0, pull=0.5, seed=0, skip=None):
    """Gradient of parameter i at step t: pull * value + seeded noise, times scale; None where skip(t, i)."""
    def grad(t, i, value):
        if skip is not None and skip(t, i):
            return None
        noise = randn(*value.shape, seed=seed + 1000 * t + i, dtype=f64)
        return (pull * value.double() + noise) * scale
    return grad


def _never_param_2(t, i):
    return i == 2


def _intermittent(t, i):
    """Parameter 2 never has a gradient; parameter 1 misses every third step (as unused embedding rows do)."""
    return i == 2 or (i == 1 and t % 3 == 0)


def _run(shapes, hyper, steps=20, dtype=f32, groups=None, seed=0, protocol=None, **grad):
    params = [randn(*s, seed=seed + 10 * k, dtype=dtype) for k, s in enumerate(shapes)]
    groups = groups or [{"params": list(range(len(shapes)))}]
    return OptimizerRun(params, groups, hyper, steps, _grad_fn(seed=seed + 500, **grad), **(protocol or {}))


def _decaying_lr(t):
    """A scheduler's multiplier: the rate changes before every step."""
    return 1.0 / (1.0 + 0.15 * t)


# Training code drives an optimizer through more than `p.grad = g; step()`: these cases do what schedulers,
# gradient accumulation, closures (L-BFGS style) and resuming from a checkpoint do.
LR_CHANGED = dict(lr_at=_decaying_lr)
ZERO_GRAD = dict(zero_grad=True)
CLOSURE = dict(closure=True)
RELOAD = dict(reload_after=7)


def _protocol_cases(hyper):
    return [
        _opt_case("lr changed before every step, as a scheduler does", (5,), (2, 3), hyper=hyper, steps=15,
                  seed=20, dtype=f64, protocol=LR_CHANGED),
        _opt_case("zero_grad(set_to_none=False), then gradients added into .grad", (4,), (3,), seed=21,
                  hyper=hyper, steps=15, dtype=f64, protocol=ZERO_GRAD),
        _opt_case("step(closure): the closure computes the gradients and returns the loss", (6,), (2, 2),
                  seed=22, hyper=hyper, steps=12, dtype=f64, protocol=CLOSURE),
        _opt_case("state_dict() loaded into a new optimizer after step 7, as resuming from a checkpoint does",
                  (4,), (3, 2), seed=23, hyper=hyper, steps=15, dtype=f64, protocol=RELOAD),
    ]


def _opt_case(note, *shapes, **kw):
    return Case(make=partial(_run, shapes, **kw), note=note)


# The functional forms are plain Python functions; the engine swaps them out while the reader's code runs.
OPTIM_FUNCTIONALS = ("torch.optim.sgd.sgd", "torch.optim.adam.adam", "torch.optim.adamw.adamw")

FUSED = ("torch._fused_sgd_", "torch._fused_adam_", "torch._fused_adamw_") + OPTIM_FUNCTIONALS


# --------------------------------------------------------------------------- SGD: the mistakes' skeleton

def closure_loss(closure):
    """What step(closure) does first: the closure's loss, computed with autograd on (None without a closure)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class _SGD(torch.optim.Optimizer):
    """Single-tensor SGD with momentum, L2 weight decay and Nesterov, in overridable pieces (for the mistakes)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def hyper(self, group):
        return group

    def decay(self, p, g, wd):
        return g + wd * p

    def buffer(self, state, g, mu):
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.clone()
        else:
            state["momentum_buffer"].mul_(mu).add_(g)
        return state["momentum_buffer"]

    def direction(self, g, buf, mu, nesterov):
        return g + mu * buf if nesterov else buf

    def move(self, p, g, h):
        p.add_(g, alpha=-h["lr"])

    def evaluate(self, closure):
        return closure_loss(closure)

    def momentum_state(self, p):
        return self.state[p]

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.evaluate(closure)
        for group in self.param_groups:
            h = self.hyper(group)
            for p in group["params"]:
                if self.skips(p):
                    continue
                g = p.grad
                if h["weight_decay"]:
                    g = self.decay(p, g, h["weight_decay"])
                if h["momentum"]:
                    buf = self.buffer(self.momentum_state(p), g, h["momentum"])
                    g = self.direction(g, buf, h["momentum"], h["nesterov"])
                self.move(p, g, h)
        return loss

    def skips(self, p):
        return p.grad is None


class SGDAverage(_SGD):
    def buffer(self, state, g, mu):
        buf = state.setdefault("momentum_buffer", torch.zeros_like(g))
        return buf.mul_(mu).add_(g, alpha=1 - mu)


class SGDNoDecay(_SGD):
    def decay(self, p, g, wd):
        return g


class SGDDecayOutsideMomentum(_SGD):
    def decay(self, p, g, wd):
        return g

    def move(self, p, g, h):
        p.add_(g + h["weight_decay"] * p, alpha=-h["lr"])


class SGDNesterovIgnored(_SGD):
    def direction(self, g, buf, mu, nesterov):
        return buf


class SGDNesterovNoGradient(_SGD):
    def direction(self, g, buf, mu, nesterov):
        return mu * buf if nesterov else buf


class SGDBufferNotKept(_SGD):
    def buffer(self, state, g, mu):
        return g.clone()


class SGDDefaults(_SGD):
    def hyper(self, group):
        return self.defaults


class SGDNoneGrad(_SGD):
    def skips(self, p):
        return False


class SGDLrReadOnce(_SGD):
    """Reads each group's lr once, in the constructor."""

    def __init__(self, params, lr, **kw):
        super().__init__(params, lr, **kw)
        self.lrs = [g["lr"] for g in self.param_groups]

    def hyper(self, group):
        return {**group, "lr": self.lrs[self.param_groups.index(group)]}


class SGDDecayIntoGrad(_SGD):
    def decay(self, p, g, wd):
        return p.grad.add_(p, alpha=wd)          # edits the caller's .grad


class SGDStateOutside(_SGD):
    """Keeps the momentum buffers in its own dict: state_dict() does not see them."""

    def momentum_state(self, p):
        return self.__dict__.setdefault("buffers", {}).setdefault(id(p), {})


class SGDIgnoresClosure(_SGD):
    def evaluate(self, closure):
        return None


def PROTOCOL_MISTAKES(lr_read_once, decay_into_grad, state_outside, ignores_closure):  # noqa: N802
    """The mistakes of driving an optimizer: the same four messages for every optimizer exercise."""
    return [m for m in (
        lr_read_once and Mistake("lr read once", lr_read_once,
                                 "your step uses the learning rate the optimizer was built with: schedulers change "
                                 "group['lr'] between steps, so read it from the group inside step()."),
        decay_into_grad and Mistake("gradient edited in place", decay_into_grad,
                                    "your step() changes p.grad in place (p.grad.add_(...)): the caller's gradients "
                                    "must stay as they were (gradient accumulation and clipping read them); "
                                    "compute g = p.grad + wd·p into a new tensor."),
        state_outside and Mistake("state outside self.state", state_outside,
                                  "after state_dict() / load_state_dict() your optimizer starts its buffers afresh: "
                                  "keep every buffer in self.state[p], which state_dict() saves and "
                                  "load_state_dict() restores."),
        ignores_closure and Mistake("closure ignored", ignores_closure,
                                    "step(closure) must call the closure (under torch.enable_grad()) before the "
                                    "update and return its loss: that is how L-BFGS-style training calls step."),
    ) if m]


SGD_CASES = lambda: [  # noqa: E731
    _opt_case("plain SGD", (5,), (3, 4), hyper=dict(lr=0.1)),
    _opt_case("momentum=0.9, float64", (6,), (2, 3), hyper=dict(lr=0.05, momentum=0.9), steps=30, dtype=f64),
    _opt_case("Nesterov momentum", (4, 3), (5,), hyper=dict(lr=0.05, momentum=0.9, nesterov=True), steps=30,
              dtype=f64, seed=1),
    _opt_case("weight decay with momentum", (4,), (3, 3), hyper=dict(lr=0.05, momentum=0.8, weight_decay=0.1),
              steps=25, seed=2),
    _opt_case("weight decay, no momentum", (7,), hyper=dict(lr=0.1, weight_decay=0.05), seed=3),
    _opt_case("Nesterov with weight decay", (3, 2), (4,), dtype=f64, steps=25, seed=4,
              hyper=dict(lr=0.03, momentum=0.7, weight_decay=0.2, nesterov=True)),
    _opt_case("two param groups: the second overrides lr, momentum and weight_decay", (4,), (3, 2), (5,), seed=5,
              hyper=dict(lr=0.05, momentum=0.9), steps=25,
              groups=[{"params": [0, 1]}, {"params": [2], "lr": 0.2, "momentum": 0.5, "weight_decay": 0.1}]),
    _opt_case("parameters without gradients (one never, one every third step)", (4,), (3,), (2, 2), seed=6,
              hyper=dict(lr=0.05, momentum=0.9, weight_decay=0.01), steps=24, skip=_intermittent),
    _opt_case("100 steps, large gradients", (8,), hyper=dict(lr=0.01, momentum=0.95, nesterov=True), steps=100,
              dtype=f64, seed=7, scale=30.0),
    *_protocol_cases(dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
]

register(OptimizerExercise(
    name="SGD",
    chapter="foundations/optimizers",
    signature="SGD(params, lr, momentum=0.0, weight_decay=0.0, nesterov=False)",
    oracle=eager(torch.optim.SGD),
    cases=SGD_CASES,
    forbidden=FUSED,
    hints=("three stages per parameter: L2 decay into the gradient, the momentum buffer, then the step; read every "
           "hyper-parameter from its group   (eqs. sgd-decay, sgd-momentum, sgd-nesterov)",
           "the buffer lives in self.state[p]: a copy of the (decayed) gradient at the first step, updated in place "
           "afterwards; PyTorch sums, it does not average",
           "g = grad + wd·p;  buf = g at the first step, then μ·buf + g;  d = g + μ·buf (Nesterov) or buf;  "
           "p -= lr·d   (eqs. sgd-decay, sgd-momentum, sgd-nesterov)"),
    mistakes=[
        Mistake("momentum as a running average", SGDAverage,
                "your momentum buffer is an average μ·buf + (1−μ)·g started at zero: PyTorch sums, buf = μ·buf + g "
                "(started at g), so its steps are 1/(1−μ) times larger."),
        Mistake("weight decay ignored", SGDNoDecay,
                "weight_decay has no effect in your step: add weight_decay·p to the gradient before the momentum "
                "buffer (eq. sgd-decay)."),
        Mistake("weight decay outside the momentum", SGDDecayOutsideMomentum,
                "you add weight_decay·p after the momentum buffer: PyTorch adds it to the gradient first, so the "
                "decay term is accumulated by the buffer too."),
        Mistake("Nesterov ignored", SGDNesterovIgnored,
                "nesterov=True changes nothing in your step: with Nesterov the step direction is g + μ·buf "
                "(eq. sgd-nesterov), not buf."),
        Mistake("Nesterov without the gradient", SGDNesterovNoGradient,
                "your Nesterov step is μ·buf alone: the look-ahead direction is the gradient plus the momentum "
                "buffer, g + μ·buf (eq. sgd-nesterov)."),
        Mistake("momentum buffer not kept", SGDBufferNotKept,
                "your momentum buffer does not survive between steps: keep it in self.state[p]['momentum_buffer'] "
                "and update it in place."),
        Mistake("group hyper-parameters ignored", SGDDefaults,
                "you read lr / momentum / weight_decay from the constructor's defaults: each param group can "
                "override them, so read them from `group` inside the loop."),
        Mistake("crashes on a parameter without gradient", SGDNoneGrad,
                "a parameter whose .grad is None (unused in the loss) must be skipped: `if p.grad is None: "
                "continue`."),
        *PROTOCOL_MISTAKES(SGDLrReadOnce, SGDDecayIntoGrad, SGDStateOutside, SGDIgnoresClosure),
    ],
    bench=(lambda: [randn(1024, 1024, seed=k) for k in range(8)], torch.optim.SGD,
           {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}),
))


# --------------------------------------------------------------------------- Adam and AdamW: the mistakes' skeleton

class _Adam(torch.optim.Optimizer):
    """Single-tensor Adam (L2 decay) / AdamW (decoupled decay) in overridable pieces (for the mistakes)."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=None):
        if weight_decay is None:
            weight_decay = 0.01 if self.decoupled else 0.0
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def hyper(self, group):
        return group

    def l2(self, p, g, wd):
        return g + wd * p

    def decay(self, p, lr, wd):
        p.mul_(1 - lr * wd)

    def count(self, state):
        state["step"] = state.get("step", 0) + 1
        return state["step"]

    def moments(self, state, g, b1, b2):
        m = state.setdefault("exp_avg", torch.zeros_like(g))
        v = state.setdefault("exp_avg_sq", torch.zeros_like(g))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        return m, v

    def update(self, m, v, t, b1, b2, eps):
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        return m_hat / (v_hat.sqrt() + eps)

    def apply(self, p, u, lr, wd):
        if self.decoupled and wd:
            self.decay(p, lr, wd)
        p.add_(u, alpha=-lr)

    def skips(self, p):
        return p.grad is None

    def evaluate(self, closure):
        return closure_loss(closure)

    def state_of(self, p):
        return self.state[p]

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.evaluate(closure)
        for group in self.param_groups:
            h = self.hyper(group)
            lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
            for p in group["params"]:
                if self.skips(p):
                    continue
                g = p.grad
                if wd and not self.decoupled:
                    g = self.l2(p, g, wd)
                state = self.state_of(p)
                t = self.count(state)
                m, v = self.moments(state, g, b1, b2)
                self.apply(p, self.update(m, v, t, b1, b2, eps), lr, wd)
        return loss


class _AdamW(_Adam):
    decoupled = True


def _no_bias_correction(self, m, v, t, b1, b2, eps):
    return m / (v.sqrt() + eps)


def _eps_inside_sqrt(self, m, v, t, b1, b2, eps):
    return (m / (1 - b1 ** t)) / (v / (1 - b2 ** t) + eps).sqrt()


def _eps_before_correction(self, m, v, t, b1, b2, eps):
    return (m / (1 - b1 ** t)) / ((v.sqrt() + eps) / math.sqrt(1 - b2 ** t))


def _correction_without_sqrt(self, m, v, t, b1, b2, eps):
    return (m / (1 - b1 ** t)) / (v.sqrt() / (1 - b2 ** t) + eps)


def _one_counter(self, state):
    """One step counter for the whole optimizer, advanced once per step() call."""
    return self._t


def _one_counter_step(step):
    def wrapped(self, closure=None):
        self._t = getattr(self, "_t", 0) + 1
        return step(self, closure)
    return wrapped


def _subclass(base, name, **overrides):
    return type(name, (base,), overrides)


AdamNoBiasCorrection = _subclass(_Adam, "AdamNoBiasCorrection", update=_no_bias_correction)
AdamEpsInsideSqrt = _subclass(_Adam, "AdamEpsInsideSqrt", update=_eps_inside_sqrt)
AdamEpsBeforeCorrection = _subclass(_Adam, "AdamEpsBeforeCorrection", update=_eps_before_correction)
AdamCorrectionWithoutSqrt = _subclass(_Adam, "AdamCorrectionWithoutSqrt", update=_correction_without_sqrt)
AdamDecoupled = _subclass(_Adam, "AdamDecoupled", decoupled=True)
AdamNoDecay = _subclass(_Adam, "AdamNoDecay", l2=lambda self, p, g, wd: g)
AdamOneCounter = _subclass(_Adam, "AdamOneCounter", count=_one_counter, step=_one_counter_step(_Adam.step))
AdamDefaults = _subclass(_Adam, "AdamDefaults", hyper=lambda self, group: self.defaults)
AdamNoneGrad = _subclass(_Adam, "AdamNoneGrad", skips=lambda self, p: False)
AdamStateOutside = _subclass(_Adam, "AdamStateOutside",
                             state_of=lambda self, p: self.__dict__.setdefault("moments", {}).setdefault(id(p), {}))
AdamIgnoresClosure = _subclass(_Adam, "AdamIgnoresClosure", evaluate=lambda self, closure: None)
AdamL2IntoGrad = _subclass(_Adam, "AdamL2IntoGrad", l2=lambda self, p, g, wd: p.grad.add_(p, alpha=wd))

AdamWL2 = _subclass(_AdamW, "AdamWL2", decoupled=False)
AdamWNotScaledByLr = _subclass(_AdamW, "AdamWNotScaledByLr", decay=lambda self, p, lr, wd: p.mul_(1 - wd))
AdamWNoDecay = _subclass(_AdamW, "AdamWNoDecay", decay=lambda self, p, lr, wd: None)
AdamWNoBiasCorrection = _subclass(_AdamW, "AdamWNoBiasCorrection", update=_no_bias_correction)
AdamWEpsInsideSqrt = _subclass(_AdamW, "AdamWEpsInsideSqrt", update=_eps_inside_sqrt)
AdamWDefaults = _subclass(_AdamW, "AdamWDefaults", hyper=lambda self, group: self.defaults)


def _decay_after_update(self, p, u, lr, wd):
    p.add_(u, alpha=-lr)
    if wd:
        p.mul_(1 - lr * wd)


def _decays_without_grad(step):
    def wrapped(self, closure=None):
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
        return step(self, closure)
    return wrapped


AdamWDecayAfterUpdate = _subclass(_AdamW, "AdamWDecayAfterUpdate", apply=_decay_after_update)
AdamWDecaysWithoutGrad = _subclass(_AdamW, "AdamWDecaysWithoutGrad", step=_decays_without_grad(_AdamW.step))


def _adam_cases(default_wd):
    return [
        _opt_case("default hyper-parameters", (5,), (3, 4), hyper=dict(), steps=20),
        _opt_case("lr=0.05", (6,), (2, 3), hyper=dict(lr=0.05), steps=25, seed=1),
        _opt_case("betas=(0.8, 0.99), float64", (4, 3), hyper=dict(lr=0.02, betas=(0.8, 0.99)), steps=30,
                  dtype=f64, seed=2),
        _opt_case("weight decay", (4,), (3, 3), hyper=dict(lr=0.05, weight_decay=0.1), steps=25, seed=3),
        _opt_case("large lr and weight decay, float64", (5,), (2, 2), dtype=f64, seed=4, steps=20,
                  hyper=dict(lr=0.1, weight_decay=0.5)),
        _opt_case("tiny gradients (1e-8): eps matters, float64", (6,), (3,), dtype=f64, seed=5, steps=25,
                  hyper=dict(lr=0.01, weight_decay=default_wd), scale=1e-8),
        _opt_case("tiny gradients (1e-6) with eps=1e-6", (4, 2), seed=6, steps=25,
                  hyper=dict(lr=0.01, eps=1e-6, weight_decay=default_wd), scale=1e-6),
        _opt_case("two param groups: the second overrides lr, betas, eps and weight_decay", (4,), (3, 2), (5,),
                  seed=7, steps=25, dtype=f64, hyper=dict(lr=0.02, weight_decay=default_wd),
                  groups=[{"params": [0, 1]},
                          {"params": [2], "lr": 0.1, "betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.3}]),
        _opt_case("parameters without gradients (one never, one every third step)", (4,), (3,), (2, 2), seed=8,
                  hyper=dict(lr=0.05, weight_decay=0.1), steps=24, dtype=f64, skip=_intermittent),
        _opt_case("100 steps", (8,), hyper=dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.05), steps=100,
                  dtype=f64, seed=9, scale=3.0),
        *_protocol_cases(dict(lr=0.05, betas=(0.8, 0.95), weight_decay=0.1)),
    ]


NO_BIAS = msg("you skipped the bias correction: m and v start at zero, so early on they are too small by "
              "(1−βᵗ); divide m by 1−β1ᵗ and v by 1−β2ᵗ (t counts this parameter's steps from 1).")
EPS_INSIDE = msg("ε sits inside your square root: PyTorch adds it after, √v̂ + ε. With tiny gradients √(v̂ + ε) "
                 "is dominated by √ε and the step all but vanishes.")
DEFAULTS = msg("you read the hyper-parameters from the constructor's defaults: each param group can override lr, "
               "betas, eps and weight_decay, so read them from `group` inside the loop.")

register(OptimizerExercise(
    name="Adam",
    chapter="foundations/optimizers",
    signature="Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)",
    oracle=eager(torch.optim.Adam),
    cases=partial(_adam_cases, 0.0),
    forbidden=FUSED,
    hints=("two moving averages per parameter, of g and of g², both started at zero and bias-corrected with this "
           "parameter's own step count   (eqs. adam-m, adam-v, adam-hat, adam-update)",
           "state[p] holds step, exp_avg and exp_avg_sq; increment the step before the correction; Adam's weight "
           "decay is L2, added to the gradient before the moments; ε goes outside the square root",
           "m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;  m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ);  p -= lr·m̂/(√v̂ + ε)   "
           "(eqs. adam-m, adam-v, adam-hat, adam-update);  Adam's weight decay is L2: g += wd·p first"),
    mistakes=[
        Mistake("no bias correction", AdamNoBiasCorrection, NO_BIAS),
        Mistake("eps inside the sqrt", AdamEpsInsideSqrt, EPS_INSIDE),
        Mistake("eps before the bias correction", AdamEpsBeforeCorrection,
                "you added ε to √v before dividing by √(1−β2ᵗ): PyTorch corrects first, √v/√(1−β2ᵗ) + ε; the "
                "difference shows when gradients are as small as ε."),
        Mistake("bias correction of v without the sqrt", AdamCorrectionWithoutSqrt,
                "you divided √v by (1−β2ᵗ): v̂ = v/(1−β2ᵗ), so √v̂ = √v / √(1−β2ᵗ)."),
        Mistake("decoupled decay in Adam", AdamDecoupled,
                "your Adam shrinks the weights directly (that is AdamW): Adam's weight_decay is L2, added to the "
                "gradient, g + wd·p, before the moments."),
        Mistake("weight decay ignored", AdamNoDecay,
                "weight_decay has no effect in your Adam: add weight_decay·p to the gradient before updating m "
                "and v."),
        Mistake("one step counter for all parameters", AdamOneCounter,
                "your step count t is shared by all parameters: PyTorch keeps state['step'] per parameter and "
                "advances it only when that parameter has a gradient, so its bias correction stays right."),
        Mistake("group hyper-parameters ignored", AdamDefaults, DEFAULTS),
        Mistake("crashes on a parameter without gradient", AdamNoneGrad,
                "a parameter whose .grad is None (unused in the loss) must be skipped, its state left alone: "
                "`if p.grad is None: continue`."),
        *PROTOCOL_MISTAKES(None, AdamL2IntoGrad, AdamStateOutside, AdamIgnoresClosure),
    ],
    bench=(lambda: [randn(1024, 1024, seed=k) for k in range(8)], torch.optim.Adam, {"lr": 1e-3}),
))

register(OptimizerExercise(
    name="AdamW",
    chapter="foundations/optimizers",
    signature="AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)",
    oracle=eager(torch.optim.AdamW),
    cases=partial(_adam_cases, 0.01),
    forbidden=FUSED,
    hints=("Adam with the weight decay taken out of the gradient: the weights shrink on their own, the moments see "
           "the raw gradient   (eq. adamw)",
           "shrink the old weights first, by the factor PyTorch uses (learning rate times weight_decay), then take "
           "the Adam step; parameters without a gradient are not decayed",
           "p *= 1 − lr·wd (decoupled, eq. adamw), then the Adam step on the raw gradient:  m = β1·m + (1−β1)·g;  "
           "v = β2·v + (1−β2)·g²;  m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ);  p -= lr·m̂/(√v̂ + ε)   "
           "(eqs. adam-m, adam-v, adam-hat, adam-update)"),
    mistakes=[
        Mistake("L2 instead of decoupled decay", AdamWL2,
                "you added wd·p to the gradient (L2, Adam's weight decay): AdamW decouples it, p ← p·(1 − lr·wd), "
                "and the moments see the raw gradient only."),
        Mistake("decay not scaled by lr", AdamWNotScaledByLr,
                "your decay is p ← p·(1 − wd): PyTorch multiplies weight_decay by the learning rate, "
                "p ← p·(1 − lr·wd), and the grader follows PyTorch. (Loshchilov & Hutter scale the decay by the "
                "schedule multiplier, not by the learning rate; lr·wd is PyTorch's convention.)"),
        Mistake("decay after the update", AdamWDecayAfterUpdate,
                "you shrink p after the Adam step: PyTorch shrinks the old weights first, p ← p·(1 − lr·wd), then "
                "subtracts lr·m̂/(√v̂ + ε)."),
        Mistake("weight decay ignored", AdamWNoDecay,
                "weight_decay has no effect in your AdamW (its default is 0.01, not 0): multiply p by 1 − lr·wd "
                "before the step."),
        Mistake("no bias correction", AdamWNoBiasCorrection, NO_BIAS),
        Mistake("eps inside the sqrt", AdamWEpsInsideSqrt, EPS_INSIDE),
        Mistake("group hyper-parameters ignored", AdamWDefaults, DEFAULTS),
        Mistake("decays parameters without gradient", AdamWDecaysWithoutGrad,
                "you decay parameters whose .grad is None: PyTorch skips them entirely, decay included."),
    ],
    bench=(lambda: [randn(1024, 1024, seed=k) for k in range(8)], torch.optim.AdamW, {"lr": 1e-3}),
))


# --------------------------------------------------------------------------- cosine_lr: driven over a whole schedule

def cosine_lr_spec(step, max_lr, min_lr, warmup_steps, total_steps):
    """The curriculum's definition, written out case by case."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step > total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def _schedule(max_lr, min_lr, warmup_steps, total_steps, after=10, by_keyword=False):
    hyper = dict(max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps)
    return hyper, list(range(0, total_steps + after + 1)), by_keyword


def _schedule_case(*args, note="", **kw):
    return Case(make=partial(_schedule, *args, **kw), note=note)


def cosine_lr_cases():
    return [
        _schedule_case(6e-4, 6e-5, 10, 100, note="nanoGPT-like: warmup 10, total 100, then 10 more steps"),
        _schedule_case(1.0, 0.1, 5, 30, note="steps 0..40: both boundaries and past the end"),
        _schedule_case(3e-4, 0.0, 0, 50, note="no warmup, min_lr=0"),
        _schedule_case(1e-3, 1e-5, 1, 20, note="warmup of one step"),
        _schedule_case(2.0, 0.5, 8, 9, after=5, note="a single decay step after warmup"),
        _schedule_case(1e-2, 1e-3, 100, 1000, after=50, by_keyword=True,
                       note="1000 steps, arguments by keyword"),
        _schedule_case(0.5, 0.5, 3, 12, note="min_lr = max_lr: constant after warmup"),
    ]


def cos_warmup_plus_one(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return cosine_lr_spec(step, max_lr, min_lr, warmup_steps, total_steps)


def cos_over_total(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step > total_steps:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * step / total_steps)) * (max_lr - min_lr)


def cos_no_floor(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def cos_to_zero(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step > total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) * max_lr


def cos_integer_warmup(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * (step // warmup_steps)
    return cosine_lr_spec(step, max_lr, min_lr, warmup_steps, total_steps)


def cos_returns_tensor(step, max_lr, min_lr, warmup_steps, total_steps):
    return torch.tensor(cosine_lr_spec(step, max_lr, min_lr, warmup_steps, total_steps))


def _within_bounds(call):
    for s in range(0, 60):
        lr = float(call(s, 1.0, 0.1, 10, 50))
        if not 0.0 <= lr <= 1.0 + 1e-12 or (s >= 10 and lr < 0.1 - 1e-12):
            return msg("cosine_lr({s}, 1.0, 0.1, 10, 50) = {lr:.6g} is outside [min_lr, max_lr]", s=s, lr=lr)
    return None


register(ScheduleExercise(
    name="cosine_lr",
    what="lr",
    chapter="foundations/optimizers",
    signature="cosine_lr(step, max_lr, min_lr, warmup_steps, total_steps) -> float",
    oracle=cosine_lr_spec,
    cases=cosine_lr_cases,
    properties=[Property("the rate stays in [0, max_lr], and in [min_lr, max_lr] after warmup", _within_bounds)],
    hints=("three pieces: a linear ramp from 0 during warmup, half a cosine from max_lr down to min_lr, then "
           "min_lr   (eq. cosine-lr)",
           "the cosine's progress runs from 0 at warmup_steps to 1 at total_steps: "
           "(step − warmup)/(total − warmup); return a Python float",
           "step < warmup: max_lr·step/warmup;  step > total: min_lr;  otherwise "
           "min_lr + ½(1 + cos(π·(step − warmup)/(total − warmup)))·(max_lr − min_lr)   (eq. cosine-lr)"),
    mistakes=[
        Mistake("warmup starts above zero", cos_warmup_plus_one,
                "your warmup uses step + 1: the curriculum's (and the chapter's) warmup is max_lr·step/warmup_steps, "
                "0 at step 0 and max_lr exactly at step = warmup_steps."),
        Mistake("cosine over the whole run", cos_over_total,
                "your cosine runs over step/total_steps: the decay starts after warmup, so its progress is "
                "(step − warmup_steps)/(total_steps − warmup_steps)."),
        Mistake("no floor after total_steps", cos_no_floor,
                "after total_steps your rate climbs back up the cosine: return min_lr for step > total_steps."),
        Mistake("decays to zero", cos_to_zero,
                "your cosine decays from max_lr to 0: it ends at min_lr, min_lr + ½(1 + cos)·(max_lr − min_lr)."),
        Mistake("integer division in warmup", cos_integer_warmup,
                "step // warmup_steps is integer division, 0 for every warmup step: use step / warmup_steps."),
        Mistake("returns a tensor", cos_returns_tensor,
                "return a Python float (use math.cos, or float(...)): a scheduler writes it into "
                "optimizer.param_groups[i]['lr']."),
    ],
))


# --------------------------------------------------------------------------- clip_grad_norm_: norm and gradients

CLIP_BUILTINS = ("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm", "torch.nn.utils.get_total_norm",
                 "torch.nn.utils.clip_grads_with_norm_")


def _clip_inputs(shapes, max_norm, dtype=f32, seed=0, scale=1.0, without=(), how="list"):
    values = [randn(*s, seed=seed + k, dtype=dtype) for k, s in enumerate(shapes)]
    grads = [None if k in without else randn(*s, seed=seed + 100 + k, dtype=dtype, scale=scale)
             for k, s in enumerate(shapes)]
    return values, grads, max_norm, how


def _bench_clip_inputs():
    """Eight 1024 x 1024 parameters with gradients, as a model's parameters() would give them."""
    params = [randn(1024, 1024, seed=k).requires_grad_() for k in range(8)]
    for k, p in enumerate(params):
        p.grad = randn(1024, 1024, seed=100 + k)
    return (params, 1.0), {}


def _clip_case(note, *shapes, **kw):
    return Case(make=partial(_clip_inputs, shapes, **kw), note=note)


def clip_grad_norm_cases():
    return [
        _clip_case("three tensors, norm well above max_norm", (4,), (3, 5), (2, 2, 3), max_norm=1.0),
        _clip_case("no clipping needed: the gradients stay as they are", (6,), (4, 4), max_norm=100.0, seed=1),
        _clip_case("float64, max_norm=0.5", (5, 3), (7,), (1,), max_norm=0.5, dtype=f64, seed=2),
        _clip_case("a parameter without gradient", (4,), (3, 3), (5,), max_norm=1.0, seed=3, without=(1,)),
        _clip_case("tiny gradients: the 1e-6 in max_norm/(norm + 1e-6) matters", (10,), (3, 4), max_norm=1e-5,
                   dtype=f64, seed=4, scale=1e-5),
        _clip_case("parameters given as a generator, as model.parameters() is", (8,), (2, 6), max_norm=0.7, seed=5,
                   how="generator"),
        _clip_case("one tensor passed on its own", (4, 6), max_norm=2.0, seed=6, how="tensor"),
        _clip_case("norm just below max_norm", (12,), (2, 3), max_norm=4.5, dtype=f64, seed=7),
        _clip_case("integer max_norm", (64,), (8, 8), max_norm=3, seed=8),
    ]


def _as_list(parameters):
    return [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)


def clip_per_tensor(parameters, max_norm):
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for g in grads:
        g.mul_(torch.clamp(max_norm / (torch.linalg.vector_norm(g) + 1e-6), max=1.0))
    return total


def _total(grads):
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def clip_scales_up(parameters, max_norm):
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = _total(grads)
    for g in grads:
        g.mul_(max_norm / (total + 1e-6))
    return total


def clip_returns_new_norm(parameters, max_norm):
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = _total(grads)
    for g in grads:
        g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return _total(grads)


def clip_no_epsilon(parameters, max_norm):
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = _total(grads)
    for g in grads:
        g.mul_(torch.clamp(max_norm / total, max=1.0))
    return total


def clip_sum_of_norms(parameters, max_norm):
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = sum(torch.linalg.vector_norm(g) for g in grads)
    for g in grads:
        g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def clip_not_in_place(parameters, max_norm):
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = _total(grads)
    for g in grads:
        g = g * torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return total


def clip_generator_twice(parameters, max_norm):
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    total = _total([p.grad for p in parameters if p.grad is not None])
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def clip_none_grad(parameters, max_norm):
    params = _as_list(parameters)
    total = sum(p.grad.pow(2).sum() for p in params).sqrt()
    for p in params:
        p.grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def clip_returns_float(parameters, max_norm):
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = _total(grads)
    for g in grads:
        g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total.item()


def _idempotent(call):
    """Clipping twice changes nothing the second time (up to the 1e-6)."""
    p = randn(20, seed=60, dtype=f64).requires_grad_()
    p.grad = randn(20, seed=61, dtype=f64, scale=10.0)
    call([p], 1.0)
    first = p.grad.clone()
    call([p], 1.0)
    if not torch.allclose(p.grad, first, rtol=1e-5):
        return msg("a second call with the same max_norm changed the already clipped gradients")
    n = float(torch.linalg.vector_norm(p.grad))
    if not n <= 1.0 + 1e-9:
        return msg("after clipping to max_norm=1 the gradient norm is {n:.6g}", n=n)
    return None


register(GradientsExercise(
    name="clip_grad_norm_",
    chapter="foundations/optimizers",
    signature="clip_grad_norm_(parameters, max_norm)",
    oracle=torch.nn.utils.clip_grad_norm_,
    cases=clip_grad_norm_cases,
    forbidden=CLIP_BUILTINS,
    properties=[Property("clipping twice changes nothing and leaves the norm at most max_norm", _idempotent)],
    hints=("one norm for all gradients together, one scale factor for every tensor, never above 1   "
           "(eqs. clip-norm, clip-scale)",
           "the global norm is the norm of the per-tensor norms; collect the grads in a list first (a generator is "
           "read once) and scale p.grad in place",
           "total = ‖(‖g₁‖, ‖g₂‖, …)‖₂ over params with a grad;  every g *= min(1, max_norm/(total + 1e-6)) in place; "
           "return total (a 0-dim tensor)   (eqs. clip-norm, clip-scale)"),
    mistakes=[
        Mistake("clips each tensor separately", clip_per_tensor,
                "you clipped each gradient by its own norm: clipping is by the global norm of all gradients "
                "together, one factor for every tensor, so the update keeps its direction."),
        Mistake("scales small gradients up", clip_scales_up,
                "you rescale every gradient to max_norm, even small ones: the factor is min(1, max_norm/(norm + "
                "1e-6)), so gradients already below max_norm stay as they are."),
        Mistake("returns the norm after clipping", clip_returns_new_norm,
                "you returned the norm after clipping: clip_grad_norm_ returns the total norm before clipping "
                "(what training logs plot)."),
        Mistake("no 1e-6 in the factor", clip_no_epsilon,
                "your factor is max_norm/norm: PyTorch's is max_norm/(norm + 1e-6), which also keeps an all-zero "
                "gradient from dividing by zero."),
        Mistake("sum of norms", clip_sum_of_norms,
                "you added the tensors' norms: the total norm is the L2 norm of all gradients as one vector, "
                "sqrt(Σ ‖gᵢ‖²)."),
        Mistake("gradients not modified", clip_not_in_place,
                "your clipped gradients never reach the parameters: `g = g * c` makes a new tensor; scale "
                "p.grad in place (p.grad.mul_(c))."),
        Mistake("generator read twice", clip_generator_twice,
                "model.parameters() is a generator, empty the second time you loop over it: make a list first "
                "(and wrap a single tensor in one)."),
        Mistake("crashes on a parameter without gradient", clip_none_grad,
                "a parameter whose .grad is None must be left out of the norm and left alone."),
        Mistake("returns a Python float", clip_returns_float,
                "return the norm as a 0-dim tensor, as PyTorch does (no .item()): it stays on the device, "
                "with no synchronisation."),
    ],
    bench=(_bench_clip_inputs, torch.nn.utils.clip_grad_norm_),
))
