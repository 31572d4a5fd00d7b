"""Part 7, generation: the generation loop with a KV cache, and beam search (chapter generation/decoding).

Both exercises drive a `ScriptedLM` (utils/grader/scripted.py), a stand-in for DecoderLM whose logits are a
seeded hash of the prefix, whose cache encodes the prefix (a cache that is re-fed, stale or concatenated twice
is noticed) and which logs every call. Tokens are therefore exact, and for `generate` the model's calls are part
of the outcome: one per new token; with the cache the whole prompt first, then one token on top of a cache of
every earlier position.

generate: the oracle is the contract as a plain loop. A sampled token depends on how the reader draws (any way
of drawing from `generator` is accepted), so the cases sample only where the draw is forced (top_k=1, a tiny
top_p); sampling itself is checked by properties: the same seed gives the same tokens; cached and uncached
sampling agree; every token lies inside the top-k / top-p set; the first new token of many identical rows
follows softmax(logits / temperature) after top-k (an exact binomial test per token, sized with
`stats.acceptance` so that a correct solution fails the two law checks with probability below 1e-6 in all).

beam_search: where nothing can be pruned (num_beams >= V ** max_new_tokens: every candidate of every step ranks
among the num_beams best, and fewer than num_beams hypotheses can ever finish, so the search never stops
early), beam search must return the best of all hypotheses, and the oracle is an exhaustive search over them;
elsewhere it is CURRICULUM's rule as a plain loop over Python lists (transformers' rule with
early_stopping=True, checked against transformers in tests/test_decoding.py).

Each registered mistake is the oracle's loop with the candidate's wrong line in place of the right one (`flaw=`).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from ....i18n import msg
from ...core import Case, Mistake, Property
from ...kinds import DrivingExercise, reproducible, samples_within
from ...registry import register
from ...scripted import ScriptedLM
from ...stats import acceptance

V, EOS = 11, 10                   # generate: vocabulary and eos of the scripted model
BV, BEOS = 6, 5                   # beam_search: a smaller vocabulary, so that beams compete
LAW_ROWS = 600                    # rows of the first-token law checks
LAW_ALPHA = 1e-6 / (2 * V)        # per token and check: two checks of V binomial tests each, below 1e-6 in all
LAW_SEED = 57                     # a scripted model whose first-token law is peaked: temperature shows clearly


# =========================================================================== generate: the oracle

def filtered_logits(z: torch.Tensor, temperature: float, top_k=None, top_p=None) -> torch.Tensor:
    """Temperature, then top-k (ties with the k-th value survive), then top-p (a token goes when it and every
    less likely token hold at most 1 - p; the most likely always stays): transformers' warpers, in their order."""
    z = z / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, -torch.inf)
    if top_p is not None:
        probs, order = torch.sort(torch.softmax(z, dim=-1), dim=-1)              # ascending
        drop = torch.cumsum(probs, dim=-1) <= 1 - top_p
        drop[..., -1] = False
        z = z.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
    return z


def _pick(last, temperature, top_k, top_p, generator):
    """Greedy when temperature == 0; otherwise one draw from the filtered softmax with `generator`."""
    if temperature == 0:
        return torch.argmax(last, dim=-1)
    probs = torch.softmax(filtered_logits(last, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def generate_spec(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, eos_token_id=None,
                  generator=None, use_cache=True, *, flaw=None):
    """The contract as a plain loop; `flaw` swaps in one candidate's wrong line."""
    ids, past = input_ids, None
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    if flaw == "prompt_eos_finishes" and eos_token_id is not None:
        done = (input_ids == eos_token_id).any(dim=1)                # finished "because the prompt has an eos"
    if flaw == "prompt_one_by_one" and use_cache:
        for t in range(ids.shape[1] - 1):                             # the prompt fed one token at a time
            _, past = model(ids[:, t:t + 1], past)
    steps = max_new_tokens - ids.shape[1] if flaw == "total_length" else max_new_tokens
    for _ in range(max(steps, 0)):
        if flaw == "stop_when_all_done" and eos_token_id is not None and done.all():
            break
        if flaw == "ignore_cache" or not (use_cache or flaw == "always_cache"):
            logits, _ = model(ids)
        elif flaw == "refeed":
            logits, past = model(ids, past)                           # the whole sequence on top of the cache
        else:
            new = ids if past is None else ids[:, -1:]
            logits, past = model(new if flaw != "token_without_time_axis" or past is None else new[:, 0], past)
        last = logits[:, 0 if flaw == "first_position" else -1]
        if flaw == "divide_by_zero_temperature":
            last = last / temperature
        nxt = _pick(last, temperature, top_k, top_p, generator)
        has_eos = bool(eos_token_id) if flaw == "truthy_eos" else eos_token_id is not None
        if has_eos:
            if flaw != "no_eos_continuation":
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
            done = done | (nxt == eos_token_id)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    if flaw == "extra_forward":
        model(ids[:, -1:], past) if past is not None else model(ids)
    return ids


# =========================================================================== generate: cases

def _gen(rows, n, seed, eos=None, eos_after=None, dtype=torch.float32, gen_seed=None, stride=1, **kwargs):
    """A scripted model and a prompt; `stride` 2 takes every other column of a wider tensor (non-contiguous)."""
    model = ScriptedLM(V, seed=seed, eos_token_id=eos, eos_bias=-8.0, eos_after=eos_after, dtype=dtype)
    prompt = torch.tensor(rows)
    if stride > 1:
        wide = torch.zeros(prompt.shape[0], prompt.shape[1] * stride, dtype=prompt.dtype)
        wide[:, ::stride] = prompt
        prompt = wide[:, ::stride]
    if eos is not None:
        kwargs["eos_token_id"] = eos
    if gen_seed is not None:
        kwargs["generator"] = torch.Generator().manual_seed(gen_seed)
    return (model, prompt, n), kwargs


P3 = [[4, 1, 7, 2], [9, 0, 3, 3], [5, 5, 8, 1]]
P2 = [[2, 6, 1, 1, 9], [8, 3, 0, 7, 4]]
WITH_EOS = [[4, EOS, 7], [3, 2, 6]]


def generate_cases():
    return [
        Case(partial(_gen, [[3, 1, 4, 1, 5]], 6, seed=1), "greedy with the cache, batch of one"),
        Case(partial(_gen, [[2, 7, 1], [8, 2, 8]], 5, seed=2, use_cache=False), "greedy without the cache"),
        Case(partial(_gen, P3, 7, seed=3, eos=EOS, eos_after={tuple(P3[0]): 2, tuple(P3[1]): 5}),
             "rows that finish at different steps (the third never)"),
        Case(partial(_gen, P2, 7, seed=4, eos=EOS, eos_after={tuple(P2[0]): 1, tuple(P2[1]): 3}),
             "every row finishes before max_new_tokens"),
        Case(partial(_gen, P3[:2], 5, seed=5, eos=EOS, eos_after={tuple(P3[0]): 2}, use_cache=False),
             "eos without the cache"),
        Case(partial(_gen, [[6], [0]], 5, seed=6), "a one-token prompt"),
        Case(partial(_gen, [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]], 1, seed=7), "a single new token"),
        Case(partial(_gen, [[3, 9, 4], [7, 7, 1]], 6, seed=8, eos=0, eos_after={(3, 9, 4): 3}), "eos_token_id=0"),
        Case(partial(_gen, WITH_EOS, 6, seed=15, eos=EOS, eos_after={tuple(WITH_EOS[1]): 4}),
             "the prompt holds eos_token_id: only a generated eos finishes a row"),
        Case(partial(_gen, [[5, 2, 8]], 0, seed=9), "max_new_tokens=0"),
        Case(partial(_gen, P2, 5, seed=10, temperature=0.8, top_k=1, gen_seed=0),
             "temperature 0.8 with top_k=1 is greedy"),
        Case(partial(_gen, P3, 4, seed=11, dtype=torch.float64, temperature=1.5, top_p=1e-3, gen_seed=1),
             "float64 model, temperature 1.5 with top_p=0.001 is greedy"),
        Case(partial(_gen, P3, 6, seed=16, eos=EOS, eos_after={tuple(P3[2]): 3}, temperature=1.0, top_k=1,
                     gen_seed=2), "sampling with top_k=1 and eos"),
        Case(partial(_gen, [[2, 4, 6], [1, 3, 5]], 3, seed=12, temperature=0.0, top_k=3, top_p=0.5),
             "temperature 0 with top_k and top_p given is still greedy"),
        Case(partial(_gen, P2, 5, seed=13, stride=2), "a non-contiguous prompt (every other column)"),
        Case(partial(_gen, [[7, 3], [2, 2], [9, 5]], 16, seed=14, eos=EOS,
                     eos_after={(7, 3): 12, (9, 5): 16}), "sixteen new tokens, eos at steps 12 and 16"),
    ]


# =========================================================================== generate: properties of sampling

def _sampling(seed, top_k=None, top_p=None, temperature=1.0):
    model = ScriptedLM(V, seed=12, spread=3.0)
    kwargs = {"temperature": temperature, "generator": torch.Generator().manual_seed(seed)}
    if top_k is not None:
        kwargs["top_k"] = top_k
    if top_p is not None:
        kwargs["top_p"] = top_p
    return model, torch.tensor([[1, 2, 3], [4, 5, 6]]), 8, kwargs


def _shape_problem(tokens, prompt, n):
    """What is wrong with the form of a returned batch of tokens, or None."""
    if not isinstance(tokens, torch.Tensor):
        return msg("returned a {name}; expected a tensor of token ids", name=type(tokens).__name__)
    expected = (prompt.shape[0], prompt.shape[1] + n)
    if tuple(tokens.shape) != expected:
        return msg("returned shape {got}; expected {expected}", got=tuple(tokens.shape), expected=expected)
    return None


def _cache_agrees(call):
    """use_cache=True and use_cache=False, same generator seed: the same sampled tokens."""
    prompt = torch.tensor([[1, 2, 3], [7, 8, 9]])
    results = []
    for use_cache in (True, False):
        model = ScriptedLM(V, seed=17, spread=3.0, eos_token_id=EOS, eos_bias=-0.5)
        tokens = call(model, prompt, 7, temperature=0.9, top_k=6, top_p=0.9, eos_token_id=EOS,
                      generator=torch.Generator().manual_seed(3), use_cache=use_cache)
        bad = _shape_problem(tokens, prompt, 7)
        if bad:
            return bad
        results.append(tokens)
    if not torch.equal(results[0], results[1]):
        return msg("with the same generator seed, use_cache=True and use_cache=False sampled different tokens: the "
                   "cache does not change the logits, so the draws must be the same (take the logits of the last "
                   "position in both paths, and draw from `generator` once per step)")
    return None


def _first_token_law(temperature, top_k=None):
    """The first new token of LAW_ROWS identical rows follows softmax(top_k(logits / temperature))."""
    def check(call):
        model = ScriptedLM(V, seed=LAW_SEED, spread=4.0)
        prompt = torch.tensor([[5]] * LAW_ROWS)
        kwargs = {"temperature": temperature, "generator": torch.Generator().manual_seed(5)}
        if top_k is not None:
            kwargs["top_k"] = top_k
        tokens = call(model, prompt, 1, **kwargs)
        bad = _shape_problem(tokens, prompt, 1)
        if bad:
            return bad
        drawn = tokens[:, -1].long()
        if ((drawn < 0) | (drawn >= V)).any():
            return msg("returned token ids outside the vocabulary [0, {vocab})", vocab=V)
        counts = torch.bincount(drawn, minlength=V).tolist()
        z = torch.tensor(model.next_logits([5]), dtype=torch.float64)
        probs = torch.softmax(filtered_logits(z, temperature, top_k), dim=-1).tolist()
        for v in range(V):
            lo, hi, _ = acceptance(LAW_ROWS, probs[v], LAW_ALPHA)
            if not lo <= counts[v] <= hi:
                return msg("token {v} was drawn {count} times in {rows} identical rows; its probability after "
                           "temperature {temperature} and top_k={top_k} is {p:.3f}, so a correct sampler draws it "
                           "{lo} to {hi} times (it falls outside with probability below 1e-6): divide the logits "
                           "by the temperature, filter, then draw from the softmax of the result", v=v,
                           count=counts[v], rows=LAW_ROWS, temperature=temperature, top_k=top_k, p=probs[v],
                           lo=lo, hi=hi)
        return None
    return check


# =========================================================================== generate: the declaration

G = generate_spec
GENERATE_MISTAKES = [
    Mistake("ignores the cache", partial(G, flaw="ignore_cache"),
            "with use_cache=True each step after the first feeds only the newest token, together with the "
            "kvs the model returned; your code feeds the whole sequence again at every step"),
    Mistake("re-feeds old tokens with the cache", partial(G, flaw="refeed"),
            "the cache already holds every earlier position: with it, feed only the newest token "
            "(tokens[:, -1:]); feeding the whole sequence again makes the model see the prefix twice"),
    Mistake("feeds the prompt token by token", partial(G, flaw="prompt_one_by_one"),
            "feed the whole prompt in the first call (one forward fills the cache for every prompt position); "
            "only the generated tokens go in one at a time"),
    Mistake("one forward too many", partial(G, flaw="extra_forward"),
            "the model is called once per new token: the last token chosen is never fed to the model, so do not "
            "run a forward after the loop (or at its end) just to refresh the cache"),
    Mistake("ignores use_cache=False", partial(G, flaw="always_cache"),
            "with use_cache=False every step feeds the whole sequence and passes no cache"),
    Mistake("stops when every row has finished", partial(G, flaw="stop_when_all_done"),
            "generation never stops early: the result always has max_new_tokens new columns, finished rows "
            "filled with eos_token_id"),
    Mistake("does not continue eos", partial(G, flaw="no_eos_continuation"),
            "a row that has produced eos_token_id continues with eos_token_id: replace the next token of "
            "finished rows (torch.where(finished, eos_token_id, next_token))"),
    Mistake("an eos in the prompt finishes the row", partial(G, flaw="prompt_eos_finishes"),
            "only a generated eos finishes a row: start with no row finished, even when the prompt contains "
            "eos_token_id (it is an ordinary token there)"),
    Mistake("`if eos_token_id:` skips eos 0", partial(G, flaw="truthy_eos"),
            "`if eos_token_id:` is False for eos_token_id=0, a valid token id: test `eos_token_id is not None`"),
    Mistake("reads the first position's logits", partial(G, flaw="first_position"),
            "the next token comes from the logits of the last position, logits[:, -1, :]; logits[:, 0] predicts "
            "the second token of the prompt"),
    Mistake("divides by temperature 0", partial(G, flaw="divide_by_zero_temperature"),
            "temperature == 0 means greedy: take the argmax of the raw logits; dividing by 0 turns them into "
            "±inf and the argmax into the first positive logit"),
    Mistake("max_new_tokens as the total length", partial(G, flaw="total_length"),
            "max_new_tokens counts the new tokens only: the result has T + max_new_tokens columns"),
    Mistake("feeds the new token without its time axis", partial(G, flaw="token_without_time_axis"),
            "the model takes input_ids of shape (B, T): feed the new token as next_token[:, None], shape (B, 1)"),
]

register(DrivingExercise(
    name="generate",
    chapter="generation/decoding",
    signature="generate(model, input_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, "
              "eos_token_id=None, generator=None, use_cache=True)",
    oracle=generate_spec,
    cases=generate_cases,
    mistakes=GENERATE_MISTAKES,
    properties=[reproducible(partial(_sampling, temperature=1.0)),
                Property("cached and uncached sampling give the same tokens", _cache_agrees),
                samples_within(partial(_sampling, top_k=3, temperature=0.7)),
                samples_within(partial(_sampling, top_p=0.6)),
                Property("the first sampled token follows softmax(logits / temperature)", _first_token_law(0.5)),
                Property("the first sampled token follows the top-k softmax", _first_token_law(2.0, top_k=4))],
    hints=("call the model once per new token: the whole prompt first, then, with use_cache, only the newest "
           "token as a (B, 1) tensor together with the kvs it returned   (eqs. dec-ar, dec-kv-step)",
           "the next token comes from the last position, logits[:, -1]: argmax when temperature == 0, else one draw "
           "after temperature, top-k and top-p; a row that has produced eos_token_id continues with eos_token_id, "
           "and the loop always runs max_new_tokens times   (eqs. dec-greedy, dec-sample, dec-eos-fill)",
           "for each step: logits, kvs = model(tokens, None) on the first step (and on every step with "
           "use_cache=False), else model(tokens[:, -1:], kvs); next = argmax or a draw from logits[:, -1]; "
           "next = torch.where(finished, eos_token_id, next); finished |= next == eos_token_id; "
           "tokens = torch.cat([tokens, next[:, None]], dim=1)   (eqs. dec-kv-step, dec-eos-fill)"),
))


# =========================================================================== beam_search: the oracles

def beam_search_spec(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0, *,
                     flaw=None):
    """CURRICULUM's rule as a plain loop over Python lists; `flaw` swaps in one candidate's wrong line."""
    prompt = input_ids[0].tolist()
    T = len(prompt)
    eos = None if flaw == "no_eos" else eos_token_id

    def score(total, n):
        length = T + n if flaw == "prompt_in_length" else n
        return total / length ** length_penalty

    live = [(prompt, 0.0)] * (num_beams if flaw == "duplicate_start" else 1)    # (tokens, sum of log-probs)
    finished = []                         # (score, tokens), in the order they finished
    for step in range(1, max_new_tokens + 1):
        cands = []                        # (sum of log-probs, tokens), beam by beam, token by token
        for toks, total in live:
            logits, _ = model(torch.tensor([toks]))
            lp = logits[0, -1].double()
            if flaw != "raw_logits":
                lp = torch.log_softmax(lp, dim=-1)
            cands += [(total + float(lp[v]), toks + [v]) for v in range(lp.shape[0])]
        if flaw == "topk_ties":
            order = torch.topk(torch.tensor([c[0] for c in cands]), min(2 * num_beams, len(cands))).indices.tolist()
        elif flaw == "reverse_sorted":
            order = sorted(range(len(cands)), key=lambda i: (cands[i][0], i), reverse=True)
        else:
            order = sorted(range(len(cands)), key=lambda i: -cands[i][0])     # stable: earlier wins ties
        live = []
        for rank, i in enumerate(order):
            total, toks = cands[i]
            if eos is not None and toks[-1] == eos:
                if rank < num_beams or flaw == "every_eos_finishes":
                    n = step - 1 if flaw == "eos_not_counted" else step
                    finished.append((score(total, n), toks))
                if flaw != "finished_stay_alive":
                    continue
            if len(live) < num_beams:
                live.append((toks, total))
        if len(finished) >= num_beams and flaw != "no_early_stop":
            break
    if len(finished) < num_beams or flaw == "no_early_stop":
        finished += [(total if flaw == "live_unnormalized" else score(total, max_new_tokens), toks)
                     for toks, total in live]
    best = max(range(len(finished)), key=lambda i: finished[i][0])            # the first of equal scores
    return torch.tensor([finished[best][1]]), float(finished[best][0])


def exhaustive_search(model, input_ids, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """The best hypothesis of all: every sequence that ends at its first eos, or runs max_new_tokens tokens
    without one, scored sum_logprobs / generated_length ** length_penalty (V ** max_new_tokens of them at most)."""
    prompt = input_ids[0].tolist()
    best_score, best = -math.inf, None
    frontier = [(prompt, 0.0)]
    for n in range(1, max_new_tokens + 1):
        grown = []
        for toks, total in frontier:
            logits, _ = model(torch.tensor([toks]))
            for v, lp in enumerate(torch.log_softmax(logits[0, -1].double(), dim=-1).tolist()):
                if v == eos_token_id or n == max_new_tokens:
                    s = (total + lp) / n ** length_penalty
                    if best is None or s > best_score:
                        best_score, best = s, toks + [v]
                else:
                    grown.append((toks + [v], total + lp))
        frontier = grown
    return torch.tensor([best]), float(best_score)


def beam_search_oracle(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Exhaustive search where beam search provably prunes nothing, the loop specification elsewhere."""
    if num_beams >= model.vocab_size ** max_new_tokens:
        return exhaustive_search(model, input_ids, max_new_tokens, eos_token_id, length_penalty)
    return beam_search_spec(model, input_ids, num_beams, max_new_tokens, eos_token_id, length_penalty)


# =========================================================================== beam_search: cases

# A designed tie (num_beams=2, no eos): after the prompt, tokens 0 and 3 tie; both beams then meet the same
# logits, so four candidates tie and the rule keeps beam 0's two; only beam 1's continuations lead to a sure win.
TIE_PROMPT = (1, 2)
TIE_SCRIPT = {
    TIE_PROMPT: [1.0, -1.0, -1.0, 1.0, -2.0, -9.0],
    TIE_PROMPT + (0,): [2.0, 2.0, 0.0, 0.0, 0.0, -9.0],
    TIE_PROMPT + (3,): [2.0, 2.0, 0.0, 0.0, 0.0, -9.0],
    **{TIE_PROMPT + (3, t): [6.0, 0.0, 0.0, 0.0, 0.0, -9.0] for t in (0, 1)},
    **{TIE_PROMPT + (0, t): [0.5, 0.4, 0.3, 0.2, 0.1, -9.0] for t in (0, 1)},
}

# Ties between a token and eos (num_beams=2): the token (lower id) keeps the live slot, eos ranks 3rd and does not
# finish; breaking these ties the other way finishes two hypotheses and returns a different one.
EOS_TIE_SCRIPT = {(0,): [2.0, 0.5, -5.0, -5.0, -5.0, 0.5],
                  (0, 0): [1.0, 0.0, -5.0, -5.0, -5.0, 0.0], (0, 1): [1.0, 0.0, -5.0, -5.0, -5.0, 0.0]}


def _logs(*p):
    return [math.log(x) for x in p]


# The chapter's picture as token ids: the most likely first token (1) does not start the most likely sequence.
# Greedy: 1 then 3, 0.5 * 0.4 = 0.20; two beams keep 1 and 2 and find 2 then 4, 0.4 * 0.9 = 0.36.
TREE_SCRIPT = {(0,): _logs(0.01, 0.5, 0.4, 0.07, 0.01, 0.01),
               (0, 1): _logs(0.1, 0.1, 0.0999, 0.4, 0.3, 0.0001),
               (0, 2): _logs(0.02, 0.02, 0.02, 0.03, 0.9, 0.01),
               (0, 3): _logs(0.3, 0.5, 0.1, 0.05, 0.04, 0.01)}


def _beam(prompt, num_beams, n, seed, eos=BEOS, eos_bias=0.0, length_penalty=None, script=None, spread=4.0,
          vocab=BV, dtype=torch.float32, stride=1):
    model = ScriptedLM(vocab, seed=seed, spread=spread, eos_token_id=eos, eos_bias=eos_bias, script=script,
                       dtype=dtype)
    ids = torch.tensor([prompt])
    if stride > 1:
        wide = torch.zeros(1, len(prompt) * stride, dtype=torch.long)
        wide[:, ::stride] = ids
        ids = wide[:, ::stride]
    kwargs = {} if eos is None else {"eos_token_id": eos}
    if length_penalty is not None:
        kwargs["length_penalty"] = length_penalty
    return (model, ids, num_beams, n), kwargs


def beam_cases():
    return [
        Case(partial(_beam, [0, 3, 1], 3, 4, seed=21, eos=None),
             "no eos: the best of the live beams after max_new_tokens"),
        Case(partial(_beam, [2, 2, 4], 3, 6, seed=22), "eos among the candidates"),
        Case(partial(_beam, [1, 4], 2, 8, seed=33, eos_bias=1.5), "eos often: num_beams hypotheses finish early"),
        Case(partial(_beam, [3, 4], 2, 6, seed=44, eos_bias=1.5, length_penalty=2.0),
             "eos often, length_penalty=2.0: a longer hypothesis would win later"),
        Case(partial(_beam, [3, 0, 2, 1], 3, 6, seed=24, length_penalty=2.0),
             "length_penalty=2.0 favours longer hypotheses"),
        Case(partial(_beam, [4, 1, 1], 2, 5, seed=25, length_penalty=0.0), "length_penalty=0.0: plain sums"),
        Case(partial(_beam, [0, 2], 1, 6, seed=26, eos_bias=0.5), "num_beams=1"),
        Case(partial(_beam, [1, 3, 0, 4, 2, 2, 3, 1], 3, 5, seed=27, length_penalty=0.5),
             "a long prompt, length_penalty=0.5"),
        Case(partial(_beam, list(TIE_PROMPT), 2, 3, seed=28, eos=None, script=TIE_SCRIPT),
             "designed ties: the earlier candidate wins"),
        Case(partial(_beam, [0], 2, 2, seed=30, script=EOS_TIE_SCRIPT),
             "a token tied with eos: the lower token id ranks first"),
        Case(partial(_beam, [2, 0, 3], 4, 5, seed=29, eos_bias=-1.0), "four beams, eos rare"),
        Case(partial(_beam, [0], 2, 2, seed=31, eos=None, script=TREE_SCRIPT),
             "the most likely first token does not start the most likely sequence"),
        Case(partial(_beam, [1, 0], 27, 3, seed=32, vocab=3, eos=2, eos_bias=0.5),
             "27 beams over 3 tokens and 3 steps: nothing is pruned, so the result is the exhaustive optimum"),
        Case(partial(_beam, [2, 1, 3], 64, 3, seed=34, vocab=4, eos=None, length_penalty=0.0),
             "64 beams over 4 tokens and 3 steps, no eos: the exhaustive optimum"),
        Case(partial(_beam, [1, 2], 16, 2, seed=35, vocab=4, eos=3, eos_bias=1.0, length_penalty=2.0),
             "16 beams over 4 tokens and 2 steps, eos likely, length_penalty=2.0: the exhaustive optimum"),
        Case(partial(_beam, [4, 0, 2], 3, 5, seed=36, dtype=torch.float64), "float64 model"),
        Case(partial(_beam, [3, 1, 2, 0], 2, 4, seed=37, stride=2), "a non-contiguous prompt"),
    ]


B = beam_search_spec
BEAM_MISTAKES = [
    Mistake("length penalty on the prompt too", partial(B, flaw="prompt_in_length"),
            "the length penalty divides by the generated length only (new tokens, eos included), not by the "
            "length with the prompt"),
    Mistake("no eos handling", partial(B, flaw="no_eos"),
            "a candidate ending in eos_token_id is finished: it leaves the live beams and is scored "
            "sum_logprobs / generated_length ** length_penalty"),
    Mistake("finished beams kept alive", partial(B, flaw="finished_stay_alive"),
            "a beam that ends in eos is finished: it must not be extended any more; the live beams are the "
            "num_beams best candidates not ending in eos"),
    Mistake("every eos candidate finishes", partial(B, flaw="every_eos_finishes"),
            "only an eos candidate ranked among the num_beams best of its step becomes a finished hypothesis"),
    Mistake("live beams not length-normalised", partial(B, flaw="live_unnormalized"),
            "when max_new_tokens runs out, the live beams are scored the same way as finished ones: "
            "sum_logprobs / generated_length ** length_penalty"),
    Mistake("eos not counted in the length", partial(B, flaw="eos_not_counted"),
            "the generated length of a finished hypothesis counts its eos token"),
    Mistake("ranks by raw logits", partial(B, flaw="raw_logits"),
            "beams are ranked by total log-probability: apply log_softmax to each step's logits before adding"),
    Mistake("keeps searching after num_beams finished", partial(B, flaw="no_early_stop"),
            "the search stops as soon as num_beams hypotheses are finished"),
    Mistake("starts from num_beams copies of the prompt", partial(B, flaw="duplicate_start"),
            "the search starts from one beam, the prompt: num_beams copies of it make every first-step candidate "
            "appear num_beams times, and the copies crowd out the other beams"),
    Mistake("breaks ties with torch.topk", partial(B, flaw="topk_ties"),
            "among equal scores the earlier candidate (lower beam, then lower token id) wins, and torch.topk "
            "does not promise that order: rank with torch.sort(scores, descending=True, stable=True)"),
    Mistake("sorts with reverse=True", partial(B, flaw="reverse_sorted"),
            "sorted(..., reverse=True) puts the later of two equal candidates first; the earlier (lower beam, then "
            "lower token id) must win: sort by key=lambda c: -c.score, which keeps ties in order"),
]

register(DrivingExercise(
    name="beam_search",
    chapter="generation/decoding",
    signature="beam_search(model, input_ids, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0)",
    oracle=beam_search_oracle,
    cases=beam_cases,
    mistakes=BEAM_MISTAKES,
    count_calls=False,
    tolerance={torch.float64: (1e-5, 1e-6)},     # the score is a float; a reader may add log-probs in float32
    hints=("each step extends every live beam by every token; rank all (beam, token) candidates of the step "
           "together by total log-probability, log_softmax of the logits added to the beam's sum   (eq. dec-beam-step)",
           "walk the candidates best first: an eos candidate ranked among the num_beams best finishes, scored "
           "sum / generated_length ** length_penalty; the first num_beams candidates not ending in eos are the "
           "next live beams; stop once num_beams hypotheses have finished   (eqs. dec-beam-step, dec-beam-score)",
           "order = torch.sort(scores.flatten(), descending=True, stable=True).indices and beam, token = "
           "divmod(index, V) rank ties to the lower beam, then the lower token; after max_new_tokens steps score "
           "the live beams by sum / max_new_tokens ** length_penalty and return the best hypothesis with its score   "
           "(eq. dec-beam-score)"),
))
