"""The stochastic kind: a function that draws with the `generator` keyword it is given (a sampled token,
dropout's mask, k-means++'s centroids). Draws are never compared with the oracle's; four checks instead,
each a labelled part of the outcome:

    draws           every draw is a possible outcome (probability > 0): within top-k, 0 or x / (1 - p), ...
    distribution    over many draws (fixed seeds), every outcome's count lies where its exact probability
                    puts it (an exact binomial test per outcome, union bound over all tests)
    reproducibility the calls run again on a new generator of the same seed give the same draws (the global
                    RNGs, torch's, numpy's and random's, reseeded differently for the second run; as many calls
                    as it takes for code that ignores the generator to agree by chance at most RERUN_TO)
    fresh draws     successive calls on one generator do not all give the same draws

The oracle is the exact law: oracle(*args, **kwargs) -> float64 probabilities of shape slots + (C,), for
each slot of the result (a row's token, an entry of dropout) the probability of each of C outcomes named by
`names(args, kwargs)`; `observe(result, args, kwargs)` reads the outcome of every slot (a LongTensor of the
slots' shape) or returns a Problem with the result's form. A case is `Draws`: the call, made `calls` times
on one torch.Generator seeded `seed`. A law that puts all its mass on one outcome per slot makes an exact
case (temperature 0 is argmax): the draws check alone decides it.

Sizing (`plan`): the declaration states `false_rejection`, the probability that a correct solution fails
some check; it is split evenly over the binomial tests of every case (half) and the fresh-draws checks
(half; a case whose calls agree too often by chance is not checked for it). Each mistake is a
SamplingMistake with its exact `law` and the stated probability `passes` that it passes every case;
`bounds()` computes both from the laws, and the tests hold the statements to it.

Diagnosis: a failing draws or distribution verdict is keyed by the set of declared laws (the target's and
every mistake's) that its counts are consistent with, so another way of writing a known mistake is named.
Seeds are fixed, so verdicts are the same on every run, and a registered mistake's outcome is computed once.
The global RNGs are restored after every case: a check never moves the reader's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch

from ...i18n import msg
from ..compare import FEW, TOLERANCE, Verdict, at, tensor_form, unravel
from ..core import Case, Exercise, Mistake, said
from ..protocol import Outcome, attempt, describe, detached, listed, tensors_in
from ..result import Problem
from ..stats import acceptance, within
from .plain import parameter_names

try:
    import numpy
except ImportError:          # pragma: no cover
    numpy = None

LABELS = ("draws", "distribution", "reproducibility", "fresh draws")
TARGET = "target"
RERUN_TO = 1e-12    # calls are run again until code ignoring the generator agrees by chance at most this often


@dataclass(frozen=True)
class Draws(Case):
    """A case of a stochastic exercise: make() -> (args, kwargs), called `calls` times on one generator."""

    seed: int = 0
    calls: int = 1


def draws(build, *args, seed: int = 0, calls: int = 1, note: str = "", **kwargs) -> Draws:
    """A Draws case whose inputs are `build(*args, **kwargs)` (as inputs.case does for Case)."""
    return Draws(make=partial(build, *args, **kwargs), note=note, seed=seed, calls=calls)


@dataclass(frozen=True)
class SamplingMistake(Mistake):
    """A known wrong sampler: its exact law (None: the target's) and where it draws from.

    rng     "generator" (the one it is given), "global" (ignores it: caught by reproducibility) or "fixed"
            (a generator of its own, seeded the same on every call: caught by fresh draws)
    passes  stated: the probability that it passes every case (checked by the tests against `bounds()`)
    """

    law: Callable | None = None
    rng: str = "generator"
    passes: float = 0.0


@dataclass
class Plan:
    """What one case's law implies: the slots grouped by identical law, the acceptance regions, the checks."""

    shape: tuple                # the slots of one call's result
    law: torch.Tensor           # (S, C) the target's probabilities per slot
    group: torch.Tensor         # (S,) the group of each slot
    first: torch.Tensor         # (G,) a slot of each group
    n: torch.Tensor             # (G,) draws per group over all calls
    calls: int
    regions: dict = field(default_factory=dict)     # law name -> (lo, hi), each (G, C) int64
    size: float = 0.0           # P(a correct solution fails a count test of this case)
    collide: float = 0.0        # P(a correct solution's calls all give the same draws)
    fresh: bool = False         # is the fresh-draws check made
    rerun: int = 1              # calls run again on a new generator of the same seed


# --------------------------------------------------------------------------- observers for common contracts

def indices(result, args, kwargs) -> torch.Tensor | Problem:
    """observe() for a draw of one index per row of the first argument: (..., V) -> (...) int64.
    An index outside 0..V-1 is outcome V."""
    x = args[0]
    problem = tensor_form(torch.empty(x.shape[:-1], dtype=torch.int64), result)
    if problem:
        return problem
    V = x.shape[-1]
    r = result.detach()
    return torch.where((r >= 0) & (r < V), r, torch.full_like(r, V))


def index_names(what: str = "token") -> Callable:
    """names() matching `indices`: 'token 0', ..., 'token V-1', then 'an id outside 0..V-1'."""
    def names(args, kwargs):
        V = args[0].shape[-1]
        return [f"{what} {i}" for i in range(V)] + [msg("an id outside 0..{last}", last=V - 1)]
    return names


def alike(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows grouped by equal values, in order of first appearance: (first row of each group, group of each row)."""
    seen, first, group = {}, [], []
    for i, r in enumerate(map(tuple, rows.tolist())):
        if r not in seen:
            seen[r] = len(first)
            first.append(i)
        group.append(seen[r])
    return torch.tensor(first, dtype=torch.long), torch.tensor(group, dtype=torch.long)


# --------------------------------------------------------------------------- the global RNGs

@contextmanager
def isolated_rng():
    """The global RNGs (torch, random, numpy) restored afterwards: the checks never disturb the reader's."""
    state, py = torch.random.get_rng_state(), random.getstate()
    np_state = numpy.random.get_state() if numpy is not None else None
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
        random.setstate(py)
        if numpy is not None:
            numpy.random.set_state(np_state)


def reseed(seed: int) -> None:
    """Every global RNG at a fixed state: code that ignores the generator draws the same on every run."""
    torch.default_generator.manual_seed(seed)      # the CPU's; torch.manual_seed would also queue CUDA's
    random.seed(seed)
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


# --------------------------------------------------------------------------- the kind

@dataclass
class StochasticExercise(Exercise):
    """oracle: the exact law; observe, names: how results are read (see the module's docstring).

    false_rejection  stated: the probability that a correct solution fails (below 1e-6)
    samples          stated: the draws one check makes in all (calls x slots, summed over the cases)
    independent      the slots of one call are independent draws (rows of a sampler, entries of dropout);
                     False (k-means++'s centroids): every slot is tested on its own, across calls only
    """

    observe: Callable = indices
    names: Callable = index_names()
    false_rejection: float = 1e-7
    samples: int = 0
    independent: bool = True
    kind = "stochastic"

    def __post_init__(self):
        super().__post_init__()
        self._plans = None
        self._known = {}        # (mistake, case) -> Outcome: fixed seeds make a mistake's outcome fixed too

    # -- sizing
    def laws(self) -> dict:
        """{name: law} of the target and of every mistake with a law of its own."""
        laws = {TARGET: self.oracle}
        laws.update((m.name, m.law) for m in self.mistakes if getattr(m, "law", None) is not None)
        return laws

    def plans(self) -> list:
        if self._plans is None:
            self._plans = self._make_plans()
        return self._plans

    def _make_plans(self) -> list:
        if not 0 < self.false_rejection < 1e-6:
            raise ValueError(f"{self.name}: false_rejection must lie in (0, 1e-6), not {self.false_rejection}")
        plans = []
        for case in self.all_cases():
            args, kwargs = case.make()
            law = self.oracle(*args, **kwargs).to(torch.float64)
            shape, C = tuple(law.shape[:-1]), law.shape[-1]
            law = law.reshape(-1, C)
            first, group = alike(law) if self.independent else (torch.arange(law.shape[0]),) * 2
            calls = getattr(case, "calls", 1)
            n = torch.bincount(group, minlength=first.shape[0]) * calls
            plans.append(Plan(shape, law, group, first, n, calls))
        tests = sum(int(((p.law[p.first] > 0) & (p.law[p.first] < 1)).sum()) for p in plans)
        alpha = self.false_rejection / 2 / max(tests, 1)
        for p in plans:
            p.regions[TARGET] = self._regions(p, p.law[p.first], alpha)
            p.size = p.regions[TARGET][2]
            p.collide = self._collision(p.law, p.calls)
            p.fresh = p.calls > 1 and p.collide <= self.false_rejection / 2 / len(plans)
            agree = self._collision(p.law, 2)          # two independent runs of one call agree
            p.rerun = 1 if agree in (0.0, 1.0) else min(p.calls, math.ceil(math.log(RERUN_TO) / math.log(agree)))
        self._alpha = alpha
        return plans

    def _regions(self, plan: Plan, rows: torch.Tensor, alpha: float):
        lo = torch.zeros(rows.shape, dtype=torch.long)
        hi = torch.zeros(rows.shape, dtype=torch.long)
        size = 0.0
        for g in range(rows.shape[0]):
            for c in range(rows.shape[1]):
                lo[g, c], hi[g, c], s = acceptance(int(plan.n[g]), float(rows[g, c]), alpha)
                size += s
        return lo, hi, size

    def _collision(self, law: torch.Tensor, calls: int) -> float:
        """P(all `calls` calls give the same draws) under `law`: a product over independent slots; for
        dependent ones, the chance that every call agrees on the slot where that is least likely."""
        if calls < 2:
            return 1.0
        per_slot = (law ** calls).sum(-1)
        return float(per_slot.prod()) if self.independent else float(per_slot.min())

    def region(self, i: int, name: str):
        """(lo, hi) of law `name` on case i, at the target's per-test level (for diagnosis keys)."""
        plan = self.plans()[i]
        if name not in plan.regions:
            args, kwargs = self.all_cases()[i].make()
            law = self.laws()[name](*args, **kwargs).to(torch.float64).reshape(plan.law.shape)
            rows = law[plan.first]
            if not torch.equal(rows[plan.group], law):
                raise ValueError(f"the law of {name!r} differs between slots the target's law treats alike")
            plan.regions[name] = self._regions(plan, rows, self._alpha)
        return plan.regions[name][:2]

    def bounds(self) -> dict:
        """Computed from the laws: {'false rejection': P(a correct solution fails), mistake: P(it passes)}.

        A correct solution fails with probability at most the sum of the sizes of every count test and the
        collision probability of every fresh-draws check (union bound). A mistake passes with probability at
        most that of its likeliest-passed single test: a count test under its own law, the reproducibility
        check when it ignores the generator (its two runs agree by chance), the fresh-draws check when it
        reseeds a generator of its own (never)."""
        plans = self.plans()
        out = {"false rejection": sum(p.size + (p.collide if p.fresh else 0.0) for p in plans)}
        for m in self.mistakes:
            law_fn = getattr(m, "law", None) or self.oracle
            rng = getattr(m, "rng", "generator")
            passes = 1.0
            for case, p in zip(self.all_cases(), plans):
                args, kwargs = case.make()
                law = law_fn(*args, **kwargs).to(torch.float64).reshape(p.law.shape)
                lo, hi, _ = p.regions[TARGET]
                rows = law[p.first]
                for g in range(rows.shape[0]):
                    for c in range(rows.shape[1]):
                        passes = min(passes, within(int(p.n[g]), float(rows[g, c]), int(lo[g, c]), int(hi[g, c])))
                if rng == "global":       # the two runs of every call run again agree by chance
                    passes = min(passes, self._collision(law, 2) ** p.rerun)
                if rng == "fixed" and p.fresh:
                    passes = 0.0
            out[m.name] = passes
        return out

    # -- driving
    def pristine_inputs(self, case):
        args, _ = case.make()
        return args

    def outcome(self, target, case, guard) -> Outcome:
        i = self.all_cases().index(case)
        mistake = next((m.name for m in self.mistakes if m.impl is target), None)
        if mistake is not None:
            if (mistake, i) not in self._known:
                self._known[mistake, i] = self._outcome(target, case, guard, i)
            return self._known[mistake, i]
        return self._outcome(target, case, guard, i)

    def _outcome(self, target, case, guard, i: int) -> Outcome:
        plan = self.plans()[i]
        seed, calls = getattr(case, "seed", 0), plan.calls
        args, kwargs = case.make()
        total = int(plan.n.sum())
        out = Outcome(call=msg("{name}({args}, generator=torch.Generator().manual_seed({seed})){calls}: "
                               "{total:,} draws", name=self.name, args=describe(args, kwargs), seed=seed, total=total,
                               calls=msg(", {n} calls on that generator", n=calls) if calls > 1 else ""))
        if target is self.oracle:
            out.parts = [(label, Verdict()) for label in LABELS]
            return out
        before = {i: a.detach().clone() for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
        with isolated_rng():
            first = self._run(target, args, kwargs, seed, calls, guard, out, 0)
            again = None if out.failed else self._run(target, args, kwargs, seed, plan.rerun, guard, out, 500)
        if out.failed:
            return out
        out.inputs_after = tuple(t.detach().clone() for t in tensors_in(args))
        changed = [i for i, t in before.items() if not torch.equal(torch.nan_to_num(t), torch.nan_to_num(args[i]))]
        if changed:
            name = parameter_names(self.oracle, len(args))[changed[0]]
            out.parts = [(LABELS[0], Verdict("mutated-input", msg("your code changed its argument `{name}` in place; "
                                                                  "compute into new tensors instead", name=name),
                                             key=name))]
            return out
        seen = []
        for k, r in enumerate(first + again):
            s = self._observe(r, args, kwargs)
            if isinstance(s, Problem):
                message = (msg("on a new generator of the same seed: {said}", said=s.message) if k >= calls
                           else s.message)
                out.parts = [(LABELS[0], Verdict(s.kind, _in_call(message, k % calls, calls), key=s.message))]
                return out
            seen.append(s.reshape(-1))
        seen, again = seen[:calls], seen[calls:]
        names = self.names(args, kwargs)
        counts = self._counts(plan, seen)
        support, distribution = self._support(plan, seen, names), self._distribution(plan, counts, names)
        if not (support.holds and distribution.holds):      # which declared laws fit: what a diagnosis matches
            key = ("consistent with", frozenset(n for n in self.laws() if self._consistent(i, counts, n)))
            support, distribution = (v if v.holds else Verdict(v.kind, v.message, key)
                                     for v in (support, distribution))
        out.parts = [(LABELS[0], support), (LABELS[1], distribution),
                     (LABELS[2], self._reproducible(plan, seen, again, names, seed)),
                     (LABELS[3], self._fresh(plan, seen))]
        return out

    def _run(self, target, args, kwargs, seed, calls, guard, out, shift) -> list:
        """`calls` calls on one torch.Generator seeded `seed`, the global RNGs reseeded first (differently for the
        second run, so that code drawing from them draws differently); the results, or [] on an error."""
        results = []
        gen = torch.Generator().manual_seed(seed)
        reseed(1000 * seed + shift)
        with attempt(out, "call", guard):
            for _ in range(calls):
                results.append(detached(target(*args, **kwargs, generator=gen)))
        if out.failed:
            out.stage = msg("call {k} of {n} on one generator", k=len(results) + 1, n=calls) if calls > 1 else "call"
            if shift:
                out.stage = msg("{stage}, run again on a new generator of the same seed", stage=out.stage)
        return results

    def _observe(self, result, args, kwargs):
        try:
            seen = self.observe(result, args, kwargs)
        except Exception as e:      # a result too odd for the observer
            return Problem("wrong-type", msg("output cannot be read as draws: {error}: {detail}",
                                             error=type(e).__name__, detail=said(e)))
        if isinstance(seen, Problem):
            return seen
        return seen.to(torch.long)

    def _counts(self, plan: Plan, seen: list) -> torch.Tensor:
        G, C = plan.first.shape[0], plan.law.shape[1]
        flat = sum(torch.bincount(plan.group * C + s, minlength=G * C) for s in seen)
        return flat.reshape(G, C)

    def _consistent(self, i: int, counts: torch.Tensor, name: str) -> bool:
        lo, hi = self.region(i, name)
        return bool(((counts >= lo) & (counts <= hi)).all())

    def _slot(self, plan: Plan, s: int) -> str:
        if not plan.shape:
            return "output"
        return at("output", ", ".join(map(str, unravel(s, plan.shape))))

    def _possible(self, plan: Plan, s: int, names: list) -> str:
        support = torch.nonzero(plan.law[s] > 0).flatten().tolist()
        shown = listed(names[c] for c in support[:FEW])
        if len(support) > FEW:
            shown = msg("{shown}, ... ({more} more)", shown=shown, more=len(support) - FEW)
        return msg("the only possible outcome is {shown}", shown=shown) if len(support) == 1 else msg(
            "possible: {shown}", shown=shown)

    def _support(self, plan: Plan, seen: list, names: list) -> Verdict:
        rows = torch.arange(plan.law.shape[0])
        for k, s in enumerate(seen):
            bad = torch.nonzero(plan.law[rows, s] == 0).flatten()
            if bad.numel():
                j = int(bad[0])
                return Verdict("impossible-draw", _in_call(msg(
                    "{slot} is {outcome}, which has probability 0 here ({possible}); {bad:,} of {total:,} draws of "
                    "that call are impossible", slot=self._slot(plan, j), outcome=names[int(s[j])],
                    possible=self._possible(plan, j, names), bad=int(bad.numel()), total=s.numel()), k, plan.calls))
        return Verdict()

    def _distribution(self, plan: Plan, counts: torch.Tensor, names: list) -> Verdict:
        lo, hi, _ = plan.regions[TARGET]
        out = (counts < lo) | (counts > hi)
        if not out.any():
            return Verdict()
        p = plan.law[plan.first]
        n = plan.n[:, None].to(torch.float64).expand_as(p)
        z = (counts - n * p).abs() / (n * p * (1 - p)).clamp_min(1e-12).sqrt()
        g, c = divmod(int(torch.where(out, z, torch.full_like(z, -1.0)).flatten().argmax()), p.shape[1])
        x, m, s = int(counts[g, c]), int(plan.n[g]), int(plan.first[g])
        alike = int(plan.n[g]) // plan.calls
        where = "" if plan.first.shape[0] == 1 else (
            msg(" at {slot} and the {n} other slots of the same law", slot=self._slot(plan, s), n=alike - 1)
            if alike > 1 else msg(" at {slot}", slot=self._slot(plan, s)))
        return Verdict("distribution",
                       msg("{outcome} came up {x:,} times in {m:,} draws{where} ({share:.2%}); its probability is "
                           "{p:.4g}, so a correct solution gives {lo:,} to {hi:,} (it falls outside with probability "
                           "below {alpha:.0e})", outcome=names[c], x=x, m=m, where=where, share=x / m,
                           p=float(p[g, c]), lo=int(lo[g, c]), hi=int(hi[g, c]), alpha=self._alpha))

    def _reproducible(self, plan: Plan, seen: list, again: list, names, seed) -> Verdict:
        for k, (a, b) in enumerate(zip(seen, again)):
            if not torch.equal(a, b):
                j = int(torch.nonzero(a != b).flatten()[0])
                where = msg("in call {k} of {n}, ", k=k + 1, n=plan.calls) if plan.calls > 1 else ""
                return Verdict("irreproducible",
                               msg("the same generator seed gave different draws: {where}{slot} was {first}, then "
                                   "{second} when run again on a new torch.Generator().manual_seed({seed}); draw only "
                                   "from `generator` (torch.multinomial(..., generator=generator), torch.rand(..., "
                                   "generator=generator)), never from the global RNG", where=where,
                                   slot=self._slot(plan, j), first=names[int(a[j])], second=names[int(b[j])],
                                   seed=seed))
        return Verdict()

    def _fresh(self, plan: Plan, seen: list) -> Verdict:
        if not plan.fresh or any(not torch.equal(seen[0], s) for s in seen[1:]):
            return Verdict()
        return Verdict("repeated-draws",
                       msg("{n} successive calls on one generator all gave the same draws: each call must go on "
                           "drawing from `generator` where the last one left it (do not create or re-seed a generator "
                           "inside your function)", n=plan.calls))


def _in_call(said: str, k: int, calls: int) -> str:
    """'call 2 of 3: ...' when the case makes several calls."""
    return msg("call {k} of {n}: {said}", k=k + 1, n=calls, said=said) if calls > 1 else said


def close_to(got: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Elementwise: is `got` `value` within the dtype's tolerance (for observers of real-valued results)."""
    rtol, atol = TOLERANCE.get(value.dtype, TOLERANCE[torch.float32])
    return torch.isclose(got, value.to(got.dtype), rtol=rtol, atol=atol)


__all__ = ["Draws", "Plan", "SamplingMistake", "StochasticExercise", "alike", "close_to", "draws", "index_names",
           "indices", "isolated_rng", "reseed"]
