"""Wrong solutions written by hand as candidates write them, for the chapters of Parts 9 and 11-15, by someone
who had not read their declarations: each must be rejected (named, where a registered mistake fits).
The chapters' own test files hold many more; these are a second pair of eyes."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.grader import run


def conv2d_no_groups(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    # loops that ignore dilation in the output size but apply it in indexing
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    x = F.pad(x, (pw, pw, ph, ph))
    B, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1  # forgot dilation in the size
    cols = torch.stack(
        [
            x[:, :, i * dh : i * dh + (Ho - 1) * sh + 1 : sh, j * dw : j * dw + (Wo - 1) * sw + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ],
        2,
    )  # (B, C, kh*kw, Ho, Wo)
    out = torch.einsum("bckhw,ock->bohw", cols, weight.reshape(O, Cg, kh * kw))
    return out + bias[None, :, None, None] if bias is not None else out


def iou_plus_one(boxes1, boxes2):
    a1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)
    a2 = (boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (a1[:, None] + a2[None] - inter)


def nms_no_sort(boxes, scores, iou_threshold):
    keep = []
    idx = list(range(len(scores)))
    while idx:
        i = max(idx, key=lambda j: scores[j])
        keep.append(i)
        idx = [j for j in idx if j != i and _iou(boxes[i], boxes[j]) < iou_threshold]  # >= suppresses ties
    return torch.tensor(keep, dtype=torch.int64)


def _iou(a, b):
    lt = torch.max(a[:2], b[:2])
    rb = torch.min(a[2:], b[2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[0] * wh[1]
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / u) if u > 0 else 0.0


def lb_loss_mean(router_logits, n_experts, top_k):
    probs = router_logits.softmax(-1)
    _, sel = probs.topk(top_k, -1)
    mask = F.one_hot(sel, n_experts).float()  # (N, k, E)
    f = mask.mean(0)  # (k, E)
    P = probs.mean(0)
    return (f * P).sum() * n_experts / top_k  # divides by top_k (not in the contract)


def window_mask_off_by_one(q_len, k_len, window):
    i = torch.arange(q_len)[:, None] + (k_len - q_len)
    j = torch.arange(k_len)[None]
    return (j <= i) & (i - j <= window)


def crf_no_start(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask.bool()
    score = emissions[torch.arange(B), 0, tags[:, 0]]
    alpha = emissions[:, 0]
    for t in range(1, T):
        m = mask[:, t]
        score = score + (transitions[tags[:, t - 1], tags[:, t]] + emissions[torch.arange(B), t, tags[:, t]]) * m
        nxt = torch.logsumexp(alpha[:, :, None] + transitions[None] + emissions[:, t, None], 1)
        alpha = torch.where(m[:, None], nxt, alpha)
    last = tags[torch.arange(B), mask.sum(1) - 1]
    score = score + end_transitions[last]
    return score - torch.logsumexp(alpha + end_transitions, 1)


def edit_distance_lcs(a, b):
    # insert/delete only: misses substitution
    m, n = len(a), len(b)
    d = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m + 1):
        for j in range(n + 1):
            if i == 0 or j == 0:
                d[i][j] = i + j
            elif a[i - 1] == b[j - 1]:
                d[i][j] = d[i - 1][j - 1]
            else:
                d[i][j] = 1 + min(d[i - 1][j], d[i][j - 1])
    return d[m][n]


def rand10_mod(rand6):
    x = (rand6() - 1) * 6 + rand6()  # 1..36
    return (x - 1) % 10 + 1  # biased


def quant8_per_tensor(w):
    scale = w.abs().max() / 127
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale.expand(w.shape[0], 1).clone()


def kaiming_std_fan_out(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in = w.shape[1] * (w[0, 0].numel() if w.dim() > 2 else 1)
    gain = math.sqrt(2.0 / (1 + a**2))
    with torch.no_grad():
        return w.normal_(0, gain / math.sqrt(fan_in))  # mode ignored


class LoRAScaleAlpha(nn.Module):
    def __init__(self, base, r=8, alpha=16, dropout=0.0):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad = False
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / r
        self.merged = False

    def forward(self, x):
        out = self.base(x)
        return out if self.merged else out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def merge(self):
        if not self.merged:
            self.base.weight.data += self.lora_B.weight @ self.lora_A.weight  # forgot scaling
            self.merged = True

    def unmerge(self):
        if self.merged:
            self.base.weight.data -= self.lora_B.weight @ self.lora_A.weight
            self.merged = False


class LSTMCellGatesIFOG(nn.Module):
    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.randn(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.randn(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.zeros(4 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.zeros(4 * hidden_size)) if bias else None

    def forward(self, x, state=None):
        if state is None:
            z = x.new_zeros(x.shape[0], self.hidden_size)
            state = (z, z)
        h, c = state
        g = x @ self.weight_ih.T + h @ self.weight_hh.T
        if self.bias_ih is not None:
            g = g + self.bias_ih + self.bias_hh
        i, f, o, gg = g.chunk(4, -1)  # wrong order: PyTorch is i, f, g, o
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        return torch.sigmoid(o) * torch.tanh(c), c


WRONG = [
    ("conv2d", conv2d_no_groups),
    ("box_iou", iou_plus_one),
    ("nms", nms_no_sort),
    ("load_balancing_loss", lb_loss_mean),
    ("sliding_window_causal_mask", window_mask_off_by_one),
    ("crf_log_likelihood", crf_no_start),
    ("edit_distance", edit_distance_lcs),
    ("rand10_from_rand6", rand10_mod),
    ("quantize_int8", quant8_per_tensor),
    ("kaiming_normal_", kaiming_std_fan_out),
    ("LoRALinear", LoRAScaleAlpha),
    ("LSTMCell", LSTMCellGatesIFOG),
]


@pytest.mark.parametrize("name,impl", WRONG, ids=[f"{n}-{f.__name__}" for n, f in WRONG])
def test_unseen_wrong_code_is_rejected(name, impl):
    report = run(name, impl)
    assert not report.passed, f"{impl.__name__} passes {name}"
