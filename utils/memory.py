"""Memory that torch code allocates, observed op by op (CPU included, where torch keeps no allocator stats).

    with TensorMemory() as mem:
        y = attention(q, k, v)
    mem.peak_bytes        the most bytes held at once by tensors created inside the block
    mem.largest_numel     the element count of the largest tensor created inside the block
    mem.largest_shape     its shape

A TorchDispatchMode sees every aten op with its outputs. A new storage (not a view of an argument) is
counted from the op that creates it until the last tensor using it dies (a weak reference to the
storage tells). Tensors that existed before the block (the inputs) are not counted.
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from .trees import tensors_in


class TensorMemory(TorchDispatchMode):
    """Peak live bytes and largest tensor of everything torch creates while the mode is active."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False          # no torch._dynamo wrapper: importing dynamo costs seconds and we never compile

    def __init__(self, live: bool = True):
        super().__init__()
        self.track_live = live    # False: only the largest tensor (cheaper)
        self.live = {}            # storage pointer -> (weak reference, bytes)
        self.live_bytes = 0
        self.peak_bytes = 0
        self.largest_numel = 0
        self.largest_shape = ()

    def _prune(self):
        dead = [p for p, (ref, _) in self.live.items() if ref.expired()]
        for p in dead:
            self.live_bytes -= self.live.pop(p)[1]

    def __exit__(self, *exc):
        if self.track_live:
            self._prune()             # what is still alive when the block ends
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        known = {t.untyped_storage().data_ptr() for t in tensors_in((args, kwargs))}
        if self.track_live:
            self._prune()
        for t in tensors_in(out):
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in known or ptr in self.live or storage.nbytes() == 0:
                continue                      # a view or in-place result: no new memory
            if self.track_live:
                self.live[ptr] = (StorageWeakRef(storage), storage.nbytes())
                self.live_bytes += storage.nbytes()
            if t.numel() > self.largest_numel:
                self.largest_numel, self.largest_shape = t.numel(), tuple(t.shape)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out


def peak_bytes(fn, *args, **kwargs) -> int:
    """The peak of live bytes allocated by `fn(*args, **kwargs)` (its inputs not counted)."""
    with torch.no_grad(), TensorMemory() as mem:
        fn(*args, **kwargs)
    return mem.peak_bytes
