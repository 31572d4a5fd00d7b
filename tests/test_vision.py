"""Part 12, vision: conv2d and max_pool2d (utils/grader/exercises/vision/conv2d.py). The oracles are checked
against nn.Conv2d / nn.MaxPool2d and against plain loops over every output pixel written from the definitions;
correct solutions in other styles pass; wrong code as candidates write it is rejected; bad input gives a clear
report, never a crash."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.grader.core import evaluate
from utils.grader.exercises.vision import conv2d as conv_decl
from utils.grader.registry import get

f64 = torch.float64


# =========================================================================== oracles against the definitions

def conv_by_definition(x, w, b, stride, padding, dilation, groups):
    """eq. (conv-def) as four nested loops over outputs, in float64."""
    (sh, sw), (ph, pw), (dh, dw) = map(conv_decl.pair, (stride, padding, dilation))
    B, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = torch.zeros(B, O, Ho, Wo, dtype=f64)
    for o, u, v in itertools.product(range(O), range(Ho), range(Wo)):
        g = o // (O // groups)
        total = torch.zeros(B, dtype=f64) if b is None else torch.full((B,), float(b[o]), dtype=f64)
        for c, i, j in itertools.product(range(Cg), range(kh), range(kw)):
            r, s = u * sh + i * dh - ph, v * sw + j * dw - pw
            if 0 <= r < H and 0 <= s < W:
                total = total + w[o, c, i, j] * x[:, g * Cg + c, r, s]
        out[:, o, u, v] = total
    return out


def pool_by_definition(x, k, stride, padding):
    (kh, kw), (ph, pw) = conv_decl.pair(k), conv_decl.pair(padding)
    sh, sw = conv_decl.pair(k if stride is None else stride)
    B, C, H, W = x.shape
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = torch.full((B, C, Ho, Wo), -torch.inf, dtype=x.dtype)
    for u, v, i, j in itertools.product(range(Ho), range(Wo), range(kh), range(kw)):
        r, s = u * sh + i - ph, v * sw + j - pw
        if 0 <= r < H and 0 <= s < W:
            out[:, :, u, v] = torch.maximum(out[:, :, u, v], x[:, :, r, s])
    return out


CONV_CONFIGS = [
    dict(stride=1, padding=0, dilation=1, groups=1), dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2), dict(stride=3, padding=2, dilation=2, groups=4),
    dict(stride=(2, 1), padding=(0, 1), dilation=1, groups=4),
]


@pytest.mark.parametrize("seed,cfg", list(enumerate(CONV_CONFIGS)))
def test_conv_oracle_is_the_definition_and_nn_conv2d(seed, cfg):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 7, 8, generator=g, dtype=f64)
    w = torch.randn(4, 4 // cfg["groups"], 3, 2, generator=g, dtype=f64)
    b = torch.randn(4, generator=g, dtype=f64)
    got = get("conv2d").oracle(x, w, b, **cfg)
    torch.testing.assert_close(got, conv_by_definition(x, w, b, **cfg))
    module = nn.Conv2d(4, 4, (3, 2), **cfg, dtype=f64)
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b)
        torch.testing.assert_close(got, module(x))


@pytest.mark.parametrize("seed,args", list(enumerate([(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)),
                                                        (3, 1, 1), ((3, 2), (2, 1), (1, 0))])))
def test_pool_oracle_is_the_definition_and_nn_maxpool2d(seed, args):
    x = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(seed), dtype=f64) - 2.0
    k, s, p = args
    got = get("max_pool2d").oracle(x, k, s, p)
    torch.testing.assert_close(got, pool_by_definition(x, k, s, p))
    torch.testing.assert_close(got, nn.MaxPool2d(k, s, p)(x))


def test_the_mistakes_differ_from_the_declarations_reference_by_one_switch_only():
    """The shared im2col of the declaration, with no mistake switched on, is F.conv2d: each mistake is one bug."""
    for i, case in enumerate(get("conv2d").all_cases()):
        args, kwargs = case.make()
        torch.testing.assert_close(conv_decl._conv(*args, **kwargs), F.conv2d(*args, **kwargs), rtol=1e-4, atol=1e-5,
                                   msg=f"case {i}")
    for i, case in enumerate(get("max_pool2d").all_cases()):
        args, kwargs = case.make()
        torch.testing.assert_close(conv_decl._pool(*args, **kwargs), F.max_pool2d(*args, **kwargs), msg=f"case {i}")


# =========================================================================== correct solutions in other styles

def _pairs(stride, padding, dilation):
    return map(conv_decl.pair, (stride, padding, dilation))


def conv2d_offset_loop(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Accumulate one einsum per kernel offset, one group at a time (no im2col buffer)."""
    (sh, sw), (ph, pw), (dh, dw) = _pairs(stride, padding, dilation)
    B, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = F.pad(x, (pw, pw, ph, ph))
    outs = []
    for g in range(groups):
        xg, wg = xp[:, g * Cg:(g + 1) * Cg], weight[g * (O // groups):(g + 1) * (O // groups)]
        acc = 0
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh::sh, j * dw::sw][:, :, :Ho, :Wo]
                acc = acc + torch.einsum("bchw,oc->bohw", patch, wg[:, :, i, j])
        outs.append(acc)
    out = torch.cat(outs, dim=1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv2d_as_strided(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """im2col with as_strided (a view, no copy) and one einsum."""
    (sh, sw), (ph, pw), (dh, dw) = _pairs(stride, padding, dilation)
    O, Cg, kh, kw = weight.shape
    xp = F.pad(x, (pw, pw, ph, ph)).contiguous()
    B, C, Hp, Wp = xp.shape
    Ho, Wo = (Hp - dh * (kh - 1) - 1) // sh + 1, (Wp - dw * (kw - 1) - 1) // sw + 1
    s = xp.stride()
    win = xp.as_strided((B, groups, Cg, Ho, Wo, kh, kw),
                        (s[0], Cg * s[1], s[1], sh * s[2], sw * s[3], dh * s[2], dw * s[3]))
    out = torch.einsum("bgcuvij,gocij->bgouv", win, weight.view(groups, O // groups, Cg, kh, kw))
    out = out.reshape(B, O, Ho, Wo)
    return out if bias is None else out + bias[:, None, None]


def max_pool2d_loops(x, kernel_size, stride=None, padding=0):
    """Running maximum over the window offsets, masked_fill for the padding."""
    (kh, kw), (ph, pw) = conv_decl.pair(kernel_size), conv_decl.pair(padding)
    sh, sw = conv_decl.pair(stride if stride is not None else kernel_size)
    B, C, H, W = x.shape
    xp = torch.full((B, C, H + 2 * ph, W + 2 * pw), float("-inf"), dtype=x.dtype)
    xp = torch.cat([xp[:, :, :ph], torch.cat([xp[:, :, ph:ph + H, :pw], x, xp[:, :, ph:ph + H, pw + W:]], 3),
                    xp[:, :, ph + H:]], 2)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    best = None
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i::sh, j::sw][:, :, :Ho, :Wo]
            best = tap if best is None else torch.maximum(best, tap)
    return best


@pytest.mark.parametrize("name,impl", [
    ("conv2d", conv2d_offset_loop), ("conv2d", conv2d_as_strided), ("max_pool2d", max_pool2d_loops),
], ids=lambda v: getattr(v, "__name__", v))
def test_correct_variants_pass(name, impl):
    report = evaluate(get(name), impl)
    assert report.passed, str(report)


# =========================================================================== wrong code as candidates write it

def conv2d_stride_h_for_both(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    s = conv_decl.pair(stride)[0]
    return conv_decl._conv(x, weight, bias, s, padding, dilation, groups)


def conv2d_padding_pair_swapped(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    ph, pw = conv_decl.pair(padding)
    return conv_decl._conv(x, weight, bias, stride, (pw, ph), dilation, groups)


def conv2d_groups_ignored(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    w = weight.repeat(1, groups, 1, 1)                       # every filter sees every channel
    return conv_decl._conv(x, w, bias, stride, padding, dilation, 1)


def conv2d_size_from_unpadded(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    out = conv_decl._conv(x, weight, bias, stride, padding, dilation, groups)
    (sh, sw), _, (dh, dw) = _pairs(stride, padding, dilation)
    Ho = (x.shape[2] - dh * (weight.shape[2] - 1) - 1) // sh + 1
    Wo = (x.shape[3] - dw * (weight.shape[3] - 1) - 1) // sw + 1
    return out[:, :, :max(Ho, 1), :max(Wo, 1)]


def conv2d_bias_per_input_channel(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    out = conv_decl._conv(x, weight, None, stride, padding, dilation, groups)
    return out if bias is None else out + bias.mean()


def conv2d_no_grad(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    with torch.no_grad():
        return conv_decl._conv(x, weight, bias, stride, padding, dilation, groups)


def max_pool2d_average(x, kernel_size, stride=None, padding=0):
    (kh, kw), (ph, pw) = conv_decl.pair(kernel_size), conv_decl.pair(padding)
    sh, sw = conv_decl.pair(kernel_size if stride is None else stride)
    xp = F.pad(x, (pw, pw, ph, ph))
    Ho, Wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    return sum(xp[:, :, i::sh, j::sw][:, :, :Ho, :Wo] for i in range(kh) for j in range(kw)) / (kh * kw)


def max_pool2d_stride_pair_reversed(x, kernel_size, stride=None, padding=0):
    s = conv_decl.pair(kernel_size if stride is None else stride)
    return conv_decl._pool(x, kernel_size, (s[1], s[0]), padding)


def max_pool2d_ceil(x, kernel_size, stride=None, padding=0):
    (kh, kw), (ph, pw) = conv_decl.pair(kernel_size), conv_decl.pair(padding)
    sh, sw = conv_decl.pair(kernel_size if stride is None else stride)
    extra_h, extra_w = (-(x.shape[2] + 2 * ph - kh)) % sh, (-(x.shape[3] + 2 * pw - kw)) % sw
    xp = F.pad(x, (0, extra_w, 0, extra_h), value=-torch.inf)   # ceil: one more window where it does not divide
    return conv_decl._pool(xp, kernel_size, stride, padding)


def max_pool2d_over_channels(x, kernel_size, stride=None, padding=0):
    out = conv_decl._pool(x, kernel_size, stride, padding)
    return out.amax(1, keepdim=True).expand_as(out)


@pytest.mark.parametrize("name,impl", [
    ("conv2d", conv2d_stride_h_for_both), ("conv2d", conv2d_padding_pair_swapped), ("conv2d", conv2d_groups_ignored),
    ("conv2d", conv2d_size_from_unpadded), ("conv2d", conv2d_bias_per_input_channel), ("conv2d", conv2d_no_grad),
    ("max_pool2d", max_pool2d_average), ("max_pool2d", max_pool2d_stride_pair_reversed),
    ("max_pool2d", max_pool2d_ceil), ("max_pool2d", max_pool2d_over_channels),
], ids=lambda v: getattr(v, "__name__", v))
def test_wrong_code_is_rejected(name, impl):
    report = evaluate(get(name), impl)
    assert not report.passed
    assert str(report).strip()


# =========================================================================== bad input: a clear report, never a crash

def _raises(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    raise ValueError("my own bug")


def _numpy(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv_decl._conv(x, weight, bias, stride, padding, dilation, groups).detach().numpy()


def _nan(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv_decl._conv(x, weight, bias, stride, padding, dilation, groups) * float("nan")


def _wrong_shape(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv_decl._conv(x, weight, bias, stride, padding, dilation, groups)[:, :, 1:]


def _wrong_dtype(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv_decl._conv(x, weight, bias, stride, padding, dilation, groups).half()


def _edits_x(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    out = conv_decl._conv(x, weight, bias, stride, padding, dilation, groups)
    x.data.zero_()
    return out


def _calls_f_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _calls_unfold(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    cols = F.unfold(x, weight.shape[-2:], dilation, padding, stride)
    return cols


def _builds_nn_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    m = nn.Conv2d(x.shape[1], weight.shape[0], weight.shape[-2:], stride, padding, dilation, groups, bias is not None)
    return m(x)


def _endless(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    while True:
        pass


@pytest.mark.parametrize("impl", [_raises, _numpy, _nan, _wrong_shape, _wrong_dtype, _edits_x, _calls_f_conv2d,
                                  _calls_unfold, _builds_nn_conv2d, _endless], ids=lambda f: f.__name__)
def test_bad_input_gives_a_clear_report(impl):
    report = evaluate(get("conv2d"), impl)
    assert not report.passed
    assert "case 1 of" in str(report)


def test_forbidden_calls_are_named():
    for impl, name in [(_calls_f_conv2d, "F.conv2d"), (_calls_unfold, "F.unfold")]:
        text = str(evaluate(get("conv2d"), impl))
        assert name in text, text
    text = str(evaluate(get("max_pool2d"), lambda x, k, stride=None, padding=0: F.max_pool2d(x, k, stride, padding)))
    assert "F.max_pool2d" in text, text
    text = str(evaluate(get("max_pool2d"), lambda x, k, stride=None, padding=0: x.unfold(2, 2, 2)))
    assert "Tensor.unfold" in text, text


def test_pool_numpy_result_is_reported():
    report = evaluate(get("max_pool2d"), lambda x, k, stride=None, padding=0: np.zeros(3))
    assert not report.passed and str(report).strip()


# =========================================================================== detection: the specification, by hand

from utils.grader.exercises.vision import detection as det_decl  # noqa: E402


def _scalar_measures(a, b, eps=1e-7):
    """IoU, GIoU, DIoU and CIoU of two boxes with Python floats, from the papers' formulas (Rezatofighi et al. 2019,
    Zheng et al. 2020), with torchvision's eps in c^2 and in alpha's denominator."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    iou = inter / union
    cw, ch = max(a[2], b[2]) - min(a[0], b[0]), max(a[3], b[3]) - min(a[1], b[1])
    giou = iou - (cw * ch - union) / (cw * ch)
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    diou = iou - rho2 / (cw ** 2 + ch ** 2 + eps)
    v = 4 / math.pi ** 2 * (math.atan((b[2] - b[0]) / (b[3] - b[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
    alpha = v / (1 - iou + v + eps)
    return iou, giou, diou, diou - alpha * v


HAND = [  # (box A, box B, IoU, GIoU, DIoU, CIoU with eps = 0), worked on paper
    ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7, 1 / 7 - 2 / 9, 1 / 7 - 2 / 18, 1 / 7 - 2 / 18),
    ((0, 0, 2, 2), (0, 0, 2, 2), 1.0, 1.0, 1.0, 1.0),
    ((0, 0, 2, 2), (2, 0, 4, 2), 0.0, 0.0, -4 / 20, -4 / 20),              # touching: C = 4 x 2, rho = 2
    ((0, 0, 1, 1), (3, 3, 4, 4), 0.0, -14 / 16, -18 / 32, -18 / 32),        # apart on both axes: C = 4 x 4
    ((0, 0, 4, 4), (1, 1, 2, 3), 2 / 16, 2 / 16, 2 / 16 - 0.25 / 32,  # inside: GIoU = IoU; centres (2, 2), (1.5, 2)
     2 / 16 - 0.25 / 32 - (4 / math.pi ** 2 * (math.pi / 4 - math.atan(0.5)) ** 2) ** 2
     / (1 - 2 / 16 + 4 / math.pi ** 2 * (math.pi / 4 - math.atan(0.5)) ** 2)),
]


@pytest.mark.parametrize("a,b,iou,giou,diou,ciou", HAND)
def test_specification_on_hand_computed_boxes(a, b, iou, giou, diou, ciou):
    A, B = torch.tensor([a], dtype=f64), torch.tensor([b], dtype=f64)
    for spec, want in [(det_decl.iou_spec, iou), (det_decl.giou_spec, giou)]:
        assert float(spec(A, B)) == pytest.approx(want, abs=1e-12)
    assert float(det_decl.diou_spec(A, B, eps=0.0)) == pytest.approx(diou, abs=1e-12)
    assert float(det_decl.ciou_spec(A, B)) == pytest.approx(ciou, abs=1e-6)      # eps = 0 is 0 / 0 for equal boxes
    assert _scalar_measures(a, b) == pytest.approx((iou, giou, diou, ciou), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_specification_matches_the_papers_formulas_on_random_boxes(seed):
    b1, b2 = det_decl.random_boxes(6, seed, f64), det_decl.random_boxes(5, seed + 50, f64)
    got = [det_decl.iou_spec(b1, b2), det_decl.giou_spec(b1, b2), det_decl.diou_spec(b1, b2),
           det_decl.ciou_spec(b1, b2)]
    for i, j in itertools.product(range(6), range(5)):
        want = _scalar_measures(b1[i].tolist(), b2[j].tolist())
        assert [float(m[i, j]) for m in got] == pytest.approx(want, abs=1e-12)


def test_ciou_alpha_carries_no_gradient():
    """torchvision computes alpha under no_grad: the gradient is that of DIoU - alpha * v with alpha a constant."""
    b1 = det_decl.random_boxes(3, 7, f64).requires_grad_()
    b2 = det_decl.random_boxes(2, 8, f64)
    (g_spec,) = torch.autograd.grad(det_decl.ciou_spec(b1, b2).sum(), b1)
    iou, v = det_decl.iou_spec(b1, b2).detach(), det_decl._aspect_term(b1, b2)
    alpha = v.detach() / (1 - iou + v.detach() + 1e-7)
    (g_const,) = torch.autograd.grad((det_decl.diou_spec(b1, b2) - alpha * v).sum(), b1)
    torch.testing.assert_close(g_spec, g_const)
    (g_with,) = torch.autograd.grad(det_decl.ciou_alpha_with_grad(b1, b2).sum(), b1)
    assert not torch.allclose(g_spec, g_with)


def nms_by_repeated_argmax(boxes, scores, iou_threshold):
    """Another reading of greedy NMS: repeatedly take the best remaining box and drop what overlaps it."""
    remaining = list(range(len(scores)))
    keep = []
    while remaining:
        best = max(remaining, key=lambda i: (float(scores[i]), -i))
        keep.append(best)
        remaining = [i for i in remaining if i != best and not _scalar_measures(boxes[best].tolist(),
                                                                                  boxes[i].tolist())[0] > iou_threshold]
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_nms_specification_is_greedy_suppression(seed):
    boxes = det_decl.random_boxes(25, seed, f64, scale=15.0)
    scores = torch.rand(25, generator=torch.Generator().manual_seed(seed), dtype=f64)
    for t in (0.2, 0.5, 0.8):
        assert det_decl.nms_spec(boxes, scores, t).tolist() == nms_by_repeated_argmax(boxes, scores, t)


def test_nms_specification_on_hand_made_cases():
    chain = torch.tensor(det_decl.CHAIN, dtype=f64)
    assert det_decl.nms_spec(chain, torch.tensor([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]
    half = torch.tensor(det_decl.HALF, dtype=f64)
    assert float(det_decl.iou_spec(half[:1], half[1:])) == 0.5
    assert det_decl.nms_spec(half, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert det_decl.nms_spec(half, torch.tensor([0.8, 0.9]), 0.49).tolist() == [1]
    same = torch.tensor([[1.0, 1, 5, 5]] * 3)
    assert det_decl.nms_spec(same, torch.tensor([0.2, 0.7, 0.5]), 0.5).tolist() == [1]
    ties = torch.tensor([[0.0, 0, 4, 4], [10, 10, 12, 12], [0, 0, 4, 4.2], [11, 10, 13, 12]])
    assert det_decl.nms_spec(ties, torch.full((4,), 0.5), 0.3).tolist() == [0, 1]
    assert det_decl.nms_spec(torch.zeros(0, 4), torch.zeros(0), 0.5).dtype == torch.int64


# =========================================================================== detection: other correct styles

def box_iou_row_loop(boxes1, boxes2):
    rows = []
    for b in boxes1:                                        # one row of the matrix at a time
        wh = (torch.min(b[2:], boxes2[:, 2:]) - torch.max(b[:2], boxes2[:, :2])).clamp(min=0)
        inter = wh.prod(-1)
        rows.append(inter / ((b[2] - b[0]) * (b[3] - b[1]) + (boxes2[:, 2:] - boxes2[:, :2]).prod(-1) - inter))
    return torch.stack(rows) if rows else boxes1.new_zeros(0, len(boxes2))


def giou_recomputed(boxes1, boxes2):
    x1, y1, x2, y2 = (boxes1[:, None, k] for k in range(4))
    u1, v1, u2, v2 = (boxes2[None, :, k] for k in range(4))
    inter = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0) * \
        (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    hull = (torch.maximum(x2, u2) - torch.minimum(x1, u1)) * (torch.maximum(y2, v2) - torch.minimum(y1, v1))
    return inter / union - (hull - union) / hull


def ciou_atan2(boxes1, boxes2, eps=1e-7):
    wh1, wh2 = boxes1[:, 2:] - boxes1[:, :2], boxes2[:, 2:] - boxes2[:, :2]
    v = (2 / math.pi * (torch.atan2(wh1[:, None, 0], wh1[:, None, 1]) - torch.atan2(wh2[:, 0], wh2[:, 1]))) ** 2
    iou = box_iou_row_loop(boxes1, boxes2)
    lt, rb = torch.min(boxes1[:, None, :2], boxes2[:, :2]), torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    centre = ((boxes1[:, None, :2] + boxes1[:, None, 2:] - boxes2[:, :2] - boxes2[:, 2:]) / 2).pow(2).sum(-1)
    diou = iou - centre / ((rb - lt).pow(2).sum(-1) + eps)
    alpha = (v / (1 - iou + v + eps)).detach()
    return diou - alpha * v


def nms_argmax_loop(boxes, scores, iou_threshold):
    iou = box_iou_row_loop(boxes, boxes)
    live = scores.clone().double()
    keep = []
    while len(live) and bool((live > -math.inf).any()):
        i = int(torch.argmax(live))                         # the first index among equal maxima
        keep.append(i)
        live[i] = -math.inf
        live[iou[i] > iou_threshold] = -math.inf
    return torch.tensor(keep, dtype=torch.int64)


@pytest.mark.parametrize("name,impl", [
    ("box_iou", box_iou_row_loop), ("generalized_box_iou", giou_recomputed), ("complete_box_iou", ciou_atan2),
    ("nms", nms_argmax_loop),
], ids=lambda v: getattr(v, "__name__", v))
def test_detection_correct_variants_pass(name, impl):
    report = evaluate(get(name), impl)
    assert report.passed, str(report)


# =========================================================================== detection: wrong code

def iou_over_first_area(boxes1, boxes2):
    inter = det_decl.iou_spec(boxes1, boxes2) * det_decl._inter_union(boxes1, boxes2)[1]
    return inter / det_decl._area(boxes1)[:, None]


def iou_integer_boxes(boxes1, boxes2):
    return det_decl.iou_spec(boxes1.round(), boxes2.round())


def giou_abs_enclosing(boxes1, boxes2):
    inter, union = det_decl._inter_union(boxes1, boxes2)
    wh = (boxes1[:, None, 2:] - boxes2[:, :2]).abs()
    c = wh[..., 0] * wh[..., 1]
    return inter / union - (c - union) / c


def diou_c_not_squared(boxes1, boxes2, eps=1e-7):
    lt, rb = torch.min(boxes1[:, None, :2], boxes2[:, :2]), torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    c = (rb - lt).norm(dim=-1) + eps
    centre = ((boxes1[:, None, :2] + boxes1[:, None, 2:] - boxes2[:, :2] - boxes2[:, 2:]) / 2).pow(2).sum(-1)
    return det_decl.iou_spec(boxes1, boxes2) - centre / c


def ciou_ratio_without_atan(boxes1, boxes2, eps=1e-7):
    wh1, wh2 = boxes1[:, 2:] - boxes1[:, :2], boxes2[:, 2:] - boxes2[:, :2]
    v = 4 / math.pi ** 2 * (wh1[:, None, 0] / wh1[:, None, 1] - wh2[:, 0] / wh2[:, 1]) ** 2
    iou = det_decl.iou_spec(boxes1, boxes2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return det_decl.diou_spec(boxes1, boxes2, eps) - alpha * v


def nms_threshold_on_scores(boxes, scores, iou_threshold):
    return torch.argsort(scores, descending=True)[scores.sort(descending=True).values > iou_threshold]


def nms_ties_to_higher_index(boxes, scores, iou_threshold):
    n = len(scores)
    flipped = det_decl.nms_spec(boxes.flip(0), scores.flip(0), iou_threshold)
    return (n - 1 - flipped).to(torch.int64)


def nms_returns_a_list(boxes, scores, iou_threshold):
    return det_decl.nms_spec(boxes, scores, iou_threshold).tolist()


def nms_float_indices(boxes, scores, iou_threshold):
    return det_decl.nms_spec(boxes, scores, iou_threshold).float()


def nms_keep_mask(boxes, scores, iou_threshold):
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[det_decl.nms_spec(boxes, scores, iou_threshold)] = True
    return mask


@pytest.mark.parametrize("name,impl", [
    ("box_iou", iou_over_first_area), ("box_iou", iou_integer_boxes), ("generalized_box_iou", giou_abs_enclosing),
    ("distance_box_iou", diou_c_not_squared), ("complete_box_iou", ciou_ratio_without_atan),
    ("nms", nms_threshold_on_scores), ("nms", nms_ties_to_higher_index), ("nms", nms_returns_a_list),
    ("nms", nms_float_indices), ("nms", nms_keep_mask),
], ids=lambda v: getattr(v, "__name__", v))
def test_detection_wrong_code_is_rejected(name, impl):
    report = evaluate(get(name), impl)
    assert not report.passed
    assert str(report).strip()


# =========================================================================== detection: bad input

def _iou_raises(boxes1, boxes2):
    raise ValueError("my own bug")


def _iou_numpy(boxes1, boxes2):
    return det_decl.iou_spec(boxes1, boxes2).detach().numpy()


def _iou_nan(boxes1, boxes2):
    return det_decl.iou_spec(boxes1, boxes2) * float("nan")


def _iou_transposed(boxes1, boxes2):
    return det_decl.iou_spec(boxes2, boxes1)


def _iou_half(boxes1, boxes2):
    return det_decl.iou_spec(boxes1, boxes2).half()


def _iou_edits_boxes(boxes1, boxes2):
    out = det_decl.iou_spec(boxes1, boxes2)
    boxes1.data[:, 2:] += 1
    return out


def _iou_endless(boxes1, boxes2):
    while True:
        pass


@pytest.mark.parametrize("impl", [_iou_raises, _iou_numpy, _iou_nan, _iou_transposed, _iou_half, _iou_edits_boxes,
                                  _iou_endless], ids=lambda f: f.__name__)
def test_detection_bad_input_gives_a_clear_report(impl):
    report = evaluate(get("box_iou"), impl)
    assert not report.passed
    assert "case 1 of" in str(report)
