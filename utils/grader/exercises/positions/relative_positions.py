"""Part 4, positions: clipped relative positions (Shaw et al.) and ALiBi (chapter positions/relative_positions)."""

from __future__ import annotations

import math

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64
from ...registry import register

# --------------------------------------------------------------------------- relative_position_index

def relative_index_spec(q_len, k_len, max_distance):
    """Entry by entry: clip(j - i, -max_distance, max_distance) + max_distance."""
    out = torch.empty(q_len, k_len, dtype=torch.long)
    for i in range(q_len):
        for j in range(k_len):
            out[i, j] = min(max(j - i, -max_distance), max_distance) + max_distance
    return out


def _lengths(q_len, k_len, max_distance, keywords=False):
    if keywords:
        return call(q_len=q_len, k_len=k_len, max_distance=max_distance)
    return call(q_len, k_len, max_distance)


def _relative_cases():
    return [
        case(_lengths, 5, 5, 2, note="square, distances clipped at 2"),
        case(_lengths, 6, 6, 10, note="max_distance larger than the sequence: nothing clipped"),
        case(_lengths, 3, 8, 3, note="fewer queries than keys"),
        case(_lengths, 9, 4, 2, note="more queries than keys"),
        case(_lengths, 7, 7, 1, note="max_distance = 1"),
        case(_lengths, 4, 6, 0, note="max_distance = 0: every distance clipped to 0"),
        case(_lengths, 1, 5, 3, note="a single query"),
        case(_lengths, 12, 10, 4, keywords=True, note="keyword arguments"),
    ]


def _index_range(call):
    idx = call(10, 13, 3)
    if int(idx.min()) < 0 or int(idx.max()) > 2 * 3:
        return msg("indices range over [{low}, {high}]; an embedding table of 2·3+1 rows needs [0, 6]",
                   low=int(idx.min()), high=int(idx.max()))
    return None


def _index_is_toeplitz(call):
    idx = call(8, 8, 5)
    if not torch.equal(idx[1:, 1:], idx[:-1, :-1]):
        return "entry (i, j) is not a function of j - i alone"
    return None


def _grid(q_len, k_len):
    return torch.arange(q_len)[:, None], torch.arange(k_len)[None, :]


def relative_i_minus_j(q_len, k_len, max_distance):
    i, j = _grid(q_len, k_len)
    return (i - j).clamp(-max_distance, max_distance) + max_distance


def relative_no_clip(q_len, k_len, max_distance):
    i, j = _grid(q_len, k_len)
    return j - i + max_distance


def relative_no_shift(q_len, k_len, max_distance):
    i, j = _grid(q_len, k_len)
    return (j - i).clamp(-max_distance, max_distance)


def relative_clip_above_only(q_len, k_len, max_distance):
    i, j = _grid(q_len, k_len)
    return (j - i).clamp(max=max_distance) + max_distance


def relative_query_length_twice(q_len, k_len, max_distance):
    i, j = _grid(q_len, q_len)
    return (j - i).clamp(-max_distance, max_distance) + max_distance


def relative_float(q_len, k_len, max_distance):
    i = torch.arange(q_len, dtype=torch.float32)[:, None]
    j = torch.arange(k_len, dtype=torch.float32)[None, :]
    return (j - i).clamp(-max_distance, max_distance) + max_distance


def relative_absolute_distance(q_len, k_len, max_distance):
    i, j = _grid(q_len, k_len)
    return (j - i).abs().clamp(max=max_distance)


register(Exercise(
    name="relative_position_index",
    chapter="positions/relative_positions",
    signature="relative_position_index(q_len, k_len, max_distance)",
    oracle=relative_index_spec,
    cases=_relative_cases,
    properties=[
        Property("every index lies in [0, 2·max_distance]", _index_range),
        Property("entry (i, j) depends only on j - i", _index_is_toeplitz),
    ],
    hints=(
        "the entry for query i and key j depends on j - i only: build the (q_len, k_len) matrix of j - i first, "
        "then turn each distance into a row of the table   (eq. rel-clip)",
        "a column of query positions (q_len, 1) against a row of key positions (1, k_len) broadcasts to "
        "(q_len, k_len); clip to [-max_distance, max_distance] and shift so the smallest row is 0",
        "idx[i, j] = clamp(j - i, -max_distance, max_distance) + max_distance: keys along columns, queries "
        "along rows, a LongTensor   (eq. rel-clip)",
    ),
    mistakes=[
        Mistake("i - j", relative_i_minus_j,
                "your distances have the wrong sign: the entry for query i and key j is j - i (a key to the "
                "right of the query is a positive distance)."),
        Mistake("no clipping", relative_no_clip,
                "you did not clip: distances beyond ±max_distance must share the table's end rows, "
                "clamp(j - i, -max_distance, max_distance)."),
        Mistake("no shift", relative_no_shift,
                "your indices go negative: add max_distance after clipping so that they index rows "
                "0 .. 2·max_distance of the embedding table."),
        Mistake("clipped above only", relative_clip_above_only,
                "you clipped only from above (clamp(max=...)): clip from below at -max_distance too."),
        Mistake("q_len for both axes", relative_query_length_twice,
                "your result is (q_len, q_len): the key axis has k_len entries, torch.arange(k_len)."),
        Mistake("float result", relative_float,
                "your indices are floating point: an embedding lookup needs a LongTensor (use integer arange)."),
        Mistake("absolute distance", relative_absolute_distance,
                "you used |j - i|: Shaw et al. keep the direction, so j - i = -3 and +3 get different rows."),
    ],
))


# --------------------------------------------------------------------------- alibi_bias

def alibi_slopes_spec(n):
    """The head slopes of Press et al. (ALiBi), written as in the paper's reference code."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + alibi_slopes_spec(2 * closest)[0::2][: n - closest]


def alibi_spec(n_heads, seq_len):
    """bias[h, i, j] = m_h * (j - i), entry by entry."""
    slopes = alibi_slopes_spec(n_heads)
    out = torch.empty(n_heads, seq_len, seq_len, dtype=f64)
    for h in range(n_heads):
        for i in range(seq_len):
            for j in range(seq_len):
                out[h, i, j] = slopes[h] * (j - i)
    return out.to(f32)


def _heads(n_heads, seq_len, keywords=False):
    return call(n_heads=n_heads, seq_len=seq_len) if keywords else call(n_heads, seq_len)


def _alibi_cases():
    return [
        case(_heads, 8, 6, note="8 heads: slopes 1/2, 1/4, ..., 1/256"),
        case(_heads, 4, 5, note="4 heads"),
        case(_heads, 16, 4, note="16 heads"),
        case(_heads, 1, 3, note="a single head"),
        case(_heads, 2, 3, note="2 heads"),
        case(_heads, 6, 5, note="6 heads: not a power of two"),
        case(_heads, 12, 7, note="12 heads: not a power of two"),
        case(_heads, 20, 4, note="20 heads: not a power of two"),
        case(_heads, 3, 4, note="3 heads"),
        case(_heads, 8, 1, note="a single position"),
        case(_heads, 5, 9, keywords=True, note="keyword arguments"),
    ]


def _alibi_causal_rows(call):
    b = call(8, 6).double()
    if not torch.allclose(torch.diagonal(b, dim1=-2, dim2=-1), torch.zeros(8, 6, dtype=f64)):
        return "the diagonal (a query with itself) is not 0"
    if not torch.all(b.tril() <= 0):
        return "some past key (j < i) gets a positive bias; past keys must be penalised"
    return None


def _alibi_slopes_decrease(call):
    b = call(12, 3).double()
    slopes = b[:, 0, 1]                                   # m_h * (1 - 0)
    if not (torch.all(slopes > 0) and torch.all(slopes < 1) and torch.all(slopes[:8].diff() < 0)
            and torch.all(slopes[8:].diff() < 0)):
        return msg("slopes {slopes} are not in (0, 1) and decreasing within the 8 power-of-two heads and within "
                   "the 4 extra heads", slopes=[round(s, 4) for s in slopes.tolist()])
    return None


def _slopes_tensor(slopes):
    return torch.tensor(slopes, dtype=f64)[:, None, None]


def _distance(seq_len):
    pos = torch.arange(seq_len, dtype=f64)
    return pos[None, :] - pos[:, None]                  # (T, T): j - i


def _power_of_2_slopes(n):
    start = 2 ** (-8 / n)
    return [start ** (h + 1) for h in range(n)]


def alibi_geometric_any_n(n_heads, seq_len):
    return (_slopes_tensor(_power_of_2_slopes(n_heads)) * _distance(seq_len)).float()


def alibi_sign(n_heads, seq_len):
    return (_slopes_tensor(alibi_slopes_spec(n_heads)) * -_distance(seq_len)).float()


def alibi_symmetric(n_heads, seq_len):
    return (_slopes_tensor(alibi_slopes_spec(n_heads)) * -_distance(seq_len).abs()).float()


def alibi_reversed(n_heads, seq_len):
    return (_slopes_tensor(alibi_slopes_spec(n_heads)[::-1]) * _distance(seq_len)).float()


def alibi_first_slope_one(n_heads, seq_len):
    def slopes(n):
        if math.log2(n).is_integer():
            return [2 ** (-8 * h / n) for h in range(n)]
        c = 2 ** math.floor(math.log2(n))
        return slopes(c) + slopes(2 * c)[0::2][: n - c]
    return (_slopes_tensor(slopes(n_heads)) * _distance(seq_len)).float()


def alibi_extra_not_strided(n_heads, seq_len):
    def slopes(n):
        if math.log2(n).is_integer():
            return _power_of_2_slopes(n)
        c = 2 ** math.floor(math.log2(n))
        return slopes(c) + slopes(2 * c)[: n - c]
    return (_slopes_tensor(slopes(n_heads)) * _distance(seq_len)).float()


def alibi_extra_odd(n_heads, seq_len):
    def slopes(n):
        if math.log2(n).is_integer():
            return _power_of_2_slopes(n)
        c = 2 ** math.floor(math.log2(n))
        return slopes(c) + slopes(2 * c)[1::2][: n - c]
    return (_slopes_tensor(slopes(n_heads)) * _distance(seq_len)).float()


def alibi_next_power(n_heads, seq_len):
    c = 2 ** math.ceil(math.log2(n_heads))
    return (_slopes_tensor(_power_of_2_slopes(c)[:n_heads]) * _distance(seq_len)).float()


register(Exercise(
    name="alibi_bias",
    chapter="positions/relative_positions",
    signature="alibi_bias(n_heads, seq_len)",
    oracle=alibi_spec,
    cases=_alibi_cases,
    properties=[
        Property("the diagonal is 0 and past keys get a negative bias", _alibi_causal_rows),
        Property("slopes lie in (0, 1) and decrease within each group of heads", _alibi_slopes_decrease),
    ],
    hints=(
        "two steps: one slope per head (eq. alibi-slopes; eq. alibi-recipe when n_heads is not a power of two), "
        "then the (seq_len, seq_len) matrix of distances j - i scaled by each head's slope   (eq. alibi-def)",
        "for n a power of two the slopes are the geometric sequence 2**(-8/n), 2**(-16/n), ..., 2**(-8); for other "
        "n start from the power of two c below n and add n - c slopes taken from the sequence for 2c",
        "m_h = 2**(-8(h+1)/n) for n a power of two; otherwise the slopes of the closest power of two c below n, "
        "then every other slope of 2c, the first n - c of them; bias[h, i, j] = m_h * (j - i)   (eq. alibi-slopes)",
    ),
    mistakes=[
        Mistake("geometric in n for any n", alibi_geometric_any_n,
                "for a head count that is not a power of two the paper does not use 2**(-8(h+1)/n): it takes the "
                "slopes of the closest power of two c < n, then every other slope of 2c."),
        Mistake("sign flipped", alibi_sign,
                "your bias has the wrong sign: it is m·(j - i), negative for past keys (j < i), so distant keys are "
                "penalised."),
        Mistake("symmetric |j - i|", alibi_symmetric,
                "you used -m·|j - i|: the exercise asks for m·(j - i), which is positive for future keys (the "
                "causal mask removes them)."),
        Mistake("slopes reversed", alibi_reversed,
                "your slopes are in reverse order: when n is a power of two, head 0 gets the LARGEST slope, "
                "2**(-8/n) (1/2 for 8 heads), and they shrink geometrically; for other n the first c heads keep "
                "that order and the extra heads follow them."),
        Mistake("first slope is 1", alibi_first_slope_one,
                "your slopes start at 1: with 8 heads they are 1/2, 1/4, ..., 1/256, i.e. 2**(-8(h+1)/n) with "
                "h counted from 0 (for n a power of two; other n build on the power of two below)."),
        Mistake("extra slopes not strided", alibi_extra_not_strided,
                "the extra heads take EVERY OTHER slope of 2c, starting with the first: slopes(2c)[0::2][:n - c], "
                "not the first n - c slopes of 2c."),
        Mistake("extra slopes from the odd entries", alibi_extra_odd,
                "your extra heads repeat slopes that the first c heads already have (slopes(2c)[1::2] is exactly "
                "slopes(c)): they take slopes(2c)[0::2], every other slope of 2c starting at the first, the ones "
                "the first c heads do not have (2**(-4/c), 2**(-12/c), ...)."),
        Mistake("next power of two, truncated", alibi_next_power,
                "you took the slopes of the next power of two and kept the first n: the paper starts from the "
                "power of two c BELOW n and appends n - c slopes of 2c (every other one, from the first)."),
    ],
))
