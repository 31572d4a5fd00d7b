"""Deterministic inputs for cases. Every tensor comes from its own seed, so a case is the same on every run."""

from __future__ import annotations

from functools import partial

import torch

from .core import Case

f32, f64 = torch.float32, torch.float64
FLOATS = (f32, f64)         # the float32/float64 pair every exercise is checked in


def randn(*shape, dtype=torch.float32, seed=0, scale=1.0, shift=0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)


def transposed(*shape, dtype=torch.float32, seed=0, scale=1.0) -> torch.Tensor:
    """A non-contiguous view of the given shape (the last two axes swapped in memory)."""
    base = randn(*shape[:-2], shape[-1], shape[-2], dtype=dtype, seed=seed, scale=scale)
    return base.transpose(-1, -2)


def strided(*shape, dtype=torch.float32, seed=0, scale=1.0) -> torch.Tensor:
    """A non-contiguous view: every other element of a tensor twice as long in the last axis."""
    return randn(*shape[:-1], 2 * shape[-1], dtype=dtype, seed=seed, scale=scale)[..., ::2]


def call(*args, **kwargs):
    """The (args, kwargs) pair a function case returns."""
    return args, kwargs


def case(build, *args, note: str = "", grad: bool = False, tolerance: dict | None = None, **kwargs) -> Case:
    """A Case whose inputs are `build(*args, **kwargs)`: arguments are bound now, tensors made fresh each run.

    `note`, `grad` and `tolerance` belong to the Case; every other keyword goes to `build`.
    """
    return Case(make=partial(build, *args, **kwargs), note=note, grad=grad, tolerance=tolerance)


def bool_mask(L, S, seed, shape=None):
    """Random True/False (True = may attend) with at least one True per row (every row keeps a key)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand((L, S), generator=g) < 0.6
    m[torch.arange(L), torch.randint(0, S, (L,), generator=g)] = True
    return m if shape is None else m.reshape(shape)


def float_mask(L, S, seed, dtype=f32, shape=None, blocked=True):
    """An additive bias (like ALiBi or a learned bias) with some -inf entries; every row keeps a key."""
    bias = randn(L, S, seed=seed, dtype=dtype)
    if blocked:
        bias = bias.masked_fill(~bool_mask(L, S, seed + 1), -torch.inf)
    return bias if shape is None else bias.reshape(shape)
