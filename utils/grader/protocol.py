"""The driving protocol every kind of exercise uses to run code through a case.

A kind *drives* a target (the reader's code, the oracle, or a registered mistake) through one case and
returns an `Outcome`: labelled parts of the result, the inputs as they were afterwards, gradients, or
the error and the stage where it happened. These helpers are the whole vocabulary a kind needs:

    attempt(out, stage, guard)      run a block of the target's code under the guard; an error is recorded
    gradients(value, wrt, guard, out)   gradients of a seeded projection of the outputs
    describe(args, kwargs)          'float32 (3, 5) non-contiguous, dim=0': a call, for the report
    listed(items, sep)              messages joined so that each stays translatable (see utils.i18n)
    detached(obj), tensors_in(obj), requiring_grad(args)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..i18n import msg
from ..trees import tensors_in
from .sandbox import TimeLimitExceeded

# Everything a reader's code can raise, the time limit included (a BaseException, so `except Exception`
# in the reader's code cannot swallow it).
READER_ERRORS = (Exception, TimeLimitExceeded)


@dataclass
class Outcome:
    parts: list = field(default_factory=list)     # [(label, value)], compared in order
    inputs_after: tuple = ()                      # the call's tensor inputs after the call
    grads: dict | None = None                     # {label: gradient}
    error: BaseException | None = None
    stage: str = ""                               # where the error happened: "call", "backward", ...
    call: str = ""                                # the call, described for the report

    @property
    def failed(self) -> bool:
        return self.error is not None


@contextmanager
def no_guard():
    yield


def enter(guard):
    """`guard` is a factory of context managers (a fresh one per use), or None for the oracle."""
    return guard() if guard is not None else no_guard()


@contextmanager
def attempt(out: Outcome, stage: str, guard=None):
    """Run the block under `guard`; an error of the target's code is recorded in `out` (with `stage`), not raised.

        with attempt(out, "call", guard):
            value = target(*args)
        if out.failed:
            return out
    """
    try:
        with enter(guard):
            yield
    except READER_ERRORS as e:
        out.error, out.stage = e, stage


def describe(args=(), kwargs=None) -> str:
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
    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in (kwargs or {}).items()]
    return ", ".join(parts)


_JOINS = {", ": "{a}, {b}", "; ": "{a}; {b}", " and ": "{a} and {b}"}


def listed(items, sep: str = ", ") -> str:
    """`sep.join(items)` as a message whose items each keep their translation (a plain join keeps the English)."""
    items = list(items)
    joined = items[0] if items else ""
    for item in items[1:]:
        joined = msg(_JOINS[sep], a=joined, b=item)
    return joined


def detached(obj):
    """A copy of a result that later code cannot change: tensors detached and cloned, containers rebuilt."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(detached(o) for o in obj)
    if isinstance(obj, list):
        return [detached(o) for o in obj]
    if isinstance(obj, dict):
        return {k: detached(v) for k, v in obj.items()}
    return obj


def cotangent(t: torch.Tensor, seed: int = 1234) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)


def requiring_grad(args: tuple) -> tuple[tuple, list]:
    """The arguments with every floating tensor made a fresh leaf that requires grad, and those leaves."""
    args = tuple(a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)
    return args, [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


DISCONNECTED = ("the result is not connected to the inputs in the autograd graph "
                "(.detach(), .data, torch.no_grad() or numpy break it)")


def gradients(value, wrt: dict, guard, out: Outcome, seed: int = 1234) -> dict | None:
    """{label: gradient} of a seeded random projection of every floating output in `value` with respect to
    the tensors `wrt` ({label: tensor}); a message when the output is cut from the graph; None after an
    error in backward (recorded in `out`)."""
    outputs = [t for t in tensors_in(value) if t.is_floating_point() and t.requires_grad]
    if not outputs:
        return {"input gradient": DISCONNECTED}
    loss = sum((t * cotangent(t, seed + k)).sum() for k, t in enumerate(outputs))
    grads = None
    with attempt(out, "backward", guard):
        grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    if grads is None:
        return None
    return {label: (torch.zeros_like(t) if g is None else g.detach()) for (label, t), g in zip(wrt.items(), grads)}
