"""What is specific to the activation exercises, beyond tests/test_exercises.py: every counterpart is forbidden
by each of its names, the cases reach |x| = 1e4, exact zeros and non-default parameters, the book's solutions
have PyTorch's derivative at the kinks, bad submissions are rejected for the right reason, and the properties
catch wrong implementations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.grader.core import evaluate
from utils.grader.exercises.foundations import activations as A  # (registers the exercises)
from utils.grader.registry import EXERCISES
from utils.grader.sandbox import resolve

CHAPTER = "foundations/activations"
NAMES = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu"]

# every way a reader might call the counterpart
COUNTERPARTS = {
    "sigmoid": [torch.sigmoid, F.sigmoid, lambda x: x.sigmoid(), torch.special.expit,
                lambda x: torch.nn.Sigmoid()(x)],
    "tanh": [torch.tanh, F.tanh, lambda x: x.tanh(), lambda x: torch.nn.Tanh()(x)],
    "relu": [torch.relu, F.relu, lambda x: x.relu(), lambda x: torch.nn.ReLU()(x), lambda x: F.threshold(x, 0, 0)],
    "leaky_relu": [lambda x, negative_slope=0.01: F.leaky_relu(x, negative_slope),
                   lambda x, negative_slope=0.01: torch.nn.LeakyReLU(negative_slope)(x)],
    "elu": [lambda x, alpha=1.0: F.elu(x, alpha), lambda x, alpha=1.0: torch.nn.ELU(alpha)(x),
            lambda x, alpha=1.0: F.celu(x, alpha)],
    "gelu": [lambda x, approximate="none": F.gelu(x, approximate=approximate),
             lambda x, approximate="none": torch.nn.GELU(approximate)(x)],
    "silu": [F.silu, lambda x: torch.nn.SiLU()(x)],
}


@pytest.mark.parametrize("name,impl", [(n, f) for n, fs in COUNTERPARTS.items() for f in fs])
def test_counterpart_is_forbidden_by_every_name(name, impl):
    report = evaluate(EXERCISES[name], impl)
    assert report.kind == "forbidden-call", str(report)


@pytest.mark.parametrize("name", NAMES)
def test_forbidden_names_resolve(name):
    for fname in EXERCISES[name].forbidden:
        assert callable(resolve(fname)), fname


@pytest.mark.parametrize("name", NAMES)
def test_oracle_is_the_counterpart(name):
    """Each oracle equals the PyTorch function the chapter names (guards against a typo in a lambda)."""
    x = torch.randn(50, dtype=torch.float64) * 4
    builtin = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "leaky_relu": F.leaky_relu,
               "elu": F.elu, "gelu": F.gelu, "silu": F.silu}[name]
    torch.testing.assert_close(EXERCISES[name].oracle(x), builtin(x))


# --------------------------------------------------------------------------- the cases the issue asks for

@pytest.mark.parametrize("name", NAMES)
def test_cases_reach_extremes_zeros_and_gradients(name):
    cases = EXERCISES[name].all_cases()
    xs = [c.make()[0][0] for c in cases]
    assert max(x.abs().max().item() for x in xs) >= 1e4
    grad_cases = [c for c in cases if c.grad]
    assert any((c.make()[0][0] == 0).any() for c in grad_cases), "no gradient case contains an exact 0"
    assert any(c.make()[0][0].abs().max() >= 1e4 for c in grad_cases), "no gradient case reaches 1e4"


@pytest.mark.parametrize("name,params", [("leaky_relu", {0.2, 1.5, -0.3}), ("elu", {2.0, 0.5}),
                                         ("gelu", {"tanh"})])
def test_non_default_parameters_are_graded_with_gradients(name, params):
    seen, seen_grad = set(), set()
    for c in EXERCISES[name].all_cases():
        args, kwargs = c.make()
        values = list(args[1:]) + list(kwargs.values())
        seen.update(values)
        if c.grad:
            seen_grad.update(values)
    assert params <= seen and params <= seen_grad


@pytest.mark.parametrize("name", NAMES)
def test_at_least_four_mistakes(name):
    assert len(EXERCISES[name].mistakes) >= 4


# --------------------------------------------------------------------------- the book's solutions at the kinks

@pytest.mark.parametrize("name,kwargs,expected", [
    ("sigmoid", {}, 0.25), ("tanh", {}, 1.0), ("relu", {}, 0.0), ("leaky_relu", {"negative_slope": 0.3}, 0.3),
    ("elu", {"alpha": 2.5}, 2.5), ("gelu", {}, 0.5), ("gelu", {"approximate": "tanh"}, 0.5), ("silu", {}, 0.5),
])
def test_book_derivative_at_zero(book, name, kwargs, expected):
    fn = book(CHAPTER)[name]
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(fn(x, **kwargs).sum(), x)
    (ref,) = torch.autograd.grad(EXERCISES[name].oracle(x, **kwargs).sum(), x)
    torch.testing.assert_close(g, torch.full_like(g, expected))
    torch.testing.assert_close(ref, torch.full_like(ref, expected))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_book_solution_finite_at_1e4(book, name, dtype):
    fn = book(CHAPTER)[name]
    x = torch.tensor([-1e4, -1e3, -100.0, 100.0, 1e3, 1e4], dtype=dtype, requires_grad=True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()
    torch.testing.assert_close(y, EXERCISES[name].oracle(x))


def test_gelu_modes_differ_by_more_than_the_tolerance():
    """The two GELU modes must be distinguishable by the grader, or 'approximate ignored' could pass."""
    x = torch.linspace(-5, 5, 1001)
    diff = (F.gelu(x) - F.gelu(x, approximate="tanh")).abs().max().item()
    assert 1e-4 < diff < 1e-3


# --------------------------------------------------------------------------- bad submissions

def test_numpy_result_is_rejected():
    report = evaluate(EXERCISES["relu"], lambda x: np.maximum(x.detach().numpy(), 0))
    assert report.kind == "returned-numpy"


def test_float32_for_float64_is_a_dtype_error(book):
    silu = book(CHAPTER)["silu"]
    report = evaluate(EXERCISES["silu"], lambda x: silu(x.float()))
    assert report.kind == "wrong-dtype"


def test_ignoring_the_parameter_fails_on_a_non_default_case(book):
    leaky = book(CHAPTER)["leaky_relu"]
    report = evaluate(EXERCISES["leaky_relu"], lambda x, negative_slope=0.01: leaky(x))
    assert not report.passed and report.failure.mistake == "slope hard-coded"


def test_positional_parameter_is_required():
    """A reader whose parameter has another name fails on the keyword cases with an exception."""
    report = evaluate(EXERCISES["elu"], lambda x, a=1.0: torch.where(x > 0, x, a * torch.expm1(x.clamp(max=0))))
    assert report.kind == "exception"


# --------------------------------------------------------------------------- properties catch wrong code

def test_finite_property_catches_overflowing_gradient():
    assert A._finite_everywhere(A.sigmoid_naive) is not None
    assert A._finite_everywhere(A.elu_where_unsafe) is not None
    assert A._finite_everywhere(torch.sigmoid) is None


def test_symmetry_properties_catch_wrong_code():
    assert A._odd(torch.sigmoid, scale=-1.0, shift=1.0) is None
    assert A._odd(lambda x: torch.sigmoid(x) + 0.01, scale=-1.0, shift=1.0) is not None
    assert A._odd(torch.tanh, scale=-1.0) is None
    assert A._odd(A.tanh_half, scale=-1.0) is None            # tanh(x/2) is odd too: caught by the cases
    assert A._odd(torch.sigmoid, scale=-1.0) is not None
