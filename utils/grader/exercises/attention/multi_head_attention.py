"""Part 3, attention: multi-head attention (chapter attention/multi_head_attention).

The oracle is a module with the reader's interface (q_proj, k_proj, v_proj, o_proj) whose attention is
F.scaled_dot_product_attention; the engine loads the same random weights into both, so the reader's own
projections drive the reference.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ...core import Case, Mistake
from ...inputs import bool_mask, float_mask, randn
from ...kinds import ModuleExercise, Script, Step
from ...registry import register


class MultiHeadAttentionOracle(nn.Module):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, t):
        B, T, _ = t.shape
        return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        B, L, D = x.shape
        src = x if x_kv is None else x_kv
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(src)), self._heads(self.v_proj(src))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.o_proj(y.transpose(1, 2).reshape(B, L, D))


def scaled_state(state: dict, gen: torch.Generator) -> dict:
    """Random weights of the size a trained layer has (std 1/sqrt(fan_in)), random biases.

    Weights of std 1 (the engine's default) would make scores of size ~d_model and a one-hot softmax, under
    which wrong scalings and some wrong head orders give nearly the right output.
    """
    new = {}
    for name, t in state.items():
        r = torch.randn(t.shape, generator=gen, dtype=torch.float64)
        new[name] = (r / math.sqrt(t.shape[-1]) if name.endswith("weight") else 0.5 * r).to(t.dtype)
    return new


# --------------------------------------------------------------------------- cases

def _script(d_model, n_heads, steps, bias=True):
    return Script(init=((d_model, n_heads), {} if bias else {"bias": False}), steps=steps)


def _x(B, T, D, seed):
    return randn(B, T, D, seed=seed)


def _step(B, L, D, seed, S=None, mask=None, is_causal=False, grad=False, train=False, positional_kv=False):
    args = (_x(B, L, D, seed),)
    kwargs = {}
    if S is not None:
        if positional_kv:
            args += (_x(B, S, D, seed + 1),)
        else:
            kwargs["x_kv"] = _x(B, S, D, seed + 1)
    if mask is not None:
        kwargs["attn_mask"] = mask()
    if is_causal:
        kwargs["is_causal"] = True
    return Step((args, kwargs), train=train, grad=grad)


def _make(d_model, n_heads, *steps, bias=True):
    return lambda: _script(d_model, n_heads, [s() for s in steps], bias)


def _case(d_model, n_heads, *steps, note="", bias=True):
    return Case(make=_make(d_model, n_heads, *steps, bias=bias), note=note)


S_ = partial(partial, _step)


def _cases():
    return [
        _case(16, 4, S_(2, 5, 16, 1), note="self-attention, 4 heads"),
        _case(12, 3, S_(2, 7, 12, 2), note="bias=False", bias=False),
        _case(16, 4, S_(2, 5, 16, 16, S=5), note="cross-attention, L = S"),
        _case(16, 4, S_(2, 4, 16, 3, S=6), note="cross-attention, L != S"),
        _case(16, 2, S_(2, 6, 16, 4, is_causal=True), note="causal self-attention"),
        _case(16, 4, S_(2, 3, 16, 5, S=7, is_causal=True), note="causal cross-attention, L < S (top-left)"),
        _case(8, 2, S_(2, 5, 8, 6, S=5, mask=partial(bool_mask, 5, 5, 60)), note="bool mask (L, S)"),
        _case(8, 4, S_(2, 3, 8, 7, S=4, mask=lambda: torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]],
                                                                    dtype=torch.bool).reshape(2, 1, 1, 4)),
              note="padding mask (B, 1, 1, S) in cross-attention"),
        _case(8, 2, S_(3, 4, 8, 8, mask=partial(float_mask, 4, 4, 80)), note="float mask (L, S) added"),
        _case(6, 3, S_(1, 1, 6, 9, S=5), note="odd shapes: batch of one, one query, head_dim 2"),
        _case(10, 5, S_(3, 7, 10, 10), S_(3, 2, 10, 11, S=7, positional_kv=True),
              note="two calls on one module: self-attention, then cross-attention (x_kv positional)"),
        _case(12, 12, S_(2, 4, 12, 12), note="n_heads = d_model (head_dim 1)"),
        _case(16, 1, S_(2, 5, 16, 13), note="a single head"),
        _case(8, 2, S_(2, 5, 8, 14, is_causal=True, grad=True, train=True), note="gradients, causal"),
        _case(8, 4, S_(2, 3, 8, 15, S=6, grad=True, train=True), note="gradients, cross-attention"),
    ]


# --------------------------------------------------------------------------- mistakes

class _Base(MultiHeadAttentionOracle):
    """Each mistake overrides one step of this explicit implementation."""

    scale_dim = "head"

    def split(self, t):
        return self._heads(t)

    def merge(self, y):
        B, H, T, d = y.shape
        return y.transpose(1, 2).reshape(B, T, H * d)

    def sources(self, x, x_kv):
        src = x if x_kv is None else x_kv
        return x, src, src

    def out(self, y):
        return self.o_proj(y)

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        xq, xk, xv = self.sources(x, x_kv)
        q, k, v = self.split(self.q_proj(xq)), self.split(self.k_proj(xk)), self.split(self.v_proj(xv))
        d = q.shape[-1] if self.scale_dim == "head" else self.n_heads * self.head_dim
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if is_causal:
            scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), -torch.inf)
        if attn_mask is not None:
            scores = (scores.masked_fill(~attn_mask, -torch.inf) if attn_mask.dtype == torch.bool
                      else scores + attn_mask)
        return self.out(self.merge(torch.softmax(scores, dim=-1) @ v))


class SplitWithoutTranspose(_Base):
    def split(self, t):
        B, T, _ = t.shape
        return t.view(B, self.n_heads, T, self.head_dim)


class MergeWithoutTranspose(_Base):
    def merge(self, y):
        B, H, T, d = y.shape
        return y.reshape(B, T, H * d)


class AttendOverHeads(_Base):
    def split(self, t):
        B, T, _ = t.shape
        return t.view(B, T, self.n_heads, self.head_dim)

    def merge(self, y):
        B, T, H, d = y.shape
        return y.reshape(B, T, H * d)

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        # scores (B, T, H, H): the softmax mixes heads, not positions; masks cannot even apply
        xq, xk, xv = self.sources(x, x_kv)
        q, k, v = self.split(self.q_proj(xq)), self.split(self.k_proj(xk)), self.split(self.v_proj(xv))
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        return self.out(self.merge(w @ v))


class NoOutputProjection(_Base):
    def out(self, y):
        return y


class ScaledByModelDim(_Base):
    scale_dim = "model"


class CrossKeysFromX(_Base):
    def sources(self, x, x_kv):
        return x, x, (x if x_kv is None else x_kv)


class CrossKeysAndValuesFromX(_Base):
    def sources(self, x, x_kv):
        return x, x, x


class BiasAlwaysOn(_Base):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__(d_model, n_heads, bias=True)


class MaskNotApplied(_Base):
    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        return super().forward(x, x_kv, None, is_causal)


class UsesBuiltin(nn.Module):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__()
        self.n_heads = n_heads
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, name, nn.Linear(d_model, d_model, bias=bias))

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        src = x if x_kv is None else x_kv
        D = x.shape[-1]
        in_w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        in_b = (torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
                if self.q_proj.bias is not None else None)
        y, _ = F.multi_head_attention_forward(
            x.transpose(0, 1), src.transpose(0, 1), src.transpose(0, 1), D, self.n_heads, in_w, in_b,
            None, None, False, 0.0, self.o_proj.weight, self.o_proj.bias, need_weights=False)
        return y.transpose(0, 1)


register(ModuleExercise(
    name="MultiHeadAttention",
    chapter="attention/multi_head_attention",
    signature="MultiHeadAttention(d_model, n_heads, bias=True).forward(x, x_kv=None, attn_mask=None, "
              "is_causal=False)",
    oracle=MultiHeadAttentionOracle,
    randomize=scaled_state,
    cases=_cases,
    forbidden=("nn.MultiheadAttention", "F.multi_head_attention_forward"),
    hints=("project, split the channels into heads, attend per head with scale 1/sqrt(head_dim), merge, project "
           "again   (eqs. mha-split, mha-head, mha-def)",
           "queries come from x, keys and values from x_kv when given; the split is a view of the last axis "
           "followed by a transpose that puts the heads before time",
           "q, k, v = proj(x), proj(x_kv), proj(x_kv); split (B, T, D) -> view(B, T, H, d).transpose(1, 2); "
           "attend per head; merge transpose(1, 2).reshape(B, L, D); then o_proj   (eq. mha-split, mha-def)"),
    mistakes=[
        Mistake("split without transpose", SplitWithoutTranspose,
                "you split heads with view(B, H, T, d): that cuts the flat (T * D) memory into H blocks of "
                "whole time steps, scrambling positions and heads. Use view(B, T, H, d).transpose(1, 2)."),
        Mistake("merge without transpose", MergeWithoutTranspose,
                "you merged heads with reshape(B, T, D) straight from (B, H, T, d): transpose back to "
                "(B, T, H, d) first, y.transpose(1, 2).reshape(B, T, D)."),
        Mistake("attention over heads", AttendOverHeads,
                "you forgot .transpose(1, 2) after view(B, T, H, d): the matmul then attends across heads "
                "within one position instead of across positions within one head."),
        Mistake("no output projection", NoOutputProjection,
                "you returned the merged heads without o_proj: the heads are mixed by the output projection "
                "W_O, y = o_proj(concat(heads))."),
        Mistake("scaled by sqrt(d_model)", ScaledByModelDim,
                "you scaled by 1/sqrt(d_model); each head's scores are dot products of head_dim-dimensional "
                "vectors, so scale by 1/sqrt(head_dim) = 1/sqrt(d_model // n_heads)."),
        Mistake("cross-attention keys from x", CrossKeysFromX,
                "in cross-attention your keys come from x: keys and values both come from x_kv, only the "
                "queries come from x."),
        Mistake("cross-attention ignores x_kv", CrossKeysAndValuesFromX,
                "you ignored x_kv: when it is given, keys and values are k_proj(x_kv) and v_proj(x_kv) "
                "(cross-attention); only when it is None do they come from x."),
        Mistake("bias always on", BiasAlwaysOn,
                "your projections have biases although bias=False: pass bias=bias to every nn.Linear."),
        Mistake("mask ignored", MaskNotApplied,
                "your module ignores attn_mask: a bool mask puts -inf where it is False, a float mask is added "
                "to the scores of every head."),
        Mistake("calls the built-in", UsesBuiltin,
                "this exercise asks you to write multi-head attention yourself: nn.MultiheadAttention and "
                "F.multi_head_attention_forward are off limits (F.scaled_dot_product_attention is allowed)."),
    ],
))
