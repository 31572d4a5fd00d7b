"""Keep torch._dynamo out of a check until something really compiles.

torch.optim.Optimizer's add_param_group (called by __init__), zero_grad, state_dict and load_state_dict are
wrapped by `torch._compile._disable_dynamo`, which on their first call imports torch._dynamo (measured: about
2 s on these machines) only to wrap them with `torch._dynamo.disable`. That made the first optimizer check in
a fresh kernel take 3 to 4 s. While torch._dynamo is not imported nothing can be compiling, so the call may go
straight to the function; the moment torch._dynamo is imported, the real wrapper is built exactly as torch
would have built it, and used from then on.
"""

from __future__ import annotations

import sys

import torch
import torch._compile

_PROBE = torch._compile._disable_dynamo(lambda: None).__code__


def _lazy(fn, recursive):
    def call(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        real = torch._dynamo.disable(fn, recursive, wrapping=False)
        fn.__dynamo_disable = real
        return real(*args, **kwargs)
    return call


def install(cls=torch.optim.Optimizer) -> list[str]:
    """Route the dynamo-disabled methods of `cls` through `_lazy`; returns their names."""
    names = []
    for name, attr in vars(cls).items():
        inner = getattr(attr, "__func__", attr)
        if getattr(inner, "__code__", None) is not _PROBE or not inner.__closure__:
            continue
        cells = dict(zip(inner.__code__.co_freevars, (c.cell_contents for c in inner.__closure__)))
        fn = cells["fn"]
        if getattr(fn, "__dynamo_disable", None) is None:
            fn.__dynamo_disable = _lazy(fn, cells.get("recursive", True))
        names.append(name)
    return names
