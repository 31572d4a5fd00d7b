"""Compare what the reader returned with what was expected, and say exactly how they differ."""

from __future__ import annotations

import math

import torch

from .result import Problem

# (rtol, atol) per dtype; an exercise may override any entry.
TOLERANCE = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float32: (1e-5, 1e-6),
    torch.float64: (1e-9, 1e-12),
}


def _typename(v) -> str:
    t = type(v)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return repr(v)


def _value_rows(exp: torch.Tensor, got: torch.Tensor, bad: torch.Tensor, k: int = 4):
    """The k worst entries as (index, expected, got)."""
    err = (got.double() - exp.double()).abs()
    err = torch.where(bad, torch.nan_to_num(err, nan=math.inf, posinf=math.inf), torch.zeros_like(err))
    flat = err.flatten()
    order = torch.argsort(flat, descending=True, stable=True)[:k]
    rows = []
    for i in order.tolist():
        if not bad.flatten()[i]:
            break
        idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), exp.shape)) if exp.dim() else ()
        rows.append((idx, exp.flatten()[i].item(), got.flatten()[i].item()))
    return rows


def compare_tensors(exp: torch.Tensor, got, where: str, tol=None) -> Problem | None:
    if got is None:
        return Problem("returned-none", f"{where} is None: did you forget `return`?", where)
    if not isinstance(got, torch.Tensor):
        name = _typename(got)
        if name == "numpy.ndarray":
            msg = (f"{where} is a numpy array; return a torch.Tensor "
                   "(stay in torch: no .numpy(), np.exp(...) or np.array(...))")
            return Problem("returned-numpy", msg, where)
        return Problem("wrong-type", f"{where} is a {name}; expected a torch.Tensor", where)
    if tuple(got.shape) != tuple(exp.shape):
        return Problem("wrong-shape",
                       f"{where} has shape {tuple(got.shape)}; expected {tuple(exp.shape)}", where)
    if got.dtype != exp.dtype:
        return Problem("wrong-dtype",
                       f"{where} has dtype {got.dtype}; expected {exp.dtype} "
                       "(keep the input's dtype: don't hard-code float32 or call .float()/.double())", where)
    if got.device != exp.device:
        return Problem("wrong-device", f"{where} is on {got.device}; expected {exp.device}", where)
    got_d, exp_d = got.detach(), exp.detach()
    if not exp_d.is_floating_point() and not exp_d.is_complex():
        bad = got_d != exp_d
        if bad.any():
            return Problem("wrong-value", f"{where} has {int(bad.sum())} of {bad.numel()} entries wrong",
                           where, rows=_value_rows(exp_d, got_d, bad))
        return None
    rtol, atol = (tol or TOLERANCE).get(exp.dtype, TOLERANCE[torch.float32])
    exp_finite = torch.isfinite(exp_d)
    nonfinite = ~torch.isfinite(got_d) & exp_finite
    if nonfinite.any():
        n = int(nonfinite.sum())
        what = "NaN" if torch.isnan(got_d[nonfinite]).any() else "inf"
        return Problem("not-finite",
                       f"{where} has {what} in {n} of {got_d.numel()} entries where the expected value "
                       "is finite", where, rows=_value_rows(exp_d, got_d, nonfinite), tolerance=(rtol, atol))
    close = torch.isclose(got_d, exp_d, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    bad = ~close
    err = (got_d.double() - exp_d.double()).abs()[bad & exp_finite]
    rel = err / exp_d.double().abs()[bad & exp_finite].clamp_min(1e-300)
    return Problem("wrong-value", f"{where} differs in {int(bad.sum())} of {bad.numel()} entries", where,
                   rows=_value_rows(exp_d, got_d, bad),
                   max_abs=float(err.max()) if err.numel() else math.inf,
                   max_rel=float(rel.max()) if rel.numel() else math.inf, tolerance=(rtol, atol))


def compare(exp, got, where: str = "output", tol=None) -> Problem | None:
    """First difference between an expected and a returned value, recursing into tuples and dicts."""
    if isinstance(exp, torch.Tensor):
        return compare_tensors(exp, got, where, tol)
    if isinstance(exp, (tuple, list)):
        if got is None:
            return Problem("returned-none", f"{where} is None: did you forget `return`?", where)
        if not isinstance(got, (tuple, list)):
            return Problem("wrong-type", f"{where} is a {_typename(got)}; expected a tuple of {len(exp)}", where)
        if len(got) != len(exp):
            return Problem("wrong-length", f"{where} has {len(got)} items; expected {len(exp)}", where)
        for i, (e, g) in enumerate(zip(exp, got)):
            p = compare(e, g, f"{where}[{i}]", tol)
            if p:
                return p
        return None
    if isinstance(exp, dict):
        if not isinstance(got, dict):
            return Problem("wrong-type", f"{where} is a {_typename(got)}; expected a dict", where)
        if set(got) != set(exp):
            return Problem("wrong-keys", f"{where} has keys {sorted(got)}; expected {sorted(exp)}", where)
        for k in exp:
            p = compare(exp[k], got[k], f"{where}[{k!r}]", tol)
            if p:
                return p
        return None
    if isinstance(exp, bool) or exp is None:
        if got is not exp and got != exp:
            return Problem("wrong-value", f"{where} is {_fmt(got)}; expected {_fmt(exp)}", where,
                           rows=[((), exp, got)])
        return None
    if isinstance(exp, int):
        if isinstance(got, torch.Tensor):
            return Problem("wrong-type", f"{where} is a torch.Tensor; return a Python int (use int(...))", where)
        if isinstance(got, float) or not isinstance(got, int) or isinstance(got, bool):
            if hasattr(got, "__index__") and not isinstance(got, bool):
                got = int(got)
            else:
                return Problem("wrong-type", f"{where} is a {_typename(got)}; expected an exact int", where)
        if got != exp:
            return Problem("wrong-value", f"{where} is {got:,}; expected {exp:,} (off by {got - exp:+,})", where,
                           rows=[((), exp, got)], max_abs=float(abs(got - exp)),
                           max_rel=abs(got - exp) / max(abs(exp), 1))
        return None
    if isinstance(exp, float):
        if isinstance(got, torch.Tensor):
            return Problem("wrong-type", f"{where} is a torch.Tensor; return a Python float (use float(...))",
                           where)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return Problem("wrong-type", f"{where} is a {_typename(got)}; expected a float", where)
        rtol, atol = (tol or TOLERANCE)[torch.float64]
        if not math.isclose(got, exp, rel_tol=max(rtol, 1e-12), abs_tol=atol):
            return Problem("wrong-value", f"{where} is {_fmt(float(got))}; expected {_fmt(exp)}", where,
                           rows=[((), exp, float(got))], max_abs=abs(got - exp),
                           max_rel=abs(got - exp) / max(abs(exp), 1e-300), tolerance=(rtol, atol))
        return None
    if got != exp:
        return Problem("wrong-value", f"{where} is {got!r}; expected {exp!r}", where)
    return None


def same(a, b, rtol=1e-4, atol=1e-5) -> bool:
    """Loose equality of two results (nested), NaN equal to NaN: used to match a known mistake."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        a, b = a.detach(), b.detach()
        if not a.is_floating_point():
            return bool((a == b).all())
        return bool(torch.isclose(a.double(), b.double(), rtol=rtol, atol=atol, equal_nan=True).all())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(same(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=atol) or (a != a and b != b)
        except (TypeError, ValueError):
            return False
    return type(a) is type(b) and a == b
