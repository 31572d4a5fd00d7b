"""Part 11, classic machine learning: least squares, ridge and gradient descent (chapter
classic_ml/linear_regression)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...registry import register

# Float32 closed forms lose about cond(X^T X) * 6e-8 relatively; the float32 cases are well conditioned (cond
# below 100 after centering), and the oracle solves in float64, so this bound leaves correct code a margin of 10.
FIT_TOL = {f32: (1e-4, 1e-4), f64: (1e-8, 1e-9)}
# Two columns 1e-4 apart: cond(X^T X) is about 1e9, so the normal equations (which square the condition number of
# X) lose about 1e9 * 1.1e-16 ~ 1e-7 relatively in float64 (measured 1.8e-7); lstsq on X itself does not.
ILL_TOL = {f64: (1e-5, 1e-6)}
GD_TOL = {f32: (1e-4, 1e-5), f64: (1e-9, 1e-11)}


# --------------------------------------------------------------------------- shared inputs

def _data(N, D, seed, dtype=f32, noise=0.1, shift=0.0, scale=1.0, layout="contiguous"):
    """X (N, D) and y = X @ w_true + b_true + noise, all from one seed."""
    X = randn(N, D, seed=seed, dtype=f64, scale=scale, shift=shift)
    w_true = randn(D, seed=seed + 1000, dtype=f64)
    y = X @ w_true + 0.7 + noise * randn(N, seed=seed + 2000, dtype=f64)
    if layout == "transposed":
        X = X.T.contiguous().T                                    # same values, column-major storage
    return X.to(dtype), y.to(dtype)


def _collinear(N, seed, dtype=f64):
    """Two nearly equal columns: X^T X is ill-conditioned."""
    a = randn(N, seed=seed, dtype=f64)
    X = torch.stack([a, a + 1e-4 * randn(N, seed=seed + 1, dtype=f64), randn(N, seed=seed + 2, dtype=f64)], 1)
    y = X[:, 0] - 2 * X[:, 2] + 0.3 + 0.01 * randn(N, seed=seed + 3, dtype=f64)
    return X.to(dtype), y.to(dtype)


def _fit_args(data, l2=None, positional=False):
    X, y = data()
    if l2 is None:
        return call(X, y)
    return call(X, y, l2) if positional else call(X, y, l2=l2)


# --------------------------------------------------------------------------- fit_linear_regression

def fit_oracle(X, y, l2=0.0):
    """Least squares on the augmented system [X 1; sqrt(N l2) I 0] [w; b] = [y; 0], in float64 (lstsq)."""
    N, D = X.shape
    Xd, yd = X.detach().double(), y.detach().double()
    A = torch.cat([Xd, torch.ones(N, 1, dtype=f64)], 1)                       # (N, D + 1)
    if l2 > 0:
        ridge = torch.cat([(N * l2) ** 0.5 * torch.eye(D, dtype=f64), torch.zeros(D, 1, dtype=f64)], 1)
        A, yd = torch.cat([A, ridge], 0), torch.cat([yd, torch.zeros(D, dtype=f64)])
    theta = torch.linalg.lstsq(A, yd[:, None], driver="gelsd").solution[:, 0]   # (D + 1,)
    return theta[:D].to(X.dtype), theta[D].to(X.dtype)


def _fit_cases():
    return [
        case(_fit_args, partial(_data, 50, 3, 1), note="N=50, D=3, no penalty"),
        case(_fit_args, partial(_data, 40, 5, 2, f64), note="float64"),
        case(_fit_args, partial(_data, 60, 4, 3), l2=0.5, note="ridge, l2=0.5"),
        case(_fit_args, partial(_data, 30, 6, 4, f64), l2=0.05, positional=True, note="l2 passed positionally"),
        case(_fit_args, partial(_data, 20, 1, 5), note="a single feature (D=1)"),
        case(_fit_args, partial(_data, 4, 3, 6, f64, 0.0), note="N = D + 1: the line through the points"),
        case(_fit_args, partial(_data, 1, 3, 7, f64), l2=0.1, note="batch of one with ridge: w = 0, b = y"),
        case(_fit_args, partial(_data, 50, 3, 8, f32, 0.1, 0.0, 1.0, "transposed"),
             note="non-contiguous (column-major) X"),
        case(_fit_args, partial(_data, 80, 3, 9, f64, 0.1, 30.0), note="features far from 0 (x + 30), float64"),
        case(_fit_args, partial(_data, 40, 3, 10, f32, 0.1, 3.0), l2=0.2, note="features offset by 3, ridge"),
        case(_fit_args, partial(_collinear, 60, 11), note="two nearly collinear columns (ill-conditioned), float64",
             tolerance=ILL_TOL),
        case(_fit_args, partial(_collinear, 60, 12), l2=1e-3, note="ridge repairs the conditioning, float64"),
        case(_fit_args, partial(_data, 30, 4, 13, f64), l2=1e4, note="huge l2: w close to 0, b close to mean(y)"),
    ]


def _residuals_average_zero(call):
    X, y = _data(40, 3, 40, f64)
    w, b = call(X, y, l2=0.3)
    gap = float((X @ w + b - y).mean())
    if abs(gap) > 1e-8:
        return msg("with l2=0.3 the residuals average {gap:.3g}, not 0: the intercept is not penalised, so it "
                   "must absorb the mean residual", gap=gap)
    return None


def _shift_moves_only_the_bias(call):
    X, y = _data(40, 3, 41, f64)
    w0, _ = call(X, y, l2=0.3)
    w1, _ = call(X + 5.0, y, l2=0.3)
    gap = float((w0 - w1).abs().max())
    if gap > 1e-7:
        return msg("shifting every feature by 5 changed w by {gap:.3g}: only b should move", gap=gap)
    return None


def fit_bias_penalised(X, y, l2=0.0):
    N, D = X.shape
    A = torch.cat([X, torch.ones(N, 1, dtype=X.dtype)], 1)
    theta = torch.linalg.solve(A.T @ A / N + l2 * torch.eye(D + 1, dtype=X.dtype), A.T @ y / N)
    return theta[:D], theta[D]


def fit_no_intercept(X, y, l2=0.0):
    N, D = X.shape
    w = torch.linalg.solve(X.T @ X / N + l2 * torch.eye(D, dtype=X.dtype), X.T @ y / N)
    return w, torch.zeros((), dtype=X.dtype)


def fit_sum_penalty(X, y, l2=0.0):
    x_mean, y_mean = X.mean(0), y.mean()
    Xc, yc = X - x_mean, y - y_mean
    w = torch.linalg.solve(Xc.T @ Xc + l2 * torch.eye(X.shape[1], dtype=X.dtype), Xc.T @ yc)
    return w, y_mean - x_mean @ w


def fit_double_penalty(X, y, l2=0.0):
    x_mean, y_mean = X.mean(0), y.mean()
    Xc, yc = X - x_mean, y - y_mean
    N = X.shape[0]
    w = torch.linalg.solve(Xc.T @ Xc / N + 2 * l2 * torch.eye(X.shape[1], dtype=X.dtype), Xc.T @ yc / N)
    return w, y_mean - x_mean @ w


def fit_bias_is_mean_y(X, y, l2=0.0):
    x_mean, y_mean = X.mean(0), y.mean()
    Xc, yc = X - x_mean, y - y_mean
    N = X.shape[0]
    w = torch.linalg.solve(Xc.T @ Xc / N + l2 * torch.eye(X.shape[1], dtype=X.dtype), Xc.T @ yc / N)
    return w, y_mean


def fit_centres_in_place(X, y, l2=0.0):
    x_mean, y_mean = X.mean(0), y.mean()
    X -= x_mean
    N = X.shape[0]
    w = torch.linalg.solve(X.T @ X / N + l2 * torch.eye(X.shape[1], dtype=X.dtype), X.T @ (y - y_mean) / N)
    return w, y_mean - x_mean @ w


def fit_lstsq(X, y, l2=0.0):
    N, D = X.shape
    A = torch.cat([X, torch.ones(N, 1, dtype=X.dtype)], 1)
    theta = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    return theta[:D], theta[D]


register(Exercise(
    name="fit_linear_regression",
    chapter="classic_ml/linear_regression",
    signature="fit_linear_regression(X, y, l2=0.0)",
    oracle=fit_oracle,
    cases=_fit_cases,
    forbidden=("torch.linalg.lstsq", "torch.lstsq"),
    tolerance=FIT_TOL,
    properties=[
        Property("the residuals average zero (b is not penalised)", _residuals_average_zero),
        Property("shifting the features moves only b", _shift_moves_only_the_bias),
    ],
    hints=("centre X and y; the bias then drops out, and w solves the normal equations of the centred data   "
           "(eq. lr-ridge)",
           "the objective averages over N, so the ridge term sits beside X^T X / N, not beside X^T X; b is "
           "what makes the mean residual zero   (eq. lr-bias)",
           "Xc = X - X.mean(0); w = solve(Xc.T @ Xc / N + l2 * I, Xc.T @ (y - y.mean()) / N); "
           "b = y.mean() - X.mean(0) @ w   (eq. lr-ridge, lr-bias)"),
    mistakes=[
        Mistake("bias penalised", fit_bias_penalised,
                "your ridge term also shrinks the bias (a column of ones appended to X, then l2 * I on every "
                "coefficient): the objective penalises w only; centre the data, or leave b's diagonal entry at 0"),
        Mistake("no intercept", fit_no_intercept,
                "your model has no bias: solve for b too (centre X and y, then b = mean(y) - mean(X) @ w)"),
        Mistake("penalty not scaled by N", fit_sum_penalty,
                "your normal equations use X^T X + l2 I: the objective averages the squared errors, so the "
                "equations read (X^T X / N + l2 I) w = X^T y / N; with a sum, l2 acts N times weaker"),
        Mistake("penalty doubled", fit_double_penalty,
                "your penalty counts twice: the gradient of mean((Xw + b - y)^2) is (2/N) X^T r and that of "
                "l2 ||w||^2 is 2 l2 w; the 2s cancel, leaving (X^T X / N + l2 I) w = X^T y / N"),
        Mistake("b = mean(y)", fit_bias_is_mean_y,
                "your bias is mean(y): that holds only for centred features; b = mean(y) - mean(X) @ w"),
        Mistake("X centred in place", fit_centres_in_place,
                "you changed the caller's X in place (X -= X.mean(0)): compute the centred copy into a new tensor"),
        Mistake("calls lstsq", fit_lstsq,
                "this exercise asks you to solve the normal equations yourself: torch.linalg.lstsq is off limits; "
                "use torch.linalg.solve (or cholesky_solve)"),
    ],
    bench=(lambda: call(*_data(100_000, 64, 0)), lambda X, y, l2=0.0: torch.linalg.lstsq(
        torch.cat([X, torch.ones(X.shape[0], 1)], 1), y[:, None]).solution),
))


# --------------------------------------------------------------------------- linear_regression_gd

def gd_oracle(X, y, lr=0.1, steps=100):
    """Gradient descent from zeros on F.mse_loss, the gradients from autograd, in X's dtype."""
    w = torch.zeros(X.shape[1], dtype=X.dtype, requires_grad=True)
    b = torch.zeros((), dtype=X.dtype, requires_grad=True)
    X, y = X.detach(), y.detach()
    for _ in range(steps):
        dw, db = torch.autograd.grad(F.mse_loss(X @ w + b, y), (w, b))
        with torch.no_grad():
            w -= lr * dw
            b -= lr * db
    return w.detach(), b.detach()


def _gd_args(data, lr=None, steps=None, positional=False):
    X, y = data()
    if positional:
        return call(X, y, lr, steps)
    kwargs = {k: v for k, v in (("lr", lr), ("steps", steps)) if v is not None}
    return call(X, y, **kwargs)


def _gd_cases():
    return [
        case(_gd_args, partial(_data, 50, 3, 21), note="defaults: lr=0.1, 100 steps"),
        case(_gd_args, partial(_data, 40, 5, 22, f64), note="float64"),
        case(_gd_args, partial(_data, 60, 4, 23), lr=0.05, steps=30, note="lr=0.05, 30 steps"),
        case(_gd_args, partial(_data, 30, 2, 24, f64), lr=0.2, steps=7, positional=True,
             note="lr and steps passed positionally"),
        case(_gd_args, partial(_data, 20, 3, 25), steps=0, note="steps=0: the zeros it started from"),
        case(_gd_args, partial(_data, 20, 3, 26), steps=1, note="a single step"),
        case(_gd_args, partial(_data, 1, 3, 27, f64), lr=0.05, steps=20, note="batch of one"),
        case(_gd_args, partial(_data, 50, 3, 28, f32, 0.1, 0.0, 1.0, "transposed"), steps=40,
             note="non-contiguous (column-major) X"),
        case(_gd_args, partial(_data, 40, 3, 29, f64, 0.1, 2.0), lr=0.02, steps=50,
             note="features offset by 2 (slower convergence), float64"),
        case(_gd_args, partial(_data, 40, 1, 30, f64), lr=0.3, steps=5, note="a single feature, large lr"),
    ]


def _steps_zero_is_zero(call):
    X, y = _data(10, 3, 42, f64)
    w, b = call(X, y, lr=0.1, steps=0)
    if bool(w.abs().max() > 0) or float(b) != 0.0:
        return msg("steps=0 returned w={w} and b={b}, not zeros", w=w.tolist(), b=float(b))
    return None


def _reaches_least_squares(call):
    X, y = _data(40, 3, 43, f64)
    w, b = call(X, y, lr=0.3, steps=400)
    w_star, b_star = fit_oracle(X, y)
    gap = max(float((w - w_star).abs().max()), abs(float(b - b_star)))
    if gap > 1e-6:
        return msg("after 400 steps with lr=0.3 the fit is {gap:.3g} away from the least-squares solution", gap=gap)
    return None


def _residual(X, y, w, b):
    return X @ w + b - y                                          # (N,)


def gd_no_two(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        r = _residual(X, y, w, b)
        w, b = w - lr * X.T @ r / N, b - lr * r.mean()
    return w, b


def gd_sum(X, y, lr=0.1, steps=100):
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        r = _residual(X, y, w, b)
        w, b = w - lr * 2 * X.T @ r, b - lr * 2 * r.sum()
    return w, b


def gd_ascent(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        r = y - (X @ w + b)                                       # y - pred, the sign then kept
        w, b = w - lr * 2 * X.T @ r / N, b - lr * 2 * r.mean()
    return w, b


def gd_sequential(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        w = w - lr * 2 * X.T @ _residual(X, y, w, b) / N
        b = b - lr * 2 * _residual(X, y, w, b).mean()             # residual recomputed with the new w
    return w, b


def gd_no_bias(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    w = torch.zeros(X.shape[1], dtype=X.dtype)
    for _ in range(steps):
        w = w - lr * 2 * X.T @ (X @ w - y) / N
    return w, torch.zeros((), dtype=X.dtype)


def gd_one_step_short(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(1, steps):
        r = _residual(X, y, w, b)
        w, b = w - lr * 2 * X.T @ r / N, b - lr * 2 * r.mean()
    return w, b


register(Exercise(
    name="linear_regression_gd",
    chapter="classic_ml/linear_regression",
    signature="linear_regression_gd(X, y, lr=0.1, steps=100)",
    oracle=gd_oracle,
    cases=_gd_cases,
    forbidden=("torch.linalg.lstsq", "torch.linalg.solve", "torch.linalg.inv", "torch.linalg.pinv"),
    tolerance=GD_TOL,
    properties=[
        Property("steps=0 returns the zeros it starts from", _steps_zero_is_zero),
        Property("many small steps reach the least-squares solution", _reaches_least_squares),
    ],
    hints=("write the residual r = X w + b - y and differentiate the mean of r^2 with respect to w and to b   "
           "(eq. lr-grad)",
           "both gradients carry the factor 2 and the 1/N of the mean; compute them from the same residual, then "
           "update w and b together",
           "for _ in range(steps): r = X @ w + b - y; w, b = w - lr * 2 * X.T @ r / N, b - lr * 2 * r.mean()   "
           "(eq. lr-grad, lr-step)"),
    mistakes=[
        Mistake("gradient without the 2", gd_no_two,
                "your gradient lacks the factor 2: d/dw mean(r^2) = (2/N) X^T r; without it every step is half as "
                "long as the one asked for"),
        Mistake("sum instead of mean", gd_sum,
                "your gradient sums over the samples instead of averaging: divide by N (the objective is a mean), "
                "or the step grows with the data set and diverges"),
        Mistake("gradient sign", gd_ascent,
                "your step goes uphill: with r = y - prediction the gradient is -(2/N) X^T r; subtract the "
                "gradient of the loss, which is (2/N) X^T (X w + b - y)"),
        Mistake("b updated with the new w", gd_sequential,
                "you updated b from a residual recomputed with the new w: gradient descent takes both gradients "
                "at the same point, then moves w and b together"),
        Mistake("no bias", gd_no_bias,
                "your model has no bias: learn b as well, with gradient (2/N) * sum(r)"),
        Mistake("one step short", gd_one_step_short,
                "you made steps - 1 updates: range(steps) makes exactly `steps` updates"),
    ],
    bench=(lambda: call(*_data(100_000, 64, 0), steps=10), gd_oracle),
))
