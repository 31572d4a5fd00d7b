"""The grader's engine: exercises are declared as data (see `exercises/`); this module runs them.

An exercise knows how to *drive* anything with its interface (the reader's function, module class or
optimizer class; the oracle built from PyTorch; each registered mistake) through a case, producing an
`Outcome`: labelled parts of the result, the inputs as they were afterwards, gradients, or an error.
The engine compares the reader's outcome with the oracle's, case by case, and on the first failure
compares it with every known mistake to name what went wrong.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..i18n import Msg, msg
from .compare import TOLERANCE, compare, same
from .protocol import Outcome, attempt, describe, detached, gradients, requiring_grad
from .result import Failure, Problem, Report, Status
from .sandbox import ForbiddenCall, TimeLimitExceeded, guarded, reader_frame

# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Case:
    """One deterministic input. `make()` builds fresh inputs on every call (seeded inside)."""

    make: Callable[[], Any]
    note: str = ""          # what this case is about: "extreme values", "non-contiguous", ...
    grad: bool = False      # also compare gradients (inputs made to require grad)
    tolerance: dict | None = None   # per-dtype (rtol, atol) for this case only: inputs of extreme magnitude


@dataclass(frozen=True)
class Mistake:
    """A classic wrong solution, runnable, with the sentence the reader sees when theirs matches it."""

    name: str
    impl: Any
    message: str


@dataclass(frozen=True)
class Property:
    """A named law the reader's code must obey: `check(call)` returns None or what went wrong.

    `call(*args, **kwargs)` runs the reader's implementation under the same guard as the cases.
    """

    name: str
    check: Callable[[Callable], str | None]


@dataclass
class Exercise:
    """A function exercise; subclasses drive module and optimizer classes.

    name        the grader's name, the name the reader defines
    chapter     'foundations/softmax': the chapter notebook that holds the book's solution
    signature   shown in reports: 'softmax(x, dim=-1)'
    oracle      a reference with the same interface, built from PyTorch built-ins or a plain loop
    cases       a function returning the list of Case (called once, then cached)
    mistakes    known wrong solutions with their diagnoses
    properties  laws checked after every case passes
    forbidden   names the reader may not call, as written: 'torch.softmax', 'F.softmax', 'Tensor.softmax'
    tolerance   per-dtype (rtol, atol) overrides
    hint        a single hint: the ladder `(hint,)` when `hints` is empty (older declarations)
    hints       the hint ladder, from a nudge (citing the equation label) to the formula: a failed check shows
                the first rung and says how to ask for the next, `utils.hint(name)`, one rung per call
    timeout     seconds one call of the reader's code may take
    promise     seconds a whole check may take, the first in a fresh kernel included (DESIGN: one second;
                multi-process kinds five); the executor holds each notebook's first check to it
    bench       optional, for `python -m utils.bench`: (make_inputs, builtin), plus the constructor's
                (args, kwargs) for modules or the hyper-parameters for optimizers
    canonical   optional: result -> the same result in one form, where the contract allows several (int4 zero
                points as uint8 or as integers in scale's dtype); applied to every target's result, and it must
                convert only what the contract allows, leaving anything else as it is for the report
    """

    name: str
    chapter: str
    signature: str
    oracle: Any
    cases: Callable[[], list]
    mistakes: list = field(default_factory=list)
    properties: list = field(default_factory=list)
    forbidden: tuple = ()
    tolerance: dict = field(default_factory=dict)
    hint: str = ""
    hints: tuple = ()
    timeout: float = 5.0
    bench: Any = None
    canonical: Callable | None = None
    kind = "function"
    promise = 1.0

    def __post_init__(self):
        self._cases = None
        self._expected = {}

    def ladder(self) -> tuple:
        """The hints, first rung first: `hints`, or `(hint,)` for a declaration that has one string."""
        return tuple(self.hints) or ((self.hint,) if self.hint else ())

    # -- the interface of every kind
    def all_cases(self) -> list:
        if self._cases is None:
            self._cases = list(self.cases())
        return self._cases

    def tol(self) -> dict:
        return {**TOLERANCE, **self.tolerance}

    def guard(self):
        return guarded(self.forbidden, self.timeout)

    def expected(self, i: int) -> Outcome:
        if i not in self._expected:
            out = self.outcome(self.oracle, self.all_cases()[i], guard=None)
            if out.error is not None:
                raise RuntimeError(f"oracle of {self.name} failed on case {i}") from out.error
            self._expected[i] = out
        return self._expected[i]

    def outcome(self, target, case: Case, guard) -> Outcome:
        args, kwargs = case.make()
        # lists and dicts bound into a declaration are shared by every run: a target that edits one in place
        # must not change it for the runs after it (the diagnosis runs every mistake on every case)
        args = tuple(copy.deepcopy(a) if isinstance(a, (list, dict, set)) else a for a in args)
        leaves = []
        if case.grad:
            args, leaves = requiring_grad(args)
        out = Outcome(call=f"{self.name}({describe(args, kwargs)})")
        with attempt(out, "call", guard):
            value = target(*args, **kwargs)
        if out.failed:
            return out
        if self.canonical is not None:
            value = self.canonical(value)
        out.parts = [("output", detached(value))]
        out.inputs_after = tuple(detached(a) for a in args)
        if leaves:
            out.grads = gradients(value, {msg("gradient of input {i}", i=i): t for i, t in enumerate(leaves)},
                                  guard, out)
        return out

    def pristine_inputs(self, case: Case) -> tuple:
        args, _ = case.make()
        return args

    def structure(self, target) -> str | None:
        """A message when the reader's object cannot be an implementation at all."""
        if not callable(target):
            return msg("check('{name}', ...) expects your function; got {got} ({type})", name=self.name,
                       got=repr(target), type=type(target).__name__)
        return None


# --------------------------------------------------------------------------- the engine

def said(e: BaseException) -> str:
    """An exception's message: the grader's own (the scripted model's, a hung group's) keeps its msg() template;
    any other (PyTorch's, the reader's) is quoted as it is, as code in a report shown in Chinese."""
    return e.args[0] if len(e.args) == 1 and isinstance(e.args[0], Msg) else msg("{text}", text=str(e))


_STAGES = {"call": "", "backward": " during backward", "construct": " in the constructor",
           "load_state_dict": " while loading a state_dict"}


def _error_problem(out: Outcome, ex: Exercise) -> Problem:
    e = out.error
    if isinstance(e, TimeLimitExceeded):
        return Problem("timeout", said(e) or msg("your code was stopped after {seconds:g} s: is there an endless "
                                                 "loop?", seconds=ex.timeout))
    if isinstance(e, ForbiddenCall):
        return Problem("forbidden-call", msg("your code calls {name}, which this exercise asks you to write "
                                             "yourself", name=e.name))
    where = _STAGES[out.stage] if out.stage in _STAGES else msg(" ({stage})", stage=out.stage)
    return Problem("exception", msg("your code raised {error}{where}: {detail}", error=type(e).__name__,
                                    where=where, detail=said(e)))


def judge(ex: Exercise, case: Case, exp: Outcome, got: Outcome) -> Problem | None:
    """The first way `got` falls short of `exp`, or None."""
    if got.error is not None:
        return _error_problem(got, ex)
    tol = {**ex.tol(), **(case.tolerance or {})}
    for (label, e), (_, g) in zip(exp.parts, got.parts):
        p = compare(e, g, label, tol)
        if p:
            return p
    if len(got.parts) != len(exp.parts):
        return Problem("incomplete", "your code stopped early")
    for i, (before, after) in enumerate(zip(ex.pristine_inputs(case), got.inputs_after)):
        if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
            if before.shape != after.shape or not torch.equal(torch.nan_to_num(before.detach()),
                                                              torch.nan_to_num(after)):
                return Problem("mutated-input", msg("your code changed its input (argument {i}) in place; "
                                                    "compute into new tensors instead", i=i))
    if exp.grads is not None:
        if got.grads is None:
            return Problem("gradient", "no gradient could be computed through your code")
        for label, g in got.grads.items():
            if isinstance(g, str):
                return Problem("no-grad", g, label)
        for label, e in exp.grads.items():
            g = got.grads.get(label)
            p = compare(e, g, label, tol)
            if p:
                p.kind = "gradient" if p.kind == "wrong-value" else p.kind
                return p
    return None


def _gist(e: BaseException) -> str:
    """An error message with its numbers and quoted names blanked: the same bug gives the same gist."""
    import re
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "#", str(e))


def _matches(a: Outcome, b: Outcome) -> bool:
    """Does the reader's outcome `b` look like the mistake's outcome `a`?"""
    if a.error is not None or b.error is not None:
        if isinstance(a.error, TimeLimitExceeded) and isinstance(b.error, TimeLimitExceeded):
            # both stopped: the kind of hang is the message's last clause; where each process had got to by then
            # depends on the machine's load, so the rest of the message is not compared
            return str(a.error).rsplit(": ", 1)[-1] == str(b.error).rsplit(": ", 1)[-1]
        return (a.error is not None and b.error is not None and type(a.error) is type(b.error)
                and a.stage == b.stage and _gist(a.error) == _gist(b.error))
    if len(a.parts) != len(b.parts) or not all(same(x, y) for (_, x), (_, y) in zip(a.parts, b.parts)):
        return False
    if not same(list(a.inputs_after), list(b.inputs_after)):
        return False
    if a.grads is not None and b.grads is not None:
        return same(a.grads, b.grads)
    return True


def diagnose(ex: Exercise, impl, fail: int, got: Outcome) -> Mistake | None:
    """The registered mistake that the reader's code behaves like, judged on every case.

    A mistake is named only if it matches the reader on the failing case, and on every other case the two
    agree: both pass it, or both fail it the same way. A coincidence on one case is not a diagnosis, and a
    mistake that passes a case the reader's code fails is not what the reader wrote. Among the survivors,
    the one that agrees with the reader on most cases wins.
    """
    cases = ex.all_cases()
    candidates = [m for m in ex.mistakes if _matches(ex.outcome(m.impl, cases[fail], ex.guard), got)]
    if not candidates:
        return None
    score = {m.name: 0 for m in candidates}
    for j, case in enumerate(cases):
        if j == fail or not score:
            continue
        mine = ex.outcome(impl, case, ex.guard)
        mine_passes = judge(ex, case, ex.expected(j), mine) is None
        for m in [m for m in candidates if m.name in score]:
            theirs = ex.outcome(m.impl, case, ex.guard)
            theirs_passes = judge(ex, case, ex.expected(j), theirs) is None
            if _matches(theirs, mine) and mine_passes == theirs_passes:
                score[m.name] += 1
            elif not (mine_passes and theirs_passes):
                del score[m.name]          # one of the two fails this case, and they differ here
    survivors = [m for m in candidates if m.name in score]
    return max(survivors, key=lambda m: score[m.name]) if survivors else None


def evaluate(ex: Exercise, impl) -> Report:
    start = time.perf_counter()
    cases = ex.all_cases()
    ladder = ex.ladder()
    report = Report(ex.name, ex.signature, Status.FAILED, len(cases), 0, hint=ladder[0] if ladder else "",
                    hint_count=len(ladder))

    def done(failure=None, status=None):
        report.failure = failure
        report.status = status or (Status.FAILED if failure else Status.PASSED)
        report.seconds = time.perf_counter() - start
        return report

    bad = ex.structure(impl)
    if bad:
        return done(Failure(0, "", "", Problem("wrong-type", bad)))
    for i, case in enumerate(cases):
        expected = ex.expected(i)      # the oracle first: its lazy imports happen outside the time limit
        got = ex.outcome(impl, case, ex.guard)
        if isinstance(got.error, NotImplementedError) and i == 0:
            return done(status=Status.NOT_ATTEMPTED)
        problem = judge(ex, case, expected, got)
        if problem:
            mistake = diagnose(ex, impl, i, got)
            frame = reader_frame(got.error) if got.error is not None else None
            return done(Failure(i, case.note, got.call, problem, mistake.message if mistake else None,
                                mistake.name if mistake else None, frame))
        report.n_passed += 1
    report.checks.append(msg("{n} cases match the reference", n=len(cases)))
    if any(ex.expected(i).grads for i in range(len(cases))):
        report.checks.append("gradients match")
    if any(ex.pristine_inputs(c) for c in cases):
        report.checks.append("inputs left unchanged")
    if ex.forbidden:
        report.checks.append("no forbidden calls")

    def call(*args, **kwargs):
        with ex.guard():
            return impl(*args, **kwargs)

    for prop in ex.properties:
        out = Outcome(stage="call")
        broken = None
        with attempt(out, "call"):
            broken = prop.check(call)
        if out.failed:
            problem = _error_problem(out, ex)
            problem.message = msg("while checking that {name}: {message}", name=prop.name, message=problem.message)
            return done(Failure(len(cases), prop.name, prop.name, problem, frame=reader_frame(out.error)))
        if broken:
            return done(Failure(len(cases), prop.name, prop.name,
                                Problem("property", msg("{name}: {broken}", name=prop.name, broken=broken))))
        report.checks.append(prop.name)
    return done()
