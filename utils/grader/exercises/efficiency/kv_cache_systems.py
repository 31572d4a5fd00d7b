"""Part 9, efficient fine-tuning and inference: Mistral's sliding-window mask, vLLM's paged attention for one
decode step, and DeepSeek-V2's multi-head latent attention with absorbed projections (chapter
efficiency/kv_cache_systems).

sliding_window_causal_mask: a bool matrix, oracle a loop over (i, j) of the rule 0 <= pos_i - j < window with
pos_i = k_len - q_len + i. paged_attention: the oracle gathers each sequence's first seq_lens[b] positions through
its block table and calls F.scaled_dot_product_attention on them (kv heads repeated group-wise); the block tables
are random permutations of the physical blocks, and the blocks past a sequence's length hold random values, so
code that ignores seq_lens or the table is caught. mla_absorbed_attention: the oracle up-projects the cached
latents into per-head keys and values (the naive MLA); the reader's code must give the same output without
creating them: on the watched cases no tensor the code creates may reach the size of the per-head keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...core import Case, Exercise, Mistake
from ...inputs import call, case, f32, f64, randn, transposed
from ...kinds import TiledExercise, Watched
from ...registry import register

# --------------------------------------------------------------------------- sliding_window_causal_mask


def sliding_window_spec(q_len, k_len, window):
    """Loop specification: query i sits at position k_len - q_len + i and sees key j when 0 <= pos - j < window."""
    allowed = torch.zeros(q_len, k_len, dtype=torch.bool)
    for i in range(q_len):
        pos = k_len - q_len + i
        for j in range(k_len):
            allowed[i, j] = 0 <= pos - j < window
    return allowed


def _mask_cases():
    return [
        case(lambda: call(6, 6, 3), note="q_len = k_len = 6, window 3"),
        case(lambda: call(3, 8, 4), note="q_len < k_len: 3 new queries after 5 cached keys, window 4"),
        case(lambda: call(1, 10, 4), note="one decoding query over 10 keys, window 4"),
        case(lambda: call(5, 5, 1), note="window 1: each query sees only itself"),
        case(lambda: call(4, 7, 7), note="window = k_len: plain causal"),
        case(lambda: call(4, 6, 50), note="window larger than k_len: plain causal"),
        case(lambda: call(1, 1, 1), note="one query, one key"),
        case(lambda: call(2, 9, 3), note="q_len < k_len, window 3: the first keys are out of every window"),
        case(lambda: call(q_len=16, k_len=16, window=5), note="16 x 16, window 5, arguments by keyword"),
        case(lambda: call(7, 12, 2), note="7 queries after 5 cached keys, window 2"),
    ]


def swm_off_by_one(q_len, k_len, window):
    pos = torch.arange(k_len - q_len, k_len)[:, None]
    j = torch.arange(k_len)[None, :]
    return (j <= pos) & (pos - j <= window)


def swm_anchored_at_zero(q_len, k_len, window):
    pos = torch.arange(q_len)[:, None]
    j = torch.arange(k_len)[None, :]
    return (j <= pos) & (pos - j < window)


def swm_band_both_sides(q_len, k_len, window):
    pos = torch.arange(k_len - q_len, k_len)[:, None]
    j = torch.arange(k_len)[None, :]
    return (pos - j).abs() < window


def swm_causal_only(q_len, k_len, window):
    pos = torch.arange(k_len - q_len, k_len)[:, None]
    return torch.arange(k_len)[None, :] <= pos


def swm_additive(q_len, k_len, window):
    pos = torch.arange(k_len - q_len, k_len)[:, None]
    d = pos - torch.arange(k_len)[None, :]
    return torch.zeros(q_len, k_len).masked_fill(~((d >= 0) & (d < window)), float("-inf"))


def swm_true_means_masked(q_len, k_len, window):
    pos = torch.arange(k_len - q_len, k_len)[:, None]
    d = pos - torch.arange(k_len)[None, :]
    return (d < 0) | (d >= window)


register(Exercise(
    name="sliding_window_causal_mask",
    chapter="efficiency/kv_cache_systems",
    signature="sliding_window_causal_mask(q_len, k_len, window) -> bool (q_len, k_len)",
    oracle=sliding_window_spec,
    cases=_mask_cases,
    hints=("query i is the last q_len positions of the k_len keys: it sits at absolute position k_len - q_len + i "
           "and sees the window keys ending at itself   (eq. swa-mask)",
           "build pos = arange(k_len - q_len, k_len)[:, None] and j = arange(k_len)[None, :], and compare their "
           "difference with 0 and with window",
           "allowed = (pos - j >= 0) & (pos - j < window), a bool (q_len, k_len) with True = may attend   "
           "(eq. swa-mask)"),
    mistakes=[
        Mistake("window off by one", swm_off_by_one,
                "your window holds window + 1 keys: query at position p sees keys p - window + 1 .. p, so the "
                "difference p - j must be < window, not <= window."),
        Mistake("anchored at position 0", swm_anchored_at_zero,
                "your mask puts query i at position i: when q_len < k_len the queries are the last q_len "
                "positions, so query i sits at k_len - q_len + i."),
        Mistake("band on both sides", swm_band_both_sides,
                "your mask lets queries see keys after them: |p - j| < window is a band on both sides; the "
                "window is causal, 0 <= p - j < window."),
        Mistake("window ignored", swm_causal_only,
                "your mask is plain causal: keys more than window - 1 positions back must be masked too."),
        Mistake("additive float mask", swm_additive,
                "return a bool mask (True = may attend), not an additive mask of 0 and -inf."),
        Mistake("True means masked", swm_true_means_masked,
                "your mask is inverted: True must mean the query may attend the key (the convention of "
                "F.scaled_dot_product_attention's boolean attn_mask)."),
    ],
))


# --------------------------------------------------------------------------- paged_attention

def paged_attention_spec(q, k_cache, v_cache, block_tables, seq_lens):
    """Gather each sequence's positions 0..seq_lens[b]-1 through its block table, then SDPA per sequence."""
    B, H, d = q.shape
    block_size, H_kv = k_cache.shape[1], k_cache.shape[2]
    outs = []
    for b in range(B):
        pos = torch.arange(int(seq_lens[b]))
        blocks = block_tables[b, pos // block_size]
        k = k_cache[blocks, pos % block_size].transpose(0, 1)            # (H_kv, n, d)
        v = v_cache[blocks, pos % block_size].transpose(0, 1)
        k, v = k.repeat_interleave(H // H_kv, 0), v.repeat_interleave(H // H_kv, 0)
        outs.append(F.scaled_dot_product_attention(q[b][:, None], k, v)[:, 0])   # (H, d)
    return torch.stack(outs)


def _paged(B, H, H_kv, d, block_size, lens, seed=0, dtype=f32, extra=3, q_layout="contiguous"):
    gen = torch.Generator().manual_seed(seed)
    max_blocks = max(math.ceil(n / block_size) for n in lens)
    num_blocks = B * max_blocks + extra
    tables = torch.randperm(num_blocks, generator=gen)[:B * max_blocks].view(B, max_blocks)
    k_cache = randn(num_blocks, block_size, H_kv, d, seed=seed + 1, dtype=dtype)
    v_cache = randn(num_blocks, block_size, H_kv, d, seed=seed + 2, dtype=dtype)
    q = transposed(B, H, d, seed=seed + 3, dtype=dtype) if q_layout == "transposed" else \
        randn(B, H, d, seed=seed + 3, dtype=dtype)
    return call(q, k_cache, v_cache, tables, torch.tensor(lens))


def _paged_cases():
    return [
        case(_paged, 3, 4, 4, 8, 4, [7, 12, 3], note="3 sequences of lengths 7, 12, 3; block_size 4; MHA"),
        case(_paged, 3, 8, 4, 8, 4, [9, 4, 16], seed=1, note="GQA ratio 2 (8 query heads, 4 kv heads)"),
        case(_paged, 2, 8, 2, 16, 4, [13, 5], seed=2, note="GQA ratio 4 (8 query heads, 2 kv heads)"),
        case(_paged, 4, 4, 1, 8, 4, [1, 6, 11, 2], seed=3, note="MQA (one kv head), a sequence of length 1"),
        case(_paged, 3, 4, 2, 8, 1, [5, 2, 7], seed=4, note="block_size 1: every position its own block"),
        case(_paged, 2, 4, 2, 8, 16, [20, 33], seed=5, note="block_size 16, lengths 20 and 33"),
        case(_paged, 1, 8, 2, 16, 4, [10], seed=6, note="batch of one"),
        case(_paged, 3, 8, 4, 8, 4, [8, 4, 12], seed=7, dtype=f64,
             note="float64; every length a multiple of the block size"),
        case(_paged, 2, 4, 2, 8, 4, [6, 9], seed=8, q_layout="transposed", note="a non-contiguous q (transposed)"),
        case(_paged, 2, 4, 4, 8, 4, [3, 14], seed=9, extra=12, note="many unused physical blocks in the pool"),
    ]


def _gathered(q, k_cache, v_cache, block_tables, seq_lens, *, n_of=None, physical=False, swap=False,
              head=None, scale=None):
    """A hand-written paged attention; each mistake changes one keyword."""
    B, H, d = q.shape
    bs, H_kv = k_cache.shape[1], k_cache.shape[2]
    outs = []
    for b in range(B):
        n = n_of(b, seq_lens, block_tables, bs) if n_of else int(seq_lens[b])
        pos = torch.arange(n)
        logical, offset = (pos % bs, pos // bs) if swap else (pos // bs, pos % bs)
        blocks = logical if physical else block_tables[b, logical]
        k, v = k_cache[blocks, offset], v_cache[blocks, offset]                # (n, H_kv, d)
        kv_head = head(torch.arange(H), H, H_kv) if head else torch.arange(H) // (H // H_kv)
        k, v = k[:, kv_head].transpose(0, 1), v[:, kv_head].transpose(0, 1)    # (H, n, d)
        s = (q[b][:, None] @ k.transpose(-1, -2))[:, 0] * (scale(d) if scale else 1 / math.sqrt(d))
        outs.append((torch.softmax(s, -1)[:, None] @ v)[:, 0])
    return torch.stack(outs)


def pa_ignores_seq_lens(q, k_cache, v_cache, block_tables, seq_lens):
    return _gathered(q, k_cache, v_cache, block_tables, seq_lens,
                     n_of=lambda b, lens, tables, bs: tables.shape[1] * bs)


def pa_one_extra(q, k_cache, v_cache, block_tables, seq_lens):
    return _gathered(q, k_cache, v_cache, block_tables, seq_lens,
                     n_of=lambda b, lens, tables, bs: min(int(lens[b]) + 1, tables.shape[1] * bs))


def pa_physical(q, k_cache, v_cache, block_tables, seq_lens):
    return _gathered(q, k_cache, v_cache, block_tables, seq_lens, physical=True)


def pa_swapped_offset(q, k_cache, v_cache, block_tables, seq_lens):
    return _gathered(q, k_cache, v_cache, block_tables, seq_lens, swap=True)


def pa_modulo_heads(q, k_cache, v_cache, block_tables, seq_lens):
    return _gathered(q, k_cache, v_cache, block_tables, seq_lens, head=lambda h, H, H_kv: h % H_kv)


def pa_no_sqrt(q, k_cache, v_cache, block_tables, seq_lens):
    return _gathered(q, k_cache, v_cache, block_tables, seq_lens, scale=lambda d: 1 / d)


register(Exercise(
    name="paged_attention",
    chapter="efficiency/kv_cache_systems",
    signature="paged_attention(q, k_cache, v_cache, block_tables, seq_lens) -> (B, H, d)",
    oracle=paged_attention_spec,
    cases=_paged_cases,
    hints=("logical position p of sequence b lives in physical block block_tables[b, p // block_size] at offset "
           "p % block_size; only positions p < seq_lens[b] exist   (eq. paged-addr)",
           "gather each sequence's keys and values with those two index tensors, shape (n, H_kv, d); query head h "
           "reads kv head h // (H // H_kv); the scores are scaled by 1 / sqrt(d)",
           "for b: pos = arange(seq_lens[b]); k = k_cache[block_tables[b, pos // bs], pos % bs]; then softmax(q k^T "
           "/ sqrt(d)) v per head, with k and v repeat_interleave'd over the heads   (eqs. paged-addr, paged-attn)"),
    mistakes=[
        Mistake("seq_lens ignored", pa_ignores_seq_lens,
                "you attend every slot of every block in the table: the last block is only partly filled and the "
                "slots past seq_lens[b] hold garbage. Keep positions p < seq_lens[b] only."),
        Mistake("one position too many", pa_one_extra,
                "you attend seq_lens[b] + 1 positions: a sequence of length n has positions 0 .. n - 1."),
        Mistake("block table not used", pa_physical,
                "you used the logical block number p // block_size as the physical block: look it up in the "
                "table, block_tables[b, p // block_size]; the blocks of a sequence are scattered in the pool."),
        Mistake("block and offset swapped", pa_swapped_offset,
                "block and offset are swapped: position p is in logical block p // block_size at offset "
                "p % block_size."),
        Mistake("kv head h % H_kv", pa_modulo_heads,
                "query head h must read kv head h // (H // H_kv) (consecutive query heads share a kv head), not "
                "h % H_kv."),
        Mistake("scaled by 1/d", pa_no_sqrt,
                "the scores are divided by d; divide by sqrt(d)."),
    ],
))


# --------------------------------------------------------------------------- mla_absorbed_attention

def mla_naive_spec(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    """Naive MLA for one decode step: up-project the cached latents into per-head keys and values, then attend."""
    k_nope = torch.einsum("bsc,hnc->bhsn", c_kv, W_uk)                   # (B, H, S, d_nope)
    v = torch.einsum("bsc,hvc->bhsv", c_kv, W_uv)                         # (B, H, S, d_v)
    scale = 1 / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1])
    s = torch.einsum("bhn,bhsn->bhs", q_nope, k_nope) + torch.einsum("bhr,bsr->bhs", q_rope, k_rope)
    return torch.einsum("bhs,bhsv->bhv", torch.softmax(s * scale, -1), v)


def _mla(B, H, S, d_nope, d_rope, d_c, d_v, seed=0, dtype=f32, layout="contiguous"):
    g = seed * 10
    w = 1 / math.sqrt(d_c)
    c_kv = transposed(B, S, d_c, seed=g + 2, dtype=dtype) if layout == "transposed" else \
        randn(B, S, d_c, seed=g + 2, dtype=dtype)
    return call(randn(B, H, d_nope, seed=g, dtype=dtype), randn(B, H, d_rope, seed=g + 1, dtype=dtype), c_kv,
                randn(B, S, d_rope, seed=g + 3, dtype=dtype), randn(H, d_nope, d_c, seed=g + 4, dtype=dtype, scale=w),
                randn(H, d_v, d_c, seed=g + 5, dtype=dtype, scale=w))


def mla_case(*args, note="", watch=True, grad=False, **kwargs):
    return (Watched if watch else Case)(make=lambda: _mla(*args, **kwargs), note=note, grad=grad)


def _mla_cases():
    return [
        mla_case(2, 4, 24, 16, 8, 12, 16, note="4 heads, 24 cached tokens, latent 12, rope 8"),
        mla_case(1, 8, 40, 16, 4, 8, 12, seed=1, note="batch of one, 8 heads, d_v != d_nope"),
        mla_case(3, 2, 5, 8, 8, 16, 8, seed=2, note="latent wider than a head (d_c = 16 > d_nope = 8)"),
        mla_case(2, 4, 1, 16, 8, 12, 16, seed=3, watch=False, note="a single cached token"),
        mla_case(2, 4, 30, 16, 8, 12, 16, seed=4, dtype=f64, note="float64"),
        mla_case(2, 4, 20, 16, 8, 12, 16, seed=5, layout="transposed", note="a non-contiguous latent cache"),
        mla_case(2, 16, 64, 32, 8, 16, 32, seed=6, note="16 heads, 64 cached tokens: the latent saves 64x memory"),
        mla_case(1, 2, 6, 8, 4, 6, 8, seed=7, dtype=f64, watch=False, grad=True, note="gradients, float64"),
    ]


def mla_limit(args, kwargs):
    """No tensor as large as the per-head keys of the cache: at most twice the largest of the scores
    (B, H, S), the latent cache (B, S, d_c + d_rope), the absorbed query (B, H, d_c) and a copy of a weight."""
    q_nope, q_rope, c_kv, _, W_uk, W_uv = args
    B, H, _ = q_nope.shape
    S, d_c = c_kv.shape[1], c_kv.shape[2]
    return 2 * max(B * H * S, B * S * (d_c + q_rope.shape[-1]), B * H * d_c, W_uk.numel(), W_uv.numel())


def _absorbed(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv, scale=None, rope=True, rope_scaled=True, dim=-1):
    q_lat = torch.einsum("bhn,hnc->bhc", q_nope, W_uk)
    s_nope = torch.einsum("bhc,bsc->bhs", q_lat, c_kv)
    s_rope = torch.einsum("bhr,bsr->bhs", q_rope, k_rope) if rope else 0
    sc = scale if scale is not None else 1 / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1])
    s = (s_nope + s_rope) * sc if rope_scaled else s_nope * sc + s_rope
    ctx = torch.einsum("bhs,bsc->bhc", torch.softmax(s, dim), c_kv)
    return torch.einsum("bhc,hvc->bhv", ctx, W_uv)


def mla_scale_nope_only(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    return _absorbed(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv, scale=1 / math.sqrt(q_nope.shape[-1]))


def mla_scale_latent(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    return _absorbed(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv, scale=1 / math.sqrt(c_kv.shape[-1]))


def mla_no_rope(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    return _absorbed(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv, rope=False)


def mla_rope_unscaled(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    return _absorbed(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv, rope_scaled=False)


def mla_softmax_over_heads(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    return _absorbed(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv, dim=1)


def mla_materialised(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    k_nope = torch.einsum("bsc,hnc->bhsn", c_kv, W_uk)
    v = torch.einsum("bsc,hvc->bhsv", c_kv, W_uv)
    s = (q_nope[:, :, None] * k_nope).sum(-1) + torch.einsum("bhr,bsr->bhs", q_rope, k_rope)
    a = torch.softmax(s / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1]), -1)
    return (a[..., None] * v).sum(2)


register(TiledExercise(
    name="mla_absorbed_attention",
    chapter="efficiency/kv_cache_systems",
    signature="mla_absorbed_attention(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv) -> (B, H, d_v)",
    oracle=mla_naive_spec,
    cases=_mla_cases,
    limit=mla_limit,
    limit_label="no per-head keys or values of the cache created",
    hints=("move the up-projections off the cache: W_uk can act on the query instead of on every cached latent, "
           "and W_uv on the attention-weighted latent instead of on every position   (eqs. mla-absorb-k, "
           "mla-absorb-v)",
           "q_lat[b, h] = W_uk[h]^T q_nope[b, h] has the latent's width d_c; its dot product with c_kv[b, s] equals "
           "q_nope . k_nope; add q_rope . k_rope and scale by 1 / sqrt(d_nope + d_rope)",
           "q_lat = einsum('bhn,hnc->bhc', q_nope, W_uk); s = (q_lat c_kv^T + q_rope k_rope^T) / sqrt(d_nope + "
           "d_rope); ctx = softmax(s) c_kv; out = einsum('bhc,hvc->bhv', ctx, W_uv)   (eqs. mla-absorb-k, "
           "mla-absorb-v)"),
    mistakes=[
        Mistake("scaled by sqrt(d_nope)", mla_scale_nope_only,
                "the scores are divided by sqrt(d_nope): a query head has d_nope + d_rope dimensions (its "
                "position-free part and its rotary part), so divide by sqrt(d_nope + d_rope)."),
        Mistake("scaled by sqrt(d_c)", mla_scale_latent,
                "the scores are divided by sqrt(d_c), the latent's width: absorption does not change the scores, "
                "which are still dot products of head vectors of d_nope + d_rope dimensions."),
        Mistake("rope part dropped", mla_no_rope,
                "your scores miss the decoupled rotary part: add q_rope . k_rope (the one rotary key shared by all "
                "heads) to the latent scores before the softmax."),
        Mistake("rope part not scaled", mla_rope_unscaled,
                "only the latent part of the scores is scaled: scale the sum of both parts, (q_lat . c + q_rope . "
                "k_rope) / sqrt(d_nope + d_rope)."),
        Mistake("softmax over heads", mla_softmax_over_heads,
                "your softmax runs over the heads: each head's attention weights are a softmax over the cached "
                "positions (the last axis of the (B, H, S) scores)."),
        Mistake("per-head keys materialised", mla_materialised,
                "the values are right but your code up-projects the whole cache into per-head keys and values: "
                "absorb W_uk into the query and apply W_uv after the attention, so that only the latent is read."),
    ],
))
