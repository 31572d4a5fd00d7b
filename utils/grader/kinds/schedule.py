"""The schedule kind: a function of (step, *hyper) -> float, called at every step of a schedule.

case.make() -> (hyper, steps, by_keyword): `hyper` a dict of the hyper-parameters in signature order;
each step's value is one labelled part, so the report names the first step that goes wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...i18n import msg
from ..core import Exercise
from ..protocol import Outcome, attempt, detached


@dataclass
class ScheduleExercise(Exercise):
    what: str = "value"          # the label of each step's part: "lr at step 7"
    kind = "schedule"

    def outcome(self, target, case, guard) -> Outcome:
        hyper, steps, by_keyword = case.make()
        desc = ", ".join(f"{n}={v!r}" for n, v in hyper.items())
        out = Outcome(call=msg("{name}(step, {hyper}) for step in {first}..{last}", name=self.name, hyper=desc,
                               first=steps[0], last=steps[-1]))
        for s in steps:
            with attempt(out, msg("step {t}", t=s), guard):
                lr = target(s, **hyper) if by_keyword else target(s, *hyper.values())
            if out.failed:
                return out
            out.parts.append((msg("{what} at step {t}", what=self.what, t=s), detached(lr)))
        return out

    def pristine_inputs(self, case):
        return ()
