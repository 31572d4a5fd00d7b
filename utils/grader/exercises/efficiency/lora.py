"""Part 9, efficient fine-tuning and inference: LoRA (chapter efficiency/lora).

`LoRALinear(base, r=8, alpha=16, dropout=0.0)` is a module whose contract is more than its forward: the base
layer is frozen, `merge()` folds the update into the base weight and `unmerge()` takes it out, each idempotent.
It is driven as a class through a session of method calls (the plain-class kind; results that are tensors are
compared with the dtype's tolerance): a forward call on the fresh module (lora_B starts at zero, so the output
is the base layer's), `load_state_dict` with random non-default weights (lora_B included), forward calls,
`state_dict()` after merges and unmerges, and one training step: backward through a forward output, then a
plain gradient step on every parameter that requires grad (done by the case between two calls, as an
optimizer built on `model.parameters()` would), so that a base layer that is not frozen moves and is seen.

The oracle is `LoRALinearSpec`, written from the contract with F.linear; tests/test_efficiency_lora_quant.py
proves its forward, its gradients (eq. lora-grad) and its merged weight equal to the LoRA paper's formulas
computed by hand (peft, the reference library, is not a dependency of the book).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ....i18n import msg
from ...core import Case, Mistake, Property
from ...inputs import call, f32, f64, randn
from ...kinds import PlainClassExercise, Session, method
from ...registry import register

# --------------------------------------------------------------------------- the oracle


def _linear(in_features, out_features, bias, seed, scale=None):
    """An nn.Linear with seeded weights, built without touching the global random generator."""
    state = torch.random.get_rng_state()                       # nn.Linear's own init draws from the global generator:
    layer = nn.Linear(in_features, out_features, bias=bias)   # put it back, the reader's stream stays as it was
    torch.random.set_rng_state(state)
    bound = 1 / math.sqrt(in_features) if scale is None else scale
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():                                      # uniform in [-bound, bound], as nn.Linear initialises
        layer.weight.copy_((torch.rand(out_features, in_features, generator=gen) * 2 - 1) * bound)
        if bias:
            layer.bias.copy_((torch.rand(out_features, generator=gen) * 2 - 1) * bound)
    return layer


class LoRALinearSpec(nn.Module):
    """base(x) + lora_B(lora_A(dropout(x))) * alpha / r; merge() adds alpha / r * B @ A into base.weight."""

    def __init__(self, base, r=8, alpha=16, dropout=0.0):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_A = _linear(base.in_features, r, False, seed=5)
        self.lora_B = _linear(r, base.out_features, False, seed=6, scale=0.0)
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / r
        self.merged = False

    def delta(self):
        return self.scaling * self.lora_B.weight @ self.lora_A.weight               # (out, in)

    def forward(self, x):
        y = F.linear(x, self.base.weight, self.base.bias)
        if self.merged:
            return y
        return y + F.linear(F.linear(self.lora_dropout(x), self.lora_A.weight), self.lora_B.weight) * self.scaling

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.delta().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.delta().to(self.base.weight.dtype)
            self.merged = False


# --------------------------------------------------------------------------- sessions

def _state(in_f, out_f, r, bias=True, dtype=f32, seed=0):
    """Random non-default weights for every parameter, lora_B included (so the update is not zero)."""
    state = {"base.weight": randn(out_f, in_f, seed=seed, dtype=dtype, scale=in_f ** -0.5)}
    if bias:
        state["base.bias"] = randn(out_f, seed=seed + 1, dtype=dtype, scale=0.5)
    state["lora_A.weight"] = randn(r, in_f, seed=seed + 2, dtype=dtype, scale=in_f ** -0.5)
    state["lora_B.weight"] = randn(out_f, r, seed=seed + 3, dtype=dtype, scale=0.5)
    return state


def _train_step(results, out_at, params_at, x, lr=0.1):
    """Backward through the forward output results[out_at], then p -= lr * p.grad for every parameter of the
    state_dict(keep_vars=True) at results[params_at] that requires grad; the next call's arguments: (x,)."""
    y, params = results[out_at], results[params_at]
    cotangent = randn(*y.shape, seed=99, dtype=y.dtype)
    (y * cotangent).sum().backward()
    with torch.no_grad():
        for p in params.values():
            if p.requires_grad and p.grad is not None:
                p -= lr * p.grad
                p.grad = None
    return call(x)


def _to_float64(results, params_at, x):
    """Every parameter of the state_dict(keep_vars=True) at results[params_at] converted to float64 in place (what
    module.double() does); the next call's arguments: (x,)."""
    for p in results[params_at].values():
        p.data = p.data.double()
    return call(x)


def _session(in_f, out_f, init_kwargs=None, positional=(), bias=True, seed=0, calls=None):
    base = _linear(in_f, out_f, bias, seed=seed + 40)
    return Session(init=((base, *positional), init_kwargs or {}), calls=calls)


def _training(in_f=12, out_f=10, r=8, seed=0):
    x = randn(4, in_f, seed=seed + 7)
    return _session(in_f, out_f, {}, seed=seed, calls=[
        method("forward", x),                                   # 0: fresh: lora_B is zero, the base layer alone
        method("load_state_dict", _state(in_f, out_f, r, seed=seed)),
        method("forward", x),                                   # 2
        method("state_dict", keep_vars=True),                   # 3: the live parameters
        method("forward", x),                                   # 4: the output trained through
        method("forward", feed=lambda res: _train_step(res, 4, 3, x)),   # 5: after one gradient step
        method("state_dict"),                                   # 6: only lora_A and lora_B moved
    ])


def _scaled(in_f, out_f, r, alpha, shape, positional=False, seed=0):
    x = randn(*shape, in_f, seed=seed + 7)
    init = ({}, (r, alpha)) if positional else ({"r": r, "alpha": alpha}, ())
    return _session(in_f, out_f, init[0], positional=init[1], seed=seed, calls=[
        method("forward", x),
        method("load_state_dict", _state(in_f, out_f, r, seed=seed)),
        method("forward", x),
    ])


def _merging(in_f=9, out_f=7, r=3, alpha=6, seed=0, bias=True, batch=5):
    x = randn(batch, in_f, seed=seed + 7)
    return _session(in_f, out_f, {"r": r, "alpha": alpha}, bias=bias, seed=seed, calls=[
        method("load_state_dict", _state(in_f, out_f, r, bias=bias, seed=seed)),
        method("forward", x),
        method("merge"),
        method("forward", x),                                   # the same output, from the base layer alone
        method("state_dict"),                                   # base.weight = W + alpha / r * B @ A
        method("merge"),                                        # a second merge does nothing
        method("state_dict"),
        method("forward", x),
        method("unmerge"),
        method("state_dict"),                                   # W again
        method("unmerge"),                                      # a second unmerge does nothing
        method("state_dict"),
        method("forward", x),
    ])


def _non_contiguous(seed=0):
    x = randn(8, 6, seed=seed + 7).T                            # (6, 8) non-contiguous
    return _session(8, 5, {"r": 4, "alpha": 4}, seed=seed, calls=[
        method("load_state_dict", _state(8, 5, 4, seed=seed)),
        method("forward", x),
        method("merge"),
        method("forward", x),
    ])


def _float64(seed=0):
    x = randn(3, 6, seed=seed + 7, dtype=f64)
    return _session(6, 4, {"r": 2, "alpha": 5}, seed=seed, calls=[
        method("load_state_dict", _state(6, 4, 2, seed=seed + 1)),
        method("state_dict", keep_vars=True),                   # 1: the live parameters
        method("load_state_dict", feed=lambda res: _to_float64(res, 1, _state(6, 4, 2, dtype=f64, seed=seed))),
        method("forward", x),
        method("merge"),
        method("state_dict"),
        method("forward", x),
    ])


def _train_after_unmerge(seed=0):
    x = randn(2, 3, 8, seed=seed + 7)
    return _session(8, 6, {"r": 4, "alpha": 8}, seed=seed, calls=[
        method("load_state_dict", _state(8, 6, 4, seed=seed)),
        method("merge"),
        method("unmerge"),
        method("state_dict", keep_vars=True),                   # 3
        method("forward", x),                                   # 4
        method("forward", feed=lambda res: _train_step(res, 4, 3, x)),
        method("state_dict"),
    ])


def _case(build, *args, note="", **kwargs):
    return Case(make=lambda: build(*args, **kwargs), note=note)


def _cases():
    return [
        _case(_training, note="defaults r=8, alpha=16: fresh forward, random weights, one gradient step"),
        _case(_scaled, 12, 10, 4, 8, (2, 5), positional=True,
              note="r=4, alpha=8 passed positionally, a (2, 5, 12) input"),
        _case(_scaled, 10, 6, 2, 16, (3,), seed=1, note="r=2, alpha=16: scaling 8"),
        _case(_merging, note="merge, merge again, unmerge, unmerge again"),
        _case(_merging, 6, 5, 1, 1, seed=2, bias=False, batch=1, note="r=1, alpha=1, base without bias, batch of one"),
        _case(_non_contiguous, seed=3, note="non-contiguous input (a transposed view)"),
        _case(_float64, seed=4, note="the module converted to float64, then merged"),
        _case(_train_after_unmerge, seed=5, note="merge, unmerge, then a gradient step on a (2, 3, 8) input"),
    ]


# --------------------------------------------------------------------------- properties

def _frozen(call) -> str | None:
    m = call(_linear(8, 6, True, seed=60), r=4, alpha=8)
    trainable = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    if trainable != ["lora_A.weight", "lora_B.weight"]:
        return msg("the parameters that require grad are {names}; only lora_A.weight and lora_B.weight should be",
                   names=trainable)
    return None


def _starts_at_zero(call) -> str | None:
    m = call(_linear(16, 6, True, seed=61), r=4, alpha=8)
    A, B = m.lora_A.weight.detach(), m.lora_B.weight.detach()
    if B.abs().max() != 0:
        return "lora_B does not start at zero: the update B A must be zero before training"
    if A.abs().max() == 0 or A.abs().max() > 1 / math.sqrt(16) + 1e-6:
        return msg("lora_A starts with max |a| = {a:.3g}: initialise it as nn.Linear does (Kaiming-uniform, bound "
                   "1 / sqrt(in_features) = {bound:.3g})", a=float(A.abs().max()), bound=1 / math.sqrt(16))
    return None


def _dropout_on_the_branch(call) -> str | None:
    base = _linear(32, 8, True, seed=62)
    m = call(base, r=4, alpha=4, dropout=0.5)
    with torch.no_grad():
        m.lora_B.weight.copy_(randn(8, 4, seed=63))
    x = randn(16, 32, seed=64)
    with torch.no_grad():
        plain = F.linear(x, base.weight, base.bias)
        m.eval()
        eval_out = m(x)
        m.train()
        train_out = m(x)
    want = plain + (x @ m.lora_A.weight.T @ m.lora_B.weight.T)
    if not torch.allclose(eval_out, want, rtol=1e-4, atol=1e-5):
        return "in eval mode dropout must do nothing: the output differs from base(x) + B A x * scaling"
    if torch.allclose(train_out, eval_out):
        return "in training mode with dropout=0.5 the LoRA branch's input is not dropped"
    with torch.no_grad():
        m.lora_B.weight.zero_()
        base_only = m(x)
    if not torch.allclose(base_only, plain, rtol=1e-4, atol=1e-5):
        return "dropout reaches the base layer: with lora_B = 0 the training-mode output must be base(x) exactly"
    return None


# --------------------------------------------------------------------------- mistakes: one module, one flaw each

class _LoRA(nn.Module):
    """A hand-written LoRALinear; each mistake overrides one step."""

    def __init__(self, base, r=8, alpha=16, dropout=0.0):
        super().__init__()
        self.base = base
        self.freeze()
        self.lora_A = _linear(base.in_features, r, False, seed=5)
        self.lora_B = self.make_B(r, base.out_features)
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = self.scale_of(r, alpha)
        self.merged = False

    def freeze(self):
        self.base.requires_grad_(False)

    def make_B(self, r, out_features):
        return _linear(r, out_features, False, seed=6, scale=0.0)

    def scale_of(self, r, alpha):
        return alpha / r

    def delta(self):
        return self.scaling * self.lora_B.weight @ self.lora_A.weight

    def uses_branch(self):
        return not self.merged

    def forward(self, x):
        y = self.base(x)
        if self.uses_branch():
            y = y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return y

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.delta()
            self.merged = False


class ScaledByAlpha(_LoRA):
    def scale_of(self, r, alpha):
        return alpha


class NotScaled(_LoRA):
    def scale_of(self, r, alpha):
        return 1.0


class RandomB(_LoRA):
    def make_B(self, r, out_features):
        return _linear(r, out_features, False, seed=6)


class BaseNotFrozen(_LoRA):
    def freeze(self):
        pass


class MergeTwice(_LoRA):
    @torch.no_grad()
    def merge(self):
        self.base.weight += self.delta()
        self.merged = True


class BranchAfterMerge(_LoRA):
    def uses_branch(self):
        return True


class MergeWithoutScaling(_LoRA):
    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.lora_B.weight @ self.lora_A.weight
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.lora_B.weight @ self.lora_A.weight
            self.merged = False


class UnmergeTwice(_LoRA):
    @torch.no_grad()
    def unmerge(self):
        self.base.weight -= self.delta()
        self.merged = False


register(PlainClassExercise(
    name="LoRALinear",
    chapter="efficiency/lora",
    signature="LoRALinear(base, r=8, alpha=16, dropout=0.0); forward(x), merge(), unmerge()",
    oracle=LoRALinearSpec,
    cases=_cases,
    tolerance={f32: (1e-4, 1e-5)},      # a gradient step amplifies float32 rounding that the order of sums changes
    properties=[
        Property("only lora_A and lora_B require grad", _frozen),
        Property("a fresh module starts as its base layer (lora_B zero, lora_A initialised as nn.Linear)",
                 _starts_at_zero),
        Property("dropout acts on the LoRA branch's input, in training mode only", _dropout_on_the_branch),
    ],
    hints=("the output is the frozen base layer plus a low-rank update B A x scaled by alpha / r; merging writes "
           "that update into the base weight once   (eqs. lora-forward, lora-merge)",
           "freeze base's parameters with requires_grad_(False); lora_A is an nn.Linear(in, r), lora_B an "
           "nn.Linear(r, out) whose weight starts at zero; keep a flag that says whether the update is merged",
           "forward: base(x) + lora_B(lora_A(dropout(x))) * scaling unless merged; merge: if not merged, "
           "base.weight += scaling * lora_B.weight @ lora_A.weight under torch.no_grad(); unmerge subtracts it"),
    mistakes=[
        Mistake("scaled by alpha, not alpha / r", ScaledByAlpha,
                "your update is scaled by alpha: LoRA scales it by alpha / r, so that changing r does not change "
                "the size of the initial updates."),
        Mistake("no scaling", NotScaled,
                "your update is not scaled: multiply lora_B(lora_A(x)) by scaling = alpha / r."),
        Mistake("lora_B initialised randomly", RandomB,
                "a fresh module does not return base(x): lora_B must start at zero (nn.init.zeros_), so that the "
                "wrapped layer starts exactly as the pretrained one."),
        Mistake("base not frozen", BaseNotFrozen,
                "after a training step your base layer has moved: freeze it (base.requires_grad_(False)) so that "
                "only lora_A and lora_B are trained."),
        Mistake("merge applied twice", MergeTwice,
                "a second merge() adds the update again: remember that the module is merged and do nothing then."),
        Mistake("LoRA branch kept after merge", BranchAfterMerge,
                "after merge() your forward still adds the LoRA branch, so the update counts twice: once merged, "
                "forward must use the base layer alone."),
        Mistake("merged without scaling", MergeWithoutScaling,
                "merge() adds B @ A without the scaling: the merged weight is W + (alpha / r) * B @ A, the same "
                "update the forward applies."),
        Mistake("unmerge applied twice", UnmergeTwice,
                "a second unmerge() subtracts the update again: do nothing when the module is not merged."),
    ],
))
