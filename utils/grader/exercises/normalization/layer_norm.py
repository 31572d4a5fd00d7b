"""Part 2, normalization: LayerNorm and RMSNorm (chapter normalization/layer_norm).

Oracles: nn.LayerNorm and nn.RMSNorm, behind the exercises' exact constructors. The engine checks that the
reader's parameters have the same names and shapes, so a state_dict saved from the built-in loads.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ....i18n import msg
from ...core import Mistake, Property
from ...inputs import case as _case
from ...inputs import f32, f64
from ...inputs import randn, strided, transposed
from ...kinds import ModuleExercise, Script
from ...registry import register
from .batch_norm import starts_as, steps_of


NORM_BUILTINS = (
    "F.layer_norm", "torch.layer_norm", "torch.native_layer_norm", "F.rms_norm", "torch.rms_norm",
    "F.group_norm", "torch.group_norm", "F.batch_norm", "torch.batch_norm", "F.instance_norm",
    "F.normalize",
)


class LayerNormSpec(nn.LayerNorm):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)


class RMSNormSpec(nn.RMSNorm):
    """The curriculum's RMSNorm(dim, eps=1e-6): 1e-6 is LLaMA's value. nn.RMSNorm's own default is eps=None, the
    machine epsilon of the computation type, so the exercise's default is passed explicitly."""

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim, eps=eps)


# --------------------------------------------------------------------------- cases

def _script(shape, init, modes="TE", *, kwargs=None, dtype=f32, seed=0, scale=1.0, shift=0.0, noncontig=False):
    """`init` is the constructor's positional arguments; one input per letter of `modes` (see steps_of).
    noncontig: True or "transposed" (the last two axes swapped in memory), "strided" (every other column)."""
    if noncontig == "strided":
        xs = [strided(*shape, dtype=dtype, seed=seed + k, scale=scale) for k in range(len(modes))]
    elif noncontig:
        xs = [transposed(*shape, dtype=dtype, seed=seed + k, scale=scale) for k in range(len(modes))]
    else:
        xs = [randn(*shape, dtype=dtype, seed=seed + k, scale=scale, shift=shift) for k in range(len(modes))]
    return Script(init=(init, kwargs or {}), steps=steps_of(xs, modes), dtype=dtype)


def case(*args, note="", **kwargs):
    return _case(_script, *args, note=note, grad=any(m in "Gg" for m in kwargs.get("modes", "")), **kwargs)


def _ln_cases():
    return [
        case((4, 16), (16,), modes="TE", note="(N, D) input, int normalized_shape"),
        case((2, 3, 8), (8,), modes="TE", seed=10, note="(B, T, D) input"),
        case((2, 3, 5, 6), ((5, 6),), modes="TE", seed=20, note="tuple normalized_shape (5, 6): the last two axes"),
        case((3, 4, 8), (8,), modes="TE", seed=30, kwargs={"elementwise_affine": False},
             note="elementwise_affine=False: no parameters"),
        case((2, 4), ((4,),), modes="TE", seed=40, note="batch of two, normalized_shape=(4,)"),
        case((3, 6), (6,), modes="TE", seed=50, scale=1e-3, kwargs={"eps": 1e-4},
             note="tiny variance (1e-6, below eps=1e-4)"),
        case((4, 32), (32,), modes="TE", dtype=f64, seed=60, shift=1e4, note="large offset: x = 10^4 + noise, float64"),
        case((5, 7), (7, 1e-3, True), modes="TE", seed=70, noncontig=True,
             note="non-contiguous input; eps and elementwise_affine passed positionally"),
        case((2, 3, 4), ((3, 4),), modes="G", dtype=f64, seed=80, note="gradient, tuple shape, float64"),
        case((3, 8), (8,), modes="G", seed=90, kwargs={"eps": 1e-3}, note="gradient, float32"),
        case((2, 5, 6), (6,), modes="G", dtype=f64, seed=100, kwargs={"elementwise_affine": False},
             note="gradient without affine parameters"),
        case((3, 2, 4), ((3, 2, 4),), modes="T", seed=110, note="normalized_shape covers the whole input"),
        case((2, 3, 10), (10,), modes="GgG", dtype=f64, seed=120, noncontig="strided",
             note="strided non-contiguous input (every other column), backward after each train/eval step"),
    ]


def _rms_cases():
    return [
        case((4, 16), (16,), modes="TE", note="(N, D) input, default eps"),
        case((2, 3, 8), (8,), modes="TE", seed=10, note="(B, T, D) input"),
        case((2, 6), (6,), modes="TE", seed=20, note="batch of two"),
        case((3, 10), (10,), modes="TE", seed=30, scale=1e-3, note="tiny values (mean square 1e-6 = eps)"),
        case((4, 5), (5,), modes="TE", seed=40, scale=0.05, kwargs={"eps": 1e-3},
             note="eps=1e-3 with small values: eps matters"),
        case((3, 12), (12,), modes="TE", dtype=f64, seed=50, shift=1e3,
             note="large offset (x = 1000 + noise), float64"),
        case((5, 7), (7, 1e-4), modes="TE", seed=60, noncontig=True, note="non-contiguous input, eps positional"),
        case((2, 2, 3, 4), (4,), modes="TE", seed=70, note="4-D input"),
        case((2, 3, 6), (6,), modes="G", dtype=f64, seed=80, note="gradient, float64"),
        case((4, 8), (8,), modes="G", seed=90, kwargs={"eps": 1e-4}, note="gradient, float32"),
        case((3, 2, 8), (8,), modes="GgG", dtype=f64, seed=100, noncontig="strided",
             note="strided non-contiguous input (every other column), backward after each train/eval step"),
    ]


# --------------------------------------------------------------------------- properties

def _loads(call, builtin, init, shape, seed):
    ref = builtin(*init)
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    m = call(*init)
    try:
        m.load_state_dict(state)
    except RuntimeError as e:
        return msg("load_state_dict of {module}{init}'s weights fails: {error}", module=type(ref).__name__, init=init,
                   error=str(e).splitlines()[0])
    x = randn(*shape, seed=seed + 1)
    with torch.no_grad():
        a, b = ref(x), m(x)
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-5):
        gap = float((a - b).abs().max())
        return msg("with {module}{init}'s state_dict loaded, outputs differ by {gap:.3g}", module=type(ref).__name__,
                   init=init, gap=gap)
    return None


def _ln_loads(call):
    return (_loads(call, nn.LayerNorm, (6,), (3, 6), 130)
            or _loads(call, nn.LayerNorm, ((3, 4),), (2, 3, 4), 132))


def _rms_loads(call):
    return _loads(call, nn.RMSNorm, (8,), (2, 3, 8), 140)


def _ln_rows_independent(call):
    m = call(5)
    x = randn(4, 5, seed=150)
    whole, alone = m(x)[:1], m(x[:1])
    if not torch.allclose(whole, alone, rtol=1e-5, atol=1e-6):
        return msg("the output for one row changes when the other rows are removed: normalise each row on its own")
    return None


# --------------------------------------------------------------------------- LayerNorm mistakes

class _LN(nn.Module):
    """The base of the wrong LayerNorms below; each mistake overrides one piece."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape))
        else:
            self.weight = self.bias = None

    def dims(self):
        return tuple(range(-len(self.normalized_shape), 0))

    def stats(self, x):
        mean = x.mean(self.dims(), keepdim=True)
        return mean, ((x - mean) ** 2).mean(self.dims(), keepdim=True)

    def normalize(self, x, mean, var):
        return (x - mean) / torch.sqrt(var + self.eps)

    def forward(self, x):
        y = self.normalize(x, *self.stats(x))
        return y if self.weight is None else y * self.weight + self.bias


class LNBatchAxis(_LN):
    def dims(self):
        return (0,)


class LNLastAxisOnly(_LN):
    def dims(self):
        return (-1,)


class LNUnbiased(_LN):
    def stats(self, x):
        return x.mean(self.dims(), keepdim=True), x.var(self.dims(), keepdim=True)


class LNEpsOutsideSqrt(_LN):
    def normalize(self, x, mean, var):
        return (x - mean) / (torch.sqrt(var) + self.eps)


class LNNaiveVariance(_LN):
    def stats(self, x):
        mean = x.mean(self.dims(), keepdim=True)
        return mean, (x * x).mean(self.dims(), keepdim=True) - mean * mean


class LNAlwaysAffine(_LN):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__(normalized_shape, eps, True)


class LNLastDimParameters(_LN):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__(normalized_shape, eps, elementwise_affine)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape[-1]))
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape[-1]))


class LNIntShape(_LN):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__(normalized_shape, eps, elementwise_affine)
        self.normalized_shape = normalized_shape            # an int stays an int

    def dims(self):
        return tuple(range(-len(self.normalized_shape), 0))


class LNPlainTensors(_LN):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__(normalized_shape, eps, False)
        if elementwise_affine:
            self.weight = torch.ones(self.normalized_shape)
            self.bias = torch.zeros(self.normalized_shape)


register(ModuleExercise(
    name="LayerNorm",
    chapter="normalization/layer_norm",
    signature="LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True)",
    oracle=LayerNormSpec,
    cases=_ln_cases,
    forbidden=NORM_BUILTINS,
    properties=[
        Property("a fresh module starts as nn.LayerNorm does (weight 1, bias 0)",
                 partial(starts_as, builtin=nn.LayerNorm, init=((3, 4),))),
        Property("a state_dict from nn.LayerNorm loads and agrees (int and tuple shapes)", _ln_loads),
        Property("each row is normalised on its own", _ln_rows_independent),
    ],
    hints=("normalise each sample over its last len(normalized_shape) axes, then scale and shift per feature   "
           "(eq. ln-def)",
           "an int normalized_shape becomes a one-element tuple; reduce with keepdim=True, use the biased variance "
           "and eps inside the square root; without affine parameters register weight and bias as None",
           "over the last len(normalized_shape) axes: y = (x - mean) / sqrt(var + eps) * weight + bias, biased var; "
           "weight and bias have shape normalized_shape   (eq. ln-def)"),
    mistakes=[
        Mistake("normalised over the batch axis", LNBatchAxis,
                "you normalised over the batch axis (dim 0), as BatchNorm does: LayerNorm normalises each "
                "sample over its last len(normalized_shape) axes."),
        Mistake("last axis only", LNLastAxisOnly,
                "you normalised over the last axis only: with normalized_shape=(5, 6) the statistics are over "
                "the last two axes, dims = range(-len(normalized_shape), 0)."),
        Mistake("unbiased variance", LNUnbiased,
                "x.var() divides by n - 1 by default: LayerNorm uses the biased variance, "
                "x.var(dims, unbiased=False, keepdim=True) or ((x - mean) ** 2).mean(dims, keepdim=True)."),
        Mistake("eps outside the square root", LNEpsOutsideSqrt,
                "eps is added outside the square root: divide by sqrt(var + eps), not sqrt(var) + eps."),
        Mistake("E[x^2] - E[x]^2 variance", LNNaiveVariance,
                "your variance E[x^2] - E[x]^2 cancels catastrophically when the values sit far from zero: "
                "compute the mean first, then the mean of (x - mean)^2."),
        Mistake("affine parameters always created", LNAlwaysAffine,
                "with elementwise_affine=False nn.LayerNorm has no parameters at all: create weight and bias "
                "only when elementwise_affine is True."),
        Mistake("parameters of the last axis only", LNLastDimParameters,
                "weight and bias must have shape normalized_shape (e.g. (5, 6)), not just its last entry, "
                "or nn.LayerNorm's state_dict will not load."),
        Mistake("int normalized_shape not handled", LNIntShape,
                "normalized_shape may be an int: turn it into a tuple, (n,), in __init__ before taking len() "
                "or building dims from it."),
        Mistake("weight and bias not parameters", LNPlainTensors,
                "weight and bias are plain tensors: wrap them in nn.Parameter so that they are trained, "
                "saved in state_dict and moved by .to()."),
    ],
    bench=(lambda: ((randn(8, 1024, 768, seed=0),), {}), nn.LayerNorm, ((768,), {})),
))


# --------------------------------------------------------------------------- RMSNorm mistakes

class _RMS(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def rms(self, x):
        return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        return x / self.rms(x) * self.weight


class RMSSubtractsMean(_RMS):
    def forward(self, x):
        return super().forward(x - x.mean(-1, keepdim=True))


class RMSEpsOutsideSqrt(_RMS):
    def rms(self, x):
        return torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + self.eps


class RMSNoSqrt(_RMS):
    def rms(self, x):
        return x.pow(2).mean(-1, keepdim=True) + self.eps


class RMSL2Norm(_RMS):
    def rms(self, x):
        return torch.sqrt(x.pow(2).sum(-1, keepdim=True) + self.eps)


class RMSBatchAxis(_RMS):
    def rms(self, x):
        return torch.sqrt(x.pow(2).mean(0, keepdim=True) + self.eps)


class RMSWithBias(_RMS):
    def __init__(self, dim, eps=1e-6):
        super().__init__(dim, eps)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return super().forward(x) + self.bias


class RMSFixedEps(_RMS):
    def rms(self, x):
        return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class RMSNoKeepdim(_RMS):
    def rms(self, x):
        return torch.sqrt(x.pow(2).mean(-1) + self.eps)


register(ModuleExercise(
    name="RMSNorm",
    chapter="normalization/layer_norm",
    signature="RMSNorm(dim, eps=1e-6)",
    oracle=RMSNormSpec,
    cases=_rms_cases,
    forbidden=NORM_BUILTINS,
    properties=[
        Property("a fresh module starts as nn.RMSNorm does (weight 1)", partial(starts_as, builtin=nn.RMSNorm, init=(8,))),
        Property("a state_dict from nn.RMSNorm loads and agrees", _rms_loads),
    ],
    hints=("RMSNorm only rescales each vector over its last axis by its root mean square; one weight, no bias   "
           "(eq. rms-def)",
           "the mean of the squares (keepdim=True) replaces the variance; eps goes inside the square root and comes "
           "from the eps argument",
           "y = x / sqrt(mean(x^2, dim=-1, keepdim=True) + eps) * weight: no mean subtracted, no bias   "
           "(eq. rms-def)"),
    mistakes=[
        Mistake("subtracts the mean", RMSSubtractsMean,
                "you subtracted the mean: RMSNorm only rescales, x / sqrt(mean(x^2) + eps); centring is what "
                "it drops from LayerNorm."),
        Mistake("eps outside the square root", RMSEpsOutsideSqrt,
                "eps is added outside the square root: divide by sqrt(mean(x^2) + eps), not sqrt(mean(x^2)) + eps."),
        Mistake("no square root", RMSNoSqrt,
                "you divided by the mean square: the RMS is its square root, sqrt(mean(x^2) + eps)."),
        Mistake("L2 norm instead of RMS", RMSL2Norm,
                "you divided by the L2 norm (a sum of squares): the RMS uses the mean, sum / dim, so outputs "
                "are sqrt(dim) times larger than yours."),
        Mistake("normalised over the batch axis", RMSBatchAxis,
                "you took the mean square over the batch axis (dim 0): RMSNorm normalises each vector over "
                "its last axis, dim=-1."),
        Mistake("extra bias", RMSWithBias,
                "RMSNorm has a weight only: no bias parameter (nn.RMSNorm's state_dict has just 'weight')."),
        Mistake("eps argument ignored", RMSFixedEps,
                "you ignore the eps argument (a constant is hard-coded): store eps in __init__ and use self.eps."),
        Mistake("no keepdim", RMSNoKeepdim,
                "the mean square lost its reduced axis: use keepdim=True so that it broadcasts against x."),
    ],
    bench=(lambda: ((randn(8, 1024, 768, seed=0),), {}), nn.RMSNorm, ((768,), {"eps": 1e-6})),
))
