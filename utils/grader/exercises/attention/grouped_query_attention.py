"""Part 3, attention: grouped-query attention with a KV cache (chapter attention/grouped_query_attention).

Each case is a script of forward calls on one module: the whole sequence in one call, then the same
sequence again in chunks (or token by token), every chunk fed the cache returned by the previous call
(`Step(inputs=lambda prev: ...)`). Every call's output and cache is compared with the oracle's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...core import Case, Mistake
from ...inputs import call, randn
from ...kinds import ModuleExercise, Script, Step
from ...registry import register

FORBIDDEN = ("F.scaled_dot_product_attention", "torch._scaled_dot_product_attention_math",
             "F.multi_head_attention_forward", "nn.MultiheadAttention")


# --------------------------------------------------------------------------- the oracle

class GroupedQueryAttentionSpec(nn.Module):
    """PyTorch's SDPA on key/value heads repeated group-wise, with a causal mask shifted by the cache length."""

    def __init__(self, d_model, n_heads, n_kv_heads, bias=False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        S = k.shape[2]
        allowed = torch.arange(T)[:, None] + (S - T) >= torch.arange(S)      # (T, S)
        g = self.n_heads // self.n_kv_heads
        y = F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                           attn_mask=allowed)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), (k, v)


def scaled_state(state: dict, gen: torch.Generator) -> dict:
    """Random weights with the variance of a trained layer (randn / sqrt(fan_in)), random biases.

    Unit-variance weights would make the scores O(d_model) and every softmax one-hot.
    """
    return {name: torch.randn(t.shape, generator=gen, dtype=torch.float64).mul(
                t.shape[1] ** -0.5 if t.dim() == 2 else 0.5).to(t.dtype)
            for name, t in state.items()}


# --------------------------------------------------------------------------- cases

def _cache_of(prev):
    """The cache returned by the previous call, or whatever came back (so that a wrong return fails there)."""
    last = prev[-1] if prev else None
    return last[1] if isinstance(last, (tuple, list)) and len(last) == 2 else last


def _script(d_model, n_heads, n_kv_heads, chunks, B=2, seed=0, bias=False, one_call=True, grad=False):
    """One call over the whole sequence (optional), then the same sequence in `chunks`, each fed the cache."""
    x = randn(B, sum(chunks), d_model, seed=seed)
    steps = [Step(call(x), grad=grad)] if one_call else []
    start = 0
    for i, n in enumerate(chunks):
        chunk = x[:, start:start + n]
        if i == 0:
            steps.append(Step(call(chunk)))
        else:
            steps.append(Step(lambda prev, c=chunk: call(c, past_kv=_cache_of(prev)), grad=grad))
        start += n
    init = ((d_model, n_heads, n_kv_heads), {"bias": True} if bias else {})
    return Script(init=init, steps=steps)


def _given_cache(d_model, n_heads, n_kv_heads, past, T, B=2, seed=0):
    """A cache made outside the module (as if from a longer prompt), then a chunk of T new tokens."""
    hd = d_model // n_heads
    k0 = randn(B, n_kv_heads, past, hd, seed=seed + 1)
    v0 = randn(B, n_kv_heads, past, hd, seed=seed + 2)
    x = randn(B, T, d_model, seed=seed)
    return Script(init=((d_model, n_heads, n_kv_heads), {}), steps=[Step(call(x, past_kv=(k0, v0)))])


def _case(build, *args, note="", **kwargs):
    return Case(make=lambda: build(*args, **kwargs), note=note)


def _cases():
    return [
        _case(_script, 32, 8, 2, [7], note="GQA (8 query heads, 2 kv heads), one call"),
        _case(_script, 32, 8, 2, [3, 2, 2], note="GQA: one call, then chunks of 3, 2, 2 with the cache"),
        _case(_script, 24, 6, 3, [4, 1, 1, 1, 1, 1], note="GQA 6/3: prefill 4, then token-by-token decoding"),
        _case(_script, 24, 6, 2, [2, 5, 3], seed=1, note="GQA 6/2 (groups of 3), chunks 2, 5, 3"),
        _case(_script, 32, 8, 1, [5, 1, 3], seed=2, note="MQA (n_kv_heads=1), chunks 5, 1, 3"),
        _case(_script, 16, 4, 4, [3, 3, 1], seed=3, note="MHA (n_kv_heads=n_heads), chunks 3, 3, 1"),
        _case(_script, 32, 8, 4, [1, 1, 1, 1, 1], B=1, seed=4, note="batch of one, every token decoded alone"),
        _case(_script, 40, 4, 2, [6, 4], seed=5, bias=True, note="bias=True, chunks 6, 4"),
        _case(_given_cache, 32, 8, 2, past=5, T=3, seed=6, note="a cache given from outside: 5 past, 3 new"),
        _case(_script, 16, 4, 2, [3, 2], B=1, seed=7, grad=True, note="gradients through the cache"),
        _case(_script, 30, 4, 2, [4, 2], seed=8,
              note="n_heads=4 does not divide d_model=30: head_dim = 30 // 4 = 7, q_proj 30 -> 28, o_proj 28 -> 30"),
    ]


# --------------------------------------------------------------------------- mistakes: one module, one flaw each

class _GQA(nn.Module):
    """A hand-written GQA (no SDPA: the grader forbids it); each mistake overrides one step."""

    def __init__(self, d_model, n_heads, n_kv_heads, bias=False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    def expand(self, t):                        # (B, n_kv, S, hd) -> (B, n_heads, S, hd)
        return t.repeat_interleave(self.n_heads // self.n_kv_heads, 1)

    def allowed(self, T, S, has_past):          # (T, S) bool
        return torch.arange(T)[:, None] + (S - T) >= torch.arange(S)

    def extend(self, past, new):                 # the cache after this call
        return new if past is None else torch.cat([past, new], 2)

    def returned(self, k, v, k_new, v_new):
        return k, v

    def scale(self):
        return 1 / math.sqrt(self.head_dim)

    def merge(self, y, B, T):                    # (B, H, T, hd) -> (B, T, H*hd)
        return y.transpose(1, 2).reshape(B, T, -1)

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k_new = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v_new = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        k = self.extend(None if past_kv is None else past_kv[0], k_new)
        v = self.extend(None if past_kv is None else past_kv[1], v_new)
        s = q @ self.expand(k).transpose(-2, -1) * self.scale()                # (B, H, T, S)
        allowed = self.allowed(T, k.shape[2], past_kv is not None)
        if allowed is not None:
            s = s.masked_fill(~allowed, -math.inf)
        y = torch.softmax(s, -1) @ self.expand(v)                             # (B, H, T, hd)
        return self.o_proj(self.merge(y, B, T)), self.returned(k, v, k_new, v_new)


class TiledHeads(_GQA):
    def expand(self, t):
        return t.repeat(1, self.n_heads // self.n_kv_heads, 1, 1)


class MaskWithoutOffset(_GQA):
    def allowed(self, T, S, has_past):
        return torch.ones(T, S, dtype=torch.bool).tril()


class NoMaskWithCache(_GQA):
    def allowed(self, T, S, has_past):
        return None if has_past else super().allowed(T, S, has_past)


class NoCausalMask(_GQA):
    def allowed(self, T, S, has_past):
        return None


class CacheOfRepeatedHeads(_GQA):
    """Stores the cache after expanding to n_heads (and accepts it back that way)."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.expand(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2))
        v = self.expand(self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2))
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        S = k.shape[2]
        s = (q @ k.transpose(-2, -1) * self.scale()).masked_fill(~self.allowed(T, S, past_kv is not None),
                                                                  -math.inf)
        y = torch.softmax(s, -1) @ v
        return self.o_proj(self.merge(y, B, T)), (k, v)


class OnlyNewKeys(_GQA):
    def returned(self, k, v, k_new, v_new):
        return k_new, v_new


class NewBeforeCache(_GQA):
    def extend(self, past, new):
        return new if past is None else torch.cat([new, past], 2)


class ScaleByModelWidth(_GQA):
    def scale(self):
        return 1 / math.sqrt(self.n_heads * self.head_dim)


class MergeWithoutTranspose(_GQA):
    def merge(self, y, B, T):
        return y.reshape(B, T, -1)


class CallsSDPA(GroupedQueryAttentionSpec):
    pass


register(ModuleExercise(
    name="GroupedQueryAttention",
    chapter="attention/grouped_query_attention",
    signature="GroupedQueryAttention(d_model, n_heads, n_kv_heads, bias=False); forward(x, past_kv=None)",
    oracle=GroupedQueryAttentionSpec,
    cases=_cases,
    randomize=scaled_state,
    forbidden=FORBIDDEN,
    hints=("each group of n_heads // n_kv_heads consecutive query heads shares one key/value head, and the new "
           "tokens attend to the whole cache plus themselves, causally   (eqs. gqa-group, gqa-mask)",
           "append the new keys and values to the cache along time before repeating the kv heads, and return the "
           "unrepeated cache; the causal mask is aligned to the bottom-right corner of the (T, S) scores",
           "k, v = cat([past_k, k_new], dim=2), ...; query head h reads kv head h // (n_heads // n_kv_heads) "
           "(repeat_interleave on dim 1); query t of the chunk sees keys j <= t + S - T   (eqs. gqa-group, "
           "gqa-mask)"),
    mistakes=[
        Mistake("heads tiled, not interleaved", TiledHeads,
                "your key/value heads are tiled in the wrong order: k.repeat(1, g, 1, 1) gives query head h the "
                "kv head h % n_kv_heads. Query head h must use kv head h // g: use repeat_interleave(g, dim=1)."),
        Mistake("mask without the cache offset", MaskWithoutOffset,
                "your causal mask ignores the cache: with S - T cached positions, query t of the chunk is "
                "position t + S - T and sees keys j <= t + S - T, not j <= t (a tril of shape (T, S) is wrong)."),
        Mistake("no mask with a cache", NoMaskWithCache,
                "you drop the causal mask whenever a cache is given: that is right for one new token, but a "
                "chunk of several new tokens must still be causal within itself."),
        Mistake("no causal mask", NoCausalMask,
                "there is no causal mask: token t sees the tokens after it. Mask keys j > t + (S - T) with -inf "
                "before the softmax."),
        Mistake("cache holds repeated heads", CacheOfRepeatedHeads,
                "your cache holds n_heads heads: store k and v with n_kv_heads heads (that is the memory GQA "
                "saves) and repeat them only for the attention product."),
        Mistake("returns only the new keys", OnlyNewKeys,
                "the cache you return holds only this call's keys and values: return the concatenation of the "
                "past cache and the new ones, (B, n_kv_heads, S, head_dim) with every position so far."),
        Mistake("new keys before the cache", NewBeforeCache,
                "you put the new keys before the cached ones: concatenate [past, new] along the sequence axis so "
                "that position j stays at index j."),
        Mistake("scaled by sqrt(d_model)", ScaleByModelWidth,
                "the scores are divided by sqrt(d_model); divide by sqrt(head_dim), the width of one head."),
        Mistake("heads merged without transpose", MergeWithoutTranspose,
                "the heads are merged without moving them next to the feature axis: (B, H, T, hd) must become "
                "(B, T, H, hd) with transpose(1, 2) before reshape(B, T, H * hd)."),
        Mistake("calls the built-in", CallsSDPA,
                "this exercise asks you to write the attention product yourself: F.scaled_dot_product_attention "
                "is off limits here; use matmul, masked_fill and softmax."),
    ],
))
