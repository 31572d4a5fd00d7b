"""Part 5, build an LLM: the feed-forward network of GPT-2, Llama's SwiGLU, and Llama's rule for its width
(chapter llm/feed_forward).

FeedForward and SwiGLU are modules: random non-default weights (the std of a trained layer), inputs of rank 2
to 4 (the FFN acts on every token on its own), float32 and float64, non-contiguous inputs, gradients.
Oracles: nn.Linear with F.gelu(approximate="tanh") for GPT-2's MLP, nn.Linear with F.silu for SwiGLU.

llama_ffn_size is a plain function of ints, checked exactly against the published widths (the
`intermediate_size` of each model's config.json on the Hugging Face Hub) with the `dim`, `multiple_of` and
`ffn_dim_multiplier` of Meta's params.json, and on small values where every rounding choice shows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ....i18n import msg
from ...core import Case, Mistake, Property
from ...inputs import call, f32, f64, randn, strided, transposed
from ...kinds import ModuleExercise, PlainExercise, Script, Step
from ...references import SwiGLUSpec
from ...registry import register


# --------------------------------------------------------------------------- oracles

class FeedForwardSpec(nn.Module):
    """GPT-2's MLP: nn.Linear up, GELU (tanh approximation), nn.Linear down."""

    def __init__(self, d_model, d_ff, bias=True):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))



def llama_ffn_size_spec(d_model, multiple_of=256, ffn_dim_multiplier=None):
    """Meta's rule as a loop: 8/3 d_model truncated, times the multiplier truncated, then the smallest multiple
    of `multiple_of` that is not below it (counted up one multiple at a time)."""
    hidden = int(2 * 4 * d_model / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    size = 0
    while size < hidden:
        size += multiple_of
    return size


def trained_scale(state: dict, gen: torch.Generator) -> dict:
    """Weights with the std of a trained layer (1/sqrt(fan_in)) and random biases: pre-activations of order 1,
    where GELU's exact form and its tanh approximation differ by far more than float32's tolerance."""
    new = {}
    for name, t in state.items():
        r = torch.randn(t.shape, generator=gen, dtype=torch.float64)
        new[name] = (r / math.sqrt(t.shape[-1]) if name.endswith("weight") else 0.5 * r).to(t.dtype)
    return new


# --------------------------------------------------------------------------- cases of the two modules

def _script(init, shape, *, kwargs=None, modes="TE", dtype=f32, seed=0, layout="contiguous", scale=1.5):
    """One call per letter of `modes` (T train, E eval, G train with backward) on inputs of `shape`."""
    make = {"contiguous": randn, "transposed": transposed, "strided": strided}[layout]
    steps = [Step(call(make(*shape, dtype=dtype, seed=seed + k, scale=scale)), train=m in "TG", grad=m == "G")
             for k, m in enumerate(modes)]
    return Script(init=(init, kwargs or {}), steps=steps, dtype=dtype)


def case(*args, note="", **kwargs):
    return Case(make=lambda: _script(*args, **kwargs), note=note)


def _ffn_cases():
    return [
        case((16, 64), (2, 5, 16), note="d_ff = 4 d_model, a (B, T, d) batch"),
        case((12, 40), (3, 7, 12), kwargs={"bias": False}, seed=1, note="bias=False"),
        case((8, 20), (6, 8), seed=2, note="rank 2: (tokens, d_model)"),
        case((8, 16), (2, 3, 4, 8), seed=3, note="rank 4: (B, H, T, d_model)"),
        case((16, 48), (2, 5, 16), dtype=f64, seed=4, note="float64"),
        case((16, 64), (2, 5, 16), layout="transposed", seed=5, note="a non-contiguous input (transposed)"),
        case((10, 30), (2, 4, 10), layout="strided", seed=6, note="a non-contiguous input (every other column)"),
        case((16, 8), (1, 1, 16), seed=7, note="batch of one, one token, d_ff < d_model"),
        case((16, 64), (2, 5, 16), modes="GE", seed=8, note="gradients"),
        case((12, 36), (2, 6, 12), kwargs={"bias": False}, modes="G", dtype=f64, seed=9, scale=3.0,
             note="gradients, float64, bias=False, large pre-activations"),
    ]


def _swiglu_cases():
    return [
        case((16, 48), (2, 5, 16), note="d_ff = 3 d_model, a (B, T, d) batch"),
        case((12, 32), (3, 7, 12), seed=1, note="d_ff = 32 for d_model = 12 (8/3 of it)"),
        case((8, 20), (6, 8), seed=2, note="rank 2: (tokens, d_model)"),
        case((8, 16), (2, 3, 4, 8), seed=3, note="rank 4: (B, H, T, d_model)"),
        case((16, 40), (2, 5, 16), dtype=f64, seed=4, note="float64"),
        case((16, 40), (2, 5, 16), layout="transposed", seed=5, note="a non-contiguous input (transposed)"),
        case((10, 24), (2, 4, 10), layout="strided", seed=6, note="a non-contiguous input (every other column)"),
        case((16, 8), (1, 1, 16), seed=7, note="batch of one, one token, d_ff < d_model"),
        case((16, 48), (2, 5, 16), modes="GE", seed=8, note="gradients"),
        case((12, 36), (2, 6, 12), modes="G", dtype=f64, seed=9, scale=3.0,
             note="gradients, float64, large pre-activations"),
    ]


def _per_token(call):
    """The FFN acts on each token alone: shuffling the tokens shuffles the outputs, and one token alone gives
    the same output as inside a batch."""
    torch.manual_seed(0)
    m = call(8, 24).double()
    x = randn(3, 5, 8, dtype=f64, seed=41)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(42))
    with torch.no_grad():
        out = m(x)
        shuffled = m(x[:, perm])
        alone = m(x[1:2, 3:4])
    if not (isinstance(out, torch.Tensor) and isinstance(shuffled, torch.Tensor) and isinstance(alone, torch.Tensor)):
        return msg("your forward did not return a tensor")
    if out.shape != x.shape or not torch.allclose(shuffled, out[:, perm], rtol=1e-9, atol=1e-12):
        return msg("shuffling the tokens changed more than their order: the feed-forward network must treat every "
                   "token on its own")
    if not torch.allclose(alone, out[1:2, 3:4], rtol=1e-9, atol=1e-12):
        return msg("a token alone gives another output than inside the batch: the feed-forward network must treat "
                   "every token on its own")
    return None


# --------------------------------------------------------------------------- FeedForward: mistakes

class _MLP(nn.Module):
    """A hand-written GPT-2 MLP; each mistake overrides one step."""

    def __init__(self, d_model, d_ff, bias=True):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def act(self, h):
        return F.gelu(h, approximate="tanh")

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class ExactGelu(_MLP):
    def act(self, h):
        return F.gelu(h)


class ReluInstead(_MLP):
    def act(self, h):
        return torch.relu(h)


class QuickGelu(_MLP):
    def act(self, h):
        return h * torch.sigmoid(1.702 * h)


class TanhGeluWithoutHalf(_MLP):
    def act(self, h):
        return h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))


class NoActivation(_MLP):
    def act(self, h):
        return h


class ActivationAfterDown(_MLP):
    def forward(self, x):
        return self.act(self.down(self.up(x)))


class ResidualInside(_MLP):
    def forward(self, x):
        return x + super().forward(x)


class BiasAlwaysOn(_MLP):
    def __init__(self, d_model, d_ff, bias=True):
        super().__init__(d_model, d_ff, bias=True)


register(ModuleExercise(
    name="FeedForward",
    chapter="llm/feed_forward",
    signature="FeedForward(d_model, d_ff, bias=True); forward(x)",
    oracle=FeedForwardSpec,
    cases=_ffn_cases,
    randomize=trained_scale,
    properties=[Property("the network acts on every token on its own", _per_token)],
    hints=("widen each token to d_ff, apply GELU in its tanh form, project back to d_model; nothing mixes the "
           "tokens   (eqs. ffn-def, ffn-gelu)",
           "two nn.Linear named up (d_model -> d_ff) and down (d_ff -> d_model), both with bias=bias; the "
           "nonlinearity sits between them and is GPT-2's approximation, not the erf form",
           "down(F.gelu(up(x), approximate='tanh'))   (eq. ffn-def)"),
    mistakes=[
        Mistake("exact GELU", ExactGelu,
                "you used the exact GELU (erf); GPT-2's MLP uses the tanh approximation: "
                "F.gelu(h, approximate='tanh'). The two differ by up to about 5e-4, far above float32's tolerance."),
        Mistake("ReLU instead of GELU", ReluInstead,
                "you used ReLU; GPT-2's MLP uses GELU (tanh approximation): F.gelu(h, approximate='tanh')."),
        Mistake("quick GELU", QuickGelu,
                "you used x * sigmoid(1.702 x), the 'quick GELU' of CLIP; GPT-2's MLP uses the tanh approximation "
                "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."),
        Mistake("tanh GELU without the 1/2", TanhGeluWithoutHalf,
                "your hand-written GELU lacks the factor 1/2: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 "
                "x^3))). Without it the output is doubled for large x."),
        Mistake("no activation", NoActivation,
                "there is no nonlinearity between the two linear layers: down(up(x)) is a single linear map. "
                "Apply GELU to the hidden layer."),
        Mistake("activation after the down projection", ActivationAfterDown,
                "you applied GELU after the down projection; it acts on the wide hidden layer: "
                "down(gelu(up(x)))."),
        Mistake("residual inside the FFN", ResidualInside,
                "you added the input x to the output: the residual connection belongs to the Transformer block "
                "(x + ffn(norm(x))), not to the feed-forward network itself."),
        Mistake("bias ignored", BiasAlwaysOn,
                "your module has biases even with bias=False: pass bias=bias to both nn.Linear."),
    ],
))


# --------------------------------------------------------------------------- SwiGLU: mistakes

class _Gated(nn.Module):
    """A hand-written SwiGLU; each mistake overrides one step."""

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)

    def hidden(self, x):
        return F.silu(self.w1(x)) * self.w3(x)

    def forward(self, x):
        return self.w2(self.hidden(x))


class GateOnW3(_Gated):
    def hidden(self, x):
        return self.w1(x) * F.silu(self.w3(x))


class SigmoidGate(_Gated):
    def hidden(self, x):
        return torch.sigmoid(self.w1(x)) * self.w3(x)


class GeluGate(_Gated):
    def hidden(self, x):
        return F.gelu(self.w1(x)) * self.w3(x)


class NoGate(_Gated):
    def hidden(self, x):
        return F.silu(self.w1(x))


class SiluAfterProduct(_Gated):
    def hidden(self, x):
        return F.silu(self.w1(x) * self.w3(x))


class GateAdded(_Gated):
    def hidden(self, x):
        return F.silu(self.w1(x)) + self.w3(x)


class ShrinksWidth(_Gated):
    """Applies the 2/3 rule to d_ff inside the module, as Meta's code does to 4 * dim."""

    def __init__(self, d_model, d_ff):
        super().__init__(d_model, int(2 * d_ff / 3))


class WithBiases(_Gated):
    def __init__(self, d_model, d_ff):
        super().__init__(d_model, d_ff)
        self.w1 = nn.Linear(d_model, d_ff)
        self.w2 = nn.Linear(d_ff, d_model)
        self.w3 = nn.Linear(d_model, d_ff)


class GatedResidual(_Gated):
    def forward(self, x):
        return x + super().forward(x)


register(ModuleExercise(
    name="SwiGLU",
    chapter="llm/feed_forward",
    signature="SwiGLU(d_model, d_ff); forward(x)",
    oracle=SwiGLUSpec,
    cases=_swiglu_cases,
    randomize=trained_scale,
    properties=[Property("the network acts on every token on its own", _per_token)],
    hints=("two projections of the token to d_ff: one goes through SiLU and gates the other elementwise; a third "
           "projects back   (eqs. swiglu-def, swiglu-silu)",
           "Llama's names: w1 is the gated branch (it gets the SiLU), w3 the plain one, w2 projects back; three "
           "nn.Linear with bias=False, d_ff used as given",
           "w2(F.silu(w1(x)) * w3(x))   (eq. swiglu-def)"),
    mistakes=[
        Mistake("SiLU on w3", GateOnW3,
                "your SiLU is on w3(x); in Llama's convention it is on w1(x): w2(silu(w1(x)) * w3(x)). With the "
                "weights of a checkpoint the two are different functions."),
        Mistake("sigmoid gate (GLU)", SigmoidGate,
                "your gate is sigmoid(w1(x)): that is the original GLU. SwiGLU gates with SiLU (Swish), "
                "silu(z) = z * sigmoid(z)."),
        Mistake("GELU gate (GEGLU)", GeluGate,
                "your gate is gelu(w1(x)): that is GEGLU (as in Gemma). SwiGLU gates with SiLU: silu(w1(x)) * w3(x)."),
        Mistake("no gate", NoGate,
                "w3 is never used: the hidden layer is silu(w1(x)) * w3(x), the product of the activated branch "
                "and the linear one."),
        Mistake("SiLU after the product", SiluAfterProduct,
                "you applied SiLU to the product w1(x) * w3(x); only the w1 branch is activated: "
                "silu(w1(x)) * w3(x)."),
        Mistake("gate added, not multiplied", GateAdded,
                "you added the two branches; a gated unit multiplies them elementwise: silu(w1(x)) * w3(x)."),
        Mistake("2/3 applied inside", ShrinksWidth,
                "your hidden width is 2/3 of d_ff: SwiGLU(d_model, d_ff) uses d_ff as given. The 2/3 rule picks "
                "d_ff from 4 d_model beforehand (llama_ffn_size); the module does not apply it again."),
        Mistake("biases", WithBiases,
                "your SwiGLU has biases; Llama's three projections have none: nn.Linear(..., bias=False)."),
        Mistake("residual inside the FFN", GatedResidual,
                "you added the input x to the output: the residual connection belongs to the Transformer block "
                "(x + ffn(norm(x))), not to the feed-forward network itself."),
    ],
))


# --------------------------------------------------------------------------- llama_ffn_size

def _size_cases():
    """The published Llama widths first (dim, multiple_of and ffn_dim_multiplier of Meta's params.json; the
    intermediate_size of the Hugging Face config.json in the note), then small values where each rounding
    choice shows."""
    return [
        Case(make=lambda: call(4096, multiple_of=256),
             note="Llama-2-7B: dim 4096, multiple_of 256 (intermediate_size 11008)"),
        Case(make=lambda: call(5120, multiple_of=256),
             note="Llama-2-13B: dim 5120, multiple_of 256 (intermediate_size 13824)"),
        Case(make=lambda: call(8192, 4096, 1.3),
             note="Llama-2-70B: dim 8192, multiple_of 4096, ffn_dim_multiplier 1.3 (intermediate_size 28672)"),
        Case(make=lambda: call(4096, 1024, 1.3),
             note="Llama-3-8B: dim 4096, multiple_of 1024, ffn_dim_multiplier 1.3 (intermediate_size 14336)"),
        Case(make=lambda: call(8192, multiple_of=4096, ffn_dim_multiplier=1.3),
             note="Llama-3-70B: dim 8192, multiple_of 4096, ffn_dim_multiplier 1.3 (intermediate_size 28672)"),
        Case(make=lambda: call(16384, 4096, 1.2),
             note="Llama-3.1-405B: dim 16384, multiple_of 4096, ffn_dim_multiplier 1.2 (intermediate_size 53248)"),
        Case(make=lambda: call(2048, 256, 1.5),
             note="Llama-3.2-1B: dim 2048, multiple_of 256, ffn_dim_multiplier 1.5 (intermediate_size 8192)"),
        Case(make=lambda: call(3072, 256, 1.0),
             note="Llama-3.2-3B: dim 3072, multiple_of 256, ffn_dim_multiplier 1.0; 8/3 of 3072 is already a "
                  "multiple (intermediate_size 8192)"),
        Case(make=lambda: call(4096), note="defaults: multiple_of=256, no multiplier"),
        Case(make=lambda: call(5120, ffn_dim_multiplier=None), note="ffn_dim_multiplier=None given by keyword"),
        Case(make=lambda: call(96, multiple_of=1), note="multiple_of=1: no rounding, 8/3 of 96 is 256"),
        Case(make=lambda: call(100, multiple_of=1), note="multiple_of=1: 800 / 3 = 266.67 truncates to 266"),
        Case(make=lambda: call(100, multiple_of=1, ffn_dim_multiplier=1.3),
             note="multiple_of=1 with a multiplier: both truncations show"),
        Case(make=lambda: call(384, multiple_of=64), note="8/3 of 384 is 1024, already a multiple of 64"),
        Case(make=lambda: call(1, multiple_of=1), note="d_model = 1"),
        Case(make=lambda: call(1000, 128, 0.5), note="a multiplier below 1"),
        Case(make=lambda: call(6, 4), note="small: 8/3 of 6 is 16, a multiple of 4"),
        Case(make=lambda: call(7, 4), note="small: 8/3 of 7 is 18.67, truncated to 18, rounded up to 20"),
    ]


def size_rounds_down(d_model, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * d_model / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of)


def size_rounds_to_nearest(d_model, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * d_model / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * round(hidden / multiple_of)


def size_always_next_multiple(d_model, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * d_model / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of + 1)


def size_without_two_thirds(d_model, multiple_of=256, ffn_dim_multiplier=None):
    hidden = 4 * d_model
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def size_multiplier_after_rounding(d_model, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * d_model / 3)
    hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
    return hidden if ffn_dim_multiplier is None else int(ffn_dim_multiplier * hidden)


def size_ignores_multiplier(d_model, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * d_model / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def size_as_float(d_model, multiple_of=256, ffn_dim_multiplier=None):
    hidden = 2 * 4 * d_model / 3
    if ffn_dim_multiplier is not None:
        hidden = ffn_dim_multiplier * hidden
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


register(PlainExercise(
    name="llama_ffn_size",
    chapter="llm/feed_forward",
    signature="llama_ffn_size(d_model, multiple_of=256, ffn_dim_multiplier=None) -> int",
    oracle=llama_ffn_size_spec,
    cases=_size_cases,
    hints=("start from the 8/3 d_model that keeps SwiGLU's parameter count equal to a 4 d_model MLP, truncated to "
           "an int; scale it by the multiplier if one is given; then round up   (eqs. swiglu-params, ffn-size)",
           "every step is an int: int() after each multiplication, and 'round up to a multiple of m' is the "
           "smallest multiple of m that is not below h (h itself when it already is one)",
           "h = int(2 * 4 * d_model / 3); if ffn_dim_multiplier is not None: h = int(ffn_dim_multiplier * h); "
           "return multiple_of * ((h + multiple_of - 1) // multiple_of)   (eq. ffn-size)"),
    mistakes=[
        Mistake("rounds down", size_rounds_down,
                "you rounded down (h // multiple_of * multiple_of); Meta's rule rounds up to the next multiple: "
                "multiple_of * ((h + multiple_of - 1) // multiple_of)."),
        Mistake("rounds to the nearest multiple", size_rounds_to_nearest,
                "you rounded to the nearest multiple; Meta's rule always rounds up: "
                "multiple_of * ((h + multiple_of - 1) // multiple_of)."),
        Mistake("always adds a multiple", size_always_next_multiple,
                "you always go to the next multiple, (h // multiple_of + 1) * multiple_of, even when h already is "
                "one (Llama-3.2-3B: 8/3 of 3072 is 8192 exactly): round up with (h + multiple_of - 1) // multiple_of."),
        Mistake("forgot the 2/3", size_without_two_thirds,
                "you started from 4 d_model: SwiGLU has three matrices, so Llama starts from 2/3 of it, "
                "int(2 * 4 * d_model / 3), to keep the parameter count of a 4 d_model two-matrix MLP."),
        Mistake("multiplier applied after rounding", size_multiplier_after_rounding,
                "you applied ffn_dim_multiplier after rounding: multiply first, int(), then round up to a multiple "
                "of multiple_of, so that the result is a multiple."),
        Mistake("multiplier ignored", size_ignores_multiplier,
                "ffn_dim_multiplier has no effect: when it is given, h = int(ffn_dim_multiplier * h) before "
                "rounding (Llama-3-8B: 1.3)."),
        Mistake("float result", size_as_float,
                "your result is a float (or the truncations are missing): take int() of 8/3 d_model and of its "
                "product with the multiplier, as Meta's code does, so that the width is an int."),
    ],
))
