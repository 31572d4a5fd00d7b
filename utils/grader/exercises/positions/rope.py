"""Part 4, positions: rotary position embedding, both pair layouts (chapter positions/rope)."""

from __future__ import annotations

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...registry import register

# --------------------------------------------------------------------------- the oracle: complex multiplication

def rope_spec(x, positions=None, base=10000.0, interleaved=False):
    """Each pair of x is a complex number z; RoPE multiplies z_i at position p by e^{i p θ_i}, θ_i = base^(-2i/D).

    Computed in float64 (exact angles), returned in x's dtype. Differentiable, for the gradient cases.
    """
    T, D = x.shape[-2], x.shape[-1]
    pos = torch.arange(T) if positions is None else positions
    theta = base ** (-torch.arange(0, D, 2, dtype=f64) / D)            # (D/2,)
    angle = pos.to(f64)[:, None] * theta                                # (T, D/2)
    rot = torch.polar(torch.ones_like(angle), angle)                    # e^{i p θ}
    xd = x.to(f64)
    if interleaved:                                                     # pairs (2i, 2i+1)
        z = torch.view_as_complex(xd.reshape(*x.shape[:-1], D // 2, 2).contiguous())
        out = torch.view_as_real(z * rot).reshape(x.shape)
    else:                                                               # pairs (i, i + D/2)
        z = torch.complex(xd[..., : D // 2], xd[..., D // 2:])
        zr = z * rot
        out = torch.cat([zr.real, zr.imag], dim=-1)
    return out.to(x.dtype)


# --------------------------------------------------------------------------- cases

def _rope_call(x, positions=None, base=None, interleaved=None, positional=False):
    x = x()
    if positions is not None:
        positions = torch.tensor(positions, dtype=torch.long)
    if positional:
        return call(x, positions, base, interleaved)
    kwargs = {}
    if positions is not None:
        kwargs["positions"] = positions
    if base is not None:
        kwargs["base"] = base
    if interleaved is not None:
        kwargs["interleaved"] = interleaved
    return call(x, **kwargs)


def _X(*shape, **kw):
    return lambda: randn(*shape, **kw)


def _heads_view(B, T, H, D, seed, dtype=f32):
    """q as attention code makes it: (B, T, H, D) then transposed to (B, H, T, D), a non-contiguous view."""
    return lambda: randn(B, T, H, D, seed=seed, dtype=dtype).transpose(1, 2)


def _rope_cases():
    return [
        case(_rope_call, _X(6, 8, seed=1), note="(T, D), default positions, half layout"),
        case(_rope_call, _X(6, 8, seed=2), interleaved=True, note="(T, D), interleaved layout"),
        case(_rope_call, _X(2, 5, 16, seed=3), interleaved=False, note="(B, T, D), half layout"),
        case(_rope_call, _X(2, 3, 7, 8, seed=4), interleaved=True, note="(B, H, T, D), interleaved"),
        case(_rope_call, _heads_view(2, 5, 3, 8, seed=5), note="non-contiguous (B, H, T, D) view, half layout"),
        case(_rope_call, _heads_view(2, 5, 3, 8, seed=6), interleaved=True,
             note="non-contiguous (B, H, T, D) view, interleaved"),
        case(_rope_call, _X(1, 2, 1, 8, seed=7), positions=[1000],
             note="one new token at position 1000 (decoding with a KV cache), half layout"),
        case(_rope_call, _X(2, 4, 8, seed=8), positions=[517, 518, 519, 520], interleaved=True,
             note="a chunk at offset 517, interleaved"),
        case(_rope_call, _X(6, 8, seed=9), positions=[0, 3, 4, 9, 20, 21],
             note="non-contiguous positions, half layout"),
        case(_rope_call, _X(6, 8, seed=10), positions=[5, 2, 2, 0, 11, 7], interleaved=True,
             note="unordered, repeated positions, interleaved"),
        case(_rope_call, _X(8, 64, seed=11), base=500000.0, note="base = 500000 (Llama 3), D = 64"),
        case(_rope_call, _X(5, 16, seed=12), None, 100.0, True, positional=True,
             note="base = 100, every argument positional, interleaved"),
        case(_rope_call, _X(2, 6, 16, seed=13, dtype=f64), note="float64, half layout"),
        case(_rope_call, _X(2, 6, 16, seed=14, dtype=f64), positions=[40, 41, 42, 43, 44, 45], interleaved=True,
             note="float64, interleaved, offset 40"),
        case(_rope_call, _X(4, 2, seed=15), note="D = 2: a single pair"),
        case(_rope_call, _X(1, 5, 12, seed=16), interleaved=True, note="batch of one, D = 12"),
        # bfloat16 keeps 8 significant bits: position 3000 itself is not representable (3000 -> 2992), so the angles
        # must be computed in float32 and only cos/sin cast to bf16. Correct code then rounds x1·cos, x2·sin and
        # their sum in bf16, up to about 3 · 2^-8 · |x|: hence atol 2e-2 here (the angle mistake is off by O(1)).
        case(_rope_call, _heads_view(2, 8, 4, 64, seed=19, dtype=torch.bfloat16), positions=list(range(3000, 3008)),
             note="bfloat16 at positions 3000..3007, (B, H, T, D = 64)", tolerance={torch.bfloat16: (1.6e-2, 2e-2)}),
        case(_rope_call, _X(3, 32, seed=20, dtype=torch.bfloat16), positions=[4093, 4094, 4095], interleaved=True,
             note="bfloat16 at positions 4093..4095, interleaved", tolerance={torch.bfloat16: (1.6e-2, 2e-2)}),
        case(_rope_call, _X(2, 5, 8, seed=17, dtype=f64), interleaved=False, grad=True, note="gradient, half"),
        case(_rope_call, _X(5, 8, seed=18, dtype=f64), positions=[3, 1, 4, 1, 5], interleaved=True, grad=True,
             note="gradient, interleaved, custom positions"),
    ]


# --------------------------------------------------------------------------- properties

def _rope_norm_preserved(call):
    x = randn(2, 7, 16, seed=50, dtype=f64)
    for interleaved in (False, True):
        y = call(x, interleaved=interleaved)
        err = float((y.norm(dim=-1) - x.norm(dim=-1)).abs().max())
        if err > 1e-9:
            return msg("with interleaved={interleaved} the norm of a vector changes by up to {err:.3g}",
                       interleaved=interleaved, err=err)
    return None


def _rope_position_zero(call):
    x = randn(5, 12, seed=51, dtype=f64)
    for interleaved in (False, True):
        y = call(x, positions=torch.zeros(5, dtype=torch.long), interleaved=interleaved)
        if not torch.allclose(y, x, rtol=0, atol=1e-12):
            return msg("with interleaved={interleaved}, position 0 changes x by {change:.3g}",
                       interleaved=interleaved, change=float((y - x).abs().max()))
    return None


def _rope_relative(call):
    q, k = randn(4, 16, seed=52, dtype=f64), randn(5, 16, seed=53, dtype=f64)
    m = torch.tensor([3, 10, 0, 7])
    n = torch.tensor([1, 2, 8, 30, 4])
    for interleaved in (False, True):
        s0 = call(q, positions=m, interleaved=interleaved) @ call(k, positions=n, interleaved=interleaved).T
        s1 = call(q, positions=m + 57, interleaved=interleaved) @ call(k, positions=n + 57,
                                                                      interleaved=interleaved).T
        err = float((s0 - s1).abs().max())
        if err > 1e-8:
            return msg("with interleaved={interleaved}, shifting every position by 57 changes q·k by up to {err:.3g}: "
                       "the score must depend on m - n only", interleaved=interleaved, err=err)
    return None


# --------------------------------------------------------------------------- mistakes: each one small change

def _positions(x, positions):
    return torch.arange(x.shape[-2]) if positions is None else positions


def _theta(D, base, dtype):
    return base ** (-torch.arange(0, D, 2, dtype=dtype) / D)             # (D/2,)


def _angle(x, positions, base, dtype=None):
    """The (T, D/2) angles, in float32 at least (float64 for float64 inputs), as correct code computes them."""
    dtype = dtype or torch.promote_types(x.dtype, f32)
    return _positions(x, positions).to(dtype)[:, None] * _theta(x.shape[-1], base, dtype)   # (T, D/2)


def _rot_half(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _rot_pairs(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def _rotate_as(layout, x, angle):
    return layout(x, angle.cos().to(x.dtype), angle.sin().to(x.dtype))


def _rotate(x, angle, interleaved):
    return _rotate_as(_rot_pairs if interleaved else _rot_half, x, angle)


def rope_half_always(x, positions=None, base=10000.0, interleaved=False):
    return _rotate_as(_rot_half, x, _angle(x, positions, base))


def rope_pairs_always(x, positions=None, base=10000.0, interleaved=False):
    return _rotate_as(_rot_pairs, x, _angle(x, positions, base))


def rope_layouts_swapped(x, positions=None, base=10000.0, interleaved=False):
    return _rotate(x, _angle(x, positions, base), not interleaved)


def rope_exponent_i(x, positions=None, base=10000.0, interleaved=False):
    D = x.shape[-1]
    wide = torch.promote_types(x.dtype, f32)
    theta = base ** (-torch.arange(D // 2, dtype=wide) / D)
    return _rotate(x, _positions(x, positions).to(wide)[:, None] * theta, interleaved)


def rope_sin_cos_swapped(x, positions=None, base=10000.0, interleaved=False):
    a = _angle(x, positions, base)
    return (_rot_pairs if interleaved else _rot_half)(x, a.sin().to(x.dtype), a.cos().to(x.dtype))


def rope_negative_angle(x, positions=None, base=10000.0, interleaved=False):
    return _rotate(x, -_angle(x, positions, base), interleaved)


def rope_positions_ignored(x, positions=None, base=10000.0, interleaved=False):
    return _rotate(x, _angle(x, None, base), interleaved)


def rope_base_ignored(x, positions=None, base=10000.0, interleaved=False):
    return _rotate(x, _angle(x, positions, 10000.0), interleaved)


def rope_other_layout_frequencies(x, positions=None, base=10000.0, interleaved=False):
    a = _angle(x, positions, base)                                       # (T, D/2)
    if interleaved:
        full = torch.cat([a, a], dim=-1)                                 # the half layout's order
        x1, x2 = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)
    else:
        full = a.repeat_interleave(2, dim=-1)                            # the interleaved layout's order
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
    return x * full.cos().to(x.dtype) + rotated * full.sin().to(x.dtype)


def rope_float32_angles(x, positions=None, base=10000.0, interleaved=False):
    a = _angle(x, positions, base, dtype=f32)
    return _rotate(x, a.to(x.dtype), interleaved)


def rope_angles_in_input_dtype(x, positions=None, base=10000.0, interleaved=False):
    return _rotate(x, _angle(x, positions, base, dtype=x.dtype), interleaved)


register(Exercise(
    name="apply_rope",
    chapter="positions/rope",
    signature="apply_rope(x, positions=None, base=10000.0, interleaved=False)",
    oracle=rope_spec,
    cases=_rope_cases,
    properties=[
        Property("the norm of every vector is preserved", _rope_norm_preserved),
        Property("position 0 is the identity", _rope_position_zero),
        Property("q·k depends only on the relative position m - n", _rope_relative),
    ],
    # Positions reach 1000 here: float32 holds the angle p·θ of ~1000 rad only to ~6e-5 rad, and the common
    # ways of computing θ (base**(-2i/D) or exp(-2i·ln(base)/D)) round differently; measured, correct float32
    # implementations (HF Llama style, exp style) are off from the exact value by up to 1.2e-5.
    tolerance={f32: (1e-5, 5e-5)},
    hints=(
        "every row t and every pair i need one angle, positions[t] * theta_i (eq. rope-freq); each pair is then "
        "turned by that angle (eq. rope-rotation); interleaved chooses which two coordinates form a pair",
        "the angles are a (T, D/2) outer product; the pairs are x[..., :D//2] with x[..., D//2:] "
        "(interleaved=False) or x[..., 0::2] with x[..., 1::2] (interleaved=True); compute the angles in float32 "
        "or wider and cast cos and sin to x.dtype",
        "angle[p, i] = p * base**(-2i/D); (x_a, x_b) -> (x_a cos - x_b sin, x_a sin + x_b cos) for the pairs "
        "(i, i + D/2) (interleaved=False) or (2i, 2i+1) (interleaved=True)   (eq. rope-rotation)",
    ),
    mistakes=[
        Mistake("rotate_half layout always", rope_half_always,
                "with interleaved=True you still rotated the pairs (i, i + D/2): the interleaved layout rotates "
                "neighbours (2i, 2i+1), x[..., 0::2] with x[..., 1::2]."),
        Mistake("interleaved layout always", rope_pairs_always,
                "with interleaved=False you rotated neighbours (2i, 2i+1): the default (rotate_half) layout "
                "pairs dimension i with i + D/2, the two halves of x."),
        Mistake("layouts swapped", rope_layouts_swapped,
                "your layouts are swapped: interleaved=False pairs (i, i + D/2) (rotate_half, HF Llama), "
                "interleaved=True pairs (2i, 2i+1) (RoFormer, Meta's Llama)."),
        Mistake("frequency exponent i/D", rope_exponent_i,
                "your frequencies are base**(-i/D); pair i turns at θ_i = base**(-2i/D) (2i/D runs over [0, 1))."),
        Mistake("sin and cos swapped", rope_sin_cos_swapped,
                "sin and cos are swapped: a rotation by φ maps (a, b) to (a cos φ - b sin φ, a sin φ + b cos φ)."),
        Mistake("rotation by -θ", rope_negative_angle,
                "you rotate by -pθ (clockwise): the rotated pair is (a cos - b sin, a sin + b cos); check the sign "
                "of rotate_half, which is cat(-x2, x1)."),
        Mistake("positions ignored", rope_positions_ignored,
                "you used 0 .. T-1 whatever `positions` says: with a KV cache the new token sits at position "
                "`positions`, not at 0."),
        Mistake("base ignored", rope_base_ignored,
                "you hard-coded base 10000: use the `base` argument (Llama 3 uses 500000)."),
        Mistake("frequencies in the other layout's order", rope_other_layout_frequencies,
                "your cos/sin tables are laid out for the other layout: for rotate_half repeat the D/2 angles as "
                "cat([a, a]); for interleaved pairs repeat each angle twice, repeat_interleave(2)."),
        Mistake("angles in float32", rope_float32_angles,
                "your float64 result has float32 accuracy: compute the angles and cos/sin in float64 for a float64 "
                "x (in general, in torch.promote_types(x.dtype, torch.float32))."),
        Mistake("angles in the input's dtype", rope_angles_in_input_dtype,
                "you compute the angles p·θ in x's dtype: bfloat16 keeps 8 significant bits, so position 3000 "
                "becomes 2992 and the angles are off by radians. Compute positions, θ, the angles and cos/sin in "
                "float32 (float64 for float64 x), and cast only cos and sin to x's dtype, as Llama and HF do."),
    ],
))
