"""The module kind: the reader's `nn.Module` class, constructed, loaded with random non-default weights,
and driven through a script of forward steps in train and eval mode, with backward where asked.

case.make() -> Script(init=(args, kwargs), steps=[Step(...), ...])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...i18n import msg
from ..core import Exercise
from ..protocol import Outcome, attempt, describe, detached, gradients, requiring_grad, tensors_in


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
    return f"{name}({describe(args, kwargs)})"


HISTORY = "buffers hold no autograd history (update running statistics under torch.no_grad() or with .detach())"


@dataclass
class ModuleExercise(Exercise):
    """`oracle` is an nn.Module class with the exercise's interface built from PyTorch built-ins.

    extra_buffers   buffers the contract is silent about but PyTorch's own module has (BatchNorm's
                    `num_batches_tracked`): a reader's module may hold them or not; they are not compared.
    """

    randomize: Callable = random_state
    extra_buffers: tuple = ()
    kind = "module"

    def structure(self, target):
        if not (isinstance(target, type) and issubclass(target, nn.Module)):
            return msg("check('{name}', ...) expects your class (a subclass of nn.Module), not {what}", name=self.name,
                       what="an instance" if isinstance(target, nn.Module) else type(target).__name__)
        return None

    def pristine_inputs(self, case):
        script = case.make()
        return tuple(t for step in script.steps if not callable(step.inputs)
                     for t in tensors_in(step.inputs))

    def _buffers(self, m) -> dict:
        return {n: b for n, b in m.named_buffers() if n.rsplit(".", 1)[-1] not in self.extra_buffers}

    def outcome(self, target, case, guard) -> Outcome:
        script: Script = case.make()
        init = _describe_init(self.name, script.init)
        out = Outcome(call=init)
        args, kwargs = script.init
        ref = self.oracle(*args, **kwargs)
        with attempt(out, "construct", guard):
            m = target(*args, **kwargs)
        if out.failed:
            return out
        out.parts = [("parameters", _shapes(m.named_parameters())), ("buffers", _shapes(self._buffers(m).items()))]
        if (out.parts[0][1], out.parts[1][1]) != (_shapes(ref.named_parameters()), _shapes(self._buffers(ref).items())):
            return out
        gen = torch.Generator().manual_seed(7)
        with attempt(out, "load_state_dict", guard):
            if script.dtype is not None:
                m = m.to(script.dtype)
            state = self.randomize({k: v for k, v in ref.state_dict().items()
                                    if k.rsplit(".", 1)[-1] not in self.extra_buffers}, gen)
            own = {k: v for k, v in m.state_dict().items() if k.rsplit(".", 1)[-1] in self.extra_buffers}
            m.load_state_dict({**own, **state})
        if out.failed:
            return out
        prev, after, calls = [], [], []
        for k, step in enumerate(script.steps, 1):
            mode = "train" if step.train else "eval"
            try:   # inputs built from earlier outputs may fail on a reader's odd output
                a, kw = step.inputs(prev) if callable(step.inputs) else step.inputs
            except Exception as e:
                out.error, out.stage = e, msg("step {k}, {mode} mode (feeding back your earlier output)", k=k,
                                              mode=mode)
                break
            calls.append(f"{mode}: forward({describe(a, kw)})")
            leaves = []
            if step.grad:
                a, leaves = requiring_grad(a)
            with attempt(out, msg("step {k}, {mode} mode", k=k, mode=mode), guard):
                m.train(step.train)
                y = m(*a, **kw)
            if out.failed:
                break
            out.parts.append((msg("step {k} ({mode}) output", k=k, mode=mode), detached(y)))
            buffers = self._buffers(m)
            if script.track and buffers:
                out.parts.append((msg("step {k} ({mode}) buffers", k=k, mode=mode), detached(buffers)))
                out.parts.append((msg("step {k} ({mode}): {rule}", k=k, mode=mode, rule=HISTORY),
                                  not any(b.requires_grad or b.grad_fn is not None for b in buffers.values())))
            if not callable(step.inputs):
                after += [detached(t) for t in tensors_in(step.inputs)]
            if step.grad:
                wrt = {msg("gradient of input {i}", i=i): x for i, x in enumerate(leaves)}
                wrt.update((msg("gradient of {name}", name=n), p) for n, p in m.named_parameters())
                grads = gradients(y, wrt, guard, out, seed=99)
                if grads is None:
                    break
                out.grads = {**(out.grads or {}), **{msg("step {k}: {label}", k=k, label=label): g
                                                     for label, g in grads.items()}}
            prev.append(y)
        out.call = init + "; " + "; ".join(calls)
        out.inputs_after = tuple(after)
        return out
