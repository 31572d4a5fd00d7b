"""Interview practice (utils/practice.py), the question map (utils/question_map.py) and the practice column of the
progress table: a mock interview end to end in a terminal (a subprocess) and in a Jupyter kernel, the drills built
from the mistake catalogue, the map and its pages, in English and Chinese.

Every test writes progress into its own file (tests/conftest.py sets HWLLM_PROGRESS; the subprocess and the
kernel get it too, with a throwaway HOME), never into the reader's.

The drills: `test_every_drill_as_shown_is_its_registered_mistake` executes the code of every drill as the reader
sees it and proves that it is its mistake, code object for code object (the same bytecode, constants and names;
the same imported objects and constants; the same methods for a class), so that tests/test_exercises.py, which
proves that every registered mistake fails the grader, covers each drill too. The grader itself runs on a drill of
every kind of exercise here (and on the book's solution, which must pass); HWLLM_ALL_DRILLS=1 runs it on every
drill (about 100 s: the distributed and sampling drills start process groups and draw thousands of samples).
"""

from __future__ import annotations

import ast
import dis
import importlib
import inspect
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
import tokenize
import types
from pathlib import Path

import nbformat
import pytest

from utils import practice, tracking
from utils.grader import EXERCISES, core, list_exercises, run
from utils.i18n import speaking
from utils.notebook import has_solution, solution_source

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
question_map = importlib.import_module("utils.question_map")      # the module; utils.question_map is its function


def book_solution_code(chapter: str, name: str) -> str:
    """The source of the chapter's solution cell that defines `name`, markers removed (what the reader would type)."""
    nb = nbformat.read(ROOT / "source" / f"{chapter}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and has_solution(cell.source):
            tree = ast.parse(solution_source(cell.source))
            if any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name for n in tree.body):
                return solution_source(cell.source)
    raise LookupError(f"no solution cell of {chapter} defines {name}")


def readable_file(code: str) -> str:
    return practice.HEADER + "\n\n" + code + "\n"


# --------------------------------------------------------------------------- the terminal, end to end

class Terminal:
    """A subprocess driven line by line: `expect(text)` waits for a line that contains text."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen([sys.executable, "-m", "utils.practice", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, encoding="utf-8", bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, text: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"never saw {text!r}; the session printed:\n{''.join(self.seen)}")

    def send(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


@pytest.fixture
def reader_env(tmp_path):
    """The environment of a reader's process: a throwaway HOME, progress in this test's own file."""
    import matplotlib

    env = {k: v for k, v in os.environ.items() if k not in ("HWLLM_NO_PROGRESS", "HWLLM_PRACTICE", "HWLLM_LANG")}
    env.update(HOME=str(tmp_path / "home"), HWLLM_PROGRESS=os.environ["HWLLM_PROGRESS"], OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", MPLCONFIGDIR=matplotlib.get_cachedir())
    return env


def test_a_mock_interview_in_a_terminal(tmp_path, reader_env):
    folder = tmp_path / "practice"
    term = Terminal(["softmax", "--dir", str(folder)], reader_env)
    try:
        term.expect("Interview question: Write softmax by hand (手写 Softmax)")
        term.expect("Write `softmax(x, dim=-1)` from scratch.")
        path = Path(term.expect("Your file: ").split("Your file: ", 1)[1].split("  (the clock")[0].strip())
        assert path.parent == folder
        stub = path.read_text()
        assert "def softmax(x, dim=-1):\n    raise NotImplementedError" in stub
        assert '"""' not in stub and "exp" not in stub and "keepdim" not in stub      # no docstring, no hint
        path.write_text(readable_file("def softmax(x, dim=-1):\n    e = torch.exp(x)\n"
                                      "    return e / e.sum(dim, keepdim=True)\n"))                  # no max shift
        term.send("submit")
        term.expect("✗")
        term.expect("your softmax overflows")                   # the diagnosis
        path.write_text(readable_file(book_solution_code("foundations/softmax", "softmax")))
        term.send("submit")
        term.expect("passed in ")
        term.send("quit")
        assert term.proc.wait(timeout=30) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    entry = json.loads(Path(reader_env["HWLLM_PROGRESS"]).read_text())["exercises"]["softmax"]
    assert entry["status"] == "passed" and entry["practice"]["attempts"] == 2
    assert entry["practice"]["passes"] == 1 and entry["practice"]["best_seconds"] >= 0
    assert not (tmp_path / "home" / ".hand-written-llm").exists()     # files in --dir, progress in its own file


def test_a_terminal_session_in_chinese_with_hint_give_up_and_a_broken_file(tmp_path, capsys):
    session = practice.Session("relu")
    script = iter(["hint", "submit", "", "give up", "help", "break", "submit", "quit"])

    def read(_):
        line = next(script)
        if line == "break":
            session.path.write_text("def relu(x):\n    return x.clamp(min=0\n")       # a syntax error: no crash
            return "time"
        return line

    with speaking("zh"):
        practice.terminal(session, tmp_path, "zh", read=read)
    out = capsys.readouterr().out
    assert "从零手写 `relu(x)`" in out and "你的文件：" in out and "回去读这一章 foundations/activations" in out
    assert "尚未作答" in out and "可用命令" in out and "relu 的提示" in out.replace("`", "")
    assert "你的文件在" in out and "SyntaxError" in out


def test_give_up_points_to_the_chapter_never_the_solution(capsys):
    session = practice.Session("softmax")
    text = session.give_up("en")
    assert "chapters/foundations/softmax.ipynb" in text and "exp" not in text and "amax" not in text


# --------------------------------------------------------------------------- the notebook, in a real kernel

def test_interview_and_submit_in_a_kernel(reader_env):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT), env=reader_env)
    try:
        def execute(code):
            msg_id = kc.execute(code)
            reply = kc.get_shell_msg(timeout=120)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=120)
            outputs = []
            while True:
                m = kc.get_iopub_msg(timeout=120)
                if m["parent_header"].get("msg_id") != msg_id:
                    continue
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    break
                c = m["content"]
                outputs.append(c.get("text") or c.get("data", {}).get("text/plain") or c.get("evalue") or "")
            assert reply["content"]["status"] == "ok", reply["content"]
            return reply["content"], "\n".join(outputs)

        reply, shown = execute('import utils\ns = utils.interview("softmax", lang="zh")')
        assert "面试原题：手写 Softmax" in shown and "从零手写 `softmax(x, dim=-1)`" in shown
        cells = [p["text"] for p in reply.get("payload", []) if p.get("source") == "set_next_input"]
        assert len(cells) == 1 and "def softmax(x, dim=-1):\n    raise NotImplementedError" in cells[0]
        assert '"""' not in cells[0]
        execute("import torch\n" + book_solution_code("foundations/softmax", "softmax"))
        _, shown = execute("r = utils.submit()\nprint('verdict', r.passed, s.attempts)")
        assert "verdict True 1" in shown and "通过" in shown
        _, shown = execute('utils.set_language("en")\nprint(utils.question_map(show=False).state("softmax"))')
        assert "passed" in shown
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    entry = json.loads(Path(reader_env["HWLLM_PROGRESS"]).read_text())["exercises"]["softmax"]
    assert entry["practice"]["passes"] == 1 and "best_seconds" in entry["practice"]


def test_interview_outside_ipython_prints_the_stub(capsys):
    session = practice.interview("attention", seed=3, lang="en")
    out = capsys.readouterr().out
    assert session.name in practice.candidates("attention")
    assert practice.stub(session.exercise) in out
    with pytest.raises(NameError, match="define"):
        practice.submit()                           # nothing defined under that name here


# --------------------------------------------------------------------------- picking, stubs, the store

def test_picking_favours_what_is_not_passed_and_a_seed_repeats():
    names = practice.candidates("attention")
    assert names and all(EXERCISES[n].chapter.startswith("attention/") for n in names)
    assert practice.candidates("rope") == practice.candidates("positions/rope") == ["apply_rope"]
    assert practice.candidates("softmax") == ["softmax"]
    with pytest.raises(KeyError, match="did you mean"):
        practice.candidates("sofmax")
    assert practice.pick("attention", seed=7) == practice.pick("attention", seed=7)
    store = {"exercises": {n: {"best": "passed"} for n in names[1:]}}
    store["exercises"][names[2]]["practice"] = {"passes": 1}
    assert [practice.weight(store["exercises"].get(n, {})) for n in names[:3]] == [4, 2, 1]
    tracking.save(store)
    picks = [practice.pick("attention", seed=s) for s in range(40)]
    assert picks.count(names[0]) > 40 / len(names), picks      # weight 4 against 2 (or 1) for each passed one


def test_every_stub_holds_the_signature_only():
    for name in list_exercises():
        ex = EXERCISES[name]
        code = practice.stub(ex)
        tree = ast.parse(code)
        defined = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert [d.name for d in defined] == [name], code
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert ast.get_docstring(node) is None, code
        namespace: dict = {}
        exec(compile(code, f"<stub {name}>", "exec"), namespace)
    for name in ("softmax", "BatchNorm", "SGD", "BPETokenizer", "cosine_lr"):
        namespace = {}
        exec(practice.stub(EXERCISES[name]), namespace)
        assert run(name, namespace[name]).status == "not attempted", name


def test_the_store_keeps_practice_beside_old_entries():
    tracking.save({"exercises": {"softmax": {"status": "passed", "best": "passed", "time": "2026-01-01 00:00:00"}}})
    from utils import progress
    row = next(r for r in progress(show=False).rows if r[0] == "softmax")
    assert row[2] == "passed" and row[5] == ""                # a store from before practice still loads
    tracking.record_practice("softmax", "interview", passed=False)
    tracking.record_practice("softmax", "interview", passed=True, seconds=125.0)
    tracking.record_practice("softmax", "interview", passed=True, seconds=90.4)
    tracking.record_practice("softmax", "drill", passed=True, mistake="no max shift")
    entry = tracking.load()["exercises"]["softmax"]
    assert entry["status"] == "passed" and entry["time"] == "2026-01-01 00:00:00"
    assert entry["practice"] | {"time": None} == {"attempts": 3, "passes": 2, "best_seconds": 90.4,
                                                  "last_seconds": 90.4, "drill_attempts": 1,
                                                  "drills": ["no max shift"], "time": None}
    table = progress(show=False)
    assert next(r for r in table.rows if r[0] == "softmax")[5] == "1:30"
    assert "best time" in str(table) and "1:30" in table._repr_html_()
    with speaking("zh"):
        assert "模拟面试最快用时" in str(table)


def test_nothing_is_recorded_under_the_tools(monkeypatch):
    monkeypatch.setenv("HWLLM_NO_PROGRESS", "1")
    tracking.record_practice("softmax", "interview", passed=True, seconds=3.0)
    assert not tracking.path().exists()


# --------------------------------------------------------------------------- drills

def test_every_mistake_is_a_drill_or_says_why_not(capsys):
    made, skipped = practice.drills(), practice.unreadable()
    total = sum(len(EXERCISES[n].mistakes) for n in list_exercises())
    assert len(made) + len(skipped) == total and len(made) >= total // 2
    assert all(why for _, _, why in skipped)
    for d in made:
        tree = ast.parse(d.code)
        top = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert top[-1] == d.exercise, d.code                 # renamed to the exercise's name, defined last
        tokens = tokenize.generate_tokens(io.StringIO(d.code).readline)
        assert not [t for t in tokens if t.type == tokenize.COMMENT], d.code
        assert all(ast.get_docstring(n) is None for n in ast.walk(tree)
                   if isinstance(n, (ast.FunctionDef, ast.ClassDef))), d.code
    practice.main(["--list-drills"])
    assert f"{len(made)} drills from {total} registered mistakes" in capsys.readouterr().out


def _ops(code, old, new) -> list:
    """A code object as its instructions with their resolved arguments (constants, names: `old` read as `new`),
    nested code included: what it computes, whatever its docstring, line numbers and constant table."""
    out = []
    for i in dis.get_instructions(code):
        v = i.argval
        if isinstance(v, types.CodeType):
            v = ("code", tuple(_ops(v, old, new)))
        elif isinstance(v, str) and v == old:
            v = new
        elif isinstance(v, float) and v != v:
            v = "nan"
        out.append((i.opname, type(v).__name__, v))
    return out


def _same_code(a, b, old, new) -> bool:
    """Two code objects that compute the same: the same instructions on the same constants and names."""
    return (_ops(a, old, new) == _ops(b, old, new) and a.co_varnames == b.co_varnames
            and a.co_argcount == b.co_argcount and a.co_kwonlyargcount == b.co_kwonlyargcount
            and a.co_flags == b.co_flags)


def _code_of(value):
    value = inspect.unwrap(getattr(value, "__func__", value))
    if isinstance(value, property):
        return [f.__code__ for f in (value.fget, value.fset, value.fdel) if f is not None]
    return [value.__code__] if isinstance(value, types.FunctionType) else None


def _same_object(mine, theirs, old, new, module) -> bool:
    """The drill's object computes what the mistake's does: the same code, the same methods, the same bases."""
    if isinstance(theirs, type):
        if not isinstance(mine, type):
            return False
        outside = lambda cls: [k for k in cls.__mro__ if k.__module__ != module.__name__ and k.__module__ != "drill"]
        if outside(mine) != outside(theirs):
            return False
        names = {n for k in theirs.__mro__ if k.__module__ == module.__name__ for n in vars(k)}
        names |= {n for k in mine.__mro__ if k.__module__ == "drill" for n in vars(k)}
        for n in names - {"__module__", "__doc__", "__qualname__", "__dict__", "__weakref__", "__firstlineno__",
                          "__static_attributes__"}:
            a, b = inspect.getattr_static(mine, n, None), inspect.getattr_static(theirs, n, None)
            ca, cb = _code_of(a), _code_of(b)
            if ca is not None or cb is not None:
                if ca is None or cb is None or len(ca) != len(cb) or not all(
                        _same_code(x, y, old, new) for x, y in zip(ca, cb)):
                    return False
            elif a != b:
                return False
        return True
    ca, cb = _code_of(mine), _code_of(theirs)
    return ca is not None and cb is not None and all(_same_code(x, y, old, new) for x, y in zip(ca, cb))


def test_every_drill_as_shown_is_its_registered_mistake():
    for d in practice.drills():
        ex = EXERCISES[d.exercise]
        mistake = next(m for m in ex.mistakes if m.name == d.mistake)
        module = sys.modules[mistake.impl.__module__]
        namespace = {"__name__": "drill"}
        exec(compile(d.code, f"<drill {d.exercise}: {d.mistake}>", "exec"), namespace)
        old = mistake.impl.__name__
        where = f"{d.exercise} / {d.mistake}:\n{d.code}"
        assert _same_object(namespace[d.exercise], mistake.impl, old, d.exercise, module), where
        for name, value in namespace.items():
            if name in ("__name__", "__builtins__", d.exercise):
                continue
            theirs = vars(module).get(name)
            if callable(value) and getattr(value, "__module__", "") == "drill":
                if name in vars(module) or not isinstance(value, type):      # a helper, inlined
                    assert _same_object(value, theirs, old, d.exercise, module), f"helper {name} of {where}"
            else:                                    # an import or a constant: the module's own object
                assert value is theirs or (value == theirs and type(value) is type(theirs)), f"{name} of {where}"


SAMPLE = ("softmax", "cosine_lr", "SGD", "clip_grad_norm_", "BatchNorm", "flash_attention", "llama_ffn_size",
          "BPETokenizer", "sample_next_token")      # a drill of most kinds; distributed: HWLLM_ALL_DRILLS=1


def _grade_drills(names, diagnose=True):
    """Each drill of `names` (one per exercise unless HWLLM_ALL_DRILLS=1), executed as shown, fails the grader
    (diagnosed as its own mistake when `diagnose`), and the book's solution of the exercise passes."""
    every = os.environ.get("HWLLM_ALL_DRILLS") == "1"
    from utils.notebook import load_solutions
    graded = []
    for name in names:
        drills = practice.drills(name)
        if not drills:
            continue
        for d in drills if every else drills[:1]:
            namespace = {"__name__": "drill"}
            exec(compile(d.code, f"<drill {d.exercise}: {d.mistake}>", "exec"), namespace)
            report = run(d.exercise, namespace[d.exercise])
            assert report.status == "failed", f"{d.exercise} / {d.mistake} passes:\n{d.code}"
            if diagnose and not every:
                assert report.failure.mistake == d.mistake, (d.mistake, report.failure.mistake)
            graded.append(d)
        solution = load_solutions(EXERCISES[name].chapter)[name]
        assert run(name, solution).passed, f"the book's {name} fails"
    return graded


def test_drills_of_every_kind_fail_the_grader_and_the_books_solution_passes(monkeypatch):
    names = [n for n in SAMPLE if n in EXERCISES]
    if os.environ.get("HWLLM_ALL_DRILLS") == "1":
        monkeypatch.setattr(core, "diagnose", lambda *a: None)       # the verdict, without naming the mistake
        names = list_exercises()
    graded = _grade_drills(names)
    assert {EXERCISES[d.exercise].kind for d in graded} >= {"function", "module", "optimizer", "schedule"}


def test_a_drill_in_a_terminal_in_chinese(tmp_path, capsys):
    chosen = next(d for d in practice.drills("softmax") if d.mistake == "no keepdim")
    session = practice.Session("softmax", "drill", chosen)
    fixed = book_solution_code("foundations/softmax", "softmax")

    def read(_):
        if not read.done:
            read.done = True
            assert session.path.read_text() == chosen.code          # the candidate's answer, as shown
            session.path.write_text(readable_file(fixed))
            return "submit"
        return "quit"

    read.done = False
    with speaking("zh"):
        practice.terminal(session, tmp_path, "zh", read=read)
    out = capsys.readouterr().out
    assert "找 bug" in out and "通过！" in out and "bug 在这里：" in out
    assert tracking.load()["exercises"]["softmax"]["practice"]["drills"] == ["no keepdim"]
    assert "status" not in tracking.load()["exercises"]["softmax"]       # a drill is not the exercise passed


def test_the_drill_command_picks_a_drill(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda _: "quit")
    assert practice.main(["--drill", "log_softmax", "--seed", "2", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (path,) = tmp_path.glob("log_softmax-drill-*.py")
    assert "Find the bug" in out and path.read_text() in {d.code for d in practice.drills("log_softmax")}


# --------------------------------------------------------------------------- the question map

def test_every_question_has_a_chapter_of_the_curriculum():
    assert question_map.problems() == []
    data = question_map.load()
    curriculum = set(data["curriculum"])
    for q in data["questions"]:
        assert q["chapters"] and set(q["chapters"]) <= curriculum, q
        assert q["kind"] in ("code", "formula") and q["zh"] and q["en"]


def test_a_question_without_a_chapter_fails(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "_toc.yml").write_text("parts: [{caption: x, chapters: [{file: chapters/foundations/softmax}]}]\n")
    (tmp_path / "source" / "questions.yml").write_text(
        "curriculum: {foundations/softmax: {en: Softmax, zh: Softmax}}\n"
        "questions:\n"
        "  - {kind: code, zh: 手写 Softmax, en: softmax, chapters: [foundations/softmax], exercises: [softmax]}\n"
        "  - {kind: code, zh: 手写 SVM, en: SVM, chapters: [classic_ml/svm], exercises: []}\n"
        "  - {kind: code, zh: 手写 X, en: X, chapters: [], exercises: []}\n"
        "  - {kind: code, zh: 手写 Y, en: Y, chapters: [foundations/softmax], exercises: [no_such]}\n")
    question_map._load.cache_clear()
    found = question_map.problems(tmp_path)
    assert len(found) == 3 and "classic_ml/svm" in found[0] and "no chapter" in found[1] and "no_such" in found[2]


@pytest.mark.skipif(not (SHARED / "QUESTIONS.md").exists(), reason="../shared/QUESTIONS.md is not beside the book")
def test_the_map_holds_every_question_of_the_write_ups():
    sections = {"code": [], "formula": []}
    kind = None
    for line in (SHARED / "QUESTIONS.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            kind = "code" if "手撕" in line else "formula"
        elif line.startswith("- ") and kind:
            sections[kind].append(line[2:])
    data = question_map.load()["questions"]
    for kind, asked in sections.items():
        mine = [q["zh"] for q in data if q["kind"] == kind]
        assert len(mine) == len(asked), kind
        for text, q in zip(asked, mine):
            assert q[:6] == text[:6], (text, q)


@pytest.mark.skipif(not (SHARED / "CURRICULUM.md").exists(), reason="../shared/CURRICULUM.md is not beside the book")
def test_the_maps_curriculum_is_the_curriculum():
    import re
    chapters, folder = [], None
    for line in (SHARED / "CURRICULUM.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"## Part \d+: .*\(`chapters/(\w+)/`\)", line)
        if m:
            folder = m.group(1)
        m = re.match(r"### (\w+)", line)
        if m and folder:
            chapters.append(f"{folder}/{m.group(1)}")
    assert list(question_map.load()["curriculum"]) == chapters


def test_the_pages_in_both_languages():
    pages = question_map.page_files()
    en, zh = pages[ROOT / "questions.md"], pages[ROOT / "zh" / "questions.md"]
    assert en.startswith(question_map.HEAD) and "# Interview questions" in en and "# 面试题地图" in zh
    in_book = set(question_map.book_chapters())
    for q in question_map.questions():
        for c in q.chapters:
            link = f"](chapters/{c.rel}.ipynb)"
            assert (link in en and link in zh) == (c.rel in in_book), c.rel
    for rel in in_book:
        assert (ROOT / "chapters" / f"{rel}.ipynb").exists()
    planned = [c for q in question_map.questions() for c in q.chapters if not c.in_book]
    if planned:
        assert "(planned)" in en and "（计划中）" in zh
    assert "Write softmax by hand (手写 Softmax)" in en and "| 手写 Softmax |" in zh
    assert "\\_\\_init\\_\\_" in en            # markdown punctuation escaped: __init__ is not bold
    n_rows = sum(line.startswith("| ") and line[2].isdigit() for line in en.splitlines())
    assert n_rows == len(question_map.load()["questions"])


def test_question_map_in_jupyter_shows_the_readers_status():
    tracking.save({"exercises": {"softmax": {"status": "passed", "best": "passed"},
                                 "log_softmax": {"status": "failed", "best": "failed"}}})
    table = question_map.question_map(show=False, lang="en")
    assert table.state("softmax") == "passed" and table.state("log_softmax") == "failed"
    assert table.state("cross_entropy") == "not attempted"
    assert "softmax: passed" in str(table) and "color:#1a7f37" in table._repr_html_()
    zh = question_map.question_map(show=False, lang="zh")
    assert "softmax: 通过" in str(zh) and "手撕代码" in zh._repr_html_()
