"""Exercises whose implementation is a class: `nn.Module` subclasses and `torch.optim.Optimizer` subclasses.

Module case:    make() -> Script(init=(args, kwargs), steps=[Step(...), ...])
Optimizer case: make() -> OptimizerRun(params, groups, hyper, steps, grad)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .core import Exercise, Outcome, _detach, _enter, _tensors, call_arguments, gradients, requiring_grad
from .sandbox import TimeLimitExceeded


@dataclass
class Step:
    """One forward call. `inputs` is (args, kwargs), or a function of the previous steps' outputs."""

    inputs: Any
    train: bool = True
    grad: bool = False      # backward through this step: gradients of inputs and parameters compared


@dataclass
class Script:
    init: tuple                                     # (args, kwargs) of the constructor
    steps: list = field(default_factory=list)
    track: bool = True                              # compare buffers after every step
    dtype: torch.dtype | None = None                # run the module in this dtype (module.to(dtype))


def random_state(state: dict, gen: torch.Generator) -> dict:
    """Random non-default values for every floating parameter and buffer (variances stay positive)."""
    new = {}
    for name, t in state.items():
        if not t.is_floating_point():
            new[name] = t.clone()
            continue
        r = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
        new[name] = (0.5 + r.abs()) if "var" in name or name.endswith("weight") and t.dim() == 1 else r
    return new


def _shapes(named) -> dict:
    return {n: tuple(t.shape) for n, t in named}


def _describe_init(name, init) -> str:
    args, kwargs = init
    return f"{name}({call_arguments(args, kwargs)})"


@dataclass
class ModuleExercise(Exercise):
    """`oracle` is an nn.Module class with the exercise's interface built from PyTorch built-ins."""

    randomize: Callable = random_state
    kind = "module"

    def structure(self, target):
        if not (isinstance(target, type) and issubclass(target, nn.Module)):
            return (f"check('{self.name}', ...) expects your class (a subclass of nn.Module), "
                    f"not {'an instance' if isinstance(target, nn.Module) else type(target).__name__}")
        return None

    def pristine_inputs(self, case):
        script = case.make()
        return tuple(t for step in script.steps if not callable(step.inputs)
                     for t in _tensors(step.inputs))

    def outcome(self, target, case, guard) -> Outcome:
        script: Script = case.make()
        init = _describe_init(self.name, script.init)
        out = Outcome(call=init)
        args, kwargs = script.init
        ref = self.oracle(*args, **kwargs)
        try:
            with _enter(guard):
                m = target(*args, **kwargs)
        except (Exception, TimeLimitExceeded) as e:
            out.error, out.stage = e, "construct"
            return out
        out.parts = [("parameters", _shapes(m.named_parameters())), ("buffers", _shapes(m.named_buffers()))]
        if (out.parts[0][1], out.parts[1][1]) != (_shapes(ref.named_parameters()), _shapes(ref.named_buffers())):
            return out
        gen = torch.Generator().manual_seed(7)
        try:
            with _enter(guard):
                if script.dtype is not None:
                    m = m.to(script.dtype)
                m.load_state_dict(self.randomize(ref.state_dict(), gen))
        except (Exception, TimeLimitExceeded) as e:
            out.error, out.stage = e, "load_state_dict"
            return out
        prev, after, calls = [], [], []
        for k, step in enumerate(script.steps, 1):
            mode = "train" if step.train else "eval"
            try:   # inputs built from earlier outputs may fail on a reader's odd output
                a, kw = step.inputs(prev) if callable(step.inputs) else step.inputs
            except Exception as e:
                out.error, out.stage = e, f"step {k}, {mode} mode (feeding back your earlier output)"
                break
            calls.append(f"{mode}: forward({call_arguments(a, kw)})")
            leaves = []
            if step.grad:
                a, leaves = requiring_grad(a)
            try:
                m.train(step.train)
                with _enter(guard):
                    y = m(*a, **kw)
            except (Exception, TimeLimitExceeded) as e:
                out.error, out.stage = e, f"step {k}, {mode} mode"
                break
            out.parts.append((f"step {k} ({mode}) output", _detach(y)))
            if script.track and len(list(m.buffers())):
                out.parts.append((f"step {k} ({mode}) buffers", _detach(dict(m.named_buffers()))))
            if not callable(step.inputs):
                after += [_detach(t) for t in _tensors(step.inputs)]
            if step.grad:
                wrt = {f"gradient of input {i}": x for i, x in enumerate(leaves)}
                wrt.update((f"gradient of {n}", p) for n, p in m.named_parameters())
                grads = gradients(y, wrt, guard, out, seed=99)
                if grads is None:
                    break
                out.grads = {**(out.grads or {}), **{f"step {k}: {label}": g for label, g in grads.items()}}
            prev.append(y)
        out.call = init + "; " + "; ".join(calls)
        out.inputs_after = tuple(after)
        return out


@dataclass
class OptimizerRun:
    params: list                    # initial values (tensors)
    groups: list                    # [{"params": [indices], **overrides}, ...]
    hyper: dict                     # constructor keyword arguments
    steps: int
    grad: Callable                  # (step, index, value) -> gradient tensor or None


@dataclass
class OptimizerExercise(Exercise):
    """`oracle` is a torch.optim class; the reader's class must match it parameter by parameter, step by step."""

    kind = "optimizer"

    def structure(self, target):
        if not (isinstance(target, type) and issubclass(target, torch.optim.Optimizer)):
            return (f"check('{self.name}', ...) expects your optimizer class, a subclass of "
                    f"torch.optim.Optimizer; got {getattr(target, '__name__', type(target).__name__)}")
        builtin = [k for k in target.__mro__[1:] if k.__module__.startswith("torch.optim")
                   and k is not torch.optim.Optimizer]
        if builtin:
            return (f"your {target.__name__} inherits from {builtin[0].__module__}.{builtin[0].__name__}: "
                    "subclass torch.optim.Optimizer itself and write step() yourself")
        return None

    def pristine_inputs(self, case):
        return ()

    def outcome(self, target, case, guard) -> Outcome:
        run: OptimizerRun = case.make()
        params = [p.detach().clone().requires_grad_() for p in run.params]
        groups = [{**g, "params": [params[i] for i in g["params"]]} for g in run.groups]
        shapes = ", ".join(str(tuple(p.shape)) for p in params)
        out = Outcome(call=f"{self.name}({len(groups)} group(s) of params {shapes}, "
                           f"{call_arguments((), run.hyper)}) for {run.steps} steps")
        try:
            with _enter(guard):
                opt = target(groups, **run.hyper)
        except (Exception, TimeLimitExceeded) as e:
            out.error, out.stage = e, "construct"
            return out
        for t in range(1, run.steps + 1):
            for i, p in enumerate(params):
                g = run.grad(t, i, p.detach())
                p.grad = None if g is None else g.to(p.dtype)
            try:
                with _enter(guard):
                    opt.step()
            except (Exception, TimeLimitExceeded) as e:
                out.error, out.stage = e, f"step {t}"
                return out
            out.parts += [(f"after step {t}: parameter {i}", p.detach().clone()) for i, p in enumerate(params)]
        return out
