"""Part 4, positions: sinusoidal and learned absolute position encodings (chapter positions/absolute_positions)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn, strided
from ...kinds import ModuleExercise, Script, Step
from ...registry import register

# --------------------------------------------------------------------------- sinusoidal_positional_encoding

def sinusoid_spec(max_len, d_model, base=10000.0):
    """The formula of Vaswani et al. written entry by entry, in float64, then rounded to float32."""
    pe = torch.zeros(max_len, d_model, dtype=f64)
    for p in range(max_len):
        for i in range(0, d_model, 2):
            angle = p / base ** (i / d_model)
            pe[p, i] = math.sin(angle)
            if i + 1 < d_model:
                pe[p, i + 1] = math.cos(angle)
    return pe.to(f32)


def _sizes(max_len, d_model, base=None, positional=False):
    if base is None:
        return call(max_len, d_model)
    return call(max_len, d_model, base) if positional else call(max_len, d_model, base=base)


def _sinusoid_cases():
    return [
        case(_sizes, 8, 16, note="small table"),
        case(_sizes, 1, 8, note="a single position"),
        case(_sizes, 5, 2, note="d_model = 2: one frequency"),
        case(_sizes, 50, 32, note="the default base"),
        case(_sizes, 20, 12, base=100.0, note="non-default base (keyword)"),
        case(_sizes, 16, 8, 10.0, positional=True, note="non-default base (positional)"),
        case(_sizes, 64, 6, note="d_model not a power of two"),
        case(_sizes, 1024, 64, note="long table: 1024 positions"),
    ]


def _rows_have_norm(call):
    pe = call(40, 24).double()
    norms = pe.norm(dim=-1)
    want = math.sqrt(24 / 2)
    if not torch.allclose(norms, torch.full_like(norms, want), atol=1e-4):
        return msg("row norms range over [{low:.4g}, {high:.4g}], not sqrt(d/2) = {want:.4g}",
                   low=float(norms.min()), high=float(norms.max()), want=want)
    return None


def _similarity_is_relative(call):
    pe = call(60, 32).double()
    sim = pe @ pe.T                                        # (60, 60)
    for k in (1, 5, 17):
        diag = torch.diagonal(sim, offset=k)
        if float(diag.max() - diag.min()) > 1e-3:
            return msg("PE[p]·PE[p+{k}] varies with p (range {spread:.3g})", k=k,
                       spread=float(diag.max() - diag.min()))
    return None


def sinusoid_exponent_i(max_len, d_model, base=10000.0):
    pos = torch.arange(max_len, dtype=f64)[:, None]
    i = torch.arange(d_model // 2, dtype=f64)
    angle = pos / base ** (i / d_model)
    pe = torch.zeros(max_len, d_model, dtype=f64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.float()


def sinusoid_column_exponent(max_len, d_model, base=10000.0):
    pos = torch.arange(max_len, dtype=f64)[:, None]
    j = torch.arange(d_model, dtype=f64)
    angle = pos / base ** (j / d_model)                     # the odd columns get their own frequency
    pe = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return pe.float()


def _angles(max_len, d_model, base):
    pos = torch.arange(max_len, dtype=f64)[:, None]
    return pos / base ** (torch.arange(0, d_model, 2, dtype=f64) / d_model)


def sinusoid_swapped(max_len, d_model, base=10000.0):
    angle = _angles(max_len, d_model, base)
    pe = torch.zeros(max_len, d_model, dtype=f64)
    pe[:, 0::2], pe[:, 1::2] = torch.cos(angle), torch.sin(angle)
    return pe.float()


def sinusoid_concatenated(max_len, d_model, base=10000.0):
    angle = _angles(max_len, d_model, base)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()


def sinusoid_positive_exponent(max_len, d_model, base=10000.0):
    pos = torch.arange(max_len, dtype=f64)[:, None]
    angle = pos * base ** (torch.arange(0, d_model, 2, dtype=f64) / d_model)
    pe = torch.zeros(max_len, d_model, dtype=f64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.float()


def sinusoid_fixed_base(max_len, d_model, base=10000.0):
    angle = _angles(max_len, d_model, 10000.0)
    pe = torch.zeros(max_len, d_model, dtype=f64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.float()


def sinusoid_from_one(max_len, d_model, base=10000.0):
    angle = _angles(max_len + 1, d_model, base)[1:]
    pe = torch.zeros(max_len, d_model, dtype=f64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.float()


def sinusoid_float64(max_len, d_model, base=10000.0):
    angle = _angles(max_len, d_model, base)
    pe = torch.zeros(max_len, d_model, dtype=f64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


register(Exercise(
    name="sinusoidal_positional_encoding",
    chapter="positions/absolute_positions",
    signature="sinusoidal_positional_encoding(max_len, d_model, base=10000.0)",
    oracle=sinusoid_spec,
    cases=_sinusoid_cases,
    properties=[
        Property("every row has norm sqrt(d_model / 2)", _rows_have_norm),
        Property("PE[p]·PE[p+k] depends only on k", _similarity_is_relative),
    ],
    # The angle p·ω reaches max_len (1023 here); float32 resolves such a number only to ~6e-5, so a correct
    # float32 computation (as in every code base) differs from the exact table by up to ~1e-4.
    tolerance={f32: (1e-5, 2e-4)},
    hints=(
        "the two columns of pair i, 2i and 2i+1, share one angle p * omega_i: compute a (max_len, d_model // 2) "
        "table of angles, then its sine and cosine   (eq. pe-sin)",
        "the angles are an outer product, positions (max_len, 1) times frequencies (d_model // 2,), with "
        "omega_i = base**(-2i/d_model) where 2i is the even column index: arange(0, d_model, 2) / d_model",
        "PE[p, 2i] = sin(p / base**(2i/d)), PE[p, 2i+1] = cos(p / base**(2i/d)): one frequency per pair of "
        "columns, sin in the even column, cos in the odd one   (eq. pe-sin)",
    ),
    mistakes=[
        Mistake("exponent i/d", sinusoid_exponent_i,
                "your frequencies decay too slowly: pair i uses base**(-2i/d_model) (2i is the even column's "
                "index), not base**(-i/d_model)."),
        Mistake("one frequency per column", sinusoid_column_exponent,
                "the odd column 2i+1 got its own frequency base**(-(2i+1)/d): sin and cos of a pair share ONE "
                "angle, p / base**(2i/d_model)."),
        Mistake("sin and cos swapped", sinusoid_swapped,
                "sin and cos are swapped: sin goes in the even columns (2i), cos in the odd ones (2i+1)."),
        Mistake("halves instead of interleaved", sinusoid_concatenated,
                "you concatenated [sin | cos] in two halves; this encoding interleaves them: column 2i is sin, "
                "column 2i+1 is cos."),
        Mistake("positive exponent", sinusoid_positive_exponent,
                "you multiplied p by base**(2i/d) instead of dividing: wavelengths must grow from 2π to "
                "base·2π across the columns."),
        Mistake("base ignored", sinusoid_fixed_base,
                "you hard-coded 10000: use the `base` argument."),
        Mistake("positions from 1", sinusoid_from_one,
                "your positions start at 1: row p encodes position p, and row 0 is [0, 1, 0, 1, ...]."),
        Mistake("float64 result", sinusoid_float64,
                "your table is float64: return float32 (build it in float32, or call .float() at the end)."),
    ],
))


# --------------------------------------------------------------------------- LearnedPositionalEmbedding

class LearnedPositionalEmbeddingSpec(nn.Module):
    """x + weight[:T], the lookup done by F.embedding."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, d_model))

    def forward(self, x):                                    # (B, T, d)
        positions = torch.arange(x.shape[-2], device=x.device)
        return x + F.embedding(positions, self.weight)       # (T, d) broadcast over B


def _script(max_len, d_model, shapes, backward=False, seed=0, dtype=f32, x_maker=randn):
    steps = [Step(call(x_maker(*shape, seed=seed + k, dtype=dtype)), train=k % 2 == 0, grad=backward)
             for k, shape in enumerate(shapes)]
    return Script(init=call(max_len, d_model), steps=steps)


def _learned_cases():
    return [
        case(_script, 16, 8, [(2, 5, 8)], note="T < max_len"),
        case(_script, 6, 4, [(3, 6, 4)], seed=10, note="T = max_len"),
        case(_script, 32, 8, [(1, 7, 8), (4, 3, 8)], seed=20, note="batch of one, then another T"),
        case(_script, 10, 6, [(5, 2, 6)], seed=30, note="B > T"),
        case(_script, 12, 4, [(2, 12, 4)], seed=40, x_maker=strided, note="non-contiguous x"),
        case(_script, 9, 5, [(3, 4, 5)], backward=True, seed=50, note="gradient of x and of weight"),
        case(_script, 8, 6, [(2, 8, 6)], backward=True, seed=60, note="gradient, T = max_len"),
    ]


class LearnedEmbeddingSubmodule(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x):
        return x + self.embedding(torch.arange(x.shape[1]))


class LearnedPlainTensor(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = torch.randn(max_len, d_model)

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class LearnedWholeTable(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model))

    def forward(self, x):
        return x + self.weight


class LearnedEmbeddingOnly(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model))

    def forward(self, x):
        return self.weight[: x.shape[1]].expand_as(x)


class LearnedLastRows(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model))

    def forward(self, x):
        return x + self.weight[-x.shape[1]:]


class LearnedBatchAxis(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model))

    def forward(self, x):
        return x + self.weight[: x.shape[0]]


class LearnedDetached(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model))

    def forward(self, x):
        return x + self.weight.detach()[: x.shape[1]]


register(ModuleExercise(
    name="LearnedPositionalEmbedding",
    chapter="positions/absolute_positions",
    signature="LearnedPositionalEmbedding(max_len, d_model)",
    oracle=LearnedPositionalEmbeddingSpec,
    cases=_learned_cases,
    hints=(
        "the module owns the whole (max_len, d_model) table as one trainable tensor named weight; forward adds "
        "the rows of the first T positions to x   (eq. pe-learned)",
        "a tensor is trained only when it is an nn.Parameter assigned to an attribute of the module; the rows "
        "of positions 0 .. T-1 are weight[:T], with T = x.shape[1]",
        "self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02); forward: x + self.weight[:T] with "
        "T = x.shape[1]   (eq. pe-learned)",
    ),
    mistakes=[
        Mistake("nn.Embedding submodule", LearnedEmbeddingSubmodule,
                "your table lives in a submodule (its parameter is 'embedding.weight'): the exercise asks for a "
                "parameter named `weight` on the module itself, self.weight = nn.Parameter(...)."),
        Mistake("plain tensor", LearnedPlainTensor,
                "self.weight is a plain tensor, so the module has no parameters and the optimizer never sees "
                "it: wrap it in nn.Parameter."),
        Mistake("whole table added", LearnedWholeTable,
                "you added the whole (max_len, d_model) table: slice the first T rows, self.weight[:T], "
                "with T = x.shape[1]."),
        Mistake("embedding only", LearnedEmbeddingOnly,
                "you returned the position embeddings alone: the module returns x + weight[:T]."),
        Mistake("last rows", LearnedLastRows,
                "you took the LAST T rows of the table: position t uses row t, so slice weight[:T]."),
        Mistake("batch axis as length", LearnedBatchAxis,
                "you sliced by x.shape[0], the batch size: the sequence length is x.shape[1]."),
        Mistake("detached table", LearnedDetached,
                "the table is detached from the graph, so weight never gets a gradient and never learns: "
                "index self.weight directly."),
    ],
))
