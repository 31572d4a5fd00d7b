"""Part 12, vision: conv2d and max_pool2d (chapter vision/conv2d)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...registry import register

CONV_BUILTINS = (
    "F.conv2d", "torch.conv2d", "torch.convolution", "torch._convolution", "F.conv1d", "F.conv3d",
    "F.conv_transpose2d", "torch.conv_transpose2d", "F.unfold", "F.fold", "Tensor.unfold",
)
POOL_BUILTINS = (
    "F.max_pool2d", "torch.max_pool2d", "F.max_pool2d_with_indices", "F.adaptive_max_pool2d",
    "F.fractional_max_pool2d", "F.lp_pool2d", "F.unfold", "Tensor.unfold", "F.conv2d", "torch.conv2d",
)

# A sliding sum of C * kh * kw products in another order than PyTorch's kernel: float32 rounding differs by a
# few ulps of the largest partial sum.
CONV_TOL = {f32: (1e-4, 1e-5)}


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# --------------------------------------------------------------------------- inputs

def _layout(t, layout):
    if layout == "transposed":                  # the last two axes swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":                     # every other column of a tensor twice as wide
        return torch.repeat_interleave(t, 2, dim=-1)[..., ::2]
    return t


def _conv_args(x_shape, w_shape, seed, dtype=f32, bias=False, layout="contiguous", w_layout="contiguous",
               positional=False, shift=0.0, **kw):
    x = _layout(randn(*x_shape, seed=seed, dtype=dtype, shift=shift), layout)
    w = _layout(randn(*w_shape, seed=seed + 100, dtype=dtype, scale=0.5), w_layout)
    b = randn(w_shape[0], seed=seed + 200, dtype=dtype) if bias else None
    if positional:
        keys = ("stride", "padding", "dilation", "groups")
        return call(x, w, b, *[kw.get(k, d) for k, d in zip(keys, (1, 0, 1, 1))])
    return call(x, w, b, **kw) if bias else call(x, w, **kw)


def _conv_cases():
    return [
        case(_conv_args, (2, 3, 8, 8), (4, 3, 3, 3), 1, note="3x3 kernel, no padding, no bias"),
        case(_conv_args, (2, 3, 8, 8), (4, 3, 3, 3), 2, bias=True, padding=1, note="bias, padding=1"),
        case(_conv_args, (2, 3, 9, 9), (5, 3, 3, 3), 3, stride=2, note="stride 2 on 9x9: floor((9 - 3) / 2) + 1 = 4"),
        case(_conv_args, (2, 2, 7, 10), (3, 2, 3, 5), 4, bias=True, stride=(1, 2), padding=(1, 2),
             note="pairs: 3x5 kernel, stride (1, 2), padding (1, 2)"),
        case(_conv_args, (2, 3, 10, 10), (4, 3, 3, 3), 5, dilation=2, note="dilation=2"),
        case(_conv_args, (1, 2, 9, 8), (3, 2, 3, 2), 6, padding=(2, 1), dilation=(2, 1), stride=(2, 1),
             note="dilation (2, 1) with padding (2, 1) and stride (2, 1)"),
        case(_conv_args, (2, 4, 7, 7), (6, 2, 3, 3), 7, bias=True, groups=2, note="groups=2"),
        case(_conv_args, (2, 4, 6, 6), (8, 1, 3, 3), 8, padding=1, groups=4,
             note="depthwise: groups = in_channels = 4, two filters per channel"),
        case(_conv_args, (2, 6, 5, 5), (6, 2, 1, 1), 9, groups=3, note="1x1 kernel, groups=3"),
        case(_conv_args, (1, 3, 6, 7), (2, 3, 3, 3), 10, dtype=f64, bias=True, padding=1,
             note="batch of one, float64"),
        case(_conv_args, (2, 2, 11, 9), (3, 2, 4, 4), 11, dtype=f64, bias=True, stride=3, padding=2,
             note="float64, 4x4 kernel, stride 3, padding 2"),
        case(_conv_args, (2, 3, 8, 8), (4, 3, 3, 3), 12, layout="transposed", padding=1,
             note="non-contiguous x (H and W swapped in memory)"),
        case(_conv_args, (2, 3, 7, 7), (4, 3, 3, 3), 13, layout="channels_last", w_layout="strided", bias=True,
             note="channels-last x, non-contiguous weight"),
        case(_conv_args, (2, 2, 4, 4), (3, 2, 5, 5), 14, padding=2, note="kernel larger than the input, padding=2"),
        case(_conv_args, (2, 2, 6, 6), (3, 2, 3, 3), 15, bias=True, positional=True, stride=2, padding=1,
             note="stride and padding passed positionally"),
        case(_conv_args, (2, 4, 5, 6), (4, 2, 3, 3), 16, dtype=f64, bias=True, padding=1, groups=2, grad=True,
             note="gradients of x, weight and bias, groups=2"),
        case(_conv_args, (1, 2, 7, 7), (3, 2, 3, 3), 17, dtype=f64, stride=2, dilation=2, padding=2, grad=True,
             note="gradients, stride 2, dilation 2"),
        case(_conv_args, (2, 3, 16, 16), (8, 3, 5, 5), 18, bias=True, padding=2,
             note="16x16 input, 5x5 kernel, 8 filters"),
    ]


# --------------------------------------------------------------------------- conv2d mistakes, as candidates write them

def _conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, pad="both", dilate=True,
          grouping="blocks", plus_one=True, flip=False, add_bias=True):
    """im2col by slicing, one matmul per group; the keywords switch one mistake on at a time."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    if not dilate:
        dh = dw = 1
    if flip:
        weight = weight.flip(-1, -2)
    B, C, _, _ = x.shape
    O, Cg, kh, kw = weight.shape
    padding_of = {"both": (pw, pw, ph, ph), "one side": (0, pw, 0, ph), "width only": (pw, pw)}
    xp = F.pad(x, padding_of[pad])
    Hp, Wp = xp.shape[-2:]
    Ho = (Hp - dh * (kh - 1) - 1) // sh + int(plus_one)
    Wo = (Wp - dw * (kw - 1) - 1) // sw + int(plus_one)
    cols = torch.stack([xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
                        for i in range(kh) for j in range(kw)], dim=2)            # (B, C, kh*kw, Ho, Wo)
    cols = cols.reshape(B, groups, Cg, kh * kw, Ho * Wo).reshape(B, groups, Cg * kh * kw, Ho * Wo)
    if grouping == "blocks":
        w = weight.reshape(groups, O // groups, Cg * kh * kw)                     # (G, O/G, Cg*kh*kw)
        out = torch.einsum("gok,bgkl->bgol", w, cols).reshape(B, O, Ho, Wo)
    else:                                   # output channel o taken as belonging to group o % groups
        w = weight.reshape(O // groups, groups, Cg * kh * kw).transpose(0, 1)
        out = torch.einsum("gok,bgkl->bogl", w, cols).reshape(B, O, Ho, Wo)
    if bias is not None and add_bias:
        out = out + bias[:, None, None]
    return out


def conv2d_one_side_padding(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, weight, bias, stride, padding, dilation, groups, pad="one side")


def conv2d_pads_width_only(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, weight, bias, stride, padding, dilation, groups, pad="width only")


def conv2d_no_dilation(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, weight, bias, stride, padding, dilation, groups, dilate=False)


def conv2d_groups_interleaved(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, weight, bias, stride, padding, dilation, groups, grouping="interleaved")


def conv2d_no_plus_one(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, weight, bias, stride, padding, dilation, groups, plus_one=False)


def conv2d_flipped_kernel(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, weight, bias, stride, padding, dilation, groups, flip=True)


def conv2d_bias_forgotten(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, weight, bias, stride, padding, dilation, groups, add_bias=False)


# --------------------------------------------------------------------------- conv2d properties

def _shift_equivariant(call):
    x, w = randn(1, 2, 9, 9, seed=40, dtype=f64), randn(3, 2, 3, 3, seed=41, dtype=f64)
    full, shifted = call(x, w), call(x[..., 2:, 1:], w)
    gap = float((full[..., 2:, 1:] - shifted).abs().max())
    if gap > 1e-9:
        return msg("conv2d of the input shifted by (2, 1) is not the output shifted by (2, 1): off by {gap:.3g}",
                   gap=gap)
    return None


def _linear_in_weight(call):
    x = randn(2, 2, 6, 6, seed=42, dtype=f64)
    w1, w2 = randn(3, 2, 3, 3, seed=43, dtype=f64), randn(3, 2, 3, 3, seed=44, dtype=f64)
    gap = float((call(x, 2 * w1 - w2, padding=1) - 2 * call(x, w1, padding=1) + call(x, w2, padding=1)).abs().max())
    if gap > 1e-9:
        return msg("conv2d(x, 2 w1 - w2) differs from 2 conv2d(x, w1) - conv2d(x, w2) by {gap:.3g}", gap=gap)
    return None


register(Exercise(
    name="conv2d",
    chapter="vision/conv2d",
    signature="conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)",
    oracle=lambda x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: F.conv2d(
        x, weight, bias, stride, padding, dilation, groups),
    cases=_conv_cases,
    tolerance=CONV_TOL,
    forbidden=CONV_BUILTINS,
    properties=[
        Property("shifting the input shifts the output", _shift_equivariant),
        Property("conv2d is linear in the weight", _linear_in_weight),
    ],
    hints=("each output pixel is a dot product of the kernel with one window of the zero-padded input; the number "
           "of windows along an axis is floor((H + 2p - d(k - 1) - 1) / s) + 1   (eq. conv-size)",
           "pad both sides with F.pad(x, (pw, pw, ph, ph)); for each kernel offset (i, j) the slice "
           "xp[:, :, i*dh : i*dh + sh*(Ho - 1) + 1 : sh, j*dw : ... : sw] is one row of im2col; stack them into "
           "(B, C*kh*kw, Ho*Wo)   (eq. conv-im2col)",
           "groups: split the columns into G blocks of C/G channels and the weight into G blocks of O/G filters; "
           "out[g] = weight[g].reshape(O/G, -1) @ cols[g], concatenated along channels, plus bias[:, None, None]   "
           "(eq. conv-groups)"),
    mistakes=[
        Mistake("padding on one side", conv2d_one_side_padding,
                "you padded only the top and left (or bottom and right): padding p adds p zeros on BOTH sides of "
                "each axis, `F.pad(x, (pw, pw, ph, ph))`"),
        Mistake("width padded only", conv2d_pads_width_only,
                "`F.pad(x, (p, p))` pads only the last axis (the width): the padding tuple runs from the last axis "
                "backwards, so pad H too with `F.pad(x, (pw, pw, ph, ph))`"),
        Mistake("dilation ignored", conv2d_no_dilation,
                "your kernel taps are adjacent whatever `dilation` is: with dilation d, tap i reads row i*d, and "
                "the window spans d(k - 1) + 1 pixels"),
        Mistake("groups interleaved", conv2d_groups_interleaved,
                "your groups are mixed up: output channel o belongs to group o // (out_channels / groups) "
                "(contiguous blocks), not o % groups, and group g reads input channels g*C/G ... (g+1)*C/G - 1"),
        Mistake("no +1 in the output size", conv2d_no_plus_one,
                "your output is one pixel short along each axis: the number of windows is "
                "floor((H + 2p - d(k - 1) - 1) / s) + 1; the +1 counts the first window"),
        Mistake("kernel flipped", conv2d_flipped_kernel,
                "you flipped the kernel (the textbook convolution): PyTorch's conv2d is a cross-correlation, "
                "out = sum x[window] * w with w as it is"),
        Mistake("bias forgotten", conv2d_bias_forgotten,
                "the bias is missing: add bias[o] to every pixel of output channel o (bias[:, None, None])"),
    ],
    bench=(lambda: call(randn(8, 32, 32, 32, seed=0), randn(64, 32, 3, 3, seed=1), padding=1), F.conv2d),
))


# --------------------------------------------------------------------------- max_pool2d

def _pool_args(x_shape, seed, kernel_size, dtype=f32, layout="contiguous", positional=False, shift=0.0, **kw):
    x = _layout(randn(*x_shape, seed=seed, dtype=dtype, shift=shift), layout)
    if positional:
        return call(x, kernel_size, kw.get("stride"), kw.get("padding", 0))
    return call(x, kernel_size, **kw)


def _pool_cases():
    return [
        case(_pool_args, (2, 3, 8, 8), 1, 2, note="2x2 windows, stride defaults to the kernel size"),
        case(_pool_args, (2, 3, 9, 9), 2, 3, stride=2, padding=1, note="3x3, stride 2, padding 1"),
        case(_pool_args, (2, 2, 7, 10), 3, (2, 3), stride=(1, 2), padding=1,
             note="pairs: kernel (2, 3), stride (1, 2)"),
        case(_pool_args, (2, 2, 6, 6), 4, 3, stride=1, padding=1, shift=-5.0,
             note="every value negative, padding=1: the border windows see the padding"),
        case(_pool_args, (1, 4, 7, 5), 5, 2, dtype=f64, note="batch of one, float64, 7x5: floor drops a row"),
        case(_pool_args, (2, 3, 8, 8), 6, 3, note="3x3 on 8x8, stride 3: floor((8 - 3) / 3) + 1 = 2"),
        case(_pool_args, (2, 3, 8, 8), 7, 2, layout="transposed", stride=2, note="non-contiguous x"),
        case(_pool_args, (2, 3, 6, 6), 8, 2, layout="channels_last", stride=1, padding=1,
             note="channels-last x, stride 1, padding 1"),
        case(_pool_args, (2, 2, 9, 7), 9, (3, 2), stride=(2, 1), padding=(1, 0), dtype=f64, shift=-3.0,
             note="float64, negative values, padding (1, 0)"),
        case(_pool_args, (2, 2, 6, 6), 10, 3, positional=True, stride=2, padding=1,
             note="stride and padding passed positionally"),
        case(_pool_args, (2, 2, 5, 5), 11, 1, note="kernel_size=1: the identity"),
        case(_pool_args, (2, 3, 6, 7), 12, 3, dtype=f64, stride=2, padding=1, grad=True, note="gradient"),
    ]


def _pool(x, kernel_size, stride=None, padding=0, *, fill=-torch.inf, default_stride="kernel", plus_one=True,
          pad="both"):
    (kh, kw), (ph, pw) = pair(kernel_size), pair(padding)
    if stride is None:
        stride = kernel_size if default_stride == "kernel" else 1
    sh, sw = pair(stride)
    padding_of = {"both": (pw, pw, ph, ph), "one side": (0, pw, 0, ph), "none": (0, 0, 0, 0)}
    xp = F.pad(x, padding_of[pad], value=fill)
    Hp, Wp = xp.shape[-2:]
    Ho, Wo = (Hp - kh) // sh + int(plus_one), (Wp - kw) // sw + int(plus_one)
    windows = torch.stack([xp[:, :, i: i + sh * (Ho - 1) + 1: sh, j: j + sw * (Wo - 1) + 1: sw]
                           for i in range(kh) for j in range(kw)])              # (kh*kw, B, C, Ho, Wo)
    return windows.amax(0)


def max_pool2d_zero_padding(x, kernel_size, stride=None, padding=0):
    return _pool(x, kernel_size, stride, padding, fill=0.0)


def max_pool2d_stride_one(x, kernel_size, stride=None, padding=0):
    return _pool(x, kernel_size, stride, padding, default_stride="one")


def max_pool2d_no_plus_one(x, kernel_size, stride=None, padding=0):
    return _pool(x, kernel_size, stride, padding, plus_one=False)


def max_pool2d_one_side_padding(x, kernel_size, stride=None, padding=0):
    return _pool(x, kernel_size, stride, padding, pad="one side")


def max_pool2d_padding_ignored(x, kernel_size, stride=None, padding=0):
    return _pool(x, kernel_size, stride, padding, pad="none")


def _pool_shift(call):
    x = randn(2, 2, 7, 7, seed=45, dtype=f64)
    gap = float((call(x + 3.0, 3, 2, 1) - call(x, 3, 2, 1) - 3.0).abs().max())
    if gap > 1e-12:
        return msg("max_pool2d(x + 3) - max_pool2d(x) is not 3 everywhere: off by {gap:.3g}", gap=gap)
    return None


def _pool_values_come_from_x(call):
    x = randn(1, 2, 6, 6, seed=46, dtype=f64, shift=-4.0)
    out = call(x, 2, 2, 1)
    missing = int((~torch.isin(out, x)).sum())
    if missing:
        return msg("{n} outputs are not entries of x (the padding must never win a window)", n=missing)
    return None


register(Exercise(
    name="max_pool2d",
    chapter="vision/conv2d",
    signature="max_pool2d(x, kernel_size, stride=None, padding=0)",
    oracle=lambda x, kernel_size, stride=None, padding=0: F.max_pool2d(x, kernel_size, stride, padding),
    cases=_pool_cases,
    forbidden=POOL_BUILTINS,
    properties=[
        Property("max_pool2d(x + c) = max_pool2d(x) + c", _pool_shift),
        Property("every output is an entry of x", _pool_values_come_from_x),
    ],
    hints=("each output is the maximum of one kh x kw window; stride defaults to the kernel size, and the number of "
           "windows is floor((H + 2p - k) / s) + 1   (eq. pool-size)",
           "pad with -inf, not 0, so that the padding never wins a window: F.pad(x, (pw, pw, ph, ph), value=-inf)",
           "stack the kh*kw strided slices xp[:, :, i : i + sh*(Ho - 1) + 1 : sh, j : j + sw*(Wo - 1) + 1 : sw] and "
           "take amax over the stacked axis   (eq. pool-size)"),
    mistakes=[
        Mistake("zero padding", max_pool2d_zero_padding,
                "you padded with zeros: where every value of a border window is negative the padding wins. Pad "
                "with -inf (F.pad(..., value=-inf)), as PyTorch does"),
        Mistake("stride defaults to 1", max_pool2d_stride_one,
                "with stride=None your windows move by 1: PyTorch's default stride is kernel_size "
                "(non-overlapping windows)"),
        Mistake("no +1 in the output size", max_pool2d_no_plus_one,
                "your output is one pixel short along each axis: the number of windows is "
                "floor((H + 2p - k) / s) + 1"),
        Mistake("padding on one side", max_pool2d_one_side_padding,
                "you padded only one side of each axis: padding p adds p entries on both sides"),
        Mistake("padding ignored", max_pool2d_padding_ignored,
                "your code ignores `padding`: pad both sides of H and W with -inf before sliding the window"),
    ],
    bench=(lambda: call(randn(8, 32, 64, 64, seed=0), 2), F.max_pool2d),
))
