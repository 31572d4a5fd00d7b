"""Exact binomial tails: the distribution tests of the stochastic kind, with bounds a declaration can state.

A count X of one outcome among n independent draws is Binomial(n, p). The test accepts X in [lo, hi], the
region outside which X falls with probability at most `alpha` (at most alpha / 2 in each tail), computed
exactly in float64 log space, so a correct solution fails one test with probability `size` <= alpha, and a
solution whose true probability is q passes it with probability `within(n, q, lo, hi)`.

    acceptance(n, p, alpha) -> (lo, hi, size)
    within(n, q, lo, hi)    -> P(lo <= X <= hi) for X ~ Binomial(n, q)
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def log_pmf(n: int, p: float) -> torch.Tensor:
    """log P(X = k) for k = 0..n, X ~ Binomial(n, p), 0 < p < 1 (float64)."""
    k = torch.arange(n + 1, dtype=torch.float64)
    return (math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def _degenerate(n: int, p: float) -> int | None:
    """The certain count when p is 0 or 1, else None."""
    return 0 if p <= 0.0 else n if p >= 1.0 else None


@lru_cache(maxsize=4096)
def acceptance(n: int, p: float, alpha: float) -> tuple[int, int, float]:
    """[lo, hi] holding X ~ Binomial(n, p) but for probability `size` <= alpha (<= alpha / 2 each side)."""
    sure = _degenerate(n, p)
    if sure is not None:
        return sure, sure, 0.0
    lp = log_pmf(n, p)
    log_cdf = torch.logcumsumexp(lp, 0)                   # log P(X <= k)
    log_sf = torch.logcumsumexp(lp.flip(0), 0).flip(0)    # log P(X >= k)
    cut = math.log(alpha / 2)
    lo = int((log_cdf <= cut).sum())                      # P(X <= lo - 1) <= alpha / 2
    hi = n - int((log_sf <= cut).sum())                   # P(X >= hi + 1) <= alpha / 2
    size = (math.exp(log_cdf[lo - 1]) if lo > 0 else 0.0) + (math.exp(log_sf[hi + 1]) if hi < n else 0.0)
    return lo, hi, size


@lru_cache(maxsize=4096)
def within(n: int, q: float, lo: int, hi: int) -> float:
    """P(lo <= X <= hi) for X ~ Binomial(n, q), summed over the region itself (exact when tiny)."""
    if lo > hi:
        return 0.0
    sure = _degenerate(n, q)
    if sure is not None:
        return 1.0 if lo <= sure <= hi else 0.0
    return min(1.0, math.exp(torch.logsumexp(log_pmf(n, q)[lo:hi + 1], 0)))
