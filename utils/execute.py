"""Execute the book's notebooks once per run, and stage the executed chapters for the website.

    python -I utils/execute.py chapters exercises solutions zh   # what CI runs (make notebooks): both languages
    python -I utils/execute.py chapters zh/chapters               # what make build runs for readers
    python -I utils/execute.py --verify                        # is the staged copy current? (make site)

(`python -m utils.execute` works as well; run as a script it starts faster, as it needs nothing of
the utils package, whose import brings in torch.)

Every notebook runs top to bottom in a kernel of its own, two at a time (two worker processes: the
CI machine has two cores), and must finish without an error: a cell that raises fails the run with the notebook, the
cell and its traceback named, exactly as nbval's lax mode would. Each notebook has a budget of 15 s
(HWLLM_NOTEBOOK_BUDGET); one over it fails the run, and one still running at four times the budget is
stopped. The times are printed, slowest first, and written to _build/ci/notebooks.json.

The executed chapter notebooks, as the website shows them (utils.notebook.website_chapter), are
written into a staging copy of the book's source (_build/.staged: _config.yml with execution turned
off, _toc.yml, intro.md, chapters/, _vendor/..., and the Chinese book in zh/ with its own _config.yml
and _toc.yml), which `jupyter-book build` turns into the two websites without executing anything a
second time. The notebooks in chapters/ and zh/chapters/ are never written to: they stay output-free.

Kernels are forked from a warm process. Starting a kernel the usual way costs a Python start-up and
the imports of ipykernel, numpy, matplotlib and torch (2 to 3 s of CPU each time, more than most
notebooks' own work). Here one "zygote" process imports those libraries once (see PRELOAD for what
is left out and why) and forks a fresh kernel for every notebook: a new process, a new namespace,
the notebook's own folder as its working directory, the environment a kernel gets, the usual
ipykernel, only with those modules already in sys.modules. To keep the budget as strict as a cold
kernel's, each notebook's time includes the measured cost of those imports (their CPU seconds in
the zygote, which is what they take a cold kernel on an idle machine, and not inflated when the
machine is busy with something else). The executed outputs are
the same as with cold kernels (checked page by page on the built site: only measured timings and
widget ids differ). HWLLM_COLD_KERNELS=1 starts every kernel the usual way instead.

Kernels started here never write the reader's progress: HWLLM_NO_PROGRESS=1 is in their environment.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "_build" / ".staged"
TIMES = ROOT / "_build" / "ci" / "notebooks.json"
BUDGET = float(os.environ.get("HWLLM_NOTEBOOK_BUDGET", "15"))
HARD_STOP = 2  # a notebook still running at HARD_STOP x BUDGET is stopped
# The stall described below also hit the rerun of zh/exercises/foundations/activations (its last cell, a
# matplotlib figure after the widget cell, waited past 30 s; the same notebook runs in 11 s under plain nbclient,
# and in 5 s on its next run here): a notebook over budget gets up to RERUNS runs alone, each held to the budget.
RERUNS = 2
# Known, not understood: about one run in five of a notebook whose cell displays an ipywidgets `interactive`
# (exercises/foundations/activations, cell 43) waits about a minute for that cell's execute_reply while its
# kernel sits idle, only when two kernels run at once (cold or forked kernels alike; never one at a time,
# never under plain nbclient or nbval in 10 runs each). A notebook over budget is therefore run once more,
# alone, in a cold kernel; it passes only if that run is within the budget, and the report says so.
# The grader's promise: a check finishes within a second, the first one in a fresh kernel included. The
# first check cell of every notebook (a line starting `check(`) is held to it; in the chapters it grades the
# book's own solution, so every lazy import and first-use cost of the grader is inside it.
# Each exercise declares its promise (`Exercise.promise`: 1 s; the multi-process kinds 5 s); the report reads
# it from the registry once every notebook has run (the parent imports the grader only then).
CHECK_BUDGET = float(os.environ.get("HWLLM_CHECK_BUDGET", "1"))     # for a check of no registered exercise
CHECK_CELL = re.compile(r"^check\(\s*[\"']?(\w*)", re.M)
# What the zygote imports once for every kernel: libraries only, none that hooks into IPython when
# imported (the inline backend, matplotlib_inline, hooks in on the first figure, which happens in the
# kernel; ipywidgets registers its comm target on import, so it is not preloaded), and never this
# book's utils, whose behaviour may depend on what a notebook sets before importing it (HWLLM_LANG).
PRELOAD = ("numpy", "torch", "matplotlib.pyplot", "ipykernel.kernelapp", "ipykernel.ipkernel")
# Book sources the website needs besides the chapters; the rest of the repository is not staged.
SKIP = {"_build", "exercises", "solutions", "tests", "utils", "artifacts", "build", "docs", "node_modules",
        "README.md", "source"}
BOOKS = {"": "en", "zh": "zh"}      # folder of each language's book in the repository (and in the stage)
CHAPTER_DIRS = tuple(ROOT / folder / "chapters" for folder in BOOKS)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# --------------------------------------------------------------------------------------- the zygote

ZYGOTE = r"""
import gc, importlib, json, os, random, signal, sys, time
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as ipykernel sets it
gc.disable()
start, cpu = time.perf_counter(), time.process_time()
for name in sys.argv[1:]:
    importlib.import_module(name)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
gc.freeze()  # the kernels' garbage collector leaves these objects (and their shared pages) alone
threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
kernels = set()
def reap(*_):  # forked kernels are reaped as they exit (and their CPU time is counted as ours)
    try:
        while True:
            pid = os.waitpid(-1, os.WNOHANG)[0]
            if not pid:
                break
            kernels.discard(pid)
    except ChildProcessError:
        pass
signal.signal(signal.SIGCHLD, reap)
print(json.dumps({"preload": cpu, "preload_wall": wall, "threads": threads}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid:
        kernels.add(pid)
        print(json.dumps({"pid": pid}), flush=True)
        continue
    try:  # the kernel: a fresh process, set up as `python -m ipykernel_launcher` would be
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        gc.enable()
        os.setsid()
        try:  # die with the zygote, whatever happens to the executor
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0); os.dup2(log, 1); os.dup2(log, 2); os.close(null); os.close(log)
        os.chdir(req["cwd"])
        os.environ.clear(); os.environ.update(req["env"])
        random.seed()
        if "numpy.random" in sys.modules:
            sys.modules["numpy.random"].seed()
        if sys.path and sys.path[0] in ("", os.getcwd()):
            del sys.path[0]
        sys.argv = [req["launcher"]] + req["args"]
        from ipykernel import kernelapp
        kernelapp.launch_new_instance()
    finally:
        os._exit(0)
for pid in list(kernels):  # the executor is gone or done: no kernel outlives it
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
"""


class Zygote:
    """A process with the heavy libraries imported that forks a kernel on request."""

    def __init__(self, env: dict):
        """Starts the process; it imports its libraries while the caller goes on (see ready())."""
        self.env = env
        self.preload = self.preload_wall = 0.0
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, *PRELOAD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True)

    def ready(self) -> Zygote:
        hello = json.loads(self.proc.stdout.readline() or "{}")
        if "preload" not in hello:
            raise RuntimeError("the kernel zygote did not start")
        if hello["threads"] != 1:  # forking a process with threads could deadlock the child
            self.close()
            raise RuntimeError(f"the kernel zygote has {hello['threads']} threads after its imports")
        self.preload = hello["preload"]  # CPU seconds: what the imports cost a cold kernel on an idle machine
        self.preload_wall = hello["preload_wall"]
        return self

    def accepts(self, cmd: list[str], env: dict) -> bool:
        """Only the standard `python -m ipykernel_launcher` of this interpreter, in the zygote's env."""
        same_env = all(env.get(k) == self.env.get(k) for k in ("MPLBACKEND", "OMP_NUM_THREADS", "PYTHONPATH"))
        return (len(cmd) > 3 and cmd[1:3] == ["-m", "ipykernel_launcher"] and same_env
                and os.path.abspath(shutil.which(cmd[0]) or cmd[0]) == os.path.abspath(sys.executable))

    def spawn(self, args: list[str], env: dict, cwd: str, log: str) -> int:
        import ipykernel_launcher

        req = {"args": args, "env": env, "cwd": cwd, "log": log, "launcher": ipykernel_launcher.__file__}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


class _Forked:
    """What jupyter_client's provisioner expects of a Popen, for a kernel the zygote forked."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = 0
        return self.returncode

    def wait(self, timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum):
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)


def _kernel_manager_class():
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager

    class ReadyClient(AsyncKernelClient):
        async def wait_for_ready(self, timeout=None):
            """jupyter_client's handshake (kernel_info reply, IOPub connected), without its closing wait of
            at least 0.2 s for IOPub to go quiet: nbclient tells messages apart by their parent anyway."""
            deadline = time.monotonic() + (60 if timeout is None else timeout)
            while True:
                self.kernel_info()
                try:
                    msg = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    msg = None
                if msg is not None and msg["msg_type"] == "kernel_info_reply":
                    try:
                        await self.iopub_channel.get_msg(timeout=0.2)
                    except Empty:
                        pass  # IOPub not connected yet: ask again
                    else:
                        self._handle_kernel_info_reply(msg)
                        break
                if not await self._async_is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")
            while True:  # drain what has already arrived
                try:
                    await self.iopub_channel.get_msg(timeout=0.005)
                except Empty:
                    break

    class ZygoteKernelManager(AsyncKernelManager):
        """Starts its kernel by asking the zygote to fork one; the usual way when there is no zygote."""

        zygote: Zygote | None = None
        log_path: str = os.devnull

        def __init__(self, **kw):
            super().__init__(**kw)
            self.client_factory = ReadyClient

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            env = kw.get("env") or dict(os.environ)
            if self.zygote is None or not self.zygote.accepts(kernel_cmd, env):
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            cwd = str(kw.get("cwd") or os.getcwd())
            pid = self.zygote.spawn(kernel_cmd[3:], env, cwd, self.log_path)
            prov = self.provisioner
            prov.process, prov.pid, prov.pgid, prov.cwd = _Forked(pid), pid, pid, cwd
            self._reconcile_connection_info(prov.connection_info)

    return ZygoteKernelManager


# ------------------------------------------------------------------------------------ the executor


@dataclass
class Result:
    path: str
    seconds: float = 0.0  # the notebook's time against its budget (kernel start and imports included)
    error: str | None = None
    cells: int = 0
    startup: float = 0.0  # kernel start until its first cell ran
    slowest: list = field(default_factory=list)  # [(seconds, cell index)], three slowest cells
    cell_seconds: dict = field(default_factory=dict)  # cell index -> seconds, every code cell that ran
    first_check: tuple | None = None  # (seconds, cell index, exercise name) of the notebook's first check cell
    rerun_after: float | None = None  # seconds of a first run over budget, when the notebook was run again


def kernel_env(jobs: int) -> dict:
    """The environment every kernel (and the zygote) runs in."""
    env = dict(os.environ)
    env["HWLLM_NO_PROGRESS"] = "1"  # CI and builds never write the reader's progress
    # kernels side by side share the cores: two kernels on two cores, one torch thread each
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _describe_failure(path: str, nb, index: int | None, err: BaseException) -> str:
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    where = "before its first cell"
    source = ""
    if index is not None:
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        pos = code.index(index) + 1 if index in code else "?"
        where = f"cell {index} (code cell {pos} of {len(code)})"
        source = "\n".join("    | " + line for line in nb.cells[index].source.splitlines()[:12])
    if isinstance(err, CellExecutionError):
        head = f"{where} raised {err.ename}: {err.evalue}"
        tb = next((o for o in nb.cells[index].get("outputs", []) if o.get("output_type") == "error"), None)
        detail = ANSI.sub("", "\n".join(tb["traceback"])) if tb else ANSI.sub("", str(err))
    elif isinstance(err, CellTimeoutError):
        head = f"{where} was still running at {HARD_STOP * BUDGET:g} s (budget {BUDGET:g} s): stopped"
        detail = ""
    elif isinstance(err, DeadKernelError):
        head, detail = f"the kernel died during {where}", str(err)
    else:
        head, detail = f"{where}: {type(err).__name__}: {err}", ""
    lines = detail.strip().splitlines()
    if len(lines) > 40:
        lines = lines[:8] + ["    ..."] + lines[-30:]
    parts = [f"FAILED {path}: {head}"]
    if source:
        parts.append(source)
    if lines:
        parts.append("\n".join("  " + line for line in lines))
    return "\n".join(parts)


async def _execute(path: Path, zygote: Zygote | None, env: dict, logdir: str) -> tuple[Result, object]:
    import nbformat
    from nbclient import NotebookClient

    rel = _rel(path)
    nb = nbformat.read(path, as_version=4)
    km = _kernel_manager_class()(kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"))
    km.zygote = zygote
    km.log_path = os.path.join(logdir, rel.replace("/", "__") + ".log")
    state = {"index": None, "started": None, "times": []}

    def on_start(cell, cell_index):
        state["index"], state["started"] = cell_index, time.monotonic()
        state.setdefault("first", state["started"])

    def on_done(cell, cell_index, execute_reply):
        state["times"].append((time.monotonic() - state["started"], cell_index))

    start = time.monotonic()
    deadline = start + HARD_STOP * BUDGET
    client = NotebookClient(
        nb, km=km, timeout=int(HARD_STOP * BUDGET), startup_timeout=60, allow_errors=False,
        record_timing=False, shutdown_kernel="immediate", on_cell_start=on_start, on_cell_executed=on_done,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.timeout_func = lambda cell: max(1, int(deadline - time.monotonic() + 1))
    result = Result(rel, cells=sum(c.cell_type == "code" for c in nb.cells))
    try:
        await client.async_execute(env=env, cleanup_kc=True)  # and kill the kernel when done
    except Exception as err:  # noqa: BLE001 - every failure becomes a message naming the notebook
        result.error = _describe_failure(rel, nb, state["index"], err)
        log = Path(km.log_path)
        if log.exists() and "died" in result.error:
            result.error += "\n  kernel log:\n" + "\n".join("    " + s for s in log.read_text().splitlines()[-15:])
    elapsed = time.monotonic() - start
    result.seconds = elapsed + (zygote.preload if zygote else 0.0)
    result.startup = state.get("first", start) - start
    result.slowest = sorted(state["times"], reverse=True)[:3]
    result.cell_seconds = {i: round(t, 3) for t, i in state["times"]}
    checks = [(i, m[1]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for m in [CHECK_CELL.search(c.source)] if m]
    if checks and checks[0][0] in result.cell_seconds:
        result.first_check = (result.cell_seconds[checks[0][0]], *checks[0])
    return result, nb


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def notebooks(paths: list[str]) -> list[Path]:
    found = []
    for p in paths:
        p = (ROOT / p).resolve() if not Path(p).is_absolute() else Path(p)
        if p.is_file():
            found.append(p)
        else:
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts
                            and "_build" not in q.relative_to(p).parts)
    return found


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


BOOK_FILES = (".yml", ".yaml", ".md", ".bib", ".png", ".svg", ".css", ".js", ".txt")


def book_files() -> list[Path]:
    """The files of both books besides the notebooks: _config.yml, _toc.yml, intro.md, glossary.md, ..."""
    return [p for folder in BOOKS for p in sorted((ROOT / folder).iterdir())
            if p.is_file() and p.suffix in BOOK_FILES and p.name not in SKIP]


def stage_sources(stage: Path) -> None:
    """A fresh staging copy of the book's sources, with execution turned off in each book's _config.yml."""
    import yaml

    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    skip = shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__")
    for entry in ROOT.iterdir():
        if entry.name.startswith(".") or entry.name in SKIP or entry.name in BOOKS or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, stage / entry.name, symlinks=True, ignore=skip)
    for path in book_files():
        target = stage / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for folder in BOOKS:
        config = yaml.safe_load((ROOT / folder / "_config.yml").read_text(encoding="utf-8"))
        config.setdefault("execute", {})["execute_notebooks"] = "off"  # executed once, by utils.execute
        sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
        sphinx["hwllm_source_dir"] = str(ROOT / folder)  # the download button serves the output-free chapters
        text = (f"# Generated by utils.execute from the book's {folder or '.'}/_config.yml: the notebooks here are "
                "already executed.\n" + yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        (stage / folder / "_config.yml").write_text(text, encoding="utf-8")


def verify_stage(stage: Path) -> str | None:
    """None when every chapter is staged from its current source, and the book's other files (_toc.yml,
    intro.md, _config.yml...) from their current versions; else what is wrong."""
    manifest = stage / "manifest.json"
    if not manifest.exists():
        return f"{stage} has no executed chapters: run `make notebooks` (or `make build`)"
    staged = json.loads(manifest.read_text())
    for path in notebooks([str(d) for d in CHAPTER_DIRS]) + book_files():
        rel = path.relative_to(ROOT).as_posix()
        if staged.get(rel) != fingerprint(path):
            return f"{rel} changed since it was staged: run `make notebooks` (or `make build`)"
    return None


def start_zygote(env: dict) -> Zygote | None:
    if os.environ.get("HWLLM_COLD_KERNELS") == "1" or not sys.platform.startswith("linux"):
        return None
    try:
        return Zygote(env)
    except OSError as err:
        print(f"note: kernels start the usual way ({err})")
        return None


def ready_zygote(zygote: Zygote | None) -> Zygote | None:
    if zygote is None:
        return None
    try:
        return zygote.ready()
    except Exception as err:  # noqa: BLE001 - fall back to the usual kernels, and say so
        print(f"note: kernels start the usual way ({err})")
        return None


def website_transform():
    """The generator's view of a chapter page (utils.notebook.website_chapter: solution markers removed,
    solutions collapsed behind a toggle), applied to each executed chapter before it is staged."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from utils import notebook as generator  # imports the utils package (torch): only when staging

    return generator.website_chapter


def is_chapter(path: Path) -> bool:
    return any(path.is_relative_to(d) for d in CHAPTER_DIRS)


def _worker(zygote: Zygote | None, tasks, out, env: dict, stage: Path | None, website, logdir: str) -> None:
    """A worker process: notebooks from `tasks` one after the other, each in a kernel of its own, until
    the None at the end; a result for each on `out`. Each worker runs its own event loop (two notebook
    clients sharing one loop now and then left a widget cell waiting a minute for its reply)."""
    import nbformat

    async def loop():
        while (path := tasks.get()) is not None:
            result, nb = await _execute(path, zygote, env, logdir)
            staged = None
            if stage is not None and not result.error and is_chapter(path):
                staged = (fingerprint(path), nbformat.writes(nb))     # staged by the parent (see run_all)
            out.send((asdict(result), staged))

    asyncio.run(loop())
    out.close()


def run_all(paths: list[Path], jobs: int, stage: Path | None, env: dict,
            zygotes: list, website=None, merge: bool = False) -> list[Result]:
    """Execute `paths` in `jobs` worker processes (forked from this one, which runs no event loop, so
    they start at once), chapters first: they are what the website waits for."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")
    tasks = ctx.SimpleQueue()
    for p in paths:
        tasks.put(p)
    for _ in range(jobs):
        tasks.put(None)
    manifest: dict = {}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hwllm-kernels-") as logdir:
        workers = []
        for i in range(jobs):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(zygotes[i], tasks, send, env, stage, None, logdir))
            proc.start()
            send.close()
            workers.append((proc, receive))
        try:
            live = {receive: proc for proc, receive in workers}
            while live:
                for conn in wait(list(live) + [p.sentinel for p in live.values()]):
                    if conn not in live:
                        continue  # a sentinel: its pipe says the rest (EOF)
                    try:
                        data, staged = conn.recv()
                    except EOFError:
                        del live[conn]
                        continue
                    result = Result(**data)
                    results.append(result)
                    mark = "FAIL" if result.error else ("OVER" if result.seconds > BUDGET else "ok  ")
                    print(f"  {mark} {result.seconds:5.1f} s  {result.path}", flush=True)
                    if staged:
                        # The parent, not the worker, turns the executed chapter into its page: importing utils
                        # (torch) in a process that then runs notebook clients made the widget cell of
                        # exercises/foundations/activations wait ~26 s for its reply, run after run.
                        import nbformat
                        if website is None:
                            website = website_transform()
                        target = stage / result.path
                        target.parent.mkdir(parents=True, exist_ok=True)
                        language = "zh" if result.path.startswith("zh/") else "en"
                        nbformat.write(website(nbformat.reads(staged[1], as_version=4), language), target)
                        manifest[result.path] = staged[0]
        finally:
            for proc, _ in workers:
                proc.join(timeout=30)
            for zygote in zygotes:
                if zygote is not None:
                    zygote.close()
    missing = {_rel(p) for p in paths} - {r.path for r in results}
    for path in sorted(missing):  # a worker that died takes its notebook with it: say so
        results.append(Result(path, error=f"FAILED {path}: its worker process died before reporting"))
    if stage is not None:
        kept = stage / "manifest.json"
        if merge and kept.exists():          # a second run of some notebooks: keep the first run's entries
            manifest = {**json.loads(kept.read_text()), **manifest}
        manifest.update({_rel(p): fingerprint(p) for p in book_files()})
        kept.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return results


def _promises():
    """exercise name -> the seconds its check promises (`Exercise.promise`); CHECK_BUDGET for other names."""
    from utils.grader import registry  # imports torch: only after every notebook has run

    def promise(name: str) -> float:
        try:
            return registry.get(name).promise
        except Exception:  # noqa: BLE001 - an unknown name (a reader's own check) keeps the default
            return CHECK_BUDGET
    return promise


def report(results: list[Result], wall: float, preload: float | None) -> int:
    failed = [r for r in results if r.error]
    over = [r for r in results if not r.error and r.seconds > BUDGET]
    promise = _promises()
    slow_checks = [r for r in results if not r.error and r.first_check
                   and r.first_check[0] > promise(r.first_check[2])]
    how = (f"; kernels forked warm, each time includes the {preload:.1f} s of CPU a cold kernel spends "
           f"importing {', '.join(PRELOAD)}" if preload is not None else "; cold kernels")
    print(f"\nnotebook execution time (budget {BUDGET:g} s each{how}), slowest first:")
    for r in sorted(results, key=lambda r: -r.seconds):
        flag = "  FAILED" if r.error else ("  OVER BUDGET" if r.seconds > BUDGET else "")
        if r.rerun_after is not None:
            flag += f"  (run again: the first run took {r.rerun_after:.1f} s)"
        print(f"{r.seconds:6.1f} s  {r.path}{flag}")
    total = sum(r.seconds for r in results)
    print(f"{total:6.1f} s  total over {len(results)} notebooks, {wall:.1f} s wall")
    for r in failed:
        print("\n" + r.error)
    for r in over:
        cells = ", ".join(f"cell {i} {s:.1f} s" for s, i in r.slowest)
        print(f"\nOVER BUDGET {r.path}: {r.seconds:.1f} s > {BUDGET:g} s (slowest: {cells})")
    for budget in sorted({promise(r.first_check[2]) for r in results if r.first_check}):
        firsts = sorted((r.first_check[0], r.path) for r in results
                        if r.first_check and promise(r.first_check[2]) == budget)
        print(f"first check of each notebook promised {budget:g} s: slowest {firsts[-1][0]:.2f} s in "
              f"{firsts[-1][1]}, median {firsts[len(firsts) // 2][0]:.2f} s over {len(firsts)} notebooks")
    for r in slow_checks:
        print(f"\nSLOW FIRST CHECK {r.path}: cell {r.first_check[1]} ({r.first_check[2]}) took "
              f"{r.first_check[0]:.2f} s > {promise(r.first_check[2]):g} s")
    if failed or over or slow_checks:
        print(f"\n{len(failed)} notebook(s) failed, {len(over)} over budget, "
              f"{len(slow_checks)} with a slow first check")
        return 1
    print(f"all {len(results)} notebooks ran clean within {BUDGET:g} s each, first checks within their promise")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -I utils/execute.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", help="notebooks or folders (default: chapters exercises solutions zh)")
    ap.add_argument("--jobs", "-j", type=int, default=int(os.environ.get("HWLLM_JOBS", "2")))
    ap.add_argument("--stage", default=str(STAGE), help="staging copy of the book source (default: %(default)s)")
    ap.add_argument("--no-stage", action="store_true", help="execute only; stage nothing")
    ap.add_argument("--times", default=str(TIMES), help="where to write the per-notebook times")
    ap.add_argument("--verify", action="store_true", help="check that the staged chapters are current, and exit")
    args = ap.parse_args(argv)
    stage = None if args.no_stage else Path(args.stage).resolve()
    if args.verify:
        problem = verify_stage(stage or STAGE)
        print(problem or f"staged chapters are current ({stage or STAGE})")
        return 1 if problem else 0
    start = time.monotonic()
    jobs = max(1, args.jobs)
    env = kernel_env(jobs)
    os.environ["HWLLM_NO_PROGRESS"] = "1"
    zygotes = [start_zygote(env) for _ in range(jobs)]  # one per worker; they import their libraries
    # while this process stages the sources and imports its own
    paths = notebooks(args.paths or ["chapters", "exercises", "solutions", "zh"])
    paths.sort(key=lambda p: not is_chapter(p))
    if stage is not None:
        stage_sources(stage)
    import nbclient  # noqa: F401
    import nbformat  # noqa: F401

    website = None            # imported by the parent once the workers are forked (see run_all)
    zygotes = [ready_zygote(z) for z in zygotes]
    if any(z is None for z in zygotes):  # all warm or all cold, so that every notebook is timed alike
        for z in zygotes:
            if z is not None:
                z.close()
        zygotes = [None] * jobs
    preload = max(z.preload for z in zygotes) if zygotes[0] else None
    preload_wall = max(z.preload_wall for z in zygotes) if zygotes[0] else None
    print(f"executing {len(paths)} notebooks, {jobs} at a time")
    results = run_all(paths, jobs, stage, env, zygotes, website)
    for _ in range(RERUNS):
        over = [r for r in results if r.seconds > BUDGET and (not r.error or "still running" in r.error)]
        if not over:
            break
        print(f"running {len(over)} notebook(s) over budget once more, alone, in a cold kernel: "
              + ", ".join(f"{r.path} ({r.seconds:.1f} s)" for r in over))
        again = {r.path: r for r in run_all([ROOT / r.path for r in over], 1, stage, env, [None], website,
                                             merge=True)}
        for r in over:
            again[r.path].rerun_after = r.seconds
        results = [again.get(r.path, r) if r in over else r for r in results]
    wall = time.monotonic() - start
    times = Path(args.times)
    times.parent.mkdir(parents=True, exist_ok=True)
    times.write_text(json.dumps({"wall": wall, "budget": BUDGET, "preload": preload, "preload_wall": preload_wall,
                                 "jobs": jobs,
                                 "notebooks": [asdict(r) for r in results]}, indent=1))
    return report(results, wall, preload)


if __name__ == "__main__":
    sys.exit(main())
