"""Part 3, attention: the single-head self-attention module of interviews (chapter attention/self_attention).

Each case is a script of forward calls on one module with random non-default weights: padding masks of
several lengths per batch (on the right and on the left; int64, bool and float), dropout off and on, train
and eval mode, float32 and float64, a non-contiguous input, a batch of one, gradients.

Dropout: a step of a module whose dropout is non-zero re-seeds PyTorch's global generator just before its
forward call (its inputs are a function, `_seeded`), so the oracle and the reader's module draw the same
dropout mask for the same (B, T, T) weights: in train mode the output must equal `o_proj(attn_dropout(weights)
@ v)` for that mask, and in eval mode there is no mask at all. A property then swaps the module's own
`attn_dropout` for a fixed, known mask and checks the output against it, and that the weights returned are
the ones handed to the dropout (before it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ....i18n import msg
from ...core import Case, Mistake, Property
from ...inputs import f32, f64, randn, transposed
from ...kinds import ModuleExercise, Script, Step
from ...registry import register

FORBIDDEN = ("F.scaled_dot_product_attention", "F.multi_head_attention_forward", "nn.MultiheadAttention")


# --------------------------------------------------------------------------- the oracle

class SelfAttentionSpec(nn.Module):
    """PyTorch built-ins: a fused nn.Linear split in q, k, v; masked_fill on the padding keys; softmax; the
    module's nn.Dropout on the weights; nn.Linear out. Returns the weights before dropout."""

    def __init__(self, d_model, dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.attn_dropout = nn.Dropout(dropout)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).split(self.d_model, dim=-1)                     # (B, T, d) each
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_model))
        if attention_mask is not None:
            padding = (attention_mask == 0)[:, None, :]                             # (B, 1, T): the keys
            scores = scores.masked_fill(padding, -math.inf)
        weights = torch.softmax(scores, dim=-1)                                     # (B, T, T)
        return self.o_proj(torch.matmul(self.attn_dropout(weights), v)), weights


def trained_scale(state: dict, gen: torch.Generator) -> dict:
    """Weights of the size a trained layer has (std 1/sqrt(fan_in)) and random biases: the scores stay O(1), so
    the softmax is soft and a wrong scale or axis changes the result visibly."""
    new = {}
    for name, t in state.items():
        r = torch.randn(t.shape, generator=gen, dtype=torch.float64)
        new[name] = (r / math.sqrt(t.shape[-1]) if name.endswith("weight") else 0.5 * r).to(t.dtype)
    return new


# --------------------------------------------------------------------------- cases

def padding_mask(lengths, T, dtype=torch.int64, left=False):
    """(B, T): 1 for the first `length` tokens of each row (the last ones with left=True), 0 for padding."""
    real = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    if left:
        real = real.flip(-1)
    return real.to(dtype)


def _seeded(args, kwargs, seed):
    """Inputs as a function: re-seed the global generator right before the forward call that follows, so that
    the oracle and every target draw the same dropout mask (and a module that drops in eval mode is caught
    the same way every run)."""
    def inputs(prev):
        torch.manual_seed(seed)
        return args, kwargs
    return inputs


def _script(d_model, B, T, *, dropout=None, lengths=None, mask_dtype=torch.int64, left=False, modes="T",
            dtype=f32, seed=0, noncontig=False, positional=False):
    """One module, one call per letter of `modes`: T train, E eval, G train with backward. With a non-zero
    dropout every step is seeded (see `_seeded`)."""
    init = ((d_model,), {} if dropout is None else {"dropout": dropout})
    steps = []
    for k, mode in enumerate(modes):
        make = transposed if noncontig else randn
        x = make(B, T, d_model, dtype=dtype, seed=seed + k)
        kwargs = {}
        args = (x,)
        if lengths is not None:
            mask = padding_mask(lengths, T, mask_dtype, left)
            if positional:
                args = (x, mask)
            else:
                kwargs["attention_mask"] = mask
        inputs = _seeded(args, kwargs, 1000 + 17 * seed + k) if dropout else (args, kwargs)
        steps.append(Step(inputs, train=mode in "TG", grad=mode == "G"))
    return Script(init=init, steps=steps, dtype=dtype)


def case(*args, note="", **kwargs):
    return Case(make=lambda: _script(*args, **kwargs), note=note)


def _cases():
    return [
        case(16, 2, 5, modes="TE", note="no mask, dropout off (the default)"),
        case(16, 3, 6, lengths=[6, 4, 1], note="padding on the right, three lengths in one batch (6, 4, 1)"),
        case(12, 4, 7, lengths=[3, 7, 1, 5], left=True, seed=1,
             note="padding on the left (as in a batch prepared for generation), lengths 3, 7, 1, 5"),
        case(16, 2, 6, lengths=[2, 6], mask_dtype=torch.bool, seed=2, note="a bool attention_mask"),
        case(16, 2, 6, lengths=[5, 3], mask_dtype=f32, seed=3, note="a float attention_mask of 1.0 and 0.0"),
        case(16, 3, 5, lengths=[5, 2, 4], seed=4, positional=True, note="attention_mask passed positionally"),
        case(16, 2, 6, dropout=0.3, lengths=[6, 3], modes="TTE", seed=5,
             note="dropout=0.3: two train calls (two masks), then eval (no dropout)"),
        case(16, 2, 5, dropout=0.5, modes="ET", seed=6, note="dropout=0.5 without a mask: eval first, then train"),
        case(8, 2, 6, dropout=0.25, lengths=[4, 6], modes="GE", dtype=f64, seed=7,
             note="float64, dropout=0.25: gradients through the dropped weights, then eval"),
        case(16, 2, 5, lengths=[5, 3], modes="GE", dtype=f64, seed=8, note="float64, gradients through the padding mask"),
        case(16, 2, 7, lengths=[7, 4], noncontig=True, seed=9, note="a non-contiguous input"),
        case(16, 1, 1, seed=10, note="batch of one, a single token"),
        case(24, 1, 9, dropout=0.2, lengths=[6], modes="TE", dtype=f64, seed=11,
             note="batch of one with padding, float64, dropout=0.2"),
        case(20, 3, 33, lengths=[33, 17, 2], modes="E", seed=12, note="a longer sequence, d_model = 20"),
    ]


# --------------------------------------------------------------------------- properties

class FixedDrop(nn.Module):
    """Stands in for the module's attn_dropout: a fixed, known mask (scaled by 1 / (1 - p)) for a tensor of any
    shape; records what it is given."""

    def __init__(self, p: float, seed: int = 22):
        super().__init__()
        self.p, self.seed, self.seen = p, seed, []

    def forward(self, w):
        self.seen.append(w)
        keep = torch.rand(w.shape, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64) > self.p
        return w * keep.to(w.dtype) / (1 - self.p)


def _uses_its_dropout(call):
    """In train mode, out == o_proj(attn_dropout(weights) @ v) for the module's own attn_dropout, and the weights
    returned are those handed to it."""
    torch.manual_seed(0)
    d, p = 8, 0.5
    m = call(d, dropout=p).double().train()
    x = randn(2, 5, d, dtype=f64, seed=21)
    mask = padding_mask([5, 3], 5)
    spy = FixedDrop(p)
    m.attn_dropout = spy
    with torch.no_grad():
        out, weights = m(x, attention_mask=mask)
    if not spy.seen:
        return msg("your forward never calls self.attn_dropout: apply the module's own nn.Dropout to the weights")
    if len(spy.seen) > 1:
        return msg("your forward calls self.attn_dropout {n} times; apply it once, to the weights", n=len(spy.seen))
    if not (isinstance(weights, torch.Tensor) and spy.seen[0].shape == weights.shape
            and torch.allclose(spy.seen[0], weights, rtol=1e-9, atol=1e-12)):
        return msg("the tensor handed to self.attn_dropout is not the weights you return (the softmax "
                   "probabilities, before dropout)")
    v = m.qkv_proj(x)[..., 2 * d:]
    expected = m.o_proj(spy(weights) @ v)
    if not torch.allclose(out, expected, rtol=1e-9, atol=1e-12):
        return msg("with a known dropout mask, out differs from o_proj(attn_dropout(weights) @ v) by up to "
                   "{err:.3g}", err=(out - expected).abs().max().item())
    return None


def _padding_is_invisible(call):
    """Changing the inputs at padding positions changes nothing at the real tokens, and padding keys weigh 0."""
    torch.manual_seed(0)
    d = 8
    m = call(d).double().eval()
    mask = padding_mask([6, 2, 4], 6)
    x = randn(3, 6, d, dtype=f64, seed=31)
    noise = randn(3, 6, d, dtype=f64, seed=32, scale=5.0)
    x2 = torch.where(mask[..., None].bool(), x, noise)
    with torch.no_grad():
        out1, w1 = m(x, attention_mask=mask)
        out2, _ = m(x2, attention_mask=mask)
    real = mask.bool()
    on_padding = w1.masked_select(~real[:, None, :].expand_as(w1))
    if on_padding.numel() and on_padding.abs().max() > 1e-12:
        return msg("a padding key gets weight {w:.3g}; every padding key must get weight 0",
                   w=on_padding.abs().max().item())
    change = (out1 - out2)[real].abs().max().item()
    if change > 1e-9:
        return msg("changing the inputs at padding positions changed the output at real tokens by {change:.3g}",
                   change=change)
    return None


# --------------------------------------------------------------------------- mistakes: one module, one flaw each

class _Attention(nn.Module):
    """A hand-written module (no SDPA: the grader forbids it); each mistake overrides one step."""

    def __init__(self, d_model, dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.attn_dropout = nn.Dropout(dropout)
        self.o_proj = nn.Linear(d_model, d_model)

    def scale(self):
        return 1 / math.sqrt(self.d_model)

    def masked(self, scores, attention_mask):                     # scores (B, T, T), mask (B, T)
        return scores.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))

    def normalise(self, scores):
        return torch.softmax(scores, dim=-1)

    def after_softmax(self, weights, attention_mask):
        return weights

    def drop(self, weights):
        return self.attn_dropout(weights)

    def finish(self, out, weights, dropped):
        return out, weights

    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-2, -1) * self.scale()
        if attention_mask is not None:
            scores = self.masked(scores, attention_mask)
        weights = self.normalise(scores)
        if attention_mask is not None:
            weights = self.after_softmax(weights, attention_mask)
        dropped = self.drop(weights)
        return self.finish(self.o_proj(dropped @ v), weights, dropped)


class NoScale(_Attention):
    def scale(self):
        return 1.0


class ScaleByWidth(_Attention):
    def scale(self):
        return 1 / self.d_model


class SoftmaxOverQueries(_Attention):
    def normalise(self, scores):
        return torch.softmax(scores, dim=1)


class MaskIgnored(_Attention):
    def masked(self, scores, attention_mask):
        return scores


class MaskInverted(_Attention):
    def masked(self, scores, attention_mask):
        return scores.masked_fill(attention_mask[:, None, :].bool(), float("-inf"))


class MaskFilledWithZero(_Attention):
    def masked(self, scores, attention_mask):
        return scores.masked_fill(attention_mask[:, None, :] == 0, 0.0)


class MaskOnQueries(_Attention):
    def masked(self, scores, attention_mask):
        return scores.masked_fill(attention_mask[:, :, None] == 0, float("-inf"))


class MaskOnBothAxes(_Attention):
    def masked(self, scores, attention_mask):
        pair = attention_mask[:, :, None] * attention_mask[:, None, :]          # (B, T, T): query and key real
        return scores.masked_fill(pair == 0, float("-inf"))


class MaskAddedAsIs(_Attention):
    def masked(self, scores, attention_mask):
        return scores + attention_mask[:, None, :]


class MaskAfterSoftmax(_Attention):
    def masked(self, scores, attention_mask):
        return scores

    def after_softmax(self, weights, attention_mask):
        return weights * attention_mask[:, None, :]


class CausalToo(_Attention):
    def masked(self, scores, attention_mask):
        T = scores.shape[-1]
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        return super().masked(scores, attention_mask).masked_fill(future, float("-inf"))

    def forward(self, x, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones(x.shape[:2], dtype=torch.int64)
        return super().forward(x, attention_mask)


class WeightsAfterDropout(_Attention):
    def finish(self, out, weights, dropped):
        return out, dropped


class DropoutOnOutput(_Attention):
    def drop(self, weights):
        return weights

    def finish(self, out, weights, dropped):
        return self.attn_dropout(out), weights


class DropoutInEval(_Attention):
    def drop(self, weights):
        return F.dropout(weights, self.attn_dropout.p)              # training=True by default: drops in eval too


class NoOutputProjection(_Attention):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-2, -1) * self.scale()
        if attention_mask is not None:
            scores = self.masked(scores, attention_mask)
        weights = torch.softmax(scores, dim=-1)
        return self.attn_dropout(weights) @ v, weights


class OutputFromSDPA(_Attention):
    """Weights by hand for the return value, the output from the built-in."""

    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        scores = self.masked(q @ k.transpose(-2, -1) * self.scale(), attention_mask) if attention_mask is not None \
            else q @ k.transpose(-2, -1) * self.scale()
        weights = torch.softmax(scores, dim=-1)
        keep = None if attention_mask is None else (attention_mask != 0)[:, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                           dropout_p=self.attn_dropout.p if self.training else 0.0)
        return self.o_proj(y), weights


register(ModuleExercise(
    name="SelfAttention",
    chapter="attention/self_attention",
    signature="SelfAttention(d_model, dropout=0.0); forward(x, attention_mask=None) -> (out, weights)",
    oracle=SelfAttentionSpec,
    cases=_cases,
    randomize=trained_scale,
    forbidden=FORBIDDEN,
    properties=[
        Property("in train mode, out = o_proj(attn_dropout(weights) @ v) with the module's own attn_dropout",
                 _uses_its_dropout),
        Property("padding tokens are invisible to the real ones", _padding_is_invisible),
    ],
    hints=("one fused projection gives q, k, v; the scores are scaled, padding keys are masked before the softmax, "
           "dropout acts on the weights and o_proj on their product with v   (eqs. sa-fused, sa-attn, sa-mask, "
           "sa-out)",
           "the mask (B, T) marks the keys: broadcast it as (B, 1, T) over the queries and fill the padding keys' "
           "scores with -inf; return the weights as the softmax gave them, the dropped copy only multiplies v",
           "q, k, v = qkv_proj(x).split(d_model, dim=-1); scores = q @ k.transpose(-2, -1) / sqrt(d_model); "
           "scores.masked_fill(attention_mask[:, None, :] == 0, -inf); weights = softmax(scores, -1); "
           "out = o_proj(attn_dropout(weights) @ v)   (eqs. sa-attn, sa-mask, sa-out)"),
    mistakes=[
        Mistake("no scaling", NoScale,
                "you did not scale the scores: divide q @ k^T by sqrt(d_model), or their variance grows with "
                "d_model and the softmax saturates."),
        Mistake("scaled by d_model", ScaleByWidth,
                "you divided the scores by d_model; divide by sqrt(d_model), the standard deviation of a dot "
                "product of two d_model-dimensional unit-variance vectors."),
        Mistake("softmax over the queries", SoftmaxOverQueries,
                "your softmax runs over the query axis (dim=1): each query's weights over the keys must sum to "
                "1, so take the softmax over the last axis."),
        Mistake("mask ignored", MaskIgnored,
                "attention_mask has no effect: the real tokens attend to the padding. Fill the scores of the "
                "padding keys with -inf before the softmax."),
        Mistake("mask inverted", MaskInverted,
                "your mask is inverted: attention_mask is 1 for real tokens and 0 for padding, so mask where it "
                "is 0 (attention_mask == 0), not where it is 1."),
        Mistake("masked with 0", MaskFilledWithZero,
                "you set the padding keys' scores to 0, which still weighs exp(0) after the softmax; set them to "
                "-inf so that their weight is exactly 0."),
        Mistake("mask on the query axis", MaskOnQueries,
                "your mask runs along the query axis (attention_mask[:, :, None]): it must hide padding keys, so "
                "broadcast it as attention_mask[:, None, :], one row of allowed keys shared by every query."),
        Mistake("padding queries masked too", MaskOnBothAxes,
                "you also masked the padding queries: their rows are all -inf and the softmax returns NaN, which "
                "poisons the gradients even if the loss ignores them. Mask the keys only (B, 1, T); a padding "
                "query still attends to the real tokens."),
        Mistake("mask added to the scores", MaskAddedAsIs,
                "you added attention_mask to the scores: a 1/0 mask is not an additive bias. Turn it into one "
                "first (0 for real tokens, -inf for padding) or use masked_fill where it is 0."),
        Mistake("mask applied after the softmax", MaskAfterSoftmax,
                "you zeroed the padding weights after the softmax, so the rows no longer sum to 1; mask the "
                "scores with -inf before the softmax and it renormalises over the real tokens."),
        Mistake("causal mask added", CausalToo,
                "you added a causal mask: this module is bidirectional self-attention (an encoder's), every real "
                "token attends to every other real token, before and after it."),
        Mistake("weights returned after dropout", WeightsAfterDropout,
                "you returned the weights after dropout: return the softmax probabilities as they are (each row "
                "sums to 1); the dropped copy only multiplies v."),
        Mistake("dropout on the output", DropoutOnOutput,
                "your dropout acts on the output: attention dropout acts on the weights, "
                "out = o_proj(attn_dropout(weights) @ v)."),
        Mistake("dropout in eval mode", DropoutInEval,
                "your module drops weights in eval mode too: F.dropout(w, p) has training=True by default. Use "
                "self.attn_dropout(weights) (an nn.Dropout follows model.eval()) or pass training=self.training."),
        Mistake("no output projection", NoOutputProjection,
                "you returned attn_dropout(weights) @ v without the output projection: out = o_proj(...)."),
        Mistake("calls the built-in", OutputFromSDPA,
                "this exercise asks you to write the attention product yourself: F.scaled_dot_product_attention "
                "and nn.MultiheadAttention are off limits here; use matmul, masked_fill and softmax."),
    ],
))
