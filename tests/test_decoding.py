"""Part 7, generation: the generate and beam_search graders (utils/grader/exercises/generation/decoding.py) and the
chapter generation/decoding.

The oracles are checked against the field's reference, transformers (its logits warpers, its greedy `generate` and
its beam search with early_stopping=True on a LlamaForCausalLM), and against an exhaustive search where beam search
provably prunes nothing; the chapter's own `generate` and `beam_search` on its Llama-style model are checked against
transformers with the same weights (and the book's DecoderLM of Part 5, once that chapter exists). Wrong solutions
written as candidates write them are rejected, correct ones in other styles pass, bad input gets a clear report.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from functools import partial

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kindcheck import timed
from torch import nn

from utils.grader import get, run
from utils.grader.exercises.generation import decoding as D
from utils.grader.scripted import ScriptedLM
from utils.grader.stats import acceptance, within
from utils.i18n import catalog, untranslated
from utils.notebook import ROOT, load_solutions

GEN, BEAM = get("generate"), get("beam_search")
CHAPTER = ROOT / "source" / "generation" / "decoding.ipynb"


# =========================================================================== the chapter's objects

@functools.cache
def chapter_cells() -> dict:
    """The chapter's imports cell, then its model cell (SmallLlama) and its exercise cells, executed in one
    namespace: SmallLlama, pick_next_token, generate, beam_search."""
    ns = load_solutions("generation/decoding")
    nb = nbformat.read(CHAPTER, as_version=4)
    model_cell = next(c.source for c in nb.cells if c.cell_type == "code" and "class SmallLlama" in c.source)
    exec(compile(model_cell, "<decoding model cell>", "exec"), ns)
    return ns


def cheat_sheet_code() -> str:
    nb = nbformat.read(CHAPTER, as_version=4)
    sheet = next(c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Cheat sheet"))
    return re.search(r"```python\n(.*?)```", sheet, flags=re.S).group(1)


@functools.cache
def cheat_sheet() -> dict:
    ns = {"torch": torch, "pick_next_token": chapter_cells()["pick_next_token"]}
    exec(compile(cheat_sheet_code(), "<decoding cheat sheet>", "exec"), ns)
    return ns


# =========================================================================== transformers, lazily

@functools.cache
def hf():
    import transformers
    transformers.logging.set_verbosity_error()
    return transformers


def llama_like(vocab=64, d=32, layers=2, heads=4, kv_heads=2, d_ff=88, seed=0):
    """The chapter's SmallLlama with random non-default weights (norm gains too)."""
    torch.manual_seed(seed)
    model = chapter_cells()["SmallLlama"](vocab, d, layers, heads, kv_heads, d_ff).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if name.endswith("embed.weight") else p.shape[1] ** -0.5 * 1.5))
    return model


def to_transformers(model, vocab, d, layers, heads, kv_heads, d_ff):
    """A LlamaForCausalLM holding `model`'s weights (DecoderLM's parameter names -> transformers' names)."""
    T = hf()
    config = T.LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=d_ff, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-5,
                           max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=None,
                           eos_token_id=None, pad_token_id=None)
    llama = T.LlamaForCausalLM(config).eval()
    state = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight,
             "lm_head.weight": model.lm_head.weight}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = layer.attn_norm.weight
        state[p + "post_attention_layernorm.weight"] = layer.ffn_norm.weight
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[p + f"self_attn.{proj}.weight"] = getattr(layer.attn, proj).weight
        state[p + "mlp.gate_proj.weight"] = layer.ffn.w1.weight
        state[p + "mlp.down_proj.weight"] = layer.ffn.w2.weight
        state[p + "mlp.up_proj.weight"] = layer.ffn.w3.weight
    llama.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return llama


class AsDecoderLM(nn.Module):
    """transformers' model behind DecoderLM's call, model(input_ids, past_kvs) -> (logits, kvs): the oracles can
    drive it (the cache is transformers' own object, passed back as it came)."""

    def __init__(self, llama):
        super().__init__()
        self.llama = llama

    def forward(self, input_ids, past_kvs=None):
        out = self.llama(input_ids=input_ids, cache=past_kvs, use_cache=True)
        return out.logits, out.cache


SIZES = dict(vocab=64, d=32, layers=2, heads=4, kv_heads=2, d_ff=88)


@functools.cache
def pair(seed, vocab=64):
    sizes = {**SIZES, "vocab": vocab}
    model = llama_like(**sizes, seed=seed)
    return model, to_transformers(model, **sizes)


def hf_greedy(llama, ids, n, eos=None):
    """transformers' greedy generate, padded to n new columns with eos (it pads finished rows with pad_token_id,
    here eos, and stops when every row is done)."""
    out = llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=eos, pad_token_id=eos if eos is not None else 0)
    missing = ids.shape[1] + n - out.shape[1]
    return torch.cat([out, torch.full((ids.shape[0], missing), eos)], 1) if missing else out


def hf_beam(llama, ids, k, n, eos=None, length_penalty=1.0):
    """transformers' beam search with early_stopping=True: (tokens of the best hypothesis, its score)."""
    pad = eos if eos is not None else 0
    out = llama.generate(ids, attention_mask=torch.ones_like(ids), num_beams=k, max_new_tokens=n, do_sample=False,
                         early_stopping=True, length_penalty=length_penalty, eos_token_id=eos, pad_token_id=pad,
                         num_return_sequences=1, output_scores=True, return_dict_in_generate=True)
    seq = out.sequences[0].tolist()
    if eos is not None and eos in seq[ids.shape[1]:]:
        seq = seq[:seq.index(eos, ids.shape[1]) + 1]                 # the hypothesis ends at its eos
    return seq, float(out.sequences_scores[0])


# =========================================================================== the oracles against transformers

@pytest.mark.parametrize("seed", range(4))
def test_the_sampling_filter_equals_transformers_warpers(seed):
    T = hf()
    g = torch.Generator().manual_seed(seed)
    for trial in range(60):
        V = int(torch.randint(2, 40, (1,), generator=g))
        logits = torch.randn(3, V, generator=g, dtype=torch.float64) * 3
        if trial % 3 == 0:
            logits = logits.round()                                              # ties at the k-th value
        temperature = [0.5, 1.0, 1.7][trial % 3]
        top_k = [None, 1, 3, V, V + 2][trial % 5]
        top_p = [None, 0.3, 0.9, 1.0][trial % 4]
        ours = D.filtered_logits(logits, temperature, top_k, top_p)
        ref = T.TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k is not None:
            ref = T.TopKLogitsWarper(top_k, filter_value=-math.inf)(None, ref)
        if top_p is not None:
            ref = T.TopPLogitsWarper(top_p, filter_value=-math.inf)(None, ref)
        assert torch.equal(torch.isinf(ours), torch.isinf(ref)), (V, temperature, top_k, top_p)
        torch.testing.assert_close(ours[~torch.isinf(ours)], ref[~torch.isinf(ref)])


@pytest.mark.parametrize("seed,use_cache,with_eos", [(0, True, False), (1, False, False), (2, True, True),
                                                     (3, False, True)])
def test_the_generate_oracle_equals_transformers_greedy(seed, use_cache, with_eos):
    _, llama = pair(seed)
    ids = torch.randint(0, 64, (3, 5), generator=torch.Generator().manual_seed(seed))
    n = 12
    eos = None
    if with_eos:                                     # a token that row 0 produces at step 4: rows finish unevenly
        eos = int(hf_greedy(llama, ids, n)[0, 5 + 3])
    with torch.no_grad():
        ours = D.generate_spec(AsDecoderLM(llama), ids, n, eos_token_id=eos, use_cache=use_cache)
        ref = hf_greedy(llama, ids, n, eos)
    assert torch.equal(ours, ref)
    if with_eos:
        assert (ours[0, 8:] == eos).all() and not (ours[:, 5:] == eos).all()


@pytest.mark.parametrize("seed", range(3))
def test_the_chapters_generate_on_its_model_equals_transformers(seed):
    model, llama = pair(10 + seed)
    generate = chapter_cells()["generate"]
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        cached = generate(model, ids, 16)
        uncached = generate(model, ids, 16, use_cache=False)
        ref = hf_greedy(llama, ids, 16)
    assert torch.equal(cached, ref) and torch.equal(uncached, ref)


def test_the_book_decoder_lm_of_part_5_generates_as_transformers():
    if not (ROOT / "source" / "llm" / "causal_lm.ipynb").exists():
        pytest.skip("the causal_lm chapter (Part 5, DecoderLM) is not in the book yet")
    DecoderLM = load_solutions("llm/causal_lm")["DecoderLM"]
    torch.manual_seed(0)
    model = DecoderLM(64, 32, 2, 4, 2, 88).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if p.dim() == 1 else torch.randn_like(p) * 0.3)
    llama = to_transformers(model, **SIZES)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(chapter_cells()["generate"](model, ids, 12), hf_greedy(llama, ids, 12))


BEAM_CONFIGS = [(2, 8, None, 1.0), (3, 8, 5, 1.0), (4, 10, 3, 2.0), (3, 9, 7, 0.0), (2, 12, 1, 0.5), (5, 8, 2, 1.0)]


@functools.cache
def hf_beam_cases():
    """(config, model, llama, prompt, transformers' result) for each config, on a small vocabulary so that eos
    competes; eos is a token the beams meet early."""
    out = []
    for i, (k, n, eos, lp) in enumerate(BEAM_CONFIGS):
        model, llama = pair(20 + i, vocab=12)
        ids = torch.randint(0, 12, (1, 4), generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            out.append(((k, n, eos, lp), model, llama, ids, hf_beam(llama, ids, k, n, eos, lp)))
    return out


@pytest.mark.parametrize("i", range(len(BEAM_CONFIGS)))
def test_the_beam_search_oracle_equals_transformers(i):
    (k, n, eos, lp), _, llama, ids, (ref_tokens, ref_score) = hf_beam_cases()[i]
    with torch.no_grad():
        tokens, score = D.beam_search_spec(AsDecoderLM(llama), ids, k, n, eos, lp)
    assert tokens[0].tolist() == ref_tokens
    assert score == pytest.approx(ref_score, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("i", range(len(BEAM_CONFIGS)))
def test_the_chapters_beam_search_on_its_model_equals_transformers(i):
    (k, n, eos, lp), model, _, ids, (ref_tokens, ref_score) = hf_beam_cases()[i]
    with torch.no_grad():
        tokens, score = chapter_cells()["beam_search"](model, ids, k, n, eos, lp)
    assert tokens[0].tolist() == ref_tokens
    assert score == pytest.approx(ref_score, rel=1e-4, abs=1e-5)


def test_the_transformers_beam_configs_exercise_both_endings():
    """Some configs end with a finished (eos) hypothesis and some with a live beam, some stop early."""
    endings = []
    for (_, _, eos, _), _, _, _, (tokens, _) in hf_beam_cases():
        endings.append("eos" if eos is not None and tokens[-1] == eos else "live")
    assert "eos" in endings and "live" in endings
    assert any(len(tokens) - 4 < n for (_, n, _, _), *_, (tokens, _) in hf_beam_cases())


# =========================================================================== beam search: exhaustive where provable

@pytest.mark.parametrize("seed", range(12))
def test_beam_search_equals_exhaustive_search_when_nothing_is_pruned(seed):
    V, n = [(3, 3), (4, 2), (2, 4)][seed % 3]
    eos = [None, V - 1, 0][seed % 3]
    lp = [1.0, 0.0, 2.0, 0.5][seed % 4]
    model = ScriptedLM(V, seed=100 + seed, eos_token_id=eos, eos_bias=float(seed % 3))
    prompt = torch.tensor([[seed % V, (seed + 1) % V]])
    kwargs = {"eos_token_id": eos, "length_penalty": lp}
    spec = D.beam_search_spec(model, prompt, V ** n, n, **kwargs)
    exhaustive = D.exhaustive_search(model, prompt, n, **kwargs)
    assert torch.equal(spec[0], exhaustive[0]) and spec[1] == pytest.approx(exhaustive[1], abs=1e-12)


def test_fewer_beams_can_miss_the_exhaustive_optimum():
    """The exhaustive cases are not vacuous: with fewer beams the same models often return something else."""
    missed = 0
    for seed in range(30):
        model = ScriptedLM(4, seed=200 + seed, eos_token_id=3, eos_bias=0.5)
        prompt = torch.tensor([[1, 2]])
        best = D.exhaustive_search(model, prompt, 3, 3)
        missed += not torch.equal(D.beam_search_spec(model, prompt, 2, 3, 3)[0], best[0])
    assert missed >= 3


def test_the_exhaustive_cases_are_provable_and_use_the_exhaustive_oracle():
    cases = BEAM.all_cases()
    provable = [c for c in cases if "exhaustive" in c.note]
    assert len(provable) == 3
    for c in provable:
        (model, prompt, k, n), kw = c.make()
        assert k >= model.vocab_size ** n
        tokens, score = BEAM.oracle(model, prompt, k, n, **kw)
        ref_tokens, ref_score = D.exhaustive_search(model, prompt, n, **kw)
        assert torch.equal(tokens, ref_tokens) and score == ref_score


def test_the_tree_case_greedy_misses_what_two_beams_find():
    model = ScriptedLM(6, script=D.TREE_SCRIPT)
    prompt = torch.tensor([[0]])
    assert D.generate_spec(model, prompt, 2).tolist() == [[0, 1, 3]]
    tokens, score = D.beam_search_spec(model, prompt, 2, 2, length_penalty=0.0)
    assert tokens.tolist() == [[0, 2, 4]] and math.exp(score) == pytest.approx(0.36)
    greedy_p = math.exp(D.beam_search_spec(model, prompt, 1, 2, length_penalty=0.0)[1])
    assert greedy_p == pytest.approx(0.2)


def test_beam_search_spec_on_a_tree_traced_by_hand():
    """V=3, eos=2, two beams, two steps, logits that are log-probabilities. Step 1 after (0,): .5, .3, eos .2: eos
    ranks 3rd and does not finish. Step 2: (0,0,eos) = .4 ranks 1st and finishes with log(.4) / 2; the live beams
    (0,1,0) = .18 and (0,1,1) = .06 are scored log(.18) / 2 and log(.06) / 2 at the end; the finished one wins."""
    logs = lambda *p: [math.log(x) for x in p]                                   # noqa: E731
    script = {(0,): logs(.5, .3, .2), (0, 0): logs(.1, .1, .8), (0, 1): logs(.6, .2, .2)}
    model = ScriptedLM(3, eos_token_id=2, script=script)
    tokens, score = D.beam_search_spec(model, torch.tensor([[0]]), 2, 2, eos_token_id=2)
    assert tokens.tolist() == [[0, 0, 2]] and score == pytest.approx(math.log(.4) / 2)
    tokens, score = chapter_cells()["beam_search"](model, torch.tensor([[0]]), 2, 2, eos_token_id=2)
    assert tokens.tolist() == [[0, 0, 2]] and score == pytest.approx(math.log(.4) / 2)


# =========================================================================== the cases and the stated bounds

def test_the_generate_cases_cover_the_issue():
    notes = [c.note for c in GEN.all_cases()]
    text = " ".join(notes)
    for needed in ("without the cache", "batch of one", "finish at different steps", "eos_token_id=0",
                   "prompt holds eos_token_id", "max_new_tokens=0", "float64", "non-contiguous", "top_k=1"):
        assert needed in text, needed
    outs = [GEN.expected(i).parts[0][1] for i in range(len(notes))]

    def finish_steps(i):
        (_, prompt, _), kw = GEN.all_cases()[i].make()
        new = outs[i][:, prompt.shape[1]:]
        eos = kw["eos_token_id"]
        return [int((row == eos).nonzero()[0]) + 1 if (row == eos).any() else None for row in new]

    assert finish_steps(notes.index("rows that finish at different steps (the third never)")) == [2, 5, None]
    assert finish_steps(notes.index("every row finishes before max_new_tokens")) == [1, 3]
    assert finish_steps(notes.index("sixteen new tokens, eos at steps 12 and 16")) == [12, None, 16]
    i = notes.index("the prompt holds eos_token_id: only a generated eos finishes a row")
    assert finish_steps(i) == [None, 4]
    (_, prompt, _), _ = GEN.all_cases()[notes.index("a non-contiguous prompt (every other column)")].make()
    assert not prompt.is_contiguous()


def test_every_generate_case_counts_calls_and_the_greedy_sampling_cases_are_greedy():
    for i, case in enumerate(GEN.all_cases()):
        (model, prompt, n), kw = case.make()
        parts = dict(GEN.expected(i).parts)
        assert parts["model calls (one per new token, no extra forward)"] == n
        if kw.get("temperature", 0.0) > 0:
            greedy = D.generate_spec(model, prompt, n, eos_token_id=kw.get("eos_token_id"))
            assert torch.equal(parts["output"], greedy), case.note


LAW_CHECKS = ((0.5, None), (2.0, 4))                 # (temperature, top_k) of the two first-token law properties


def _law(temperature, top_k, transform=lambda z, t: z / t):
    z = torch.tensor(ScriptedLM(D.V, seed=D.LAW_SEED, spread=4.0).next_logits([5]), dtype=torch.float64)
    return torch.softmax(D.filtered_logits(transform(z, temperature), 1.0, top_k), -1).tolist()


def _passes(right, got):
    """The probability that draws from `got` pass a law check of `right` (at most that of its weakest token)."""
    return min(within(D.LAW_ROWS, q, *acceptance(D.LAW_ROWS, p, D.LAW_ALPHA)[:2]) for p, q in zip(right, got))


def test_the_law_checks_reject_a_correct_sampler_with_probability_below_1_e_6():
    """The two first-token law checks: V exact binomial tests each; their sizes add up below 1e-6."""
    total = sum(acceptance(D.LAW_ROWS, p, D.LAW_ALPHA)[2] for t, k in LAW_CHECKS for p in _law(t, k))
    assert total < 1e-6
    assert [p.name for p in GEN.properties][-2:] == ["the first sampled token follows softmax(logits / temperature)",
                                                     "the first sampled token follows the top-k softmax"]


@pytest.mark.parametrize("wrong", [lambda z, t: z, lambda z, t: z * t], ids=["ignores", "multiplies"])
def test_a_wrong_temperature_passes_the_first_law_check_with_negligible_probability(wrong):
    assert _passes(_law(0.5, None), _law(0.5, None, wrong)) < 1e-6


def test_a_sampler_that_ignores_top_k_passes_the_second_law_check_with_negligible_probability():
    assert _passes(_law(2.0, 4), _law(2.0, None)) < 1e-6


def test_every_message_of_the_declaration_has_chinese():
    mine = [(where, text) for where, text in untranslated("zh") if "generation/decoding.py" in where]
    assert not mine, mine
    for ex in (GEN, BEAM):
        for rung in ex.ladder():
            assert rung in catalog("zh")
        for p in ex.properties:
            assert p.name in catalog("zh")


# =========================================================================== correct solutions in other styles

def generate_preallocated(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                          eos_token_id=None, generator=None, use_cache=True):
    """A preallocated result filled column by column; sampling by inverse CDF in float64 with `generator`."""
    B, T = input_ids.shape
    result = torch.empty(B, T + max_new_tokens, dtype=input_ids.dtype)
    result[:, :T] = input_ids
    alive = torch.ones(B, dtype=torch.bool)
    past = None
    for t in range(T, T + max_new_tokens):
        if not use_cache:
            logits = model(result[:, :t])[0][:, -1]
        elif past is None:
            logits, past = model(result[:, :t])
            logits = logits[:, -1]
        else:
            logits, past = model(result[:, t - 1:t], past_kvs=past)
            logits = logits[:, -1]
        if temperature == 0:
            tok = logits.max(dim=-1).indices
        else:
            probs = torch.softmax(logits.double() / temperature, dim=-1)
            if top_k is not None:
                kth = probs.sort(dim=-1, descending=True).values[:, min(top_k, probs.shape[-1]) - 1:][:, :1]
                probs = torch.where(probs >= kth, probs, 0.0)
            if top_p is not None:
                probs = probs / probs.sum(-1, keepdim=True)
                s, idx = probs.sort(dim=-1, descending=True)
                s = torch.where(s.cumsum(-1) - s < top_p, s, 0.0)           # mass strictly before < p
                probs = torch.zeros_like(probs).scatter(-1, idx, s)
            cdf = (probs / probs.sum(-1, keepdim=True)).cumsum(-1)
            u = torch.rand(B, 1, generator=generator, dtype=cdf.dtype)
            tok = (cdf < u).sum(-1).clamp(max=probs.shape[-1] - 1)
        if eos_token_id is not None:
            tok = torch.where(alive, tok, eos_token_id)
            alive &= tok != eos_token_id
        result[:, t] = tok
    return result


def generate_lists(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, eos_token_id=None,
                   generator=None, use_cache=True):
    """Columns collected in a Python list, the cache kept per layer, the chapter's pick_next_token."""
    pick = chapter_cells()["pick_next_token"]
    columns, kvs = [], None
    done = [False] * input_ids.shape[0]
    for step in range(max_new_tokens):
        so_far = torch.cat([input_ids] + [c[:, None] for c in columns], dim=1)
        if use_cache and step > 0:
            out, kvs = model(columns[-1].unsqueeze(1), past_kvs=kvs)
        else:
            out, kvs = model(so_far)
        nxt = pick(out[:, -1], temperature, top_k, top_p, generator).tolist()
        if eos_token_id is not None:
            nxt = [eos_token_id if d else t for d, t in zip(done, nxt)]
            done = [d or t == eos_token_id for d, t in zip(done, nxt)]
        columns.append(torch.tensor(nxt, dtype=input_ids.dtype))
    return torch.cat([input_ids] + [c[:, None] for c in columns], dim=1)


def beam_search_heap(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Candidates as (-score, beam, token) tuples sorted in Python; finished hypotheses kept in a list."""
    beams = [(0.0, input_ids[0].tolist())]
    hyps = []
    for step in range(1, max_new_tokens + 1):
        pool = []
        for b, (s, toks) in enumerate(beams):
            lp = F.log_softmax(model(torch.tensor([toks]))[0][0, -1].double(), dim=-1).tolist()
            pool.extend((-(s + x), b, v, toks + [v]) for v, x in enumerate(lp))
        pool.sort(key=lambda c: (c[0], c[1], c[2]))
        beams = []
        for rank, (neg, _, v, toks) in enumerate(pool):
            if v == eos_token_id:
                if rank < num_beams:
                    hyps.append((-neg / step ** length_penalty, toks))
            elif len(beams) < num_beams:
                beams.append((-neg, toks))
        if len(hyps) >= num_beams:
            break
    else:
        hyps += [(s / max_new_tokens ** length_penalty, toks) for s, toks in beams]
    score, toks = max(hyps, key=lambda h: h[0])
    return torch.tensor([toks]), score


def beam_search_float32_cached(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Batched live beams with the cache reordered by index_select, scores in float32, candidates ranked with a
    stable sort."""
    T = input_ids.shape[1]
    seqs, scores, done = input_ids, torch.zeros(1), []
    logits, kvs = model(seqs)
    for step in range(1, max_new_tokens + 1):
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        V = logp.shape[-1]
        cand = (scores[:, None] + logp).flatten()
        order = torch.sort(cand, descending=True, stable=True).indices
        keep_rows, keep_tok, keep_scores = [], [], []
        for rank, idx in enumerate(order.tolist()):
            b, tok = divmod(idx, V)
            if eos_token_id is not None and tok == eos_token_id:
                if rank < num_beams:
                    done.append((cand[idx].item() / step ** length_penalty, torch.cat([seqs[b], torch.tensor([tok])])))
                continue
            keep_rows.append(b)
            keep_tok.append(tok)
            keep_scores.append(cand[idx])
            if len(keep_rows) == num_beams:
                break
        if len(done) >= num_beams:
            break
        rows = torch.tensor(keep_rows)
        seqs = torch.cat([seqs[rows], torch.tensor(keep_tok)[:, None]], dim=1)
        scores = torch.stack(keep_scores)
        if step < max_new_tokens:
            kvs = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kvs]
            logits, kvs = model(seqs[:, -1:], kvs)
    if len(done) < num_beams:
        done += [(s.item() / max_new_tokens ** length_penalty, seq) for s, seq in zip(scores, seqs)]
    best_score, best = done[0]
    for s, seq in done[1:]:
        if s > best_score:
            best_score, best = s, seq
    assert best.shape[0] > T
    return best[None], best_score


def generate_cheat_sheet(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                         eos_token_id=None, generator=None, use_cache=True):
    return cheat_sheet()["generate"](model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id,
                                     generator, use_cache)


def beam_search_cheat_sheet(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    return cheat_sheet()["beam_search"](model, input_ids, num_beams, max_new_tokens, eos_token_id, length_penalty)


@pytest.mark.parametrize("impl", [generate_preallocated, generate_lists, generate_cheat_sheet],
                         ids=lambda f: f.__name__)
def test_correct_generate_in_other_styles_passes(impl):
    report = run("generate", impl)
    assert report.passed, str(report)
    assert "the first sampled token follows softmax(logits / temperature)" in report.checks


@pytest.mark.parametrize("impl", [beam_search_heap, beam_search_float32_cached, beam_search_cheat_sheet],
                         ids=lambda f: f.__name__)
def test_correct_beam_search_in_other_styles_passes(impl):
    report = run("beam_search", impl)
    assert report.passed, str(report)


# =========================================================================== wrong solutions as candidates write them

def gen_break_at_first_eos(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                           eos_token_id=None, generator=None, use_cache=True):
    """Stops the whole batch as soon as any row produces eos."""
    ids, kvs = input_ids, None
    for _ in range(max_new_tokens):
        logits, kvs = model(ids) if kvs is None else model(ids[:, -1:], kvs)
        kvs = kvs if use_cache else None
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        if eos_token_id is not None and (nxt == eos_token_id).any():
            break
    return ids


def gen_pads_with_zero(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                       eos_token_id=None, generator=None, use_cache=True):
    """Fills finished rows with 0, a pad id, instead of eos."""
    out = D.generate_spec(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, generator,
                          use_cache)
    if eos_token_id is None:
        return out
    new = out[:, input_ids.shape[1]:]
    after = (new == eos_token_id).long().cumsum(1) - (new == eos_token_id).long() > 0
    return torch.cat([input_ids, new.masked_fill(after, 0)], 1)


def _sampling_variant(name, transform):
    """A correct loop with its draw replaced: `transform(last, temperature, top_k, top_p, step)` gives the
    probabilities drawn from (None: greedy)."""
    def generate(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, eos_token_id=None,
                 generator=None, use_cache=True):
        ids, kvs = input_ids, None
        done = torch.zeros(ids.shape[0], dtype=torch.bool)
        for step in range(max_new_tokens):
            logits, kvs = model(ids) if kvs is None else model(ids[:, -1:], kvs)
            kvs = kvs if use_cache else None
            last = logits[:, -1]
            if temperature == 0:
                nxt = last.argmax(-1)
            else:
                probs = transform(last, temperature, top_k, top_p, step)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0] if probs is not None else last.argmax(-1)
            if eos_token_id is not None:
                nxt = torch.where(done, eos_token_id, nxt)
                done |= nxt == eos_token_id
            ids = torch.cat([ids, nxt[:, None]], 1)
        return ids
    generate.__name__ = name
    return generate


# the probabilities divided by the temperature: the draw normalises them again, so the temperature does nothing
gen_probs_over_temperature = _sampling_variant("gen_probs_over_temperature",
    lambda z, t, k, p, step: torch.softmax(D.filtered_logits(z, 1.0, k, p), -1) / t)
# the logits multiplied by the temperature
gen_logits_times_temperature = _sampling_variant("gen_logits_times_temperature",
    lambda z, t, k, p, step: torch.softmax(D.filtered_logits(z * t * t, t, k, p), -1))
# the first token taken greedily from the prefill, sampling only afterwards
gen_greedy_prefill = _sampling_variant("gen_greedy_prefill",
    lambda z, t, k, p, step: None if step == 0 else torch.softmax(D.filtered_logits(z, t, k, p), -1))


# top-k forgotten when sampling
gen_ignores_top_k = _sampling_variant("gen_ignores_top_k",
                                      lambda z, t, k, p, step: torch.softmax(D.filtered_logits(z, t, None, p), -1))


def gen_global_rng(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, eos_token_id=None,
                   generator=None, use_cache=True):
    """Draws from torch's global generator: right on every greedy case, not reproducible."""
    return D.generate_spec(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, None,
                           use_cache)


def gen_stale_cache(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, eos_token_id=None,
                    generator=None, use_cache=True):
    """Keeps the prefill's cache for ever (the returned kvs are dropped)."""
    ids, first = input_ids, None
    for _ in range(max_new_tokens):
        if first is None:
            logits, first = model(ids)
        else:
            logits, _ = model(ids[:, -1:], first)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


def gen_new_tokens_only(model, input_ids, max_new_tokens, **kw):
    """Returns the generated columns without the prompt."""
    return D.generate_spec(model, input_ids, max_new_tokens, **kw)[:, input_ids.shape[1]:]


def beam_per_beam_greedy(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Extends each beam only by its own best token after the first step (num_beams greedy searches)."""
    logits, _ = model(input_ids)
    lp = torch.log_softmax(logits[0, -1].double(), -1)
    top = lp.topk(num_beams)
    beams = [(float(s), input_ids[0].tolist() + [int(t)]) for s, t in zip(top.values, top.indices)]
    for _ in range(max_new_tokens - 1):
        nxt = []
        for s, toks in beams:
            lp = torch.log_softmax(model(torch.tensor([toks]))[0][0, -1].double(), -1)
            nxt.append((s + float(lp.max()), toks + [int(lp.argmax())]))
        beams = nxt
    s, toks = max(beams, key=lambda b: b[0])
    return torch.tensor([toks]), s / max_new_tokens ** length_penalty


def beam_cache_not_reordered(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """The chapter's tensor beam search without reordering the cache rows after choosing the beams."""
    beams, sums, finished = input_ids, torch.zeros(1, dtype=torch.float64), []
    logits, kvs = model(input_ids)
    for step in range(1, max_new_tokens + 1):
        logp = torch.log_softmax(logits[:, -1].double(), dim=-1)
        V = logp.shape[-1]
        totals = (sums[:, None] + logp).flatten()
        rows, toks = [], []
        for rank, index in enumerate(torch.sort(totals, descending=True, stable=True).indices.tolist()):
            beam, token = divmod(index, V)
            if token == eos_token_id:
                if rank < num_beams:
                    finished.append((totals[index].item() / step ** length_penalty,
                                     torch.cat([beams[beam], beams.new_tensor([token])])))
            elif len(rows) < num_beams:
                rows.append(beam)
                toks.append(token)
        if len(finished) >= num_beams:
            break
        rows, toks = torch.tensor(rows), torch.tensor(toks)
        beams, sums = torch.cat([beams[rows], toks[:, None]], 1), totals[rows * V + toks]
        if step < max_new_tokens:
            logits, kvs = model(beams[:, -1:], kvs)                  # the cache still follows the old beams
    if len(finished) < num_beams:
        finished += [(s.item() / max_new_tokens ** length_penalty, b) for s, b in zip(sums, beams)]
    score, best = max(finished, key=lambda h: h[0])
    return best[None], score


def beam_ignores_finished(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Drops every eos candidate and returns the best live beam after max_new_tokens steps."""
    eos = eos_token_id
    live = [(input_ids[0].tolist(), 0.0)]
    for _ in range(max_new_tokens):
        cands = []
        for toks, total in live:
            lp = torch.log_softmax(model(torch.tensor([toks]))[0][0, -1].double(), -1).tolist()
            cands += [(total + x, toks + [v]) for v, x in enumerate(lp) if v != eos]
        cands.sort(key=lambda c: -c[0])
        live = [(toks, total) for total, toks in cands[:num_beams]]
    toks, total = live[0]
    return torch.tensor([toks]), total / max_new_tokens ** length_penalty


def beam_gnmt_penalty(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Scores with GNMT's ((5 + L) / 6) ** alpha instead of L ** alpha."""
    T = input_ids.shape[1]
    spec = partial(D.beam_search_spec, model, input_ids, num_beams, max_new_tokens, eos_token_id)
    tokens, score = spec(length_penalty)
    L = tokens.shape[1] - T
    return tokens, score * L ** length_penalty / ((5 + L) / 6) ** length_penalty


def beam_stops_at_first_finished(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Returns the first hypothesis that finishes, without waiting for num_beams of them."""
    eos = eos_token_id
    live = [(input_ids[0].tolist(), 0.0)]
    for step in range(1, max_new_tokens + 1):
        cands = []
        for toks, total in live:
            lp = torch.log_softmax(model(torch.tensor([toks]))[0][0, -1].double(), -1).tolist()
            cands += [(total + x, toks + [v]) for v, x in enumerate(lp)]
        cands.sort(key=lambda c: -c[0])
        for total, toks in cands[:num_beams]:
            if eos is not None and toks[-1] == eos:
                return torch.tensor([toks]), total / step ** length_penalty
        live = [(toks, total) for total, toks in cands if toks[-1] != eos][:num_beams]
    toks, total = live[0]
    return torch.tensor([toks]), total / max_new_tokens ** length_penalty


def beam_returns_the_sum(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Ranks by the normalised score but returns the raw sum of log-probabilities as the score."""
    tokens, score = D.beam_search_spec(model, input_ids, num_beams, max_new_tokens, eos_token_id, length_penalty)
    return tokens, score * (tokens.shape[1] - input_ids.shape[1]) ** length_penalty


LAW = "the first sampled token follows softmax(logits / temperature)"
WRONG = [  # (exercise, wrong solution, what the report must show: kind, and a word of the failing case or property)
    ("generate", gen_break_at_first_eos, "wrong-shape", "finish"),
    ("generate", gen_pads_with_zero, "wrong-value", "finish"),
    ("generate", gen_probs_over_temperature, "property", LAW),
    ("generate", gen_logits_times_temperature, "property", LAW),
    ("generate", gen_greedy_prefill, "property", LAW),
    ("generate", gen_ignores_top_k, "wrong-value", "top_k=1 is greedy"),
    ("generate", gen_global_rng, "property", "the same generator seed gives the same tokens"),
    ("generate", gen_stale_cache, "wrong-value", "greedy with the cache"),
    ("generate", gen_new_tokens_only, "wrong-shape", "greedy with the cache"),
    ("beam_search", beam_per_beam_greedy, "wrong-shape", "eos"),
    ("beam_search", beam_cache_not_reordered, "exception", "no eos"),
    ("beam_search", beam_ignores_finished, "wrong-shape", "eos"),
    ("beam_search", beam_gnmt_penalty, "wrong-value", "no eos"),
    ("beam_search", beam_stops_at_first_finished, "wrong-shape", "eos"),
    ("beam_search", beam_returns_the_sum, "wrong-value", "no eos"),
]


@pytest.mark.parametrize("name,impl,kind,where", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_solutions_are_rejected_where_they_go_wrong(name, impl, kind, where):
    """Rejected, on the case or property that shows the bug, and never named as a registered mistake it is not."""
    report = run(name, impl)
    assert not report.passed, "passes"
    assert report.kind == kind and where in report.failure.note, str(report)
    assert report.failure.mistake is None, str(report)
    if impl is beam_cache_not_reordered:                        # the scripted model says what is wrong
        assert "past_kvs" in report.failure.problem.message


# =========================================================================== bad input

def _quick(ex, **changes):
    return dataclasses.replace(ex, **{"timeout": 0.5, **changes})


def test_a_raising_generate_shows_the_readers_line():
    def generate(model, input_ids, max_new_tokens, **kw):
        logits, _ = model(input_ids)
        return logits[:, -1].argmax(-1)[7]

    report = run("generate", generate)
    assert report.kind == "exception" and "IndexError" in report.failure.problem.message
    assert "argmax(-1)[7]" in report.failure.frame


@pytest.mark.parametrize("ret,kind", [(None, "returned-none"), (np.zeros((1, 11), dtype=np.int64), "returned-numpy"),
                                      ([[3, 1, 4]], "wrong-type")])
def test_wrong_return_types_are_named(ret, kind):
    assert run("generate", lambda *a, **k: ret).kind == kind


def test_tokens_of_the_wrong_dtype_are_named():
    def generate(model, input_ids, max_new_tokens, **kw):
        return D.generate_spec(model, input_ids, max_new_tokens, **kw).float()

    report = run("generate", generate)
    assert report.kind == "wrong-dtype" and "torch.int64" in report.failure.problem.message


def test_a_nan_score_is_reported():
    report = run("beam_search", lambda *a, **k: (D.beam_search_spec(*a, **k)[0], float("nan")))
    assert report.kind == "wrong-value" and "is nan" in report.failure.problem.message


def test_changing_the_prompt_in_place_is_named():
    def generate(model, input_ids, max_new_tokens, **kw):
        out = D.generate_spec(model, input_ids, max_new_tokens, **kw)
        input_ids[:, 0] = 0
        return out

    assert run("generate", generate).kind == "mutated-input"


def test_a_forbidden_call_is_named():
    from utils.grader.core import evaluate
    report = evaluate(_quick(BEAM, forbidden=("torch.topk",)), partial(D.beam_search_spec, flaw="topk_ties"))
    assert report.kind == "forbidden-call" and "torch.topk" in report.failure.problem.message


def test_an_endless_loop_is_stopped():
    from utils.grader.core import evaluate

    def generate(model, input_ids, max_new_tokens, **kw):
        while True:
            model(input_ids)

    start = time.perf_counter()
    report = evaluate(_quick(GEN), generate)
    assert report.kind == "timeout" and time.perf_counter() - start < 5


def test_a_beam_search_returning_one_value_is_told_what_was_expected():
    report = run("beam_search", lambda *a, **k: D.beam_search_spec(*a, **k)[0])
    assert report.failure.problem.message == "output is a torch.Tensor; expected a tuple of 2 items"


def test_not_attempted_and_not_a_function():
    def generate(model, input_ids, max_new_tokens, **kw):
        raise NotImplementedError

    assert run("generate", generate).status == "not attempted"
    assert run("beam_search", "beam_search").kind == "wrong-type"


# =========================================================================== speed

@pytest.mark.parametrize("name", ["generate", "beam_search"])
def test_a_check_of_the_chapters_solution_takes_under_a_second_of_cpu(name):
    """CPU seconds of this process on one thread (the scripted model's tensors are tiny; more threads only spin).
    The first check of a fresh kernel is held to 1 s by utils/execute.py, which runs every notebook in CI."""
    impl = chapter_cells()[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timed(get(name), impl)
        report, seconds = timed(get(name), impl)
    finally:
        torch.set_num_threads(threads)
    assert report.passed and seconds < 1.0, seconds
