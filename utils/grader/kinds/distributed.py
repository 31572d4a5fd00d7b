"""The distributed kind: code that every rank of a real `torch.distributed` group runs (gloo backend, one
CPU process per rank, started by the grader: see `procgroup.py`), the default process group initialised.

case: OnGroup(make, world_size=N); make(rank, world_size) builds that rank's inputs (seeded inside):

    (args, kwargs)      a function, called on every rank (ring_all_reduce(tensor), sync_gradients(model))
    Layer(init, inputs) a class, constructed and run forward and backward on every rank (ColumnParallelLinear)

The oracle runs on the same groups. The parts, rank by rank ("rank 2 of 3: `tensor` after the call"):

    function    each tensor argument after the call (in-place results); each module argument's every .grad,
                and its parameters left unchanged; the returned value (None also when the function returns
                its own argument, as in-place methods do)
    class       the parameters' names and shapes, the output, the gradients of the parameters and inputs
    traffic     when declared: the bytes the rank handed to point-to-point sends (send, isend,
                batch_isend_irecv), within the contract's (low, high); the oracle's by definition

An exception names its rank ("your code raised ValueError (rank 2 of 3): ...") and the reader's own line; a
communication that never completes (a deadlock, a message never sent) is stopped after `timeout` seconds and
reported as a time-out, saying where each rank was waiting; no process outlives the check. Forbidden calls
(collectives named "torch.distributed.all_reduce", ...) are intercepted in every rank.

Speed: a target's cases run in one launch, every world size's group at once, each group running its cases
in order; outcomes are kept, so the diagnosis reuses them. The oracle's and the registered mistakes' are kept
for good (declared code is deterministic); the reader's for one check (`structure` starts every check).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from ...i18n import msg, tr
from ..compare import Verdict
from ..core import Case, Exercise
from ..procgroup import SENT, PackedError, RankResult, run_groups
from ..protocol import Outcome, describe, detached, gradients, listed, requiring_grad
from ..sandbox import TimeLimitExceeded, guarded, reader_frame

SLACK = 0.25    # s the Python time limit leaves after the gloo timeout, so a rank waiting in C++ reports as waiting
# where a rank's code raised, by the stage it had reached
STAGES = {"call": "rank {r} of {world}", "constructor": "rank {r} of {world}, in the constructor",
          "forward": "rank {r} of {world}, in the forward", "backward": "rank {r} of {world}, in the backward"}


@dataclass(frozen=True)
class OnGroup(Case):
    """A case run on a group of `world_size` processes: `make(rank, world_size)` builds that rank's inputs,
    (args, kwargs) for a function, a `Layer` for a class."""

    world_size: int = 2


@dataclass
class Layer:
    """A class on one rank: `target(*init)`, `forward(*inputs)`, then backward of a seeded projection of the
    output (the same on every rank, as when every rank computes the same loss)."""

    init: tuple                 # (args, kwargs) of the constructor
    inputs: tuple               # (args, kwargs) of forward
    input_grad: bool = True     # compare the gradients of the floating inputs too


class _Brief:
    """A module argument as the report shows it."""

    def __init__(self, m: nn.Module):
        self.text = msg("{name} ({n} parameters, {numbers:,} numbers)", name=type(m).__name__,
                        n=len(list(m.parameters())), numbers=sum(p.numel() for p in m.parameters()))

    def __repr__(self):         # in the reader's language: the call is described as the check runs
        return tr(self.text)


def _waiting(e: BaseException) -> bool:
    """Did a communication give up: gloo's timeout, or a peer that went away while this rank waited?"""
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in ("Timed out", "Connection closed by peer",
                                                                   "Connection reset by peer"))


def _returned(value, given: list):
    """The returned value as a part: None also for the function's own argument (as in-place methods return
    it); tensors, numbers and strings (in lists and tuples) as they are; anything else by its type."""
    if value is None or any(value is a for a in given):
        return None
    plain = (torch.Tensor, int, float, bool, str)
    if isinstance(value, plain) or isinstance(value, (list, tuple)) and all(isinstance(v, plain) for v in value):
        return detached(value)
    t = type(value)
    return f"a {t.__name__ if t.__module__ == 'builtins' else t.__module__ + '.' + t.__name__} object"


@dataclass
class DistributedExercise(Exercise):
    """The oracle is a function or class with the exercise's interface, run on the same groups (a built-in
    collective, or a plain loop specification). Declare mistakes that hang (deadlocks) last: a group stops at
    a hang, and the mistakes share their groups. Properties are not supported (the parent has no group).

    traffic       (args, world_size) -> (low, high): the bytes one rank may send through point-to-point
                  calls, given its own arguments (a Layer: its forward arguments); None: not checked
    traffic_rule  the contract in words, shown when it is broken
    timeout       seconds a blocking communication may wait (and a rank's code may run) before the group is
                  stopped
    """

    traffic: Callable | None = None
    traffic_rule: str = ""
    timeout: float = 1.0
    kind = "distributed"
    promise = 5.0       # a check forks a gloo group of 1 to 4 processes per world size

    def __post_init__(self):
        super().__post_init__()
        self._runs = {}     # id(target) -> (target, {case index: Outcome})
        self._reader = None

    def structure(self, target):
        self._runs = {k: v for k, v in self._runs.items() if self._declared(v[0])}
        bad = super().structure(target)
        self._reader = None if bad else target
        return bad

    def pristine_inputs(self, case):
        return ()

    def _declared(self, target) -> bool:
        return any(target is d for d in (self.oracle, *(m.impl for m in self.mistakes)))

    def _done(self, target) -> dict:
        return self._runs.setdefault(id(target), (target, {}))[1]

    # -- the parent: launch groups, keep outcomes
    def outcome(self, target, case, guard) -> Outcome:
        cases = self.all_cases()
        index = next((i for i, c in enumerate(cases) if c is case), None)
        if index is None:                           # a case from elsewhere: run it alone
            return self._launch([(target, case)])[0]
        while index not in self._done(target):
            items = self._plan(target, index)
            for (t, i), out in zip(items, self._launch([(t, cases[i]) for t, i in items])):
                if out is not None:
                    self._done(t)[i] = out
        return self._done(target)[index]

    def _plan(self, target, index: int) -> list:
        """What to run with the requested (target, case): [(target, case index)], in order.

        The oracle's cases come with the reader's (a check needs both). A mistake comes with every mistake's
        missing cases (the diagnosis asks them all about the failing case, then the matching ones about every
        case; they are kept for good): one launch instead of one per mistake. A group runs its items in
        order and stops at a hang, so the requested item comes first (every launch makes progress) and a
        mistake that deadlocks is best declared last."""
        n = len(self.all_cases())
        missing = lambda t: [(t, i) for i in range(n) if i not in self._done(t)]   # noqa: E731
        if target is self.oracle:
            reader = self._reader
            return missing(target) + (missing(reader) if reader is not None and not self._declared(reader) else [])
        first = [(target, index)] + [(target, i) for _, i in missing(target) if i != index]
        if not any(target is m.impl for m in self.mistakes):
            return first
        return first + [item for m in self.mistakes if m.impl is not target for item in missing(m.impl)]

    def _launch(self, items: list) -> list:
        """Run [(target, case)] on one group per world size, all groups at once, each group's items in order.
        An Outcome per item, or None for an item that did not run (a rank failed in an earlier item of its
        group); an item after a hang of the same target in its group counts as hung too."""
        plans = {}
        for k, (_, case) in enumerate(items):
            plans.setdefault(case.world_size, []).append(k)
        results = run_groups(partial(self._on_rank, items), plans, self.timeout)
        outcomes = [None] * len(items)
        for world, keys in plans.items():
            ran = results[world]
            for k, ranks in zip(keys, ran):
                target, case = items[k]
                outcomes[k] = self._gather(ranks, world, case)
                if not self._declared(target):
                    for r, res in enumerate(ranks):
                        for line in res.output.splitlines():
                            print(f"[rank {r}] {line}")
            last = outcomes[keys[len(ran) - 1]] if ran else None
            if last is not None and isinstance(last.error, TimeLimitExceeded):
                hung = items[keys[len(ran) - 1]][0]
                for k in keys[len(ran):]:
                    target, case = items[k]
                    if target is hung:
                        outcomes[k] = replace(last, call=msg("{call}   [not run: the group hung in an earlier case]",
                                                             call=self._call(None, world, case)))
        return outcomes

    def _call(self, text, world, case) -> str:
        if text is None:
            text = self._describe(case.make(0, world))
        return msg("{name}({call}) on {world} ranks" if world > 1 else "{name}({call}) on {world} rank",
                   name=self.name, call=text, world=world)

    @staticmethod
    def _briefs(args, kwargs):
        brief = lambda v: _Brief(v) if isinstance(v, nn.Module) else v     # noqa: E731
        return tuple(brief(a) for a in args), {k: brief(v) for k, v in kwargs.items()}

    def _gather(self, ranks: list, world: int, case) -> Outcome:
        """One Outcome from every rank's report: all parts rank by rank, or the failure that explains it."""
        calls = [r.value[0] for r in ranks if r.value is not None]
        out = Outcome(call=self._call(calls[0] if calls else None, world, case))
        if all(r.status == "ok" for r in ranks):
            out.parts = [(msg("rank {r} of {world}: {label}", r=r, world=world, label=label), v)
                         for r, res in enumerate(ranks) for label, v in res.value[1]]
            return out
        errors = [r for r, res in enumerate(ranks) if res.status in ("error", "died")]
        if errors:
            r = errors[0]
            stage = ranks[r].value[1] if ranks[r].value is not None else "call"
            out.error, out.stage = ranks[r].error.rebuild(), msg(STAGES[stage], r=r, world=world)
            return out
        order = {"timeout": 0, "silent": 1, "stuck": 2}
        r = min((r for r, res in enumerate(ranks) if res.status in order), key=lambda r: (order[ranks[r].status], r))
        what = self._hang(ranks, world, where=False)
        out.error = ranks[r].error.rebuild(what) if ranks[r].error else TimeLimitExceeded(what)
        out.stage = msg(STAGES["call"], r=r, world=world)
        out.call = msg("{call}   [{hang}]", call=out.call, hang=self._hang(ranks, world, where=True))
        return out

    def _hang(self, ranks: list, world: int, where: bool) -> str:
        """What every rank was doing when the group was stopped; `where` adds each rank's line (the message
        of the error leaves them out, so that the same hang in other code is recognised as the same mistake)."""
        def at(res):
            frame = reader_frame(res.error.rebuild(), code=False) if where and res.error else None
            return msg(" at {place}", place=frame) if frame else ""
        doing = {"ok": "rank {r} had returned", "timeout": "rank {r} was still running{at} (an endless loop?)",
                 "stuck": "rank {r} was waiting for a message{at}", "silent": "rank {r} never returned"}
        said = listed((msg(doing[res.status], r=r, at=at(res)) for r, res in enumerate(ranks)), "; ")
        # the last clause names the kind of hang; the engine matches hangs by it alone (which rank had got where
        # when the group was stopped depends on the machine's load): a rank slow to report counts as waiting
        waiting = [res.status in ("stuck", "silent") for res in ranks]
        if world > 1 and all(waiting) and any(res.status == "stuck" for res in ranks):
            kind = "every rank waits for another, a deadlock"
        elif any(res.status == "stuck" for res in ranks) and not any(res.status == "timeout" for res in ranks):
            kind = "a rank waits for a message that is never sent"
        else:
            kind = "a rank never finished"
        return msg("stopped after {seconds:g} s: {ranks}: {kind}", seconds=self.timeout, ranks=said, kind=kind)

    # -- a child: one rank of one case
    def _on_rank(self, items: list, rank: int, world: int, k: int) -> RankResult:
        target, case = items[k]
        made = case.make(rank, world)
        where, stage = msg(STAGES["call"], r=rank, world=world), ["call"]
        inputs = made.inputs[0] if isinstance(made, Layer) else made[0]
        bounds = self.traffic(inputs, world) if self.traffic is not None else None
        guard = (lambda: guarded(self.forbidden, self.timeout + SLACK)) if target is not self.oracle else nullcontext
        drive = self._layer if isinstance(made, Layer) else self._function
        call = self._describe(made)
        SENT["bytes"] = 0
        try:
            parts = drive(target, made, where, guard, stage)
        except BaseException as e:
            status = "timeout" if isinstance(e, TimeLimitExceeded) else "stuck" if _waiting(e) else "error"
            return RankResult(status, (call, stage[0]), PackedError.of(e))
        if bounds is not None:
            low, high = bounds
            sent = SENT["bytes"]
            ok = target is self.oracle or low <= sent <= high
            span = msg("{n:,} bytes", n=low) if low == high else msg("{low:,} to {high:,} bytes", low=low, high=high)
            parts.append(("bytes sent point to point", Verdict() if ok else Verdict(
                "traffic", msg("{where} sent {sent:,} bytes through send/isend; {rule}: {span} per rank", where=where,
                               sent=sent, rule=self.traffic_rule, span=span), key=sent)))
        return RankResult("ok", (call, parts))

    def _describe(self, made) -> str:
        if isinstance(made, Layer):
            return f"{describe(*self._briefs(*made.init))}).forward({describe(*made.inputs)}"
        return describe(*self._briefs(*made))

    def _function(self, target, made, where: str, guard, stage) -> list:
        """Call the function; the parts are its arguments after the call and what it returned."""
        args, kwargs = made
        before = {id(m): [p.detach().clone() for p in m.parameters()] for m in (*args, *kwargs.values())
                  if isinstance(m, nn.Module)}
        with guard():
            value = target(*args, **kwargs)
        parts = []
        names = self._names(len(args)) + list(kwargs)
        given = [*args, *kwargs.values()]
        for name, a in zip(names, given):
            if isinstance(a, torch.Tensor):
                parts.append((msg("`{name}` after the call", name=name), detached(a)))
            elif isinstance(a, nn.Module):
                named = list(a.named_parameters())
                parts += [(msg("gradient of {name}", name=f"{name}.{n}"), None if p.grad is None else detached(p.grad))
                          for n, p in named]
                changed = [n for (n, p), b in zip(named, before[id(a)])
                           if not torch.equal(torch.nan_to_num(p.detach()), torch.nan_to_num(b))]
                parts.append((msg("parameters of {name} unchanged", name=name), Verdict() if not changed else Verdict(
                    "mutated-input", msg("{where}: your code changed the values of {name}; only the gradients should "
                                         "change", where=where, name=f"{name}.{changed[0]}"), key=tuple(changed))))
        parts.append(("returned value", _returned(value, given)))
        return parts

    def _layer(self, target, made: Layer, where: str, guard, stage) -> list:
        """Construct the class, run forward, then backward of a seeded projection of the output (the same on
        every rank); the parts are the parameters' names and shapes, the output and the gradients."""
        (a, kw), (x, xkw) = made.init, made.inputs
        stage[0] = "constructor"
        with guard():
            m = target(*a, **kw)
        shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
        parts = [("parameters (names and shapes)", shapes)]
        if shapes != {n: tuple(p.shape) for n, p in self.oracle(*a, **kw).named_parameters()}:
            return parts                            # nothing else can match: say so before forward fails
        leaves = []
        if made.input_grad:
            x, leaves = requiring_grad(x)
        stage[0] = "forward"
        with guard():
            y = m(*x, **xkw)
        parts.append(("output", detached(y)))
        stage[0] = "backward"
        wrt = {**{msg("gradient of {name}", name=n): p for n, p in m.named_parameters()},
               **{msg("gradient of input {i}", i=i): t for i, t in enumerate(leaves)}}
        out = Outcome()
        grads = gradients(y, wrt, guard, out, seed=99)
        if out.error is not None:
            raise out.error
        cut = next((g for g in grads.values() if isinstance(g, str)), None)
        parts.append(("output connected to the autograd graph", Verdict() if cut is None else Verdict(
            "no-grad", msg("{where}: {cut}", where=where, cut=cut))))
        return parts + ([] if cut else list(grads.items()))

    def _names(self, n: int) -> list:
        inside = self.signature.partition("(")[2].rpartition(")")[0]
        names = [p.split("=")[0].split(":")[0].strip().lstrip("*") for p in inside.split(",") if p.strip()]
        return (names + [msg("argument {i}", i=i) for i in range(len(names), n)])[:n]
