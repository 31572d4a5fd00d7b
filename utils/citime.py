"""The timing table of `make test`, and what the same CI would take for the whole book.

    python -I utils/citime.py start                  # a new run: forget the phases of the last one
    python -I utils/citime.py run NAME CMD [ARG...]   # run one phase, record its wall and CPU seconds
    python -I utils/citime.py report                  # the table, the slowest notebooks, the projection

Standard library only, and run with -I (`python -I utils/citime.py`): it runs before the virtual
environment exists (the set-up phase) and must not import the utils package (torch).

The phases are recorded in _build/ci/phases.jsonl; the notebooks' own times come from
_build/ci/notebooks.json (utils.execute). CPU seconds are those of the phase's whole process tree
(children reaped by it), so they do not depend on what else the machine was doing.

The projection to the whole book (TARGET_CHAPTERS chapters in TARGET_LANGUAGES languages) scales each
measured phase by what it grows with; see MODEL below. Phases that ran side by side are projected as a
lane each, and the section takes the longest of: each projected lane, and the projected CPU seconds of
all of them shared over the cores.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "_build" / "ci"
PHASES = CI / "phases.jsonl"
NOTEBOOKS = CI / "notebooks.json"
TARGET_CHAPTERS = 45
TARGET_LANGUAGES = 2
BUDGET_PER_CHAPTER = 20.0  # seconds of CI per chapter, both languages included (15 min for 45 chapters)
ORDER = ["set-up", "lint", "notebooks", "unit", "generated-check", "build", "browser"]
PARALLEL = {"notebooks", "unit"}  # phases that keep every core busy on their own (two kernels, two workers)

# phase -> (grows with the number of chapters?, factor for a second language, why)
MODEL = {
    "set-up": (False, 1.0, "fixed: the same packages whatever the size of the book"),
    "lint": (True, 1.0, "chapters; code cells are shared by both languages"),
    "notebooks": (True, 2.0, "notebooks: 3 per chapter per language"),
    "unit": (True, 1.1, "exercises; +10% assumed for the second language's messages"),
    "generated-check": (True, 2.0, "generated notebooks, per language"),
    "build": (True, 2.0, "pages: a second site in the second language"),
    "browser": (True, 2.0, "pages checked, per language (its fixed start-up scaled too)"),
}


def _record(entry: dict) -> None:
    CI.mkdir(parents=True, exist_ok=True)
    with PHASES.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def start() -> int:
    CI.mkdir(parents=True, exist_ok=True)
    PHASES.write_text("", encoding="utf-8")
    if NOTEBOOKS.exists():
        NOTEBOOKS.unlink()
    _record({"name": "_start", "start": time.time(), "end": time.time(), "rc": 0, "cpu": 0.0})
    return 0


def run(name: str, cmd: list[str]) -> int:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    try:
        rc = subprocess.call(cmd)
    except OSError as e:
        print(f"citime: cannot run {cmd[0]}: {e}", file=sys.stderr)
        rc = 127
    t1 = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    _record({"name": name, "start": t0, "end": t1, "rc": rc, "cpu": round(cpu, 2),
             "load": round(os.getloadavg()[0], 2)})
    return rc


def chapters() -> int:
    """Chapters listed in _toc.yml (a plain reading: `- file: chapters/...` lines)."""
    text = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    return len(re.findall(r"^\s*-\s*file:\s*chapters/", text, flags=re.M))


def languages() -> int:
    return 2 if (ROOT / "_build" / "html" / "zh").is_dir() else 1


def _load() -> tuple[list[dict], float | None]:
    if not PHASES.exists():
        return [], None
    entries = [json.loads(line) for line in PHASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    t0 = next((e["start"] for e in entries if e["name"] == "_start"), None)
    return [e for e in entries if not e["name"].startswith("_")], t0


def _lanes(phases: list[dict]) -> list[list[dict]]:
    """Group phases into sections: consecutive phases that overlap in time form one parallel section,
    made of lanes (chains of phases that ran one after the other)."""
    sections: list[list[dict]] = []
    for p in sorted(phases, key=lambda e: e["start"]):
        if sections and p["start"] < max(q["end"] for q in sections[-1]) - 0.5:
            sections[-1].append(p)
        else:
            sections.append([p])
    return sections


def _chains(section: list[dict]) -> list[list[dict]]:
    chains: list[list[dict]] = []
    for p in sorted(section, key=lambda e: e["start"]):
        for chain in chains:
            if chain[-1]["end"] <= p["start"] + 0.5:
                chain.append(p)
                break
        else:
            chains.append([p])
    return chains


def report() -> int:
    phases, t0 = _load()
    if not phases:
        print("citime: no phases recorded")
        return 0
    end = max(p["end"] for p in phases)
    total = end - (t0 if t0 is not None else min(p["start"] for p in phases))
    n_ch, n_lang = chapters(), languages()
    cores = os.cpu_count() or 1
    by_name = {p["name"]: p for p in phases}
    sections = _lanes(phases)
    alongside = {}
    for section in sections:
        if len(section) > 1:
            chains = _chains(section)
            for chain in chains:
                others = [c for c in chains if c is not chain]
                for p in chain:
                    alongside[p["name"]] = " + ".join(" -> ".join(q["name"] for q in c) for c in others)

    print()
    print(f"CI timing: {n_ch} chapters in _toc.yml, {n_lang} language(s), {cores} cores")
    print(f"{'phase':<17}{'wall s':>8}{'CPU s':>8}  notes")
    names = [n for n in ORDER if n in by_name] + [p["name"] for p in phases if p["name"] not in ORDER]
    for name in names:
        p = by_name[name]
        note = "FAILED" if p["rc"] else ""
        if name in alongside:
            note = (note + " " if note else "") + f"alongside {alongside[name]}"
        if name == "notebooks" and NOTEBOOKS.exists():
            nb = json.loads(NOTEBOOKS.read_text(encoding="utf-8"))
            note = (note + "; " if note else "") + f"{len(nb['notebooks'])} notebooks, {nb.get('jobs', 2)} at a time"
        print(f"{name:<17}{p['end'] - p['start']:8.1f}{p['cpu']:8.1f}  {note}".rstrip())
    print(f"{'total':<17}{total:8.1f}{sum(p['cpu'] for p in phases):8.1f}  wall clock, start to end")
    print(f"{'per chapter':<17}{total / max(1, n_ch):8.1f}{'':8}  total / {n_ch} chapters ({n_lang} language(s))")
    loads = [p.get("load") for p in phases if p.get("load") is not None]
    if loads:
        print(f"(load average at the end of each phase: {min(loads):.1f} to {max(loads):.1f} on {cores} cores)")

    if NOTEBOOKS.exists():
        nb = json.loads(NOTEBOOKS.read_text(encoding="utf-8"))
        slow = sorted(nb["notebooks"], key=lambda r: -r["seconds"])[:5]
        print(f"\nslowest notebooks (budget {nb['budget']:g} s each; kernel start and library imports included):")
        for r in slow:
            cells = ", ".join(f"cell {i} {s:.1f} s" for s, i in r["slowest"][:2])
            print(f"{r['seconds']:6.1f} s  {r['path']}  ({cells})")

    _projection(sections, n_ch, n_lang, cores, total)
    return 0


def _projection(sections: list[list[dict]], n_ch: int, n_lang: int, cores: int, total: float) -> None:
    c = TARGET_CHAPTERS / max(1, n_ch)
    lang = TARGET_LANGUAGES / n_lang

    def factor(name: str) -> float:
        grows, per_language, _ = MODEL.get(name, (True, 2.0, ""))
        return (c if grows else 1.0) * (per_language if lang > 1 else 1.0)

    print(f"\nprojection: {TARGET_CHAPTERS} chapters in {TARGET_LANGUAGES} languages, from the figures above")
    print(f"  model: each phase's measured wall and CPU seconds x (chapters {TARGET_CHAPTERS}/{n_ch} = {c:.2f} "
          f"if it grows with chapters) x (its factor for a second language):")
    for name, (grows, per_language, why) in MODEL.items():
        f = (c if grows else 1.0) * (per_language if lang > 1 else 1.0)
        print(f"    {name:<16} x{f:5.2f}  {why}")
    print("  phases that ran side by side: the longest of each projected lane and of their projected CPU "
          f"seconds over {cores} cores")
    print("  a lower bound beside it: the same CPU seconds on an otherwise idle machine (a phase's wall clock")
    print("  here also holds what other processes of this machine took; its CPU seconds over the cores it uses)")
    projected = floor = 0.0
    for section in sections:
        if len(section) == 1:
            p = section[0]
            w = (p["end"] - p["start"]) * factor(p["name"])
            lo = min(w, p["cpu"] * factor(p["name"]) / (cores if p["name"] in PARALLEL else 1))
            print(f"    {p['name']:<44}{w:8.0f} s   (idle machine: {lo:.0f} s)")
            projected, floor = projected + w, floor + lo
            continue
        chains = _chains(section)
        lanes = [sum((q["end"] - q["start"]) * factor(q["name"]) for q in chain) for chain in chains]
        cpu = sum(q["cpu"] * factor(q["name"]) for q in section) / cores
        w = max(lanes + [cpu])
        label = " | ".join(" -> ".join(q["name"] for q in chain) for chain in chains)
        detail = ", ".join(f"{x:.0f}" for x in lanes)
        print(f"    {label:<44}{w:8.0f} s   (lanes {detail} s; idle machine: CPU/{cores} = {cpu:.0f} s)")
        projected, floor = projected + w, floor + cpu
    per = projected / TARGET_CHAPTERS
    verdict = "within" if per <= BUDGET_PER_CHAPTER else "OVER"
    ran = {p["name"] for section in sections for p in section}
    missing = [name for name in ORDER if name not in ran]
    if missing:
        print(f"  INCOMPLETE: {', '.join(missing)} did not run, so the projection below leaves them out")
        verdict = "(incomplete) " + verdict
    print(f"  projected total {projected:.0f} s = {projected / 60:.1f} min for {TARGET_CHAPTERS} chapters: "
          f"{per:.1f} s per chapter, {verdict} the budget of {BUDGET_PER_CHAPTER:g} s per chapter "
          f"({TARGET_CHAPTERS * BUDGET_PER_CHAPTER / 60:g} min); on an idle machine about {floor:.0f} s "
          f"({floor / TARGET_CHAPTERS:.1f} s per chapter)")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "start":
        return start()
    if argv[0] == "run" and len(argv) >= 3:
        return run(argv[1], argv[2:])
    if argv[0] == "report":
        return report()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
