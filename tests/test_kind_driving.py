"""The model-driving kind (utils/grader/kinds/driving.py) and its scripted models (utils/grader/scripted.py).

The declarations of the decoding chapter (CURRICULUM.md Part 7): `generate` and `beam_search`, each with a
plain-loop oracle and its registered mistakes, each mistake the oracle's loop with one piece changed (`flaw=`).
The tests prove that correct solutions in several styles pass, that plausible wrong solutions are rejected
without a false diagnosis, and that the scripted model's cache, call log and guards work as documented. What
every exercise gets (the solution passes, each registered mistake is named: tests/test_exercises.py) and the
chapter's bad-input reports (tests/test_decoding.py) are tested there, not again here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from kindcheck import timed
from test_decoding import (
    beam_per_beam_greedy,
    beam_search_float32_cached,
    beam_search_heap,
    gen_global_rng,
    generate_preallocated,
)

from utils.grader.compare import same
from utils.grader.core import evaluate
from utils.grader.exercises.generation.decoding import (
    BEOS,
    EOS,
    V,
    _pick,
    beam_search_spec,
    generate_spec,
)
from utils.grader.kinds.driving import allowed_tokens
from utils.grader.registry import get
from utils.grader.scripted import ScriptedLM

# =========================================================================== the declarations under test

# The chapter's own declarations (utils/grader/exercises/generation/decoding.py): the kind is tested on what
# readers are graded with.
GENERATE, BEAM_SEARCH = get("generate"), get("beam_search")


# =========================================================================== correct solutions in other styles

def generate_loop(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, eos_token_id=None,
                  generator=None, use_cache=True):
    """A reader's version: prefill, then a loop that feeds one token; finished rows tracked with a mask."""
    B = input_ids.shape[0]
    out = input_ids
    finished = torch.zeros(B, dtype=torch.bool)
    kvs = None
    for _ in range(max_new_tokens):
        if use_cache:
            logits, kvs = model(out if kvs is None else out[:, -1:], kvs)
        else:
            logits, _ = model(out)
        logits = logits[:, -1, :]
        if temperature == 0.0:
            next_token = torch.argmax(logits, dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, top_k)
                logits[logits < v[:, [-1]]] = -float("inf")
            if top_p is not None:
                sorted_logits, sorted_idx = torch.sort(logits, descending=True)
                cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
                remove = cum - F.softmax(sorted_logits, dim=-1) >= top_p   # mass strictly before >= p
                remove[:, 0] = False
                logits = logits.scatter(1, sorted_idx, sorted_logits.masked_fill(remove, -float("inf")))
            probs = F.softmax(logits, dim=-1)
            next_token = torch.multinomial(probs, num_samples=1, generator=generator)
        if eos_token_id is not None:
            next_token[finished] = eos_token_id
            finished |= next_token.squeeze(1) == eos_token_id
        out = torch.cat((out, next_token), dim=1)
    return out


# =========================================================================== plausible wrong solutions (not registered)

def gen_stop_at_any_eos(model, input_ids, max_new_tokens, eos_token_id=None, **kw):
    ids, past = input_ids, None
    for _ in range(max_new_tokens):
        logits, past = model(ids if past is None else ids[:, -1:], past)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        if eos_token_id is not None and (nxt == eos_token_id).any():
            break
    return ids


def gen_truthy_eos(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, eos_token_id=None,
                   generator=None, use_cache=True):
    """`if eos_token_id:` treats eos_token_id=0 as no eos."""
    ids, past = input_ids, None
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        if use_cache:
            logits, past = model(ids if past is None else ids[:, -1:], past)
        else:
            logits, _ = model(ids)
        nxt = _pick(logits[:, -1], temperature, top_k, top_p, generator)
        if eos_token_id:
            nxt = torch.where(done, eos_token_id, nxt)
            done |= nxt == eos_token_id
        ids = torch.cat([ids, nxt[:, None]], 1)
    return ids


def gen_one_short(model, input_ids, max_new_tokens, **kw):
    return generate_spec(model, input_ids, max_new_tokens - 1, **kw) if max_new_tokens else input_ids


def gen_concatenates_caches(model, input_ids, max_new_tokens, use_cache=True, **kw):
    """Believes the model returns only the new positions' kvs, and appends them to its own cache."""
    ids, cache = input_ids, None
    for _ in range(max_new_tokens):
        logits, new = model(ids if cache is None else ids[:, -1:], cache)
        cache = new if cache is None else [(torch.cat([k0, k1], 2), torch.cat([v0, v1], 2))
                                           for (k0, v0), (k1, v1) in zip(cache, new)]
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


def gen_stale_cache(model, input_ids, max_new_tokens, use_cache=True, eos_token_id=None, **kw):
    """Keeps the first call's cache for ever."""
    ids, first = input_ids, None
    for _ in range(max_new_tokens):
        if first is None:
            logits, first = model(ids)
        else:
            logits, _ = model(ids[:, -1:], first)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


def gen_ignores_top_k(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                      eos_token_id=None, generator=None, use_cache=True):
    """Forgets top-k when sampling, except for top_k=1 (handled as greedy)."""
    if top_k == 1:
        temperature = 0.0
    return generate_spec(model, input_ids, max_new_tokens, temperature, None, top_p, eos_token_id, generator,
                         use_cache)


def beam_score_as_tensor(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    tokens, score = beam_search_spec(model, input_ids, num_beams, max_new_tokens, eos_token_id, length_penalty)
    return tokens, torch.tensor(score)


def beam_probabilities_product(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Forgets the length penalty altogether (scores finished and live hypotheses by their raw sums)."""
    return beam_search_spec(model, input_ids, num_beams, max_new_tokens, eos_token_id, 0.0)


# =========================================================================== tests: verdicts

@pytest.mark.parametrize("impl", [generate_loop, generate_preallocated], ids=lambda f: f.__name__)
def test_correct_generate_in_other_styles_passes(impl):
    report = evaluate(GENERATE, impl)
    assert report.passed, str(report)
    assert "the same generator seed gives the same tokens" in report.checks


@pytest.mark.parametrize("impl", [beam_search_float32_cached, beam_search_heap], ids=lambda f: f.__name__)
def test_correct_beam_search_in_other_styles_passes(impl):
    report = evaluate(BEAM_SEARCH, impl)
    assert report.passed, str(report)


WRONG = [(GENERATE, f) for f in (gen_stop_at_any_eos, gen_one_short, gen_concatenates_caches,
                                 gen_stale_cache, gen_global_rng, gen_ignores_top_k)] + \
        [(BEAM_SEARCH, f) for f in (beam_per_beam_greedy, beam_score_as_tensor, beam_probabilities_product)]


@pytest.mark.parametrize("ex,impl", WRONG, ids=[f.__name__ for _, f in WRONG])
def test_plausible_wrong_solutions_are_rejected_without_a_false_diagnosis(ex, impl):
    report = evaluate(ex, impl)
    assert not report.passed, f"{impl.__name__} passes"
    assert report.failure.mistake is None, str(report)


def test_a_truthiness_test_of_eos_is_diagnosed_as_the_chapter_registered_it():
    """Written here first as an unregistered wrong solution; the chapter registered it since: a candidate's own
    spelling of the mistake gets its diagnosis."""
    report = evaluate(GENERATE, gen_truthy_eos)
    assert not report.passed and report.failure.mistake == "`if eos_token_id:` skips eos 0", str(report)


def test_ignoring_the_cache_is_named_by_the_call_that_shows_it():
    report = evaluate(GENERATE, partial(generate_spec, flaw="ignore_cache"))
    msg = report.failure.problem.message
    assert report.failure.case == 0 and "model call 2" in msg
    assert "model call 2 is 6 tokens without a cache; expected 1 token with a cache of 5" in msg


def test_an_extra_forward_is_named_by_the_count():
    report = evaluate(GENERATE, partial(generate_spec, flaw="extra_forward"))
    assert "model calls (one per new token, no extra forward) is 7; expected 6" in report.failure.problem.message


def test_concatenating_the_cache_gets_the_models_message():
    report = evaluate(GENERATE, gen_concatenates_caches)
    assert report.kind == "exception"
    assert "not a cache this model returned" in report.failure.problem.message
    assert "in gen_concatenates_caches" in report.failure.frame


def test_a_one_dimensional_new_token_gets_the_models_message():
    report = evaluate(GENERATE, partial(generate_spec, flaw="token_without_time_axis"))
    assert "next_token[:, None]" in report.failure.problem.message


def test_a_global_rng_sampler_fails_the_reproducibility_property():
    report = evaluate(GENERATE, gen_global_rng)
    assert report.failure.note == "the same generator seed gives the same tokens"
    assert "global generator" in report.failure.problem.message


def test_a_sampler_that_ignores_top_k_fails_the_top_k_property():
    report = evaluate(GENERATE, gen_ignores_top_k)
    assert report.kind == "property" and "top_k=3" in report.failure.problem.message


def test_topk_tie_breaking_fails_on_the_designed_tie_only():
    report = evaluate(BEAM_SEARCH, partial(beam_search_spec, flaw="topk_ties"))
    assert "designed ties" in report.failure.note
    untied = [c for c in BEAM_SEARCH.all_cases() if "tie" not in c.note]
    assert len(untied) == len(BEAM_SEARCH.all_cases()) - 2
    flawed = partial(beam_search_spec, flaw="topk_ties")
    report = evaluate(dataclasses.replace(BEAM_SEARCH, cases=lambda: untied), flawed)
    assert report.passed, str(report)


# =========================================================================== tests: bad input

def _quick(ex, **changes):
    return dataclasses.replace(ex, **{"timeout": 0.5, **changes})


def test_float_tokens_are_refused_by_the_model_with_a_clear_message():
    def generate(model, input_ids, max_new_tokens, **kw):
        ids = input_ids.float()
        for _ in range(max_new_tokens):
            logits, _ = model(ids)
            ids = torch.cat([ids, logits[:, -1].softmax(-1).max(-1, keepdim=True).values], 1)
        return ids.long()

    report = evaluate(GENERATE, generate)
    assert report.kind == "exception"
    msg = report.failure.problem.message
    assert "integer token ids" in msg and "got torch.float32" in msg


def test_an_unknown_keyword_is_refused_by_the_model():
    report = evaluate(GENERATE, lambda model, ids, n, **kw: model(ids, past_key_values=None))
    assert "has no argument 'past_key_values'" in report.failure.problem.message


def _verdict(report):
    f = report.failure
    return (report.status, None if f is None else (f.case, f.problem.kind, f.problem.message, f.mistake))


@pytest.mark.parametrize("ex,impl", [(GENERATE, partial(generate_spec, flaw="refeed")), (GENERATE, generate_loop),
                                     (BEAM_SEARCH, partial(beam_search_spec, flaw="no_eos"))])
def test_verdicts_are_identical_when_run_twice(ex, impl):
    assert _verdict(evaluate(ex, impl)) == _verdict(evaluate(ex, impl))


@pytest.mark.parametrize("ex,impl", [(GENERATE, generate_loop), (BEAM_SEARCH, beam_search_float32_cached)])
def test_a_check_finishes_within_a_second(ex, impl):
    evaluate(ex, impl)
    report, seconds = timed(ex, impl)
    assert report.passed and seconds < 1.0


# =========================================================================== tests: the scripted model

def test_cached_and_uncached_calls_give_the_same_logits_and_are_logged():
    m = ScriptedLM(V, seed=3)
    ids = torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])
    full, kvs = m(ids)
    head, kv = m(ids[:, :3])
    tail, kv2 = m(ids[:, 3:], kv)
    assert torch.equal(torch.cat([head, tail], 1), full)
    assert len(kvs) == 2 and kvs[0][0].shape == (2, 2, 5, 3)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(kvs, kv2))
    assert [repr(c) for c in m.calls] == ["5 tokens without a cache", "3 tokens without a cache",
                                          "2 tokens with a cache of 3"]
    assert full[0, -1].tolist() == pytest.approx(m.next_logits([1, 2, 3, 4, 5]))


def test_the_cache_rows_can_be_reordered_as_beam_search_does():
    m = ScriptedLM(V, seed=3)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    _, kvs = m(ids)
    rows = torch.tensor([1, 1, 0])
    logits, _ = m(torch.tensor([[7], [8], [9]]), [(k[rows], v[rows]) for k, v in kvs])
    assert logits[1, 0].tolist() == pytest.approx(m.next_logits([4, 5, 6, 8]))


@pytest.mark.parametrize("ids,past,words", [
    ([[1, 2]], None, "must be a torch.Tensor"),
    (torch.tensor([1, 2]), None, "next_token[:, None]"),
    (torch.tensor([[1.0, 2.0]]), None, "integer token ids"),
    (torch.tensor([[1, 11]]), None, "outside the vocabulary"),
    (torch.zeros(1, 0, dtype=torch.long), None, "no token"),
    (torch.tensor([[1]]), "tensor", "a list with one (k, v) per layer"),
    (torch.tensor([[1], [2]]), "one row", "for input_ids with 2 row(s)"),
    (torch.tensor([[1]]), "doubled", "not a cache this model returned"),
])
def test_misuse_gets_a_clear_message(ids, past, words):
    m = ScriptedLM(V)
    _, kvs = m(torch.tensor([[3, 4]]))
    past = {None: None, "tensor": kvs[0][0], "one row": kvs,
            "doubled": [(torch.cat([k, k], 2), torch.cat([v, v], 2)) for k, v in kvs]}[past]
    with pytest.raises((TypeError, ValueError)) as err:
        m(ids, past)
    assert words in str(err.value)


def test_eos_placements_follow_the_declaration():
    m = ScriptedLM(V, seed=3, eos_token_id=EOS, eos_bias=-8.0, eos_after={(4, 1): 2})
    assert max(range(V), key=m.next_logits([4, 1, 0]).__getitem__) == EOS
    assert max(range(V), key=m.next_logits([4, 1, 7]).__getitem__) == EOS
    assert max(range(V), key=m.next_logits([4, 1]).__getitem__) != EOS
    assert max(range(V), key=m.next_logits([4, 1, 0, 5]).__getitem__) != EOS


def test_the_generate_cases_cover_what_they_claim():
    outs = [GENERATE.expected(i) for i in range(len(GENERATE.all_cases()))]
    cases = [c.make() for c in GENERATE.all_cases()]
    notes = [c.note for c in GENERATE.all_cases()]

    def finish_steps(i):
        (_, prompt, n), kw = cases[i]
        new = outs[i].parts[0][1][:, prompt.shape[1]:]
        eos = kw["eos_token_id"]
        return [int((row == eos).nonzero()[0]) + 1 if (row == eos).any() else None for row in new]

    assert finish_steps(notes.index("rows that finish at different steps (the third never)")) == [2, 5, None]
    assert finish_steps(notes.index("every row finishes before max_new_tokens")) == [1, 3]
    assert finish_steps(notes.index("eos_token_id=0"))[0] == 3
    assert any(not kw.get("use_cache", True) for _, kw in cases)
    # the sampling cases give the greedy tokens
    for i in (notes.index("temperature 0.8 with top_k=1 is greedy"),
              notes.index("float64 model, temperature 1.5 with top_p=0.001 is greedy")):
        (m, prompt, n), kw = cases[i]
        greedy = generate_spec(m, prompt, n, eos_token_id=kw.get("eos_token_id"))
        assert torch.equal(outs[i].parts[0][1], greedy)


def test_allowed_tokens_follow_top_k_and_top_p():
    logits = [2.0, 1.0, 0.0, -1.0, 0.5]
    assert allowed_tokens(logits, 1.0, 2, None)[0] == {0, 1}
    p = torch.tensor(logits).softmax(-1)             # 0.56, 0.21, 0.08, 0.03, 0.13 (rounded)
    assert allowed_tokens(logits, 1.0, None, float(p[0]) - 0.01)[0] == {0}
    assert allowed_tokens(logits, 1.0, None, float(p[0]) + 0.01)[0] == {0, 1}
    assert allowed_tokens(logits, 1.0, None, 1.0)[0] == {0, 1, 2, 3, 4}


# =========================================================================== tests: the beam search oracle

def test_the_beam_cases_exercise_every_rule():
    """Each rule of the contract decides the result of some case: finished hypotheses win some cases and live
    beams others, some search stops early, and eos candidates outside the num_beams best occur."""
    winners, early = [], []
    for case in BEAM_SEARCH.all_cases():
        (model, prompt, num_beams, n), kw = case.make()
        tokens, _ = beam_search_spec(model, prompt, num_beams, n, **kw)
        winners.append("finished" if kw.get("eos_token_id") is not None and tokens[0, -1] == BEOS else "live")
        early.append(tokens.shape[1] - prompt.shape[1] < n)
    assert "finished" in winners and "live" in winners and any(early)


def _logs(*p):
    return [math.log(x) for x in p]


def test_beam_search_spec_on_a_tree_traced_by_hand():
    """V=3, eos=2, num_beams=2, two steps; the logits are log-probabilities, so scores are sums of logs.

    step 1 after (0,): 0 -> .5, 1 -> .3, eos -> .2: eos ranks 3rd, outside the 2 best, so it does not finish;
    live (0,0) and (0,1). step 2: (0,0,eos) = .4 ranks 1st and finishes with log(.4) / 2; (0,1,0) = .18 and
    (0,1,1) = .06 are live; (0,1,eos) = .06 ranks 4th. Fewer than 2 finished after max_new_tokens, so the live
    beams are scored log(.18) / 2 and log(.06) / 2, and the finished hypothesis wins.
    """
    script = {(0,): _logs(.5, .3, .2), (0, 0): _logs(.1, .1, .8), (0, 1): _logs(.6, .2, .2)}
    model = ScriptedLM(3, eos_token_id=2, script=script)
    tokens, score = beam_search_spec(model, torch.tensor([[0]]), 2, 2, eos_token_id=2)
    assert tokens.tolist() == [[0, 0, 2]] and score == pytest.approx(math.log(.4) / 2, rel=1e-6)
    tokens, score = beam_search_spec(model, torch.tensor([[0]]), 2, 2, eos_token_id=2, length_penalty=0.0)
    assert tokens.tolist() == [[0, 0, 2]] and score == pytest.approx(math.log(.4), rel=1e-6)
    # without eos_token_id, token 2 is ordinary: the same path wins as a live beam
    tokens, score = beam_search_spec(model, torch.tensor([[0]]), 2, 2)
    assert tokens.tolist() == [[0, 0, 2]] and score == pytest.approx(math.log(.4) / 2, rel=1e-6)
    # num_beams=1: one finished hypothesis ends the search at step 2, although max_new_tokens is 5
    tokens, score = beam_search_spec(model, torch.tensor([[0]]), 1, 5, eos_token_id=2)
    assert tokens.tolist() == [[0, 0, 2]] and score == pytest.approx(math.log(.4) / 2, rel=1e-6)
    assert len(model.calls) == 3 + 3 + 3 + 2      # one call per live beam per step, in the four searches


def test_a_token_tied_with_eos_ranks_first():
    """After (0,): 0 -> .6, and 1 and eos tie at .2: token 1 is earlier, so it takes the 2nd live slot and eos
    (3rd) does not finish. Step 2, after (0,0) -> .4 / .3 / .3: (0,0,0) = .24, then (0,0,1) and (0,0,eos) tie at
    .18: again the token goes first, eos is 3rd. Nothing finishes; the best live beam (0,0,0) wins, log(.24) / 2.
    Breaking the ties the other way finishes (0,eos) and (0,0,eos) and returns (0,0,eos) with log(.18) / 2."""
    script = {(0,): _logs(.6, .2, .2), (0, 0): _logs(.4, .3, .3), (0, 1): _logs(.4, .3, .3)}
    model = ScriptedLM(3, eos_token_id=2, script=script)
    assert model.next_logits((0,))[1] == model.next_logits((0,))[2]
    tokens, score = beam_search_spec(model, torch.tensor([[0]]), 2, 2, eos_token_id=2)
    assert tokens.tolist() == [[0, 0, 0]] and score == pytest.approx(math.log(.24) / 2, rel=1e-6)


@pytest.mark.parametrize("ex", [GENERATE, BEAM_SEARCH], ids=lambda e: e.name)
def test_the_references_outcomes_are_deterministic(ex):
    first = [ex.outcome(ex.oracle, c, None) for c in ex.all_cases()]
    again = [ex.outcome(ex.oracle, c, None) for c in ex.all_cases()]
    for a, b in zip(first, again):
        assert a.error is None and same([v for _, v in a.parts], [v for _, v in b.parts], rtol=0, atol=0)


def test_the_first_check_in_a_fresh_process_finishes_within_a_second():
    code = ("import sys, time; sys.path[:0] = ['tests', '.']; import test_kind_driving as T; "
            "from utils.grader.core import evaluate; t = time.process_time(); "
            "r = evaluate(T.GENERATE, T.generate_loop); print(r.passed, time.process_time() - t)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    passed, seconds = out.stdout.split()[-2:]
    assert passed == "True" and float(seconds) < 1.0, out.stdout + out.stderr
