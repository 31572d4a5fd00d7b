"""The in-place gradients kind: a function of parameters that edits their `.grad` (clip_grad_norm_).

case.make() -> (values, grads, max_norm, how): grads[i] None means parameter i has no gradient; how is
"list", "generator" (as model.parameters() gives) or "tensor" (a single parameter). The parts are the
returned value and every gradient after the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...i18n import msg
from ..core import Exercise
from ..protocol import Outcome, attempt, detached


@dataclass
class GradientsExercise(Exercise):
    kind = "gradients"

    def outcome(self, target, case, guard) -> Outcome:
        values, grads, max_norm, how = case.make()
        params = []
        for v, g in zip(values, grads):
            p = v.clone().requires_grad_()
            p.grad = None if g is None else g.clone()
            params.append(p)
        arg = {"list": params, "generator": (p for p in params), "tensor": params[0]}[how]
        shapes = ", ".join(f"{str(v.dtype).replace('torch.', '')} {tuple(v.shape)}"
                           + ("" if g is not None else " without grad") for v, g in zip(values, grads))
        what = {"list": f"[{shapes}]", "generator": f"generator over ({shapes})", "tensor": shapes}[how]
        out = Outcome(call=f"{self.name}({what}, max_norm={max_norm!r})")
        with attempt(out, "call", guard):
            norm = target(arg, max_norm)
        if out.failed:
            return out
        out.parts = [("returned total norm", detached(norm))]
        for i, p in enumerate(params):
            if grads[i] is None:
                out.parts.append((msg("parameter {i} still has no gradient", i=i), p.grad is None))
            else:
                out.parts.append((msg("gradient of parameter {i} after clipping", i=i), detached(p.grad)))
        out.inputs_after = tuple(p.detach().clone() for p in params)
        return out

    def pristine_inputs(self, case):
        return tuple(case.make()[0])
