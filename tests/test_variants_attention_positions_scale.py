"""Red-team tests of the graders of parts 3, 4 and 6 (attention, positions, scale math).

For every exercise: correct implementations written the way real candidates write them, in styles that
differ from the chapter's solution, must pass; plausible wrong implementations that are NOT one of the
registered mistakes must be rejected, and any diagnosis attached to them must describe what the code
actually does wrong (most of them should get no diagnosis at all).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.grader import run

NEG_INF = float("-inf")


# =========================================================================== scaled_dot_product_attention

def sdpa_float_bias(q, k, v, attn_mask=None, is_causal=False):
    """Every mask turned into one additive float bias (-inf / 0), scores with einsum."""
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = torch.einsum("...le,...se->...ls", q, k) / math.sqrt(E)
    bias = torch.zeros(L, S, dtype=q.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.triu(torch.ones(L, S, dtype=torch.bool), diagonal=1), NEG_INF)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias + torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask.logical_not(), NEG_INF)
        else:
            bias = bias + attn_mask
    return torch.einsum("...ls,...sv->...lv", F.softmax(scores + bias, dim=-1), v)


def sdpa_baddbmm(q, k, v, attn_mask=None, is_causal=False):
    """Batch dims flattened, scale and bias fused into torch.baddbmm."""
    *batch, L, E = q.shape
    S = k.shape[-2]
    bias = torch.zeros(L, S, dtype=q.dtype)
    if is_causal:
        bias = torch.where(torch.ones(L, S, dtype=torch.bool).tril(), bias, torch.tensor(NEG_INF, dtype=q.dtype))
    if attn_mask is not None:
        m = attn_mask if attn_mask.dtype != torch.bool else torch.where(
            attn_mask, torch.tensor(0.0, dtype=q.dtype), torch.tensor(NEG_INF, dtype=q.dtype))
        bias = bias + m
    bias = bias.expand(*batch, L, S).reshape(-1, L, S)
    q3, k3, v3 = q.reshape(-1, L, E), k.reshape(-1, S, E), v.reshape(-1, S, v.shape[-1])
    scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=1.0 / math.sqrt(E))
    out = torch.bmm(scores.softmax(-1), v3)
    return out.reshape(*batch, L, v.shape[-1])


def sdpa_where_manual_softmax(q, k, v, attn_mask=None, is_causal=False):
    """q scaled first (not in place), torch.where masks, softmax written by hand."""
    q = q * q.shape[-1] ** -0.5
    scores = torch.matmul(q, k.transpose(-1, -2))
    L, S = scores.shape[-2:]
    if is_causal:
        keep = torch.arange(S)[None, :] <= torch.arange(L)[:, None]
        scores = torch.where(keep, scores, NEG_INF)
    if attn_mask is not None:
        scores = torch.where(attn_mask, scores, NEG_INF) if attn_mask.dtype == torch.bool else scores + attn_mask
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return (e / e.sum(dim=-1, keepdim=True)) @ v


def sdpa_big_negative(q, k, v, attn_mask=None, is_causal=False):
    """The common 'masked_fill(mask == 0, -1e9)' style (finite fill value)."""
    d_k = q.size(-1)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d_k)
    if is_causal:
        causal = torch.tril(torch.ones(scores.size(-2), scores.size(-1)))
        scores = scores.masked_fill(causal == 0, -1e9)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask == 0, -1e9)
        else:
            scores += attn_mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def sdpa_mask_after_softmax(q, k, v, attn_mask=None, is_causal=False):
    """WRONG: zeroes the masked weights after the softmax, without renormalising."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    L, S = scores.shape[-2:]
    w = torch.softmax(scores, dim=-1)
    if is_causal:
        w = w * torch.ones(L, S).tril()
    if attn_mask is not None:
        w = w * attn_mask if attn_mask.dtype == torch.bool else torch.softmax(scores + attn_mask, -1)
    return w @ v


def sdpa_scale_after_softmax(q, k, v, attn_mask=None, is_causal=False):
    """WRONG: divides the attention weights (not the scores) by sqrt(E)."""
    scores = q @ k.transpose(-2, -1)
    L, S = scores.shape[-2:]
    if is_causal:
        scores = scores.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), NEG_INF)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, NEG_INF) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.softmax(scores, -1) / math.sqrt(q.shape[-1]) @ v


def sdpa_causal_strict(q, k, v, attn_mask=None, is_causal=False):
    """WRONG: the causal mask also hides the diagonal (query i sees only j < i)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    L, S = scores.shape[-2:]
    if is_causal:
        scores = scores.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(-1), NEG_INF)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, NEG_INF) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.softmax(scores, -1) @ v


# =========================================================================== MultiHeadAttention

class _MHAParams(nn.Module):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)


def _cat_bias(*linears):
    return None if linears[0].bias is None else torch.cat([lin.bias for lin in linears])


class MHAFusedQKV(_MHAParams):
    """One fused projection built from the three Linear weights; reshape + permute; SDPA (allowed here)."""

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        B, L, D = x.shape
        H, d = self.n_heads, self.d_head
        if x_kv is None:
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            q, k, v = F.linear(x, w, _cat_bias(self.q_proj, self.k_proj, self.v_proj)).split(D, dim=-1)
        else:
            q = self.q_proj(x)
            w = torch.cat([self.k_proj.weight, self.v_proj.weight])
            k, v = F.linear(x_kv, w, _cat_bias(self.k_proj, self.v_proj)).chunk(2, dim=-1)
        q, k, v = (t.reshape(B, t.shape[1], H, d).permute(0, 2, 1, 3) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.o_proj(y.permute(0, 2, 1, 3).reshape(B, L, D))


class MHAEinsum(_MHAParams):
    """Heads handled by einsum on (B, T, H, d) tensors: no transpose at all."""

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        src = x if x_kv is None else x_kv
        B, L, D = x.shape
        S = src.shape[1]
        q = self.q_proj(x).unflatten(-1, (self.n_heads, self.d_head))      # (B, L, H, d)
        k = self.k_proj(src).unflatten(-1, (self.n_heads, self.d_head))    # (B, S, H, d)
        v = self.v_proj(src).unflatten(-1, (self.n_heads, self.d_head))
        scores = torch.einsum("blhd,bshd->bhls", q, k) * self.d_head ** -0.5
        if is_causal:
            scores = scores.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), NEG_INF)
        if attn_mask is not None:
            scores = (torch.where(attn_mask, scores, NEG_INF) if attn_mask.dtype == torch.bool
                      else scores + attn_mask)
        y = torch.einsum("bhls,bshd->blhd", scores.softmax(-1), v)
        return self.o_proj(y.flatten(2))


class MHAHeadLoop(_MHAParams):
    """One head at a time on column slices of the projections, heads concatenated at the end."""

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        src = x if x_kv is None else x_kv
        Q, K, V = self.q_proj(x), self.k_proj(src), self.v_proj(src)
        L, S = Q.shape[1], K.shape[1]
        outs = []
        for h in range(self.n_heads):
            cols = slice(h * self.d_head, (h + 1) * self.d_head)
            q, k, v = Q[..., cols].unsqueeze(1), K[..., cols].unsqueeze(1), V[..., cols].unsqueeze(1)
            s = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)        # (B, 1, L, S)
            if is_causal:
                s = s + torch.full((L, S), NEG_INF).triu(1)
            if attn_mask is not None:
                s = s.masked_fill(~attn_mask, NEG_INF) if attn_mask.dtype == torch.bool else s + attn_mask
            outs.append((torch.softmax(s, -1) @ v).squeeze(1))
        return self.o_proj(torch.cat(outs, dim=-1))


class MHASoftmaxOverQueries(_MHAParams):
    """WRONG: softmax over the query axis."""

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        src = x if x_kv is None else x_kv
        B, L, D = x.shape
        q, k, v = (t.view(B, t.shape[1], self.n_heads, self.d_head).transpose(1, 2)
                   for t in (self.q_proj(x), self.k_proj(src), self.v_proj(src)))
        s = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if is_causal:
            s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), NEG_INF)
        if attn_mask is not None:
            s = s.masked_fill(~attn_mask, NEG_INF) if attn_mask.dtype == torch.bool else s + attn_mask
        return self.o_proj((s.softmax(-2) @ v).transpose(1, 2).reshape(B, L, D))


class MHAIgnoresCausal(_MHAParams):
    """WRONG: never applies is_causal (masks are applied)."""

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        src = x if x_kv is None else x_kv
        B, L, D = x.shape
        q, k, v = (t.view(B, t.shape[1], self.n_heads, self.d_head).transpose(1, 2)
                   for t in (self.q_proj(x), self.k_proj(src), self.v_proj(src)))
        s = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if attn_mask is not None:
            s = s.masked_fill(~attn_mask, NEG_INF) if attn_mask.dtype == torch.bool else s + attn_mask
        return self.o_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(B, L, D))


# =========================================================================== GroupedQueryAttention

class _GQAParams(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, bias=False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    def project(self, x):
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.n_heads, self.head_dim).permute(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, T, self.n_kv_heads, self.head_dim).permute(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, T, self.n_kv_heads, self.head_dim).permute(0, 2, 1, 3)
        return q, k, v


class GQAExpandReshape(_GQAParams):
    """expand + reshape instead of repeat_interleave; the cache kept and returned as a list."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q, k, v = self.project(x)
        cache = [k, v] if past_kv is None else [torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)]
        k, v = cache
        S, g = k.shape[2], self.n_heads // self.n_kv_heads
        k_rep = k[:, :, None].expand(B, self.n_kv_heads, g, S, self.head_dim).reshape(B, self.n_heads, S, -1)
        v_rep = v[:, :, None].expand(B, self.n_kv_heads, g, S, self.head_dim).reshape(B, self.n_heads, S, -1)
        s = q @ k_rep.transpose(2, 3) / math.sqrt(self.head_dim)
        keep = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
        s = s.masked_fill(~keep, NEG_INF)
        y = (F.softmax(s, dim=-1) @ v_rep).permute(0, 2, 1, 3).contiguous().view(B, T, -1)
        return self.o_proj(y), cache


class GQAGroupedEinsum(_GQAParams):
    """No repetition at all: queries viewed as (B, KV, g, T, hd) and contracted against (B, KV, S, hd)."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q, k, v = self.project(x)
        if past_kv is not None:
            pk, pv = past_kv
            k, v = torch.cat((pk, k), dim=-2), torch.cat((pv, v), dim=-2)
        S, g = k.shape[-2], self.n_heads // self.n_kv_heads
        qg = q.reshape(B, self.n_kv_heads, g, T, self.head_dim)
        s = torch.einsum("bkgtd,bksd->bkgts", qg, k) / math.sqrt(self.head_dim)
        pos_q = torch.arange(S - T, S)
        s = s.masked_fill(torch.arange(S)[None, :] > pos_q[:, None], NEG_INF)
        y = torch.einsum("bkgts,bksd->bkgtd", s.softmax(-1), v).reshape(B, self.n_heads, T, self.head_dim)
        return self.o_proj(y.transpose(1, 2).flatten(2)), (k, v)


class GQARepeatIndex(_GQAParams):
    """Query head h reads kv head h // g through index_select; triu mask with an offset."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q, k, v = self.project(x)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        S = k.shape[2]
        kv_of_head = torch.arange(self.n_heads) // (self.n_heads // self.n_kv_heads)
        kh, vh = k.index_select(1, kv_of_head), v.index_select(1, kv_of_head)
        s = torch.matmul(q, kh.transpose(-1, -2)) * self.head_dim ** -0.5
        s = s + torch.full((T, S), NEG_INF).triu(S - T + 1)
        y = torch.matmul(torch.softmax(s, -1), vh)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)), (k, v)


class GQANoScale(_GQAParams):
    """WRONG: scores are not divided by sqrt(head_dim)."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q, k, v = self.project(x)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        S, g = k.shape[2], self.n_heads // self.n_kv_heads
        s = q @ k.repeat_interleave(g, 1).transpose(-2, -1)
        s = s.masked_fill(torch.ones(T, S, dtype=torch.bool).tril(S - T).logical_not(), NEG_INF)
        y = s.softmax(-1) @ v.repeat_interleave(g, 1)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), (k, v)


class GQAMaskOffsetOffByOne(_GQAParams):
    """WRONG: the chunk's queries are placed one position too early (offset S - T - 1)."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q, k, v = self.project(x)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        S, g = k.shape[2], self.n_heads // self.n_kv_heads
        s = q @ k.repeat_interleave(g, 1).transpose(-2, -1) / math.sqrt(self.head_dim)
        off = S - T - 1 if past_kv is not None else 0
        s = s.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(off), NEG_INF)
        y = s.softmax(-1) @ v.repeat_interleave(g, 1)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), (k, v)


# =========================================================================== flash_attention

def flash_keys_only(q, k, v, block_size=64, is_causal=False):
    """WRONG (memory): all queries at once; only the keys are visited in blocks."""
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    m = torch.full(q.shape[:-1], NEG_INF, dtype=q.dtype)                  # (..., L)
    l = torch.zeros(q.shape[:-1], dtype=q.dtype)
    o = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    rows = torch.arange(L)[:, None]
    for start in range(0, S, block_size):
        end = min(start + block_size, S)
        s = (q @ k[..., start:end, :].transpose(-1, -2)) * scale          # (..., L, Bc)
        if is_causal:
            s = torch.where(torch.arange(start, end)[None, :] <= rows, s, NEG_INF)
        m_new = torch.maximum(m, s.max(dim=-1).values)
        # rows that have seen no key yet keep m = -inf: guard the rescaling factor against -inf - -inf
        corr = torch.where(m == NEG_INF, torch.zeros_like(m), torch.exp(m - m_new))
        p = torch.exp(s - m_new.unsqueeze(-1))
        p = torch.nan_to_num(p, nan=0.0)
        l = l * corr + p.sum(-1)
        o = o * corr.unsqueeze(-1) + p @ v[..., start:end, :]
        m = m_new
    return o / l.unsqueeze(-1)


def flash_fa1_normalised(q, k, v, block_size=64, is_causal=False):
    """FlashAttention-1 style: the output kept normalised and re-weighted by l_old * e^(m - m') / l_new."""
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for i in range(0, L, block_size):
        qi = q[..., i:i + block_size, :]
        n = qi.shape[-2]
        oi = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
        li = torch.zeros(*qi.shape[:-1], 1, dtype=q.dtype)
        mi = torch.full((*qi.shape[:-1], 1), NEG_INF, dtype=q.dtype)
        last_key = S if not is_causal else min(S, i + n)
        for j in range(0, last_key, block_size):
            kj, vj = k[..., j:j + block_size, :], v[..., j:j + block_size, :]
            sij = qi @ kj.transpose(-2, -1) / math.sqrt(E)
            if is_causal:
                future = torch.arange(j, j + kj.shape[-2])[None, :] > torch.arange(i, i + n)[:, None]
                sij = sij.masked_fill(future, NEG_INF)
            mij = sij.amax(-1, keepdim=True)
            pij = torch.exp(sij - mij)
            lij = pij.sum(-1, keepdim=True)
            m_new = torch.maximum(mi, mij)
            l_new = torch.exp(mi - m_new) * li + torch.exp(mij - m_new) * lij
            oi = (li * torch.exp(mi - m_new) * oi + torch.exp(mij - m_new) * (pij @ vj)) / l_new
            mi, li = m_new, l_new
        out[..., i:i + n, :] = oi
    return out


def flash_list_of_blocks(q, k, v, block_size=64, is_causal=False):
    """Query blocks and key blocks via .split(); scale on the scores; causal blocks skipped."""
    E = q.shape[-1]
    outs, i0 = [], 0
    for qb in q.split(block_size, dim=-2):
        n = qb.shape[-2]
        m = qb.new_full((*qb.shape[:-1], 1), NEG_INF)
        l = qb.new_zeros((*qb.shape[:-1], 1))
        acc = qb.new_zeros((*qb.shape[:-1], v.shape[-1]))
        j0 = 0
        for kb, vb in zip(k.split(block_size, dim=-2), v.split(block_size, dim=-2)):
            if is_causal and j0 >= i0 + n:
                break
            s = torch.matmul(qb, kb.transpose(-2, -1)) * (1.0 / math.sqrt(E))
            if is_causal:
                s = s.masked_fill(torch.arange(j0, j0 + kb.shape[-2]) > torch.arange(i0, i0 + n)[:, None], NEG_INF)
            m_new = torch.max(m, s.max(-1, keepdim=True)[0])
            scale_old = (m - m_new).exp()
            p = (s - m_new).exp()
            l = scale_old * l + p.sum(-1, keepdim=True)
            acc = scale_old * acc + p @ vb
            m = m_new
            j0 += kb.shape[-2]
        outs.append(acc / l)
        i0 += n
    return torch.cat(outs, dim=-2)


def flash_inverted_correction(q, k, v, block_size=64, is_causal=False):
    """WRONG: the rescaling factor is exp(m' - m) (inverted) instead of exp(m - m')."""
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    m = torch.full((*q.shape[:-1], 1), -1e30, dtype=q.dtype)
    l = torch.zeros_like(m)
    o = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j in range(0, S, block_size):
        s = q @ k[..., j:j + block_size, :].transpose(-1, -2) * scale
        if is_causal:
            s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > torch.arange(L)[:, None], NEG_INF)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        corr = torch.exp(torch.clamp(m_new - m, max=50.0))
        p = torch.exp(s - m_new)
        l = l * corr + p.sum(-1, keepdim=True)
        o = o * corr + p @ v[..., j:j + block_size, :]
        m = m_new
    return o / l


def flash_no_scale(q, k, v, block_size=64, is_causal=False):
    """WRONG: forgets the 1/sqrt(E) scaling (the tiling itself is right)."""
    return flash_list_of_blocks(q * math.sqrt(q.shape[-1]), k, v, block_size, is_causal)


# =========================================================================== sinusoidal_positional_encoding

def sinusoid_exp_log(max_len, d_model, base=10000.0):
    """The Annotated Transformer: div_term = exp(2i * -log(base) / d), all float32."""
    pe = torch.zeros(max_len, d_model)
    position = torch.arange(0, max_len).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(base) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def sinusoid_outer_stack(max_len, d_model, base=10000.0):
    """torch.outer of positions and 1 / base**(2i/d) in float64, sin/cos stacked and interleaved."""
    inv = 1.0 / torch.pow(torch.tensor(base, dtype=torch.float64),
                          torch.arange(d_model // 2, dtype=torch.float64) * 2 / d_model)
    angle = torch.outer(torch.arange(max_len, dtype=torch.float64), inv)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(max_len, d_model).to(torch.float32)


def sinusoid_python_loops(max_len, d_model, base=10000.0):
    """Plain Python with math.sin / math.cos, then torch.tensor (float32 by default)."""
    rows = []
    for pos in range(max_len):
        row = []
        for i in range(d_model // 2):
            w = 1 / (base ** (2 * i / d_model))
            row += [math.sin(pos * w), math.cos(pos * w)]
        rows.append(row)
    return torch.tensor(rows)


def sinusoid_log10(max_len, d_model, base=10000.0):
    """WRONG: log10 where the natural log belongs (frequencies base**(-2i/d) become e**(-8i/d))."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log10(base) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
    return pe


def sinusoid_transposed(max_len, d_model, base=10000.0):
    """WRONG: returns the (d_model, max_len) table."""
    return sinusoid_exp_log(max_len, d_model, base).T.contiguous()


# =========================================================================== LearnedPositionalEmbedding

class LearnedNarrow(nn.Module):
    """torch.empty + nn.init.normal_, lookup by narrow()."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        return x + self.weight.narrow(0, 0, x.size(1)).unsqueeze(0)


class LearnedFEmbedding(nn.Module):
    """F.embedding on arange(T), as nn.Embedding would do."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.zeros(max_len, d_model))

    def forward(self, x):
        B, T, _ = x.shape
        assert T <= self.max_len
        pos = torch.arange(T, device=x.device).unsqueeze(0).expand(B, T)
        return x + F.embedding(pos, self.weight)


class LearnedTransposedTable(nn.Module):
    """WRONG: the table is stored as (d_model, max_len)."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_model, max_len) * 0.02)

    def forward(self, x):
        return x + self.weight[:, : x.shape[1]].T


class LearnedMultiplied(nn.Module):
    """WRONG: scales x by the table instead of adding it."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, x):
        return x * self.weight[: x.shape[1]]


# =========================================================================== relative_position_index

def relative_python_lists(q_len, k_len, max_distance):
    return torch.tensor([[max(-max_distance, min(max_distance, j - i)) + max_distance for j in range(k_len)]
                         for i in range(q_len)], dtype=torch.long)


def relative_shift_then_clamp(q_len, k_len, max_distance):
    """Shift first, then clamp to [0, 2 * max_distance]: the same thing."""
    rel = torch.arange(k_len).unsqueeze(0) - torch.arange(q_len).unsqueeze(1) + max_distance
    return rel.clamp(0, 2 * max_distance)


def relative_meshgrid(q_len, k_len, max_distance):
    ii, jj = torch.meshgrid(torch.arange(q_len), torch.arange(k_len), indexing="ij")
    d = jj - ii
    return torch.maximum(torch.minimum(d, torch.tensor(max_distance)), torch.tensor(-max_distance)) + max_distance


def relative_int32(q_len, k_len, max_distance):
    """WRONG: int32 indices."""
    i = torch.arange(q_len, dtype=torch.int32)[:, None]
    j = torch.arange(k_len, dtype=torch.int32)[None, :]
    return (j - i).clamp(-max_distance, max_distance) + max_distance


def relative_shift_off_by_one(q_len, k_len, max_distance):
    """WRONG: shifted by max_distance + 1."""
    i, j = torch.arange(q_len)[:, None], torch.arange(k_len)[None, :]
    return (j - i).clamp(-max_distance, max_distance) + max_distance + 1


# =========================================================================== alibi_bias

def alibi_bloom(n_heads, seq_len):
    """Hugging Face BLOOM's closed form (build_alibi_tensor), in float32 tensors."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != n_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        n_extra = min(closest, n_heads - closest)
        extra = torch.pow(extra_base, torch.arange(1, 1 + 2 * n_extra, 2, dtype=torch.int32))
        slopes = torch.cat([slopes, extra])
    pos = torch.arange(seq_len)
    rel = (pos[None, :] - pos[:, None]).to(torch.float32)
    return slopes[:, None, None] * rel


def alibi_closed_form_float64(n_heads, seq_len):
    """Slopes 2**(-8k/c) for the power of two c <= n, then 2**(-4(2k-1)/c) for the extras; float64, then float32."""
    c = 1 << (n_heads.bit_length() - 1)
    slopes = [2.0 ** (-8.0 * k / c) for k in range(1, c + 1)]
    slopes += [2.0 ** (-4.0 * (2 * k - 1) / c) for k in range(1, n_heads - c + 1)]
    m = torch.tensor(slopes, dtype=torch.float64).view(-1, 1, 1)
    d = torch.arange(seq_len, dtype=torch.float64)
    return (m * (d.view(1, -1) - d.view(-1, 1))).float()


def alibi_recursive_paper(n_heads, seq_len):
    """The paper's get_slopes, written recursively with a bit trick for 'power of two'."""
    def get_slopes(n):
        if n & (n - 1) == 0:
            start = 2 ** (-2 ** -(math.log2(n) - 3))
            return [start * start ** i for i in range(n)]
        closest = 2 ** int(math.log2(n))
        return get_slopes(closest) + get_slopes(2 * closest)[::2][: n - closest]
    m = torch.tensor(get_slopes(n_heads)).unsqueeze(-1).unsqueeze(-1)
    ctx = torch.arange(seq_len)
    return m * (ctx.view(1, 1, -1) - ctx.view(1, -1, 1)).float()


def alibi_past_only(n_heads, seq_len):
    """WRONG: future keys get 0 instead of m * (j - i)."""
    return alibi_recursive_paper(n_heads, seq_len).clamp(max=0.0)


def alibi_extra_repeat_base(n_heads, seq_len):
    """WRONG: the extra heads reuse the first slopes of the base power of two."""
    def slopes(n):
        if n & (n - 1) == 0:
            return [2 ** (-8 * (h + 1) / n) for h in range(n)]
        c = 2 ** int(math.log2(n))
        return slopes(c) + slopes(c)[: n - c]
    m = torch.tensor(slopes(n_heads))[:, None, None]
    pos = torch.arange(seq_len, dtype=torch.float32)
    return m * (pos[None, :] - pos[:, None])


# =========================================================================== apply_rope

def rope_complex(x, positions=None, base=10000.0, interleaved=False):
    """Complex multiplication (Meta's Llama code for interleaved, torch.complex halves otherwise), computed in
    float32 at least (x.float() ... .type_as(x), as Meta's code does)."""
    T, D = x.shape[-2:]
    w = torch.promote_types(x.dtype, torch.float32)
    pos = torch.arange(T) if positions is None else positions
    freqs = 1.0 / (base ** (torch.arange(0, D, 2)[: D // 2].to(w) / D))
    freqs_cis = torch.polar(torch.ones(T, D // 2, dtype=w), torch.outer(pos.to(w), freqs))
    xw = x.to(w)
    if interleaved:
        xc = torch.view_as_complex(xw.reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(xc * freqs_cis).flatten(-2).type_as(x)
    xc = torch.complex(xw[..., : D // 2], xw[..., D // 2:])
    y = xc * freqs_cis
    return torch.cat([y.real, y.imag], dim=-1).type_as(x)


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def _rotate_every_two(x):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope_hf_tables(x, positions=None, base=10000.0, interleaved=False):
    """HF style: full-width cos/sin tables (cat for rotate_half, repeat_interleave for GPT-J pairs)."""
    D = x.shape[-1]
    if positions is None:
        positions = torch.arange(x.shape[-2])
    w = torch.promote_types(x.dtype, torch.float32)                         # HF: inv_freq and freqs in float32
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.int64).to(w) / D))
    freqs = torch.outer(positions.to(w), inv_freq)                          # (T, D/2)
    emb = freqs.repeat_interleave(2, dim=-1) if interleaved else torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    return x * cos + (_rotate_every_two(x) if interleaved else _rotate_half(x)) * sin


def rope_exp_tables(x, positions=None, base=10000.0, interleaved=False):
    """theta = exp(-2i ln(base) / D); interleaved handled by permuting to halves and back."""
    D = x.shape[-1]
    w = torch.float64 if x.dtype == torch.float64 else torch.float32
    pos = (torch.arange(x.shape[-2]) if positions is None else positions).to(w)
    theta = torch.exp(-torch.arange(D // 2, dtype=w) * 2 * math.log(base) / D)
    angle = pos[:, None] * theta[None, :]
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    if interleaved:
        perm = torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)])
        xh = x[..., perm]
    else:
        xh = x
    a, b = xh[..., : D // 2], xh[..., D // 2:]
    yh = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    if interleaved:
        return yh[..., torch.argsort(perm)]
    return yh


def rope_theta_doubled(x, positions=None, base=10000.0, interleaved=False):
    """WRONG: arange(0, D, 2) already counts 2i, and the exponent doubles it again: base**(-4i/D)."""
    D = x.shape[-1]
    pos = (torch.arange(x.shape[-2]) if positions is None else positions).to(x.dtype)
    theta = base ** (-2 * torch.arange(0, D, 2, dtype=x.dtype) / D)
    return _apply_pairs(x, pos[:, None] * theta, interleaved)


def _apply_pairs(x, angle, interleaved):
    cos, sin = angle.cos(), angle.sin()
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
    a, b = x.chunk(2, -1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


def rope_reflection(x, positions=None, base=10000.0, interleaved=False):
    """WRONG: the second component is b cos - a sin (a reflection, not a rotation)."""
    D = x.shape[-1]
    pos = (torch.arange(x.shape[-2]) if positions is None else positions).to(x.dtype)
    angle = pos[:, None] * base ** (-torch.arange(0, D, 2, dtype=x.dtype) / D)
    cos, sin = angle.cos(), angle.sin()
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, b * cos - a * sin], -1).flatten(-2)
    a, b = x.chunk(2, -1)
    return torch.cat([a * cos - b * sin, b * cos - a * sin], -1)


# =========================================================================== count_params

def count_params_by_modules(cfg):
    """A list of (in, out, bias) Linear shapes and norm sizes, summed."""
    d = cfg.hidden_size
    hd = cfg.head_dim or d // cfg.num_attention_heads
    kv = cfg.num_key_value_heads or cfg.num_attention_heads
    H = cfg.num_attention_heads

    def linear(n_in, n_out, bias):
        return n_in * n_out + (n_out if bias else 0)

    def norm():
        return 2 * d if cfg.norm == "layernorm" else d

    block = [linear(d, H * hd, cfg.qkv_bias), linear(d, kv * hd, cfg.qkv_bias), linear(d, kv * hd, cfg.qkv_bias),
             linear(H * hd, d, cfg.out_bias), norm(), norm()]
    if cfg.gated_mlp:
        block.append(linear(d, cfg.intermediate_size, cfg.mlp_bias))
    block += [linear(d, cfg.intermediate_size, cfg.mlp_bias), linear(cfg.intermediate_size, d, cfg.mlp_bias)]
    total = cfg.vocab_size * d + cfg.learned_positions * d + cfg.num_hidden_layers * sum(block) + norm()
    if not cfg.tie_word_embeddings:
        total += d * cfg.vocab_size
    return total


def count_params_grouped(cfg):
    """Weights, biases and norms counted in separate groups; (2L + 1) norms."""
    V, d, I, L = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    H = cfg.num_attention_heads
    KV = H if cfg.num_key_value_heads is None else cfg.num_key_value_heads
    hd = d // H if cfg.head_dim is None else cfg.head_dim
    weights = 2 * d * H * hd + 2 * d * KV * hd + (3 if cfg.gated_mlp else 2) * d * I
    biases = 0
    if cfg.qkv_bias:
        biases += (H + 2 * KV) * hd
    if cfg.out_bias:
        biases += d
    if cfg.mlp_bias:
        biases += (2 * I if cfg.gated_mlp else I) + d
    norms = (2 * L + 1) * d * (2 if cfg.norm == "layernorm" else 1)
    vocab = V * d * (1 if cfg.tie_word_embeddings else 2)
    return vocab + cfg.learned_positions * d + L * (weights + biases) + norms


def count_params_rmsnorm_with_bias(cfg):
    """WRONG: every norm counted with a bias (2d), RMSNorm included."""
    return count_params_grouped(cfg) + (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size * (cfg.norm == "rmsnorm")


def count_params_unresolved_kv(cfg):
    """WRONG: uses cfg.num_key_value_heads without resolving None (a TypeError on plain multi-head configs)."""
    d, H = cfg.hidden_size, cfg.num_attention_heads
    hd = cfg.head_dim or d // H
    attention = 2 * d * H * hd + 2 * d * cfg.num_key_value_heads * hd
    return count_params_grouped(cfg) - 2 * d * H * hd - 2 * d * cfg.kv_heads * hd + attention


# =========================================================================== count_lstm_params

def lstm_closed_form(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    h, D = hidden_size, 2 if bidirectional else 1
    per = lambda n_in: 4 * h * n_in + 4 * h * h + (8 * h if bias else 0)  # noqa: E731
    return D * per(input_size) + (num_layers - 1) * D * per(D * h)


def lstm_per_gate(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    total = 0
    directions = 2 if bidirectional else 1
    layer_input = input_size
    for _ in range(num_layers):
        for _ in range(directions):
            for _gate in ("i", "f", "g", "o"):
                total += hidden_size * layer_input + hidden_size * hidden_size
                if bias:
                    total += 2 * hidden_size
        layer_input = hidden_size * directions
    return total


def lstm_no_recurrent_weights(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    """WRONG: forgets W_hh."""
    total, D, n_in = 0, 2 if bidirectional else 1, input_size
    for _ in range(num_layers):
        total += D * (4 * hidden_size * n_in + (8 * hidden_size if bias else 0))
        n_in = D * hidden_size
    return total


def lstm_gru_gates(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    """WRONG: three gates (a GRU's count)."""
    total, D, n_in = 0, 2 if bidirectional else 1, input_size
    for _ in range(num_layers):
        total += D * (3 * hidden_size * (n_in + hidden_size) + (6 * hidden_size if bias else 0))
        n_in = D * hidden_size
    return total


# =========================================================================== count_conv2d_params

def conv_prod(in_channels, out_channels, kernel_size, bias=True, groups=1):
    ks = (kernel_size,) * 2 if isinstance(kernel_size, int) else tuple(kernel_size)
    return out_channels * (in_channels // groups * math.prod(ks) + int(bias))


def conv_divide_last(in_channels, out_channels, kernel_size, bias=True, groups=1):
    kh, kw = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
    weight = in_channels * out_channels * kh * kw // groups
    return weight + out_channels * bias


def conv_transposed_formula(in_channels, out_channels, kernel_size, bias=True, groups=1):
    """C_in * (C_out / g) * k_h * k_w: numerically the same count."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return in_channels * (out_channels // groups) * kh * kw + (out_channels if bias else 0)


def conv_no_kernel(in_channels, out_channels, kernel_size, bias=True, groups=1):
    """WRONG: forgets the kernel area."""
    return out_channels * (in_channels // groups) + (out_channels if bias else 0)


def conv_bias_split_by_groups(in_channels, out_channels, kernel_size, bias=True, groups=1):
    """WRONG: divides the bias by groups as well."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return out_channels * (in_channels // groups) * kh * kw + (out_channels // groups if bias else 0)


# =========================================================================== training_flops_per_token

def flops_from_total(cfg, seq_len):
    """N = the full count minus the vocabulary matrices and the position table."""
    total = count_params_by_modules(cfg)
    embed = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    n = total - embed - cfg.learned_positions * cfg.hidden_size
    hd = cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads
    return 2 * 3 * n + 2 * 3 * cfg.num_hidden_layers * seq_len * cfg.num_attention_heads * hd


def flops_direct(cfg, seq_len):
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    hd = cfg.head_dim if cfg.head_dim is not None else d // H
    n_norm = 2 * d if cfg.norm == "layernorm" else d
    per_layer = (d * (H + 2 * KV) * hd + H * hd * d + cfg.qkv_bias * (H + 2 * KV) * hd + cfg.out_bias * d
                 + (3 if cfg.gated_mlp else 2) * d * cfg.intermediate_size
                 + cfg.mlp_bias * ((2 if cfg.gated_mlp else 1) * cfg.intermediate_size + d) + 2 * n_norm)
    n = L * per_layer + n_norm
    return 6 * (n + L * seq_len * H * hd)


def flops_matrices_only(cfg, seq_len):
    """WRONG: N counts only the weight matrices (no biases, no norms)."""
    d, L, H = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    KV, hd = cfg.kv_heads, cfg.dim_per_head
    n = L * (2 * d * H * hd + 2 * d * KV * hd + (3 if cfg.gated_mlp else 2) * d * cfg.intermediate_size)
    return 6 * n + 6 * L * seq_len * H * hd


def flops_attention_kv_heads(cfg, seq_len):
    """WRONG: the attention term uses the key/value heads."""
    return flops_direct(cfg, seq_len) - 6 * cfg.num_hidden_layers * seq_len * (
        cfg.num_attention_heads - cfg.kv_heads) * cfg.dim_per_head


# =========================================================================== model_state_bytes

def state_table(n_params, zero_stage=0, n_gpus=1):
    per_param = {0: 2 + 2 + 12, 1: 2 + 2 + 12 / n_gpus, 2: 2 + (2 + 12) / n_gpus, 3: (2 + 2 + 12) / n_gpus}
    return per_param[zero_stage] * n_params


def state_if_chain(n_params, zero_stage=0, n_gpus=1):
    """Integers where possible: stage 0 returns an int."""
    if zero_stage == 0:
        return 16 * n_params
    if zero_stage == 1:
        return 4 * n_params + 12 * n_params / n_gpus
    if zero_stage == 2:
        return 2 * n_params + 14 * n_params / n_gpus
    return 16 * n_params / n_gpus


def state_stage2_only_grads(n_params, zero_stage=0, n_gpus=1):
    """WRONG: each stage partitions only its own state (stage 2 keeps the optimizer states whole)."""
    w, g, o = 2.0 * n_params, 2.0 * n_params, 12.0 * n_params
    if zero_stage == 1:
        o /= n_gpus
    elif zero_stage == 2:
        g /= n_gpus
    elif zero_stage == 3:
        w /= n_gpus
    return w + g + o


def state_no_gradients(n_params, zero_stage=0, n_gpus=1):
    """WRONG: forgets the fp16 gradients (14 bytes per parameter)."""
    w, o = 2 * n_params, 12 * n_params
    if zero_stage >= 1:
        o /= n_gpus
    if zero_stage >= 3:
        w /= n_gpus
    return w + o


# =========================================================================== activation_bytes_per_layer

def act_expanded(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                 recompute="none"):
    s, b, h, a, t = seq_len, batch_size, hidden_size, n_heads, tensor_parallel
    if recompute == "full":
        return 2.0 * s * b * h
    total = 34 * s * b * h / t if sequence_parallel else 10 * s * b * h + 24 * s * b * h / t
    if recompute == "none":
        total += 5 * a * s * s * b / t
    return total


def act_dispatch(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                 recompute="none"):
    sbh = seq_len * batch_size * hidden_size
    replicated = 0 if sequence_parallel else 10
    split = 24 if not sequence_parallel else 34
    scores = 5 * n_heads * seq_len / hidden_size
    return {
        "none": sbh * (replicated + (split + scores) / tensor_parallel),
        "selective": sbh * (replicated + split / tensor_parallel),
        "full": 2 * sbh,
    }[recompute]


def act_selective_drops_replicated(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1,
                                   sequence_parallel=False, recompute="none"):
    """WRONG: selective recompute also drops the 10sbh replicated part."""
    if recompute == "selective":
        return seq_len * batch_size * hidden_size * 24 / tensor_parallel
    return act_expanded(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, sequence_parallel, recompute)


def act_two_byte_dropout_mask(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1,
                              sequence_parallel=False, recompute="none"):
    """WRONG: the dropout mask of the scores counted at 2 bytes (6as/(ht) instead of 5as/(ht))."""
    base = act_expanded(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, sequence_parallel, recompute)
    if recompute == "none":
        base += n_heads * seq_len * seq_len * batch_size / tensor_parallel
    return base


# =========================================================================== kv_cache_bytes

def kv_prod(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return math.prod((2, batch_size, seq_len, num_layers, num_kv_heads, head_dim)) * bytes_per_element


def kv_per_layer_loop(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    per_tensor = batch_size * num_kv_heads * seq_len * head_dim           # one of K or V, one layer
    total = 0
    for _ in range(num_layers):
        total += per_tensor * bytes_per_element   # K
        total += per_tensor * bytes_per_element   # V
    return total


def kv_int_when_whole(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    """Float arithmetic, turned back into an int when the byte count is whole."""
    n = 2.0 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element
    return int(n) if n.is_integer() else n


def kv_in_gib(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    """WRONG: returns GiB, not bytes."""
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element / 2 ** 30


def kv_no_head_dim(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    """WRONG: forgets head_dim."""
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * bytes_per_element



# =========================================================================== more styles (found by probing)

def sdpa_log_mask(q, k, v, attn_mask=None, is_causal=False):
    """A bool mask turned into an additive one with log(): log(1) = 0, log(0) = -inf."""
    s = (q @ k.mT) / math.sqrt(q.size(-1))
    L, S = s.shape[-2:]
    if is_causal:
        s = s + torch.ones(L, S, dtype=q.dtype).tril().log()
    if attn_mask is not None:
        s = s + (attn_mask.to(q.dtype).log() if attn_mask.dtype == torch.bool else attn_mask)
    return s.softmax(-1) @ v


def sdpa_in_float64(q, k, v, attn_mask=None, is_causal=False):
    """Computed in float64, cast back to the input's dtype."""
    dtype = q.dtype
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    L, S = s.shape[-2:]
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), NEG_INF)
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, NEG_INF) if attn_mask.dtype == torch.bool else s + attn_mask.double()
    return (s.softmax(-1) @ v).to(dtype)


class GQARepeat5d(_GQAParams):
    """unsqueeze + repeat + view (interleaved order), `if past_kv:` on the tuple, triu mask."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q, k, v = self.project(x)
        if past_kv:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        S, g = k.shape[2], self.n_heads // self.n_kv_heads
        kk = k.unsqueeze(2).repeat(1, 1, g, 1, 1).view(B, self.n_heads, S, self.head_dim)
        vv = v.unsqueeze(2).repeat(1, 1, g, 1, 1).view(B, self.n_heads, S, self.head_dim)
        att = (q @ kk.transpose(-2, -1)) * (1.0 / math.sqrt(kk.size(-1)))
        att = att.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(S - T + 1), NEG_INF)
        y = F.softmax(att, dim=-1) @ vv
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, -1)), (k, v)


def flash_exp2(q, k, v, block_size=64, is_causal=False):
    """Triton-kernel style: log2(e) folded into the scale, exp2 instead of exp."""
    L, S = q.shape[-2], k.shape[-2]
    c = math.log2(math.e) / math.sqrt(q.shape[-1])
    outs = []
    for i in range(0, L, block_size):
        qi = q[..., i:i + block_size, :] * c
        n = qi.shape[-2]
        m = torch.full((*qi.shape[:-1], 1), NEG_INF, dtype=q.dtype)
        l = torch.zeros_like(m)
        o = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
        for j in range(0, S, block_size):
            if is_causal and j > i + n - 1:
                break
            s = qi @ k[..., j:j + block_size, :].mT
            if is_causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > torch.arange(i, i + n)[:, None], NEG_INF)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            a, p = torch.exp2(m - m_new), torch.exp2(s - m_new)
            l, o, m = a * l + p.sum(-1, keepdim=True), a * o + p @ v[..., j:j + block_size, :], m_new
        outs.append(o / l)
    return torch.cat(outs, -2)


def flash_full_causal_mask(q, k, v, block_size=64, is_causal=False):
    """WRONG (memory): keys in blocks, but the (L, S) causal mask is built once, up front: O(L*S) memory."""
    S = k.shape[-2]
    mask = torch.ones(q.shape[-2], S, dtype=torch.bool).tril() if is_causal else None
    m = torch.full((*q.shape[:-1], 1), NEG_INF, dtype=q.dtype)
    l = torch.zeros_like(m)
    o = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j in range(0, S, block_size):
        s = q @ k[..., j:j + block_size, :].mT / math.sqrt(q.shape[-1])
        if mask is not None:
            s = s.masked_fill(~mask[:, j:j + block_size], NEG_INF)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        a, p = torch.exp(m - m_new), torch.exp(s - m_new)
        l, o, m = a * l + p.sum(-1, keepdim=True), a * o + p @ v[..., j:j + block_size, :], m_new
    return o / l


def sinusoid_where(max_len, d_model, base=10000.0):
    """One angle per column, j - j % 2 in the exponent, sin/cos chosen by torch.where."""
    j = torch.arange(d_model)
    angle = torch.arange(max_len, dtype=torch.float32)[:, None] / base ** ((j - j % 2) / d_model)
    return torch.where(j % 2 == 0, angle.sin(), angle.cos())


def rope_rotation_matrices(x, positions=None, base=10000.0, interleaved=False):
    """A (T, D, D) block rotation matrix per position, applied with matmul."""
    T, D = x.shape[-2:]
    w = torch.promote_types(x.dtype, torch.float32)
    pos = (torch.arange(T) if positions is None else positions).to(w)
    angle = pos[:, None] * base ** (-torch.arange(0, D, 2, dtype=w) / D)
    c, s = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    R = torch.zeros(T, D, D, dtype=x.dtype)
    idx = torch.arange(D // 2)
    a, b = (2 * idx, 2 * idx + 1) if interleaved else (idx, idx + D // 2)
    R[:, a, a], R[:, a, b], R[:, b, a], R[:, b, b] = c, -s, s, c
    return (R @ x.unsqueeze(-1)).squeeze(-1)



def sdpa_multiplies_by_bool_mask(q, k, v, attn_mask=None, is_causal=False):
    """WRONG: scores * mask, which sets masked scores to 0 (weight exp(0), not 0)."""
    s = q @ k.mT / math.sqrt(q.shape[-1])
    L, S = s.shape[-2:]
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), NEG_INF)
    if attn_mask is not None:
        s = s * attn_mask if attn_mask.dtype == torch.bool else s + attn_mask
    return s.softmax(-1) @ v


def sdpa_scaled_by_key_count(q, k, v, attn_mask=None, is_causal=False):
    """WRONG: divides by sqrt(S), the number of keys."""
    return sdpa_where_manual_softmax(q * math.sqrt(q.shape[-1] / k.shape[-2]), k, v, attn_mask, is_causal)


class MHAMergeHeadsLast(_MHAParams):
    """WRONG: merges (B, H, L, d) with permute(0, 2, 3, 1): features ordered (d, H) instead of (H, d)."""

    def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
        src = x if x_kv is None else x_kv
        B, L, D = x.shape
        q, k, v = (t.view(B, t.shape[1], self.n_heads, self.d_head).transpose(1, 2)
                   for t in (self.q_proj(x), self.k_proj(src), self.v_proj(src)))
        s = q @ k.mT / math.sqrt(self.d_head)
        if is_causal:
            s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), NEG_INF)
        if attn_mask is not None:
            s = s.masked_fill(~attn_mask, NEG_INF) if attn_mask.dtype == torch.bool else s + attn_mask
        return self.o_proj((s.softmax(-1) @ v).permute(0, 2, 3, 1).reshape(B, L, D))


class GQAOneKVHeadForAll(_GQAParams):
    """WRONG: every query head reads kv head 0."""

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        q, k, v = self.project(x)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        S = k.shape[2]
        s = q @ k[:, :1].mT / math.sqrt(self.head_dim)
        s = s.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(S - T), NEG_INF)
        return self.o_proj((s.softmax(-1) @ v[:, :1]).transpose(1, 2).reshape(B, T, -1)), (k, v)


def flash_causal_strict(q, k, v, block_size=64, is_causal=False):
    """WRONG: the causal test is j >= i, so query 0 sees no key at all (NaN)."""
    E, L, S = q.shape[-1], q.shape[-2], k.shape[-2]
    outs = []
    for i in range(0, L, block_size):
        qi = q[..., i:i + block_size, :]
        n = qi.shape[-2]
        m = torch.full((*qi.shape[:-1], 1), NEG_INF, dtype=q.dtype)
        l = torch.zeros_like(m)
        o = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
        for j in range(0, S, block_size):
            s = qi @ k[..., j:j + block_size, :].mT / math.sqrt(E)
            if is_causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) >= torch.arange(i, i + n)[:, None], NEG_INF)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            a, p = torch.exp(m - m_new), torch.exp(s - m_new)
            l, o, m = a * l + p.sum(-1, keepdim=True), a * o + p @ v[..., j:j + block_size, :], m_new
        outs.append(o / l)
    return torch.cat(outs, -2)


def count_params_forgot_head(cfg):
    """WRONG: the untied LM head is left out."""
    return count_params_grouped(cfg) - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)


def lstm_bidirectional_first_layer_only(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    """WRONG: only the first layer is bidirectional."""
    total, n_in = 0, input_size
    for layer in range(num_layers):
        D = 2 if bidirectional and layer == 0 else 1
        total += D * (4 * hidden_size * (n_in + hidden_size) + (8 * hidden_size if bias else 0))
        n_in = D * hidden_size
    return total


def act_full_recompute_keeps_34(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1,
                                sequence_parallel=False, recompute="none"):
    """WRONG: full recompute stores 34sbh (all the linear activations) instead of the layer input."""
    if recompute == "full":
        return 34.0 * seq_len * batch_size * hidden_size
    return act_expanded(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, sequence_parallel, recompute)


# =========================================================================== the tests

CORRECT = [
    ("scaled_dot_product_attention", sdpa_float_bias),
    ("scaled_dot_product_attention", sdpa_baddbmm),
    ("scaled_dot_product_attention", sdpa_where_manual_softmax),
    ("scaled_dot_product_attention", sdpa_big_negative),
    ("scaled_dot_product_attention", sdpa_log_mask),
    ("scaled_dot_product_attention", sdpa_in_float64),
    ("MultiHeadAttention", MHAFusedQKV),
    ("MultiHeadAttention", MHAEinsum),
    ("MultiHeadAttention", MHAHeadLoop),
    ("GroupedQueryAttention", GQAExpandReshape),
    ("GroupedQueryAttention", GQAGroupedEinsum),
    ("GroupedQueryAttention", GQARepeatIndex),
    ("GroupedQueryAttention", GQARepeat5d),
    ("flash_attention", flash_fa1_normalised),
    ("flash_attention", flash_list_of_blocks),
    ("flash_attention", flash_exp2),
    ("sinusoidal_positional_encoding", sinusoid_exp_log),
    ("sinusoidal_positional_encoding", sinusoid_outer_stack),
    ("sinusoidal_positional_encoding", sinusoid_python_loops),
    ("sinusoidal_positional_encoding", sinusoid_where),
    ("LearnedPositionalEmbedding", LearnedNarrow),
    ("LearnedPositionalEmbedding", LearnedFEmbedding),
    ("relative_position_index", relative_python_lists),
    ("relative_position_index", relative_shift_then_clamp),
    ("relative_position_index", relative_meshgrid),
    ("alibi_bias", alibi_bloom),
    ("alibi_bias", alibi_closed_form_float64),
    ("alibi_bias", alibi_recursive_paper),
    ("apply_rope", rope_complex),
    ("apply_rope", rope_hf_tables),
    ("apply_rope", rope_exp_tables),
    ("apply_rope", rope_rotation_matrices),
    ("count_params", count_params_by_modules),
    ("count_params", count_params_grouped),
    ("count_lstm_params", lstm_closed_form),
    ("count_lstm_params", lstm_per_gate),
    ("count_conv2d_params", conv_prod),
    ("count_conv2d_params", conv_divide_last),
    ("count_conv2d_params", conv_transposed_formula),
    ("training_flops_per_token", flops_from_total),
    ("training_flops_per_token", flops_direct),
    ("model_state_bytes", state_table),
    ("model_state_bytes", state_if_chain),
    ("activation_bytes_per_layer", act_expanded),
    ("activation_bytes_per_layer", act_dispatch),
    ("kv_cache_bytes", kv_prod),
    ("kv_cache_bytes", kv_per_layer_loop),
    ("kv_cache_bytes", kv_int_when_whole),
]

# (exercise, wrong implementation, the registered mistakes whose diagnosis would be TRUE of it; () = none)
WRONG = [
    ("scaled_dot_product_attention", sdpa_mask_after_softmax, ()),
    ("scaled_dot_product_attention", sdpa_scale_after_softmax, ()),
    ("scaled_dot_product_attention", sdpa_causal_strict, ()),
    ("scaled_dot_product_attention", sdpa_multiplies_by_bool_mask, ("masked scores set to zero",)),
    ("scaled_dot_product_attention", sdpa_scaled_by_key_count, ()),
    ("MultiHeadAttention", MHASoftmaxOverQueries, ()),
    ("MultiHeadAttention", MHAIgnoresCausal, ()),
    ("MultiHeadAttention", MHAMergeHeadsLast, ()),
    ("GroupedQueryAttention", GQANoScale, ()),
    ("GroupedQueryAttention", GQAMaskOffsetOffByOne, ()),
    ("GroupedQueryAttention", GQAOneKVHeadForAll, ()),
    ("flash_attention", flash_inverted_correction, ()),
    ("flash_attention", flash_no_scale, ()),
    ("flash_attention", flash_causal_strict, ()),
    # the (L, S) mask defeats the O(L) memory of the tiling; the "full score matrix" message names masks too
    ("flash_attention", flash_full_causal_mask, ("full score matrix",)),
    # every query against a key block: tiles of (L, block), a whole axis untiled
    ("flash_attention", flash_keys_only, ("one axis untiled", "full score matrix")),
    ("sinusoidal_positional_encoding", sinusoid_log10, ()),
    ("sinusoidal_positional_encoding", sinusoid_transposed, ()),
    ("LearnedPositionalEmbedding", LearnedTransposedTable, ()),
    ("LearnedPositionalEmbedding", LearnedMultiplied, ()),
    ("relative_position_index", relative_int32, ()),
    ("relative_position_index", relative_shift_off_by_one, ()),
    ("alibi_bias", alibi_past_only, ()),
    # slopes(2c)[1::2] IS slopes(c): the two ways of writing it cannot be told apart, and the message covers both
    ("alibi_bias", alibi_extra_repeat_base, ("extra slopes from the odd entries",)),
    ("apply_rope", rope_theta_doubled, ()),
    ("apply_rope", rope_reflection, ()),
    ("count_params", count_params_rmsnorm_with_bias, ()),
    ("count_params", count_params_unresolved_kv, ()),
    ("count_params", count_params_forgot_head, ()),
    ("count_lstm_params", lstm_no_recurrent_weights, ()),
    ("count_lstm_params", lstm_gru_gates, ()),
    ("count_lstm_params", lstm_bidirectional_first_layer_only, ()),
    ("count_conv2d_params", conv_no_kernel, ()),
    ("count_conv2d_params", conv_bias_split_by_groups, ()),
    ("training_flops_per_token", flops_matrices_only, ()),
    ("training_flops_per_token", flops_attention_kv_heads, ()),
    ("model_state_bytes", state_stage2_only_grads, ()),
    ("model_state_bytes", state_no_gradients, ()),
    ("activation_bytes_per_layer", act_selective_drops_replicated, ()),
    ("activation_bytes_per_layer", act_two_byte_dropout_mask, ()),
    ("activation_bytes_per_layer", act_full_recompute_keeps_34, ()),
    ("kv_cache_bytes", kv_in_gib, ()),
    ("kv_cache_bytes", kv_no_head_dim, ()),
]


@pytest.mark.parametrize("name,impl", CORRECT, ids=[f"{n}-{i.__name__}" for n, i in CORRECT])
def test_correct_variant_passes(name, impl):
    report = run(name, impl)
    assert report.passed, f"a correct {name} written as {impl.__name__} is rejected:\n{report}"


@pytest.mark.parametrize("name,impl,fair", WRONG, ids=[f"{n}-{i.__name__}" for n, i, _ in WRONG])
def test_wrong_variant_is_rejected_without_a_false_diagnosis(name, impl, fair):
    report = run(name, impl)
    assert not report.passed, f"the wrong {name} {impl.__name__} ({impl.__doc__}) passes the grader"
    assert report.status == "failed"
    assert report.failure.mistake is None or report.failure.mistake in fair, (
        f"{impl.__name__} ({impl.__doc__}) is diagnosed as {report.failure.mistake!r}, which it is not:\n{report}")
