"""The optimizer kind: the reader's `torch.optim.Optimizer` subclass against the built-in, parameter by
parameter, step by step.

case.make() -> OptimizerRun(params, groups, hyper, steps, grad)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...i18n import msg
from ..core import Exercise
from ..protocol import Outcome, attempt, describe, detached, listed


def eager(builtin: type) -> type:
    """The built-in optimizer with its own step() body, minus the wrappers that exist for torch.compile.

    torch.optim's step() is wrapped by `_use_grad_for_differentiable`, which imports torch._dynamo (about 2 s)
    on its first call to insert a graph break. The body underneath is the built-in's math, unchanged: the tests
    prove that this oracle and the built-in agree bit for bit on every case.
    """
    body = builtin.step
    while hasattr(body, "__wrapped__"):
        body = body.__wrapped__

    @torch.no_grad()
    def step(self, closure=None):
        return body(self, closure)

    return type(builtin.__name__, (builtin,), {"step": step, "__module__": __name__,
                                               "__doc__": f"torch.optim.{builtin.__name__}, eager"})


@dataclass
class OptimizerRun:
    """One run of an optimizer, driven as training code drives it.

    Every step: gradients are written (fresh `p.grad`, or accumulated after `zero_grad(set_to_none=False)`),
    the learning rate may be changed as a scheduler does, and `step()` or `step(closure)` is called. After
    every step each parameter and each gradient is compared (step() must leave p.grad as it was), and the
    optimizer may be rebuilt from its `state_dict()` mid-run, as resuming from a checkpoint does.
    """

    params: list                    # initial values (tensors)
    groups: list                    # [{"params": [indices], **overrides}, ...]
    hyper: dict                     # constructor keyword arguments
    steps: int
    grad: Callable                  # (step, index, value) -> gradient tensor or None
    lr_at: Callable | None = None   # step -> multiplier of each group's initial lr, set before that step
    zero_grad: bool = False         # opt.zero_grad(set_to_none=False), then gradients added into p.grad
    closure: bool = False           # opt.step(closure): the closure writes the gradients and returns the loss
    reload_after: int | None = None  # after this step: state_dict(), a new optimizer, load_state_dict()

    def protocol(self) -> str:
        parts = [msg("{n} steps", n=self.steps)]
        if self.lr_at is not None:
            parts.append("lr changed between steps")
        if self.zero_grad:
            parts.append("zero_grad(set_to_none=False) each step")
        if self.closure:
            parts.append("step(closure)")
        if self.reload_after is not None:
            parts.append(msg("state_dict() reloaded into a new optimizer after step {t}", t=self.reload_after))
        return listed(parts)


@dataclass
class OptimizerExercise(Exercise):
    """`oracle` is a torch.optim class; the reader's class must match it parameter by parameter, step by step."""

    kind = "optimizer"

    def structure(self, target):
        if not (isinstance(target, type) and issubclass(target, torch.optim.Optimizer)):
            return msg("check('{name}', ...) expects your optimizer class, a subclass of torch.optim.Optimizer; "
                       "got {got}", name=self.name, got=getattr(target, "__name__", type(target).__name__))
        builtin = [k for k in target.__mro__[1:] if k.__module__.startswith("torch.optim")
                   and k is not torch.optim.Optimizer]
        if builtin:
            return msg("your {name} inherits from {base}: subclass torch.optim.Optimizer itself and write step() "
                       "yourself", name=target.__name__, base=f"{builtin[0].__module__}.{builtin[0].__name__}")
        return None

    def pristine_inputs(self, case):
        return ()

    def outcome(self, target, case, guard) -> Outcome:
        run: OptimizerRun = case.make()
        params = [p.detach().clone().requires_grad_() for p in run.params]
        shapes = ", ".join(str(tuple(p.shape)) for p in params)
        out = Outcome(call=msg("{name}({n} group(s) of params {shapes}, {hyper}); {protocol}", name=self.name,
                               n=len(run.groups), shapes=shapes, hyper=describe((), run.hyper),
                               protocol=run.protocol()))

        def build():
            groups = [{**g, "params": [params[i] for i in g["params"]]} for g in run.groups]
            return target(groups, **run.hyper)

        with attempt(out, "construct", guard):
            opt = build()
        if out.failed:
            return out
        initial_lr = [g["lr"] for g in opt.param_groups] if run.lr_at is not None else []
        for t in range(1, run.steps + 1):
            if run.lr_at is not None:
                for g, lr in zip(opt.param_groups, initial_lr):
                    g["lr"] = lr * run.lr_at(t)

            def write_grads(t=t):
                for i, p in enumerate(params):
                    g = run.grad(t, i, p.detach())
                    if not run.zero_grad or p.grad is None:
                        p.grad = None if g is None else g.to(p.dtype)
                    elif g is not None:
                        p.grad.add_(g.to(p.dtype))

            if run.zero_grad:
                with attempt(out, msg("zero_grad before step {t}", t=t), guard):
                    opt.zero_grad(set_to_none=False)
                if out.failed:
                    return out
            calls = []
            if run.closure:
                def closure():
                    calls.append(t)
                    write_grads()
                    return sum((p.detach().double() ** 2).sum() for p in params)
            else:
                write_grads()
            with attempt(out, msg("step {t}", t=t), guard):
                returned = opt.step(closure) if run.closure else opt.step()
            if out.failed:
                return out
            if run.closure:
                out.parts.append((msg("step {t}: what step(closure) returns (the closure's loss)", t=t),
                                  detached(returned)))
                out.parts.append((msg("step {t}: times step(closure) called the closure", t=t), len(calls)))
            out.parts += [(msg("after step {t}: parameter {i}", t=t, i=i), p.detach().clone())
                          for i, p in enumerate(params)]
            out.parts += [(msg("after step {t}: gradient of parameter {i} (step() must leave p.grad as it was)", t=t,
                               i=i), detached(p.grad)) for i, p in enumerate(params)]
            if t == run.reload_after:
                with attempt(out, msg("state_dict() / load_state_dict() after step {t}", t=t), guard):
                    state = opt.state_dict()
                    opt = build()
                    opt.load_state_dict(state)
                if out.failed:
                    return out
        return out
