"""The counting kind: a plain-value function whose cost is part of the contract, measured by counting the
comparisons it makes (top-k with a heap of size k in O(n log k)).

The items of one argument (`counted`, a list of numbers) are handed to the target wrapped in `Counted`, which
compares like the number it holds and counts every <, >, <= and >= (== and hashing are free, and `-x` gives a
Counted too). The result is unwrapped before it is compared exactly, as the plain kind does. The parts:

    output        the result, compared exactly (list and tuple told apart)
    arguments     the arguments left as they were
    comparisons   at most budget(args, kwargs) comparisons (the declaration states the bound and its constant)

A comparison made by a built-in instead of the target's own `<` (sorted, list.sort, heapq's C functions, min,
max, bisect) raises ForbiddenCall: the caller's instruction is not a COMPARE_OP. So a sort, heapq or an O(n k)
scan fails on its own part, and the exact output alone never decides the cost.
"""

from __future__ import annotations

import dis
import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ...i18n import msg
from ..compare import Verdict
from ..protocol import Outcome, attempt
from ..sandbox import ForbiddenCall
from .plain import PlainExercise, copied, parameter_names, shown, untouched

_COMPARE = dis.opmap["COMPARE_OP"]
BUILTIN = msg("a built-in that compares for you (sorted, list.sort, heapq, min, max)")


class Counted:
    """A number that counts the comparisons made with it in `tally` (a one-item list shared by a call)."""

    __slots__ = ("_value", "_tally")

    def __init__(self, value, tally: list):
        self._value, self._tally = value, tally

    def _compare(self, other, op):
        caller = sys._getframe(2)
        if caller.f_code.co_code[caller.f_lasti] != _COMPARE:
            raise ForbiddenCall(BUILTIN)
        self._tally[0] += 1
        return op(self._value, other._value if isinstance(other, Counted) else other)

    def __lt__(self, other):
        return self._compare(other, operator.lt)

    def __le__(self, other):
        return self._compare(other, operator.le)

    def __gt__(self, other):
        return self._compare(other, operator.gt)

    def __ge__(self, other):
        return self._compare(other, operator.ge)

    def __eq__(self, other):
        return self._value == (other._value if isinstance(other, Counted) else other)

    def __hash__(self):
        return hash(self._value)

    def __neg__(self):
        return Counted(-self._value, self._tally)

    def __repr__(self) -> str:
        return repr(self._value)


def unwrapped(value):
    """The result with every Counted replaced by its number, lists and tuples rebuilt."""
    if isinstance(value, Counted):
        return value._value
    if isinstance(value, (list, tuple)):
        return type(value)(unwrapped(v) for v in value)
    return value


@dataclass
class CountingExercise(PlainExercise):
    """counted   the index of the argument whose items are wrapped in Counted
    budget      budget(*args, **kwargs) -> the most comparisons allowed in that case
    rule        the bound as the reader reads it: "4 (n log2(k+1) + k + 1)" (shown in the message)"""

    counted: int = 0
    budget: Callable | None = None
    rule: str = ""
    kind = "counting"

    def outcome(self, target, case, guard) -> Outcome:
        args, kwargs = copied(case.make())
        out = Outcome(call=f"{self.name}({shown(args, kwargs)})")
        before = copied((args, kwargs))
        tally = [0]
        given = list(args)
        given[self.counted] = [Counted(v, tally) for v in args[self.counted]]
        with attempt(out, "call", guard):
            value = unwrapped(target(*given, **kwargs))
        if out.failed:
            return out
        out.parts = self.results(value)
        if all(not isinstance(v, Verdict) or v.holds for _, v in out.parts):
            after = tuple(unwrapped(a) for a in given)
            names = parameter_names(self.oracle, len(args))
            out.parts.append(("arguments", untouched(before, after, kwargs, names, "your code")))
            if self.budget is not None:
                out.parts.append(("comparisons", self._within(tally[0], args, kwargs)))
        return out

    def _within(self, count: int, args, kwargs) -> Verdict:
        budget = int(self.budget(*args, **kwargs))
        if count <= budget:
            return Verdict()
        return Verdict("comparisons", msg("your code made {count} comparisons; this input allows at most {budget} "
                                          "({rule})", count=f"{count:,}", budget=f"{budget:,}", rule=self.rule))
