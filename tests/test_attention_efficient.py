"""GroupedQueryAttention (KV cache) and flash_attention: oracles against independent computations, the
memory tracker, and wrong inputs specific to these exercises."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.grader import get, run
from utils.grader.exercises.attention import flash_attention as fa
from utils.grader.exercises.attention import grouped_query_attention as gqa
from utils.grader.kinds import Watched
from utils.memory import TensorMemory, peak_bytes

GQA_CHAPTER = "attention/grouped_query_attention"
FLASH_CHAPTER = "attention/flash_attention"


def _randomized(cls, *args, seed=0, **kwargs):
    m = cls(*args, **kwargs)
    m.load_state_dict(gqa.scaled_state(m.state_dict(), torch.Generator().manual_seed(seed)))
    return m


# --------------------------------------------------------------------------- the GQA oracle

def test_gqa_oracle_mha_equals_nn_multiheadattention():
    """With n_kv_heads = n_heads the oracle is plain causal multi-head attention."""
    d, h = 16, 4
    spec = _randomized(gqa.GroupedQueryAttentionSpec, d, h, h, bias=True)
    ref = nn.MultiheadAttention(d, h, bias=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([spec.q_proj.weight, spec.k_proj.weight, spec.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([spec.q_proj.bias, spec.k_proj.bias, spec.v_proj.bias]))
        ref.out_proj.weight.copy_(spec.o_proj.weight)
        ref.out_proj.bias.copy_(spec.o_proj.bias)
    x = torch.randn(2, 6, d)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
    got, (k, v) = spec(x)
    torch.testing.assert_close(got, expected)
    assert k.shape == v.shape == (2, h, 6, d // h)


def test_gqa_oracle_groups_query_heads_by_integer_division():
    """A loop over query heads, head h reading kv head h // (n_heads // n_kv_heads)."""
    d, h, kv, T = 24, 6, 2, 5
    spec = _randomized(gqa.GroupedQueryAttentionSpec, d, h, kv, seed=3)
    x = torch.randn(1, T, d)
    hd = d // h
    q = spec.q_proj(x).view(T, h, hd)
    k = spec.k_proj(x).view(T, kv, hd)
    v = spec.v_proj(x).view(T, kv, hd)
    heads = []
    for head in range(h):
        j = head // (h // kv)
        s = q[:, head] @ k[:, j].T / math.sqrt(hd)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
        heads.append(torch.softmax(s, -1) @ v[:, j])
    expected = spec.o_proj(torch.cat(heads, -1))[None]
    torch.testing.assert_close(spec(x)[0], expected)


@pytest.mark.parametrize("chunks", [[9], [4, 5], [1] * 9, [3, 1, 5], [2, 2, 2, 3]])
def test_gqa_oracle_chunked_equals_one_call(chunks):
    spec = _randomized(gqa.GroupedQueryAttentionSpec, 32, 8, 2)
    x = torch.randn(2, 9, 32)
    full, (k_full, v_full) = spec(x)
    outs, cache, start = [], None, 0
    for n in chunks:
        y, cache = spec(x[:, start:start + n], past_kv=cache)
        outs.append(y)
        start += n
    torch.testing.assert_close(torch.cat(outs, 1), full)
    torch.testing.assert_close(cache[0], k_full)
    torch.testing.assert_close(cache[1], v_full)
    assert cache[0].shape == (2, 2, 9, 4)


def test_gqa_cases_cover_mqa_gqa_mha_and_decoding():
    cases = [c.make() for c in get("GroupedQueryAttention").all_cases()]
    ratios = {(s.init[0][1], s.init[0][2]) for s in cases}
    assert any(kv == 1 for _, kv in ratios) and any(h == kv for h, kv in ratios)
    assert any(1 < kv < h for h, kv in ratios)
    decoding = [s for s in cases if sum(callable(st.inputs) for st in s.steps) >= 4]
    assert decoding, "no case decodes token by token with the cache"


# --------------------------------------------------------------------------- the GQA solution and bad inputs

@pytest.mark.parametrize("chunks", [[7], [3, 4], [1] * 7, [5, 2]])
def test_book_gqa_decodes_like_one_call(book, chunks):
    GQA = book(GQA_CHAPTER)["GroupedQueryAttention"]
    torch.manual_seed(0)
    m = GQA(32, 8, 2)
    x = torch.randn(1, 7, 32)
    full, _ = m(x)
    outs, cache, start = [], None, 0
    for n in chunks:
        y, cache = m(x[:, start:start + n], past_kv=cache)
        outs.append(y)
        start += n
    torch.testing.assert_close(torch.cat(outs, 1), full)
    assert cache[0].shape == (1, 2, 7, 4)


def test_gqa_instance_instead_of_class():
    report = run("GroupedQueryAttention", gqa.GroupedQueryAttentionSpec(32, 8, 2))
    assert not report.passed and report.kind == "wrong-type"
    assert "not an instance" in str(report)


class _RenamedProjections(gqa._GQA):
    def __init__(self, d_model, n_heads, n_kv_heads, bias=False):
        super().__init__(d_model, n_heads, n_kv_heads, bias)
        self.wq = self.q_proj
        del self.q_proj

    def forward(self, x, past_kv=None):
        raise AssertionError("never reached: the parameter names are checked first")


def test_gqa_wrong_parameter_names():
    report = run("GroupedQueryAttention", _RenamedProjections)
    assert not report.passed
    assert "q_proj" in str(report) and "wq" in str(report)


class _OutputOnly(gqa._GQA):
    def forward(self, x, past_kv=None):
        return super().forward(x, past_kv)[0]


class _ReturnsNothing(gqa._GQA):
    def forward(self, x, past_kv=None):
        super().forward(x, past_kv)


@pytest.mark.parametrize("impl", [_OutputOnly, _ReturnsNothing])
def test_gqa_wrong_return_fails_without_crashing(impl):
    report = run("GroupedQueryAttention", impl)
    assert not report.passed and report.failure.case == 0
    assert report.kind in ("wrong-type", "returned-none", "exception")


def test_gqa_cache_shape_is_reported():
    report = run("GroupedQueryAttention", gqa.CacheOfRepeatedHeads)
    assert report.kind == "wrong-shape"
    assert "(2, 8, 7, 4)" in str(report) and "(2, 2, 7, 4)" in str(report)


# --------------------------------------------------------------------------- the memory tracker

def _naive(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v


def test_tracker_sees_the_score_matrix_and_not_the_inputs():
    q, k, v = torch.randn(40, 8), torch.randn(60, 8), torch.randn(60, 8)
    with TensorMemory() as mem:
        _naive(q, k, v)
    assert mem.largest_numel == 40 * 60 and mem.largest_shape == (40, 60)
    with TensorMemory() as mem:
        q[:, :4].t()                                # views allocate nothing
    assert mem.largest_numel == 0 and mem.peak_bytes == 0


def test_tracker_frees_dead_tensors():
    x = torch.randn(1000)
    with TensorMemory() as mem:
        for _ in range(5):
            y = x * 2                               # each iteration frees the previous y
        del y
    assert mem.peak_bytes == 2 * 4000            # the new y exists before the old one is freed
    assert mem.live_bytes == 0                   # nothing created inside outlives the block


def test_peak_memory_naive_quadratic_tiled_linear(book):
    flash = book(FLASH_CHAPTER)["flash_attention"]
    sizes = (128, 256)
    naive, tiled = [], []
    for L in sizes:
        q, k, v = torch.randn(L, 16), torch.randn(L, 16), torch.randn(L, 16)
        naive.append(peak_bytes(_naive, q, k, v))
        tiled.append(peak_bytes(flash, q, k, v, block_size=32))
    assert naive[1] / naive[0] > 3.5              # doubling L quadruples the score matrix
    assert tiled[1] / tiled[0] < 2.5              # and only doubles the tiled working set
    assert tiled[1] < naive[1] / 4


# --------------------------------------------------------------------------- flash_attention

def test_book_flash_equals_sdpa_on_odd_blocks(book):
    flash = book(FLASH_CHAPTER)["flash_attention"]
    q, k, v = torch.randn(2, 37, 8), torch.randn(2, 53, 8), torch.randn(2, 53, 6)
    for causal in (False, True):
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        for block in (1, 5, 16, 64, 100):
            torch.testing.assert_close(flash(q, k, v, block_size=block, is_causal=causal), expected)


def test_flash_cases_watch_the_long_sequences():
    cases = get("flash_attention").all_cases()
    watched = [c for c in cases if isinstance(c, Watched)]
    assert len(watched) >= 3
    for c in watched:
        (q, k, v), kw = c.make()
        L, S, block = q.shape[-2], k.shape[-2], kw.get("block_size", 64)
        batch = q[..., 0, 0].numel()
        # a block of scores fits; a (block, S) row of scores and the (L, S) matrix do not (on the long cases)
        assert fa.tile_limit((q, k, v), kw) >= batch * block * block
        assert fa.tile_limit((q, k, v), kw) < batch * L * S
    long = [c for c in watched if c.make()[0][0].shape[-2] >= 128]
    assert len(long) >= 2 and all(fa.tile_limit(*c.make()) < 32 * c.make()[0][1].shape[-2] for c in long)
    assert any(kw.get("is_causal") for (_, kw) in (c.make() for c in watched))


def _tiled_but_full_causal_mask(q, k, v, block_size=64, is_causal=False):
    """Right values, tiled scores, but a precomputed (L, S) causal mask: still quadratic memory."""
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).triu(1) if is_causal else None
    L, S = q.shape[-2], k.shape[-2]
    m = torch.full((*q.shape[:-1], 1), -math.inf, dtype=q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j0 in range(0, S, block_size):
        s = q @ k[..., j0:j0 + block_size, :].transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            s = s.masked_fill(mask[:, j0:j0 + block_size], -math.inf)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        l = l * torch.exp(m - m_new) + p.sum(-1, keepdim=True)
        acc = acc * torch.exp(m - m_new) + p @ v[..., j0:j0 + block_size, :]
        m = m_new
    assert L == acc.shape[-2]
    return acc / l


def test_flash_full_mask_counts_as_materialising():
    report = run("flash_attention", _tiled_but_full_causal_mask)
    assert not report.passed
    assert report.failure.problem.where == fa.TILED
    assert "causal" in report.failure.note


def _keys_tiled_only(q, k, v, block_size=64, is_causal=False):
    """Every query at once, keys in blocks: tiles of (L, block) elements, larger than a few block x block tiles."""
    L, S = q.shape[-2], k.shape[-2]
    rows = torch.arange(L)[:, None]
    m = torch.full((*q.shape[:-1], 1), -math.inf, dtype=q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j0 in range(0, S, block_size):
        s = q @ k[..., j0:j0 + block_size, :].transpose(-2, -1) / math.sqrt(q.shape[-1])
        if is_causal:
            s = s.masked_fill(torch.arange(j0, j0 + s.shape[-1]) > rows, -math.inf)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        l = l * torch.exp(m - m_new) + p.sum(-1, keepdim=True)
        acc = acc * torch.exp(m - m_new) + p @ v[..., j0:j0 + block_size, :]
        m = m_new
    return acc / l


def test_flash_keys_tiled_only_is_rejected_as_untiled():
    report = run("flash_attention", _keys_tiled_only)
    assert not report.passed and report.failure.problem.where == fa.TILED, str(report)
    assert report.failure.mistake in (None, "one axis untiled"), str(report)


def test_flash_very_negative_scores_need_the_running_max():
    report = run("flash_attention", partial(fa._tiled, max_init=0.0))
    assert report.failure.mistake == "running max starts at zero"
    assert "-144" in report.failure.note


def test_flash_sdpa_is_forbidden():
    report = run("flash_attention", fa.flash_builtin)
    assert report.kind == "forbidden-call"
