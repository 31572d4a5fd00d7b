"""Part 9, efficient fine-tuning and inference: the MoE and KV-cache-systems declarations
(utils/grader/exercises/efficiency/moe.py and kv_cache_systems.py).

The oracles are checked against the field's references (transformers' Mixtral sparse MoE block and its
`load_balancing_loss_func`, PyTorch's scaled_dot_product_attention, hand-computed masks); correct solutions in
other styles pass; wrong code as candidates write it is rejected; bad input gives a clear report."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock, load_balancing_loss_func

from utils.grader.core import evaluate
from utils.grader.exercises.efficiency import kv_cache_systems as kv_decl
from utils.grader.exercises.efficiency import moe as moe_decl
from utils.grader.registry import get

f64 = torch.float64


def _quick(name):
    """The registered exercise with a short time limit, for the endless-loop cases."""
    return dataclasses.replace(get(name), timeout=0.5)


# =========================================================================== MoE: oracles against transformers

@pytest.mark.parametrize("seed,n_experts,top_k", [(0, 4, 2), (1, 8, 2), (2, 8, 1), (3, 4, 3)])
def test_moe_oracle_matches_mixtral_block(seed, n_experts, top_k):
    torch.manual_seed(seed)
    d, d_ff = 16, 24
    spec = moe_decl.MoESpec(d, d_ff, n_experts, top_k=top_k)
    state = moe_decl.trained_scale(spec.state_dict(), torch.Generator().manual_seed(seed))
    spec.load_state_dict(state)
    cfg = MixtralConfig(hidden_size=d, intermediate_size=d_ff, num_local_experts=n_experts,
                        num_experts_per_tok=top_k, router_jitter_noise=0.0)
    block = MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        block.gate.weight.copy_(spec.router.weight)
        for e, expert in enumerate(spec.experts):
            block.experts.gate_up_proj[e].copy_(torch.cat([expert.w1.weight, expert.w3.weight], 0))
            block.experts.down_proj[e].copy_(expert.w2.weight)
        x = torch.randn(3, 5, d, generator=torch.Generator().manual_seed(seed + 10))
        out, logits = spec(x)
        torch.testing.assert_close(out, block(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits, F.linear(x.reshape(-1, d), block.gate.weight))


@pytest.mark.parametrize("seed,n_tokens,n_experts,top_k", [(0, 10, 4, 2), (1, 33, 8, 2), (2, 7, 8, 1), (3, 20, 8, 3),
                                                            (4, 1, 4, 2), (5, 16, 4, 4)])
def test_load_balancing_oracle_matches_transformers(seed, n_tokens, n_experts, top_k):
    logits = torch.randn(n_tokens, n_experts, generator=torch.Generator().manual_seed(seed)) * (1 + seed)
    ref = load_balancing_loss_func((logits,), n_experts, top_k)
    torch.testing.assert_close(moe_decl.load_balancing_loss_spec(logits, n_experts, top_k), ref)


def test_load_balancing_hand_values():
    assert moe_decl.load_balancing_loss_spec(torch.zeros(6, 4, dtype=f64), 4, 2).item() == pytest.approx(2.0)
    one_expert = torch.full((5, 4), -50.0, dtype=f64)
    one_expert[:, 1] = 50.0
    assert moe_decl.load_balancing_loss_spec(one_expert, 4, 1).item() == pytest.approx(4.0)


# =========================================================================== MoE: valid styles pass

class _Base(nn.Module):
    def __init__(self, d_model, d_ff, n_experts, top_k=2):
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(moe_decl.SwiGLUSpec(d_model, d_ff) for _ in range(n_experts))


class TopLogitsThenSoftmax(_Base):
    """Mixtral's reference code: top-k of the logits, softmax over the kept logits (eq. moe-equiv)."""

    def forward(self, x):
        h = x.flatten(0, 1)
        logits = self.router(h)
        kept, idx = logits.topk(self.top_k, -1)
        w = torch.softmax(kept, -1)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            t, s = torch.where(idx == e)
            out = out.index_put((t,), w[t, s, None] * expert(h[t]), accumulate=True)
        return out.view_as(x), logits


class PerToken(_Base):
    """A loop over the tokens and their slots."""

    def forward(self, x):
        h = x.reshape(-1, x.shape[-1])
        logits = self.router(h)
        rows = []
        for t in range(h.shape[0]):
            p = torch.exp(logits[t] - logits[t].max())
            p = p / p.sum()
            w, idx = p.topk(self.top_k)
            w = w / w.sum()
            rows.append(sum(w[j] * self.experts[int(idx[j])](h[t]) for j in range(self.top_k)))
        return torch.stack(rows).view_as(x), logits


class EveryExpertMasked(_Base):
    """Every expert on every token, weighted by a dense (N, E) gate that is zero off the top-k."""

    def forward(self, x):
        h = x.reshape(-1, x.shape[-1])
        logits = self.router(h)
        w, idx = logits.softmax(-1).topk(self.top_k, -1)
        gate = torch.zeros_like(logits).scatter(1, idx, w / w.sum(-1, keepdim=True))
        outs = torch.stack([expert(h) for expert in self.experts], 1)          # (N, E, D)
        return torch.einsum("ne,ned->nd", gate, outs).view_as(x), logits


@pytest.mark.parametrize("impl", [TopLogitsThenSoftmax, PerToken, EveryExpertMasked], ids=lambda c: c.__name__)
def test_moe_valid_styles_pass(impl):
    report = evaluate(get("MoE"), impl)
    assert report.passed, str(report)


def lbl_bincount(router_logits, n_experts, top_k):
    p = router_logits.softmax(-1)
    counts = torch.bincount(p.topk(top_k, -1).indices.flatten(), minlength=n_experts)
    return n_experts * torch.dot(counts.to(p.dtype) / p.shape[0], p.mean(0))


def lbl_loops(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    N = p.shape[0]
    total = 0
    for e in range(n_experts):
        chosen = sum(int(e in p[t].topk(top_k).indices.tolist()) for t in range(N))
        total = total + chosen / N * p[:, e].mean()
    return n_experts * total


def lbl_einsum(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    mask = F.one_hot(p.topk(top_k, -1).indices, n_experts).to(p.dtype)        # (N, k, E)
    return n_experts * torch.einsum("nke,me->", mask, p) / p.shape[0] ** 2


@pytest.mark.parametrize("impl", [lbl_bincount, lbl_loops, lbl_einsum], ids=lambda f: f.__name__)
def test_load_balancing_valid_styles_pass(impl):
    report = evaluate(get("load_balancing_loss"), impl)
    assert report.passed, str(report)


# =========================================================================== MoE: wrong code as candidates write it

class SmallestExperts(_Base):
    """topk(largest=False): the least likely experts."""

    def forward(self, x):
        h = x.reshape(-1, x.shape[-1])
        logits = self.router(h)
        w, idx = logits.softmax(-1).topk(self.top_k, -1, largest=False)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            t, s = torch.where(idx == e)
            out = out.index_put((t,), w[t, s, None] * expert(h[t]), accumulate=True)
        return out.view_as(x), logits


class SoftMixtureOfAll(_Base):
    """No top-k at all: every expert weighted by its probability."""

    def forward(self, x):
        h = x.reshape(-1, x.shape[-1])
        logits = self.router(h)
        p = logits.softmax(-1)
        return sum(p[:, e, None] * expert(h) for e, expert in enumerate(self.experts)).view_as(x), logits


class TopTwoAlways(EveryExpertMasked):
    """top_k ignored: always 2."""

    def __init__(self, d_model, d_ff, n_experts, top_k=2):
        super().__init__(d_model, d_ff, n_experts, top_k=2)


class RoutedPerSequence(_Base):
    """One routing decision per sequence (mean of its tokens' logits)."""

    def forward(self, x):
        B, T, D = x.shape
        logits = self.router(x)                                                 # (B, T, E)
        w, idx = logits.mean(1).softmax(-1).topk(self.top_k, -1)              # (B, k)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for b in range(B):
            for j in range(self.top_k):
                out[b] = out[b] + w[b, j] * self.experts[int(idx[b, j])](x[b])
        return out, logits.reshape(B * T, -1)


class ResidualAdded(EveryExpertMasked):
    """Adds the input back: the residual belongs to the block, not to the MoE layer."""

    def forward(self, x):
        out, logits = super().forward(x)
        return out + x, logits


def lbl_mean_over_slots_and_experts(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    f = F.one_hot(p.topk(top_k, -1).indices, n_experts).to(p.dtype).mean(0)   # (k, E)
    return n_experts * (f * p.mean(0)).mean()


def lbl_from_logits(router_logits, n_experts, top_k):
    f = F.one_hot(router_logits.topk(top_k, -1).indices, n_experts).sum(1).to(router_logits.dtype).mean(0)
    return n_experts * (f * router_logits.mean(0)).sum()


def lbl_squared_load(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    f = F.one_hot(p.topk(top_k, -1).indices, n_experts).sum(1).to(p.dtype).mean(0)
    return n_experts * (f * f).sum()


def lbl_python_float(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    f = F.one_hot(p.topk(top_k, -1).indices, n_experts).sum(1).to(p.dtype).mean(0)
    return float(n_experts * (f * p.mean(0)).sum())


def lbl_variance(router_logits, n_experts, top_k):
    p = torch.softmax(router_logits, -1)
    return p.mean(0).var() * n_experts


@pytest.mark.parametrize("impl", [SmallestExperts, SoftMixtureOfAll, TopTwoAlways, RoutedPerSequence, ResidualAdded],
                         ids=lambda c: c.__name__)
def test_moe_wrong_code_is_rejected(impl):
    report = evaluate(get("MoE"), impl)
    assert not report.passed


@pytest.mark.parametrize("impl", [lbl_mean_over_slots_and_experts, lbl_from_logits, lbl_squared_load,
                                  lbl_python_float, lbl_variance], ids=lambda f: f.__name__)
def test_load_balancing_wrong_code_is_rejected(impl):
    report = evaluate(get("load_balancing_loss"), impl)
    assert not report.passed


# =========================================================================== MoE: bad input

class _Raises(_Base):
    def forward(self, x):
        raise ValueError("boom")


class _ReturnsOne(EveryExpertMasked):
    def forward(self, x):
        return super().forward(x)[0]


class _NaN(EveryExpertMasked):
    def forward(self, x):
        out, logits = super().forward(x)
        return out * float("nan"), logits


class _Endless(_Base):
    def forward(self, x):
        while True:
            pass


@pytest.mark.parametrize("impl", [_Raises, _ReturnsOne, _NaN, _Endless], ids=lambda c: c.__name__)
def test_moe_bad_input_gives_a_clear_report(impl):
    report = evaluate(_quick("MoE"), impl)
    assert not report.passed and str(report)


def _lbl_raises(router_logits, n_experts, top_k):
    raise RuntimeError("boom")


def _lbl_numpy(router_logits, n_experts, top_k):
    return lbl_bincount(router_logits, n_experts, top_k).detach().numpy()


def _lbl_edits_input(router_logits, n_experts, top_k):
    router_logits -= router_logits.max(-1, keepdim=True).values
    return lbl_bincount(router_logits, n_experts, top_k)


def _lbl_vector(router_logits, n_experts, top_k):
    return lbl_bincount(router_logits, n_experts, top_k).expand(n_experts)


def _lbl_endless(router_logits, n_experts, top_k):
    while True:
        pass


@pytest.mark.parametrize("impl", [_lbl_raises, _lbl_numpy, _lbl_edits_input, _lbl_vector, _lbl_endless],
                         ids=lambda f: f.__name__)
def test_load_balancing_bad_input_gives_a_clear_report(impl):
    report = evaluate(_quick("load_balancing_loss"), impl)
    assert not report.passed and str(report)


# =========================================================================== sliding_window_causal_mask

@pytest.mark.parametrize("q_len,k_len,window", [(5, 5, 2), (3, 8, 4), (1, 6, 3), (4, 4, 1), (4, 9, 20), (6, 6, 6)])
def test_sliding_mask_oracle_is_a_band_of_tril(q_len, k_len, window):
    full = torch.ones(k_len, k_len, dtype=torch.bool)
    band = full.tril() & ~full.tril(-window)                                    # keys p - window + 1 .. p
    assert torch.equal(kv_decl.sliding_window_spec(q_len, k_len, window), band[k_len - q_len:])


def test_sliding_mask_hand_values():
    want = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)         # queries at positions 2 and 3
    assert torch.equal(kv_decl.sliding_window_spec(2, 4, 2), want)


def swm_tril(q_len, k_len, window):
    full = torch.ones(k_len, k_len, dtype=torch.bool)
    return (full.tril() & ~full.tril(-window))[k_len - q_len:]


def swm_loops(q_len, k_len, window):
    return torch.tensor([[k_len - q_len + i - window < j <= k_len - q_len + i for j in range(k_len)]
                         for i in range(q_len)], dtype=torch.bool).reshape(q_len, k_len)


@pytest.mark.parametrize("impl", [swm_tril, swm_loops], ids=lambda f: f.__name__)
def test_sliding_mask_valid_styles_pass(impl):
    report = evaluate(get("sliding_window_causal_mask"), impl)
    assert report.passed, str(report)


def swm_int(q_len, k_len, window):
    return swm_tril(q_len, k_len, window).int()


def swm_tril_wrong_diagonal(q_len, k_len, window):
    full = torch.ones(k_len, k_len, dtype=torch.bool)
    return (full.tril() & ~full.tril(-window - 1))[k_len - q_len:]


def swm_first_rows(q_len, k_len, window):
    full = torch.ones(k_len, k_len, dtype=torch.bool)
    return (full.tril() & ~full.tril(-window))[:q_len]


@pytest.mark.parametrize("impl", [swm_int, swm_tril_wrong_diagonal, swm_first_rows], ids=lambda f: f.__name__)
def test_sliding_mask_wrong_code_is_rejected(impl):
    assert not evaluate(get("sliding_window_causal_mask"), impl).passed


# =========================================================================== paged_attention

@pytest.mark.parametrize("seed,H,H_kv,block_size", [(0, 4, 4, 4), (1, 8, 4, 1), (2, 8, 2, 4), (3, 4, 1, 16)])
def test_paged_oracle_equals_dense_attention(seed, H, H_kv, block_size):
    """Write contiguous sequences into random blocks; the oracle must equal SDPA over the contiguous keys."""
    g = torch.Generator().manual_seed(seed)
    lens, d = [5, 17, 1], 8
    max_blocks = max(math.ceil(n / block_size) for n in lens)
    n_blocks = len(lens) * max_blocks + 2
    k_cache, v_cache = torch.randn(n_blocks, block_size, H_kv, d, generator=g, dtype=f64), \
        torch.randn(n_blocks, block_size, H_kv, d, generator=g, dtype=f64)
    tables = torch.randperm(n_blocks, generator=g)[:len(lens) * max_blocks].view(len(lens), max_blocks)
    q = torch.randn(len(lens), H, d, generator=g, dtype=f64)
    want = []
    for b, n in enumerate(lens):
        k, v = torch.randn(n, H_kv, d, generator=g, dtype=f64), torch.randn(n, H_kv, d, generator=g, dtype=f64)
        for p in range(n):
            k_cache[tables[b, p // block_size], p % block_size] = k[p]
            v_cache[tables[b, p // block_size], p % block_size] = v[p]
        want.append(F.scaled_dot_product_attention(q[b][:, None], k.transpose(0, 1), v.transpose(0, 1),
                                                   enable_gqa=True)[:, 0])
    got = kv_decl.paged_attention_spec(q, k_cache, v_cache, tables, torch.tensor(lens))
    torch.testing.assert_close(got, torch.stack(want))


def pa_sdpa(q, k_cache, v_cache, block_tables, seq_lens):
    outs = []
    for b in range(q.shape[0]):
        pos = torch.arange(int(seq_lens[b]))
        k = k_cache[block_tables[b, pos // k_cache.shape[1]], pos % k_cache.shape[1]].transpose(0, 1)
        v = v_cache[block_tables[b, pos // v_cache.shape[1]], pos % v_cache.shape[1]].transpose(0, 1)
        outs.append(F.scaled_dot_product_attention(q[b][:, None], k, v, enable_gqa=True)[:, 0])
    return torch.stack(outs)


def pa_padded(q, k_cache, v_cache, block_tables, seq_lens):
    """Vectorised: gather every block of every table, mask the positions past seq_lens."""
    B, H, d = q.shape
    _, bs, H_kv, _ = k_cache.shape
    k = k_cache[block_tables].flatten(1, 2)                                   # (B, max_blocks * bs, H_kv, d)
    v = v_cache[block_tables].flatten(1, 2)
    k, v = k.repeat_interleave(H // H_kv, 2), v.repeat_interleave(H // H_kv, 2)
    s = torch.einsum("bhd,bnhd->bhn", q, k) / math.sqrt(d)
    valid = torch.arange(k.shape[1])[None, :] < seq_lens[:, None]              # (B, n)
    s = s.masked_fill(~valid[:, None, :], float("-inf"))
    return torch.einsum("bhn,bnhd->bhd", s.softmax(-1), v)


@pytest.mark.parametrize("impl", [pa_sdpa, pa_padded], ids=lambda f: f.__name__)
def test_paged_valid_styles_pass(impl):
    report = evaluate(get("paged_attention"), impl)
    assert report.passed, str(report)


def pa_first_table(q, k_cache, v_cache, block_tables, seq_lens):
    return pa_sdpa(q, k_cache, v_cache, block_tables[:1].expand_as(block_tables), seq_lens)


def pa_first_kv_head(q, k_cache, v_cache, block_tables, seq_lens):
    return pa_sdpa(q, k_cache[:, :, :1], v_cache[:, :, :1], block_tables, seq_lens)


def pa_softmax_over_heads(q, k_cache, v_cache, block_tables, seq_lens):
    B, H, d = q.shape
    out = []
    for b in range(B):
        pos = torch.arange(int(seq_lens[b]))
        k = k_cache[block_tables[b, pos // k_cache.shape[1]], pos % k_cache.shape[1]]
        v = v_cache[block_tables[b, pos // k_cache.shape[1]], pos % k_cache.shape[1]]
        k, v = k.repeat_interleave(H // k.shape[1], 1), v.repeat_interleave(H // v.shape[1], 1)
        a = (torch.einsum("hd,nhd->hn", q[b], k) / math.sqrt(d)).softmax(0)
        out.append(torch.einsum("hn,nhd->hd", a, v))
    return torch.stack(out)


@pytest.mark.parametrize("impl", [pa_first_table, pa_first_kv_head, pa_softmax_over_heads], ids=lambda f: f.__name__)
def test_paged_wrong_code_is_rejected(impl):
    assert not evaluate(get("paged_attention"), impl).passed


# =========================================================================== mla_absorbed_attention

@pytest.mark.parametrize("seed", range(3))
def test_mla_oracle_equals_sdpa_on_concatenated_heads(seed):
    """Naive MLA is MHA whose head h has key [W_uk[h] c, k_rope] and query [q_nope, q_rope]: SDPA on those."""
    args, _ = kv_decl._mla(2, 4, 9, 16, 8, 12, 10, seed=seed, dtype=f64)
    q_nope, q_rope, c_kv, k_rope, W_uk, W_uv = args
    H = q_nope.shape[1]
    k = torch.cat([torch.einsum("bsc,hnc->bhsn", c_kv, W_uk),
                   k_rope[:, None].expand(-1, H, -1, -1)], -1)                  # (B, H, S, d_nope + d_rope)
    v = torch.einsum("bsc,hvc->bhsv", c_kv, W_uv)
    q = torch.cat([q_nope, q_rope], -1)[:, :, None]                             # (B, H, 1, d_nope + d_rope)
    want = F.scaled_dot_product_attention(q, k, v)[:, :, 0]
    torch.testing.assert_close(kv_decl.mla_naive_spec(*args), want)


def mla_three_operand_einsum(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    """The scores through the latent; the weights, the latent and W_uv contracted in one einsum."""
    q_lat = torch.einsum("bhn,hnc->bhc", q_nope, W_uk)
    s = torch.einsum("bhc,bsc->bhs", q_lat, c_kv) + torch.einsum("bhr,bsr->bhs", q_rope, k_rope)
    a = torch.softmax(s * (q_nope.shape[-1] + q_rope.shape[-1]) ** -0.5, -1)
    return torch.einsum("bhs,bsc,hvc->bhv", a, c_kv, W_uv)


def mla_per_head_loop(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    outs = []
    for h in range(q_nope.shape[1]):
        q_lat = q_nope[:, h] @ W_uk[h]                                          # (B, d_c)
        s = (c_kv @ q_lat[:, :, None])[..., 0] + (k_rope @ q_rope[:, h, :, None])[..., 0]
        a = torch.softmax(s / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1]), -1)
        outs.append((a[:, None] @ c_kv)[:, 0] @ W_uv[h].T)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("impl", [mla_three_operand_einsum, mla_per_head_loop], ids=lambda f: f.__name__)
def test_mla_valid_styles_pass(impl):
    report = evaluate(get("mla_absorbed_attention"), impl)
    assert report.passed, str(report)


def mla_wrong_transpose(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    q_lat = torch.einsum("bhn,hnc->bhc", q_nope, W_uk)
    s = q_lat @ c_kv.mT + q_rope @ k_rope.mT
    a = torch.softmax(s / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1]), -1)
    return torch.einsum("bhc,hvc->bhv", a @ c_kv, W_uv.flip(0))                # heads' value maps swapped


def mla_rope_per_head_sum(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    q_lat = torch.einsum("bhn,hnc->bhc", q_nope, W_uk)
    s = q_lat @ c_kv.mT + (q_rope.sum(1, keepdim=True) @ k_rope.mT)
    a = torch.softmax(s / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1]), -1)
    return torch.einsum("bhc,hvc->bhv", a @ c_kv, W_uv)


def mla_last_token_only(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    return torch.einsum("bc,hvc->bhv", c_kv[:, -1], W_uv)


@pytest.mark.parametrize("impl", [mla_wrong_transpose, mla_rope_per_head_sum, mla_last_token_only],
                         ids=lambda f: f.__name__)
def test_mla_wrong_code_is_rejected(impl):
    assert not evaluate(get("mla_absorbed_attention"), impl).passed


# =========================================================================== bad input, the three functions

def _raises(*args):
    raise IndexError("boom")


def _endless(*args):
    while True:
        pass


def _swm_numpy(q_len, k_len, window):
    return swm_tril(q_len, k_len, window).numpy()


def _pa_edits_q(q, k_cache, v_cache, block_tables, seq_lens):
    q.mul_(1.0)
    seq_lens += 0
    block_tables[:] = block_tables.flip(1)
    return pa_sdpa(q, k_cache, v_cache, block_tables.flip(1), seq_lens)


def _pa_nan(q, k_cache, v_cache, block_tables, seq_lens):
    return pa_sdpa(q, k_cache, v_cache, block_tables, seq_lens) * float("nan")


def _mla_wrong_shape(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv):
    return mla_per_head_loop(q_nope, q_rope, c_kv, k_rope, W_uk, W_uv).transpose(1, 2)


@pytest.mark.parametrize("name,impl", [
    ("sliding_window_causal_mask", _raises), ("sliding_window_causal_mask", _swm_numpy),
    ("sliding_window_causal_mask", _endless), ("paged_attention", _raises), ("paged_attention", _pa_edits_q),
    ("paged_attention", _pa_nan), ("paged_attention", _endless), ("mla_absorbed_attention", _raises),
    ("mla_absorbed_attention", _mla_wrong_shape), ("mla_absorbed_attention", _endless)],
    ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_kv_bad_input_gives_a_clear_report(name, impl):
    report = evaluate(_quick(name), impl)
    assert not report.passed and str(report)
