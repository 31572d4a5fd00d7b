"""The grader's engine: exercises are declared as data (see `exercises/`); this module runs them.

An exercise knows how to *drive* anything with its interface (the reader's function, module class or
optimizer class; the oracle built from PyTorch; each registered mistake) through a case, producing an
`Outcome`: labelled parts of the result, the inputs as they were afterwards, gradients, or an error.
The engine compares the reader's outcome with the oracle's, case by case, and on the first failure
compares it with every known mistake to name what went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .compare import TOLERANCE, Problem, compare, same
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
class Outcome:
    parts: list = field(default_factory=list)     # [(label, value)], compared in order
    inputs_after: tuple = ()                      # the call's tensor inputs after the call
    grads: dict | None = None                     # {label: gradient}
    error: BaseException | None = None
    stage: str = ""                               # where the error happened: "call", "backward", ...
    call: str = ""                                # the call, described for the report


def call_arguments(args, kwargs) -> str:
    """softmax(x: float32 (3, 5) non-contiguous, dim=0) style description of the arguments."""
    def one(v):
        if isinstance(v, torch.Tensor):
            s = f"{str(v.dtype).replace('torch.', '')} {tuple(v.shape)}"
            if v.dim() > 1 and not v.is_contiguous():
                s += " non-contiguous"
            if v.requires_grad:
                s += " requires_grad"
            return s
        if isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
            return "[" + ", ".join(one(t) for t in v) + "]"
        r = repr(v)
        return r if len(r) < 60 else r[:57] + "..."
    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _detach(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_detach(o) for o in obj)
    if isinstance(obj, list):
        return [_detach(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


def _cotangent(t: torch.Tensor, seed: int = 1234) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)


def requiring_grad(args: tuple) -> tuple[tuple, list]:
    """The arguments with every floating tensor made a fresh leaf that requires grad, and those leaves."""
    args = tuple(a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)
    return args, [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def gradients(value, wrt: dict, guard, out: Outcome, seed: int = 1234) -> dict | None:
    """{label: gradient} of a seeded random projection of every floating output in `value` with respect to
    the tensors `wrt` ({label: tensor}); a message when the output is cut from the graph; None after an
    error in backward (recorded in `out`)."""
    outputs = [t for t in _tensors(value) if t.is_floating_point() and t.requires_grad]
    if not outputs:
        return {"input gradient": "the result is not connected to the inputs in the autograd graph "
                                  "(.detach(), .data, torch.no_grad() or numpy break it)"}
    loss = sum((t * _cotangent(t, seed + k)).sum() for k, t in enumerate(outputs))
    try:
        with _enter(guard):
            grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    except (Exception, TimeLimitExceeded) as e:
        out.error, out.stage = e, "backward"
        return None
    return {label: (torch.zeros_like(t) if g is None else g.detach()) for (label, t), g in zip(wrt.items(), grads)}


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
    hint        the general hint shown under a failure
    timeout     seconds one call of the reader's code may take
    bench       optional, for `python -m utils.bench`: (make_inputs, builtin), plus the constructor's
                (args, kwargs) for modules or the hyper-parameters for optimizers
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
    timeout: float = 5.0
    bench: Any = None
    kind = "function"

    def __post_init__(self):
        self._cases = None
        self._expected = {}

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
        leaves = []
        if case.grad:
            args, leaves = requiring_grad(args)
        out = Outcome(call=f"{self.name}({call_arguments(args, kwargs)})")
        try:
            with _enter(guard):
                value = target(*args, **kwargs)
        except (Exception, TimeLimitExceeded) as e:
            out.error, out.stage = e, "call"
            return out
        out.parts = [("output", _detach(value))]
        out.inputs_after = tuple(_detach(a) for a in args)
        if leaves:
            out.grads = gradients(value, {f"gradient of input {i}": t for i, t in enumerate(leaves)}, guard, out)
        return out

    def pristine_inputs(self, case: Case) -> tuple:
        args, _ = case.make()
        return args

    def structure(self, target) -> str | None:
        """A message when the reader's object cannot be an implementation at all."""
        if not callable(target):
            return f"check('{self.name}', ...) expects your function; got {target!r} ({type(target).__name__})"
        return None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _enter(guard):
    """`guard` is a factory of context managers (a fresh one per use), or None for the oracle."""
    return guard() if guard is not None else _nothing()


# --------------------------------------------------------------------------- the report

@dataclass
class Failure:
    case: int
    note: str
    call: str
    problem: Problem
    diagnosis: str | None = None
    mistake: str | None = None
    frame: str | None = None


@dataclass
class Report:
    name: str
    signature: str
    status: str                     # "passed" | "failed" | "not attempted"
    n_cases: int
    n_passed: int
    failure: Failure | None = None
    checks: list = field(default_factory=list)   # what passed besides values: properties, purity, ...
    hint: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def diagnosis(self) -> str | None:
        return self.failure.diagnosis if self.failure else None

    @property
    def kind(self) -> str | None:
        return self.failure.problem.kind if self.failure else None

    def __str__(self) -> str:
        from .report import as_text
        return as_text(self)

    __repr__ = __str__      # Jupyter's text/plain and the terminal show the same one-screen report

    def _repr_html_(self) -> str:
        from .report import as_html
        return as_html(self)


# --------------------------------------------------------------------------- the engine

def _error_problem(out: Outcome, ex: Exercise) -> Problem:
    e = out.error
    if isinstance(e, TimeLimitExceeded):
        return Problem("timeout", f"your code was stopped after {ex.timeout:g} s: is there an endless loop?")
    if isinstance(e, ForbiddenCall):
        return Problem("forbidden-call", f"your code calls {e.name}, which this exercise asks you to write "
                                         "yourself")
    where = {"call": "", "backward": " during backward", "construct": " in the constructor",
             "load_state_dict": " while loading a state_dict"}.get(out.stage, f" ({out.stage})")
    return Problem("exception", f"your code raised {type(e).__name__}{where}: {e}")


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
                return Problem("mutated-input", f"your code changed its input (argument {i}) in place; "
                                                "compute into new tensors instead")
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

    A mistake is named only if it matches the reader on the failing case and on every other case where
    the mistake shows (differs from the oracle): a coincidence on one case is not a diagnosis. Among
    the survivors, the one that agrees with the reader on most cases wins.
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
        for m in [m for m in candidates if m.name in score]:
            theirs = ex.outcome(m.impl, case, ex.guard)
            if _matches(theirs, mine):
                score[m.name] += 1
            elif not _matches(theirs, ex.expected(j)):
                del score[m.name]          # the mistake shows here, and the reader's code does otherwise
    survivors = [m for m in candidates if m.name in score]
    return max(survivors, key=lambda m: score[m.name]) if survivors else None


def evaluate(ex: Exercise, impl) -> Report:
    start = time.perf_counter()
    cases = ex.all_cases()
    report = Report(ex.name, ex.signature, "failed", len(cases), 0, hint=ex.hint)

    def done(failure=None, status=None):
        report.failure = failure
        report.status = status or ("failed" if failure else "passed")
        report.seconds = time.perf_counter() - start
        return report

    bad = ex.structure(impl)
    if bad:
        return done(Failure(0, "", "", Problem("wrong-type", bad)))
    for i, case in enumerate(cases):
        expected = ex.expected(i)      # the oracle first: its lazy imports happen outside the time limit
        got = ex.outcome(impl, case, ex.guard)
        if isinstance(got.error, NotImplementedError) and i == 0:
            return done(status="not attempted")
        problem = judge(ex, case, expected, got)
        if problem:
            mistake = diagnose(ex, impl, i, got)
            frame = reader_frame(got.error) if got.error is not None else None
            return done(Failure(i, case.note, got.call, problem, mistake.message if mistake else None,
                                mistake.name if mistake else None, frame))
        report.n_passed += 1
    report.checks.append(f"{len(cases)} cases match the reference")
    if any(ex.expected(i).grads for i in range(len(cases))):
        report.checks.append("gradients match")
    report.checks.append("inputs left unchanged")
    if ex.forbidden:
        report.checks.append("no forbidden calls")

    def call(*args, **kwargs):
        with ex.guard():
            return impl(*args, **kwargs)

    for prop in ex.properties:
        try:
            msg = prop.check(call)
        except (Exception, TimeLimitExceeded) as e:
            out = Outcome(error=e, stage="call")
            problem = _error_problem(out, ex)
            problem.message = f"while checking that {prop.name}: {problem.message}"
            return done(Failure(len(cases), prop.name, prop.name, problem, frame=reader_frame(e)))
        if msg:
            return done(Failure(len(cases), prop.name, prop.name,
                                Problem("property", f"{prop.name}: {msg}")))
        report.checks.append(prop.name)
    return done()
