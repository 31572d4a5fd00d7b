"""The plain kind: functions and classes whose results are plain Python values (int, float, str, bytes,
bool, None, and lists, tuples and dicts of them): BPE vocabularies and merges, token ids, Viterbi paths,
edit distances, substrings. Arguments may be plain values or tensors.

Results are compared exactly: floats too, unless the declaration gives `tolerance={float: (rtol, atol)}`;
list and tuple are told apart (`sequences="exact"`, the default, since contracts such as
`list[tuple[bytes, bytes]]` fix them; `sequences="any"` accepts either). The report names the first
difference: `output[3][1]`, `vocab[257]`, the missing and unexpected keys of a dict, the position in a text
with a window of context around it. The reader's code must leave its arguments as they were: each call's
arguments are deep-copied before and compared after, a part of its own ("arguments").

    PlainExercise       a function: case.make() -> (args, kwargs), as the function kind
    PlainClassExercise  a class: case.make() -> Session(init=(args, kwargs), calls=[Method(...), ...]): the
                        instance is built, then its methods are called in order, each result a labelled part
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...i18n import msg
from ..compare import TOLERANCE, Verdict, at
from ..core import Exercise
from ..protocol import Outcome, attempt, describe, detached

PLAIN = (int, float, str, bytes, bool, type(None))


def show(v) -> str:
    """An argument as a reader recognises it: short values as written, long ones by their size."""
    if isinstance(v, torch.Tensor):
        return describe((v,))
    r = repr(v)
    if len(r) <= 48:
        return r
    if isinstance(v, (str, bytes)):
        unit = "characters" if isinstance(v, str) else "bytes"
        return f"{r[:40]}...{r[0] if isinstance(v, str) else r[1]} ({len(v):,} {unit})"
    if isinstance(v, (list, tuple)):
        kinds = "/".join(sorted({type(x).__name__ for x in v}))
        return f"{type(v).__name__} of {len(v):,} {kinds}{'' if len(v) == 1 else 's'}"
    if isinstance(v, dict):
        keys = sorted({type(k).__name__ for k in v})
        values = sorted({type(x).__name__ for x in v.values()})
        return f"dict of {len(v):,} entries ({'/'.join(keys)} -> {'/'.join(values)})"
    return r[:45] + "..."


def copied(call: tuple) -> tuple:
    """A deep copy of (args, kwargs), argument by argument; one that cannot be copied (a generator object) is
    passed as it is."""
    def one(v):
        try:
            return copy.deepcopy(v)
        except Exception:
            return v
    args, kwargs = call
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def shown(args, kwargs) -> str:
    return ", ".join([show(a) for a in args] + [f"{k}={show(v)}" for k, v in kwargs.items()])


def changed(before, after, where: str) -> str | None:
    """The first place where `after` differs from its deep copy `before`, or None. Objects that are not plain
    values, containers or tensors are not looked into."""
    if isinstance(before, torch.Tensor):
        same = (isinstance(after, torch.Tensor) and before.shape == after.shape and before.dtype == after.dtype
                and torch.equal(torch.nan_to_num(before.detach()), torch.nan_to_num(after.detach())))
        return None if same else where
    if isinstance(before, (list, tuple)):
        if type(after) is not type(before) or len(after) != len(before):
            return where
        for i, (b, a) in enumerate(zip(before, after)):
            w = changed(b, a, at(where, i))
            if w:
                return w
        return None
    if isinstance(before, dict):
        if not isinstance(after, dict) or set(after) != set(before):
            return where
        for k in before:
            w = changed(before[k], after[k], at(where, repr(k)))
            if w:
                return w
        return None
    if isinstance(before, (set, frozenset, bytearray) + PLAIN):
        nan = isinstance(before, float) and before != before and after != after
        return None if nan or (type(after) is type(before) and after == before) else where
    return None


def parameter_names(fn, n: int) -> list[str]:
    """The names of the first n positional parameters of `fn` (the oracle's: the same for every target)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else msg("argument {i}", i=i) for i in range(n)]


def untouched(before, args, kwargs, names, what: str) -> Verdict:
    """Verdict() when the call left its arguments as they were (compared with their deep copy `before`)."""
    old_args, old_kwargs = before
    pairs = [(n, b, a) for n, b, a in zip(names, old_args, args)]
    pairs += [(k, old_kwargs[k], kwargs[k]) for k in kwargs]
    for name, b, a in pairs:
        where = changed(b, a, name)
        if where:
            return Verdict("mutated-input",
                           msg("{what} changed its argument `{name}` in place ({where} differs after the call); leave "
                               "the inputs as they were: work on a copy (list(x), dict(x), x.copy(), x.clone())",
                               what=what, name=name, where=where), key=name)
    return Verdict()


@dataclass
class PlainExercise(Exercise):
    """returns    names of the parts of a tuple result, as the contract gives them: ("vocab", "merges");
                  () for a single result, labelled "output"
    sequences     "exact": list and tuple must be the contract's; "any": either is accepted
    """

    returns: tuple = ()
    sequences: str = "exact"
    kind = "plain"

    def tol(self) -> dict:
        return {**TOLERANCE, float: (0.0, 0.0), "sequences": self.sequences, **self.tolerance}

    def pristine_inputs(self, case):
        """The case's arguments (the "arguments" part checks them, plain values and tensors alike)."""
        made = case.make()
        return made.init[0] if isinstance(made, Session) else made[0]

    def results(self, value) -> list:
        """The labelled parts of one result: the whole, or each named item of a tuple."""
        if not self.returns:
            return [("output", detached(value))]
        n = len(self.returns)
        kinds = (tuple,) if self.sequences == "exact" else (tuple, list)
        if not isinstance(value, kinds) or len(value) != n:
            if value is None:
                return [("output", Verdict("returned-none", msg("{where} is None: did you forget `return`?",
                                                                where="output"), key=None))]
            got = (msg("a {name} of {n}", name=type(value).__name__, n=len(value)) if isinstance(value, (tuple, list))
                   else msg("a {name}", name=type(value).__name__))
            return [("output", Verdict("wrong-type", msg("output is {got}; expected a tuple of {n}: ({names})", got=got,
                                                         n=n, names=", ".join(self.returns)),
                                       key=type(value).__name__))]
        named = [(msg("{name}", name=name), detached(v)) for name, v in zip(self.returns, value)]  # shown as named
        return [("output", Verdict())] + named

    def outcome(self, target, case, guard) -> Outcome:
        args, kwargs = copied(case.make())      # a list bound in the declaration is never the one changed
        out = Outcome(call=f"{self.name}({shown(args, kwargs)})")
        before = copied((args, kwargs))
        with attempt(out, "call", guard):
            value = target(*args, **kwargs)
        if out.failed:
            return out
        out.parts = self.results(value)
        if all(not isinstance(v, Verdict) or v.holds for _, v in out.parts):
            names = parameter_names(self.oracle, len(args))
            out.parts.append(("arguments", untouched(before, args, kwargs, names, "your code")))
        return out


# --------------------------------------------------------------------------- classes

@dataclass(frozen=True)
class Method:
    """One method call on the instance. `feed(results) -> (args, kwargs)` builds the arguments from the
    results of the earlier calls instead (decode what encode returned)."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    feed: Callable | None = None


def method(name: str, *args, feed: Callable | None = None, **kwargs) -> Method:
    """method("encode", "你好") -> Method("encode", ("你好",)); method("decode", feed=lambda r: ((r[0],), {}))."""
    return Method(name, args, kwargs, feed)


@dataclass
class Session:
    init: tuple                                     # (args, kwargs) of the constructor
    calls: list = field(default_factory=list)       # [Method, ...]


@dataclass
class PlainClassExercise(PlainExercise):
    """`oracle` is a class with the exercise's interface; the reader's class is built with the same arguments
    and driven through the same calls. The parts: the constructor's arguments left unchanged, then for
    call k its result ("call k: encode(...)") and its arguments left unchanged."""

    kind = "plain-class"

    def structure(self, target):
        if not isinstance(target, type):
            what = "an instance" if not callable(target) else type(target).__name__
            return msg("check('{name}', ...) expects your class itself, not {what}", name=self.name, what=what)
        return None

    def outcome(self, target, case, guard) -> Outcome:
        session: Session = case.make()
        args, kwargs = copied(session.init)
        init = f"{self.name}({shown(args, kwargs)})"
        out = Outcome(call=init)
        before = copied((args, kwargs))
        with attempt(out, "construct", guard):
            obj = target(*args, **kwargs)
        if out.failed:
            return out
        names = parameter_names(self.oracle.__init__, len(args) + 1)[1:]
        out.parts.append(("constructor arguments", untouched(before, args, kwargs, names, "your constructor")))
        results, described = [], []
        for k, m in enumerate(session.calls, 1):
            try:      # arguments fed from the reader's own earlier results may not be what feed expects
                a, kw = m.feed(results) if m.feed else copied((m.args, m.kwargs))
            except Exception as e:
                out.error, out.stage = e, msg("call {k}, {name} (feeding back your earlier results)", k=k,
                                              name=m.name)
                break
            described.append(f"{k}: {m.name}({shown(a, kw)})")
            before = copied((a, kw))
            with attempt(out, msg("call {k}, {name}", k=k, name=m.name), guard):
                value = getattr(obj, m.name)(*a, **kw)
            if out.failed:
                break
            out.parts.append((msg("call {k}: {name}(...)", k=k, name=m.name), detached(value)))
            arg_names = parameter_names(getattr(self.oracle, m.name), len(a) + 1)[1:]
            out.parts.append((msg("call {k}: arguments of {name}", k=k, name=m.name),
                              untouched(before, a, kw, arg_names, msg("your {name}", name=m.name))))
            results.append(value)
        out.call = init + "; " + "; ".join(described) if described else init
        return out

