"""Part 2, normalization: BatchNorm (chapter normalization/batch_norm).

The oracle is `BatchNormSpec`, an nn.Module built on F.batch_norm with exactly the exercise's parameters and
buffers (nn.BatchNorm1d/2d also carry `num_batches_tracked`, which the exercise does not ask for);
tests/test_normalization.py proves that it agrees with nn.BatchNorm1d/2d, running statistics included.
A float64 case asks for the module in float64 (`Script(dtype=...)`: the engine converts the constructed
module with `.to(float64)`, as a reader would).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ....i18n import msg
from ...core import Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...kinds import ModuleExercise, Script, Step
from ...registry import register


BATCH_NORM_BUILTINS = (
    "F.batch_norm", "torch.batch_norm", "torch.native_batch_norm", "F.instance_norm", "torch.instance_norm",
    "F.group_norm", "torch.group_norm", "F.layer_norm", "torch.layer_norm",
)


# --------------------------------------------------------------------------- scripts

def steps_of(xs, modes):
    """Steps from tensors and a mode string: T train, E eval, G train + gradients, g eval + gradients."""
    return [Step(call(x), train=m in "TG", grad=m in "Gg") for x, m in zip(xs, modes)]


# --------------------------------------------------------------------------- the oracle

class BatchNormSpec(nn.Module):
    """BatchNorm(num_features, eps, momentum) from F.batch_norm: weight, bias, running_mean, running_var."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


# --------------------------------------------------------------------------- cases

def _channels(x, C, offset=True):
    """Give every channel its own scale (and offset), so that per-channel statistics matter."""
    shape = (1, C) + (1,) * (x.dim() - 2)
    scale = torch.linspace(0.5, 2.0, C, dtype=x.dtype).view(shape)
    return x * scale + (torch.arange(C, dtype=x.dtype).view(shape) - C / 2 if offset else 0)


def _laid_out(shape, layout, **kw):
    """An (N, C, *) input in one of the memory layouts a reader meets: contiguous; channels-last ((N, *, C) in
    memory, as images come from a decoder); transposed ((N, L, C) seen as (N, C, L), as after a linear layer);
    strided (every other column of a wider tensor)."""
    C = shape[1]
    if layout == "channels_last":
        x = randn(shape[0], *shape[2:], C, **kw)
        return x.permute(0, x.dim() - 1, *range(1, x.dim() - 1))
    if layout == "transposed":
        return randn(shape[0], *shape[2:], C, **kw).transpose(1, -1)
    if layout == "strided":
        return randn(*shape[:-1], 2 * shape[-1], **kw)[..., ::2]
    return randn(*shape, **kw)


def _bn_script(shape, modes="TTE", *, args=(), dtype=f32, seed=0, scale=1.0, shift=0.0, layout="contiguous",
               **kwargs):
    C = shape[1]
    xs = []
    for k in range(len(modes)):
        x = _laid_out(shape, layout, dtype=dtype, seed=seed + k, scale=scale, shift=shift)
        xs.append(_channels(x, C, offset=scale >= 0.1))     # tiny-variance inputs stay centred at 0
    return Script(init=((C, *args), kwargs), steps=steps_of(xs, modes), dtype=dtype)


def _bn_cases():
    return [
        case(_bn_script, (8, 3), "TTE", note="(N, C) input, default eps and momentum: train, train, eval"),
        case(_bn_script, (6, 4, 5), "TTTE", seed=10, eps=1e-3, momentum=0.3,
             note="(N, C, L) input, eps=1e-3, momentum=0.3"),
        case(_bn_script, (4, 3, 5, 6), "TET", seed=20, eps=1e-4, momentum=0.05,
             note="(N, C, H, W) input, eps=1e-4, momentum=0.05: train, eval, train"),
        case(_bn_script, (2, 5), "TTE", seed=30, momentum=0.5, note="batch of two (n - 1 = 1)"),
        case(_bn_script, (8, 3, 4), "TTE", seed=40, scale=1e-3, note="tiny variance (1e-6, below eps=1e-5)"),
        case(_bn_script, (16, 3), "TTE", dtype=f64, seed=50, shift=1e4, note="large offset: x = 10^4 + noise, float64"),
        case(_bn_script, (5, 3, 4), "TTTTTE", dtype=f64, seed=60, momentum=0.2,
             note="float64, five training steps then eval"),
        case(_bn_script, (3, 4, 6), "TE", args=(1e-3, 0.25), seed=70, note="eps and momentum passed positionally"),
        case(_bn_script, (3, 2, 4, 5), "TTE", seed=80, layout="channels_last",
             note="non-contiguous (channels-last) (N, C, H, W) input"),
        case(_bn_script, (5, 3, 6), "TTE", seed=85, layout="transposed",
             note="non-contiguous (N, C, L) input: an (N, L, C) tensor transposed"),
        case(_bn_script, (4, 3, 5), "TE", seed=86, layout="strided", dtype=f64,
             note="non-contiguous (N, C, L) input: every other column of a wider tensor"),
        case(_bn_script, (4, 3, 5), "TG", dtype=f64, seed=90, momentum=0.3, note="gradient in training mode",
             grad=True),
        case(_bn_script, (6, 3), "Tg", dtype=f64, seed=100, note="gradient in eval mode", grad=True),
        case(_bn_script, (3, 2, 3, 3), "G", seed=110, eps=1e-3, note="gradient in training mode, float32, 4-D",
             grad=True),
        case(_bn_script, (4, 3, 5), "GGgG", dtype=f64, seed=130, momentum=0.3, grad=True,
             note="backward after every step, train, train, eval, train: the running statistics carry no graph"),
    ]


# --------------------------------------------------------------------------- properties

def starts_as(call, builtin, init, kwargs=None) -> str | None:
    """A freshly constructed module holds the built-in's initial parameters and buffers.

    The cases load random non-default weights into every module, so without this a module that starts from
    the wrong values (weight 0, running_var 0, ...) would pass.
    """
    kwargs = kwargs or {}
    ref = builtin(*init, **kwargs)
    got = call(*init, **kwargs).state_dict()
    for name, want in ref.state_dict().items():
        if name == "num_batches_tracked" or name not in got:     # names and shapes are checked by every case
            continue
        have = got[name].detach()
        if have.shape != want.shape or not torch.equal(have.to(want.dtype), want):
            return msg("a freshly constructed module's {name} is {have}..., but nn.{module} starts from {want}...: "
                       "initialise it as the built-in does", name=name, have=have.flatten()[:4].tolist(),
                       module=type(ref).__name__, want=want.flatten()[:4].tolist())
    return None


def _eval_is_per_sample(call):
    m = call(3, eps=1e-3)
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        m.running_var.copy_(torch.tensor([0.25, 2.0, 4.0]))
    m.eval()
    x = randn(6, 3, 4, seed=120)
    with torch.no_grad():
        whole, alone = m(x)[:2], m(x[:2])
    if not torch.allclose(whole, alone, rtol=1e-5, atol=1e-6):
        gap = float((whole - alone).abs().max())
        return msg("in eval mode the output for the first two samples changes by {gap:.3g} when the other four "
                   "samples are removed: eval mode must use the running statistics only", gap=gap)
    return None


def _loads_torch_state_dict(call):
    ref = nn.BatchNorm2d(3, eps=1e-3, momentum=0.2)
    gen = torch.Generator().manual_seed(121)
    state = {k: v for k, v in ref.state_dict().items() if k != "num_batches_tracked"}
    state = {k: (torch.rand(v.shape, generator=gen) + 0.5) for k, v in state.items()}
    ref.load_state_dict(state, strict=False)
    m = call(3, eps=1e-3, momentum=0.2)
    if "num_batches_tracked" in m.state_dict():       # kept by a module faithful to nn.BatchNorm: load it too
        state["num_batches_tracked"] = ref.num_batches_tracked
    try:
        m.load_state_dict(state)
    except RuntimeError as e:
        return msg("load_state_dict of nn.BatchNorm2d's weights fails: {error}", error=str(e).splitlines()[0])
    x = randn(4, 3, 2, 2, seed=122)
    for mode in (True, False):
        ref.train(mode), m.train(mode)
        a, b = ref(x), m(x)
        if not torch.allclose(a, b, rtol=1e-5, atol=1e-5):
            return msg("with nn.BatchNorm2d's state_dict loaded, {mode} outputs differ",
                       mode="train" if mode else "eval")
    return None


# --------------------------------------------------------------------------- mistakes

def _bc(v, x):
    """A (C,) vector shaped to broadcast against x of shape (N, C, *)."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


class _BN(nn.Module):
    """The base of the wrong implementations below; each mistake overrides one piece."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def batch_stats(self, x):
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        return mean, ((x - _bc(mean, x)) ** 2).mean(dims)

    def update(self, mean, var, n):
        m = self.momentum
        with torch.no_grad():
            self.running_mean.copy_((1 - m) * self.running_mean + m * mean)
            self.running_var.copy_((1 - m) * self.running_var + m * var * n / (n - 1))

    def normalize(self, x, mean, var):
        return (x - _bc(mean, x)) / torch.sqrt(_bc(var, x) + self.eps)

    def affine(self, y):
        return y * _bc(self.weight, y) + _bc(self.bias, y)

    def forward(self, x):
        if self.training:
            mean, var = self.batch_stats(x)
            self.update(mean.detach(), var.detach(), x.numel() // x.shape[1])
        else:
            mean, var = self.running_mean, self.running_var
        return self.affine(self.normalize(x, mean, var))


class BNMomentumReversed(_BN):
    def update(self, mean, var, n):
        m = self.momentum
        with torch.no_grad():
            self.running_mean.copy_(m * self.running_mean + (1 - m) * mean)
            self.running_var.copy_(m * self.running_var + (1 - m) * var * n / (n - 1))


class BNBiasedRunningVar(_BN):
    def update(self, mean, var, n):
        super().update(mean, var * (n - 1) / n, n)


class BNEvalUsesBatchStats(_BN):
    def forward(self, x):
        mean, var = self.batch_stats(x)
        if self.training:
            self.update(mean.detach(), var.detach(), x.numel() // x.shape[1])
        return self.affine(self.normalize(x, mean, var))


class BNUnbiasedNormalization(_BN):
    def batch_stats(self, x):
        mean, var = super().batch_stats(x)
        n = x.numel() // x.shape[1]
        return mean, var * n / (n - 1)

    def update(self, mean, var, n):
        super().update(mean, var * (n - 1) / n, n)


class BNEpsOutsideSqrt(_BN):
    def normalize(self, x, mean, var):
        return (x - _bc(mean, x)) / (torch.sqrt(_bc(var, x)) + self.eps)


class BNNoRunningUpdate(_BN):
    def update(self, mean, var, n):
        pass


class BNUpdatesInEval(_BN):
    def forward(self, x):
        y = super().forward(x)
        if not self.training:
            mean, var = self.batch_stats(x)
            self.update(mean.detach(), var.detach(), x.numel() // x.shape[1])
        return y


class BNBatchAxisOnly(_BN):
    def batch_stats(self, x):
        return x.mean(0), x.var(0, unbiased=False)          # (C, *): one statistic per channel AND position

    def normalize(self, x, mean, var):
        if mean.dim() == 1:
            return super().normalize(x, mean, var)
        return (x - mean) / torch.sqrt(var + self.eps)


class BNNaiveVariance(_BN):
    def batch_stats(self, x):
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        return mean, (x * x).mean(dims) - mean * mean


class BNDetachedStatistics(_BN):
    def normalize(self, x, mean, var):
        return super().normalize(x, mean.detach(), var.detach())


class BNNoAffine(_BN):
    def affine(self, y):
        return y


class BNStatsWithHistory(_BN):
    def update(self, mean, var, n):
        m = self.momentum                  # the batch statistics are not detached: the buffers join the graph
        self.running_mean.copy_((1 - m) * self.running_mean + m * mean)
        self.running_var.copy_((1 - m) * self.running_var + m * var * n / (n - 1))

    def forward(self, x):
        if self.training:
            mean, var = self.batch_stats(x)
            self.update(mean, var, x.numel() // x.shape[1])
            return self.affine(self.normalize(x, mean, var))
        return super().forward(x)


class BNPlainAttributes(_BN):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        del self.running_mean, self.running_var
        self.running_mean = torch.zeros(num_features)        # plain tensors: not in state_dict, not moved by .to()
        self.running_var = torch.ones(num_features)

    def update(self, mean, var, n):
        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * mean
        self.running_var = (1 - m) * self.running_var + m * var * n / (n - 1)


register(ModuleExercise(
    name="BatchNorm",
    chapter="normalization/batch_norm",
    signature="BatchNorm(num_features, eps=1e-5, momentum=0.1)",
    oracle=BatchNormSpec,
    cases=_bn_cases,
    extra_buffers=("num_batches_tracked",),     # nn.BatchNorm's counter: the contract is silent, a reader may keep it
    forbidden=BATCH_NORM_BUILTINS,
    properties=[
        Property("a fresh module starts as nn.BatchNorm1d does (weight 1, bias 0, running_mean 0, running_var 1)",
                 partial(starts_as, builtin=nn.BatchNorm1d, init=(3,), kwargs={"eps": 1e-3, "momentum": 0.2})),
        Property("in eval mode each sample is normalised on its own", _eval_is_per_sample),
        Property("a state_dict from nn.BatchNorm2d loads and agrees (num_batches_tracked only if you keep it)",
                 _loads_torch_state_dict),
    ],
    hints=("per channel, over every axis but 1: training normalises with the batch's statistics and updates the "
           "running ones, eval uses the running ones and updates nothing   (eqs. bn-train, bn-running, bn-eval)",
           "normalise with the biased variance, eps inside the square root; update the buffers in place under "
           "no_grad with PyTorch's momentum (the weight of the new value) and the unbiased variance",
           "train: y = (x - mean) / sqrt(var + eps) * weight + bias over dims (0, 2, 3, ...) with the biased var, then "
           "running = (1 - momentum) * running + momentum * stat with the unbiased var; eval: use the running "
           "statistics   (eqs. bn-train, bn-running, bn-eval)"),
    mistakes=[
        Mistake("momentum reversed", BNMomentumReversed,
                "your running statistics use the momentum the other way round: PyTorch's convention is "
                "running = (1 - momentum) * running + momentum * batch_statistic, so momentum=0.1 moves them 10%."),
        Mistake("biased running variance", BNBiasedRunningVar,
                "your running_var is updated with the biased batch variance (divided by n): PyTorch stores the "
                "unbiased estimate, var * n / (n - 1), with n = N * L (or N * H * W) values per channel."),
        Mistake("eval uses batch statistics", BNEvalUsesBatchStats,
                "in eval mode you still normalise with the batch's own mean and variance: eval mode must use "
                "running_mean and running_var, so that a sample's output does not depend on its batch."),
        Mistake("unbiased variance in the forward pass", BNUnbiasedNormalization,
                "you normalise with the unbiased variance (divided by n - 1): the forward pass uses the biased "
                "variance (divided by n); only the running_var update uses n / (n - 1)."),
        Mistake("eps outside the square root", BNEpsOutsideSqrt,
                "eps is added outside the square root: divide by sqrt(var + eps), not sqrt(var) + eps; the "
                "difference shows when the variance is tiny."),
        Mistake("running statistics never updated", BNNoRunningUpdate,
                "your running_mean and running_var never change: in training mode each forward call must update "
                "them in place (under torch.no_grad(), or with detached batch statistics)."),
        Mistake("running statistics updated in eval", BNUpdatesInEval,
                "your running statistics also change in eval mode: update them only when self.training is True."),
        Mistake("statistics over the batch axis only", BNBatchAxisOnly,
                "you took statistics over the batch axis only: BatchNorm has one mean and variance per channel, "
                "over every axis except 1 (N and the length or height and width axes)."),
        Mistake("E[x^2] - E[x]^2 variance", BNNaiveVariance,
                "your variance E[x^2] - E[x]^2 cancels catastrophically when the values sit far from zero: "
                "compute the mean first, then the mean of (x - mean)^2."),
        Mistake("batch statistics detached", BNDetachedStatistics,
                "your forward pass treats the batch mean and variance as constants (.detach()): the gradient "
                "must flow through them too; detach only what goes into the running statistics."),
        Mistake("no affine transform", BNNoAffine,
                "you never apply weight and bias: the output is x_hat * weight + bias, per channel."),
        Mistake("running statistics keep the graph", BNStatsWithHistory,
                "your running_mean and running_var carry autograd history: the update uses the batch statistics "
                "of a graph that backward frees. Update them under torch.no_grad() (or from .detach()ed "
                "statistics), so that a later step's backward does not reach into an old graph."),
        Mistake("statistics not registered as buffers", BNPlainAttributes,
                "running_mean and running_var are plain tensor attributes: register them with "
                "self.register_buffer(...) so that they are saved in state_dict and moved by .to()."),
    ],
    bench=(lambda: call(randn(32, 64, 56, 56, seed=0)), nn.BatchNorm2d, ((64,), {})),
))
