"""Run a function on every rank of real `torch.distributed` groups (gloo, CPU), one fresh group per world size.

    results = run_groups(fn, {2: [0, 3], 4: [1, 2]}, seconds=1.0)

forks one process per rank for each world size, all groups at once, joins each group through a `FileStore`
in a fresh temporary folder (no port is chosen: gloo binds its own), and runs `fn(rank, world_size, item)`
on every rank for each item of that world size, in order. Each rank's return value, a `RankResult`, comes
back through a pipe; the next item starts when every rank has reported the previous one, so items never
overlap. `results[world_size]` lists, for each item that ran, its `RankResult`s by rank. The fork start
method means `fn` and everything it reaches (a function the reader defined in a notebook) need no pickling;
it needs fork (Linux, macOS). In a child, SENT["bytes"] counts the bytes handed to point-to-point sends.

Time. Every blocking send, recv or collective in the children gives up after `seconds` (the group's gloo
timeout): `fn` sees a RuntimeError and reports the rank as "stuck". A rank that reports nothing for
`seconds + MARGIN` (a C call that never returns) is "silent". Either way the group is killed, and the items
after it do not run. When a rank raises, the item ends as soon as every other rank has answered or sits in
a communication (`Work.wait`, flagged in shared memory), so the ranks named do not depend on timing: if
every rank answered, the group goes on to the next item, else it is killed.

No process outlives `run_groups`: every child is killed (SIGKILL) and reaped before it returns, on success,
on a reader's error, on a timeout, and when the parent itself is interrupted; on Linux a child also dies
with its parent (PR_SET_PDEATHSIG).

Forking from a process with torch loaded is reliable as long as the children use one intra-op thread:
after the parent has run a parallel op, its OpenMP (libgomp) pool does not exist in a forked child, and a
child asking for two or more threads hangs in its first parallel op (measured with torch 2.13). Children
therefore call torch.set_num_threads(1) before anything else; the parent may use any number of threads.
Children ignore SIGINT (the parent handles an interrupt and kills them), their Python output is captured
and returned with each result, and their file descriptors 1 and 2 go to /dev/null (a Jupyter kernel's
streams must not be used from a forked process).
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from ..i18n import msg, tr
from .sandbox import ForbiddenCall, TimeLimitExceeded

MARGIN = 1.0      # s a rank may take beyond the gloo timeout to report before it counts as silent
STUCK_GRACE = 0.6  # s to wait for the other ranks after one reported a communication timeout
POLL = 0.01       # s between looks at the waiting flags, after a rank raised
START = 20.0      # s for the processes to start and join their group (not the reader's time)


class GroupError(RuntimeError):
    """The processes could not start or join a group: the machine's problem, not the reader's code."""


class RankDied(RuntimeError):
    """A rank's process ended in the middle of an item (os._exit, a crash, a signal)."""


@dataclass
class RankResult:
    """One rank's report on one item. status: "ok", "error" (an exception), "timeout" (the Python time
    limit), "stuck" (a communication that timed out), "silent" (no report in time), "died"."""

    status: str
    value: object = None            # fn's payload
    error: PackedError | None = None
    output: str = ""                # what the rank printed


# --------------------------------------------------------------------------- exceptions across processes

@dataclass
class PackedError:
    """An exception made picklable, with its traceback as (filename, lineno, name) frames."""

    exc: bytes | None               # the pickled exception, when it pickles
    type_name: str
    message: str
    frames: list = field(default_factory=list)
    forbidden: str | None = None    # ForbiddenCall's name

    @classmethod
    def of(cls, e: BaseException) -> PackedError:
        frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(e.__traceback__)]
        try:
            exc = pickle.dumps(e.with_traceback(None))
        except Exception:
            exc = None
        return cls(exc, type(e).__name__, str(e), frames, e.name if isinstance(e, ForbiddenCall) else None)

    def rebuild(self, message: str | None = None) -> BaseException:
        """The exception again, raised from the same files and lines (so `sandbox.reader_frame` finds the
        reader's own line); `message` replaces the message (a TimeLimitExceeded is made)."""
        if message is not None:
            e = TimeLimitExceeded(message)
        elif self.forbidden is not None:
            e = ForbiddenCall(self.forbidden)
        else:
            try:
                e = pickle.loads(self.exc) if self.exc is not None else None
            except Exception:
                e = None
            if not isinstance(e, BaseException):
                e = _stand_in(self.type_name)(self.message)
        tb = None
        for filename, lineno, name in reversed(self.frames):
            frame = _frame_at(filename, lineno, name)
            tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
        return e.with_traceback(tb)


_STAND_INS: dict = {}


def _stand_in(name: str) -> type:
    """An exception class of that name, for an exception that did not survive pickling."""
    return _STAND_INS.setdefault(name, type(name, (Exception,), {}))


def _frame_at(filename: str, lineno: int, name: str):
    """A finished frame whose code is `name` in `filename`, stopped at line `lineno`."""
    code = compile("\n" * max(0, (lineno or 1) - 1) + "frame = here()", filename or "?", "exec")
    code = code.replace(co_name=name or "?")
    space = {"here": lambda: sys._getframe(1)}
    exec(code, space)
    return space["frame"]


# --------------------------------------------------------------------------- inside a child

def _loopback() -> str | None:
    try:
        return next(n for _, n in socket.if_nameindex() if n.startswith("lo"))
    except (OSError, StopIteration):
        return None


def _die_with(parent: int) -> None:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG (Linux)
    except (AttributeError, OSError):
        pass
    if os.getppid() != parent:
        os._exit(1)


SENT = {"bytes": 0}     # in a child: bytes this rank handed to point-to-point sends (send, isend, batch_isend_irecv)


def _instrument(waiting, rank: int) -> None:
    """Every point-to-point send reaches ProcessGroup.send: count its bytes there (one place, no double count,
    and P2POp / batch_isend_irecv keep working with the original dist.isend). Every blocking communication
    ends in Work.wait: flag the rank as waiting meanwhile."""
    send, wait = dist.ProcessGroup.send, dist.Work.wait

    def counted(self, tensors, *args, **kwargs):
        SENT["bytes"] += sum(t.numel() * t.element_size() for t in tensors)
        return send(self, tensors, *args, **kwargs)

    def flagged(self, *args, **kwargs):
        waiting[rank] = 1
        try:
            return wait(self, *args, **kwargs)
        finally:
            waiting[rank] = 0

    dist.ProcessGroup.send, dist.Work.wait = counted, flagged


def _child(fn, rank, world, items, store, seconds, parent, conn, waiting):
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = sys.stderr = captured = io.StringIO()
    try:
        if "GLOO_SOCKET_IFNAME" not in os.environ and _loopback():
            os.environ["GLOO_SOCKET_IFNAME"] = _loopback()
        dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                                timeout=timedelta(seconds=seconds))
        _instrument(waiting, rank)
    except Exception as e:
        conn.send_bytes(pickle.dumps(("failed", f"{type(e).__name__}: {e}")))
        os._exit(1)
    conn.send_bytes(pickle.dumps(("ready", None)))
    for k, item in enumerate(items):
        if k:
            conn.recv_bytes()                   # "go": every rank finished the previous item
        try:
            result = fn(rank, world, item)
        except BaseException as e:              # a bug of the kind itself: report it, never hang
            result = RankResult("error", error=PackedError.of(e))
        result.output = captured.getvalue()
        captured.seek(0)
        captured.truncate()
        try:
            message = pickle.dumps(("result", (k, result)))
        except Exception as e:
            message = pickle.dumps(("result", (k, RankResult("error", error=PackedError.of(
                TypeError(msg("the result could not be sent back to the grader: {error}", error=str(e))))))))
        conn.send_bytes(message)
    conn.recv_bytes()                           # wait to be killed
    os._exit(0)


# --------------------------------------------------------------------------- the parent

@dataclass
class _Group:
    world: int
    items: list
    procs: list = field(default_factory=list)
    conns: list = field(default_factory=list)
    results: list = field(default_factory=list)     # per finished item: [RankResult by rank]
    current: dict = field(default_factory=dict)     # rank -> RankResult of the item running now
    waiting: object = None                          # shared flags: rank r sits in Work.wait
    ready: int = 0
    start: float = 0.0
    first_failure: float | None = None
    raised: bool = False                            # the first failure of this item is an exception
    active: bool = True

    def kill(self):
        for p in self.procs:
            if p.is_alive():
                p.kill()
        self.active = False


def run_groups(fn: Callable, plans: dict, seconds: float) -> dict:
    """{world_size: items} -> {world_size: [[RankResult by rank] for each item that ran]}; see the module doc."""
    ctx = mp.get_context("fork")
    folder = tempfile.mkdtemp(prefix="hwllm-group-")
    groups = [_Group(world, list(items)) for world, items in plans.items() if items]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # "use of fork() may lead to deadlocks"
            for g in groups:
                store = os.path.join(folder, f"store-{g.world}")
                g.waiting = ctx.RawArray("b", g.world)
                for rank in range(g.world):
                    mine, theirs = ctx.Pipe()
                    p = ctx.Process(target=_child, args=(fn, rank, g.world, g.items, store, seconds,
                                                         os.getpid(), theirs, g.waiting), daemon=True)
                    p.start()
                    theirs.close()
                    g.procs.append(p)
                    g.conns.append(mine)
        _supervise(groups, seconds)
        return {g.world: g.results for g in groups}
    finally:
        for g in groups:
            g.kill()
        for g in groups:
            for p, c in zip(g.procs, g.conns):
                p.join()
                c.close()
        shutil.rmtree(folder, ignore_errors=True)


def _supervise(groups: list, seconds: float) -> None:
    started = time.monotonic()
    owner = {id(c): (g, rank) for g in groups for rank, c in enumerate(g.conns)}
    while any(g.active for g in groups):
        now = time.monotonic()
        waits = [_deadline(g, seconds, started) - now for g in groups if g.active]
        live = [c for g in groups if g.active for c in g.conns if not c.closed]
        for c in mp.connection.wait(live, timeout=max(0.0, min(waits))):
            g, rank = owner[id(c)]
            try:
                kind, body = pickle.loads(c.recv_bytes())
            except (EOFError, OSError):
                c.close()
                if g.ready < g.world:
                    raise GroupError(tr(msg("a process of the group of {world} ended before joining it",
                                            world=g.world))) from None
                _report(g, rank, RankResult("died", error=PackedError.of(RankDied(msg(
                    "the process of rank {rank} ended ({how}) inside the code", rank=rank,
                    how=_exit_code(g.procs[rank]))))))
                continue
            if kind == "failed":
                raise GroupError(tr(msg("could not start a gloo group of {world} processes: {error}", world=g.world,
                                        error=body)))
            if kind == "ready":
                g.ready += 1
                g.start = time.monotonic()
            else:
                _report(g, rank, body[1])
        now = time.monotonic()
        for g in groups:
            if g.active:
                _advance(g, now, seconds, started)


def _exit_code(p) -> str:
    p.join(0.5)
    code = p.exitcode
    if code is None:
        return "still running"
    return msg("killed by signal {signal}", signal=-code) if code < 0 else msg("exit code {code}", code=code)


def _report(g: _Group, rank: int, result: RankResult) -> None:
    g.current[rank] = result
    if result.status != "ok" and g.first_failure is None:
        g.first_failure = time.monotonic()
        g.raised = result.status in ("error", "died")


def _deadline(g: _Group, seconds: float, started: float) -> float:
    if g.ready < g.world:
        return started + START
    end = g.start + seconds + MARGIN
    if g.first_failure is None:
        return end
    return min(end, time.monotonic() + POLL) if g.raised else min(end, g.first_failure + STUCK_GRACE)


def _settled(g: _Group) -> bool:
    """After a rank raised: has every other rank answered, or is it waiting in a communication?"""
    return g.first_failure is not None and g.raised and all(r in g.current or g.waiting[r] for r in range(g.world))


def _advance(g: _Group, now: float, seconds: float, started: float) -> None:
    """Close the running item when every rank answered or its time is up; start the next or stop the group."""
    if g.ready < g.world:
        if now >= started + START:
            raise GroupError(tr(msg("a gloo group of {world} processes did not form within {seconds:g} s",
                                    world=g.world, seconds=START)))
        return
    if len(g.current) < g.world and not _settled(g) and now < _deadline(g, seconds, started):
        return
    results = [g.current.get(r, RankResult("silent")) for r in range(g.world)]
    g.results.append(results)
    g.current, g.first_failure, g.raised = {}, None, False
    broken = any(r.status in ("timeout", "stuck", "silent", "died") for r in results)
    if broken or len(g.results) == len(g.items):
        g.kill()
        return
    g.start = time.monotonic()
    for c in g.conns:
        c.send_bytes(b"go")
