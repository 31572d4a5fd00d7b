"""Interview practice: a mock interview on any exercise of the book, and find-the-bug drills built from the
grader's catalogue of mistakes. In a terminal or in a notebook, in English or Chinese.

    python -m utils.practice [TOPIC]             a mock interview: an exercise you have not passed yet (or the one
                                                 named: an exercise, a chapter such as attention/rope, or a part
                                                 such as attention), its prompt as interviews word it, a file with
                                                 the signature only, a clock; then type `submit`, `hint`,
                                                 `give up` or `quit`
    python -m utils.practice --drill [EXERCISE]  find the bug: a candidate's complete answer with one classic
                                                 mistake in it; fix the file, then `submit`
    python -m utils.practice --list-drills       how many drills each exercise has
    options: --lang zh, --seed N (the same pick every time), --dir FOLDER (where the files go)

    s = utils.interview("softmax")     in a notebook: the prompt, and a new cell holding the signature only
    utils.submit()                     grade the function or class of that name defined in the notebook
    s.submit(softmax); s.hint(); s.give_up()
    d = utils.drill("softmax")         a new cell holding a wrong answer to fix; then utils.submit()

Every submission is graded by the same grader as the chapters (`utils.grader.run`). The reader's progress
file records each attempt and, for a pass, the time it took (utils.tracking.record_practice); the progress
table shows the best time per exercise. Only the reader's own submissions write it.

A drill is a registered mistake (`Exercise.mistakes`) shown as a candidate's answer. A mistake becomes a drill
when it is *readable* (`drill_source`):
- its implementation is a plain function or class defined by a `def` or `class` statement at the top level of its
  declaration module (not a lambda, a closure, a `functools.partial` or a class built with `type()`);
- its parameters are the exercise's (the constructor's, for a class), and it is of the exercise's interface (a
  class for a module, optimizer or class exercise, a function otherwise);
- every name it uses is a builtin, a module or object imported from outside this package (shown as an import),
  a literal constant of the module (shown as an assignment), or a function or class of the same module that is
  itself readable and is no exercise's oracle (inlined above it). A base class inlined so is merged into the
  class (the subclass's methods replacing the base's) unless a method calls super() for a method of that base;
- no inlined helper is a switchboard of flaws, a function with keyword-only parameters that the declaration's
  mistakes set to reach their bugs (its source would show the right and the wrong branches side by side).
The code is shown renamed to the exercise's name, with its comments and docstrings removed (they name the bug).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import html
import inspect
import io
import random
import sys
import time
import tokenize
import traceback
import types
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from . import tracking
from .grader.registry import EXERCISES, get, list_exercises
from .grader.result import in_notebook, show
from .i18n import language, msg, set_language, tr
from .progress_table import clock

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "source" / "questions.yml"
HEADER = "import math\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
COMMANDS = ("submit", "hint", "give up", "quit")                         # typed at the terminal's prompt
CALLS = ("utils.submit()", "s.submit(fn)", "s.hint()", "s.give_up()")    # in a notebook, s the returned session


# --------------------------------------------------------------------------- choosing an exercise

def candidates(topic: str | None = None) -> list[str]:
    """The exercises a topic names: an exercise ('softmax'), a chapter ('attention/rope' or 'rope'), or a part
    ('attention'); every exercise when topic is None."""
    names = list_exercises()
    if not topic:
        return names
    topic = topic.strip().strip("/").removeprefix("chapters/")
    if topic in EXERCISES:
        return [topic]
    for test in (lambda c: c == topic, lambda c: c.split("/")[-1] == topic, lambda c: c.split("/")[0] == topic):
        found = [n for n in names if test(EXERCISES[n].chapter)]
        if found:
            return found
    get(topic)                      # raises KeyError with "did you mean ...?"
    return []


def weight(entry: dict) -> int:
    """Not passed yet: 4; passed in the chapter but never in an interview: 2; passed in an interview: 1."""
    if entry.get("best") != "passed":
        return 4
    return 1 if entry.get("practice", {}).get("passes") else 2


def pick(topic: str | None = None, seed: int | None = None) -> str:
    """An exercise of `topic`, drawn with `weight` from the reader's progress (seeded: the same pick)."""
    names = candidates(topic)
    seen = tracking.load()["exercises"]
    rng = random.Random(seed)
    return rng.choices(names, weights=[weight(seen.get(n, {})) for n in names])[0]


# --------------------------------------------------------------------------- the prompt and the stub

@cache
def question_data(path: Path = QUESTIONS) -> dict:
    """source/questions.yml: the questions of the interview write-ups, each with its chapter(s) and exercises
    (empty when the book's sources are not beside the package, as on Colab)."""
    if not path.exists():
        return {}
    import yaml
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def questions_of(name: str) -> list[dict]:
    """The interview questions that ask for exercise `name`."""
    return [q for q in question_data().get("questions", []) if name in (q.get("exercises") or [])]


def chapter_question(chapter: str, lang: str) -> str:
    """The 面试原题 / 常见问法 line of a chapter, in `lang` ("" when the source is not here)."""
    path = ROOT / "source" / f"{chapter}.ipynb"
    if not path.exists():
        return ""
    import nbformat

    from .notebook import chapter_head
    return chapter_head(nbformat.read(path, as_version=4), lang)[1]


def parse_signature(signature: str) -> tuple[str, str, list[tuple[str, str]]]:
    """'SelfAttention(d_model, dropout=0.0); forward(x, attention_mask=None) -> (out, weights)' ->
    ('SelfAttention', 'd_model, dropout=0.0', [('forward', 'x, attention_mask=None')]): the name, its
    parameters (annotations dropped) and the methods the signature names."""
    def balanced(text, start):
        depth = 0
        for i in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                return i
        return len(text)

    def params(text):
        tree = ast.parse(f"def f({text}): pass").body[0]
        for a in tree.args.posonlyargs + tree.args.args + tree.args.kwonlyargs:
            a.annotation = None
        return ast.unparse(tree.args)

    name = signature[: signature.index("(")].strip()
    end = balanced(signature, signature.index("("))
    methods, rest = [], signature[end + 1:]
    i = 0
    while True:
        start = rest.find("(", i)
        if start < 0:
            break
        head = rest[i:start].split("->")[0]
        word = head.replace(";", " ").replace(".", " ").replace(",", " ").split()
        close = balanced(rest, start)
        if word and word[-1].isidentifier() and "->" not in rest[i:start]:
            methods.append((word[-1], params(rest[start + 1: close])))
        i = close + 1
    return name, params(signature[signature.index("(") + 1: end]), methods


def is_class(ex) -> bool:
    return ex.kind in ("module", "optimizer", "plain-class") or ex.name[:1].isupper()


def stub(ex) -> str:
    """The file or cell an interview starts from: imports, then the signature alone (no docstring, no hint)."""
    name, args, methods = parse_signature(ex.signature)
    todo = "raise NotImplementedError"
    if not is_class(ex):
        return f"{HEADER}\n\ndef {name}({args}):\n    {todo}\n"
    base = {"optimizer": "torch.optim.Optimizer", "plain-class": "object"}.get(ex.kind, "nn.Module")
    if not methods:
        methods = [("step", "closure=None")] if ex.kind == "optimizer" else [("forward", "x")]
    sep = ", " if args else ""
    init = (f"    def __init__(self{sep}{args}):\n" + ("        super().__init__()\n" if base == "nn.Module" else "")
            + f"        {todo}\n")
    body = "".join(f"\n    def {m}(self{', ' if a else ''}{a}):\n        {todo}\n" for m, a in methods)
    return f"{HEADER}\n\nclass {name}({base}):\n{init}{body}"


@dataclass
class Prompt:
    """What the interviewer says: the question (as the write-ups quote it), the task, the constraints."""

    name: str
    questions: list
    task: str
    rules: list = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [tr(msg("Interview question: {text}", text=q)) for q in self.questions]
        return out + [tr(self.task)] + [tr(r) for r in self.rules]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from .grader.result import rich
        rows = "".join(f"<div>{rich(line)}</div>" for line in self.lines())
        return f"<div class='hwllm-practice' style='border-left:4px solid #0969da;padding:6px 12px'>{rows}</div>"


def prompt(name: str, lang: str | None = None, commands: tuple = COMMANDS) -> Prompt:
    ex = get(name)
    lang = lang or language()
    asked = [q["zh"] if lang == "zh" or not q.get("en") else f"{q['en']} ({q['zh']})" for q in questions_of(name)]
    if not asked:
        line = chapter_question(ex.chapter, lang)
        asked = [line] if line else []
    rules = []
    if ex.forbidden:
        rules.append(msg("Do not call: {names}", names=", ".join(f"`{f}`" for f in ex.forbidden)))
    rules.append(msg("Match PyTorch's behaviour where it has a built-in; the grader checks shapes, dtypes, edge "
                     "cases and gradients. Commands: {commands}", commands=", ".join(commands)))
    return Prompt(name, asked, msg("Write `{signature}` from scratch.", signature=ex.signature), rules)


# --------------------------------------------------------------------------- drills from the mistake catalogue

class Unreadable(Exception):
    """Why a mistake cannot be shown as a self-contained answer."""


@dataclass(frozen=True)
class Drill:
    exercise: str
    mistake: str          # the mistake's name in the declaration
    code: str             # complete, runnable, renamed to the exercise's name
    message: str          # the diagnosis, shown once the reader gives up or fixes it


def _strip(source: str) -> str:
    """Source without comments and docstrings, blank lines squeezed."""
    tree = ast.parse(source)
    drop = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                drop.update(range(first.lineno, first.end_lineno + 1))
    out = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    comments = {(t.start[0], t.start[1]) for t in tokens if t.type == tokenize.COMMENT}
    for i, line in enumerate(source.splitlines(), start=1):
        if i in drop:
            continue
        cut = min((c for r, c in comments if r == i), default=None)
        if cut is not None:
            line = line[:cut]
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"


def _free_names(tree: ast.AST) -> list[str]:
    """Names the code reads but never binds (an approximation that is exact for the catalogue's plain code)."""
    bound, read = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                read.append(node.id)
            else:
                bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    seen = []
    for n in read:
        if n not in bound and not hasattr(builtins, n) and n not in seen:
            seen.append(n)
    return seen


@cache
def _oracles() -> frozenset:
    found = set()
    for ex in EXERCISES.values():
        for obj in (ex.oracle, getattr(ex.oracle, "func", None), getattr(ex.oracle, "__wrapped__", None)):
            if obj is not None:
                found.add(id(obj))
    return frozenset(found)


def _params(obj) -> list[str]:
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError) as e:
        raise Unreadable(f"no signature: {e}") from None
    names = [p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names[1:] if isinstance(obj, type) else names


def _signature_params(ex) -> list[str]:
    _, args, _ = parse_signature(ex.signature)
    tree = ast.parse(f"def f({args}): pass").body[0].args
    return [a.arg for a in tree.posonlyargs + tree.args + tree.kwonlyargs]


def _plain(obj) -> bool:
    """A function or class defined at the top level of its module, by `def` or `class`."""
    if isinstance(obj, type):
        return obj.__qualname__ == obj.__name__
    return (isinstance(obj, types.FunctionType) and obj.__name__ != "<lambda>" and not obj.__closure__
            and obj.__qualname__ == obj.__name__)


@cache
def _top_level(module_name: str) -> dict[str, str]:
    """name -> source (decorators included) of every top-level def and class of a module, read once."""
    module = sys.modules[module_name]
    try:
        text = Path(inspect.getsourcefile(module)).read_text(encoding="utf-8")
    except (OSError, TypeError):
        return {}
    lines = text.splitlines(keepends=True)
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found[node.name] = "".join(lines[first - 1: node.end_lineno])
    return found


@cache
def _names_in(source: str) -> tuple:
    return tuple(_free_names(ast.parse(source)))

def _import_line(name: str, obj) -> str | None:
    """How the reader would import `obj` under `name`, for an object from outside this package."""
    if isinstance(obj, types.ModuleType):
        mod = obj.__name__
        if mod.split(".")[0] == __package__:
            return None
        if "." in mod:
            parent, leaf = mod.rsplit(".", 1)
            return f"from {parent} import {leaf}" if leaf == name else f"import {mod} as {name}"
        return f"import {mod}" if mod == name else f"import {mod} as {name}"
    mod = getattr(obj, "__module__", None)
    if not mod or mod.split(".")[0] == __package__ or mod not in sys.modules:
        return None
    if getattr(sys.modules[mod], name, None) is obj:
        return f"from {mod} import {name}"
    return None


def _literal(value) -> bool:
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


class _Assembly:
    """The pieces of one drill: imports, constants, helpers in the order they must be defined."""

    def __init__(self, module):
        self.module = module
        self.scope = vars(module)
        self.imports: set[str] = set()
        self.constants: dict[str, str] = {}
        self.helpers: dict[str, str] = {}       # name -> source, dependencies first
        self.oracles = _oracles()

    def source_of(self, obj) -> str:
        inner = getattr(obj, "__wrapped__", obj)       # a function under @cache keeps its decorator line
        if not _plain(inner):
            raise Unreadable("not a plain function or class (a lambda, closure or partial)")
        text = _top_level(inner.__module__).get(inner.__name__)
        if text is None or vars(sys.modules[inner.__module__]).get(inner.__name__) is not obj:
            raise Unreadable("no source: not defined by a def or class statement of its module")
        return _strip(text)

    def resolve(self, source: str, skip: str) -> None:
        for name in _names_in(source):
            if name == skip or name in self.helpers or name in self.constants:
                continue
            if name not in self.scope:
                raise Unreadable(f"uses {name}, which its module does not define")
            obj = self.scope[name]
            line = _import_line(name, obj)
            if line:
                self.imports.add(line)
            elif isinstance(obj, (int, float, str, bool, tuple, list, dict, type(None))) and _literal(obj):
                self.constants[name] = f"{name} = {obj!r}"
            elif isinstance(obj, float):                                # inf, nan
                self.constants[name] = f"{name} = float({str(obj)!r})"
            elif type(obj).__name__ == "dtype" and type(obj).__module__ == "torch":
                self.imports.add("import torch")
                self.constants[name] = f"{name} = {obj!r}"
            elif (callable(obj) and getattr(obj, "__module__", "") == self.module.__name__
                  and id(obj) not in self.oracles):
                self.helpers[name] = ""             # placeholder: a cycle does not recurse forever
                text = self.source_of(obj)
                self.resolve(text, skip=name)
                del self.helpers[name]
                self.helpers[name] = text
            else:
                raise Unreadable(f"uses {name} ({type(obj).__name__} from {getattr(obj, '__module__', '?')}), "
                                 "which the reader cannot see")


def _merge_base(source: str, helpers: dict) -> tuple[str, set]:
    """A class whose single base is an inlined class of the same module, merged into one class (the base's
    methods, the subclass's overriding them) when no method calls super() for a method the base defines."""
    tree = ast.parse(source)
    cls = tree.body[0]
    if not isinstance(cls, ast.ClassDef) or len(cls.bases) != 1 or not isinstance(cls.bases[0], ast.Name):
        return source, set()
    base_name = cls.bases[0].id
    if base_name not in helpers:
        return source, set()
    base = ast.parse(helpers[base_name]).body[0]
    if not isinstance(base, ast.ClassDef):
        return source, set()
    base_methods = {n.name for n in base.body if isinstance(n, ast.FunctionDef)}
    for node in ast.walk(cls):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "super"
                and node.attr in base_methods):
            return source, set()
    mine = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in base_methods}
    body = [mine.get(n.name, n) if isinstance(n, ast.FunctionDef) else n for n in base.body]
    cls.body = body + [n for n in cls.body if not (isinstance(n, ast.FunctionDef) and n.name in mine)]
    cls.bases = base.bases
    cls.keywords = base.keywords
    return ast.unparse(cls) + "\n", {base_name}


def _no_plumbing(helpers: dict) -> None:
    """Raise Unreadable when the mistake is shared code plus a flaw parameter: an inlined helper function with
    keyword-only parameters is the declaration's switchboard of flaws (`_lloyd(x, c, *, empty="stay", stale=False)`),
    whose source would show the correct and the wrong branches side by side. A helper whose ordinary parameter the
    mistake sets (`_gelu_tanh(x, cubic=0.5)`) stays: the bug is in plain sight at the call, as a candidate writes it."""
    for name, text in helpers.items():
        node = ast.parse(text).body[0]
        if isinstance(node, ast.FunctionDef) and node.args.kwonlyargs:
            raise Unreadable(f"a flaw parameter passed to shared code: {name}(*, {node.args.kwonlyargs[0].arg}=...)")


def drill_source(ex, mistake) -> str:
    """The mistake's code as a candidate's self-contained answer named like the exercise; raises Unreadable."""
    impl = mistake.impl
    if not _plain(impl):
        raise Unreadable("not a plain function or class (a lambda, closure or partial)")
    if isinstance(impl, type) != is_class(ex):
        raise Unreadable("not of the exercise's interface (a function for a class, or the reverse)")
    if _params(impl) != _signature_params(ex):
        raise Unreadable(f"parameters {_params(impl)} differ from the exercise's {_signature_params(ex)}")
    module = sys.modules[impl.__module__]
    parts = _Assembly(module)
    main = parts.source_of(impl)
    parts.resolve(main, skip=impl.__name__)
    if ex.name != impl.__name__ and ex.name in _names_in(main):
        raise Unreadable(f"calls {ex.name} itself, which renaming would change")
    main, merged = _merge_base(main, parts.helpers) if isinstance(impl, type) else (main, set())
    for name in merged:                                 # the base, merged in: gone unless another helper uses it
        if name not in _names_in(main) and not any(name in _names_in(t) for n, t in parts.helpers.items() if n != name):
            del parts.helpers[name]
    _no_plumbing(parts.helpers)
    if ex.name in parts.helpers or ex.name in parts.constants:
        raise Unreadable(f"a helper is already named {ex.name}")
    old = impl.__name__
    tree = ast.parse(main)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == old:
            node.name = ex.name
        elif isinstance(node, ast.Name) and node.id == old:
            node.id = ex.name
    main = ast.unparse(tree) if merged else _rename(main, old, ex.name)
    imports = sorted(parts.imports, key=lambda s: (s.startswith("from"), s))
    blocks = ["\n".join(imports)] if imports else []
    if parts.constants:
        blocks.append("\n".join(parts.constants.values()))
    blocks += [t.rstrip("\n") for t in parts.helpers.values()] + [main.rstrip("\n")]
    return "\n\n\n".join(blocks) + "\n"


def _rename(source: str, old: str, new: str) -> str:
    """Every NAME token `old` becomes `new`, keeping the layout (strings and attributes untouched)."""
    out, lines = [], source.splitlines(keepends=True)
    edits = []
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string == old and not (prev and prev.string == "."):
            edits.append(tok.start)
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            prev = tok
    for row, line in enumerate(lines, start=1):
        for col in sorted((c for r, c in edits if r == row), reverse=True):
            line = line[:col] + new + line[col + len(old):]
        out.append(line)
    return "".join(out)


@cache
def _catalogue() -> tuple[tuple, tuple]:
    drills, skipped = [], []
    for name in list_exercises():
        ex = EXERCISES[name]
        for m in ex.mistakes:
            try:
                drills.append(Drill(name, m.name, drill_source(ex, m), m.message))
            except Unreadable as e:
                skipped.append((name, m.name, str(e)))
    return tuple(drills), tuple(skipped)


def drills(exercise: str | None = None) -> list[Drill]:
    """Every drill (of one exercise, or a topic's exercises), in reading order."""
    names = set(candidates(exercise))
    return [d for d in _catalogue()[0] if d.exercise in names]


def unreadable(exercise: str | None = None) -> list[tuple[str, str, str]]:
    """(exercise, mistake, why) for every registered mistake that is not a drill."""
    names = set(candidates(exercise))
    return [s for s in _catalogue()[1] if s[0] in names]


def pick_drill(topic: str | None = None, seed: int | None = None) -> Drill:
    pool = drills(topic)
    if not pool:
        raise LookupError(tr(msg("no drill for {topic}: its mistakes are not self-contained code",
                                 topic=topic or "the book")))
    seen = tracking.load()["exercises"]
    solved = lambda d: d.mistake in seen.get(d.exercise, {}).get("practice", {}).get("drills", [])
    return random.Random(seed).choices(pool, weights=[1 if solved(d) else 4 for d in pool])[0]


# --------------------------------------------------------------------------- a session

def chapter_link(chapter: str, lang: str) -> str:
    rel = f"{'zh/' if lang == 'zh' else ''}chapters/{chapter}.ipynb"
    try:
        from .notebook import colab_url
        return msg("{path} (Colab: {url})", path=rel, url=colab_url(rel))
    except Exception:           # no _config.yml beside the package (Colab installs utils alone)
        return rel


class NotDefined(LookupError):
    """The reader's file does not define the exercise's name."""


def load_file(path: Path, name: str):
    """Execute the reader's file and return the object it defines under `name`; raises what the file raises."""
    namespace = {"__name__": f"practice_{name}", "__file__": str(path)}
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    exec(code, namespace)
    if name not in namespace:
        raise NotDefined(tr(msg("{path} defines no `{name}`", path=str(path), name=name)))
    return namespace[name]


class Session:
    """One mock interview (mode "interview") or drill (mode "drill") on one exercise, with its clock."""

    def __init__(self, name: str, mode: str = "interview", drill: Drill | None = None):
        self.name, self.mode, self.drill = name, mode, drill
        self.exercise = get(name)
        self.started = time.monotonic()
        self.attempts = 0
        self.passed_after: float | None = None
        self.given_up = False
        self.path: Path | None = None

    @property
    def elapsed(self) -> float:
        return (self.passed_after if self.passed_after is not None else time.monotonic() - self.started)

    def code(self) -> str:
        return self.drill.code if self.drill else stub(self.exercise)

    def introduce(self, lang: str, commands: tuple = COMMANDS) -> str:
        if self.drill:
            return "\n".join([
                tr(msg("Find the bug: a candidate wrote this `{name}` for `{signature}`. It fails the grader. "
                       "Fix it and submit.", name=self.name, signature=self.exercise.signature))] + [
                tr(msg("Commands: {commands}", commands=", ".join(commands)))])
        return str(prompt(self.name, lang, commands))

    def submit(self, impl=None):
        """Grade `impl` (in a notebook: by default the object named like the exercise in the notebook) and
        record the attempt; returns the Report."""
        from .grader import run
        if impl is None:
            impl = _from_notebook(self.name)
        self.attempts += 1
        report = run(self.name, impl)
        show(report)
        seconds = time.monotonic() - self.started
        first_pass = report.passed and self.passed_after is None
        if first_pass:
            self.passed_after = seconds
        if self.mode == "interview" and report.status != "not attempted":
            tracking.record(report)
        tracking.record_practice(self.name, self.mode, passed=report.passed,
                                 seconds=seconds if first_pass and not self.given_up else None,
                                 mistake=self.drill.mistake if self.drill and report.passed else None)
        if first_pass:
            print(tr(msg("passed in {time} after {n} submission(s)", time=clock(seconds), n=self.attempts)))
            if self.drill:
                print(tr(msg("the bug: {message}", message=tr(self.drill.message))))
        return report

    def hint(self):
        from .hints import hint
        hint(self.name)

    def give_up(self, lang: str | None = None) -> str:
        """The chapter to read (never the solution), and for a drill the diagnosis."""
        self.given_up = True
        lang = lang or language()
        lines = [tr(msg("Read the chapter {chapter}: {link}", chapter=self.exercise.chapter,
                        link=chapter_link(self.exercise.chapter, lang)))]
        if self.drill:
            lines.append(tr(msg("the bug: {message}", message=tr(self.drill.message))))
        text = "\n".join(lines)
        print(text)
        return text

    def __repr__(self) -> str:
        return tr(msg("<{mode} on {name}: {n} submission(s), {time}>", mode=self.mode, name=self.name,
                      n=self.attempts, time=clock(self.elapsed)))


# --------------------------------------------------------------------------- in a notebook

_current: Session | None = None


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _from_notebook(name: str):
    """The reader's `name`: from the notebook's namespace, or (outside IPython) from the caller's module."""
    shell = _shell()
    if shell is not None:
        scope = shell.user_ns
    else:
        frame = inspect.currentframe()
        while frame is not None and frame.f_globals.get("__name__") == __name__:
            frame = frame.f_back
        scope = frame.f_globals if frame is not None else {}
    if name not in scope:
        raise NameError(tr(msg("define `{name}` first (run the cell with your code), then submit", name=name)))
    return scope[name]


def _start(session: Session, lang: str | None) -> Session:
    global _current
    if lang:
        set_language(lang)
    _current = session
    lang = language()
    if in_notebook():
        show(prompt(session.name, lang, CALLS) if not session.drill else _Text(session.introduce(lang, CALLS)))
    else:
        print(session.introduce(lang, CALLS))
    shell = _shell()
    if shell is not None and hasattr(shell, "set_next_input"):
        shell.set_next_input(session.code(), replace=False)
    else:
        print(session.code())
    return session


class _Text(str):
    def _repr_html_(self):
        return "<br>".join(html.escape(line) for line in self.splitlines())


def interview(topic: str | None = None, *, seed: int | None = None, lang: str | None = None) -> Session:
    """A mock interview in the notebook: the prompt, a new cell with the signature only, the clock started.
    Define your answer, then `utils.submit()` (as often as needed); `.hint()`, `.give_up()` on the session."""
    return _start(Session(pick(topic, seed), "interview"), lang)


def drill(topic: str | None = None, *, seed: int | None = None, lang: str | None = None) -> Session:
    """A find-the-bug drill: a new cell with a candidate's wrong answer; fix it, run it, `utils.submit()`."""
    chosen = pick_drill(topic, seed)
    return _start(Session(chosen.exercise, "drill", chosen), lang)


def submit(impl=None):
    """Grade the current interview or drill: `impl`, or the object named like the exercise in the notebook."""
    if _current is None:
        raise RuntimeError(tr("start with utils.interview() or utils.drill(), then submit"))
    return _current.submit(impl)


# --------------------------------------------------------------------------- in a terminal

def practice_dir() -> Path:
    import os
    env = os.environ.get("HWLLM_PRACTICE")
    return Path(env) if env else Path.home() / ".hand-written-llm" / "practice"


def write_file(session: Session, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{session.name}-{session.mode}-{stamp}.py"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{session.name}-{session.mode}-{stamp}-{n}.py"
    path.write_text(session.code(), encoding="utf-8")
    return path


def terminal(session: Session, folder: Path, lang: str, read=None) -> int:
    """The loop of a terminal session: commands read with `read` (default `input`) until `quit` (or end of input)."""
    read = read or input
    print(session.introduce(lang), flush=True)
    session.path = write_file(session, folder)
    session.started = time.monotonic()
    print(tr(msg("Your file: {path}  (the clock is running)", path=str(session.path))), flush=True)
    while True:
        try:
            line = read("> " if sys.stdin is not None and sys.stdin.isatty() else "")
        except (EOFError, KeyboardInterrupt):
            print()
            break
        command = " ".join(line.strip().lower().split())
        if command in ("submit", "s"):
            try:
                impl = load_file(session.path, session.name)
            except NotDefined as e:
                print(e, flush=True)
                continue
            except Exception as e:  # the reader's file: show their error, keep the session going
                frames = traceback.extract_tb(e.__traceback__)
                mine = [f for f in frames if f.filename == str(session.path)]
                where = f"{mine[-1].filename}:{mine[-1].lineno}" if mine else str(session.path)
                print(tr(msg("your file raised {error} at {where}: {detail}", error=type(e).__name__,
                             where=where, detail=str(e))), flush=True)
                continue
            report = session.submit(impl)
            if report.passed:
                print(tr("type `quit` to finish, or keep improving and `submit` again"), flush=True)
        elif command in ("hint", "h"):
            session.hint()
        elif command in ("give up", "giveup", "g"):
            session.give_up(lang)
        elif command in ("quit", "q", "exit"):
            break
        elif command in ("time", "t"):
            print(clock(session.elapsed))
        elif command:
            print(tr(msg("commands: {commands}", commands=", ".join(COMMANDS))), flush=True)
        sys.stdout.flush()
    print(session)
    return 0


def list_drills() -> str:
    done, skipped = _catalogue()
    per = {}
    for d in done:
        per[d.exercise] = per.get(d.exercise, 0) + 1
    lines = [f"  {n:<36} {per.get(n, 0):>3} / {len(EXERCISES[n].mistakes)}" for n in list_exercises()]
    return "\n".join(lines + [tr(msg("{n} drills from {m} registered mistakes", n=len(done),
                                     m=len(done) + len(skipped)))])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.practice", description=__doc__.split("\n")[0])
    parser.add_argument("topic", nargs="?", help="an exercise, a chapter (attention/rope) or a part (attention)")
    parser.add_argument("--drill", action="store_true", help="find the bug in a candidate's answer")
    parser.add_argument("--list-drills", action="store_true", help="how many drills each exercise has")
    parser.add_argument("--lang", choices=("en", "zh"), help="the language of the prompt and reports")
    parser.add_argument("--seed", type=int, help="draw the same exercise every time")
    parser.add_argument("--dir", type=Path, help="the folder for the files (default ~/.hand-written-llm/practice)")
    args = parser.parse_args(argv)
    if args.lang:
        set_language(args.lang)
    if args.list_drills:
        print(list_drills())
        return 0
    try:
        if args.drill:
            chosen = pick_drill(args.topic, args.seed)
            session = Session(chosen.exercise, "drill", chosen)
        else:
            session = Session(pick(args.topic, args.seed), "interview")
    except (KeyError, LookupError) as e:
        print(e.args[0] if e.args else e, file=sys.stderr)
        return 2
    return terminal(session, args.dir or practice_dir(), language())


__all__ = ["Drill", "Session", "drill", "drills", "interview", "main", "pick", "prompt", "stub", "submit",
           "unreadable"]

if __name__ == "__main__":
    sys.exit(main())

