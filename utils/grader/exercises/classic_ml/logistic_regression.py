"""Part 11, classic machine learning: the logistic regression gradient and its training (chapter
classic_ml/logistic_regression)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...registry import register

GRAD_TOL = {f32: (1e-5, 1e-6), f64: (1e-9, 1e-12)}
FIT_TOL = {f32: (1e-4, 1e-5), f64: (1e-9, 1e-11)}
BCE_BUILTINS = ("F.binary_cross_entropy_with_logits", "F.binary_cross_entropy", "torch.autograd.grad",
                "Tensor.backward", "torch.autograd.backward")


# --------------------------------------------------------------------------- shared inputs

def _data(N, D, seed, dtype=f32, scale=1.0, layout="contiguous", labels="float"):
    """X (N, D) and labels drawn from a logistic model, from one seed."""
    X = randn(N, D, seed=seed, dtype=f64, scale=scale)
    w_true = randn(D, seed=seed + 1000, dtype=f64)
    u = torch.rand(N, generator=torch.Generator().manual_seed(seed + 2000), dtype=f64)
    y = (u < torch.sigmoid(X @ w_true + 0.3)).to(f64)
    if layout == "transposed":
        X = X.T.contiguous().T
    y = y.long() if labels == "long" else y.to(dtype)
    return X.to(dtype), y


def _grad_args(data, w_scale=0.5, b=0.1, seed=0):
    X, y = data()
    w = randn(X.shape[1], seed=seed + 77, dtype=X.dtype, scale=w_scale)
    return call(X, y, w, torch.tensor(b, dtype=X.dtype))


# --------------------------------------------------------------------------- logistic_regression_grad

def grad_oracle(X, y, w, b):
    """Autograd through F.binary_cross_entropy_with_logits (the mean), in X's dtype."""
    w = w.detach().clone().requires_grad_()
    b = b.detach().clone().requires_grad_()
    loss = F.binary_cross_entropy_with_logits(X.detach() @ w + b, y.detach().to(X.dtype))
    dw, db = torch.autograd.grad(loss, (w, b))
    return dw, db


def _grad_cases():
    return [
        case(_grad_args, partial(_data, 40, 3, 1), note="N=40, D=3"),
        case(_grad_args, partial(_data, 30, 5, 2, f64), note="float64"),
        case(_grad_args, partial(_data, 1, 4, 3, f64), note="batch of one"),
        case(_grad_args, partial(_data, 25, 1, 4), note="a single feature"),
        case(_grad_args, partial(_data, 40, 3, 5, f32, 1.0, "transposed"), note="non-contiguous (column-major) X"),
        case(_grad_args, partial(_data, 30, 3, 6, f64, 1.0, "contiguous", "long"), note="labels as int64"),
        case(_grad_args, partial(_data, 30, 3, 7, f32, 30.0), w_scale=3.0, seed=7,
             note="saturated logits (|z| up to hundreds): the gradient stays finite"),
        case(_grad_args, partial(_data, 30, 4, 8, f64), w_scale=0.0, b=0.0, note="w = 0, b = 0: p = 1/2 everywhere"),
    ]


def _zero_at_perfect_fit(call):
    X = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=f64)
    y = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=f64)
    dw, db = call(X, y, torch.tensor([40.0], dtype=f64), torch.tensor(0.0, dtype=f64))
    if float(dw.abs().max()) > 1e-12 or abs(float(db)) > 1e-12:
        return msg("separable data fitted with a huge weight should give a gradient near 0, got dw={dw}, db={db:.3g}",
                   dw=dw.tolist(), db=float(db))
    return None


def _z(X, w, b):
    return X @ w + b                                               # (N,)


def grad_sign(X, y, w, b):
    err = y - torch.sigmoid(_z(X, w, b))
    return X.T @ err / X.shape[0], err.mean()


def grad_sum(X, y, w, b):
    err = torch.sigmoid(_z(X, w, b)) - y
    return X.T @ err, err.sum()


def grad_squared_error(X, y, w, b):
    p = torch.sigmoid(_z(X, w, b))
    err = (p - y) * p * (1 - p)
    return X.T @ err / X.shape[0], err.mean()


def grad_no_sigmoid(X, y, w, b):
    err = _z(X, w, b) - y
    return X.T @ err / X.shape[0], err.mean()


def grad_db_summed(X, y, w, b):
    err = torch.sigmoid(_z(X, w, b)) - y
    return X.T @ err / X.shape[0], err.sum()


def grad_naive_log(X, y, w, b):
    p = 1 / (1 + torch.exp(-_z(X, w, b)))
    # d/dz of -(y log p + (1 - y) log(1 - p)) through the chain rule, as written from the probabilities
    dp = -(y / p) + (1 - y) / (1 - p)
    err = dp * p * (1 - p)
    return X.T @ err / X.shape[0], err.mean()


def grad_autograd(X, y, w, b):
    w = w.clone().requires_grad_()
    b = b.clone().requires_grad_()
    F.binary_cross_entropy_with_logits(X @ w + b, y.to(X.dtype)).backward()
    return w.grad, b.grad


register(Exercise(
    name="logistic_regression_grad",
    chapter="classic_ml/logistic_regression",
    signature="logistic_regression_grad(X, y, w, b)",
    oracle=grad_oracle,
    cases=_grad_cases,
    forbidden=BCE_BUILTINS,
    tolerance=GRAD_TOL,
    properties=[Property("a perfect fit of separable data has a gradient near 0", _zero_at_perfect_fit)],
    hints=("differentiate the mean BCE through the sigmoid: the sigmoid's derivative p(1 - p) cancels the "
           "denominators of the log terms   (eq. logr-grad)",
           "the error p - y is all that is left per sample; average it over the N samples, for dw weighted by each "
           "row of X",
           "p = sigmoid(X @ w + b); dw = X.T @ (p - y) / N; db = (p - y).mean()   (eq. logr-grad)"),
    mistakes=[
        Mistake("gradient sign", grad_sign,
                "your gradient has the wrong sign (y - p): the gradient of the loss is X^T (p - y) / N; y - p is the "
                "direction that decreases it"),
        Mistake("sum instead of mean", grad_sum,
                "your gradient sums over the samples: the loss is the mean BCE, so divide by N"),
        Mistake("squared-error gradient", grad_squared_error,
                "you differentiated the squared error (p - y)^2 / 2, which leaves a factor p(1 - p) that vanishes "
                "when the model is confidently wrong: the cross-entropy's gradient is simply (p - y)"),
        Mistake("no sigmoid", grad_no_sigmoid,
                "your error uses the logit z = X w + b instead of the probability p = sigmoid(z): that is linear "
                "regression's gradient"),
        Mistake("db summed", grad_db_summed,
                "your db sums the errors while dw averages them: db = mean(p - y)"),
        Mistake("through the probabilities", grad_naive_log,
                "your gradient goes through log(p) and log(1 - p): when the sigmoid saturates p is exactly 0 or 1 and "
                "you get 0/0 = nan; the terms cancel on paper, leaving p - y, which stays finite"),
        Mistake("calls autograd", grad_autograd,
                "this exercise asks you to derive the gradient by hand: autograd and the BCE built-ins are off "
                "limits; use sigmoid, matmul and mean"),
    ],
))


# --------------------------------------------------------------------------- fit_logistic_regression

def fit_oracle(X, y, lr=0.1, steps=100, l2=0.0):
    """Gradient descent from zeros on F.binary_cross_entropy_with_logits + l2 * ||w||^2, autograd's gradients."""
    w = torch.zeros(X.shape[1], dtype=X.dtype, requires_grad=True)
    b = torch.zeros((), dtype=X.dtype, requires_grad=True)
    X, y = X.detach(), y.detach().to(X.dtype)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(X @ w + b, y) + l2 * w.pow(2).sum()
        dw, db = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w -= lr * dw
            b -= lr * db
    return w.detach(), b.detach()


def _fit_args(data, lr=None, steps=None, l2=None, positional=False):
    X, y = data()
    if positional:
        return call(X, y, lr, steps, l2)
    kwargs = {k: v for k, v in (("lr", lr), ("steps", steps), ("l2", l2)) if v is not None}
    return call(X, y, **kwargs)


def _fit_cases():
    return [
        case(_fit_args, partial(_data, 60, 3, 21), note="defaults: lr=0.1, 100 steps, no penalty"),
        case(_fit_args, partial(_data, 50, 4, 22, f64), note="float64"),
        case(_fit_args, partial(_data, 60, 3, 23), l2=0.05, note="l2=0.05"),
        case(_fit_args, partial(_data, 40, 5, 24, f64), 0.5, 20, 0.1, positional=True,
             note="lr, steps and l2 passed positionally"),
        case(_fit_args, partial(_data, 20, 3, 25), steps=0, note="steps=0: the zeros it started from"),
        case(_fit_args, partial(_data, 20, 3, 26, f64), steps=1, note="a single step"),
        case(_fit_args, partial(_data, 1, 3, 27, f64), steps=10, l2=0.1, note="batch of one"),
        case(_fit_args, partial(_data, 50, 3, 28, f32, 1.0, "transposed"), steps=30,
             note="non-contiguous (column-major) X"),
        case(_fit_args, partial(_data, 40, 3, 29, f64, 1.0, "contiguous", "long"), steps=30, l2=0.01,
             note="labels as int64"),
        case(_fit_args, partial(_data, 40, 2, 30, f64, 3.0), lr=1.0, steps=50, l2=0.02, note="large lr, ridge"),
    ]


def fit_bias_penalised(X, y, lr=0.1, steps=100, l2=0.0):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        err = torch.sigmoid(X @ w + b) - y
        w, b = w - lr * (X.T @ err / N + 2 * l2 * w), b - lr * (err.mean() + 2 * l2 * b)
    return w, b


def fit_penalty_halved(X, y, lr=0.1, steps=100, l2=0.0):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        err = torch.sigmoid(X @ w + b) - y
        w, b = w - lr * (X.T @ err / N + l2 * w), b - lr * err.mean()
    return w, b


def fit_ascent(X, y, lr=0.1, steps=100, l2=0.0):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        err = y - torch.sigmoid(X @ w + b)
        w, b = w - lr * (X.T @ err / N + 2 * l2 * w), b - lr * err.mean()
    return w, b


def fit_sum(X, y, lr=0.1, steps=100, l2=0.0):
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        err = torch.sigmoid(X @ w + b) - y
        w, b = w - lr * (X.T @ err + 2 * l2 * w), b - lr * err.sum()
    return w, b


def fit_squared_error(X, y, lr=0.1, steps=100, l2=0.0):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        p = torch.sigmoid(X @ w + b)
        err = (p - y) * p * (1 - p)
        w, b = w - lr * (X.T @ err / N + 2 * l2 * w), b - lr * err.mean()
    return w, b


def fit_one_step_short(X, y, lr=0.1, steps=100, l2=0.0):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps - 1):
        err = torch.sigmoid(X @ w + b) - y
        w, b = w - lr * (X.T @ err / N + 2 * l2 * w), b - lr * err.mean()
    return w, b


register(Exercise(
    name="fit_logistic_regression",
    chapter="classic_ml/logistic_regression",
    signature="fit_logistic_regression(X, y, lr=0.1, steps=100, l2=0.0)",
    oracle=fit_oracle,
    cases=_fit_cases,
    forbidden=("F.binary_cross_entropy_with_logits", "F.binary_cross_entropy"),
    tolerance=FIT_TOL,
    hints=("each step: the gradient of the mean BCE (eq. logr-grad) plus the penalty's gradient on w only, then a "
           "step against it   (eq. logr-l2)",
           "the penalty l2 * ||w||^2 contributes 2 * l2 * w to dw and nothing to db; take both gradients at the same "
           "point and update w and b together",
           "for _ in range(steps): err = sigmoid(X @ w + b) - y; w, b = w - lr * (X.T @ err / N + 2 * l2 * w), "
           "b - lr * err.mean()   (eq. logr-l2)"),
    mistakes=[
        Mistake("bias penalised", fit_bias_penalised,
                "your penalty also shrinks the bias: l2 * ||w||^2 penalises w only, so db has no 2 * l2 * b term"),
        Mistake("penalty gradient halved", fit_penalty_halved,
                "the gradient of l2 * ||w||^2 is 2 * l2 * w, not l2 * w"),
        Mistake("gradient ascent", fit_ascent,
                "your update climbs the loss: the gradient is X^T (p - y) / N, and gradient descent subtracts it"),
        Mistake("sum instead of mean", fit_sum,
                "your gradient sums over the samples: the loss is the mean BCE, so divide by N"),
        Mistake("squared-error gradient", fit_squared_error,
                "you descend the squared error's gradient, (p - y) p (1 - p): the cross-entropy's gradient is (p - y), "
                "without the factor that vanishes when the sigmoid saturates"),
        Mistake("one step short", fit_one_step_short,
                "you made steps - 1 updates: range(steps) makes exactly `steps` updates"),
    ],
))
