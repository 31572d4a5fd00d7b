"""Part 5, building an LLM: TransformerBlock, DecoderLM and causal_lm_loss.

- The grader's oracles and the book's solutions against the field's reference: transformers' LlamaForCausalLM
  (its decoder layer and the whole model, built from a small LlamaConfig with random weights: no download),
  and transformers' shifted causal-LM loss.
- Wrong implementations written as candidates write them, beyond the registered mistakes, each rejected without a
  false diagnosis; correct implementations in other styles accepted.
- Bad input (an exception, numpy, NaN, a wrong shape, an edited input, an endless loop, an instance instead of the
  class) gives a clear report, never a crash.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.configs import TransformerConfig, build_meta_model, module_params
from utils.grader import get, run
from utils.grader.exercises.llm import causal_lm as lm
from utils.grader.exercises.llm import transformer_block as tb

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.loss.loss_utils import ForCausalLMLoss  # noqa: E402

BLOCK, LM, LOSS = "TransformerBlock", "DecoderLM", "causal_lm_loss"
BLOCK_CHAPTER, LM_CHAPTER = "llm/transformer_block", "llm/causal_lm"


# --------------------------------------------------------------------------- transformers' Llama, with our names

def hf_llama(vocab, d, layers, heads, kv_heads, d_ff, rope_base=10000.0, eps=1e-5, tie=False, seed=0):
    """LlamaForCausalLM from a small config, float64, eager attention, random non-default weights."""
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=d_ff, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=eps,
                      rope_theta=rope_base, tie_word_embeddings=tie, max_position_embeddings=128)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        state = tb.trained_scale(model.state_dict(), torch.Generator().manual_seed(seed))
        model.load_state_dict(state)
    if tie:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def meta_to_hf_rows(w, n_heads):
    """transformers' convert_llama_weights_to_hf `permute`: rows of W_q / W_k from Meta's interleaved pairs to
    rotate_half pairs, within each head."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def hf_to_meta_rows(w, n_heads):
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def ours_from_hf(hf, interleaved=False):
    """The state_dict of our DecoderLM for the weights of `hf`; with interleaved=True, W_q and W_k are permuted to
    Meta's layout (the inverse of transformers' conversion)."""
    c = hf.config
    out = {"embed.weight": hf.model.embed_tokens.weight, "norm.weight": hf.model.norm.weight,
           "lm_head.weight": hf.lm_head.weight}
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj", "self_attn.v_proj": "attn.v_proj",
             "self_attn.o_proj": "attn.o_proj", "mlp.gate_proj": "ffn.w1", "mlp.up_proj": "ffn.w3",
             "mlp.down_proj": "ffn.w2"}
    for i, layer in enumerate(hf.model.layers):
        for theirs, ours in names.items():
            w = layer.get_submodule(theirs).weight
            if interleaved and ours in ("attn.q_proj", "attn.k_proj"):
                heads = c.num_attention_heads if ours == "attn.q_proj" else c.num_key_value_heads
                w = hf_to_meta_rows(w, heads)
            out[f"layers.{i}.{ours}.weight"] = w
    return {k: v.detach().clone() for k, v in out.items()}


LLAMAS = [  # (vocab, d, layers, heads, kv_heads, d_ff, rope_base, eps, tie)
    (61, 32, 2, 4, 2, 48, 10000.0, 1e-5, False),
    (61, 32, 2, 4, 2, 48, 500.0, 1e-6, True),
    (40, 24, 3, 6, 1, 40, 10000.0, 1e-5, False),
    (40, 32, 1, 4, 4, 56, 100.0, 1e-5, True),
]


def _load(cls, spec, hf, interleaved=False):
    vocab, d, layers, heads, kv, d_ff, base, eps, tie = spec
    model = cls(vocab, d, layers, heads, kv, d_ff, rope_base=base, eps=eps, tie_embeddings=tie,
                interleaved=interleaved).double()
    model.load_state_dict(ours_from_hf(hf, interleaved))
    return model.eval()


@pytest.mark.parametrize("spec", LLAMAS, ids=[f"L{s[2]}-H{s[3]}-KV{s[4]}-tie{s[8]}" for s in LLAMAS])
@pytest.mark.parametrize("which", ["oracle", "book"])
def test_decoder_lm_equals_transformers_llama(spec, which, book):
    cls = lm.DecoderLMSpec if which == "oracle" else book(LM_CHAPTER)[LM]
    hf = hf_llama(*spec[:6], rope_base=spec[6], eps=spec[7], tie=spec[8])
    ours = _load(cls, spec, hf)
    if spec[8]:
        assert ours.lm_head.weight is ours.embed.weight
    ids = torch.randint(0, spec[0], (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got, kvs = ours(ids)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)   # transformers' norms and RoPE: float32
        assert len(kvs) == spec[2] and kvs[0][0].shape == (2, spec[4], 9, spec[1] // spec[3])
        outs, caches, start = [], None, 0
        for n in (4, 1, 3, 1):                                            # prefill, decode, a chunk, decode
            logits, caches = ours(ids[:, start:start + n], caches)
            outs.append(logits)
            start += n
        torch.testing.assert_close(torch.cat(outs, 1), expected, rtol=1e-5, atol=1e-5)


def test_decoder_lm_equals_transformers_with_its_own_kv_cache(book):
    spec = LLAMAS[0]
    hf = hf_llama(*spec[:6], rope_base=spec[6], eps=spec[7], tie=spec[8])
    ours = _load(book(LM_CHAPTER)[LM], spec, hf)
    ids = torch.randint(0, spec[0], (1, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first = hf(ids[:, :5], use_cache=True)
        second = hf(ids[:, 5:], cache=first.past_key_values, use_cache=True)
        mine_first, caches = ours(ids[:, :5])
        mine_second, caches = ours(ids[:, 5:], caches)
    torch.testing.assert_close(mine_second, second.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine_first, first.logits, rtol=1e-5, atol=1e-5)
    k_hf = second.past_key_values.layers[0].keys                          # (B, n_kv_heads, S, head_dim), after RoPE
    torch.testing.assert_close(caches[0][0], k_hf, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["oracle", "book"])
def test_interleaved_layout_equals_transformers_after_the_conversion_permutation(which, book):
    """Meta's interleaved pairs with W_q, W_k in Meta's row order equal transformers' rotate_half with its own."""
    cls = lm.DecoderLMSpec if which == "oracle" else book(LM_CHAPTER)[LM]
    spec = LLAMAS[0]
    hf = hf_llama(*spec[:6], rope_base=spec[6], eps=spec[7], tie=spec[8])
    ours = _load(cls, spec, hf, interleaved=True)
    ids = torch.randint(0, spec[0], (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], hf(ids).logits, rtol=1e-5, atol=1e-5)
        plain = _load(cls, spec, hf, interleaved=False)
        w = plain.layers[0].attn.q_proj.weight
        torch.testing.assert_close(meta_to_hf_rows(hf_to_meta_rows(w, 4), 4), w)
        mixed = cls(*spec[:6], rope_base=spec[6], eps=spec[7], interleaved=True).double().eval()
        mixed.load_state_dict(ours_from_hf(hf, interleaved=False))        # HF's rows with Meta's pairs: wrong
        assert (mixed(ids)[0] - hf(ids).logits).abs().max() > 1e-2


@pytest.mark.parametrize("which", ["oracle", "book"])
def test_block_equals_transformers_decoder_layer(which, book):
    cls = tb.TransformerBlockSpec if which == "oracle" else book(BLOCK_CHAPTER)[BLOCK]
    hf = hf_llama(50, 32, 1, 8, 2, 48, rope_base=1000.0)
    layer, rotary = hf.model.layers[0], hf.model.rotary_emb
    block = cls(32, 8, 2, 48, rope_base=1000.0, eps=1e-5).double().eval()
    state = {k.removeprefix("layers.0."): v for k, v in ours_from_hf(hf).items() if k.startswith("layers.0.")}
    block.load_state_dict(state)
    x = torch.randn(2, 6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    positions = torch.arange(6)[None].expand(2, 6)
    causal = torch.full((6, 6), -math.inf, dtype=torch.float64).triu(1)[None, None]
    with torch.no_grad():
        expected = layer(x, attention_mask=causal, position_ids=positions,
                         position_embeddings=rotary(x, positions))
        expected = expected[0] if isinstance(expected, tuple) else expected
        got, (k, v) = block(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert k.shape == v.shape == (2, 2, 6, 4)


def test_the_parameter_count_is_that_of_the_transformer_config(book):
    cls = book(LM_CHAPTER)[LM]
    for tie in (False, True):
        model = cls(1000, 64, 3, 8, 2, 176, tie_embeddings=tie)
        cfg = TransformerConfig(vocab_size=1000, hidden_size=64, intermediate_size=176, num_hidden_layers=3,
                                num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=tie)
        assert sum(p.numel() for p in model.parameters()) == module_params(build_meta_model(cfg))
        hf = hf_llama(1000, 64, 3, 8, 2, 176, tie=tie)
        assert sum(p.numel() for p in model.parameters()) == hf.num_parameters()


# --------------------------------------------------------------------------- causal_lm_loss against transformers

@pytest.mark.parametrize("seed", range(12))
def test_loss_oracle_equals_transformers_shifted_loss(seed, book):
    g = torch.Generator().manual_seed(seed)
    B, T, V = 1 + seed % 3, 2 + seed % 7, 5 + seed
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * (1 + seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    ids[torch.rand(B, T, generator=g) < 0.3] = -100
    ids[:, -1] = torch.randint(0, V, (B,), generator=g)                  # at least one target
    expected = ForCausalLMLoss(logits, ids, vocab_size=V).double()     # transformers computes in float32
    torch.testing.assert_close(lm.causal_lm_loss_spec(logits, ids), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(book(LM_CHAPTER)[LOSS](logits, ids), expected, rtol=1e-6, atol=1e-6)


def test_loss_with_a_pad_id_as_ignore_index_equals_transformers_with_minus_100(book):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 6, 9, generator=g, dtype=torch.float64)
    ids = torch.randint(1, 9, (3, 6), generator=g)
    ids[0, 4:], ids[2, 2:] = 0, 0                                         # right padding with pad id 0
    labels = ids.masked_fill(ids == 0, -100)
    expected = ForCausalLMLoss(logits, labels, vocab_size=9).double()
    for impl in (lm.causal_lm_loss_spec, book(LM_CHAPTER)[LOSS]):
        torch.testing.assert_close(impl(logits, ids, ignore_index=0), expected, rtol=1e-6, atol=1e-6)


def test_loss_oracle_equals_cross_entropy_written_out():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, 1.0, 1.0]]], dtype=torch.float64)
    ids = torch.tensor([[0, 2, 1]])
    by_hand = -(math.log(math.exp(-1.0) / (math.exp(2.0) + 1 + math.exp(-1.0)))
                + math.log(math.exp(0.5) / (2 * math.exp(0.5) + 1))) / 2
    assert math.isclose(float(lm.causal_lm_loss_spec(logits, ids)), by_hand, rel_tol=1e-12)


# --------------------------------------------------------------------------- the oracles' own properties

def test_block_oracle_one_call_equals_chunks_and_keeps_rotated_keys():
    block = tb.TransformerBlockSpec(32, 4, 2, 48, rope_base=500.0).double()
    block.load_state_dict(tb.trained_scale(block.state_dict(), torch.Generator().manual_seed(0)))
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    full, (k_full, v_full) = block(x)
    outs, cache, start = [], None, 0
    for n in (4, 1, 1, 3):
        y, cache = block(x[:, start:start + n], past_kv=cache)
        outs.append(y)
        start += n
    torch.testing.assert_close(torch.cat(outs, 1), full)
    torch.testing.assert_close(cache[0], k_full)
    raw_k = block.attn.k_proj(block.attn_norm(x)).view(2, 9, 2, 8).transpose(1, 2)
    assert (raw_k - k_full).abs().max() > 1e-3                           # the cache is not the projection


def test_rope_of_the_oracle_is_the_rope_chapters_oracle():
    from utils.grader.exercises.positions.rope import rope_spec
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    positions = torch.arange(5, 12)
    for interleaved in (False, True):
        torch.testing.assert_close(tb.rope_by_complex(x, positions, 500.0, interleaved),
                                   rope_spec(x, positions, 500.0, interleaved))


def test_random_weights_keep_the_softmax_soft():
    block = tb.TransformerBlockSpec(32, 4, 2, 48)
    block.load_state_dict(tb.trained_scale(block.state_dict(), torch.Generator().manual_seed(7)))
    u = block.attn_norm(torch.randn(1, 12, 32))
    q = block.attn.q_proj(u).view(1, 12, 4, 8).transpose(1, 2)
    k = block.attn.k_proj(u).view(1, 12, 2, 8).transpose(1, 2).repeat_interleave(2, 1)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1)
    assert w.amax(-1).mean() < 0.7
    norms = [v for n, v in block.state_dict().items() if n.endswith("norm.weight")]
    assert all(not torch.allclose(v, torch.ones_like(v)) for v in norms)


def test_tied_weights_get_one_random_value():
    model = lm.DecoderLMSpec(30, 16, 1, 2, 2, 24, tie_embeddings=True)
    state = tb.trained_scale(model.state_dict(), torch.Generator().manual_seed(0))
    assert state["embed.weight"] is state["lm_head.weight"]


def test_cases_cover_what_the_issue_asks():
    scripts = [c.make() for c in get(BLOCK).all_cases()]
    heads = {(s.init[0][1], s.init[0][2]) for s in scripts}
    assert any(kv == 1 for _, kv in heads) and any(h == kv for h, kv in heads) and any(1 < kv < h for h, kv in heads)
    assert any(s.init[1].get("interleaved") for s in scripts) and any(not s.init[1].get("interleaved") for s in scripts)
    assert any(s.init[1].get("rope_base", 10000.0) != 10000.0 for s in scripts)
    assert any(sum(callable(st.inputs) for st in s.steps) >= 3 for s in scripts)      # decoding with the cache
    assert any("past_kv" in st.inputs[1] for s in scripts for st in s.steps if not callable(st.inputs))
    assert any(s.dtype == torch.float64 for s in scripts) and any(st.grad for s in scripts for st in s.steps)
    lm_scripts = [c.make() for c in get(LM).all_cases()]
    assert {bool(s.init[1].get("tie_embeddings")) for s in lm_scripts} == {False, True}
    assert any(s.init[0][2] >= 3 for s in lm_scripts) and any(s.init[0][2] == 1 for s in lm_scripts)
    notes = " ".join(c.note for c in get(LOSS).all_cases())
    for needed in ("padded", "ignore_index=0", "first token", "float64", "non-contiguous", "batch of one", "1e4",
                   "gradient"):
        assert needed in notes, needed


# --------------------------------------------------------------------------- correct variants in other styles

class BlockEinsumGrouped(nn.Module):
    """Einsum over (kv head, group) without repeating keys; RoPE by complex numbers; own RMSNorm."""

    class Norm(nn.Module):
        def __init__(self, d, eps):
            super().__init__()
            self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def __init__(self, d_model, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5, interleaved=False):
        super().__init__()
        self.h, self.kv, self.hd = n_heads, n_kv_heads, d_model // n_heads
        self.base, self.inter = rope_base, interleaved
        self.attn_norm, self.ffn_norm = self.Norm(d_model, eps), self.Norm(d_model, eps)
        self.attn = nn.Module()
        for name, out in (("q_proj", n_heads), ("k_proj", n_kv_heads), ("v_proj", n_kv_heads)):
            setattr(self.attn, name, nn.Linear(d_model, out * self.hd, bias=False))
        self.attn.o_proj = nn.Linear(n_heads * self.hd, d_model, bias=False)
        self.ffn = tb.SwiGLUSpec(d_model, d_ff)

    def rope(self, x, pos):
        D = x.shape[-1]
        theta = self.base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        turn = torch.polar(torch.ones(len(pos), D // 2, dtype=torch.float64), pos[:, None].double() * theta)
        xd = x.double()
        if self.inter:
            z = torch.view_as_complex(xd.reshape(*x.shape[:-1], D // 2, 2).contiguous()) * turn
            return torch.view_as_real(z).flatten(-2).to(x.dtype)
        z = torch.complex(xd[..., : D // 2], xd[..., D // 2:]) * turn
        return torch.cat([z.real, z.imag], -1).to(x.dtype)

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        u = self.attn_norm(x)
        g = self.h // self.kv
        q = self.attn.q_proj(u).view(B, T, self.kv, g, self.hd).permute(0, 2, 3, 1, 4)   # (B, KV, g, T, hd)
        k = self.attn.k_proj(u).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.attn.v_proj(u).view(B, T, self.kv, self.hd).transpose(1, 2)
        P = 0 if past_kv is None else past_kv[0].shape[2]
        pos = torch.arange(P, P + T)
        q, k = self.rope(q, pos), self.rope(k, pos)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        s = torch.einsum("bkgtd,bksd->bkgts", q, k) / math.sqrt(self.hd)
        s = torch.where(torch.arange(P + T) <= torch.arange(T)[:, None] + P, s, -torch.inf)
        y = torch.einsum("bkgts,bksd->bkgtd", s.softmax(-1), v)                   # (B, KV, g, T, hd)
        h = x + self.attn.o_proj(y.permute(0, 3, 1, 2, 4).reshape(B, T, -1))
        return h + self.ffn(self.ffn_norm(h)), (k, v)


class BlockSDPAWithInvFreqBuffer(nn.Module):
    """PyTorch's SDPA with enable_gqa, a non-persistent inv_freq buffer computed in float64, HF-style rotate_half."""

    def __init__(self, d_model, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5, interleaved=False):
        super().__init__()
        self.h, self.kv, self.hd, self.inter = n_heads, n_kv_heads, d_model // n_heads, interleaved
        self.attn_norm, self.ffn_norm = nn.RMSNorm(d_model, eps=eps), nn.RMSNorm(d_model, eps=eps)
        self.attn = tb.RopeGQASpec(d_model, n_heads, n_kv_heads)
        self.ffn = tb.SwiGLUSpec(d_model, d_ff)
        inv = 1.0 / rope_base ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd)
        self.register_buffer("inv_freq", inv, persistent=False)

    def rotate(self, x, pos):
        freqs = pos[:, None].to(self.inv_freq.dtype) * self.inv_freq
        if self.inter:
            emb = freqs.repeat_interleave(2, -1)
            x1, x2 = x[..., 0::2], x[..., 1::2]
            rot = torch.stack([-x2, x1], -1).flatten(-2)
        else:
            emb = torch.cat([freqs, freqs], -1)
            rot = torch.cat([-x[..., self.hd // 2:], x[..., : self.hd // 2]], -1)
        return x * emb.cos().to(x.dtype) + rot * emb.sin().to(x.dtype)

    def forward(self, x, past_kv=None):
        B, T, _ = x.shape
        a = self.attn
        u = self.attn_norm(x)
        q = a.q_proj(u).view(B, T, self.h, self.hd).transpose(1, 2)
        k = a.k_proj(u).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = a.v_proj(u).view(B, T, self.kv, self.hd).transpose(1, 2)
        P = 0 if past_kv is None else past_kv[0].shape[2]
        pos = torch.arange(P, P + T)
        q, k = self.rotate(q, pos), self.rotate(k, pos)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        mask = torch.ones(T, P + T, dtype=torch.bool).tril(P)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        h = x + a.o_proj(y.transpose(1, 2).reshape(B, T, -1))
        return h + self.ffn(self.ffn_norm(h)), (k, v)


class LMFunctional(lm.DecoderLMSpec):
    """Tied the other way round (embed.weight = lm_head.weight), caches returned as a tuple, F.linear head."""

    def __init__(self, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5,
                 tie_embeddings=False, interleaved=False):
        super().__init__(vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, rope_base, eps, False, interleaved)
        if tie_embeddings:
            self.embed.weight = self.lm_head.weight

    def forward(self, input_ids, past_kvs=None):
        h = self.embed(input_ids)
        past = past_kvs if past_kvs is not None else [None] * len(self.layers)
        new = []
        for layer, kv in zip(self.layers, past):
            h, kv = layer(h, kv)
            new.append(kv)
        return F.linear(self.norm(h), self.lm_head.weight), tuple(new)


def loss_log_softmax_gather(logits, input_ids, ignore_index=-100):
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = input_ids[:, 1:]
    keep = targets != ignore_index
    picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return -(picked * keep).sum() / keep.sum()


def loss_pad_then_shift(logits, input_ids, ignore_index=-100):
    """transformers' way: pad the labels with ignore_index on the right, then shift them left."""
    labels = F.pad(input_ids, (0, 1), value=ignore_index)[:, 1:]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=ignore_index)


def loss_row_loop(logits, input_ids, ignore_index=-100):
    total, count = 0.0, 0
    for row_logits, row_ids in zip(logits, input_ids):
        targets = row_ids[1:]
        keep = targets != ignore_index
        if keep.any():
            total = total + F.cross_entropy(row_logits[:-1][keep], targets[keep], reduction="sum")
            count += int(keep.sum())
    return total / count


CORRECT = [(BLOCK, BlockEinsumGrouped), (BLOCK, BlockSDPAWithInvFreqBuffer), (LM, LMFunctional),
           (LOSS, loss_log_softmax_gather), (LOSS, loss_pad_then_shift), (LOSS, loss_row_loop)]


@pytest.mark.parametrize("name,impl", CORRECT, ids=[f"{n}-{i.__name__}" for n, i in CORRECT])
def test_correct_variant_passes(name, impl):
    report = run(name, impl)
    assert report.passed, f"a correct {name} written as {impl.__name__} is rejected:\n{report}"


# --------------------------------------------------------------------------- wrong code as candidates write it

class BlockScaledByModelWidth(tb._Block):
    """Scores divided by sqrt(d_model) instead of sqrt(head_dim)."""

    def attend(self, q, k, v):
        return super().attend(q / math.sqrt(self.n_heads), k, v)


class BlockNoMaskWithCache(tb._Block):
    def attend(self, q, k, v):
        if k.shape[2] == q.shape[2]:
            return super().attend(q, k, v)
        B, H, T, hd = q.shape
        g = H // k.shape[1]
        w = torch.softmax(q @ k.repeat_interleave(g, 1).transpose(-2, -1) / math.sqrt(hd), -1)
        return self.attn.o_proj((w @ v.repeat_interleave(g, 1)).transpose(1, 2).reshape(B, T, -1))


class BlockTiledHeads(tb._Block):
    """k.repeat(1, g, 1, 1): query head h reads kv head h % n_kv_heads instead of h // g."""

    def attend(self, q, k, v):
        B, H, T, hd = q.shape
        g, S = H // k.shape[1], k.shape[2]
        s = q @ k.repeat(1, g, 1, 1).transpose(-2, -1) / math.sqrt(hd)
        s = s.masked_fill(torch.arange(S) > torch.arange(T)[:, None] + (S - T), -math.inf)
        y = torch.softmax(s, -1) @ v.repeat(1, g, 1, 1)
        return self.attn.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class BlockLayoutInverted(tb._Block):
    def rope(self, t, positions):
        return tb._rotate(t, positions, self.rope_base, not self.interleaved)


class BlockPositionsFromChunkLength(tb._Block):
    """Uses the chunk length as the offset (right only when the cache and the chunk have the same length)."""

    def attention(self, x, past_kv=None):
        q, k, v = self.heads(x)
        T = x.shape[1]
        P = 0 if past_kv is None else T
        q, k, v = self.rotated(q, k, v, torch.arange(P, P + T))
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        return self.attend(q, k, v), (k, v)


class BlockNormWithoutGain(tb._Block):
    def make_norm(self, d_model, eps):
        return nn.RMSNorm(d_model, eps=eps, elementwise_affine=False)


class LMLastPositionOnly(lm._LM):
    """Meta's generation code returns the logits of the last position only."""

    def head(self, h):
        return self.lm_head(self.norm(h[:, -1:, :]))


class LMCachesReversed(lm._LM):
    def past_for(self, past_kvs, i):
        return None if past_kvs is None else past_kvs[len(self.layers) - 1 - i]


class LMReturnsThePastCaches(lm._LM):
    def forward(self, input_ids, past_kvs=None):
        logits, caches = super().forward(input_ids, past_kvs)
        return logits, caches if past_kvs is None else past_kvs


class LMHeadWithBias(lm._LM):
    def __init__(self, vocab_size, d_model, *args, **kwargs):
        super().__init__(vocab_size, d_model, *args, **kwargs)
        if not kwargs.get("tie_embeddings"):
            self.lm_head = nn.Linear(d_model, vocab_size, bias=True)


def loss_mask_from_inputs(logits, input_ids, ignore_index=-100):
    """Skips the positions whose *input* is ignored, and replaces ignored targets by 0."""
    V = logits.shape[-1]
    keep = input_ids[:, :-1] != ignore_index
    targets = input_ids[:, 1:].clamp_min(0)
    per = F.cross_entropy(logits[:, :-1].reshape(-1, V), targets.reshape(-1), reduction="none").view_as(targets)
    return per[keep].mean()


def loss_label_smoothing(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1), ignore_index=ignore_index,
                           label_smoothing=0.1)


def loss_per_token(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1), ignore_index=ignore_index,
                           reduction="none")


def loss_in_float32(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), input_ids[:, 1:].reshape(-1),
                           ignore_index=ignore_index)


def loss_divides_by_T(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    per = F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1), ignore_index=ignore_index,
                          reduction="sum")
    return per / (input_ids != ignore_index).sum()


# (exercise, wrong implementation, registered mistakes whose diagnosis would be true of it; () = none)
WRONG = [
    (BLOCK, BlockScaledByModelWidth, ()),
    (BLOCK, BlockNoMaskWithCache, ()),
    (BLOCK, BlockTiledHeads, ()),
    (BLOCK, BlockLayoutInverted, ()),
    (BLOCK, BlockPositionsFromChunkLength, ()),
    (BLOCK, BlockNormWithoutGain, ()),
    (LM, LMLastPositionOnly, ()),
    (LM, LMCachesReversed, ()),
    (LM, LMReturnsThePastCaches, ()),
    (LM, LMHeadWithBias, ()),
    (LOSS, loss_mask_from_inputs, ()),
    (LOSS, loss_label_smoothing, ()),
    (LOSS, loss_per_token, ()),
    (LOSS, loss_in_float32, ()),
    (LOSS, loss_divides_by_T, ()),
]


@pytest.mark.parametrize("name,impl,fair", WRONG, ids=[f"{n}-{i.__name__}" for n, i, _ in WRONG])
def test_wrong_variant_is_rejected_without_a_false_diagnosis(name, impl, fair):
    report = run(name, impl)
    assert not report.passed, f"the wrong {name} {impl.__name__} ({impl.__doc__}) passes the grader"
    assert report.status == "failed"
    assert report.failure.mistake is None or report.failure.mistake in fair, (
        f"{impl.__name__} is diagnosed as {report.failure.mistake!r}, which it is not:\n{report}")


def test_specific_reports():
    assert run(LM, LMLastPositionOnly).kind == "wrong-shape"
    assert run(LOSS, loss_per_token).kind == "wrong-shape"
    assert run(LOSS, loss_in_float32).kind == "wrong-dtype"
    report = run(LM, LMHeadWithBias)
    assert report.kind in ("wrong-keys", "wrong-value") and "lm_head.bias" in str(report)
    report = run(BLOCK, BlockNormWithoutGain)
    assert "attn_norm.weight" in str(report)


# --------------------------------------------------------------------------- bad input: a clear report, no crash

def test_block_bad_inputs():
    class Raises(tb._Block):
        def forward(self, x, past_kv=None):
            raise ValueError("shapes went wrong")

    class ReturnsNumpy(tb._Block):
        def forward(self, x, past_kv=None):
            out, kv = super().forward(x, past_kv)
            return out.detach().numpy(), kv

    class ReturnsOutputOnly(tb._Block):
        def forward(self, x, past_kv=None):
            return super().forward(x, past_kv)[0]

    class NaNs(tb._Block):
        def forward(self, x, past_kv=None):
            out, kv = super().forward(x, past_kv)
            return out * torch.nan, kv

    class EditsTheCache(tb._Block):
        """Right outputs, but the caller's cache is wiped in place after use."""

        def forward(self, x, past_kv=None):
            out = super().forward(x, past_kv)
            if past_kv is not None:
                with torch.no_grad():
                    past_kv[0].zero_()
            return out

    report = run(BLOCK, Raises)
    assert report.kind == "exception" and "shapes went wrong" in str(report) and report.failure.mistake is None
    assert run(BLOCK, ReturnsNumpy).kind == "returned-numpy"
    assert not run(BLOCK, ReturnsOutputOnly).passed
    assert run(BLOCK, NaNs).kind == "not-finite"
    report = run(BLOCK, EditsTheCache)
    assert not report.passed and report.kind == "mutated-input", str(report)
    report = run(BLOCK, tb.TransformerBlockSpec(16, 4, 2, 24))
    assert report.kind == "wrong-type" and "not an instance" in str(report)


def test_block_wrong_parameter_names_are_reported():
    class Renamed(tb._Block):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.feed_forward = self.ffn
            del self.ffn

        def forward(self, x, past_kv=None):
            raise AssertionError("never reached: the parameter names are checked first")

    report = run(BLOCK, Renamed)
    assert not report.passed and "feed_forward" in str(report) and "ffn" in str(report)


@pytest.fixture
def quick_timeout():
    ex = get(LOSS)
    before = ex.timeout
    ex.timeout = 0.5
    yield
    ex.timeout = before


def test_loss_endless_loop_is_stopped(quick_timeout):
    def loss(logits, input_ids, ignore_index=-100):
        while True:
            try:
                logits = logits + 0
            except Exception:
                pass

    start = time.perf_counter()
    report = run(LOSS, loss)
    assert time.perf_counter() - start < 10
    assert report.kind == "timeout"


def test_loss_bad_returns_and_edited_input():
    def edits(logits, input_ids, ignore_index=-100):
        input_ids[input_ids == ignore_index] = 0                         # "clean" the labels in place
        return lm.causal_lm_loss_spec(logits, input_ids, ignore_index=0)

    def numpy_loss(logits, input_ids, ignore_index=-100):
        return np.float64(lm.causal_lm_loss_spec(logits, input_ids, ignore_index))

    def python_float(logits, input_ids, ignore_index=-100):
        return float(lm.causal_lm_loss_spec(logits, input_ids, ignore_index))

    assert not run(LOSS, edits).passed
    assert run(LOSS, numpy_loss).kind in ("returned-numpy", "wrong-type")
    assert run(LOSS, python_float).kind == "wrong-type"
    assert run(LOSS, lambda logits, input_ids, ignore_index=-100: None).kind == "returned-none"
