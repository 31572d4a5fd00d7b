"""The exhaustive kind: a function of a die it is given (rand10 from rand6), graded exactly, not by sampling.

The grader hands the target a scripted die and walks the tree of its calls breadth first: a run replays a
prefix of outcomes and, when the target asks for one more, stops it (a private BaseException, so that the
target's `except Exception` cannot swallow it); the prefix is then extended by each of the die's faces. Every
sequence of up to `depth` calls is visited (at most `runs` runs; a level that would pass that cap is left
undecided), each weighted sides**-len. That gives the exact law of the returned value, the probability still
undecided at the bound, and a lower bound on the expected number of calls. The parts, in order:

    draws         the result is a function of the die's outcomes only: a run never stops before using the
                  prefix an earlier run asked for, and replaying leaves gives the same value and calls
    values        every returned value is an int (not a bool) from 1 to `outcomes`
    distribution  the law is uniform up to the undecided mass: max P - min P <= P(undecided)
    calls         (when the case says `settle`) at most `settle` of the probability is still undecided, and
                  the expected number of calls is within `factor` times `reference` (rejection sampling's)

An endless loop that never calls the die is stopped by the time limit. Calls of Python's and numpy's RNGs
(`refuse`, attributes of their modules) raise ForbiddenCall while the target runs; torch's go through the
exercise's `forbidden`; and an RNG imported past both is caught by the `draws` part.

    case(walk_to, depth=4, note="...")            make() -> Walk(depth, runs, settle)
    explore(fn, sides=6, depth=8)                 the Tree of any function (chapters plot its law)
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction

from ...i18n import msg
from ..compare import Verdict
from ..core import Exercise
from ..protocol import Outcome, attempt
from ..sandbox import ForbiddenCall

PY_RNG = ("random.random", "random.randint", "random.randrange", "random.choice", "random.choices",
          "random.uniform", "random.getrandbits", "random.shuffle", "random.sample", "numpy.random.randint",
          "numpy.random.rand", "numpy.random.random", "numpy.random.choice", "numpy.random.uniform",
          "numpy.random.default_rng")


class NeedMore(BaseException):
    """The scripted die has no outcome left in the prefix being replayed."""


class ScriptedDie:
    """A die that replays `prefix`, then raises NeedMore; `used` counts the outcomes handed out."""

    def __init__(self, prefix: tuple, name: str = "rand6"):
        self.prefix, self.used, self.__name__ = prefix, 0, name

    def __call__(self):
        if self.used >= len(self.prefix):
            raise NeedMore()
        self.used += 1
        return self.prefix[self.used - 1]

    def __repr__(self) -> str:
        return self.__name__


@dataclass(frozen=True)
class Walk:
    """What one case explores: every sequence of up to `depth` calls, in at most `runs` runs; `settle` (or
    None): the largest undecided probability allowed, which also turns on the expected-calls check."""

    depth: int
    runs: int = 20_000
    settle: float | None = None


def walk_to(depth: int, runs: int = 20_000, settle: float | None = None) -> Walk:
    """A case's make(): case(walk_to, depth=8, settle=0.01, note=...)."""
    return Walk(depth, runs, settle)


@dataclass
class Tree:
    """The explored law of a function of a die. Masses are ints out of sides**depth (exact)."""

    sides: int
    depth: int                                       # the deepest level visited
    mass: dict = field(default_factory=dict)         # value -> int mass (values as returned)
    first: dict = field(default_factory=dict)        # value -> the first sequence of outcomes that returned it
    undecided: int = 0
    calls: int = 0                                   # sum of mass * calls over the leaves
    runs: int = 0
    leaves: list = field(default_factory=list)       # (prefix, value) in the order visited
    broken: tuple | None = None                      # (prefix, first value, second value / calls) not a function

    @property
    def total(self) -> int:
        return self.sides ** self.depth

    def probability(self, value) -> Fraction:
        return Fraction(self.mass.get(value, 0), self.total)

    def expected_calls(self) -> float:
        """A lower bound: the undecided sequences are counted as if they stopped at the depth bound."""
        return float(Fraction(self.calls + self.undecided * self.depth, self.total))


def explore(fn, sides: int = 6, depth: int = 8, runs: int = 20_000, name: str = "rand6", replay: int = 16) -> Tree:
    """Walk every sequence of up to `depth` outcomes of a `sides`-sided die through `fn(die)`, breadth first."""
    tree = Tree(sides, depth)
    frontier = [()]
    for level in range(depth + 1):
        if tree.runs + len(frontier) > runs:          # this level would pass the cap: it stays undecided
            tree.undecided += len(frontier) * sides ** (depth - level)
            tree.depth = depth
            break
        grown = []
        weight = sides ** (depth - level)
        for prefix in frontier:
            die = ScriptedDie(prefix, name)
            tree.runs += 1
            try:
                value = fn(die)
            except NeedMore:
                if level == depth:
                    tree.undecided += weight
                else:
                    grown += [prefix + (face,) for face in range(1, sides + 1)]
                continue
            if die.used < len(prefix):               # an earlier run on prefix[:-1] asked for more than this
                tree.broken = (prefix, "calls", die.used)
                return tree
            key = _key(value)
            tree.mass[key] = tree.mass.get(key, 0) + weight
            tree.first.setdefault(key, (prefix, value))
            tree.calls += weight * level
            tree.leaves.append((prefix, value))
        frontier = grown
    step = max(1, len(tree.leaves) // replay)
    for prefix, value in tree.leaves[::step][:replay]:
        die = ScriptedDie(prefix, name)
        try:
            again = fn(die)
        except NeedMore:
            again = NeedMore
        if again is NeedMore or _key(again) != _key(value) or die.used != len(prefix):
            tree.broken = (prefix, value, again if again is not NeedMore else "calls")
            return tree
    return tree


def _key(value):
    """Values told apart by type too: 3, 3.0 and True are three different results; NaN equals NaN here, and a
    value that is not hashable or not plainly comparable (a tensor) is keyed by its repr."""
    try:
        hash(value)
        plain = value == value
        if type(plain) is not bool:
            raise TypeError
    except Exception:
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value if plain else repr(value))


def _shown(prefix) -> str:
    return ", ".join(str(v) for v in prefix) if prefix else msg("nothing (no call)")


@contextmanager
def refused(names):
    """Module attributes (random.randint, numpy.random.rand, ...) replaced by a refusal while the block runs."""
    saved = []
    try:
        for name in names:
            module, attr = name.rsplit(".", 1)
            try:
                home = importlib.import_module(module)
            except ImportError:
                continue
            if hasattr(home, attr):
                saved.append((home, attr, getattr(home, attr)))
                setattr(home, attr, _refusal(name))
        yield
    finally:
        for home, attr, value in reversed(saved):
            setattr(home, attr, value)


def _refusal(name):
    def refuse(*args, **kwargs):
        raise ForbiddenCall(name)
    return refuse


@dataclass
class ExhaustiveExercise(Exercise):
    """sides, die      the die handed to the target: `sides` faces 1..sides, called `die` in messages
    outcomes          the target must be uniform on 1..outcomes
    reference         the expected calls of the reference method (rejection sampling: 2.4 for rand10 from rand6)
    factor            a case with `settle` fails when the expected calls exceed factor * reference
    refuse            Python-level RNG functions that raise ForbiddenCall while the target runs
    The oracle is a reference sampler with the same signature; its parts all hold."""

    sides: int = 6
    die: str = "rand6"
    outcomes: int = 10
    reference: float = 2.4
    factor: float = 3.0
    refuse: tuple = PY_RNG
    kind = "exhaustive"

    def outcome(self, target, case, guard) -> Outcome:
        spec: Walk = case.make()
        out = Outcome(call=msg("{name}({die}): every sequence of up to {depth} calls of {die}()", name=self.name,
                               die=self.die, depth=spec.depth))
        tree = None
        with attempt(out, "call", guard), refused(self.refuse if guard is not None else ()):
            tree = explore(target, self.sides, spec.depth, spec.runs, self.die)
        if out.failed:
            return out
        out.call = msg("{call} ({runs} runs)", call=out.call, runs=f"{tree.runs:,}")
        out.parts = [("draws", self._draws(tree)), ("values", self._values(tree)),
                     ("distribution", self._distribution(tree))]
        if spec.settle is not None:
            out.parts.append(("calls", self._calls(tree, spec)))
        return out

    def pristine_inputs(self, case) -> tuple:
        return ()

    # -- the verdicts
    def _draws(self, tree: Tree) -> Verdict:
        if tree.broken is None:
            return Verdict()
        prefix, first, again = tree.broken
        if first == "calls":
            said = msg("with the draws {draws} your function returned after {used} of them, though an earlier run "
                       "with fewer draws asked for more", draws=_shown(prefix), used=again)
        else:
            said = msg("the draws {draws} gave {first!r} once and {again!r} when replayed", draws=_shown(prefix),
                       first=first, again=again)
        return Verdict("not-a-function-of-draws",
                       msg("your result is not a function of the outcomes of {die}() alone: {said}; use {die}() as "
                           "the only source of randomness (no random, numpy or torch RNG, no state kept between "
                           "calls)", die=self.die, said=said), key="replay")

    def _values(self, tree: Tree) -> Verdict:
        for (kind, _), (prefix, value) in tree.first.items():
            if kind != "int":
                said = msg("when {die}() gave {draws}, your function returned {value!r} (a {type}): return a Python "
                           "int from 1 to {n}", die=self.die, draws=_shown(prefix), value=value,
                           type=type(value).__name__, n=self.outcomes)
                return Verdict("wrong-type", said, key=("type", kind))
        bad = sorted(v for (_, v) in tree.first if not 1 <= v <= self.outcomes)
        if bad:
            prefix, value = tree.first[("int", bad[0])]
            said = msg("when {die}() gave {draws}, your function returned {value}, outside 1..{n} (values returned "
                       "outside: {bad})", die=self.die, draws=_shown(prefix), value=value, n=self.outcomes,
                       bad=", ".join(map(str, bad)))
            return Verdict("out-of-range", said, key=("range", tuple(bad)))
        return Verdict()

    def _distribution(self, tree: Tree) -> Verdict:
        masses = [tree.mass.get(("int", v), 0) for v in range(1, self.outcomes + 1)]
        gap = max(masses) - min(masses)
        if gap <= tree.undecided:
            return Verdict()
        probs = ", ".join(f"{m / tree.total:.4f}" for m in masses)
        key = (tuple(masses), tree.undecided)
        if () in [p for p, _ in tree.first.values()]:
            return Verdict("not-uniform", msg("your function returned without calling {die}(): it cannot be uniform",
                                              die=self.die), key=key)
        lo, hi = masses.index(min(masses)) + 1, masses.index(max(masses)) + 1
        return Verdict("not-uniform",
                       msg("not uniform: P(1), ..., P({n}) = {probs}; P({hi}) - P({lo}) = {gap:.4f}, more than the "
                           "{undecided:.4f} still undecided after every sequence of up to {depth} calls",
                           n=self.outcomes, probs=probs, hi=hi, lo=lo, gap=gap / tree.total,
                           undecided=tree.undecided / tree.total, depth=tree.depth), key=key)

    def _calls(self, tree: Tree, spec: Walk) -> Verdict:
        undecided, calls = tree.undecided / tree.total, tree.expected_calls()
        if undecided > spec.settle:
            return Verdict("undecided", msg("after every sequence of up to {depth} calls ({runs} runs), {p:.2%} of "
                                            "the probability is still undecided (at most {settle:.0%} allowed): some "
                                            "sequences of draws never end, or each try costs far more calls than "
                                            "rejection sampling's", depth=tree.depth, runs=f"{tree.runs:,}",
                                            p=undecided, settle=spec.settle), key="undecided")
        if calls > self.factor * self.reference:
            return Verdict("too-many-calls", msg("your function calls {die}() {calls:.2f} times on average, more than "
                                                 "{factor:g} times the {reference:g} of rejection sampling",
                                                 die=self.die, calls=calls, factor=self.factor,
                                                 reference=self.reference), key="calls")
        return Verdict()
