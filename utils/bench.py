"""Time each exercise's book solution against its PyTorch built-in at a realistic size.

    python -m utils.bench [name ...]

An exercise opts in with `bench=(make_inputs, builtin)` in its declaration: `make_inputs()` returns
(args, kwargs) and `builtin` is the PyTorch function with the same call. The solution is taken from the
chapter notebook. Median of several repetitions; not part of CI (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import sys

import torch

from .grader import get, list_exercises
from .measure import median_time
from .notebook import load_solutions


def bench(names=None, repeats: int = 9, warmup: int = 2) -> list[tuple]:
    rows = []
    for name in names or list_exercises():
        ex = get(name)
        if ex.bench is None:
            continue
        make, builtin = ex.bench
        impl = load_solutions(ex.chapter)[name]
        args, kwargs = make()
        with torch.no_grad():
            mine = median_time(impl, *args, repeats=repeats, warmup=warmup, **kwargs)
            ref = median_time(builtin, *args, repeats=repeats, warmup=warmup, **kwargs)
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        rows.append((name, shapes, mine, ref, mine / ref))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="exercises to time (default: every one that declares a bench)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    rows = bench(args.names, args.repeats, args.warmup)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} runs")
    print(f"{'exercise':<28} {'input':<22} {'book':>10} {'built-in':>10} {'ratio':>7}")
    for name, shapes, mine, ref, ratio in rows:
        print(f"{name:<28} {shapes:<22} {mine * 1e3:>8.2f}ms {ref * 1e3:>8.2f}ms {ratio:>6.2f}x")
    skipped = [n for n in (args.names or list_exercises()) if get(n).bench is None]
    if skipped:
        print(f"no benchmark declared for: {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
