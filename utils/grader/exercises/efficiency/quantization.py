"""Part 9, efficient fine-tuning and inference: int8 absmax and int4 min-max weight quantization (chapter
efficiency/quantization).

The oracles are plain loop specifications, row by row and group by group, written from the contract in
../shared/CURRICULUM.md; tests/test_efficiency_lora_quant.py proves them equal to PyTorch's own quantizers
(`torch.quantize_per_channel`, `torch.fake_quantize_per_channel_affine`) on random weights. Quantized values and
zero points are integers, compared exactly; scales and dequantized weights are compared with the usual tolerance.
"""

from __future__ import annotations

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn, strided, transposed
from ...registry import register

FORBIDDEN = ("torch.quantize_per_channel", "torch.quantize_per_tensor", "torch.fake_quantize_per_channel_affine",
             "torch.fake_quantize_per_tensor_affine", "torch.quantize_per_tensor_dynamic")


# --------------------------------------------------------------------------- oracles: loops over rows and groups

def int8_spec(w):
    """Row by row: scale = max |w| / 127 (1 for an all-zero row), q = round(w / scale) clamped to [-127, 127]."""
    w = w.detach()
    q = torch.empty(w.shape, dtype=torch.int8)
    scale = torch.empty(w.shape[0], 1, dtype=w.dtype)
    for i, row in enumerate(w):
        amax = row.abs().max()
        s = amax / 127 if amax > 0 else torch.ones((), dtype=w.dtype)
        scale[i, 0] = s
        q[i] = torch.round(row / s).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequant_int8_spec(q, scale):
    """Row by row: q[i] * scale[i], in scale's dtype."""
    return torch.stack([q[i].to(scale.dtype) * scale[i, 0] for i in range(q.shape[0])])


def int4_spec(w, group_size=128):
    """Group by group (group_size consecutive entries of a row): scale = (max - min) / 15 (1 when max == min),
    zero = round(-min / scale) clamped to [0, 15], q = round(w / scale) + zero clamped to [0, 15]."""
    w = w.detach()
    out, n = w.shape
    G = n // group_size
    q = torch.empty(out, n, dtype=torch.uint8)
    scale = torch.empty(out, G, dtype=w.dtype)
    zero = torch.empty(out, G, dtype=torch.uint8)
    for i in range(out):
        for g in range(G):
            cols = slice(g * group_size, (g + 1) * group_size)
            group = w[i, cols]
            lo, hi = group.min(), group.max()
            s = (hi - lo) / 15 if hi > lo else torch.ones((), dtype=w.dtype)
            z = torch.round(-lo / s).clamp(0, 15)
            scale[i, g], zero[i, g] = s, z.to(torch.uint8)
            q[i, cols] = (torch.round(group / s) + z).clamp(0, 15).to(torch.uint8)
    return q, scale, zero


def dequant_int4_spec(q, scale, zero, group_size=128):
    """Group by group: (q - zero) * scale, in scale's dtype."""
    out, n = q.shape
    w = torch.empty(out, n, dtype=scale.dtype)
    for i in range(out):
        for g in range(n // group_size):
            cols = slice(g * group_size, (g + 1) * group_size)
            w[i, cols] = (q[i, cols].to(scale.dtype) - zero[i, g].to(scale.dtype)) * scale[i, g]
    return w


# --------------------------------------------------------------------------- inputs

def _weight(out, n, dtype=f32, seed=0, layout="contiguous", scale=1.0):
    if layout == "transposed":
        return transposed(out, n, dtype=dtype, seed=seed, scale=scale)
    if layout == "strided":
        return strided(out, n, dtype=dtype, seed=seed, scale=scale)
    return randn(out, n, dtype=dtype, seed=seed, scale=scale)


def _with_rows(out, n, rows, dtype=f32, seed=0):
    """A random weight whose first rows are replaced by the given values (zero rows, outliers, exact ties)."""
    w = randn(out, n, dtype=dtype, seed=seed)
    for i, values in enumerate(rows):
        w[i] = torch.tensor(values, dtype=dtype)
    return w


# w / scale lands exactly on halves: scale = 31.75 / 127 = 0.25 (exact in binary)
TIES8 = [31.75, 0.125, 0.375, 0.625, -0.125, -0.375, 0.875, -0.625]


def _int8_args(build, *a, **kw):
    return call(build(*a, **kw))


def _int8_cases():
    return [
        case(_int8_args, _weight, 8, 32, note="(8, 32) float32 weight"),
        case(_int8_args, _weight, 6, 20, dtype=f64, seed=1, note="float64 (6, 20)"),
        case(_int8_args, _weight, 16, 12, seed=2, layout="transposed", note="non-contiguous (a transposed view)"),
        case(_int8_args, _weight, 5, 9, seed=3, layout="strided", dtype=f64,
             note="non-contiguous float64 (every other column)"),
        case(_int8_args, _with_rows, 4, 8, [TIES8], seed=4,
             note="w / scale exactly halfway between integers: round half to even, as torch.round"),
        case(_int8_args, _with_rows, 5, 6, [[0.0] * 6, [-3.0, -1.0, -0.5, -2.0, -0.25, -1.5]], seed=5,
             note="an all-zero row (scale 1, q 0) and a negative-only row"),
        case(_int8_args, _weight, 1, 16, seed=6, scale=3.0, note="a single row (batch of one)"),
        case(_int8_args, _with_rows, 6, 64, [[0.02] * 63 + [40.0]], seed=7, dtype=f64,
             note="an outlier row: one entry 2,000 times the others"),
    ]


def _codes(out, n, dtype=f32, seed=0, layout="contiguous", scale_of=1.0):
    """(q, scale): random int8 codes in [-127, 127] with positive per-row scales."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (n, out) if layout == "transposed" else (out, n), generator=g).to(torch.int8)
    if layout == "transposed":
        q = q.T
    scale = (torch.rand(out, 1, generator=g, dtype=f64) * scale_of + 1e-3).to(dtype)
    return call(q, scale)


def _dequant8_cases():
    return [
        case(_codes, 8, 32, note="(8, 32) codes, float32 scales"),
        case(_codes, 6, 20, dtype=f64, seed=1, note="float64 scales: the result is float64"),
        case(_codes, 7, 7, seed=2, note="a square (7, 7) weight"),
        case(_codes, 12, 5, seed=3, layout="transposed", dtype=f64, note="non-contiguous q (a transposed view)"),
        case(lambda: call(torch.tensor([[-127, 127, 0, 1, -1]], dtype=torch.int8),
                          torch.tensor([[0.5]], dtype=f64)), note="a single row with the extreme codes -127 and 127"),
        case(_codes, 4, 16, seed=5, scale_of=1e-4, note="tiny scales (1e-4)"),
    ]


def _int4_args(build, *a, group_size=None, positional=False, **kw):
    w = build(*a, **kw)
    if group_size is None:
        return call(w)
    return call(w, group_size) if positional else call(w, group_size=group_size)


# one group of 8: min -1.625, max 2.125, scale 0.25 (exact), -min / scale = 6.5 (a tie), w / scale on halves
TIES4 = [-1.625, 2.125, 0.125, 0.375, -0.625, 1.875, -0.125, 0.625]


def _zero_as_uint8(result):
    """The contract lets the zero points be uint8 or integers 0..15 in scale's dtype: the second form is compared as
    the first. Anything else (other dtypes, fractions, values outside 0..15) is left for the report to name."""
    if not (isinstance(result, tuple) and len(result) == 3 and all(isinstance(t, torch.Tensor) for t in result)):
        return result
    q, scale, zero = result
    if zero.dtype == scale.dtype and zero.is_floating_point() and bool(
            ((zero == zero.round()) & (zero >= 0) & (zero <= 15)).all()):
        zero = zero.to(torch.uint8)
    return q, scale, zero


def _int4_cases():
    return [
        case(_int4_args, _weight, 4, 256, note="(4, 256) float32, default group_size=128"),
        case(_int4_args, _weight, 6, 64, dtype=f64, seed=1, group_size=16, note="float64 (6, 64), group_size=16"),
        case(_int4_args, _weight, 8, 96, seed=2, layout="transposed", group_size=32,
             note="non-contiguous (a transposed view), group_size=32"),
        case(_int4_args, _with_rows, 4, 16, [[0.0] * 8 + [0.3] * 8, [1.0] * 16], seed=3, group_size=8,
             note="constant groups: all zero, all 0.3, all 1.0 (scale 1 where max == min)"),
        case(_int4_args, _with_rows, 3, 16, [[0.5, 1.0, 2.0, 1.5, 0.75, 1.25, 3.0, 2.5] * 2,
                                             [-0.5, -1.0, -2.0, -1.5, -0.75, -1.25, -3.0, -2.5] * 2],
             seed=4, group_size=8, positional=True,
             note="positive-only and negative-only groups: the zero point clamps to 0 and to 15"),
        case(_int4_args, _with_rows, 2, 16, [TIES4 * 2], seed=5, group_size=8, dtype=f64,
             note="exact ties: -min / scale = 6.5 and w / scale on halves (round half to even)"),
        case(_int4_args, _weight, 1, 128, seed=6, note="a single row (batch of one), one group of 128"),
        case(_int4_args, _weight, 5, 48, seed=7, group_size=48, layout="strided",
             note="group_size = in_features (one group per row), non-contiguous"),
    ]


def _packed(out, n, group_size, dtype=f32, seed=0, zero_dtype=torch.uint8, layout="contiguous", positional=False,
            default=False):
    """(q, scale, zero[, group_size]): random codes in [0, 15], positive scales, zero points in [0, 15]."""
    g = torch.Generator().manual_seed(seed)
    G = n // group_size
    q = torch.randint(0, 16, (n, out) if layout == "transposed" else (out, n), generator=g).to(torch.uint8)
    if layout == "transposed":
        q = q.T
    scale = (torch.rand(out, G, generator=g, dtype=f64) + 0.05).to(dtype)
    zero = torch.randint(0, 16, (out, G), generator=g).to(zero_dtype)
    if default:
        return call(q, scale, zero)
    return call(q, scale, zero, group_size) if positional else call(q, scale, zero, group_size=group_size)


def _dequant4_cases():
    return [
        case(_packed, 4, 256, 128, default=True, note="(4, 256), default group_size=128, uint8 zero points"),
        case(_packed, 6, 64, 16, dtype=f64, seed=1, note="float64 scales, group_size=16"),
        case(_packed, 5, 32, 8, seed=2, zero_dtype=f32, positional=True,
             note="zero points given in scale's dtype (float32), group_size=8 positionally"),
        case(_packed, 8, 96, 32, seed=3, layout="transposed", dtype=f64, zero_dtype=f64,
             note="non-contiguous q, float64 zero points, group_size=32"),
        case(_packed, 1, 64, 64, seed=4, note="a single row, one group"),
        case(_packed, 3, 48, 16, seed=5, note="(3, 48), three groups per row"),
    ]


# --------------------------------------------------------------------------- properties

def _int8_round_trip(call) -> str | None:
    w = randn(16, 40, seed=31, scale=2.0)
    q, scale = call(w)
    err = (w - q.to(w.dtype) * scale).abs()
    if (err > scale / 2 * (1 + 1e-5)).any():
        return msg("|w - q * scale| reaches {err:.3g} times the scale; rounding to the nearest level keeps it "
                   "within half a scale", err=float((err / scale).max()))
    if not (q.abs().amax(dim=1) == 127).all():
        return "some row does not use the code 127 (or -127) for its largest |w|"
    return None


def _int4_range(call) -> str | None:
    w = randn(6, 64, seed=32, scale=2.0)
    q, scale, zero = call(w, group_size=16)
    rebuilt = (q.double() - zero.double().repeat_interleave(16, 1)) * scale.double().repeat_interleave(16, 1)
    err = (w.double() - rebuilt).abs() / scale.double().repeat_interleave(16, 1)
    if err.max() > 0.5 + 1e-5:
        return msg("|w - (q - zero) * scale| reaches {err:.3g} times the scale in a group that contains 0; "
                   "it should stay within half a scale", err=float(err.max()))
    return None


# --------------------------------------------------------------------------- mistakes: quantize_int8

def _amax(w):
    return w.abs().amax(dim=1, keepdim=True)


def _safe(amax, div=127):
    return torch.where(amax == 0, torch.ones_like(amax), amax / div)


def int8_by_128(w):
    scale = _safe(_amax(w), 128)
    return torch.round(w / scale).clamp(-128, 127).to(torch.int8), scale


def int8_per_tensor(w):
    scale = w.abs().max() / 127
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def int8_per_column(w):
    amax = w.abs().amax(dim=0, keepdim=True)
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / 127)
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def int8_floor(w):
    scale = _safe(_amax(w))
    return torch.floor(w / scale).clamp(-127, 127).to(torch.int8), scale


def int8_truncated(w):
    scale = _safe(_amax(w))
    return (w / scale).to(torch.int8), scale


def int8_half_away(w):
    scale = _safe(_amax(w))
    x = w / scale
    return (torch.sign(x) * torch.floor(x.abs() + 0.5)).clamp(-127, 127).to(torch.int8), scale


def int8_zero_row_unguarded(w):
    scale = _amax(w) / 127
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale



def int8_float_codes(w):
    scale = _safe(_amax(w))
    return torch.round(w / scale).clamp(-127, 127), scale


# --------------------------------------------------------------------------- mistakes: dequantize_int8

def deq8_float32(q, scale):
    return q.float() * scale.float()


def deq8_float32_cast_back(q, scale):
    return (q.float() * scale.float()).to(scale.dtype)


def deq8_divide(q, scale):
    return q.to(scale.dtype) / scale


def deq8_over_127(q, scale):
    return q.to(scale.dtype) * scale / 127


def deq8_squeezed(q, scale):
    return q.to(scale.dtype) * scale.squeeze(-1)


# --------------------------------------------------------------------------- mistakes: quantize_int4

def _groups(w, group_size):
    out, n = w.shape
    return w.reshape(out, n // group_size, group_size)            # (out, G, group_size)


def _int4_from(groups, scale, zero, shape):
    q = (torch.round(groups / scale[..., None]) + zero[..., None]).clamp(0, 15)
    return q.reshape(shape).to(torch.uint8), scale, zero.to(torch.uint8)


def _minmax(groups, levels=15):
    lo, hi = groups.amin(-1), groups.amax(-1)                      # (out, G)
    scale = torch.where(hi > lo, (hi - lo) / levels, torch.ones_like(hi))
    return lo, hi, scale


def int4_absmax(w, group_size=128):
    groups = _groups(w, group_size)
    amax = groups.abs().amax(-1)
    scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))
    return _int4_from(groups, scale, torch.full_like(scale, 8), w.shape)


def int4_zero_unclamped(w, group_size=128):
    groups = _groups(w, group_size)
    lo, _, scale = _minmax(groups)
    zero = torch.round(-lo / scale)
    q = (torch.round(groups / scale[..., None]) + zero[..., None]).clamp(0, 15)
    return q.reshape(w.shape).to(torch.uint8), scale, zero.to(torch.int64).to(torch.uint8)


def int4_q_unclamped(w, group_size=128):
    groups = _groups(w, group_size)
    lo, _, scale = _minmax(groups)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = torch.round(groups / scale[..., None]) + zero[..., None]
    return q.reshape(w.shape).to(torch.int64).to(torch.uint8), scale, zero.to(torch.uint8)


def int4_floor(w, group_size=128):
    groups = _groups(w, group_size)
    lo, _, scale = _minmax(groups)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = (torch.floor(groups / scale[..., None]) + zero[..., None]).clamp(0, 15)
    return q.reshape(w.shape).to(torch.uint8), scale, zero.to(torch.uint8)


def int4_sixteen_levels(w, group_size=128):
    groups = _groups(w, group_size)
    lo, _, scale = _minmax(groups, levels=16)
    return _int4_from(groups, scale, torch.round(-lo / scale).clamp(0, 15), w.shape)


def int4_constant_unguarded(w, group_size=128):
    groups = _groups(w, group_size)
    lo, hi = groups.amin(-1), groups.amax(-1)
    scale = (hi - lo) / 15
    return _int4_from(groups, scale, torch.round(-lo / scale).clamp(0, 15), w.shape)


def int4_wrong_axis(w, group_size=128):
    out, n = w.shape
    groups = w.reshape(out, group_size, n // group_size).transpose(1, 2)     # strided "groups"
    lo, _, scale = _minmax(groups)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = (torch.round(groups / scale[..., None]) + zero[..., None]).clamp(0, 15)
    return q.transpose(1, 2).reshape(out, n).to(torch.uint8), scale, zero.to(torch.uint8)


def int4_shift_then_round(w, group_size=128):
    groups = _groups(w, group_size)
    lo, _, scale = _minmax(groups)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15)
    return q.reshape(w.shape).to(torch.uint8), scale, zero.to(torch.uint8)


def int4_keepdim(w, group_size=128):
    groups = _groups(w, group_size)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)   # (out, G, 1)
    scale = torch.where(hi > lo, (hi - lo) / 15, torch.ones_like(hi))
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = (torch.round(groups / scale) + zero).clamp(0, 15)
    return q.reshape(w.shape).to(torch.uint8), scale, zero.to(torch.uint8)


# --------------------------------------------------------------------------- mistakes: dequantize_int4

def _expand(t, group_size):
    return t.repeat_interleave(group_size, dim=1)


def deq4_uint8_subtract(q, scale, zero, group_size=128):
    return (q - _expand(zero, group_size)).to(scale.dtype) * _expand(scale, group_size)


def deq4_no_zero(q, scale, zero, group_size=128):
    return q.to(scale.dtype) * _expand(scale, group_size)


def deq4_plus_zero(q, scale, zero, group_size=128):
    return (q.to(scale.dtype) + _expand(zero, group_size).to(scale.dtype)) * _expand(scale, group_size)


def deq4_tiled(q, scale, zero, group_size=128):
    G = scale.shape[1]
    return (q.to(scale.dtype) - zero.to(scale.dtype).repeat(1, group_size)[:, :G * group_size]) * \
        scale.repeat(1, group_size)[:, :G * group_size]


def deq4_float32(q, scale, zero, group_size=128):
    return (q.float() - _expand(zero, group_size).float()) * _expand(scale, group_size).float()


def deq4_zero_unscaled(q, scale, zero, group_size=128):
    return q.to(scale.dtype) * _expand(scale, group_size) - _expand(zero, group_size).to(scale.dtype)


# --------------------------------------------------------------------------- declarations

register(
    Exercise(
        name="quantize_int8",
        chapter="efficiency/quantization",
        signature="quantize_int8(w) -> (q, scale)",
        oracle=int8_spec,
        cases=_int8_cases,
        forbidden=FORBIDDEN,
        properties=[Property("the round trip stays within half a scale, and every row uses the code 127",
                             _int8_round_trip)],
        hints=("one scale per output row maps the row's largest |w| to 127; every entry is then w / scale rounded "
               "to the nearest integer   (eq. q-absmax)",
               "scale = w.abs().amax(dim=1, keepdim=True) / 127, shape (out, 1); a row of zeros would divide by "
               "zero: give it scale 1",
               "q = torch.round(w / scale).clamp(-127, 127).to(torch.int8); torch.round rounds halves to even   "
               "(eq. q-absmax)"),
        mistakes=[
            Mistake("128 instead of 127", int8_by_128,
                    "your scale divides the largest |w| by 128: symmetric int8 uses the codes -127..127, so the "
                    "largest |w| maps to 127 and scale = max|w| / 127."),
            Mistake("one scale per tensor", int8_per_tensor,
                    "your scale is one number for the whole tensor: the contract asks for one scale per output row, "
                    "w.abs().amax(dim=1, keepdim=True) / 127, of shape (out, 1)."),
            Mistake("scale per column", int8_per_column,
                    "your scale is taken over dim 0 (one per input column): per-channel quantization of an "
                    "(out, in) weight takes the max over each row, amax(dim=1, keepdim=True), shape (out, 1)."),
            Mistake("floor instead of round", int8_floor,
                    "your codes are rounded down (floor): round to the nearest integer with torch.round, or "
                    "the error is up to a whole scale and biased."),
            Mistake("cast without rounding", int8_truncated,
                    "your codes are cast to int8 without rounding: .to(torch.int8) truncates toward zero. Round "
                    "first with torch.round(w / scale)."),
            Mistake("round half away from zero", int8_half_away,
                    "your rounding sends halves away from zero (floor(|x| + 0.5)): the contract rounds halves to "
                    "even, as torch.round does."),
            Mistake("all-zero row not handled", int8_zero_row_unguarded,
                    "an all-zero row gets scale 0 and codes 0 / 0 = NaN: give such a row scale 1 (its codes are "
                    "then 0), torch.where(amax == 0, 1, amax / 127)."),
            Mistake("codes left as floats", int8_float_codes,
                    "your codes are floats: return q as torch.int8 (.to(torch.int8) after rounding and clamping), "
                    "the point of quantization is one byte per weight."),
        ],
    ),
    Exercise(
        name="dequantize_int8",
        chapter="efficiency/quantization",
        signature="dequantize_int8(q, scale)",
        oracle=dequant_int8_spec,
        cases=_dequant8_cases,
        forbidden=FORBIDDEN,
        hints=("each code times its row's scale gives the weight back   (eq. q-absmax)",
               "q is int8: convert it to scale's dtype before multiplying, and let (out, 1) broadcast over the row",
               "return q.to(scale.dtype) * scale"),
        mistakes=[
            Mistake("computed in float32", deq8_float32,
                    "your result is float32 whatever the scale's dtype: convert q to scale.dtype (q.to(scale.dtype)) "
                    "and keep the scale as it is."),
            Mistake("float32 then cast back", deq8_float32_cast_back,
                    "you multiply in float32 and cast back to the scale's dtype: the product loses float64 "
                    "precision. Compute q.to(scale.dtype) * scale."),
            Mistake("divided by the scale", deq8_divide,
                    "you divide by the scale: quantization divided (q = round(w / scale)), so dequantization "
                    "multiplies, w = q * scale."),
            Mistake("divided by 127 again", deq8_over_127,
                    "you divide by 127 again: the scale already is max|w| / 127, so w = q * scale."),
            Mistake("scale squeezed", deq8_squeezed,
                    "your scale of shape (out,) broadcasts along the columns: keep it (out, 1) so that row i is "
                    "multiplied by scale[i]."),
        ],
    ),
    Exercise(
        name="quantize_int4",
        chapter="efficiency/quantization",
        signature="quantize_int4(w, group_size=128) -> (q, scale, zero)",
        oracle=int4_spec,
        cases=_int4_cases,
        canonical=_zero_as_uint8,
        forbidden=FORBIDDEN,
        properties=[Property("groups that contain 0 are rebuilt within half a scale", _int4_range)],
        hints=("cut every row into groups of group_size consecutive entries; each group maps its [min, max] onto "
               "the 16 codes 0..15 with a scale and an integer zero point   (eq. q-minmax)",
               "reshape (out, in) to (out, in // group_size, group_size) and take amin/amax over the last axis; "
               "scale = (max - min) / 15, 1 where max == min",
               "zero = round(-min / scale).clamp(0, 15); q = (round(w / scale) + zero).clamp(0, 15) as uint8; "
               "scale and zero have shape (out, in // group_size)   (eq. q-minmax)"),
        mistakes=[
            Mistake("max-abs instead of min-max", int4_absmax,
                    "you quantize symmetrically (scale = max|w| / 7, zero 8): int4 here is asymmetric, "
                    "scale = (max - min) / 15 and zero = round(-min / scale), so all 16 codes cover [min, max]."),
            Mistake("zero point not clamped", int4_zero_unclamped,
                    "your zero point leaves 0..15 (a group that is all positive or all negative) and wraps around "
                    "in uint8: clamp it, zero = round(-min / scale).clamp(0, 15)."),
            Mistake("codes not clamped", int4_q_unclamped,
                    "your codes leave 0..15 when the zero point was clamped (an all-positive group): clamp "
                    "q = round(w / scale) + zero to [0, 15] before the cast to uint8."),
            Mistake("floor instead of round", int4_floor,
                    "your codes are rounded down (floor): round w / scale to the nearest integer with torch.round."),
            Mistake("16 levels instead of 15 steps", int4_sixteen_levels,
                    "your scale divides the range by 16: 16 codes 0..15 leave 15 steps between min and max, so "
                    "scale = (max - min) / 15."),
            Mistake("constant group not handled", int4_constant_unguarded,
                    "a constant group (max == min) gets scale 0 and divides by zero: give it scale 1, "
                    "torch.where(max > min, (max - min) / 15, 1)."),
            Mistake("groups along the wrong axis", int4_wrong_axis,
                    "your groups are strided (reshape(out, group_size, in // group_size) takes every "
                    "(in // group_size)-th entry): a group is group_size consecutive entries of a row, "
                    "reshape(out, in // group_size, group_size)."),
            Mistake("rounded w - min", int4_shift_then_round,
                    "you round (w - min) / scale: the contract rounds w / scale and adds the integer zero point, "
                    "q = round(w / scale) + zero, so that dequantization (q - zero) * scale puts 0 back on 0."),
            Mistake("kept the reduced axis", int4_keepdim,
                    "your scale and zero have shape (out, in // group_size, 1): return them as "
                    "(out, in // group_size), without the kept axis."),
        ],
    ),
    Exercise(
        name="dequantize_int4",
        chapter="efficiency/quantization",
        signature="dequantize_int4(q, scale, zero, group_size=128)",
        oracle=dequant_int4_spec,
        cases=_dequant4_cases,
        forbidden=FORBIDDEN,
        hints=("every entry subtracts its group's zero point and multiplies by its group's scale   (eq. q-minmax)",
               "expand scale and zero from (out, G) to (out, in) with repeat_interleave(group_size, dim=1), and "
               "convert q and zero to scale's dtype before subtracting (uint8 wraps around)",
               "return (q.to(scale.dtype) - zero_full.to(scale.dtype)) * scale_full"),
        mistakes=[
            Mistake("subtracted in uint8", deq4_uint8_subtract,
                    "you subtract the zero point in uint8: q - zero wraps around to 256 + (q - zero) when q < zero. "
                    "Convert q and zero to scale's dtype first."),
            Mistake("zero point ignored", deq4_no_zero,
                    "you ignore the zero point: w = (q - zero) * scale, with zero the group's zero point."),
            Mistake("zero point added", deq4_plus_zero,
                    "you add the zero point: quantization added it (q = round(w / scale) + zero), so "
                    "dequantization subtracts it, w = (q - zero) * scale."),
            Mistake("groups tiled, not repeated", deq4_tiled,
                    "your scales are tiled (scale.repeat(1, group_size)) so column j gets group j % G: column j "
                    "belongs to group j // group_size, use repeat_interleave(group_size, dim=1)."),
            Mistake("computed in float32", deq4_float32,
                    "your result is float32 whatever the scale's dtype: convert q and zero to scale.dtype."),
            Mistake("zero point not scaled", deq4_zero_unscaled,
                    "you subtract the zero point after scaling (q * scale - zero): the zero point is in codes, "
                    "w = (q - zero) * scale."),
        ],
    ),
)
