"""Part 5, build an LLM: the FeedForward, SwiGLU and llama_ffn_size graders
(utils/grader/exercises/llm/feed_forward.py).

What the tests prove: the oracles are the field's modules (transformers' GPT2MLP and LlamaMLP, loaded with the
same weights) and Meta's rule gives the published widths (utils.configs, transformers' LlamaConfig default, and
the chapter's table); correct code in other styles passes; wrong code as candidates write it (beyond the
registered mistakes) is rejected; bad input becomes a clear report, never a crash; a check is quick (CPU time).
"""

from __future__ import annotations

import ast
import math

import nbformat
import pytest
import torch
import torch.nn.functional as F
from kindcheck import timed
from torch import nn

from utils.configs import LLAMA2_7B, LLAMA3_8B, MISTRAL_7B
from utils.grader import get, run
from utils.grader.exercises.llm import feed_forward as ff
from utils.notebook import ROOT

transformers = pytest.importorskip("transformers")


def randomised(module, seed=0):
    module.load_state_dict(ff.trained_scale(module.state_dict(), torch.Generator().manual_seed(seed)))
    return module


# --------------------------------------------------------------------------- the oracles against transformers

@pytest.mark.parametrize("d,d_ff,seed", [(8, 32, 0), (12, 20, 1), (16, 64, 2), (5, 3, 3)])
def test_feedforward_oracle_is_gpt2s_mlp(d, d_ff, seed):
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
    cfg = transformers.GPT2Config(n_embd=d, resid_pdrop=0.0)
    ref = GPT2MLP(d_ff, cfg).double().eval()
    mine = randomised(ff.FeedForwardSpec(d, d_ff).double(), seed)
    with torch.no_grad():                                         # Conv1D stores (in, out): the transpose
        ref.c_fc.weight.copy_(mine.up.weight.T)
        ref.c_fc.bias.copy_(mine.up.bias)
        ref.c_proj.weight.copy_(mine.down.weight.T)
        ref.c_proj.bias.copy_(mine.down.bias)
    x = torch.randn(3, 7, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d,h,seed", [(8, 21, 0), (12, 32, 1), (16, 48, 2), (6, 4, 3)])
def test_swiglu_oracle_is_llamas_mlp(d, h, seed):
    from transformers.models.llama.modeling_llama import LlamaMLP
    cfg = transformers.LlamaConfig(hidden_size=d, intermediate_size=h, num_attention_heads=1, num_key_value_heads=1)
    ref = LlamaMLP(cfg).double()
    mine = randomised(ff.SwiGLUSpec(d, h).double(), seed)
    with torch.no_grad():
        ref.gate_proj.weight.copy_(mine.w1.weight)
        ref.up_proj.weight.copy_(mine.w3.weight)
        ref.down_proj.weight.copy_(mine.w2.weight)
    x = torch.randn(2, 5, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-12, atol=1e-12)


def test_the_book_solutions_agree_with_the_oracles_and_count_like_the_configs(book):
    ns = book("llm/feed_forward")
    for cls, spec, args in [(ns["FeedForward"], ff.FeedForwardSpec, (16, 64)), (ns["SwiGLU"], ff.SwiGLUSpec, (16, 40))]:
        mine, ref = randomised(cls(*args).double(), 5), randomised(spec(*args).double(), 5)
        x = torch.randn(4, 16, dtype=torch.float64)
        torch.testing.assert_close(mine(x), ref(x), rtol=1e-12, atol=1e-12)
    d = 4096
    llama = ns["SwiGLU"](d, 11008).to("meta")
    assert sum(p.numel() for p in llama.parameters()) == 3 * d * LLAMA2_7B.intermediate_size
    gpt2 = ns["FeedForward"](768, 3072).to("meta")
    assert sum(p.numel() for p in gpt2.parameters()) == 8 * 768**2 + 5 * 768


# --------------------------------------------------------------------------- llama_ffn_size: the published widths

PUBLISHED = {          # name: (dim, multiple_of, ffn_dim_multiplier, intermediate_size of config.json)
    "Llama-2-7B": (4096, 256, None, 11008), "Llama-2-13B": (5120, 256, None, 13824),
    "Llama-2-70B": (8192, 4096, 1.3, 28672), "Llama-3-8B": (4096, 1024, 1.3, 14336),
    "Llama-3-70B": (8192, 4096, 1.3, 28672), "Llama-3.1-405B": (16384, 4096, 1.2, 53248),
    "Llama-3.2-1B": (2048, 256, 1.5, 8192), "Llama-3.2-3B": (3072, 256, 1.0, 8192),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_the_oracle_gives_the_published_width(name):
    d, m, mult, width = PUBLISHED[name]
    assert ff.llama_ffn_size_spec(d, m, mult) == width


def test_the_published_widths_agree_with_the_books_configs_and_transformers():
    assert PUBLISHED["Llama-2-7B"][3] == LLAMA2_7B.intermediate_size == transformers.LlamaConfig().intermediate_size
    assert PUBLISHED["Llama-3-8B"][3] == LLAMA3_8B.intermediate_size == MISTRAL_7B.intermediate_size
    assert transformers.LlamaConfig().hidden_size == PUBLISHED["Llama-2-7B"][0]


def test_the_chapter_table_and_the_grader_notes_say_the_same():
    nb = nbformat.read(ROOT / "source" / "llm" / "feed_forward.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if "LLAMA_FFN = {" in c.source)
    table = {}
    for line in cell.splitlines():
        if line.strip().startswith('"Llama'):
            name, rest = line.strip().split(": dict(", 1)
            fields = dict(kv.split("=") for kv in rest.rstrip("),").split(", "))
            table[ast.literal_eval(name)] = tuple(ast.literal_eval(fields[k]) for k in
                                                  ("dim", "multiple_of", "ffn_dim_multiplier", "intermediate_size"))
    assert table == PUBLISHED
    notes = " ".join(c.note for c in get("llama_ffn_size").all_cases())
    for name, (d, m, _, width) in PUBLISHED.items():
        assert f"{name}: dim {d}, multiple_of {m}" in notes and f"intermediate_size {width}" in notes


def _ceil_spec(d, m=256, mult=None):
    h = math.floor(8 * d / 3)
    if mult is not None:
        h = math.floor(mult * h)
    return m * math.ceil(h / m)


def test_the_oracle_agrees_with_a_ceiling_formula_on_a_sweep():
    for d in list(range(1, 300)) + [512, 768, 1024, 2048, 3072, 4096, 5120, 8192]:
        for m in (1, 2, 3, 8, 64, 256):
            for mult in (None, 0.5, 1.0, 1.3, 1.5):
                assert ff.llama_ffn_size_spec(d, m, mult) == _ceil_spec(d, m, mult), (d, m, mult)


# --------------------------------------------------------------------------- correct, in other styles

class FFNByHand(nn.Module):
    """The tanh formula written out, F.linear calls."""

    def __init__(self, d_model, d_ff, bias=True):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        h = F.linear(x, self.up.weight, self.up.bias)
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return F.linear(h, self.down.weight, self.down.bias)


class FFNEinsum(FFNByHand):
    def forward(self, x):
        h = torch.einsum("...i,oi->...o", x, self.up.weight)
        if self.up.bias is not None:
            h = h + self.up.bias
        y = torch.einsum("...i,oi->...o", nn.GELU(approximate="tanh")(h), self.down.weight)
        return y if self.down.bias is None else y + self.down.bias


class SwiGLUBySigmoid(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)

    def forward(self, x):
        gate = self.w1(x)
        return self.w2(gate * torch.sigmoid(gate) * self.w3(x))


class SwiGLUFlattened(SwiGLUBySigmoid):
    """Flattens the leading axes and restores them."""

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        y = self.w2(F.silu(flat @ self.w1.weight.T) * (flat @ self.w3.weight.T))
        return y.reshape(*x.shape[:-1], -1)


def size_by_ceil(d_model, multiple_of=256, ffn_dim_multiplier=None):
    h = int(8 * d_model / 3)
    if ffn_dim_multiplier:
        h = int(h * ffn_dim_multiplier)
    return math.ceil(h / multiple_of) * multiple_of


def size_by_negative_floor(d_model, multiple_of=256, ffn_dim_multiplier=None):
    h = 8 * d_model // 3                           # integer division is the truncation for positive ints
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    return -(-h // multiple_of) * multiple_of


def size_by_loop(d_model, multiple_of=256, ffn_dim_multiplier=None):
    h = int(2 * 4 * d_model / 3)
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    while h % multiple_of:
        h += 1
    return h


@pytest.mark.parametrize("name,impl", [("FeedForward", FFNByHand), ("FeedForward", FFNEinsum),
                                       ("SwiGLU", SwiGLUBySigmoid), ("SwiGLU", SwiGLUFlattened),
                                       ("llama_ffn_size", size_by_ceil), ("llama_ffn_size", size_by_negative_floor),
                                       ("llama_ffn_size", size_by_loop)],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_valid_styles_pass(name, impl):
    report = run(name, impl)
    assert report.passed, str(report)


# --------------------------------------------------------------------------- wrong, as candidates write them

class GeluTwice(FFNByHand):
    def forward(self, x):
        return F.gelu(self.down(F.gelu(self.up(x), approximate="tanh")), approximate="tanh")


class DropoutInside(FFNByHand):
    def __init__(self, d_model, d_ff, bias=True):
        super().__init__(d_model, d_ff, bias)
        self.drop = nn.Dropout(0.1)                   # no parameters: the structure still matches

    def forward(self, x):
        return self.drop(self.down(F.gelu(self.up(x), approximate="tanh")))


class CubeForgotten(FFNByHand):
    def forward(self, x):
        h = self.up(x)
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 2)))
        return self.down(h)


class SigmoidApproxWrongConstant(FFNByHand):
    def forward(self, x):
        h = self.up(x)
        return self.down(h * torch.sigmoid(1.5 * h))


class TiedBack(FFNByHand):
    """Projects back with the transpose of `up`, leaving `down` unused (a tied autoencoder, not GPT-2's MLP)."""

    def forward(self, x):
        return F.linear(F.gelu(self.up(x), approximate="tanh"), self.up.weight.T, self.down.bias)


class W1Twice(SwiGLUBySigmoid):
    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w1(x))


class SwishBeta2(SwiGLUBySigmoid):
    def forward(self, x):
        g = self.w1(x)
        return self.w2(g * torch.sigmoid(2 * g) * self.w3(x))


class ReluGate(SwiGLUBySigmoid):
    def forward(self, x):
        return self.w2(torch.relu(self.w1(x)) * self.w3(x))


class GateAfterDown(SwiGLUBySigmoid):
    def forward(self, x):
        return F.silu(self.w2(self.w1(x))) * self.w2(self.w3(x))


def size_rounds_8_thirds(d_model, multiple_of=256, ffn_dim_multiplier=None):
    h = round(8 * d_model / 3)                       # round, not truncate
    if ffn_dim_multiplier is not None:
        h = round(ffn_dim_multiplier * h)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def size_two_point_six_seven(d_model, multiple_of=256, ffn_dim_multiplier=None):
    h = int(2.67 * d_model)
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def size_int_multiplier(d_model, multiple_of=256, ffn_dim_multiplier=None):
    h = int(2 * 4 * d_model / 3)
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier) * h             # int() in the wrong place: 1.3 becomes 1
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def size_multiplier_on_d(d_model, multiple_of=256, ffn_dim_multiplier=None):
    if ffn_dim_multiplier is not None:
        d_model = ffn_dim_multiplier * d_model
    return multiple_of * ((int(8 * d_model / 3) + multiple_of - 1) // multiple_of)


def size_ceil_everywhere(d_model, multiple_of=256, ffn_dim_multiplier=None):
    h = math.ceil(8 * d_model / 3)                   # ceil where Meta truncates
    if ffn_dim_multiplier is not None:
        h = math.ceil(ffn_dim_multiplier * h)
    return multiple_of * math.ceil(h / multiple_of)


WRONG = [("FeedForward", GeluTwice), ("FeedForward", DropoutInside), ("FeedForward", CubeForgotten),
         ("FeedForward", SigmoidApproxWrongConstant), ("FeedForward", TiedBack),
         ("SwiGLU", W1Twice), ("SwiGLU", SwishBeta2), ("SwiGLU", ReluGate), ("SwiGLU", GateAfterDown),
         ("llama_ffn_size", size_rounds_8_thirds), ("llama_ffn_size", size_two_point_six_seven),
         ("llama_ffn_size", size_int_multiplier), ("llama_ffn_size", size_multiplier_on_d),
         ("llama_ffn_size", size_ceil_everywhere)]


@pytest.mark.parametrize("name,impl", WRONG, ids=lambda v: getattr(v, "__name__", str(v)))
def test_candidate_mistakes_are_rejected(name, impl):
    report = run(name, impl)
    assert not report.passed, f"{impl.__name__} passes {name}"
    assert report.failure is not None and str(report)


def test_a_float_width_is_told_apart_from_an_int():
    report = run("llama_ffn_size", ff.size_as_float)
    assert not report.passed and report.failure.mistake == "float result"
    assert "float" in str(report)


# --------------------------------------------------------------------------- bad input: a report, never a crash

class Raises(FFNByHand):
    def forward(self, x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


class ReturnsNone(FFNByHand):
    def forward(self, x):
        self.down(F.gelu(self.up(x), approximate="tanh"))


class ReturnsNumpy(FFNByHand):
    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh")).detach().numpy()


class ReturnsNaN(FFNByHand):
    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh")) * float("nan")


class EditsItsInput(FFNByHand):
    def forward(self, x):
        y = self.down(F.gelu(self.up(x), approximate="tanh"))
        x.zero_()
        return y


class Endless(FFNByHand):
    def forward(self, x):
        while True:
            pass


class Sequential(nn.Module):
    """A sensible module with the wrong names: the contract fixes up and down."""

    def __init__(self, d_model, d_ff, bias=True):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff, bias=bias), nn.GELU("tanh"),
                                 nn.Linear(d_ff, d_model, bias=bias))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("impl,kind", [(Raises, "exception"), (ReturnsNone, None), (ReturnsNumpy, None),
                                       (ReturnsNaN, "not-finite"), (EditsItsInput, "mutated-input"),
                                       (Sequential, "wrong-keys")],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_bad_modules_get_a_clear_report(impl, kind):
    report = run("FeedForward", impl)
    text = str(report)
    assert not report.passed and report.failure is not None and "Traceback" not in text
    if kind:
        assert report.kind == kind, text


@pytest.mark.parametrize("impl", [lambda d, multiple_of=256, ffn_dim_multiplier=None: 1 / 0,
                                  lambda d, multiple_of=256, ffn_dim_multiplier=None: "11008",
                                  lambda d, multiple_of=256, ffn_dim_multiplier=None: None,
                                  lambda d, multiple_of=256, ffn_dim_multiplier=None: torch.tensor(11008)],
                         ids=["raises", "string", "none", "tensor"])
def test_bad_sizes_get_a_clear_report(impl):
    report = run("llama_ffn_size", impl)
    assert not report.passed and report.failure is not None and "Traceback" not in str(report)


def test_an_instance_or_an_endless_loop_is_a_clear_report():
    assert run("SwiGLU", ff.SwiGLUSpec(4, 8)).kind == "wrong-type"
    report, _ = timed(get("FeedForward"), Endless)
    assert report.kind == "timeout"


def test_the_per_token_property_catches_a_module_that_mixes_tokens():
    class MixesTokens(FFNByHand):
        def forward(self, x):
            y = self.down(F.gelu(self.up(x), approximate="tanh"))
            return y + 0.0 * y.mean(-2, keepdim=True) + 1e-3 * torch.cumsum(y, dim=-2)

    assert ff._per_token(lambda *a: ff.FeedForwardSpec(*a)) is None
    assert ff._per_token(lambda *a: MixesTokens(*a)) is not None


# --------------------------------------------------------------------------- quick

@pytest.mark.parametrize("name", ["FeedForward", "SwiGLU", "llama_ffn_size"])
def test_a_check_is_quick(name, book):
    impl = book("llm/feed_forward")[name]
    run(name, impl)
    report, seconds = timed(get(name), impl)
    assert report.passed and seconds < 2.0, seconds
