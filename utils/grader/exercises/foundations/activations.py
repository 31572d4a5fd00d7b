"""Part 1, foundations: activation functions (chapter foundations/activations).

sigmoid, tanh, relu, leaky_relu, elu, gelu (both `approximate` modes) and silu. Each is graded against its
PyTorch counterpart on ordinary inputs, on |x| up to 1e4, on exact zeros (where PyTorch fixes the derivative of
a kink) and with non-default parameters; gradients are compared on the extremes and at 0.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn, strided, transposed
from ...registry import register



# --------------------------------------------------------------------------- shared cases

def _x(tensor, *args, **kwargs):
    return call(tensor(), *args, **kwargs)


def _T(*shape, **kw):
    return partial(randn, *shape, **kw)


def _ladder(dtype=f32):
    """-1e4 ... 1e4 with exact zeros: the extremes where naive formulas overflow, and the kink at 0."""
    v = [-1e4, -1000.0, -100.0, -30.0, -5.0, -1.0, -1e-3, 0.0, 0.0, 1e-3, 1.0, 5.0, 30.0, 100.0, 1000.0, 1e4]
    return torch.tensor(v, dtype=dtype).reshape(2, 8)


def _with_zeros(*shape, seed=0, dtype=f64):
    x = randn(*shape, seed=seed, dtype=dtype, scale=3.0)
    x.view(-1)[::3] = 0.0
    return x


def _cases(*params):
    """The common cases; `params` are (args, kwargs, note) of non-default parameters, each tried on its own cases."""
    cases = [
        case(_x, _T(7), note="1-D"),
        case(_x, _T(3, 7, seed=1, scale=3.0), note="2-D"),
        case(_x, _T(2, 3, 4, seed=2, dtype=f64, scale=3.0), note="3-D, float64"),
        case(_x, _T(1, seed=3), note="a single element"),
        case(_x, partial(transposed, 5, 4, seed=4, scale=3.0), note="non-contiguous (transposed) view"),
        case(_x, partial(strided, 3, 6, seed=5, dtype=f64, scale=3.0), note="non-contiguous (strided) view"),
        case(_x, _T(4, 5, seed=6, scale=1e4), note="extreme values, |x| up to 1e4"),
        case(_x, _ladder, note="-1e4 ... 1e4 and exact zeros"),
        case(_x, partial(_with_zeros, 4, 6, seed=7), note="exact zeros", grad=True),
        case(_x, partial(_ladder, f64), note="gradient from -1e4 to 1e4, exact zeros included", grad=True),
    ]
    for k, (args, kwargs, note) in enumerate(params):
        cases += [
            case(_x, _T(3, 6, seed=20 + k, scale=3.0), *args, note=note, **kwargs),
            case(_x, _ladder, *args, note=msg("{note}, -1e4 ... 1e4", note=note), **kwargs),
            case(_x, partial(_ladder, f64), *args, note=msg("{note}, gradient from -1e4 to 1e4", note=note), grad=True,
                 **kwargs),
        ]
    return cases


def _finite_everywhere(call, **kwargs):
    x = torch.linspace(-1e4, 1e4, 2001, dtype=f32)
    x.requires_grad_()
    y = call(x, **kwargs)
    if not torch.isfinite(y).all():
        return msg("not finite at x = {x}", x=x[~torch.isfinite(y)][:3].tolist())
    (g,) = torch.autograd.grad(y.sum(), x)
    if not torch.isfinite(g).all():
        return msg("the gradient is not finite at x = {x}", x=x[~torch.isfinite(g)][:3].tolist())
    return None


def _odd(call, scale=1.0, shift=0.0):
    x = randn(50, seed=90, dtype=f64, scale=5.0)
    a, b = call(-x), scale * call(x) + shift
    if not torch.allclose(a, b):
        return msg("f(-x) and {scale:g} * f(x) + {shift:g} differ by {gap:.3g}", scale=scale, shift=shift,
                   gap=float((a - b).abs().max()))
    return None


def _detached(fn):
    return lambda x, *a, **k: fn(x.detach(), *a, **k)


FINITE = Property("output and gradient finite for x in [-1e4, 1e4]", _finite_everywhere)


# --------------------------------------------------------------------------- sigmoid

def sigmoid_exp_ratio(x):
    return torch.exp(x) / (1 + torch.exp(x))


def sigmoid_naive(x):
    return 1 / (1 + torch.exp(-x))


def sigmoid_where_both(x):
    return torch.where(x >= 0, 1 / (1 + torch.exp(-x)), torch.exp(x) / (1 + torch.exp(x)))


def sigmoid_sign(x):
    e = torch.exp(-x.abs())
    return torch.where(x >= 0, e / (1 + e), 1 / (1 + e))


def sigmoid_abs_kink(x):
    e = torch.exp(-x.abs())
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _sigmoid_stable(x):
    e = torch.exp(x.clamp(max=0))
    return torch.where(x >= 0, 1 / (1 + torch.exp(-x.clamp(min=0))), e / (1 + e))


def sigmoid_builtin(x):
    return torch.sigmoid(x)


register(Exercise(
    name="sigmoid",
    chapter="foundations/activations",
    signature="sigmoid(x)",
    oracle=torch.sigmoid,
    cases=_cases,
    forbidden=("torch.sigmoid", "F.sigmoid", "Tensor.sigmoid", "torch.special.expit", "torch.sigmoid_",
               "Tensor.sigmoid_"),
    properties=[FINITE, Property("sigmoid(-x) = 1 - sigmoid(x)", partial(_odd, scale=-1.0, shift=1.0))],
    hints=("never exponentiate a positive number: one formula for x >= 0, an equal one for x < 0   "
           "(eq. act-sigmoid-stable)",
           "torch.where differentiates both branches: clamp each branch's input (min=0 or max=0) so the branch it "
           "discards stays finite",
           "where(x >= 0, 1 / (1 + exp(-max(x, 0))), e / (1 + e)) with e = exp(min(x, 0)): clamp before exp so "
           "neither branch overflows   (eq. act-sigmoid-stable)"),
    mistakes=[
        Mistake("exp ratio overflows", sigmoid_exp_ratio,
                "exp(x) / (1 + exp(x)) is inf/inf = NaN for x > 88: for x >= 0 use 1 / (1 + exp(-x)), "
                "whose exponent is <= 0."),
        Mistake("naive gradient overflows", sigmoid_naive,
                "1 / (1 + exp(-x)) is right in value, but exp(-x) = inf for x < -88 and its gradient is inf * 0 = "
                "NaN: for x < 0 use exp(x) / (1 + exp(x)), with exponents clamped so that neither branch overflows."),
        Mistake("both branches of where", sigmoid_where_both,
                "torch.where evaluates (and differentiates) both branches: exp(x) overflows in the branch you "
                "discard and its NaN gradient leaks through. Clamp before exp: exp(-max(x, 0)) and exp(min(x, 0))."),
        Mistake("gradient 0 at x = 0", sigmoid_abs_kink,
                "exp(-|x|) is safe in value, but autograd takes d|x|/dx = 0 at x = 0, so your gradient there is 0 "
                "instead of sigmoid'(0) = 1/4: clamp instead, exp(-max(x, 0)) in one branch and exp(min(x, 0)) in "
                "the other."),
        Mistake("branches swapped", sigmoid_sign,
                "the branches are swapped: sigmoid is 1/(1 + exp(-x)) for x >= 0 and exp(x)/(1 + exp(x)) for x < 0."),
        Mistake("calls the built-in", sigmoid_builtin,
                "this exercise asks you to write sigmoid yourself: torch.sigmoid, F.sigmoid and "
                "torch.special.expit are off limits; use exp."),
        Mistake("detached", _detached(_sigmoid_stable),
                "your result is cut from the autograd graph (.detach() / .data / no_grad): gradients cannot "
                "flow back to x."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0)), torch.sigmoid),
))


# --------------------------------------------------------------------------- tanh

def tanh_exp_ratio(x):
    return (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))


def tanh_exp_minus_2x(x):
    e = torch.exp(-2 * x)
    return (1 - e) / (1 + e)


def tanh_exp_plus_2x(x):
    e = torch.exp(2 * x)
    return (e - 1) / (e + 1)


def tanh_via_naive_sigmoid(x):
    return 2 / (1 + torch.exp(-2 * x)) - 1


def tanh_half(x):
    return 2 * _sigmoid_stable(x) - 1       # a sigmoid without a kink at 0, so only the x/2 is wrong


def tanh_sign_kink(x):
    e = torch.exp(-2 * x.abs())
    return torch.sign(x) * (1 - e) / (1 + e)


def tanh_builtin(x):
    return torch.tanh(x)


register(Exercise(
    name="tanh",
    chapter="foundations/activations",
    signature="tanh(x)",
    oracle=torch.tanh,
    cases=_cases,
    forbidden=("torch.tanh", "F.tanh", "Tensor.tanh", "torch.tanh_", "Tensor.tanh_"),
    properties=[FINITE, Property("tanh(-x) = -tanh(x)", partial(_odd, scale=-1.0))],
    hints=("divide numerator and denominator by e^x for x >= 0 and by e^-x for x < 0, so no exponent is "
           "positive   (eq. act-tanh-stable)",
           "clamp the input of each branch of torch.where; avoid |x| and sign(x), whose gradient at 0 is wrong",
           "where(x >= 0, (1 - a)/(1 + a), (b - 1)/(b + 1)) with a = exp(-2 max(x, 0)), b = exp(2 min(x, 0))   "
           "(eq. act-tanh-stable)"),
    mistakes=[
        Mistake("exp ratio overflows", tanh_exp_ratio,
                "(e^x - e^-x) / (e^x + e^-x) is inf/inf = NaN once |x| > 88: use two branches whose "
                "exponents are clamped to be <= 0."),
        Mistake("exp(-2x) overflows for negative x", tanh_exp_minus_2x,
                "(1 - exp(-2x)) / (1 + exp(-2x)) is inf/inf = NaN for x < -44: for x < 0 use "
                "(exp(2x) - 1) / (exp(2x) + 1), clamping each exponent to <= 0."),
        Mistake("exp(2x) overflows for positive x", tanh_exp_plus_2x,
                "(exp(2x) - 1) / (exp(2x) + 1) is inf/inf = NaN for x > 44: for x > 0 use "
                "(1 - exp(-2x)) / (1 + exp(-2x)), clamping each exponent to <= 0."),
        Mistake("naive gradient overflows", tanh_via_naive_sigmoid,
                "2 / (1 + exp(-2x)) - 1 is right in value but its gradient is inf * 0 = NaN for x < -44: "
                "clamp the exponent so that it is never positive."),
        Mistake("gradient 0 at x = 0", tanh_sign_kink,
                "sign(x) * (1 - exp(-2|x|)) / (1 + exp(-2|x|)) is right in value, but autograd takes the derivative "
                "of sign and |x| as 0 at x = 0, so your gradient there is 0 instead of 1: use two clamped branches, "
                "exp(-2 max(x, 0)) for x >= 0 and exp(2 min(x, 0)) for x < 0."),
        Mistake("tanh(x/2)", tanh_half,
                "2 * sigmoid(x) - 1 is tanh(x/2): the identity is tanh(x) = 2 * sigmoid(2x) - 1."),
        Mistake("calls the built-in", tanh_builtin,
                "this exercise asks you to write tanh yourself: torch.tanh and F.tanh are off limits; use exp."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0)), torch.tanh),
))


# --------------------------------------------------------------------------- relu

def relu_clamp(x):
    return x.clamp(min=0)


def relu_maximum(x):
    return torch.maximum(x, torch.zeros_like(x))


def relu_in_place(x):
    x[x < 0] = 0
    return x


def relu_builtin(x):
    return F.relu(x)


register(Exercise(
    name="relu",
    chapter="foundations/activations",
    signature="relu(x)",
    oracle=torch.relu,
    cases=_cases,
    forbidden=("torch.relu", "F.relu", "Tensor.relu", "torch.relu_", "F.relu_", "Tensor.relu_", "F.threshold",
               "torch.threshold", "F.hardtanh", "F.relu6"),
    properties=[FINITE],
    hints=("the value is max(x, 0); what matters is the derivative at the kink, which PyTorch sets to 0   "
           "(eq. act-relu)",
           "clamp(min=0) and maximum(x, 0) give gradient 1 and 1/2 at x = 0: multiply by a mask instead",
           "x * (x > 0): the value is max(x, 0) and PyTorch's derivative is 1 where x > 0, 0 elsewhere, 0 at x = 0"
           "   (eq. act-relu)"),
    mistakes=[
        Mistake("gradient 1 at zero", relu_clamp,
                "your gradient at x = 0 is 1 (clamp(min=0) and where(x >= 0, ...) pass it); PyTorch's ReLU "
                "uses 0 there: the mask must be x > 0."),
        Mistake("gradient 1/2 at zero", relu_maximum,
                "torch.maximum(x, 0) (and (x + |x|) / 2) split the gradient at the tie x = 0, giving 1/2; "
                "PyTorch's ReLU uses 0: multiply by the mask (x > 0)."),
        Mistake("in place", relu_in_place,
                "you changed the caller's tensor in place (x[x < 0] = 0, clamp_): compute into a new tensor."),
        Mistake("calls the built-in", relu_builtin,
                "this exercise asks you to write ReLU yourself: torch.relu, F.relu and F.threshold are off "
                "limits; use a comparison and a product (or torch.where)."),
        Mistake("detached", _detached(lambda x: x * (x > 0)),
                "your result is cut from the autograd graph (.detach() / .data / no_grad): gradients cannot "
                "flow back to x."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0)), torch.relu),
))


# --------------------------------------------------------------------------- leaky_relu

def leaky_where_ge(x, negative_slope=0.01):
    return torch.where(x >= 0, x, negative_slope * x)


def leaky_fixed_slope(x, negative_slope=0.01):
    return torch.where(x > 0, x, 0.01 * x)


def leaky_maximum(x, negative_slope=0.01):
    return torch.maximum(x, negative_slope * x)


def leaky_in_place(x, negative_slope=0.01):
    x[x < 0] *= negative_slope
    return x


def leaky_builtin(x, negative_slope=0.01):
    return F.leaky_relu(x, negative_slope)


register(Exercise(
    name="leaky_relu",
    chapter="foundations/activations",
    signature="leaky_relu(x, negative_slope=0.01)",
    oracle=lambda x, negative_slope=0.01: F.leaky_relu(x, negative_slope),
    cases=partial(_cases, ((0.2,), {}, "negative_slope=0.2 passed positionally"),
                  ((), {"negative_slope": 1.5}, "negative_slope=1.5"),
                  ((), {"negative_slope": -0.3}, "negative_slope=-0.3")),
    forbidden=("F.leaky_relu", "F.leaky_relu_", "torch._C._nn.leaky_relu", "torch._C._nn.leaky_relu_",
               "torch.prelu", "F.prelu", "F.rrelu", "torch.rrelu"),
    properties=[FINITE],
    hints=("two linear pieces; the condition you test decides the derivative at x = 0, which PyTorch sets to "
           "negative_slope   (eq. act-leaky)",
           "max(x, a * x) is only right for 0 <= a <= 1: select with torch.where instead",
           "torch.where(x > 0, x, negative_slope * x): PyTorch's derivative at x = 0 is negative_slope   "
           "(eq. act-leaky)"),
    mistakes=[
        Mistake("gradient 1 at zero", leaky_where_ge,
                "your gradient at x = 0 is 1 (x >= 0 picks the identity); PyTorch's leaky ReLU uses "
                "negative_slope there: test x > 0."),
        Mistake("slope hard-coded", leaky_fixed_slope,
                "you used 0.01 whatever negative_slope is: use the argument."),
        Mistake("max(x, a*x)", leaky_maximum,
                "max(x, a*x) is leaky ReLU only for 0 <= a <= 1 and it splits the gradient at x = 0: use "
                "torch.where(x > 0, x, a * x)."),
        Mistake("in place", leaky_in_place,
                "you changed the caller's tensor in place: compute into a new tensor."),
        Mistake("calls the built-in", leaky_builtin,
                "this exercise asks you to write leaky ReLU yourself: F.leaky_relu, prelu and rrelu are off "
                "limits; use torch.where."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0)), F.leaky_relu),
))


# --------------------------------------------------------------------------- elu

def elu_where_unsafe(x, alpha=1.0):
    return torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def elu_ge(x, alpha=1.0):
    return torch.where(x >= 0, x, alpha * torch.expm1(x.clamp(max=0)))


def elu_alpha_ignored(x, alpha=1.0):
    return torch.where(x > 0, x, torch.expm1(x.clamp(max=0)))


def elu_no_minus_one(x, alpha=1.0):
    return torch.where(x > 0, x, alpha * torch.exp(x.clamp(max=0)))


def elu_alpha_everywhere(x, alpha=1.0):
    return alpha * torch.where(x > 0, x, torch.expm1(x.clamp(max=0)))


def elu_builtin(x, alpha=1.0):
    return F.elu(x, alpha)


register(Exercise(
    name="elu",
    chapter="foundations/activations",
    signature="elu(x, alpha=1.0)",
    oracle=lambda x, alpha=1.0: F.elu(x, alpha),
    cases=partial(_cases, ((2.0,), {}, "alpha=2 passed positionally"),
                  ((), {"alpha": 0.5}, "alpha=0.5")),
    forbidden=("F.elu", "F.elu_", "torch._C._nn.elu", "torch._C._nn.elu_", "F.celu", "torch.celu", "F.selu",
               "torch.selu"),
    properties=[FINITE],
    hints=("the negative branch exponentiates x: keep the branch torch.where discards finite, and test x > 0 "
           "(PyTorch's derivative at 0 is alpha)   (eq. act-elu)",
           "expm1(t) computes e^t - 1 accurately; clamp its input with min(x, 0)",
           "torch.where(x > 0, x, alpha * expm1(min(x, 0))): clamp before exp so the unused branch cannot "
           "overflow   (eq. act-elu)"),
    mistakes=[
        Mistake("exp in the unused branch", elu_where_unsafe,
                "torch.where differentiates both branches: exp(x) = inf for large positive x in the branch you "
                "discard, and 0 * inf = NaN reaches the gradient. Use exp(min(x, 0)) (or expm1)."),
        Mistake("derivative at zero", elu_ge,
                "at x = 0 PyTorch's ELU takes the negative branch, whose derivative is alpha: test x > 0, "
                "not x >= 0."),
        Mistake("alpha ignored", elu_alpha_ignored,
                "you left out alpha: the negative branch is alpha * (exp(x) - 1)."),
        Mistake("missing - 1", elu_no_minus_one,
                "the negative branch is alpha * (exp(x) - 1), which is 0 at x = 0 and -alpha as x -> -inf; "
                "alpha * exp(x) jumps at 0."),
        Mistake("alpha on both branches", elu_alpha_everywhere,
                "alpha scales only the negative branch: ELU is x for x > 0."),
        Mistake("calls the built-in", elu_builtin,
                "this exercise asks you to write ELU yourself: F.elu, celu and selu are off limits; use "
                "torch.where and exp."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0)), F.elu),
))


# --------------------------------------------------------------------------- gelu

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu_exact(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _gelu_tanh(x, cubic=0.044715):
    return 0.5 * x * (1 + torch.tanh(SQRT_2_OVER_PI * (x + cubic * x**3)))


def gelu_exact_only(x, approximate="none"):
    return _gelu_exact(x)


def gelu_tanh_only(x, approximate="none"):
    return _gelu_tanh(x)


def gelu_sigmoid(x, approximate="none"):
    return x * torch.sigmoid(1.702 * x)


def gelu_erf_unscaled(x, approximate="none"):
    return 0.5 * x * (1 + torch.erf(x)) if approximate == "none" else _gelu_tanh(x)


def gelu_no_cubic(x, approximate="none"):
    return _gelu_exact(x) if approximate == "none" else _gelu_tanh(x, cubic=0.0)


def gelu_builtin(x, approximate="none"):
    return F.gelu(x, approximate=approximate)


register(Exercise(
    name="gelu",
    chapter="foundations/activations",
    signature='gelu(x, approximate="none")',
    oracle=lambda x, approximate="none": F.gelu(x, approximate=approximate),
    cases=partial(_cases, (("tanh",), {}, 'approximate="tanh" passed positionally'),
                  ((), {"approximate": "tanh"}, 'approximate="tanh"'),
                  ((), {"approximate": "none"}, 'approximate="none" passed explicitly')),
    forbidden=("F.gelu", "torch._C._nn.gelu", "torch._C._nn.gelu_"),
    properties=[FINITE, Property('finite with approximate="tanh"', partial(_finite_everywhere, approximate="tanh"))],
    hints=("GELU weights x by the standard normal CDF; the approximate argument chooses between the exact CDF "
           "and its tanh approximation   (eqs. act-gelu, act-gelu-tanh)",
           "Phi(x) = (1 + erf(x / sqrt(2))) / 2; the tanh form uses sqrt(2/pi) and a cubic term 0.044715 x^3",
           '"none": 0.5 x (1 + erf(x / sqrt 2)); "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   '
           "(eqs. act-gelu, act-gelu-tanh)"),
    mistakes=[
        Mistake("approximate ignored (exact)", gelu_exact_only,
                'you always compute the exact GELU: approximate="tanh" asks for '
                "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."),
        Mistake("approximate ignored (tanh)", gelu_tanh_only,
                'you always compute the tanh approximation: approximate="none" (the default) is the exact '
                "0.5 x (1 + erf(x / sqrt 2))."),
        Mistake("sigmoid approximation", gelu_sigmoid,
                "x * sigmoid(1.702 x) is a cruder approximation that PyTorch does not offer: use erf for "
                '"none" and the tanh formula for "tanh".'),
        Mistake("erf without sqrt 2", gelu_erf_unscaled,
                "the normal CDF is 0.5 (1 + erf(x / sqrt 2)): you left out the 1/sqrt(2) inside erf."),
        Mistake("cubic term missing", gelu_no_cubic,
                "the tanh approximation is tanh(sqrt(2/pi) (x + 0.044715 x^3)): the cubic term is missing."),
        Mistake("calls the built-in", gelu_builtin,
                "this exercise asks you to write GELU yourself: F.gelu is off limits; use torch.erf and "
                "torch.tanh."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0)), F.gelu),
))


# --------------------------------------------------------------------------- silu

def silu_naive(x):
    return x / (1 + torch.exp(-x))


def silu_exp_ratio(x):
    return x * torch.exp(x) / (1 + torch.exp(x))


def silu_mish(x):
    return x * torch.tanh(F.softplus(x))


def silu_forgot_x(x):
    return torch.sigmoid(x)


def silu_in_place(x):
    return x.mul_(torch.sigmoid(x))


def silu_builtin(x):
    return F.silu(x)


register(Exercise(
    name="silu",
    chapter="foundations/activations",
    signature="silu(x)",
    oracle=F.silu,
    cases=_cases,
    forbidden=("F.silu", "torch._C._nn.silu", "torch._C._nn.silu_", "F.hardswish", "F.mish"),
    properties=[FINITE],
    hints=("SiLU is x times a sigmoid; the sigmoid must not overflow for |x| up to 1e4   (eq. act-silu)",
           "x / (1 + exp(-x)) overflows below x = -88 in float32: torch.sigmoid is allowed here",
           "x * sigmoid(x), with a sigmoid that cannot overflow (torch.sigmoid is allowed here)   (eq. act-silu)"),
    mistakes=[
        Mistake("naive gradient overflows", silu_naive,
                "x / (1 + exp(-x)) is right in value, but exp(-x) = inf for x < -88 and the gradient becomes "
                "inf * 0 = NaN: use x * sigmoid(x) with a stable sigmoid."),
        Mistake("exp ratio overflows", silu_exp_ratio,
                "x * exp(x) / (1 + exp(x)) is inf/inf = NaN for x > 88: use x * sigmoid(x) with a stable sigmoid."),
        Mistake("that is Mish", silu_mish,
                "x * tanh(softplus(x)) is Mish, not SiLU: SiLU (swish with beta = 1) is x * sigmoid(x)."),
        Mistake("forgot the x", silu_forgot_x,
                "you returned sigmoid(x): SiLU is x * sigmoid(x)."),
        Mistake("in place", silu_in_place,
                "you changed the caller's tensor in place (x.mul_): compute into a new tensor."),
        Mistake("calls the built-in", silu_builtin,
                "this exercise asks you to write SiLU yourself: F.silu is off limits; x * torch.sigmoid(x) is fine."),
    ],
    bench=(lambda: call(randn(4096, 4096, seed=0)), F.silu),
))
