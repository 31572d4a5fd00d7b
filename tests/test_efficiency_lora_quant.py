"""Part 9, efficient fine-tuning and inference: LoRA and quantization (the declarations in
utils/grader/exercises/efficiency/lora.py and quantization.py). The oracles are checked against PyTorch's own
quantizers and hand-computed values; correct solutions in other styles pass; wrong code as candidates write it
is rejected; bad input gives a clear report, never a crash."""

from __future__ import annotations

import time

import pytest
import torch

from utils.grader import run
from utils.grader.exercises.efficiency import quantization as qd

f32, f64 = torch.float32, torch.float64


def _w(seed, out=6, n=64, dtype=f32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(out, n, generator=g, dtype=f64) * scale).to(dtype)


# =========================================================================== oracles against PyTorch's quantizers

@pytest.mark.parametrize("seed", range(6))
def test_int8_oracle_matches_pytorch_fake_quantize(seed):
    w = _w(seed, out=5 + seed, n=16 + 8 * seed, scale=0.1 * (seed + 1))
    q, scale = qd.int8_spec(w)
    assert q.dtype == torch.int8 and scale.shape == (w.shape[0], 1)
    ref = torch.fake_quantize_per_channel_affine(w, scale.flatten(), torch.zeros(w.shape[0], dtype=torch.int32),
                                                 0, -127, 127)
    torch.testing.assert_close(qd.dequant_int8_spec(q, scale), ref, rtol=0, atol=1e-7)
    assert int(q.abs().max()) == 127


@pytest.mark.parametrize("seed,group_size", [(0, 16), (1, 32), (2, 64), (3, 8), (4, 128)])
def test_int4_oracle_matches_pytorch_fake_quantize(seed, group_size):
    w = _w(seed, out=4, n=128, scale=0.5)
    q, scale, zero = qd.int4_spec(w, group_size)
    assert q.dtype == zero.dtype == torch.uint8 and int(q.max()) <= 15
    rows = w.reshape(-1, group_size)                                          # one channel per group
    ref = torch.fake_quantize_per_channel_affine(rows, scale.flatten(), zero.flatten().int(), 0, 0, 15)
    torch.testing.assert_close(qd.dequant_int4_spec(q, scale, zero, group_size), ref.reshape(w.shape),
                               rtol=0, atol=1e-6)


def test_int8_oracle_by_hand():
    w = torch.tensor([qd.TIES8, [0.0] * 8])
    q, scale = qd.int8_spec(w)
    assert scale.flatten().tolist() == [0.25, 1.0]
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, 4, -2], [0] * 8]              # halves to even


def test_int4_oracle_by_hand():
    w = torch.tensor([qd.TIES4, [0.5, 1.0, 2.0, 1.5, 0.75, 1.25, 3.0, 2.5], [-1.0] * 8], dtype=f64)
    q, scale, zero = qd.int4_spec(w, 8)
    assert scale.flatten().tolist() == [0.25, 2.5 / 15, 1.0]
    assert zero.flatten().tolist() == [6, 0, 1]                               # round(6.5) = 6; clamped at 0; round(1)
    assert q[0].tolist() == [0, 14, 6, 8, 4, 14, 6, 8]  # round(w / 0.25) + 6: 8.5 -> 8 (half to even)
    assert q[1].tolist() == [3, 6, 12, 9, 4, 8, 15, 15]                       # codes saturate at 15
    assert q[2].tolist() == [0] * 8                                           # -1 + 1


# =========================================================================== valid alternatives pass

def int8_loop(w):
    q = torch.empty(w.shape, dtype=torch.int8)
    scale = torch.empty(w.shape[0], 1, dtype=w.dtype)
    for i in range(w.shape[0]):
        m = w[i].abs().max()
        scale[i] = m / 127 if m != 0 else 1
        q[i] = torch.round(w[i] / scale[i]).clamp(-127, 127).to(torch.int8)
    return q, scale


def int8_masked(w):
    amax = w.abs().max(dim=1, keepdim=True).values
    scale = amax / 127
    scale[amax == 0] = 1
    return torch.clamp(torch.round(w / scale), min=-127, max=127).char(), scale


def int4_unfold(w, group_size=128):
    groups = w.unfold(1, group_size, group_size)                             # (out, G, group_size)
    lo, hi = torch.aminmax(groups, dim=-1)
    scale = (hi - lo) / 15
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.clamp(torch.round(-lo / scale), 0, 15)
    q = torch.clamp(torch.round(groups / scale.unsqueeze(-1)) + zero.unsqueeze(-1), 0, 15)
    return q.flatten(1).byte(), scale, zero.byte()


def int4_zero_in_scale_dtype(w, group_size=128):
    """The contract's second form of the zero points: integers 0..15 in scale's dtype."""
    q, scale, zero = int4_unfold(w, group_size)
    return q, scale, zero.to(scale.dtype)


def int4_fractional_zero(w, group_size=128):
    """Not allowed: zero points left unrounded in scale's dtype."""
    groups = w.unfold(1, group_size, group_size)
    lo, hi = torch.aminmax(groups, dim=-1)
    scale = torch.where(hi == lo, torch.ones_like(lo), (hi - lo) / 15)
    zero = (-lo / scale).clamp(0, 15)
    q = torch.clamp(torch.round(groups / scale.unsqueeze(-1) + zero.unsqueeze(-1)), 0, 15)
    return q.flatten(1).byte(), scale, zero


def dequant8_einsum(q, scale):
    return torch.einsum("oi,o->oi", q.to(scale.dtype), scale[:, 0])


def dequant4_view(q, scale, zero, group_size=128):
    out, n = q.shape
    codes = q.reshape(out, n // group_size, group_size).to(scale.dtype)
    return ((codes - zero.to(scale.dtype)[..., None]) * scale[..., None]).reshape(out, n)


@pytest.mark.parametrize("name,impl", [("quantize_int8", int8_loop), ("quantize_int8", int8_masked),
                                       ("quantize_int4", int4_unfold), ("quantize_int4", int4_zero_in_scale_dtype),
                                       ("dequantize_int8", dequant8_einsum),
                                       ("dequantize_int4", dequant4_view)])
def test_valid_alternatives_pass(name, impl):
    report = run(name, impl)
    assert report.passed, str(report)


# =========================================================================== wrong code as candidates write it

def int8_mean_abs(w):
    scale = w.abs().mean(dim=1, keepdim=True).clamp(min=1e-12) / 127
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def int8_scale_squeezed(w):
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def int8_in_place(w):
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return w.div_(scale).round_().clamp_(-127, 127).to(torch.int8), scale


def int4_zero_not_rounded(w, group_size=128):
    groups = w.unfold(1, group_size, group_size)
    lo, hi = torch.aminmax(groups, dim=-1)
    scale = torch.where(hi > lo, (hi - lo) / 15, torch.ones_like(hi))
    zero = (-lo / scale).clamp(0, 15)
    q = torch.round(groups / scale[..., None] + zero[..., None]).clamp(0, 15)
    return q.flatten(1).byte(), scale, zero.byte()


def int4_fixed_group(w, group_size=128):
    return int4_unfold(w, 128 if w.shape[1] % 128 == 0 else w.shape[1])


def dequant4_codes_dtype(q, scale, zero, group_size=128):
    return dequant4_view(q, scale, zero, group_size).to(torch.uint8)


@pytest.mark.parametrize("name,impl,says", [
    ("quantize_int8", int8_mean_abs, "entries wrong"),
    ("quantize_int8", int8_scale_squeezed, "shape"),
    ("quantize_int8", int8_in_place, "in place"),
    ("quantize_int4", int4_fractional_zero, "entries wrong"),
    ("quantize_int4", int4_zero_not_rounded, "entries wrong"),
    ("quantize_int4", int4_fixed_group, "group_size=16"),
    ("dequantize_int4", dequant4_codes_dtype, "dtype"),
])
def test_wrong_code_is_rejected(name, impl, says):
    report = run(name, impl)
    assert not report.passed
    assert says in str(report), str(report)


# =========================================================================== bad input: a clear report, never a crash

def _raises(w, group_size=128):
    raise ValueError("boom")


def _numpy(w):
    q, scale = int8_loop(w)
    return q.numpy(), scale.numpy()


def _nan(w):
    q, scale = int8_loop(w)
    return q, scale * float("nan")


def _forbidden(w):
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    fq = torch.fake_quantize_per_channel_affine(w.float(), scale.flatten().float(),
                                                torch.zeros(w.shape[0], dtype=torch.int32), 0, -127, 127)
    return torch.round(fq / scale).to(torch.int8), scale


def _endless(w, group_size=128):
    while True:
        time.sleep(0.01)


@pytest.mark.parametrize("name,impl,says", [
    ("quantize_int8", _raises, "raised ValueError"),
    ("quantize_int8", _numpy, "numpy"),
    ("quantize_int8", _nan, "NaN"),
    ("quantize_int8", _forbidden, "torch.fake_quantize_per_channel_affine"),
    ("quantize_int4", _endless, "stopped"),
    ("dequantize_int4", lambda q, s, z, group_size=128: q, "dtype"),
])
def test_bad_input_gives_a_clear_report(name, impl, says):
    report = run(name, impl)
    assert not report.passed
    assert says in str(report), str(report)



# =========================================================================== LoRALinear

from torch import nn  # noqa: E402

from utils.grader.exercises.efficiency import lora as ld  # noqa: E402


def test_lora_oracle_is_the_formula_by_hand():
    base = ld._linear(7, 5, True, seed=1)
    m = ld.LoRALinearSpec(base, r=3, alpha=6)
    m.load_state_dict(ld._state(7, 5, 3, seed=2))
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(3), dtype=f32).requires_grad_()
    A, B, W, b = m.lora_A.weight, m.lora_B.weight, base.weight, base.bias
    want = x @ W.T + b + 2.0 * (x @ A.T) @ B.T                                   # eq. (lora-forward), alpha / r = 2
    y = m(x)
    torch.testing.assert_close(y, want)
    delta = torch.randn(4, 5, generator=torch.Generator().manual_seed(4))
    (y * delta).sum().backward()
    torch.testing.assert_close(B.grad, 2.0 * delta.T @ (x @ A.T).detach())     # eq. (lora-grad)
    torch.testing.assert_close(A.grad, 2.0 * (B.T @ delta.T @ x).detach())
    assert W.grad is None and b.grad is None and not W.requires_grad
    m.merge()
    m.merge()
    torch.testing.assert_close(base.weight, (W0 := ld._state(7, 5, 3, seed=2)["base.weight"]) + 2.0 * B @ A)
    torch.testing.assert_close(m(x), want)
    m.unmerge()
    m.unmerge()
    torch.testing.assert_close(base.weight, W0)


class LoRAWithData(nn.Module):
    """Another style: F.linear on the weights, merge through .data, the state kept as the merged delta."""

    def __init__(self, base, r=8, alpha=16, dropout=0.0):
        super().__init__()
        self.base = base
        base.weight.requires_grad = False
        if base.bias is not None:
            base.bias.requires_grad = False
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.lora_B.weight.data.zero_()
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / r
        self._delta = None

    def forward(self, x):
        out = torch.nn.functional.linear(x, self.base.weight, self.base.bias)
        if self._delta is None:
            out = out + torch.nn.functional.linear(
                torch.nn.functional.linear(self.lora_dropout(x), self.lora_A.weight), self.lora_B.weight) * self.scaling
        return out

    def merge(self):
        if self._delta is None:
            self._delta = (self.lora_B.weight.data @ self.lora_A.weight.data) * self.scaling
            self.base.weight.data.add_(self._delta)

    def unmerge(self):
        if self._delta is not None:
            self.base.weight.data.sub_(self._delta)
            self._delta = None


class LoRAEinsum(ld._LoRA):
    """Another style: the branch with einsum, merged with torch.addmm."""

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        h = torch.einsum("...i,ri->...r", self.lora_dropout(x), self.lora_A.weight)
        return y + torch.einsum("...r,or->...o", h, self.lora_B.weight) * self.scaling

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight.copy_(torch.addmm(self.base.weight, self.lora_B.weight, self.lora_A.weight,
                                               alpha=self.scaling))
            self.merged = True


@pytest.mark.parametrize("impl", [LoRAWithData, LoRAEinsum])
def test_lora_valid_alternatives_pass(impl):
    report = run("LoRALinear", impl)
    assert report.passed, str(report)


class _Wrong(ld._LoRA):
    pass


class InvertedScaling(_Wrong):
    def scale_of(self, r, alpha):
        return r / alpha


class IntegerScaling(_Wrong):
    def scale_of(self, r, alpha):
        return alpha // r


class SwappedInit(_Wrong):
    def __init__(self, base, r=8, alpha=16, dropout=0.0):
        super().__init__(base, r, alpha, dropout)
        with torch.no_grad():
            self.lora_A.weight.zero_()
            self.lora_B.weight.copy_(torch.randn(self.lora_B.weight.shape) * 0.1)


class BiasNotFrozen(_Wrong):
    def freeze(self):
        self.base.weight.requires_grad_(False)


class MergeByNewParameter(_Wrong):
    def merge(self):
        if not self.merged:
            self.base.weight = nn.Parameter(self.base.weight + self.delta())
            self.merged = True

    def unmerge(self):
        if self.merged:
            self.base.weight = nn.Parameter(self.base.weight - self.delta())
            self.merged = False


class TransposedUpdate(_Wrong):
    def delta(self):
        return self.scaling * (self.lora_A.weight.T @ self.lora_B.weight.T).T


class DropoutOnEverything(_Wrong):
    def forward(self, x):
        x = self.lora_dropout(x)
        return super().forward(x)


@pytest.mark.parametrize("impl", [InvertedScaling, IntegerScaling, SwappedInit, BiasNotFrozen, MergeByNewParameter,
                                  DropoutOnEverything])
def test_lora_wrong_code_is_rejected(impl):
    report = run("LoRALinear", impl)
    assert not report.passed, f"{impl.__name__} passes"


def test_lora_bad_input_gives_a_clear_report():
    class Raises(ld._LoRA):
        def __init__(self, *a, **k):
            raise RuntimeError("no")

    class Numpy(ld._LoRA):
        def forward(self, x):
            return super().forward(x).detach().numpy()

    base = ld._linear(4, 3, True, seed=0)
    cases = [(Raises, "raised RuntimeError"), (Numpy, "numpy"), (ld.LoRALinearSpec(base), "expects your class itself")]
    for impl, says in cases:
        report = run("LoRALinear", impl)
        assert not report.passed and says in str(report), str(report)
