"""Part 3, attention: scaled dot-product attention (chapter attention/scaled_dot_product_attention)."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import bool_mask, call, case, f32, f64, float_mask, randn, transposed
from ...registry import register

_PRIVATE = ("torch._scaled_dot_product_attention_math", "torch._scaled_dot_product_flash_attention_for_cpu",
            "torch._fused_sdp_choice")
ATTENTION_BUILTINS = (
    "F.scaled_dot_product_attention", "F.multi_head_attention_forward", "nn.MultiheadAttention",
) + tuple(n for n in _PRIVATE if hasattr(torch, n.split(".", 1)[1]))


# --------------------------------------------------------------------------- inputs

def _qkv(batch, L, S, E, Ev, dtype=f32, seed=0, scale=1.0, mask=None, positional=False, q_view=None, **kw):
    q = (q_view or randn)(*batch, L, E, dtype=dtype, seed=seed, scale=scale)
    k = randn(*batch, S, E, dtype=dtype, seed=seed + 1, scale=scale)
    v = randn(*batch, S, Ev, dtype=dtype, seed=seed + 2)
    if mask is not None:
        m = mask()
        return call(q, k, v, m, **kw) if positional else call(q, k, v, attn_mask=m, **kw)
    return call(q, k, v, **kw)


def _cases():
    return [
        case(_qkv, (), 4, 4, 8, 8, note="unbatched (L, E), no mask"),
        case(_qkv, (2,), 5, 7, 8, 8, seed=10, note="batched, L != S"),
        case(_qkv, (2, 3), 5, 6, 4, 6, seed=20, note="(B, H, L, E) with Ev != E"),
        case(_qkv, (3,), 6, 6, 64, 5, seed=30, note="d_k = 64: the scaling matters"),
        case(_qkv, (2, 2), 3, 5, 16, 3, dtype=f64, seed=40, note="float64"),
        case(_qkv, (2,), 5, 4, 6, 6, seed=50, q_view=transposed, note="non-contiguous query"),
        case(_qkv, (2,), 5, 6, 8, 4, seed=60, mask=partial(bool_mask, 5, 6, 61),
             note="bool mask (L, S) broadcast over the batch"),
        case(_qkv, (2, 2), 4, 7, 8, 8, seed=70, mask=partial(bool_mask, 4, 7, 71), positional=True,
             note="bool mask (L, S), passed positionally"),
        case(_qkv, (2, 3), 1, 5, 8, 8, seed=75, mask=lambda: torch.tensor([[True, True, True, False, False],
                                                                           [True, True, True, True, True]]
                                                                          ).reshape(2, 1, 1, 5),
             note="padding mask (B, 1, 1, S)"),
        case(_qkv, (2,), 5, 6, 8, 4, seed=80, mask=partial(float_mask, 5, 6, 81),
             note="float mask (L, S) added to the scores, with -inf entries"),
        case(_qkv, (3,), 4, 4, 8, 8, dtype=f64, seed=90, mask=partial(float_mask, 4, 4, 91, f64, (1, 4, 4)),
             note="float64 float mask (1, L, S)"),
        case(_qkv, (2,), 5, 5, 8, 8, seed=100, is_causal=True, note="is_causal, L = S"),
        case(_qkv, (2, 2), 3, 6, 8, 4, seed=110, is_causal=True, note="is_causal, L < S (top-left aligned)"),
        case(_qkv, (2,), 6, 4, 8, 8, seed=120, is_causal=True, note="is_causal, L > S (top-left aligned)"),
        case(_qkv, (2,), 4, 5, 6, 3, dtype=f64, seed=130, grad=True, note="gradients"),
        case(_qkv, (2,), 4, 5, 6, 3, dtype=f64, seed=140, mask=partial(bool_mask, 4, 5, 141), grad=True,
             note="gradients through a bool mask"),
        case(_qkv, (2,), 5, 3, 4, 4, dtype=f64, seed=150, is_causal=True, grad=True,
             note="gradients, is_causal with L > S"),
    ]


# --------------------------------------------------------------------------- properties

def _key_permutation_invariant(call):
    q, k, v = randn(2, 4, 8, seed=160), randn(2, 6, 8, seed=161), randn(2, 6, 5, seed=162)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    a, b = call(q, k, v), call(q, k[:, perm], v[:, perm])
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        return msg("shuffling the (key, value) pairs changed the output by {change:.3g}",
                   change=float((a - b).abs().max()))
    return None


def _convex_combination(call):
    q, k = randn(3, 5, 4, seed=163, dtype=f64), randn(3, 7, 4, seed=164, dtype=f64)
    v = torch.full((3, 7, 2), 2.5, dtype=f64)
    out = call(q, k, v)
    if not torch.allclose(out, torch.full_like(out, 2.5)):
        return msg("when every value is 2.5 the output should be 2.5 (weights sum to 1); got {got}...",
                   got=out.flatten()[:3].tolist())
    return None


# --------------------------------------------------------------------------- mistakes

def _mask_bool(scores, attn_mask):
    return scores.masked_fill(~attn_mask, -torch.inf)


def _causal(L, S, device):
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()


def _attend(q, k, v, attn_mask=None, is_causal=False, *, scale=None, dim=-1, apply_mask=None, causal=_causal):
    """A configurable reference from which each mistake changes one thing."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    L, S = scores.shape[-2:]
    if is_causal:
        scores = _mask_bool(scores, causal(L, S, q.device))
    if attn_mask is not None:
        if apply_mask is not None:
            scores = apply_mask(scores, attn_mask)
        elif attn_mask.dtype == torch.bool:
            scores = _mask_bool(scores, attn_mask)
        else:
            scores = scores + attn_mask
    return torch.softmax(scores, dim=dim) @ v


def sdpa_no_scale(q, k, v, attn_mask=None, is_causal=False):
    return _attend(q, k, v, attn_mask, is_causal, scale=1.0)


def sdpa_scale_by_d(q, k, v, attn_mask=None, is_causal=False):
    return _attend(q, k, v, attn_mask, is_causal, scale=1 / q.shape[-1])


def sdpa_scale_by_value_dim(q, k, v, attn_mask=None, is_causal=False):
    return _attend(q, k, v, attn_mask, is_causal, scale=1 / math.sqrt(v.shape[-1]))


def sdpa_softmax_over_queries(q, k, v, attn_mask=None, is_causal=False):
    return _attend(q, k, v, attn_mask, is_causal, dim=-2)


def sdpa_mask_inverted(q, k, v, attn_mask=None, is_causal=False):
    def apply(scores, m):
        return scores.masked_fill(m, -torch.inf) if m.dtype == torch.bool else scores + m
    return _attend(q, k, v, attn_mask, is_causal, apply_mask=apply)


def sdpa_mask_to_zero(q, k, v, attn_mask=None, is_causal=False):
    def apply(scores, m):
        return scores.masked_fill(~m, 0.0) if m.dtype == torch.bool else scores + m
    return _attend(q, k, v, attn_mask, is_causal, apply_mask=apply)


def sdpafloat_mask_multiplied(q, k, v, attn_mask=None, is_causal=False):
    def apply(scores, m):
        return _mask_bool(scores, m) if m.dtype == torch.bool else scores * m
    return _attend(q, k, v, attn_mask, is_causal, apply_mask=apply)


def sdpafloat_mask_as_bool(q, k, v, attn_mask=None, is_causal=False):
    def apply(scores, m):
        return scores.masked_fill(m == 0, -torch.inf)
    return _attend(q, k, v, attn_mask, is_causal, apply_mask=apply)


def sdpa_causal_bottom_right(q, k, v, attn_mask=None, is_causal=False):
    def bottom_right(L, S, device):
        return torch.ones(L, S, dtype=torch.bool, device=device).tril(diagonal=S - L)
    return _attend(q, k, v, attn_mask, is_causal, causal=bottom_right)


def sdpa_causal_upper(q, k, v, attn_mask=None, is_causal=False):
    def upper(L, S, device):
        return torch.ones(L, S, dtype=torch.bool, device=device).triu()
    return _attend(q, k, v, attn_mask, is_causal, causal=upper)


def sdpa_scales_q_in_place(q, k, v, attn_mask=None, is_causal=False):
    q /= math.sqrt(q.shape[-1])
    return _attend(q, k, v, attn_mask, is_causal, scale=1.0)


def sdpa_builtin(q, k, v, attn_mask=None, is_causal=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


register(Exercise(
    name="scaled_dot_product_attention",
    chapter="attention/scaled_dot_product_attention",
    signature="scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False)",
    oracle=lambda q, k, v, attn_mask=None, is_causal=False: F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal),
    cases=_cases,
    forbidden=ATTENTION_BUILTINS,
    properties=[
        Property("shuffling the (key, value) pairs together leaves the output unchanged",
                 _key_permutation_invariant),
        Property("the output is a convex combination of the values", _convex_combination),
    ],
    hints=("scores, mask, softmax over the keys, weighted sum of the values; the scale is 1/sqrt(E) with E the "
           "query size   (eq. attn-def)",
           "a bool mask selects (True = may attend, -inf elsewhere), a float mask is added; is_causal is PyTorch's "
           "top-left tril of shape (L, S)   (eqs. attn-mask, attn-causal)",
           "softmax(q @ k.transpose(-2, -1) / sqrt(E) + mask, dim=-1) @ v, where a bool mask puts -inf where it is "
           "False and is_causal keeps j <= i   (eq. attn-def, attn-mask)"),
    mistakes=[
        Mistake("no scaling", sdpa_no_scale,
                "you did not scale the scores: divide q @ k^T by sqrt(E) (E = q.shape[-1]), otherwise their "
                "variance grows with E and the softmax saturates."),
        Mistake("scaled by d", sdpa_scale_by_d,
                "you divided the scores by E; divide by sqrt(E): the dot product of two unit-variance vectors "
                "has variance E, so its standard deviation is sqrt(E)."),
        Mistake("scaled by the value dimension", sdpa_scale_by_value_dim,
                "you scaled by sqrt(v.shape[-1]); the scale is 1/sqrt(E) with E the query/key dimension "
                "q.shape[-1], which differs from the value dimension Ev."),
        Mistake("softmax over queries", sdpa_softmax_over_queries,
                "your softmax runs over the query axis (dim=-2): each query's weights over the keys must sum "
                "to 1, so take the softmax over the last axis (the keys)."),
        Mistake("mask polarity inverted", sdpa_mask_inverted,
                "your bool mask is inverted: in PyTorch's convention True means 'may attend', so fill -inf "
                "where the mask is False (scores.masked_fill(~attn_mask, -inf))."),
        Mistake("masked scores set to zero", sdpa_mask_to_zero,
                "you set masked scores to 0, which still gets weight exp(0) = 1 after the softmax; set them "
                "to -inf so that their weight is exactly 0."),
        Mistake("float mask multiplied", sdpafloat_mask_multiplied,
                "you multiplied the scores by the float mask; a float attn_mask is an additive bias: "
                "scores + attn_mask."),
        Mistake("float mask treated as bool", sdpafloat_mask_as_bool,
                "you treated a float mask like a bool mask (attn_mask == 0 -> -inf); a float attn_mask is "
                "added to the scores, only a bool mask selects positions."),
        Mistake("causal mask bottom-right aligned", sdpa_causal_bottom_right,
                "your causal mask is aligned to the bottom-right corner (tril(diagonal=S - L)); PyTorch's "
                "is_causal is top-left aligned: query i sees keys j <= i, i.e. torch.ones(L, S).tril()."),
        Mistake("causal mask transposed", sdpa_causal_upper,
                "your causal mask keeps the upper triangle, so each query sees the future: keep j <= i, "
                "torch.ones(L, S, dtype=torch.bool).tril()."),
        Mistake("scales q in place", sdpa_scales_q_in_place,
                "you scaled the caller's q in place (q /= ...): compute q * scale into a new tensor."),
        Mistake("calls the built-in", sdpa_builtin,
                "this exercise asks you to write attention yourself: F.scaled_dot_product_attention and "
                "nn.MultiheadAttention are off limits; use matmul, softmax and masked_fill."),
    ],
    bench=(lambda: call(randn(8, 512, 64, seed=0), randn(8, 512, 64, seed=1), randn(8, 512, 64, seed=2)),
           F.scaled_dot_product_attention),
))
