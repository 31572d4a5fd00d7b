"""Time each exercise's book solution against its PyTorch built-in at a realistic size.

    python -m utils.bench [name ...]

An exercise opts in with `bench=...` in its declaration:

    function   (make_inputs, builtin)          make_inputs() -> (args, kwargs); builtin has the same call
    module     (make_inputs, builtin, init)    both classes built with init = (args, kwargs), then forward timed
    optimizer  (make_params, builtin, hyper)   both built on copies of make_params() with **hyper, step() timed
    class      (make_inputs, builtin, method)  plain classes (a tokenizer): make_inputs() -> (init, call), each an
                                               (args, kwargs) pair; both classes built with init, `method` timed

The solution is taken from the chapter notebook. Median of several repetitions; not part of CI
(timings depend on the machine).
"""

from __future__ import annotations

import argparse
import sys

import torch

from .grader import get, list_exercises
from .measure import median_time
from .notebook import load_solutions
from .trees import tensors_in


def _shapes(tensors) -> str:
    shapes = [str(tuple(t.shape)) for t in tensors]
    if len(shapes) > 2 and len(set(shapes)) == 1:
        return f"{len(shapes)} x {shapes[0]}"
    return ", ".join(shapes)


def _stepper(cls, params, hyper):
    """opt.step of an optimizer of class `cls` over fresh copies of `params`, each with a gradient."""
    copies = [p.clone().requires_grad_() for p in params]
    for p in copies:
        p.grad = torch.randn_like(p)
    return cls(copies, **hyper).step


def bench(names=None, repeats: int = 9, warmup: int = 2) -> list[tuple]:
    rows = []
    for name in names or list_exercises():
        ex = get(name)
        if ex.bench is None:
            continue
        make, builtin, *init = ex.bench
        impl = load_solutions(ex.chapter)[name]
        if ex.kind == "optimizer":
            args, kwargs = (), {}
            params = make()
            shapes = _shapes(params)
            impl, builtin = (_stepper(cls, params, init[0]) for cls in (impl, builtin))
        else:
            made = make()
            if ex.kind == "plain-class":
                (ia, ikw), (args, kwargs) = made
                impl, builtin = (getattr(cls(*ia, **ikw), init[0]) for cls in (impl, builtin))
            else:
                args, kwargs = made
            shapes = _shapes(tensors_in(args))
            if ex.kind == "module":
                (ia, ikw), = init
                impl, builtin = impl(*ia, **ikw), builtin(*ia, **ikw)
        with torch.no_grad():
            mine = median_time(impl, *args, repeats=repeats, warmup=warmup, **kwargs)
            ref = median_time(builtin, *args, repeats=repeats, warmup=warmup, **kwargs)
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
    w = max([len(r[0]) for r in rows] + [8])
    v = max([len(r[1]) for r in rows] + [5])
    print(f"{'exercise':<{w}}  {'input':<{v}}  {'book':>10} {'built-in':>10} {'ratio':>7}")
    for name, shapes, mine, ref, ratio in rows:
        print(f"{name:<{w}}  {shapes:<{v}}  {mine * 1e3:>8.2f}ms {ref * 1e3:>8.2f}ms {ratio:>6.2f}x")
    skipped = [n for n in (args.names or list_exercises()) if get(n).bench is None]
    if skipped:
        print(f"no benchmark declared for: {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
