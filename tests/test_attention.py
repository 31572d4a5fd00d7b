"""Part 3, attention: what is specific to the scaled_dot_product_attention and MultiHeadAttention graders."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.grader import get, run
from utils.grader.exercises.attention import multi_head_attention as mha
from utils.grader.exercises.attention import scaled_dot_product_attention as sdpa
from utils.grader.inputs import bool_mask, float_mask
from utils.grader.kinds import Script

SDPA, MHA = "scaled_dot_product_attention", "MultiHeadAttention"


def explicit_attention(q, k, v, attn_mask=None, is_causal=False):
    """Attention written out in float64 from the definition, independent of the grader's helpers."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    L, S = scores.shape[-2:]
    if is_causal:
        allowed = torch.tensor([[j <= i for j in range(S)] for i in range(L)])
        scores = torch.where(allowed, scores, torch.tensor(-math.inf, dtype=torch.float64))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = torch.where(attn_mask, scores, torch.tensor(-math.inf, dtype=torch.float64))
        else:
            scores = scores + attn_mask.double()
    w = torch.exp(scores - scores.amax(-1, keepdim=True))
    return (w / w.sum(-1, keepdim=True)) @ v


# --------------------------------------------------------------------------- scaled_dot_product_attention

@pytest.mark.parametrize("i", range(len(get(SDPA).all_cases())))
def test_sdpa_oracle_matches_the_definition(i):
    ex = get(SDPA)
    args, kwargs = ex.all_cases()[i].make()
    expected = ex.outcome(ex.oracle, ex.all_cases()[i], None).parts[0][1]
    assert torch.isfinite(expected).all(), f"case {i} has a row that keeps no key"
    ref = explicit_attention(*args, **kwargs)
    tol = 1e-5 if expected.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(expected.double(), ref, rtol=tol, atol=tol)


def test_sdpa_cases_cover_the_issue():
    notes = " ".join(c.note for c in get(SDPA).all_cases())
    for needed in ("unbatched", "L != S", "Ev != E", "bool mask (L, S)", "float mask (L, S)",
                   "L < S (top-left", "L > S (top-left", "float64", "gradients"):
        assert needed in notes, needed
    assert len(get(SDPA).mistakes) >= 6


def test_causal_is_top_left_aligned_in_pytorch():
    q, k, v = torch.randn(6, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.randn(
        3, 2, dtype=torch.float64)
    got = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    top_left = torch.ones(6, 3, dtype=torch.bool).tril()
    torch.testing.assert_close(got, explicit_attention(q, k, v, attn_mask=top_left))
    bottom_right = torch.ones(6, 3, dtype=torch.bool).tril(diagonal=3 - 6)
    assert torch.isnan(explicit_attention(q, k, v, attn_mask=bottom_right)).any()


def test_sdpa_calling_the_builtin_is_forbidden():
    def sneaky(q, k, v, attn_mask=None, is_causal=False):
        return torch._scaled_dot_product_attention_math(q, k, v, attn_mask, 0.0, is_causal)[0]

    report = run(SDPA, sneaky)
    assert not report.passed and report.kind == "forbidden-call"


def test_sdpa_softmax_is_allowed_and_explicit_attention_passes():
    def mine(q, k, v, attn_mask=None, is_causal=False):
        return explicit_attention(q, k, v, attn_mask, is_causal).to(q.dtype)

    assert run(SDPA, mine).passed


def test_sdpa_unknown_error_is_not_blamed_on_a_mistake():
    def crashes(q, k, v, attn_mask=None, is_causal=False):
        raise ValueError("boom")

    report = run(SDPA, crashes)
    assert report.kind == "exception" and report.failure.mistake is None


def test_sdpa_properties_catch_what_they_claim():
    def unnormalised(q, k, v, attn_mask=None, is_causal=False):
        return torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])) @ v

    def position_biased(q, k, v, attn_mask=None, is_causal=False):
        S = k.shape[-2]
        bias = torch.arange(S, dtype=q.dtype) * 0.5
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias, -1) @ v

    assert sdpa._convex_combination(unnormalised) is not None
    assert sdpa._key_permutation_invariant(position_biased) is not None
    assert sdpa._convex_combination(explicit_attention) is None


def test_sdpa_masks_keep_a_key_in_every_row():
    for seed in range(20):
        assert bool_mask(5, 3, seed).any(-1).all()
        assert torch.isfinite(float_mask(4, 6, seed)).any(-1).all()


def test_sdpa_book_solution_matches_definition_with_batched_masks(book):
    impl = book("attention/scaled_dot_product_attention")[SDPA]
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 5)
    mask = torch.rand(2, 1, 4, 6) < 0.7
    mask[..., 0] = True
    torch.testing.assert_close(impl(q, k, v, attn_mask=mask).double(), explicit_attention(q, k, v, mask),
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- MultiHeadAttention

def as_torch_mha(m: nn.Module, d_model: int, n_heads: int, bias: bool) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
        ref.out_proj.weight.copy_(m.o_proj.weight)
        if bias:
            ref.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
            ref.out_proj.bias.copy_(m.o_proj.bias)
    return ref.eval()


def randomised(cls, d_model, n_heads, bias):
    m = cls(d_model, n_heads, bias=bias).double()
    gen = torch.Generator().manual_seed(3)
    m.load_state_dict(mha.scaled_state(m.state_dict(), gen))
    return m


@pytest.mark.parametrize("cls", [mha.MultiHeadAttentionOracle, "book"])
@pytest.mark.parametrize("bias,cross,masking", [(True, False, None), (False, True, None), (True, True, "bool"),
                                                (True, False, "causal"), (False, False, "float")])
def test_mha_agrees_with_nn_multiheadattention(cls, bias, cross, masking, book):
    if cls == "book":
        cls = book("attention/multi_head_attention")[MHA]
    d_model, n_heads, B, L = 12, 3, 2, 5
    S = 7 if cross else L
    m = randomised(cls, d_model, n_heads, bias)
    ref = as_torch_mha(m, d_model, n_heads, bias)
    x = torch.randn(B, L, d_model, dtype=torch.float64)
    x_kv = torch.randn(B, S, d_model, dtype=torch.float64) if cross else None
    kv = x if x_kv is None else x_kv
    mine_mask, torch_mask, causal = None, None, False
    if masking == "bool":
        mine_mask = torch.rand(L, S) < 0.6
        mine_mask[:, 0] = True
        torch_mask = ~mine_mask                      # nn.MultiheadAttention: True means "blocked"
    elif masking == "float":
        mine_mask = torch_mask = torch.randn(L, S, dtype=torch.float64)
    elif masking == "causal":
        causal = True
        torch_mask = ~torch.ones(L, S, dtype=torch.bool).tril()
    got = m(x, x_kv, attn_mask=mine_mask, is_causal=causal)
    expected, _ = ref(x, kv, kv, attn_mask=torch_mask, need_weights=False)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_mha_parameter_count_is_4d2_plus_biases(book):
    cls = book("attention/multi_head_attention")[MHA]
    for d_model, n_heads in [(16, 4), (512, 8)]:
        assert sum(p.numel() for p in cls(d_model, n_heads).parameters()) == 4 * d_model**2 + 4 * d_model
        assert sum(p.numel() for p in cls(d_model, n_heads, bias=False).parameters()) == 4 * d_model**2


def test_mha_instance_instead_of_class_is_rejected():
    report = run(MHA, mha.MultiHeadAttentionOracle(8, 2))
    assert not report.passed and report.kind == "wrong-type" and "an instance" in str(report)


def test_mha_fused_qkv_has_the_wrong_parameter_names():
    class Fused(nn.Module):
        def __init__(self, d_model, n_heads, bias=True):
            super().__init__()
            self.n_heads = n_heads
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
            self.o_proj = nn.Linear(d_model, d_model, bias=bias)

        def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
            q, k, v = self.qkv(x).chunk(3, -1)
            return self.o_proj(q + k + v)

    report = run(MHA, Fused)
    assert not report.passed and report.kind == "wrong-keys" and "qkv" in str(report)


def test_mha_wrapping_nn_multiheadattention_is_rejected():
    class Wrapper(mha.MultiHeadAttentionOracle):
        def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
            inner = nn.MultiheadAttention(x.shape[-1], self.n_heads, batch_first=True)
            return inner(x, x, x, need_weights=False)[0]

    report = run(MHA, Wrapper)
    assert not report.passed and report.kind == "forbidden-call"


def test_mha_oracle_passes_so_sdpa_is_allowed():
    assert run(MHA, mha.MultiHeadAttentionOracle).passed


def test_mha_grader_compares_parameter_gradients():
    class DetachedOutputBias(mha.MultiHeadAttentionOracle):
        def forward(self, x, x_kv=None, attn_mask=None, is_causal=False):
            B, L, D = x.shape
            src = x if x_kv is None else x_kv
            q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(src)), self._heads(self.v_proj(src))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
            bias = None if self.o_proj.bias is None else self.o_proj.bias.detach()   # same output, no gradient
            return F.linear(y.transpose(1, 2).reshape(B, L, D), self.o_proj.weight, bias)

    report = run(MHA, DetachedOutputBias)
    assert not report.passed and report.kind == "gradient" and "o_proj.bias" in str(report)


def test_mha_random_weights_keep_the_softmax_soft():
    """The grader's weights must not saturate the softmax, or wrong scalings would pass."""
    m = randomised(mha.MultiHeadAttentionOracle, 16, 4, True)
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    q = m._heads(m.q_proj(x))
    k = m._heads(m.k_proj(x))
    w = torch.softmax(q @ k.transpose(-2, -1) / 2, -1)
    assert w.amax(-1).mean() < 0.8


def test_mha_cases_include_cross_causal_and_gradients():
    ex = get(MHA)
    scripts: list[Script] = [c.make() for c in ex.all_cases()]
    steps = [s for sc in scripts for s in sc.steps]
    assert any("x_kv" in s.inputs[1] or len(s.inputs[0]) > 1 for s in steps)
    assert any(s.inputs[1].get("is_causal") for s in steps)
    assert any(s.grad for s in steps)
    assert any(sc.init[1].get("bias") is False for sc in scripts)
