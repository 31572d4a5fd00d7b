"""The init kind: a function that fills a weight tensor IN PLACE from torch's GLOBAL generator and returns it
(xavier_uniform_, kaiming_normal_), as torch.nn.init's functions do. No other kind grades that: the function
kind forbids editing inputs and the stochastic kind hands the reader a `generator`.

case: a `Draws` (kinds.stochastic) whose make() returns (args, kwargs) with the weight `w` first; `w` holds
NaN before the call, so entries left unfilled are seen. The global RNGs are reseeded with the case's `seed`
before the call and restored afterwards (the reader's own random state is not moved). The oracle is the
exact law: oracle(*args, **kwargs) -> Law("uniform", bound) or Law("normal", std). The parts, in order, each
a Verdict:

    filled in place         every entry of w was written (not a new tensor returned beside an untouched w)
    returns w itself        the value returned is the very object w (`w = init(w)` must keep working)
    shape and dtype         w's shape and dtype are unchanged
    no autograd history     w has no grad_fn afterwards and its requires_grad flag is unchanged
    support                 (uniform laws) every value lies within [-bound, bound]
    distribution            the Kolmogorov-Smirnov distance between w's values and the law's CDF is at most
                            eps = sqrt(ln(2 / alpha) / (2 n)): by the Dvoretzky-Kiefer-Wolfowitz inequality with
                            Massart's constant, P(D_n > eps) <= 2 exp(-2 n eps^2) = alpha for a correct solution

Sizing: the declaration states `false_rejection` (below 1e-6), split evenly over the cases (alpha each); the
support check never rejects a correct solution. Mistakes are `SamplingMistake`s with their exact `law`
(None: the target's law, for a mistake that fails a structural check) and the stated probability `passes`
that they pass every case; `bounds()` computes both from the laws (a mistake whose law is at KS distance
D > eps from the target's passes a case with probability at most 2 exp(-2 n (D - eps)^2)), and the tests hold
the statements to it. Diagnosis: a failing support or distribution verdict is keyed by the set of declared
laws the values are consistent with, so another way of writing a known mistake is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...i18n import msg
from ..compare import Verdict
from ..core import Exercise
from ..protocol import Outcome, attempt, describe, detached
from .stochastic import TARGET, isolated_rng, reseed

LABELS = ("filled in place", "returns w itself", "shape and dtype", "no autograd history", "support",
          "distribution")
SLACK = 1e-5        # relative: a float32 uniform_ may round to the bound itself


@dataclass(frozen=True)
class Law:
    """The law of every entry: 'uniform' on [-scale, scale], or 'normal' with mean 0 and standard deviation scale."""

    family: str
    scale: float

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "uniform":
            return ((x + self.scale) / (2 * self.scale)).clamp(0.0, 1.0)
        return 0.5 * (1.0 + torch.erf(x / (self.scale * math.sqrt(2.0))))

    @property
    def std(self) -> float:
        return self.scale / math.sqrt(3.0) if self.family == "uniform" else self.scale

    def __repr__(self) -> str:
        return f"U(-{self.scale:.4g}, {self.scale:.4g})" if self.family == "uniform" else f"N(0, {self.scale:.4g}^2)"


def ks_distance(values: torch.Tensor, law: Law) -> float:
    """sup_x |F_n(x) - F(x)| of the sample `values` (float64, flat) against `law`."""
    x, _ = values.sort()
    n = x.numel()
    F = law.cdf(x)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(k / n - F, F - (k - 1) / n).max())


def law_distance(a: Law, b: Law) -> float:
    """sup_x |F_a(x) - F_b(x)| on a fine grid (the laws are symmetric, continuous, of comparable scales)."""
    m = 8.0 * max(a.scale, b.scale)
    x = torch.linspace(-m, m, 400_001, dtype=torch.float64)
    return float((a.cdf(x) - b.cdf(x)).abs().max())


def _same_law(a: Law, b: Law) -> bool:
    return a.family == b.family and math.isclose(a.scale, b.scale, rel_tol=1e-9)


@dataclass
class InitExercise(Exercise):
    """oracle: the exact law (see the module's docstring); false_rejection: stated, below 1e-6."""

    false_rejection: float = 1e-7
    kind = "init"

    def __post_init__(self):
        if not 0 < self.false_rejection < 1e-6:
            raise ValueError(f"{self.name}: false_rejection must lie in (0, 1e-6), not {self.false_rejection}")
        super().__post_init__()

    # -- sizing
    def alpha(self) -> float:
        return self.false_rejection / len(self.all_cases())

    def eps(self, n: int) -> float:
        return math.sqrt(math.log(2.0 / self.alpha()) / (2.0 * n))

    def laws(self, case) -> dict:
        """{name: Law} on `case`: the target's and that of every mistake with a law of its own."""
        args, kwargs = case.make()
        found = {TARGET: self.oracle(*args, **kwargs)}
        for m in self.mistakes:
            if getattr(m, "law", None) is not None:
                found[m.name] = m.law(*args, **kwargs)
        return found

    def bounds(self) -> dict:
        """{'false rejection': P(a correct solution fails), mistake: P(it passes every case)}, from the laws."""
        out = {"false rejection": self.alpha() * len(self.all_cases())}
        for m in self.mistakes:
            if getattr(m, "law", None) is None:
                continue
            passes = 1.0
            for case in self.all_cases():
                args, kwargs = case.make()
                target, law = self.oracle(*args, **kwargs), m.law(*args, **kwargs)
                n, eps = args[0].numel(), self.eps(args[0].numel())
                if _same_law(target, law):
                    continue
                here = 1.0
                d = law_distance(target, law)
                if d > eps:
                    here = min(here, 2.0 * math.exp(-2.0 * n * (d - eps) ** 2))
                if target.family == "uniform":          # every one of n values inside [-bound, bound]
                    inside = 1.0 - 2.0 * float(law.cdf(torch.tensor(-target.scale * (1 + SLACK), dtype=torch.float64)))
                    here = min(here, inside ** n)
                passes = min(passes, here)
            out[m.name] = passes
        return out

    # -- driving
    def pristine_inputs(self, case) -> tuple:
        return ()           # w is meant to change in place

    def outcome(self, target, case, guard) -> Outcome:
        args, kwargs = case.make()
        w = args[0]
        seed = getattr(case, "seed", 0)
        shape, dtype, requires_grad = tuple(w.shape), w.dtype, w.requires_grad
        out = Outcome(call=msg("{name}({args}) right after torch.manual_seed({seed})", name=self.name,
                               args=describe(args, kwargs), seed=seed))
        if target is self.oracle:
            out.parts = [(label, Verdict()) for label in LABELS]
            return out
        with isolated_rng():
            reseed(seed)
            with attempt(out, "call", guard):
                value = target(*args, **kwargs)
        if out.failed:
            return out
        out.parts = [(LABELS[0], self._filled(w, value)), (LABELS[1], self._returned(w, value)),
                     (LABELS[2], self._form(w, shape, dtype)), (LABELS[3], self._history(w, requires_grad))]
        if not all(v.holds for _, v in out.parts):
            out.parts += [(LABELS[4], Verdict()), (LABELS[5], Verdict())]
            return out
        values = detached(w).double().flatten()
        law = self.oracle(*args, **kwargs)
        support, distribution = self._support(values, law), self._distribution(values, law)
        if not (support.holds and distribution.holds):
            key = ("consistent with", frozenset(name for name, other in self.laws(case).items()
                                                if self._consistent(values, other)))
            support, distribution = (v if v.holds else Verdict(v.kind, v.message, key)
                                     for v in (support, distribution))
        out.parts += [(LABELS[4], support), (LABELS[5], distribution)]
        return out

    def _filled(self, w, value) -> Verdict:
        unfilled = int(torch.isnan(w.detach()).sum()) if w.is_floating_point() else 0
        if not unfilled:
            return Verdict()
        if unfilled == w.numel() and isinstance(value, torch.Tensor) and value is not w:
            return Verdict("not-in-place", msg("w was left as it was and a new tensor returned: fill w itself, in "
                                               "place (w.uniform_(-bound, bound), w.normal_(0, std), under "
                                               "torch.no_grad()), and return it"), key="new tensor")
        return Verdict("not-in-place", msg("{n:,} of the {total:,} entries of w were not filled", n=unfilled,
                                           total=w.numel()), key="partly")

    def _returned(self, w, value) -> Verdict:
        if value is w:
            return Verdict()
        if value is None:
            return Verdict("returned-none", msg("your function returned None: return w, as nn.init's functions do "
                                                "(so that `w = init(w)` and chained calls work)"), key="none")
        return Verdict("not-w", msg("your function returned {what}, not w itself: return the very tensor you "
                                    "filled", what=_what(value)), key="other")

    def _form(self, w, shape, dtype) -> Verdict:
        if tuple(w.shape) == shape and w.dtype == dtype:
            return Verdict()
        return Verdict("wrong-shape", msg("w is now {dtype} {got}; it was {was_dtype} {shape}: fill it where it is",
                                          dtype=str(w.dtype).replace("torch.", ""), got=tuple(w.shape),
                                          was_dtype=str(dtype).replace("torch.", ""), shape=shape), key="form")

    def _history(self, w, requires_grad) -> Verdict:
        if w.grad_fn is None and w.requires_grad == requires_grad:
            return Verdict()
        if w.grad_fn is not None:
            return Verdict("autograd", msg("w now has autograd history (grad_fn={fn}): fill it under "
                                           "torch.no_grad()", fn=type(w.grad_fn).__name__), key="history")
        return Verdict("autograd", msg("w.requires_grad was {was} and is now {now}: leave the flag as it was",
                                       was=requires_grad, now=w.requires_grad), key="flag")

    def _support(self, values: torch.Tensor, law: Law) -> Verdict:
        if law.family != "uniform":
            return Verdict()
        outside = values.abs() > law.scale * (1 + SLACK)
        if not outside.any():
            return Verdict()
        return Verdict("impossible-draw",
                       msg("{n:,} of {total:,} values lie outside nn.init's range [-{bound:.4g}, {bound:.4g}] (the "
                           "largest |value| is {big:.4g}); its law here is {law}", n=int(outside.sum()),
                           total=values.numel(), bound=law.scale, big=float(values.abs().max()), law=repr(law)))

    def _distribution(self, values: torch.Tensor, law: Law) -> Verdict:
        n = values.numel()
        d, eps = ks_distance(values, law), self.eps(n)
        if d <= eps:
            return Verdict()
        std = float(values.std())
        return Verdict("distribution",
                       msg("your {n:,} values do not follow nn.init's law {law}: their standard deviation is "
                           "{got:.4g}, the law's is {expected:.4g} (ratio {ratio:.3f}); their Kolmogorov-Smirnov "
                           "distance to it is {d:.4f}, and a correct solution stays below {eps:.4f} (it exceeds "
                           "that with probability below {alpha:.0e})", n=n, law=repr(law), got=std,
                           expected=law.std, ratio=std / law.std, d=d, eps=eps, alpha=self.alpha()))

    def _consistent(self, values: torch.Tensor, law: Law) -> bool:
        return self._support(values, law).holds and ks_distance(values, law) <= self.eps(values.numel())


def _what(value) -> str:
    if isinstance(value, torch.Tensor):
        return msg("another tensor ({dtype} {shape})", dtype=str(value.dtype).replace("torch.", ""),
                   shape=tuple(value.shape))
    return msg("a {name}", name=type(value).__name__)


__all__ = ["InitExercise", "Law", "ks_distance", "law_distance"]
