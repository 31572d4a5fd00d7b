"""Part 3, attention: FlashAttention's tiled online softmax (chapter attention/flash_attention).

The values must equal F.scaled_dot_product_attention; on the `Watched` cases the tiled kind also records
every tensor the reader's code creates and requires that none is much larger than a block of scores
(`tile_limit`): four (block x block) tiles per batch and head, or one tensor the size of an input or of
the output. A full (L, S) score matrix or mask, and a query block scored against every key, exceed it.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from ...core import Case, Mistake
from ...inputs import call, f32, f64, randn, transposed
from ...kinds import TiledExercise, Watched
from ...registry import register

FORBIDDEN = (
    "F.scaled_dot_product_attention", "torch._scaled_dot_product_attention_math",
    "F.multi_head_attention_forward",
    "torch.softmax", "F.softmax", "Tensor.softmax", "torch.special.softmax", "torch._softmax",
    "torch.logsumexp", "Tensor.logsumexp", "torch.special.logsumexp",
)
TILED = "tiled: no intermediate larger than a few (block x block) tiles of scores"


def tile_limit(args, kwargs) -> int:
    """The most elements one intermediate of a tiled pass may have: 4 tiles of scores per batch and head, or
    the size of q, k, v or the output (a scaled copy of q, the accumulator, the concatenated result)."""
    q, k, v = args[:3]
    batch = q[..., 0, 0].numel()
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    block = min(kwargs.get("block_size", 64), max(L, S))
    return max(4 * batch * block * block, batch * max(L, S) * max(E, Ev))


# --------------------------------------------------------------------------- cases

def _qkv(L, S, E=8, Ev=None, batch=(), dtype=f32, seed=0, **kw):
    q = randn(*batch, L, E, dtype=dtype, seed=seed)
    k = randn(*batch, S, E, dtype=dtype, seed=seed + 1)
    v = randn(*batch, S, Ev or E, dtype=dtype, seed=seed + 2)
    return call(q, k, v, **kw)


def _transposed_qkv(L, S, E, block_size):
    q, k, v = (transposed(2, n, E, seed=s) for n, s in ((L, 30), (S, 31), (S, 32)))
    return call(q, k, v, block_size=block_size)


def _climbing_scores(dtype=f64):
    """Each key block scores about 800 above the previous one: exp overflows unless the max keeps up."""
    q = randn(6, 4, seed=40, dtype=dtype, scale=0.1) + 1.0
    step = (torch.arange(24) // 8).to(dtype)[:, None] * 400.0        # key blocks of 8
    k = randn(24, 4, seed=41, dtype=dtype, scale=0.1) + step
    v = randn(24, 5, seed=42, dtype=dtype)
    return call(q, k, v, block_size=8)


def _very_negative(dtype=f32):
    """Every score is about -144: exp(score) underflows to 0 in float32 unless the running max is subtracted."""
    q = randn(2, 20, 16, seed=50, dtype=dtype, scale=0.1) + 6.0
    k = -(randn(2, 24, 16, seed=51, dtype=dtype, scale=0.1) + 6.0)
    v = randn(2, 24, 8, seed=52, dtype=dtype)
    return call(q, k, v, block_size=8)


def _case(build, *args, note="", grad=False, watch=False, tolerance=None, **kwargs):
    make = partial(build, *args, **kwargs)
    return (Watched if watch else Case)(make, note, grad, tolerance)


def _cases():
    return [
        _case(_qkv, 16, 16, block_size=4, note="block size divides L and S"),
        _case(_qkv, 13, 21, block_size=5, watch=True, note="block size divides neither L=13 nor S=21"),
        _case(_qkv, 20, 20, block_size=6, is_causal=True,
              note="causal: key blocks before, across and after the diagonal"),
        _case(_qkv, 12, 30, block_size=7, is_causal=True, watch=True,
              note="causal with L < S (top-left aligned)"),
        _case(_qkv, 30, 12, block_size=5, is_causal=True, note="causal with L > S (top-left aligned)"),
        _case(_qkv, 24, 24, E=16, Ev=8, batch=(2, 3), block_size=8, is_causal=True,
              note="batch and heads (2, 3), Ev != E"),
        _case(_qkv, 100, 90, seed=3, note="default block_size=64 (one full and one partial block)"),
        _case(_qkv, 5, 7, block_size=64, note="a single block larger than the sequence"),
        _case(_qkv, 9, 11, block_size=1, is_causal=True, note="block_size=1"),
        _case(_qkv, 17, 19, dtype=f64, block_size=4, is_causal=True, note="float64, causal"),
        _case(_transposed_qkv, 10, 14, 6, 4, note="non-contiguous (transposed) inputs"),
        _case(_climbing_scores, note="scores growing by ~800 per key block (float64)"),
        # float32 rounds a score of magnitude 144 to ~1.5e-5 (its ulp), and exp passes that on as a relative error
        # of the weights: exact online-softmax variants (exp2, FA-1's normalised output) differ from SDPA by up to
        # ~1e-5 absolute here. The mistake this case is for gives NaN.
        _case(_very_negative, watch=True, tolerance={f32: (1e-4, 5e-5)},
              note="every score about -144 in float32: exp underflows without the max"),
        _case(_qkv, 256, 256, E=16, block_size=32, watch=True, seed=5,
              note="long sequence, L = S = 256 in blocks of 32"),
        _case(_qkv, 192, 256, E=16, block_size=32, is_causal=True, watch=True, seed=6,
              note="long causal sequence, L = 192, S = 256 in blocks of 32"),
        _case(_qkv, 7, 10, E=4, dtype=f64, block_size=3, is_causal=True, grad=True, note="gradient, causal"),
        _case(_qkv, 6, 9, E=4, dtype=f64, block_size=4, grad=True, note="gradient"),
    ]


def _sdpa(q, k, v, block_size=64, is_causal=False):
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


# --------------------------------------------------------------------------- mistakes: one flexible tiled loop

def _tiled(q, k, v, block_size=64, is_causal=False, *, max_init=-math.inf, rescale_acc=True, rescale_sum=True,
           update_max=True, normalise_each_block=False, skip_diagonal=False, local_mask=False, bottom_right=False,
           drop_tail=False, ignore_causal=False):
    L, S = q.shape[-2], k.shape[-2]
    causal = is_causal and not ignore_causal
    shift = S - L if bottom_right else 0
    last = S - S % block_size if drop_tail and S % block_size else S
    outs = []
    for i0 in range(0, L, block_size):
        qi = q[..., i0:i0 + block_size, :] / math.sqrt(q.shape[-1])
        rows = torch.arange(i0, i0 + qi.shape[-2])[:, None] + shift
        m = torch.full((*qi.shape[:-1], 1), max_init, dtype=q.dtype)
        l = torch.zeros_like(m)
        acc = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
        for j0 in range(0, last, block_size):
            if causal and (j0 >= i0 + shift if skip_diagonal else j0 > int(rows[-1])):
                break
            kj, vj = k[..., j0:j0 + block_size, :], v[..., j0:j0 + block_size, :]
            s = qi @ kj.transpose(-2, -1)
            if causal:
                cols = torch.arange(j0, j0 + kj.shape[-2])
                hidden = (cols - j0 > rows - i0 - shift) if local_mask else (cols > rows)
                s = s.masked_fill(hidden, -math.inf)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True)) if (update_max or j0 == 0) else m
            alpha = torch.exp(m - m_new)
            p = torch.exp(s - m_new)
            l = (l * alpha if rescale_sum else l) + p.sum(-1, keepdim=True)
            acc = (acc * alpha if rescale_acc else acc) + p @ vj
            if normalise_each_block:
                acc = acc / l
            m = m_new
        outs.append(acc if normalise_each_block else acc / l)
    return torch.cat(outs, -2)


def flash_full_scores(q, k, v, block_size=64, is_causal=False):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    p = torch.exp(s - s.amax(-1, keepdim=True))
    return (p / p.sum(-1, keepdim=True)) @ v


def flash_query_block_against_all_keys(q, k, v, block_size=64, is_causal=False):
    L, S = q.shape[-2], k.shape[-2]
    outs = []
    for i0 in range(0, L, block_size):
        s = q[..., i0:i0 + block_size, :] @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])    # (..., block, S)
        if is_causal:
            rows = torch.arange(i0, min(i0 + block_size, L))[:, None]
            s = s.masked_fill(torch.arange(S) > rows, -math.inf)
        p = torch.exp(s - s.amax(-1, keepdim=True))
        outs.append((p / p.sum(-1, keepdim=True)) @ v)
    return torch.cat(outs, -2)


def flash_builtin(q, k, v, block_size=64, is_causal=False):
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


register(TiledExercise(
    name="flash_attention",
    chapter="attention/flash_attention",
    signature="flash_attention(q, k, v, block_size=64, is_causal=False)",
    oracle=_sdpa,
    cases=_cases,
    limit=tile_limit,
    limit_label=TILED,
    forbidden=FORBIDDEN,
    timeout=10.0,           # the watched cases run under a TorchDispatchMode, several times slower than plain torch
    hints=("visit the keys in blocks, keeping per query a running max, a running sum and an unnormalised output; "
           "divide once at the end   (eqs. fa-max, fa-sum, fa-acc, fa-out)",
           "when the running max grows from m to m', rescale both the sum and the output by exp(m - m') before "
           "adding the block; causal: skip blocks entirely in the future and mask the diagonal block with global "
           "positions",
           "per key block: m' = max(m, rowmax(S_j)); P = exp(S_j - m'); l = e^(m-m') l + rowsum(P); "
           "O = e^(m-m') O + P V_j; at the end O / l   (eqs. fa-max, fa-sum, fa-acc)"),
    mistakes=[
        Mistake("accumulator not rescaled", partial(_tiled, rescale_acc=False),
                "the output accumulator is not rescaled: when the running max grows from m to m', multiply "
                "the old accumulator by exp(m - m') before adding P_j V_j, as you do for the running sum."),
        Mistake("sum not rescaled", partial(_tiled, rescale_sum=False),
                "the running sum is not rescaled: when the running max grows from m to m', the old sum must "
                "be multiplied by exp(m - m') before adding this block's row sums."),
        Mistake("max not updated", partial(_tiled, update_max=False),
                "your running max is never updated after the first block: a later block with larger scores "
                "overflows exp(s - m). Take m' = max(m, rowmax of the block) at every block."),
        Mistake("normalised per block", partial(_tiled, normalise_each_block=True),
                "you divide by the running sum inside the loop: the accumulator must stay unnormalised "
                "(sum of exp(s - m) v) and be divided by the final sum l only once, after the last block."),
        Mistake("drops the last partial block", partial(_tiled, drop_tail=True),
                "the last key block is dropped when block_size does not divide S: loop j0 over "
                "range(0, S, block_size) and slice k[..., j0:j0 + block_size] (the slice stops at S)."),
        Mistake("skips the diagonal block", partial(_tiled, skip_diagonal=True),
                "your causal loop stops before the key block on the diagonal: that block is only partly "
                "masked; skip a key block only when its first key comes after the query block's last row."),
        Mistake("block-local causal mask", partial(_tiled, local_mask=True),
                "your causal mask compares positions inside the tile: compare global positions, key "
                "j0 + c against query i0 + r, so blocks wholly below the diagonal stay unmasked."),
        Mistake("bottom-right causal", partial(_tiled, bottom_right=True),
                "your causal mask is aligned bottom-right (query i sees keys up to i + S - L); PyTorch's "
                "is_causal is top-left aligned: query i sees keys 0..i."),
        Mistake("ignores is_causal", partial(_tiled, ignore_causal=True),
                "is_causal=True is ignored: mask the keys j > i (top-left aligned) and skip key blocks that "
                "start after the query block's last row."),
        Mistake("full score matrix", flash_full_scores,
                "the values are right but your code creates a tensor as large as the whole (L, S) score matrix "
                "(the scores, the weights, or a full (L, S) causal mask): FlashAttention visits the keys block by "
                "block, keeps only a running max, a running sum and an accumulator, and builds each tile's causal "
                "mask from global positions."),
        Mistake("one axis untiled", flash_query_block_against_all_keys,
                "the values are right but your tiles of scores span a whole sequence: a query block scored "
                "against all S keys, or all L queries against a key block. FlashAttention tiles both axes: for "
                "each query block, visit the keys block by block with a running max, a running sum and an "
                "accumulator, so no intermediate is larger than a few (block x block) tiles."),
        Mistake("running max starts at zero", partial(_tiled, max_init=0.0),
                "your running max starts at 0 instead of -inf: when every score is far below 0, exp(s - 0) "
                "underflows to 0, the running sum is 0 and the output 0/0 = NaN. Start m at -inf."),
        Mistake("calls the built-in", flash_builtin,
                "this exercise asks you to write the tiled loop yourself: F.scaled_dot_product_attention and "
                "softmax are off limits; use matmul, exp, amax and sum."),
    ],
    bench=(lambda: _qkv(1024, 1024, E=64, batch=(4,), block_size=128), _sdpa),
))
