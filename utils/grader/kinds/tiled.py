"""The tiled kind: a function whose values must match the oracle's and which, on watched cases, may not
create any intermediate tensor larger than the case's limit (FlashAttention: a few blocks of scores).

Every tensor the code creates is seen by `utils.memory.TensorMemory` (a TorchDispatchMode). Staying
within the limit is a labelled part of the outcome, not a property, so that code which builds the full
matrix is *diagnosed* like any other mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...i18n import msg
from ...memory import TensorMemory
from ..core import Case, Exercise
from ..protocol import Outcome


@dataclass(frozen=True)
class Watched(Case):
    """A case on which the code's intermediates are watched (the exercise's `limit` says how large they may be)."""


@dataclass
class TiledExercise(Exercise):
    """limit(args, kwargs) -> the most elements one tensor created by the code may have; `limit_label` names it."""

    limit: Callable | None = None
    limit_label: str = "no intermediate larger than the tiles"
    kind = "tiled"

    def outcome(self, target, case, guard) -> Outcome:
        if target is self.oracle or not isinstance(case, Watched):
            out = super().outcome(target, case, guard)
            if not out.failed:
                out.parts.append((self.limit_label, True))
            return out
        args, kwargs = case.make()
        bound = self.limit(args, kwargs)
        with TensorMemory(live=False) as mem:
            out = super().outcome(target, case, guard)
        if not out.failed:
            out.parts.append((self.limit_label, mem.largest_numel <= bound))
            if mem.largest_numel > bound:
                out.call = msg("{call}   [largest tensor your code created: {n:,} elements, shape {shape}; the tiles "
                               "allow {bound:,}]", call=out.call, n=mem.largest_numel, shape=mem.largest_shape,
                               bound=bound)
        return out
