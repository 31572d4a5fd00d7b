"""Part 5, building an LLM: the Llama decoder block (chapter llm/transformer_block).

Each case is a script of forward calls on one block loaded with random non-default weights: the whole
sequence in one call, then the same sequence in chunks (or token by token), every chunk fed the cache that the
previous call returned. Every call's output and cache is compared with the oracle's, so RoPE at the wrong
positions after a cache, a cache that holds keys before RoPE and a norm in the wrong place all show.

The oracle, `TransformerBlockSpec`, is written from other parts than a reader's: RoPE as a complex
multiplication in float64, the kv head of each query head picked by indexing, RMSNorm by `nn.RMSNorm`.
tests/test_llm.py proves it equal to transformers' `LlamaDecoderLayer`.

No call is forbidden: the exercise is the assembly, and PyTorch's own layers (nn.TransformerDecoderLayer,
nn.MultiheadAttention) cannot hold the contract's parameter names.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ....i18n import msg
from ...core import Case, Mistake, Property
from ...inputs import call, f32, f64, randn, transposed
from ...kinds import ModuleExercise, Script, Step
from ...references import SwiGLUSpec
from ...registry import register

# Buffers a faithful block may keep besides its parameters (a RoPE table, a causal mask); not compared.
ROPE_BUFFERS = ("inv_freq", "freqs_cis", "cos_cached", "sin_cached", "cos_cache", "sin_cache", "cos", "sin",
                "mask", "causal_mask", "bias")
TOLERANCE = {f32: (1e-4, 1e-5)}       # float32: a block and an LM on top of it add up rounding of every layer


# --------------------------------------------------------------------------- the oracle

def rope_by_complex(x, positions, base, interleaved):
    """x (..., T, D) with pair i of row t multiplied by e^{i p_t theta_i}, theta_i = base^(-2i/D); float64 angles.

    interleaved: the pairs are (2i, 2i+1); otherwise (i, i + D/2), the rotate_half layout."""
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D, 2, dtype=f64) / D)                     # (D/2,)
    angle = positions.to(f64)[:, None] * theta                                  # (T, D/2)
    turn = torch.polar(torch.ones_like(angle), angle)                           # e^{i angle}
    xd = x.to(f64)
    if interleaved:
        z = torch.view_as_complex(xd.reshape(*x.shape[:-1], D // 2, 2).contiguous())
        return torch.view_as_real(z * turn).reshape(x.shape).to(x.dtype)
    z = torch.complex(xd[..., : D // 2], xd[..., D // 2:]) * turn
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


class RopeGQASpec(nn.Module):
    """Causal grouped-query attention with RoPE at absolute positions P .. P+T-1 (P the cached length) and a
    cache of keys after RoPE; query head h reads kv head h // g by indexing, the mask is aligned bottom-right."""

    def __init__(self, d_model, n_heads, n_kv_heads, rope_base=10000.0, interleaved=False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.rope_base, self.interleaved = rope_base, interleaved
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        P = 0 if past_kv is None else past_kv[0].shape[2]
        positions = torch.arange(P, P + T)
        q = rope_by_complex(q, positions, self.rope_base, self.interleaved)
        k = rope_by_complex(k, positions, self.rope_base, self.interleaved)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        kv_head = torch.arange(self.n_heads) // (self.n_heads // self.n_kv_heads)   # query head h reads h // g
        scores = q @ k[:, kv_head].transpose(-2, -1) / math.sqrt(self.head_dim)     # (B, H, T, S)
        future = torch.arange(P + T) > torch.arange(T)[:, None] + P                 # (T, S): key after the query
        weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
        y = weights @ v[:, kv_head]                                                  # (B, H, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), (k, v)



class TransformerBlockSpec(nn.Module):
    """Pre-norm: h = x + attn(attn_norm(x)), out = h + ffn(ffn_norm(h)); forward(x, past_kv) -> (out, (k, v))."""

    def __init__(self, d_model, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5, interleaved=False):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model, eps=eps)
        self.attn = RopeGQASpec(d_model, n_heads, n_kv_heads, rope_base, interleaved)
        self.ffn_norm = nn.RMSNorm(d_model, eps=eps)
        self.ffn = SwiGLUSpec(d_model, d_ff)

    def forward(self, x, past_kv=None):
        a, kv = self.attn(self.attn_norm(x), past_kv)
        h = x + a
        return h + self.ffn(self.ffn_norm(h)), kv


def trained_scale(state: dict, gen: torch.Generator) -> dict:
    """Random non-default weights at the scale of a trained model: matrices randn / sqrt(fan_in) (unit-variance
    weights would make every softmax one-hot), norm gains 0.5 + |randn| / 2 (positive, never all one). A matrix
    held under two names (tied embeddings) gets one value."""
    shared, out = {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        if key not in shared:
            r = torch.randn(t.shape, generator=gen, dtype=f64)
            r = r / math.sqrt(t.shape[1]) if t.dim() == 2 else 0.5 + 0.5 * r.abs()
            shared[key] = r.to(t.dtype)
        out[name] = shared[key]
    return out


# --------------------------------------------------------------------------- cases

def cache_of(prev):
    """The cache returned by the previous call, or whatever came back (so that a wrong return fails there)."""
    last = prev[-1] if prev else None
    return last[1] if isinstance(last, (tuple, list)) and len(last) == 2 else last


def _script(d_model, n_heads, n_kv_heads, d_ff, chunks, *, B=2, seed=0, one_call=True, grad=False, dtype=f32,
            noncontig=False, scale=1.0, **kwargs):
    """One call over the whole sequence (optional), then the same sequence in `chunks`, each fed the cache."""
    T = sum(chunks)
    if noncontig:
        x = transposed(B, T, d_model, seed=seed, dtype=dtype, scale=scale)       # (B, T, d) seen through (B, d, T)
    else:
        x = randn(B, T, d_model, seed=seed, dtype=dtype, scale=scale)
    steps = [Step(call(x), grad=grad)] if one_call else []
    start = 0
    for i, n in enumerate(chunks):
        chunk = x[:, start:start + n]
        if i == 0:
            steps.append(Step(call(chunk)))
        else:
            steps.append(Step(lambda prev, c=chunk: call(c, past_kv=cache_of(prev)), grad=grad))
        start += n
    return Script(init=((d_model, n_heads, n_kv_heads, d_ff), kwargs), steps=steps,
                  dtype=None if dtype == f32 else dtype)


def _given_cache(d_model, n_heads, n_kv_heads, d_ff, past, T, *, B=2, seed=0, **kwargs):
    """A cache made outside the block (as if from a longer prompt), then a chunk of T new tokens."""
    hd = d_model // n_heads
    k0, v0 = randn(B, n_kv_heads, past, hd, seed=seed + 1), randn(B, n_kv_heads, past, hd, seed=seed + 2)
    x = randn(B, T, d_model, seed=seed)
    return Script(init=((d_model, n_heads, n_kv_heads, d_ff), kwargs), steps=[Step(call(x, past_kv=(k0, v0)))])


def _cases():
    return [
        Case(partial(_script, 32, 4, 2, 48, [6]), "GQA (4 query heads, 2 kv heads), one call"),
        Case(partial(_script, 32, 4, 2, 48, [3, 2, 2], seed=1),
             "one call, then chunks of 3, 2, 2 with the cache: RoPE at positions 3, 4 and 5, 6"),
        Case(partial(_script, 24, 6, 3, 40, [4, 1, 1, 1], seed=2), "GQA 6/3: prefill 4, then token-by-token decoding"),
        Case(partial(_given_cache, 32, 4, 2, 48, past=6, T=3, seed=3),
             "a cache of 6 positions given from outside, 3 new tokens: RoPE at positions 6, 7, 8"),
        Case(partial(_script, 32, 4, 2, 48, [4, 3], seed=4, interleaved=True),
             "interleaved=True: RoPE pairs (2i, 2i+1), chunks 4, 3"),
        Case(partial(_script, 32, 8, 1, 40, [5, 1, 2], seed=5), "MQA (n_kv_heads=1), chunks 5, 1, 2"),
        Case(partial(_script, 16, 2, 2, 24, [2, 3], seed=6), "MHA (n_kv_heads=n_heads), chunks 2, 3"),
        Case(partial(_script, 32, 4, 2, 48, [3, 4], seed=7, rope_base=100.0),
             "rope_base=100: the angles turn faster than with 10000"),
        Case(partial(_script, 16, 4, 2, 24, [3, 2], seed=8, scale=1e-2, eps=1e-2),
             "eps=1e-2 with activations of size 0.01: the eps of both norms matters"),
        Case(partial(_script, 24, 4, 2, 32, [3, 3], seed=9, dtype=f64, interleaved=True), "float64, interleaved"),
        Case(partial(_script, 32, 4, 2, 48, [5], B=1, seed=10, noncontig=True), "batch of one, non-contiguous x"),
        Case(partial(_script, 16, 4, 2, 24, [3, 2], B=1, seed=11, grad=True, dtype=f64),
             "gradients through the block and the cache (float64)"),
    ]


# --------------------------------------------------------------------------- properties

def _causal(call):
    block = call(16, 4, 2, 24)
    x = randn(1, 6, 16, seed=40)
    later = x.clone()
    later[:, 4:] = randn(1, 2, 16, seed=41)
    with torch.no_grad():
        a, _ = block(x)
        b, _ = block(later)
    change = float((a[:, :4] - b[:, :4]).abs().max())
    if change > 1e-5:
        return msg("changing tokens 4 and 5 changed the outputs of tokens 0-3 by {change:.3g}", change=change)
    return None


# --------------------------------------------------------------------------- mistakes: one block, one flaw each

def _rotate(x, positions, base, interleaved):
    """Real-valued RoPE (the two layouts), for the mistakes."""
    D = x.shape[-1]
    angle = positions.to(f64)[:, None] * base ** (-torch.arange(0, D, 2, dtype=f64) / D)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
    a, b = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


class _Projections(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads):
        super().__init__()
        hd = d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(n_heads * hd, d_model, bias=False)


class _Block(nn.Module):
    """A hand-written block; each mistake overrides one step."""

    def __init__(self, d_model, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5, interleaved=False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.rope_base, self.interleaved = rope_base, interleaved
        self.attn_norm = self.make_norm(d_model, eps)
        self.attn = _Projections(d_model, n_heads, n_kv_heads)
        self.ffn_norm = self.make_norm(d_model, eps)
        self.ffn = SwiGLUSpec(d_model, d_ff)

    def make_norm(self, d_model, eps):
        return nn.RMSNorm(d_model, eps=eps)

    def rope(self, t, positions):
        return _rotate(t, positions, self.rope_base, self.interleaved)

    def positions(self, P, T):
        return torch.arange(P, P + T)

    def rotated(self, q, k, v, positions):
        return self.rope(q, positions), self.rope(k, positions), v

    def heads(self, x):
        B, T, _ = x.shape
        q = self.attn.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.attn.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.attn.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def attend(self, q, k, v):
        """q (B, H, T, hd) against k, v (B, KV, S, hd); the new queries are the last T positions."""
        B, H, T, hd = q.shape
        S, g = k.shape[2], H // k.shape[1]
        s = q @ k.repeat_interleave(g, 1).transpose(-2, -1) / math.sqrt(hd)
        s = s.masked_fill(torch.arange(S) > torch.arange(T)[:, None] + (S - T), -math.inf)
        y = torch.softmax(s, -1) @ v.repeat_interleave(g, 1)
        return self.attn.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def attention(self, x, past_kv=None):
        q, k, v = self.heads(x)
        P = 0 if past_kv is None else past_kv[0].shape[2]
        q, k, v = self.rotated(q, k, v, self.positions(P, x.shape[1]))
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        return self.attend(q, k, v), (k, v)

    def forward(self, x, past_kv=None):
        a, kv = self.attention(self.attn_norm(x), past_kv)
        h = x + a
        return h + self.ffn(self.ffn_norm(h)), kv


class PostNorm(_Block):
    def forward(self, x, past_kv=None):
        a, kv = self.attention(x, past_kv)
        h = self.attn_norm(x + a)
        return self.ffn_norm(h + self.ffn(h)), kv


class NoAttentionResidual(_Block):
    def forward(self, x, past_kv=None):
        h, kv = self.attention(self.attn_norm(x), past_kv)
        return h + self.ffn(self.ffn_norm(h)), kv


class NoFFNResidual(_Block):
    def forward(self, x, past_kv=None):
        a, kv = self.attention(self.attn_norm(x), past_kv)
        h = x + a
        return self.ffn(self.ffn_norm(h)), kv


class ParallelBranches(_Block):
    def forward(self, x, past_kv=None):
        a, kv = self.attention(self.attn_norm(x), past_kv)
        return x + a + self.ffn(self.ffn_norm(x)), kv


class PositionsRestart(_Block):
    def positions(self, P, T):
        return torch.arange(T)


class CacheBeforeRope(_Block):
    """Caches the keys as projected and rotates the whole cache at every call."""

    def attention(self, x, past_kv=None):
        q, k, v = self.heads(x)
        P = 0 if past_kv is None else past_kv[0].shape[2]
        T = x.shape[1]
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        q = self.rope(q, torch.arange(P, P + T))
        return self.attend(q, self.rope(k, torch.arange(P + T)), v), (k, v)


class RopeOnValues(_Block):
    def rotated(self, q, k, v, positions):
        return self.rope(q, positions), self.rope(k, positions), self.rope(v, positions)


class LayoutIgnored(_Block):
    def rope(self, t, positions):
        return _rotate(t, positions, self.rope_base, False)


class BaseIgnored(_Block):
    def rope(self, t, positions):
        return _rotate(t, positions, 10000.0, self.interleaved)


class NormWithoutEps(_Block):
    def make_norm(self, d_model, eps):
        return nn.RMSNorm(d_model)


register(ModuleExercise(
    name="TransformerBlock",
    chapter="llm/transformer_block",
    signature=("TransformerBlock(d_model, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5, interleaved=False); "
               "forward(x, past_kv=None)"),
    oracle=TransformerBlockSpec,
    cases=_cases,
    randomize=trained_scale,
    extra_buffers=ROPE_BUFFERS,
    tolerance=TOLERANCE,
    properties=[Property("no token sees the future: changing tokens 4 and 5 leaves the outputs of tokens 0-3 alone",
                         _causal)],
    hints=("two residual branches, each reading a normalised copy of the stream: attention, then the SwiGLU FFN; "
           "RoPE turns q and k at their absolute positions, which start at the cached length   "
           "(eqs. blk-prenorm, blk-rope-pos)",
           "attention: project, view as heads, RoPE on q and k at positions P .. P + T - 1 with "
           "P = past_kv[0].shape[2], append to the cache (after RoPE), repeat_interleave the kv heads, mask keys "
           "j > t + P, softmax, o_proj",
           "h = x + attn(attn_norm(x)); out = h + ffn(ffn_norm(h)); positions = torch.arange(P, P + T); return out "
           "and (k, v) with k rotated   (eqs. blk-prenorm, blk-rope-pos, blk-attn)"),
    mistakes=[
        Mistake("post-norm", PostNorm,
                "your block is post-norm (the 2017 Transformer): it normalises the sum, x = norm(x + sublayer(x)). "
                "Llama's block is pre-norm: each branch reads a normalised copy and adds to the untouched stream, "
                "h = x + attn(attn_norm(x)), out = h + ffn(ffn_norm(h))."),
        Mistake("no residual around attention", NoAttentionResidual,
                "the attention branch has no residual: h = attn(attn_norm(x)) drops x. Add the branch to the stream: "
                "h = x + attn(attn_norm(x))."),
        Mistake("no residual around the FFN", NoFFNResidual,
                "the FFN branch has no residual: the block returns ffn(ffn_norm(h)). Return h + ffn(ffn_norm(h))."),
        Mistake("parallel branches", ParallelBranches,
                "your FFN reads x, the block's input, so attention and FFN run side by side (GPT-J's parallel block). "
                "In Llama the FFN reads h = x + attn(attn_norm(x)): out = h + ffn(ffn_norm(h))."),
        Mistake("RoPE positions restart after the cache", PositionsRestart,
                "after a cache your RoPE starts again at position 0: the new tokens sit at absolute positions "
                "P .. P + T - 1, with P = past_kv[0].shape[2] the cached length."),
        Mistake("cache holds keys before RoPE", CacheBeforeRope,
                "your cache holds the keys as projected, before RoPE, and you rotate the whole cache at every call. "
                "Rotate the new keys once, at their own positions, and cache them rotated: a cached key is never "
                "turned again."),
        Mistake("RoPE on the values", RopeOnValues,
                "you rotate the values too: RoPE turns only q and k, so that the scores see relative positions; v is "
                "what is read and stays as projected."),
        Mistake("interleaved ignored", LayoutIgnored,
                "interleaved=True is ignored: you always rotate the pairs (i, i + D/2). With interleaved=True the "
                "pairs are neighbours, (2i, 2i+1), as in Meta's Llama code."),
        Mistake("rope_base ignored", BaseIgnored,
                "your RoPE uses base 10000 whatever rope_base says: pass rope_base on (theta_i = rope_base^(-2i/D))."),
        Mistake("RMSNorm built without eps", NormWithoutEps,
                "your norms ignore eps: nn.RMSNorm(d_model) without eps uses the machine epsilon. Build both norms "
                "with nn.RMSNorm(d_model, eps=eps)."),
    ],
))
