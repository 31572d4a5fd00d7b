"""Part 4, positions: what is specific to the position-encoding graders (absolute, relative/ALiBi, RoPE)."""

import math

import pytest
import torch
from torch import nn

from utils.grader import get, run
from utils.grader.exercises.positions import absolute_positions as ap
from utils.grader.exercises.positions import relative_positions as rp
from utils.grader.exercises.positions import rope

f64 = torch.float64
SIN, LEARNED, REL, ALIBI, ROPE = ("sinusoidal_positional_encoding", "LearnedPositionalEmbedding",
                                  "relative_position_index", "alibi_bias", "apply_rope")


def _property(name, label):
    return next(p for p in get(name).properties if p.name == label)


# --------------------------------------------------------------------------- sinusoidal_positional_encoding

@pytest.mark.parametrize("max_len,d_model,base", [(8, 16, 10000.0), (33, 10, 10000.0), (12, 6, 37.0),
                                                  (1, 2, 10000.0)])
def test_sinusoid_spec_matches_vectorised_formula(max_len, d_model, base):
    pos = torch.arange(max_len, dtype=f64)[:, None]
    omega = torch.exp(-math.log(base) * torch.arange(0, d_model, 2, dtype=f64) / d_model)
    want = torch.stack([torch.sin(pos * omega), torch.cos(pos * omega)], dim=-1).flatten(1).float()
    got = ap.sinusoid_spec(max_len, d_model, base)
    assert got.dtype == torch.float32 and got.shape == (max_len, d_model)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_sinusoid_row_zero_and_linear_shift():
    pe = ap.sinusoid_spec(40, 8).double()
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 4, dtype=f64))
    # PE[p + k] = R_k PE[p] with R_k block-diagonal rotations, the same matrix for every p
    k, omega = 5, 10000.0 ** (-torch.arange(0, 8, 2, dtype=f64) / 8)
    c, s = torch.cos(k * omega), torch.sin(k * omega)
    sin_p, cos_p = pe[:-k, 0::2], pe[:-k, 1::2]
    shifted = torch.stack([sin_p * c + cos_p * s, cos_p * c - sin_p * s], dim=-1).flatten(1)
    torch.testing.assert_close(shifted, pe[k:], rtol=0, atol=1e-5)


def test_sinusoid_properties_reject_wrong_tables():
    sin_only = lambda max_len, d_model, base=10000.0: torch.sin(  # noqa: E731
        torch.arange(max_len)[:, None] / base ** (torch.arange(d_model) / d_model))
    assert _property(SIN, "every row has norm sqrt(d_model / 2)").check(sin_only)
    random_table = lambda max_len, d_model, base=10000.0: torch.randn(max_len, d_model)  # noqa: E731
    assert _property(SIN, "PE[p]·PE[p+k] depends only on k").check(random_table)
    assert _property(SIN, "PE[p]·PE[p+k] depends only on k").check(ap.sinusoid_spec) is None


def test_sinusoid_tolerance_accepts_float32_textbook_code():
    def annotated_transformer(max_len, d_model, base=10000.0):
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(base) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        return pe
    assert run(SIN, annotated_transformer).passed


# --------------------------------------------------------------------------- LearnedPositionalEmbedding

def test_learned_spec_adds_the_first_rows_and_trains_only_them():
    m = ap.LearnedPositionalEmbeddingSpec(10, 4)
    with torch.no_grad():
        m.weight.copy_(torch.randn(10, 4))
    x = torch.randn(3, 6, 4, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, x + m.weight[:6])
    y.sum().backward()
    assert torch.equal(m.weight.grad[:6], torch.full((6, 4), 3.0))
    assert torch.equal(m.weight.grad[6:], torch.zeros(4, 4))
    assert [n for n, _ in m.named_parameters()] == ["weight"]


def test_learned_rejects_an_instance_and_wrong_names():
    report = run(LEARNED, ap.LearnedPositionalEmbeddingSpec(8, 4))
    assert not report.passed and report.kind == "wrong-type" and "not an instance" in str(report)

    class Renamed(nn.Module):
        def __init__(self, max_len, d_model):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(max_len, d_model))

        def forward(self, x):
            return x + self.table[: x.shape[1]]

    report = run(LEARNED, Renamed)
    assert not report.passed and report.kind == "wrong-keys" and "table" in str(report)


def test_learned_accepts_nn_embedding_weight_as_parameter():
    class ViaEmbedding(nn.Module):
        def __init__(self, max_len, d_model):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

        def forward(self, x):
            return x + nn.functional.embedding(torch.arange(x.shape[1]), self.weight)

    assert run(LEARNED, ViaEmbedding).passed


# --------------------------------------------------------------------------- relative_position_index

@pytest.mark.parametrize("q_len,k_len,max_distance", [(5, 5, 2), (3, 8, 3), (9, 4, 1), (4, 6, 0), (6, 6, 10)])
def test_relative_spec_matches_vectorised_clamp(q_len, k_len, max_distance):
    i, j = torch.arange(q_len)[:, None], torch.arange(k_len)[None, :]
    want = torch.clamp(j - i, -max_distance, max_distance) + max_distance
    got = rp.relative_index_spec(q_len, k_len, max_distance)
    assert got.dtype == torch.long and torch.equal(got, want)


def test_relative_index_looks_up_shaw_embeddings():
    table = torch.randn(2 * 3 + 1, 4)                       # rows for distances -3 .. 3
    emb = table[rp.relative_index_spec(4, 9, 3)]            # (4, 9, 4)
    assert torch.equal(emb[0, 8], table[6]) and torch.equal(emb[3, 0], table[0]) and torch.equal(emb[2, 2], table[3])


def test_relative_cases_cover_the_issue():
    cases = [c.make()[0] or tuple(c.make()[1].values()) for c in get(REL).all_cases()]
    assert any(q != k for q, k, _ in cases) and any(q == k for q, k, _ in cases)
    assert len({d for _, _, d in cases}) >= 4


def test_relative_properties_reject_wrong_indices():
    assert _property(REL, "every index lies in [0, 2·max_distance]").check(rp.relative_no_clip)
    assert _property(REL, "entry (i, j) depends only on j - i").check(
        lambda q, k, d: torch.randint(0, 2 * d + 1, (q, k), generator=torch.Generator().manual_seed(0)))


# --------------------------------------------------------------------------- alibi_bias

def test_alibi_slopes_are_the_papers():
    assert rp.alibi_slopes_spec(8) == [2.0 ** -k for k in range(1, 9)]
    assert rp.alibi_slopes_spec(4) == [2.0 ** -k for k in (2, 4, 6, 8)]
    assert rp.alibi_slopes_spec(6) == [2.0 ** -k for k in (2, 4, 6, 8, 1, 3)]
    twelve = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -(k - 0.5) for k in (1, 2, 3, 4)]
    assert rp.alibi_slopes_spec(12) == pytest.approx(twelve, rel=1e-12)


def bloom_alibi(n_heads, seq_len):
    """ALiBi as Hugging Face BLOOM's build_alibi_tensor computes the slopes, in closed form."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=f64)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=f64))
    if closest != n_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=f64)
        n_extra = min(closest, n_heads - closest)
        extra = torch.pow(extra_base, torch.arange(1, 1 + 2 * n_extra, 2, dtype=f64))
        slopes = torch.cat([slopes, extra])
    pos = torch.arange(seq_len, dtype=f64)
    return (slopes[:, None, None] * (pos[None, None, :] - pos[None, :, None])).float()


@pytest.mark.parametrize("n_heads", [1, 2, 3, 5, 6, 8, 12, 16, 20, 24, 32])
def test_alibi_spec_matches_bloom(n_heads):
    torch.testing.assert_close(rp.alibi_spec(n_heads, 5), bloom_alibi(n_heads, 5), rtol=1e-6, atol=0)


def test_alibi_cases_cover_the_issue():
    heads = {(c.make()[0] or tuple(c.make()[1].values()))[0] for c in get(ALIBI).all_cases()}
    assert {6, 12, 20} <= heads and {1, 2, 4, 8, 16} <= heads


def test_alibi_properties_reject_wrong_biases():
    assert _property(ALIBI, "the diagonal is 0 and past keys get a negative bias").check(rp.alibi_sign)
    assert _property(ALIBI, "slopes lie in (0, 1) and decrease within each group of heads").check(
        rp.alibi_reversed)


# --------------------------------------------------------------------------- apply_rope

def rope_by_rotation_matrices(x, positions=None, base=10000.0, interleaved=False):
    """RoPE as a block-diagonal rotation matrix per position, built entry by entry (float64)."""
    T, D = x.shape[-2:]
    pos = range(T) if positions is None else positions.tolist()
    pairs = [(2 * i, 2 * i + 1) for i in range(D // 2)] if interleaved else [(i, i + D // 2) for i in range(D // 2)]
    R = torch.zeros(T, D, D, dtype=f64)
    for t, p in enumerate(pos):
        for i, (a, b) in enumerate(pairs):
            phi = p * base ** (-2 * i / D)
            R[t, a, a], R[t, a, b] = math.cos(phi), -math.sin(phi)
            R[t, b, a], R[t, b, b] = math.sin(phi), math.cos(phi)
    return torch.einsum("tij,...tj->...ti", R, x.double()).to(x.dtype)


@pytest.mark.parametrize("i", range(len(get(ROPE).all_cases())))
def test_rope_spec_matches_rotation_matrices(i):
    ex = get(ROPE)
    args, kwargs = ex.all_cases()[i].make()
    expected = rope.rope_spec(*args, **kwargs)
    torch.testing.assert_close(expected.double(), rope_by_rotation_matrices(*args, **kwargs).double(),
                               rtol=1e-6 if expected.dtype == torch.float32 else 1e-12, atol=1e-6 if
                               expected.dtype == torch.float32 else 1e-12)


def test_rope_layouts_are_a_permutation_of_each_other():
    x = torch.randn(2, 7, 16, dtype=f64)
    pos = torch.tensor([4, 0, 9, 2, 2, 31, 8])
    perm = torch.cat([torch.arange(0, 16, 2), torch.arange(1, 16, 2)])    # (2i, 2i+1) -> (i, i + D/2)
    inverse = torch.argsort(perm)
    via_half = rope.rope_spec(x[..., perm], pos)[..., inverse]
    torch.testing.assert_close(via_half, rope.rope_spec(x, pos, interleaved=True), rtol=0, atol=1e-12)


def test_rope_half_layout_is_hf_rotate_half():
    x, pos = torch.randn(3, 5, 8, dtype=f64), torch.tensor([10, 11, 12, 13, 14])
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=f64) / 8))
    emb = torch.cat([pos[:, None] * inv_freq, pos[:, None] * inv_freq], dim=-1)
    rotate_half = torch.cat([-x[..., 4:], x[..., :4]], dim=-1)
    torch.testing.assert_close(rope.rope_spec(x, pos), x * emb.cos() + rotate_half * emb.sin())


def test_rope_cases_cover_the_issue():
    ex = get(ROPE)
    notes = " ".join(c.note for c in ex.all_cases())
    for needed in ("interleaved", "half layout", "non-contiguous positions", "KV cache", "offset", "base = ",
                   "float64", "non-contiguous (B, H, T, D) view", "gradient"):
        assert needed in notes, needed
    assert len(ex.mistakes) >= 5


def test_rope_properties_reject_wrong_rotations():
    norm = _property(ROPE, "the norm of every vector is preserved")
    zero = _property(ROPE, "position 0 is the identity")
    relative = _property(ROPE, "q·k depends only on the relative position m - n")
    scaled = lambda x, positions=None, base=10000.0, interleaved=False: 1.1 * rope.rope_spec(  # noqa: E731
        x, positions, base, interleaved)
    from_one = lambda x, positions=None, base=10000.0, interleaved=False: rope.rope_spec(  # noqa: E731
        x, (torch.arange(x.shape[-2]) if positions is None else positions) + 1, base, interleaved)

    def plus_absolute(x, positions=None, base=10000.0, interleaved=False):
        pos = torch.arange(x.shape[-2]) if positions is None else positions
        return x + ap.sinusoid_spec(int(pos.max()) + 1, x.shape[-1])[pos].to(x.dtype)

    assert norm.check(scaled) and zero.check(from_one) and relative.check(plus_absolute)
    for prop in (norm, zero, relative):
        assert prop.check(rope.rope_spec) is None


def test_rope_tolerance_accepts_llama_style_float32_code():
    def hf_llama(x, positions=None, base=10000.0, interleaved=False):
        T, D = x.shape[-2:]
        pos = torch.arange(T) if positions is None else positions
        w = torch.promote_types(x.dtype, torch.float32)
        inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.int64).to(w) / D))
        freqs = pos.to(w)[:, None] * inv_freq                              # (T, D/2)
        if interleaved:
            x1, x2 = x[..., 0::2], x[..., 1::2]
            c, s = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
            return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
        emb = torch.cat([freqs, freqs], dim=-1)
        c, s = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        return x * c + torch.cat([-x[..., D // 2:], x[..., : D // 2]], dim=-1) * s

    assert run(ROPE, hf_llama).passed


# --------------------------------------------------------------------------- errata (issue 12)

@pytest.mark.parametrize("n", [3, 5, 6, 12, 20, 24])
def test_alibi_extra_slopes_do_not_fall_between(n):
    """For n not a power of two the first extra head, head c, is the steepest: 2**(-4/c), above 2**(-8/c)."""
    slopes = rp.alibi_slopes_spec(n)
    c = 2 ** math.floor(math.log2(n))
    assert max(slopes) == pytest.approx(2 ** (-4 / c)) and slopes.index(max(slopes)) == c
    assert min(slopes) == pytest.approx(2.0 ** -8)
    assert max(slopes) > 2 ** (-8 / n)                     # the span is not [2^-8, 2^(-8/n)]


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_alibi_power_of_two_slopes_span(n):
    slopes = rp.alibi_slopes_spec(n)
    assert slopes[0] == max(slopes) == pytest.approx(2 ** (-8 / n)) and min(slopes) == pytest.approx(2.0 ** -8)


def test_alibi_diagnoses_claim_nothing_false_about_the_extra_slopes():
    messages = " ".join(m.message for m in get(ALIBI).mistakes)
    assert "fall between" not in messages and "interleaves" not in messages
