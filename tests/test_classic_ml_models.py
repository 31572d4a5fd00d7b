"""Part 11, classic machine learning: linear regression, logistic regression, k-means (the declarations in
utils/grader/exercises/classic_ml/). The oracles are checked against scikit-learn (Ridge, LinearRegression,
LogisticRegression's loss via autograd, KMeans with the same initial centroids and one start) on many random
inputs; correct solutions in other styles pass; wrong code as candidates write it is rejected; bad input gives a
clear report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression, Ridge

from utils.grader.core import evaluate
from utils.grader.exercises.classic_ml import kmeans as km_decl
from utils.grader.exercises.classic_ml import linear_regression as lr_decl
from utils.grader.exercises.classic_ml import logistic_regression as logr_decl
from utils.grader.registry import get

f64 = torch.float64


def _data(seed, N=60, D=4, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g, dtype=f64) + offset
    y = X @ torch.randn(D, generator=g, dtype=f64) + 0.5 + 0.1 * torch.randn(N, generator=g, dtype=f64)
    return X, y


# =========================================================================== oracles against scikit-learn

@pytest.mark.parametrize("seed", range(12))
def test_fit_oracle_matches_sklearn(seed):
    X, y = _data(seed, N=20 + 7 * seed, D=1 + seed % 5, offset=seed - 5.0)
    w, b = lr_decl.fit_oracle(X, y)
    ref = LinearRegression().fit(X.numpy(), y.numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(float(b), ref.intercept_, rtol=1e-7, atol=1e-9)
    l2 = 0.01 * (seed + 1)
    w, b = lr_decl.fit_oracle(X, y, l2=l2)
    ref = Ridge(alpha=len(X) * l2).fit(X.numpy(), y.numpy())          # ||y - Xw||^2 + alpha ||w||^2, alpha = N l2
    np.testing.assert_allclose(w.numpy(), ref.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(float(b), ref.intercept_, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_gd_oracle_is_the_hand_written_update(seed):
    X, y = _data(seed, N=30, D=3)
    w, b = torch.zeros(3, dtype=f64), torch.zeros((), dtype=f64)
    for _ in range(25):
        r = X @ w + b - y
        w, b = w - 0.05 * 2 * X.T @ r / 30, b - 0.05 * 2 * r.mean()
    ow, ob = lr_decl.gd_oracle(X, y, lr=0.05, steps=25)
    torch.testing.assert_close((ow, ob), (w, b))


@pytest.mark.parametrize("seed", range(8))
def test_logistic_grad_oracle_is_p_minus_y(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(25, 3, generator=g, dtype=f64)
    y = (torch.rand(25, generator=g, dtype=f64) < 0.5).double()
    w, b = torch.randn(3, generator=g, dtype=f64), torch.randn((), generator=g, dtype=f64)
    p = torch.sigmoid(X @ w + b)
    dw, db = logr_decl.grad_oracle(X, y, w, b)
    torch.testing.assert_close(dw, X.T @ (p - y) / 25)
    torch.testing.assert_close(db, (p - y).mean())


def test_logistic_fit_oracle_reaches_sklearn_on_separable_free_data():
    """Many steps of the oracle approach scikit-learn's L2 logistic regression with C = 1 / (2 N l2)."""
    from sklearn.linear_model import LogisticRegression
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g, dtype=f64)
    p = torch.sigmoid(X @ torch.tensor([1.0, -1.0, 0.5], dtype=f64))
    y = (torch.rand(200, generator=g, dtype=f64) < p).double()
    l2 = 0.01
    w, b = logr_decl.fit_oracle(X, y, lr=1.0, steps=3000, l2=l2)
    ref = LogisticRegression(C=1 / (2 * len(X) * l2), tol=1e-12, max_iter=10_000).fit(X.numpy(), y.numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_[0], atol=1e-5)
    np.testing.assert_allclose(float(b), ref.intercept_[0], atol=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_oracle_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 3, generator=g, dtype=f64) * 4
    x = (centres[torch.arange(120) % 4] + torch.randn(120, 3, generator=g, dtype=f64))
    init = x[:4].clone()
    c, labels = km_decl.kmeans_oracle(x, init)
    ref = KMeans(4, init=init.numpy(), n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x.numpy())
    if len(set(ref.labels_.tolist())) == 4:                               # no empty cluster: same contract
        np.testing.assert_allclose(c.numpy(), ref.cluster_centers_, rtol=1e-9, atol=1e-9)
        assert labels.tolist() == ref.labels_.tolist()


def test_kmeans_oracle_empty_cluster_stays():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=f64)
    init = torch.tensor([[0.0, 0.0], [9.0, 9.0]], dtype=f64)
    c, labels = km_decl.kmeans_oracle(x, init)
    assert c[1].tolist() == [9.0, 9.0] and labels.tolist() == [0, 0, 0]


# =========================================================================== correct solutions in other styles

def fit_augmented_solve(X, y, l2=0.0):
    N, D = X.shape
    A = torch.cat([X, torch.ones(N, 1, dtype=X.dtype)], 1)
    P = torch.eye(D + 1, dtype=X.dtype) * l2
    P[D, D] = 0.0                                                          # the bias unpenalised
    theta = torch.linalg.solve(A.T @ A / N + P, A.T @ y / N)
    return theta[:D], theta[D]


def fit_cholesky(X, y, l2=0.0):
    N, D = X.shape
    xm, ym = X.mean(0), y.mean()
    Xc = X - xm
    L = torch.linalg.cholesky(Xc.T @ Xc / N + l2 * torch.eye(D, dtype=X.dtype))
    w = torch.cholesky_solve((Xc.T @ (y - ym) / N)[:, None], L)[:, 0]
    return w, ym - xm @ w


def gd_autograd(X, y, lr=0.1, steps=100):
    w = torch.zeros(X.shape[1], dtype=X.dtype, requires_grad=True)
    b = torch.zeros((), dtype=X.dtype, requires_grad=True)
    for _ in range(steps):
        loss = ((X @ w + b - y) ** 2).mean()
        gw, gb = torch.autograd.grad(loss, (w, b))
        w, b = (w - lr * gw).detach().requires_grad_(), (b - lr * gb).detach().requires_grad_()
    return w.detach(), b.detach()


def gd_einsum(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    theta = torch.zeros(X.shape[1] + 1, dtype=X.dtype)
    A = torch.cat([X, torch.ones(N, 1, dtype=X.dtype)], 1)
    for _ in range(steps):
        theta = theta - lr * 2 / N * torch.einsum("nd,n->d", A, A @ theta - y)
    return theta[:-1], theta[-1]


def logr_grad_einsum(X, y, w, b):
    err = torch.sigmoid(torch.einsum("nd,d->n", X, w) + b) - y.to(X.dtype)
    return torch.einsum("nd,n->d", X, err) / X.shape[0], err.sum() / X.shape[0]


def logr_grad_loop(X, y, w, b):
    N = X.shape[0]
    dw, db = torch.zeros_like(w), torch.zeros_like(b)
    for i in range(N):
        e = torch.sigmoid(X[i] @ w + b) - y[i]
        dw, db = dw + e * X[i], db + e
    return dw / N, db / N


def logr_fit_with_grad(X, y, lr=0.1, steps=100, l2=0.0):
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        dw, db = logr_grad_einsum(X, y, w, b)
        w, b = w - lr * (dw + 2 * l2 * w), b - lr * db
    return w, b


def kmeans_cdist(x, init_centroids, max_iters=100, tol=0.0):
    c = init_centroids.clone()
    for _ in range(max_iters):
        z = torch.cdist(x, c).argmin(1) if x.dtype == torch.float64 else ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        onehot = F.one_hot(z, len(c)).to(x.dtype)                          # (N, K)
        counts = onehot.sum(0)[:, None]
        new = torch.where(counts > 0, onehot.T @ x / counts.clamp(min=1), c)
        moved, c = (new - c).norm(dim=1).max(), new
        if moved <= tol:
            break
    return c, ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)


def kmeans_per_cluster_loop(x, init_centroids, max_iters=100, tol=0.0):
    c = init_centroids.clone()
    for _ in range(max_iters):
        z = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = c.clone()
        for j in range(len(c)):
            if (z == j).any():
                new[j] = x[z == j].mean(0)
        moved, c = (new - c).norm(dim=1).max(), new
        if moved <= tol:
            break
    return c, ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)


@pytest.mark.parametrize("name,impl", [
    ("fit_linear_regression", fit_augmented_solve), ("fit_linear_regression", fit_cholesky),
    ("linear_regression_gd", gd_autograd), ("linear_regression_gd", gd_einsum),
    ("logistic_regression_grad", logr_grad_einsum), ("logistic_regression_grad", logr_grad_loop),
    ("fit_logistic_regression", logr_fit_with_grad),
    ("kmeans", kmeans_per_cluster_loop),
], ids=lambda v: getattr(v, "__name__", v))
def test_correct_variants_pass(name, impl):
    report = evaluate(get(name), impl)
    assert report.passed, str(report)


# =========================================================================== wrong code as candidates write it

def fit_pinv_no_bias(X, y, l2=0.0):
    return torch.linalg.pinv(X) @ y, y.mean()


def fit_transposed_gram(X, y, l2=0.0):
    xm, ym = X.mean(0), y.mean()
    Xc = X - xm
    w = torch.linalg.solve(Xc.T @ Xc / len(X) + l2, Xc.T @ (y - ym) / len(X))   # l2 added to every entry
    return w, ym - xm @ w


def gd_python_floats_bias(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), 0.0
    for _ in range(steps):
        r = X @ w + b - y
        w, b = w - lr * 2 * X.T @ r / N, b - lr * 2 * float(r.mean())
    return w, b                                                           # b a Python float, not a tensor


def gd_starts_from_random(X, y, lr=0.1, steps=100):
    N = X.shape[0]
    w = torch.randn(X.shape[1], dtype=X.dtype) * 0.01
    b = torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        r = X @ w + b - y
        w, b = w - lr * 2 * X.T @ r / N, b - lr * 2 * r.mean()
    return w, b


def logr_grad_clamped(X, y, w, b):
    p = torch.sigmoid(X @ w + b).clamp(0.01, 0.99)
    err = p - y
    return X.T @ err / len(X), err.mean()


def logr_fit_lr_decay(X, y, lr=0.1, steps=100, l2=0.0):
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for t in range(steps):
        err = torch.sigmoid(X @ w + b) - y
        step = lr / (1 + t)
        w, b = w - step * (X.T @ err / len(X) + 2 * l2 * w), b - step * err.mean()
    return w, b


def kmeans_labels_float(x, init_centroids, max_iters=100, tol=0.0):
    c, z = kmeans_per_cluster_loop(x, init_centroids, max_iters, tol)
    return c, z.float()


def kmeans_point_loop(x, init_centroids, max_iters=100, tol=0.0):
    c = init_centroids.clone()
    for _ in range(max_iters):
        z = torch.tensor([min(range(len(c)), key=lambda j: float(((p - c[j]) ** 2).sum())) for p in x])
        new = c.clone()
        for j in range(len(c)):
            if (z == j).any():
                new[j] = x[z == j].mean(0)
        moved, c = (new - c).norm(dim=1).max(), new
        if moved <= tol:
            break
    return c, ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)


def kmeans_labels_unchanged_stop(x, init_centroids, max_iters=100, tol=0.0):
    c, prev = init_centroids.clone(), None
    for _ in range(max_iters):
        z = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        if prev is not None and torch.equal(z, prev):
            break                                                         # tol never consulted
        prev = z
        counts = torch.bincount(z, minlength=len(c))[:, None]
        c = torch.where(counts > 0, torch.zeros_like(c).index_add_(0, z, x) / counts.clamp(min=1), c)
    return c, ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)


@pytest.mark.parametrize("name,impl", [
    ("fit_linear_regression", fit_pinv_no_bias), ("fit_linear_regression", fit_transposed_gram),
    ("linear_regression_gd", gd_python_floats_bias), ("linear_regression_gd", gd_starts_from_random),
    ("logistic_regression_grad", logr_grad_clamped), ("fit_logistic_regression", logr_fit_lr_decay),
    ("kmeans", kmeans_labels_float), ("kmeans", kmeans_point_loop), ("kmeans", kmeans_labels_unchanged_stop),
], ids=lambda v: getattr(v, "__name__", v))
def test_wrong_code_is_rejected(name, impl):
    report = evaluate(get(name), impl)
    assert not report.passed
    assert str(report).strip()


# =========================================================================== bad input: a clear report, never a crash

def _raises(*args, **kwargs):
    raise ValueError("my own bug")


def _returns_numpy(X, y, l2=0.0):
    return np.zeros(X.shape[1]), 0.0


def _returns_nan(X, y, l2=0.0):
    return torch.full((X.shape[1],), float("nan"), dtype=X.dtype), torch.tensor(float("nan"), dtype=X.dtype)


def _wrong_shape(X, y, l2=0.0):
    return torch.zeros(X.shape[1] + 1, dtype=X.dtype), torch.zeros((), dtype=X.dtype)


def _wrong_dtype(X, y, l2=0.0):
    w, b = fit_cholesky(X, y, l2)
    return w.half(), b.half()


def _edits_y(X, y, l2=0.0):
    w, b = fit_cholesky(X, y, l2)
    y.zero_()
    return w, b


def _calls_lstsq(X, y, l2=0.0):
    return lr_decl.fit_lstsq(X, y, l2)


def _endless(X, y, l2=0.0):
    while True:
        pass


@pytest.mark.parametrize("impl", [_raises, _returns_numpy, _returns_nan, _wrong_shape, _wrong_dtype, _edits_y,
                                  _calls_lstsq, _endless], ids=lambda f: f.__name__)
def test_bad_input_gives_a_clear_report(impl):
    report = evaluate(get("fit_linear_regression"), impl)
    assert not report.passed
    text = str(report)
    assert "case 1 of" in text or "case" in text


def test_kmeans_plus_plus_numpy_result_is_reported():
    report = evaluate(get("kmeans_plus_plus"), lambda x, k, generator=None: x[:k].numpy())
    assert not report.passed and str(report).strip()
