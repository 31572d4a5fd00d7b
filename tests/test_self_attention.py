"""Part 3, attention: the SelfAttention grader (utils/grader/exercises/attention/self_attention.py).

What the tests prove: the oracle is PyTorch's nn.MultiheadAttention with one head (the same weights, eval and
train mode, the same dropout draw) and a loop written from the definition; the chapter's copied facts agree
with transformers; correct modules in other styles pass; wrong modules as candidates write them (beyond the
registered mistakes) are rejected; bad input becomes a clear report, never a crash; verdicts repeat; a check is
quick (CPU time).
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

from utils.grader import get, run
from utils.grader.exercises.attention import self_attention as sa
from utils.notebook import ROOT

NAME = "SelfAttention"
Spec = sa.SelfAttentionSpec


# --------------------------------------------------------------------------- references

def as_mha(m: nn.Module, d: int, p: float) -> nn.MultiheadAttention:
    """nn.MultiheadAttention with one head carrying m's weights (in_proj is qkv_proj, out_proj is o_proj)."""
    ref = nn.MultiheadAttention(d, num_heads=1, dropout=p, batch_first=True).to(m.qkv_proj.weight.dtype)
    with torch.no_grad():
        ref.in_proj_weight.copy_(m.qkv_proj.weight)
        ref.in_proj_bias.copy_(m.qkv_proj.bias)
        ref.out_proj.weight.copy_(m.o_proj.weight)
        ref.out_proj.bias.copy_(m.o_proj.bias)
    return ref


def randomised(cls, d, dropout=0.0, seed=3, dtype=torch.float64):
    m = cls(d, dropout=dropout).to(dtype)
    m.load_state_dict(sa.trained_scale(m.state_dict(), torch.Generator().manual_seed(seed)))
    return m


def loop_attention(m, x, attention_mask=None):
    """The definition, one query and one key at a time, in float64 (eval mode)."""
    x = x.double()
    W, b = m.qkv_proj.weight.double(), m.qkv_proj.bias.double()
    d = x.shape[-1]
    B, T, _ = x.shape
    out = torch.zeros(B, T, d, dtype=torch.float64)
    weights = torch.zeros(B, T, T, dtype=torch.float64)
    for n in range(B):
        q = x[n] @ W[:d].T + b[:d]
        k = x[n] @ W[d:2 * d].T + b[d:2 * d]
        v = x[n] @ W[2 * d:].T + b[2 * d:]
        for i in range(T):
            keys = [j for j in range(T) if attention_mask is None or attention_mask[n, j] != 0]
            s = {j: float(q[i] @ k[j]) / math.sqrt(d) for j in keys}
            top = max(s.values())
            z = sum(math.exp(s[j] - top) for j in keys)
            for j in keys:
                weights[n, i, j] = math.exp(s[j] - top) / z
            mixed = sum(weights[n, i, j] * v[j] for j in keys)
            out[n, i] = mixed @ m.o_proj.weight.double().T + m.o_proj.bias.double()
    return out, weights


@pytest.mark.parametrize("seed", range(6))
def test_oracle_equals_nn_multiheadattention_in_eval_mode(seed):
    g = torch.Generator().manual_seed(seed)
    B, T, d = 1 + seed % 3, 3 + seed, 4 + 2 * seed
    m = randomised(Spec, d, seed=seed).eval()
    x = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g).tolist()
    mask = sa.padding_mask(lengths, T, left=seed % 2 == 1)
    out, w = m(x, attention_mask=mask)
    ref_out, ref_w = as_mha(m, d, 0.0).eval()(x, x, x, key_padding_mask=mask == 0, need_weights=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_oracle_equals_nn_multiheadattention_in_train_mode_with_the_same_dropout_draw(p):
    """nn.MultiheadAttention drops its (B, T, T) weights with the same generator state, so with the same seed both
    draw the same mask: the outputs agree, and the built-in's returned weights are ours after that dropout."""
    m = randomised(Spec, 8, dropout=p).train()
    ref = as_mha(m, 8, p).train()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    mask = sa.padding_mask([6, 4, 1], 6)
    torch.manual_seed(11)
    out, w = m(x, attention_mask=mask)
    torch.manual_seed(11)
    ref_out, ref_w = ref(x, x, x, key_padding_mask=mask == 0, need_weights=True)
    torch.manual_seed(11)
    dropped = F.dropout(w, p)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ref_w, dropped, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 6, dtype=torch.float64))     # ours: before dropout


@pytest.mark.parametrize("i", range(len(get(NAME).all_cases())))
def test_every_eval_step_of_the_oracle_matches_the_loop_definition(i):
    ex = get(NAME)
    script = ex.all_cases()[i].make()
    m = Spec(*script.init[0], **script.init[1])
    m.load_state_dict(ex.randomize(m.state_dict(), torch.Generator().manual_seed(7)))
    m = m.to(script.dtype or torch.float32).eval()
    for step in script.steps:
        args, kwargs = step.inputs([]) if callable(step.inputs) else step.inputs
        x = args[0]
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        with torch.no_grad():
            out, w = m(x, mask)
        ref_out, ref_w = loop_attention(m, x, mask)
        tol = 1e-5 if x.dtype == torch.float32 else 1e-10
        torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)
        torch.testing.assert_close(w.double(), ref_w, rtol=tol, atol=tol)


def test_cases_cover_the_issue():
    ex = get(NAME)
    scripts = [c.make() for c in ex.all_cases()]
    notes = " ".join(c.note for c in ex.all_cases())
    for needed in ("three lengths", "left", "bool", "float", "dropout=0.3", "eval", "float64", "non-contiguous",
                   "batch of one", "gradients"):
        assert needed in notes, needed
    masks = []
    for sc in scripts:
        for st in sc.steps:
            args, kwargs = st.inputs([]) if callable(st.inputs) else st.inputs
            mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
            if mask is not None:
                masks.append(mask)
                assert (mask.sum(-1) > 0).all(), "every sequence keeps a real token"
    assert any(len(set(m.sum(-1).tolist())) >= 3 for m in masks), "several lengths in one batch"
    assert any(sc.init[1].get("dropout", 0) > 0 and any(not s.train for s in sc.steps) for sc in scripts)
    assert any(sc.init[1].get("dropout", 0) > 0 and any(s.train for s in sc.steps) for sc in scripts)
    assert len(ex.mistakes) >= 5


def test_random_weights_are_not_the_defaults_and_keep_the_softmax_soft():
    m = randomised(Spec, 16)
    fresh = Spec(16)
    assert not torch.allclose(m.o_proj.bias, fresh.o_proj.bias.double())
    x = torch.randn(4, 8, 16, dtype=torch.float64)
    _, w = m(x)
    assert w.amax(-1).mean() < 0.8


def test_the_chapter_copies_the_dropout_defaults_of_transformers():
    transformers = pytest.importorskip("transformers")
    nb = nbformat.read(ROOT / "source" / "attention" / "self_attention.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if "ATTENTION_DROPOUT = " in c.source)
    copied = ast.literal_eval(cell.split("ATTENTION_DROPOUT = ", 1)[1].split("\n", 1)[0])
    assert copied == {"BERT": transformers.BertConfig().attention_probs_dropout_prob,
                      "GPT-2": transformers.GPT2Config().attn_pdrop,
                      "Llama": transformers.LlamaConfig().attention_dropout}


def test_the_book_solution_is_nn_multiheadattention_with_one_head(book):
    cls = book("attention/self_attention")[NAME]
    m = randomised(cls, 12, dropout=0.2).train()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    mask = sa.padding_mask([5, 2], 5, dtype=torch.bool)
    builtin = as_mha(m, 12, 0.2).train()               # built before seeding: its initialisation draws too
    torch.manual_seed(4)
    out, _ = m(x, attention_mask=mask)
    torch.manual_seed(4)
    ref, _ = builtin(x, x, x, key_padding_mask=~mask)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert sum(p.numel() for p in m.parameters()) == 4 * 12**2 + 4 * 12


# --------------------------------------------------------------------------- correct, in other styles

class Einsum(nn.Module):
    def __init__(self, d_model, dropout=0.0):
        super().__init__()
        self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.attn_dropout = nn.Dropout(dropout)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x, attention_mask=None):
        B, T, D = x.shape
        q, k, v = self.qkv_proj(x).view(B, T, 3, D).unbind(2)
        scores = torch.einsum("bid,bjd->bij", q, k) * D ** -0.5
        if attention_mask is not None:
            scores = torch.where(attention_mask.bool()[:, None, :], scores, torch.tensor(-1e9, dtype=x.dtype))
        weights = scores.softmax(-1)
        return self.o_proj(torch.einsum("bij,bjd->bid", self.attn_dropout(weights), v)), weights


class AdditiveMinimum(Einsum):
    """Hugging Face's way: an additive mask of the dtype's most negative number."""

    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        scores = q @ k.mT / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            bias = (1.0 - attention_mask.to(x.dtype)) * torch.finfo(x.dtype).min
            scores = scores + bias[:, None, :]
        weights = F.softmax(scores, dim=-1)
        return self.o_proj(self.attn_dropout(weights) @ v), weights


class PerSequenceLoop(Einsum):
    """One sequence at a time, keeping only its real keys: no mask value at all."""

    def forward(self, x, attention_mask=None):
        B, T, D = x.shape
        q, k, v = self.qkv_proj(x).split(D, dim=-1)
        weights = []
        for n in range(B):
            real = torch.ones(T, dtype=torch.bool) if attention_mask is None else attention_mask[n] != 0
            w = torch.zeros(T, T, dtype=x.dtype)
            w = w.masked_scatter(real[None, :].expand(T, T),
                                 torch.softmax(q[n] @ k[n][real].T / math.sqrt(D), dim=-1))
            weights.append(w)
        weights = torch.stack(weights)
        return self.o_proj(self.attn_dropout(weights) @ v), weights


class ManualSoftmax(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).split(x.shape[-1], dim=-1)
        s = q @ k.transpose(1, 2) / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            s = s.masked_fill(~attention_mask.bool().unsqueeze(1), -math.inf)
        e = torch.exp(s - s.amax(-1, keepdim=True))
        weights = e / e.sum(-1, keepdim=True)
        return self.o_proj(self.attn_dropout(weights) @ v), weights


@pytest.mark.parametrize("impl", [Einsum, AdditiveMinimum, PerSequenceLoop, ManualSoftmax],
                         ids=lambda c: c.__name__)
def test_valid_styles_pass(impl):
    report = run(NAME, impl)
    assert report.passed, str(report)


# --------------------------------------------------------------------------- wrong, as candidates write them

class KeysFirst(Einsum):
    def forward(self, x, attention_mask=None):
        k, q, v = self.qkv_proj(x).chunk(3, dim=-1)                     # the order of the split
        s = q @ k.mT / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            s = s.masked_fill(attention_mask[:, None, :] == 0, -math.inf)
        w = s.softmax(-1)
        return self.o_proj(self.attn_dropout(w) @ v), w


class ScaledByLength(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        s = q @ k.mT / math.sqrt(x.shape[1])                            # sqrt(T), not sqrt(d)
        if attention_mask is not None:
            s = s.masked_fill(attention_mask[:, None, :] == 0, -math.inf)
        w = s.softmax(-1)
        return self.o_proj(self.attn_dropout(w) @ v), w


class MaskTypo(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        s = q @ k.mT / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            s = s.masked_fill(attention_mask[:, None, :] == 0, -1e-9)      # meant -1e9
        w = s.softmax(-1)
        return self.o_proj(self.attn_dropout(w) @ v), w


class SoftmaxOverBatch(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        s = q @ k.mT / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            s = s.masked_fill(attention_mask[:, None, :] == 0, -math.inf)
        w = F.softmax(s)                                                # implicit dim: 0 for a 3-D input
        return self.o_proj(self.attn_dropout(w) @ v), w


class DropoutOnValues(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        s = q @ k.mT / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            s = s.masked_fill(attention_mask[:, None, :] == 0, -math.inf)
        w = s.softmax(-1)
        return self.o_proj(w @ self.attn_dropout(v)), w


class DropoutTwice(Einsum):
    def forward(self, x, attention_mask=None):
        out, w = ManualSoftmax.forward(self, x, attention_mask)
        return self.attn_dropout(out), w


class HardCodedRate(Einsum):
    def __init__(self, d_model, dropout=0.0):
        super().__init__(d_model, dropout=0.1)                          # ignores the argument


class FunctionalDropout(Einsum):
    """Right values, but not the module's own dropout: the property with a known mask catches it."""

    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        s = q @ k.mT / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            s = s.masked_fill(attention_mask[:, None, :] == 0, -math.inf)
        w = s.softmax(-1)
        return self.o_proj(F.dropout(w, self.attn_dropout.p, self.training) @ v), w


class DetachedWeights(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        s = q @ k.mT / math.sqrt(x.shape[-1])
        if attention_mask is not None:
            s = s.masked_fill(attention_mask[:, None, :] == 0, -math.inf)
        w = s.softmax(-1)
        return self.o_proj(self.attn_dropout(w.detach()) @ v), w      # no gradient to the queries and keys


class EditsTheMask(Einsum):
    def forward(self, x, attention_mask=None):
        out = ManualSoftmax.forward(self, x, attention_mask)
        if attention_mask is not None:
            attention_mask.zero_()                                      # "cleaning up" the caller's mask
        return out


class MeanOfValues(Einsum):
    """Uniform weights over the real tokens: 'attention' without scores."""

    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        B, T, _ = x.shape
        keep = torch.ones(B, T, dtype=x.dtype) if attention_mask is None else (attention_mask != 0).to(x.dtype)
        w = (keep / keep.sum(-1, keepdim=True))[:, None, :].expand(B, T, T)
        return self.o_proj(self.attn_dropout(w) @ v), w


# (module, the kind of problem the report names; None: a wrong value, whichever case shows it first)
WRONG = [(KeysFirst, None), (ScaledByLength, None), (MaskTypo, None), (SoftmaxOverBatch, None),
         (DropoutOnValues, None), (DropoutTwice, None), (HardCodedRate, None), (FunctionalDropout, "property"),
         (DetachedWeights, "gradient"), (EditsTheMask, "mutated-input"), (MeanOfValues, None)]


@pytest.mark.parametrize("impl,kind", WRONG, ids=lambda v: getattr(v, "__name__", str(v)))
def test_candidate_mistakes_are_rejected(impl, kind):
    report = run(NAME, impl)
    assert not report.passed, f"{impl.__name__} passes"
    assert report.failure is not None and str(report)
    if kind:
        assert report.kind == kind, str(report)
    if kind == "property":
        assert "attn_dropout" in str(report)


# --------------------------------------------------------------------------- the properties on their own

def _call(cls):
    return lambda *a, **k: cls(*a, **k)


def test_dropout_property_accepts_the_oracle_and_names_each_failure():
    assert sa._uses_its_dropout(_call(Spec)) is None
    assert "never calls" in sa._uses_its_dropout(_call(FunctionalDropout))
    assert "calls self.attn_dropout 2 times" in sa._uses_its_dropout(_call(DropoutTwice))
    assert "not the weights you return" in sa._uses_its_dropout(_call(sa.WeightsAfterDropout))


def test_padding_property_accepts_the_oracle_and_catches_leaks():
    assert sa._padding_is_invisible(_call(Spec)) is None
    assert "weight" in sa._padding_is_invisible(_call(MaskTypo))
    assert "changed the output" in sa._padding_is_invisible(_call(sa.MaskAddedAsIs)) or \
        "weight" in sa._padding_is_invisible(_call(sa.MaskAddedAsIs))


# --------------------------------------------------------------------------- bad input: a report, never a crash

class Raises(Einsum):
    def forward(self, x, attention_mask=None):
        raise ValueError("shapes do not match")


class OnlyTheOutput(Einsum):
    def forward(self, x, attention_mask=None):
        return ManualSoftmax.forward(self, x, attention_mask)[0]


class NumpyOut(Einsum):
    def forward(self, x, attention_mask=None):
        out, w = ManualSoftmax.forward(self, x, attention_mask)
        return out.detach().numpy(), w


class NaNOut(Einsum):
    def forward(self, x, attention_mask=None):
        out, w = ManualSoftmax.forward(self, x, attention_mask)
        return out * float("nan"), w


class Float32Always(Einsum):
    def forward(self, x, attention_mask=None):
        out, w = ManualSoftmax.forward(self, x, attention_mask)
        return out.float(), w.float()


class UsesSDPA(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(y), None


class Endless(Einsum):
    def forward(self, x, attention_mask=None):
        while True:
            pass


class KTransposedWrongly(Einsum):
    def forward(self, x, attention_mask=None):
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        w = torch.softmax(q @ k.T / math.sqrt(x.shape[-1]), -1)          # .T on a 3-D tensor
        return self.o_proj(self.attn_dropout(w) @ v), w


class SeparateProjections(nn.Module):
    """Level 1's layout: the grader wants the fused qkv_proj."""

    def __init__(self, d_model, dropout=0.0):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        self.attn_dropout = nn.Dropout(dropout)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x, attention_mask=None):
        w = torch.softmax(self.q_proj(x) @ self.k_proj(x).mT / math.sqrt(x.shape[-1]), -1)
        return self.o_proj(self.attn_dropout(w) @ self.v_proj(x)), w


@pytest.mark.parametrize("impl,kind", [
    (Raises, "exception"), (OnlyTheOutput, None), (NumpyOut, None), (NaNOut, "not-finite"),
    (Float32Always, None), (UsesSDPA, "forbidden-call"), (KTransposedWrongly, "exception"),
    (SeparateProjections, "wrong-keys"),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_bad_input_gets_a_clear_report(impl, kind):
    report = run(NAME, impl)
    assert not report.passed
    text = str(report)
    assert report.failure is not None and "Traceback" not in text
    if kind:
        assert report.kind == kind, text


def test_an_instance_instead_of_the_class_is_a_clear_report():
    report = run(NAME, Spec(8))
    assert not report.passed and report.kind == "wrong-type" and "an instance" in str(report)


def test_an_endless_loop_is_stopped():
    report, seconds = timed(get(NAME), Endless)
    assert not report.passed and report.kind == "timeout"


# --------------------------------------------------------------------------- repeatable and quick

def test_verdicts_do_not_depend_on_the_global_generator(book):
    """Every dropout step re-seeds before its forward call: the same draw whatever the state before the check."""
    cls = book("attention/self_attention")[NAME]
    for seed in (0, 123):
        torch.manual_seed(seed)
        assert run(NAME, cls).passed
    ex = get(NAME)
    dropout_cases = [c for c in ex.all_cases() if c.make().init[1].get("dropout")]
    assert dropout_cases
    for c in dropout_cases:
        outs = []
        for seed in (5, 99):
            torch.manual_seed(seed)
            outs.append(ex.outcome(sa.DropoutInEval, c, None).parts)
        assert len(outs[0]) == len(outs[1]) > 2
        for (_, a), (_, b) in zip(outs[0][2:], outs[1][2:]):
            assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_check_is_quick(book):
    cls = book("attention/self_attention")[NAME]
    run(NAME, cls)                                   # the oracle's outcomes are cached after the first check
    report, seconds = timed(get(NAME), cls)
    assert report.passed and seconds < 3.0, seconds

