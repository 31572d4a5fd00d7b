"""The model-driving kind: a function that drives a language model the grader supplies (generate, beam search).

case.make() -> (args, kwargs), a fresh `ScriptedLM` among the args (see `scripted.py`): its logits are a known
function of the prefix, so the tokens are exact, and it records every call it receives. The parts are the
returned value, then (when `count_calls`) how many times the model was called and what each call fed:

    output                  the returned value (tokens, or (tokens, score))
    model calls             one per new token, no extra forward
    model call 3            what it fed: 1 token with a cache of 6 (or: 7 tokens without a cache)

so code whose tokens are right but that ignores its cache, feeds the prompt token by token or runs one
forward too many fails on a part with its own name, and a registered mistake that does the same is named.
A misuse of the model (a float or 1-D input_ids, a cache it did not return) raises inside the reader's code
with the model's own message. Stochastic decoding is graded by the properties below (same seed, same tokens;
sampled tokens inside the top-k / top-p set) and by cases whose result does not depend on the draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...i18n import msg
from ..core import Exercise, Property
from ..protocol import Outcome, attempt, describe, detached
from ..scripted import ScriptedLM


class Shown(str):
    """Text that a call's description shows as it is (describe() shows other objects by their repr)."""

    def __repr__(self) -> str:
        return str(self)


def describe_call(name: str, args, kwargs) -> str:
    """generate(ScriptedLM(vocab_size=11), int64 (2, 5), 6, generator=torch.Generator().manual_seed(0)):
    a generator is shown by its seed, not by its address."""
    def shown(v):
        return Shown(f"torch.Generator().manual_seed({v.initial_seed()})") if isinstance(v, torch.Generator) else v
    return f"{name}({describe([shown(a) for a in args], {k: shown(v) for k, v in kwargs.items()})})"


@dataclass
class DrivingExercise(Exercise):
    """`count_calls`: the model's calls are part of the contract (generate: one per new token, each after the
    first feeding only the newest token with the cache); False where the contract is silent (beam search)."""

    count_calls: bool = True
    kind = "driving"

    def outcome(self, target, case, guard) -> Outcome:
        args, kwargs = case.make()
        models = [a for a in args if isinstance(a, ScriptedLM)]
        out = Outcome(call=describe_call(self.name, args, kwargs))
        with attempt(out, "call", guard):
            value = target(*args, **kwargs)
        if out.failed:
            return out
        out.parts = [("output", detached(value))]
        if self.count_calls:
            for m in models:
                out.parts.append(("model calls (one per new token, no extra forward)", len(m.calls)))
                out.parts += [(msg("model call {k}", k=k), c) for k, c in enumerate(m.calls, 1)]
        out.inputs_after = tuple(detached(a) for a in args if isinstance(a, torch.Tensor))
        return out

    def pristine_inputs(self, case) -> tuple:
        args, _ = case.make()
        return tuple(a for a in args if isinstance(a, torch.Tensor))


# --------------------------------------------------------------------------- properties of sampling

def _tokens_problem(tokens, prompt: torch.Tensor, n: int, vocab: int) -> str | None:
    if not isinstance(tokens, torch.Tensor):
        return msg("returned a {name}; expected a tensor of token ids", name=type(tokens).__name__)
    B, T = prompt.shape
    if tuple(tokens.shape) != (B, T + n):
        return msg("returned shape {got}; expected {expected}", got=tuple(tokens.shape), expected=(B, T + n))
    if tokens.dtype != prompt.dtype:
        return msg("returned dtype {got}; expected {expected}", got=tokens.dtype, expected=prompt.dtype)
    if not torch.equal(tokens[:, :T], prompt):
        return "the returned tokens do not start with the prompt"
    if ((tokens < 0) | (tokens >= vocab)).any():
        return msg("returned token ids outside the vocabulary [0, {vocab})", vocab=vocab)
    return None


def reproducible(make: Callable, seeds: tuple = (0, 1)) -> Property:
    """Sampling with a generator is reproducible: two calls with generators seeded alike give the same tokens,
    whatever state torch's global generator is in (it is reseeded differently before each call).

    make(seed) -> (model, input_ids, max_new_tokens, kwargs): kwargs sample (temperature > 0) and carry
    generator=torch.Generator().manual_seed(seed).
    """
    def check(call):
        results = []
        for k in range(2):
            model, prompt, n, kwargs = make(seeds[0])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 + k)
                tokens = call(model, prompt, n, **kwargs)
            bad = _tokens_problem(tokens, prompt, n, model.vocab_size)
            if bad:
                return bad
            results.append(tokens)
        if not torch.equal(results[0], results[1]):
            return ("two calls with generators seeded alike gave different tokens: draw every random number "
                    "from `generator` (torch.multinomial(probs, 1, generator=generator)), not from torch's "
                    "global generator")
        model, prompt, n, kwargs = make(seeds[1])
        other = call(model, prompt, n, **kwargs)
        if isinstance(other, torch.Tensor) and torch.equal(other, results[0]) and n * prompt.shape[0] >= 12:
            return ("generators with different seeds gave the very same tokens: is `generator` used at all, "
                    "or is the draw greedy?")
        return None

    return Property("the same generator seed gives the same tokens", check)


def allowed_tokens(logits: list, temperature: float, top_k: int | None, top_p: float | None,
                   margin: float = 1e-4) -> tuple[set, set]:
    """The tokens a sampler may draw after `logits` (temperature, then top-k, then top-p, as transformers'
    warpers), as (surely allowed, possibly allowed): tokens within `margin` of a boundary are only possible."""
    V = len(logits)
    z = [x / temperature for x in logits]
    order = sorted(range(V), key=lambda v: -z[v])
    sure, maybe = set(range(V)), set(range(V))
    if top_k is not None and top_k < V:
        kth = z[order[top_k - 1]]
        sure = {v for v in sure if z[v] >= kth}
        maybe = {v for v in maybe if z[v] >= kth - margin}
    if top_p is not None:
        m = max(z[v] for v in maybe)
        w = {v: math.exp(z[v] - m) for v in maybe}
        total = sum(w.values())
        p = {v: w[v] / total for v in maybe}
        # a token survives when the probability of it and of every more likely token before it is < p + its own
        ranked = sorted(maybe, key=lambda v: -p[v])
        above = 0.0
        keep_sure, keep_maybe = set(), set()
        for i, v in enumerate(ranked):
            tail = 1.0 - above          # probability of v and every less likely token
            if i == 0 or tail > 1 - top_p + margin:
                keep_sure.add(v)
            if i == 0 or tail > 1 - top_p - margin:
                keep_maybe.add(v)
            above += p[v]
        sure &= keep_sure
        maybe &= keep_maybe
    return sure, maybe


def samples_within(make: Callable, draws: int = 3) -> Property:
    """Every sampled token lies inside the set that temperature, top-k and top-p allow at its prefix.

    make(seed) -> (model, input_ids, max_new_tokens, kwargs) with kwargs holding temperature, top_k and/or
    top_p and a generator seeded with `seed`; eos_token_id is not used.
    """
    def check(call):
        for seed in range(draws):
            model, prompt, n, kwargs = make(seed)
            tokens = call(model, prompt, n, **kwargs)
            bad = _tokens_problem(tokens, prompt, n, model.vocab_size)
            if bad:
                return bad
            T = prompt.shape[1]
            for b, row in enumerate(tokens.tolist()):
                for t in range(T, T + n):
                    _, maybe = allowed_tokens(model.next_logits(row[:t]), kwargs.get("temperature", 1.0),
                                              kwargs.get("top_k"), kwargs.get("top_p"))
                    if row[t] not in maybe:
                        what = ", ".join(f"{k}={kwargs[k]}" for k in ("temperature", "top_k", "top_p") if k in kwargs)
                        return msg("row {b}, new token {k}: drew token {token}, which {what} excludes (allowed: "
                                   "{allowed}): filter the logits before drawing", b=b, k=t - T + 1, token=row[t],
                                   what=what, allowed=sorted(maybe))
        return None

    return Property("sampled tokens stay inside the top-k / top-p set", check)
