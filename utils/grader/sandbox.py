"""Run the reader's code under guard: forbidden calls, a time limit, and readable errors.

Nothing in here may let a reader's mistake escape as a crash of the kernel: every failure becomes
an exception the engine turns into a report line.
"""

from __future__ import annotations

import ctypes
import heapq
import importlib
import inspect
import linecache
import os
import sys
import threading
import time
import traceback
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..i18n import msg

_GRADER_DIR = os.path.dirname(os.path.abspath(__file__))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


class TimeLimitExceeded(BaseException):
    """Raised inside the reader's code when it runs past the time limit.

    A BaseException, so that a reader's ``except Exception`` cannot swallow it.
    """


class ForbiddenCall(Exception):
    """The reader called a built-in the exercise asks them to write themselves."""

    def __init__(self, name: str):
        super().__init__(f"called {name}")
        self.name = name


_ROOTS = {"torch": torch, "F": F, "Tensor": torch.Tensor, "nn": torch.nn}


_RESOLVED: dict = {}


def resolve(name: str):
    """'F.softmax' -> the function object; names are written as readers write them.

    Cached, since the engine resolves the same names at every guarded call; a stand-in that `_swapped` has
    installed is never cached (the originals are what must be swapped and banned).
    """
    obj = _RESOLVED.get(name)
    if obj is None:
        obj = _resolve(name)
        if not getattr(obj, "hwllm_refusal", False):
            _RESOLVED[name] = obj
    return obj


def _resolve(name: str):
    """Submodules that their package does not expose as attributes ('torch.optim.sgd') are imported.
    """
    root, *rest = name.split(".")
    obj = _ROOTS[root] if root in _ROOTS else importlib.import_module(root)
    path = [_ROOTS[root].__name__ if root in _ROOTS and inspect.ismodule(_ROOTS[root]) else root]
    for part in rest:
        path.append(part)
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(path))
    return obj


class _Forbid(TorchFunctionMode):
    """Intercepts every torch-level call (torch.*, F.*, Tensor methods) and rejects the listed ones."""

    def __init__(self, names):
        super().__init__()
        self.banned = {}
        for name in names:
            self.banned.setdefault(id(resolve(name)), name)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = self.banned.get(id(func))
        if name is not None:
            raise ForbiddenCall(name)
        return func(*args, **(kwargs or {}))


def _importing(thread_id: int) -> bool:
    """Is that thread inside an import statement right now?"""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if "importlib._bootstrap" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


class _Watchdog:
    """One daemon thread serves every time limit: a guarded call registers a deadline, the watchdog sleeps until
    the earliest one and injects TimeLimitExceeded into that thread (PyThreadState_SetAsyncExc, which lands at
    the next Python bytecode of the reader's loop). No thread is started per call: an optimizer check makes
    hundreds of guarded calls. Works in Jupyter, pytest and on every platform."""

    def __init__(self):
        self.cond = threading.Condition()
        self.heap = []            # (deadline, sequence number, entry)
        self.count = 0
        self.thread = None

    def arm(self, seconds: float) -> dict:
        entry = {"thread": threading.get_ident(), "active": True, "fired": False}
        with self.cond:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._serve, name="hwllm-time-limit", daemon=True)
                self.thread.start()
            self.count += 1
            heapq.heappush(self.heap, (time.monotonic() + seconds, self.count, entry))
            self.cond.notify()
        return entry

    def disarm(self, entry: dict) -> bool:
        """Stop watching; True when the limit had fired (its exception may still be pending: it is cleared)."""
        with self.cond:
            entry["active"] = False
            fired = entry["fired"]
        if fired:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry["thread"]), None)
        return fired

    def _serve(self):
        while True:
            with self.cond:
                while not self.heap:
                    self.cond.wait()
                deadline, _, entry = self.heap[0]
                if not entry["active"]:
                    heapq.heappop(self.heap)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                heapq.heappop(self.heap)
                if _importing(entry["thread"]):     # never interrupt an import: it would leave a half-built module
                    self.count += 1
                    heapq.heappush(self.heap, (time.monotonic() + 0.05, self.count, entry))
                    continue
                entry["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry["thread"]),
                                                           ctypes.py_object(TimeLimitExceeded))


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):     # a forked child (the distributed kind's ranks) starts with a fresh watchdog
    os.register_at_fork(after_in_child=_WATCHDOG.__init__)


@contextmanager
def time_limit(seconds: float | None):
    """Raise TimeLimitExceeded in this thread once `seconds` have passed."""
    if not seconds:
        yield
        return
    entry = _WATCHDOG.arm(seconds)
    try:
        yield
    except TimeLimitExceeded:
        _WATCHDOG.disarm(entry)
        raise
    except BaseException:
        if _WATCHDOG.disarm(entry):
            raise TimeLimitExceeded() from None
        raise
    if _WATCHDOG.disarm(entry):             # fired as the block ended: report it, never let it land later
        raise TimeLimitExceeded()


def _refuse(name: str):
    def refused(*args, **kwargs):
        raise ForbiddenCall(name)
    refused.hwllm_refusal = True
    return refused


@contextmanager
def _swapped(names):
    """Plain Python functions (clip_grad_norm_, torch.optim.adam.adam, ...) never reach a TorchFunctionMode:
    replace them on their module, under every alias torch gives them, while the reader's code runs."""
    saved = []
    try:
        for name in names:
            target = resolve(name)
            if not inspect.isfunction(target):
                continue
            homes = {id(m): m for m in (sys.modules.get(target.__module__), _parent(name))
                     if m is not None and getattr(m, target.__name__, None) is target}
            for home in homes.values():
                saved.append((home, target.__name__, target))
                setattr(home, target.__name__, _refuse(name))
        yield
    finally:
        for home, attr, value in reversed(saved):
            setattr(home, attr, value)


def _parent(name: str):
    return resolve(name.rsplit(".", 1)[0]) if "." in name else None


@contextmanager
def guarded(forbidden=(), seconds: float | None = None):
    """The reader's code runs inside this: banned calls raise ForbiddenCall, loops are stopped."""
    with time_limit(seconds):
        if forbidden:
            with _swapped(forbidden), _Forbid(forbidden):
                yield
        else:
            yield


def reader_frame(exc: BaseException, code: bool = True) -> str | None:
    """'line 7, in softmax: e = torch.exp(x - m)', the innermost frame that is the reader's own ('line 7, in
    softmax' without `code`)."""
    mine = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = os.path.abspath(frame.filename) if frame.filename else ""
        if path.startswith(_GRADER_DIR) or path.startswith(_TORCH_DIR):
            continue
        if path.endswith("contextlib.py") or path.endswith("threading.py"):
            continue
        mine = frame
    if mine is None:
        return None
    if not mine.lineno:             # a loop stopped by the time limit between two lines has no line number
        return msg("in {function}", function=mine.name)
    place = msg("line {line}, in {function}", line=mine.lineno, function=mine.name)
    line = (mine.line or linecache.getline(mine.filename, mine.lineno)).strip() if code else ""
    return msg("{place}: {code}", place=place, code=line) if line else place
