"""Compare what the reader returned with what was expected, and say exactly how they differ.

    compare(exp, got, where, tol)   the first difference, as a Problem naming its place: output[3][1], vocab[257]
    same(a, b)                      loose equality, to match a reader's result with a known mistake's
    tensor_form(exp, got, where)    only the form of a tensor: type, shape, dtype, device
    at(where, i)                    the place of an item, output[3] or vocab['a'], as a message (see utils.i18n)
    Verdict                         a part that is a check of its own (arguments left unchanged, draws reproducible)

`tol` maps each torch dtype to (rtol, atol); plain Python results read two more keys: `float` (rtol, atol) for
Python floats (default: the float64 entry) and "sequences": "exact" when list and tuple must be what the
contract says (default: either is accepted, as a tuple of tensors may come back as a list).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..i18n import msg
from .protocol import listed
from .result import Problem

# (rtol, atol) per dtype; an exercise may override any entry.
TOLERANCE = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float32: (1e-5, 1e-6),
    torch.float64: (1e-9, 1e-12),
}

FEW = 5          # keys or items a message lists before "... (n more)"
CONTEXT = 12     # characters (or bytes) of context either side of the first difference in text


@dataclass(frozen=True)
class Verdict:
    """A labelled part that is a check rather than a value. The oracle's part is `Verdict()` (the check holds);
    the target's carries the problem's `kind` and `message` when it does not. Two verdicts are the same
    behaviour (for `same`, when a mistake is matched) when their kind and `key` agree: the message may quote
    numbers of one particular draw."""

    kind: str = ""
    message: str = field(default="", compare=False)
    key: Any = None

    @property
    def holds(self) -> bool:
        return not self.kind


def _typename(v) -> str:
    t = type(v)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


def _a(name: str) -> str:
    return msg("an {name}", name=name) if name[:1] in "aeiou" else msg("a {name}", name=name)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return repr(v)


def _short(v, width: int = 40) -> str:
    r = _fmt(v)
    return r if len(r) <= width else r[:width - 3] + "..."


# what _n counts: unit -> (its message for one, for many)
_UNITS = {"character": ("{n:,} character", "{n:,} characters"), "byte": ("{n:,} byte", "{n:,} bytes"),
          "extra character": ("{n:,} extra character", "{n:,} extra characters"),
          "extra byte": ("{n:,} extra byte", "{n:,} extra bytes"), "item": ("{n:,} item", "{n:,} items"),
          "key": ("{n:,} key", "{n:,} keys"), "unexpected key": ("{n:,} unexpected key", "{n:,} unexpected keys")}


def _n(count: int, unit: str) -> str:
    """'1 character', '3 characters', '1,024 bytes'."""
    one, many = _UNITS[unit]
    return msg(one if count == 1 else many, n=count)


def _none(where) -> Problem:
    return Problem("returned-none", msg("{where} is None: did you forget `return`?", where=where), where)


def at(where, i) -> str:
    """The place of item i (an index or a key, shown as given) inside `where`: output[3], vocab['a']."""
    return msg("{where}[{i}]", where=where, i=i)


def _few(keys) -> str:
    try:
        keys = sorted(keys)
    except TypeError:
        keys = sorted(keys, key=repr)
    shown = ", ".join(_short(k) for k in keys[:FEW])
    return msg("{shown}, ... ({more} more)", shown=shown, more=len(keys) - FEW) if len(keys) > FEW else shown


def unravel(i: int, shape) -> tuple:
    """The index of flat position i in `shape` (torch.unravel_index imports sympy: a second, the first time)."""
    idx = []
    for n in reversed(tuple(shape)):
        i, j = divmod(i, n)
        idx.append(j)
    return tuple(reversed(idx))


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
        idx = unravel(i, exp.shape)
        rows.append((idx, exp.flatten()[i].item(), got.flatten()[i].item()))
    return rows


def tensor_form(exp: torch.Tensor, got, where: str = "output") -> Problem | None:
    """What is wrong with the form of `got` (None, numpy, not a tensor, shape, dtype, device), values aside."""
    if got is None:
        return _none(where)
    if not isinstance(got, torch.Tensor):
        name = _typename(got)
        if name == "numpy.ndarray":
            return Problem("returned-numpy", msg("{where} is a numpy array; return a torch.Tensor (stay in torch: "
                                                 "no .numpy(), np.exp(...) or np.array(...))", where=where), where)
        return Problem("wrong-type", msg("{where} is a {name}; expected a torch.Tensor", where=where, name=name),
                       where)
    if tuple(got.shape) != tuple(exp.shape):
        return Problem("wrong-shape", msg("{where} has shape {got}; expected {expected}", where=where,
                                          got=tuple(got.shape), expected=tuple(exp.shape)), where)
    if got.dtype != exp.dtype:
        fix = ("keep the input's dtype: don't hard-code float32 or call .float()/.double()"
               if exp.is_floating_point() else "indices are torch.int64: .long()" if exp.dtype == torch.int64
               else msg("return {dtype}", dtype=exp.dtype))
        return Problem("wrong-dtype", msg("{where} has dtype {got}; expected {expected} ({fix})", where=where,
                                          got=got.dtype, expected=exp.dtype, fix=fix), where)
    if got.device != exp.device:
        return Problem("wrong-device", msg("{where} is on {got}; expected {expected}", where=where, got=got.device,
                                           expected=exp.device), where)
    return None


def compare_tensors(exp: torch.Tensor, got, where: str, tol=None) -> Problem | None:
    p = tensor_form(exp, got, where)
    if p:
        return p
    got_d, exp_d = got.detach(), exp.detach()
    if not exp_d.is_floating_point() and not exp_d.is_complex():
        bad = got_d != exp_d
        if bad.any():
            return Problem("wrong-value", msg("{where} has {n} of {total} entries wrong", where=where,
                                              n=int(bad.sum()), total=bad.numel()),
                           where, rows=_value_rows(exp_d, got_d, bad))
        return None
    rtol, atol = (tol or TOLERANCE).get(exp.dtype, TOLERANCE[torch.float32])
    exp_finite = torch.isfinite(exp_d)
    nonfinite = ~torch.isfinite(got_d) & exp_finite
    if nonfinite.any():
        n = int(nonfinite.sum())
        what = "NaN" if torch.isnan(got_d[nonfinite]).any() else "inf"
        return Problem("not-finite",
                       msg("{where} has {what} in {n} of {total} entries where the expected value is finite",
                           where=where, what=what, n=n, total=got_d.numel()),
                       where, rows=_value_rows(exp_d, got_d, nonfinite), tolerance=(rtol, atol))
    close = torch.isclose(got_d, exp_d, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    bad = ~close
    err = (got_d.double() - exp_d.double()).abs()[bad & exp_finite]
    rel = err / exp_d.double().abs()[bad & exp_finite].clamp_min(1e-300)
    return Problem("wrong-value", msg("{where} differs in {n} of {total} entries", where=where, n=int(bad.sum()),
                                      total=bad.numel()), where,
                   rows=_value_rows(exp_d, got_d, bad),
                   max_abs=float(err.max()) if err.numel() else math.inf,
                   max_rel=float(rel.max()) if rel.numel() else math.inf, tolerance=(rtol, atol))


# --------------------------------------------------------------------------- plain values

def _exact_sequences(tol) -> bool:
    return bool(tol) and tol.get("sequences") == "exact"


def _escaped(s) -> str:
    """Text as a literal a reader can read: non-printable characters escaped, CJK and accents kept."""
    if isinstance(s, (bytes, bytearray)):
        return repr(bytes(s))[2:-1]
    return "".join(c if c.isprintable() and c not in "\\'" else
                   ("\\" + c if c in "\\'" else repr(c)[1:-1]) for c in s)


def _window(s, i: int) -> str:
    """s around index i, the unit at i marked: '…机器学习⟨是⟩人工智能…'."""
    lo, hi = max(0, i - CONTEXT), min(len(s), i + 1 + CONTEXT)
    quote = "b'" if isinstance(s, (bytes, bytearray)) else "'"
    mark = f"⟨{_escaped(s[i:i + 1])}⟩" if i < len(s) else "⟨end⟩"
    return (quote + ("…" if lo > 0 else "") + _escaped(s[lo:i]) + mark + _escaped(s[i + 1:hi])
            + ("…" if hi < len(s) else "") + "'")


def compare_text(exp, got, where: str, tol=None) -> Problem | None:
    """str or bytes: the first differing position, with a window of context either side."""
    if got is None:
        return _none(where)
    text = isinstance(exp, str)
    fits = isinstance(got, str) if text else (
        type(got) is bytes or (isinstance(got, (bytes, bytearray)) and not _exact_sequences(tol)))
    if not fits:
        fix = (" (decode the bytes: b.decode('utf-8'))" if text and isinstance(got, (bytes, bytearray)) else
               " (encode the text: s.encode('utf-8'))" if not text and isinstance(got, str) else "")
        return Problem("wrong-type", msg("{where} is {got}; expected {expected}{fix}", where=where,
                                         got=_a(_typename(got)), expected=_a("str") if text else "bytes", fix=fix),
                       where)
    if got == exp:
        return None
    unit = "character" if text else "byte"
    i = next((j for j, (a, b) in enumerate(zip(exp, got)) if a != b), min(len(exp), len(got)))
    sizes = (msg(" ({got}; expected {expected:,})", got=_n(len(got), unit), expected=len(exp))
             if len(got) != len(exp) else "")
    if i < len(exp) and i < len(got):
        said = msg("{where} differs at index {i:,}{sizes}: expected {expected}, got {got}", where=where, i=i,
                   sizes=sizes, expected=_window(exp, i), got=_window(got, i))
        return Problem("wrong-value", said, where, rows=[((i,), exp[i:i + 1], got[i:i + 1])])
    if i == len(got):
        said = msg("{where} stops at index {i:,}, {short} short: it should go on with {rest}", where=where, i=i,
                   short=_n(len(exp) - i, unit), rest=_window(exp, i))
    else:
        said = msg("{where} has {extra} from index {i:,}: {rest}", where=where, extra=_n(len(got) - i, "extra " + unit),
                   i=i, rest=_window(got, i))
    return Problem("wrong-length", said, where)


def _sequence(exp, got, where: str, tol) -> Problem | None:
    if got is None:
        return _none(where)
    kind = _typename(exp)
    if not isinstance(got, (tuple, list)):
        return Problem("wrong-type", msg("{where} is {got}; expected {expected} of {n}", where=where,
                                         got=_a(_typename(got)), expected=_a(kind), n=_n(len(exp), "item")), where)
    if _exact_sequences(tol) and not isinstance(got, type(exp)):
        return Problem("wrong-type", msg("{where} is {got}; expected {expected}", where=where, got=_a(_typename(got)),
                                         expected=_a(kind)), where)
    first = None
    for i, (e, g) in enumerate(zip(exp, got)):
        first = compare(e, g, at(where, i), tol)
        if first:
            break
    if len(got) == len(exp):
        return first
    m = min(len(got), len(exp))
    sizes = dict(where=where, n=_n(len(got), "item"), expected=len(exp))
    if first:
        said = msg("{where} has {n}; expected {expected:,}; the first difference: {first}", **sizes,
                   first=first.message)
    elif len(got) < len(exp):
        said = msg("{where} has {n}; expected {expected:,}: the first {m:,} agree, then {item} = {value} is missing",
                   **sizes, m=m, item=at(where, m), value=_short(exp[m]))
    else:
        said = msg("{where} has {n}; expected {expected:,}: the first {m:,} agree, then come extra items from "
                   "{item} = {value}", **sizes, m=m, item=at(where, m), value=_short(got[m]))
    return Problem("wrong-length", said, where)


def _mapping(exp, got, where: str, tol) -> Problem | None:
    if got is None:
        return _none(where)
    if not isinstance(got, dict):
        return Problem("wrong-type", msg("{where} is {got}; expected {expected}", where=where, got=_a(_typename(got)),
                                         expected=_a("dict")), where)
    first = None
    for k in exp:
        if k in got:
            first = compare(exp[k], got[k], at(where, repr(k)), tol)
            if first:
                break
    missing = [k for k in exp if k not in got]
    extra = [k for k in got if k not in exp]
    if not (missing or extra):
        return first
    said = []
    if missing:
        said.append(msg("is missing {n}: {keys}", n=_n(len(missing), "key"), keys=_few(missing)))
    if extra:
        said.append(msg("has {n}: {keys}", n=_n(len(extra), "unexpected key"), keys=_few(extra)))
    said = listed(said, " and ")
    if first:
        return Problem("wrong-keys", msg("{where} {said}; of the keys it shares, {first} differs first", where=where,
                                         said=said, first=first.where), where)
    return Problem("wrong-keys", msg("{where} {said}", where=where, said=said), where)


def compare(exp, got, where: str = "output", tol=None) -> Problem | None:
    """First difference between an expected and a returned value, recursing into tuples, lists and dicts."""
    if isinstance(exp, Verdict):
        if isinstance(got, Verdict):
            return None if got.holds else Problem(got.kind, got.message, where)
    if isinstance(exp, torch.Tensor):
        return compare_tensors(exp, got, where, tol)
    if isinstance(exp, (tuple, list)):
        return _sequence(exp, got, where, tol)
    if isinstance(exp, dict):
        return _mapping(exp, got, where, tol)
    if isinstance(exp, (str, bytes, bytearray)):
        return compare_text(exp, got, where, tol)
    if isinstance(exp, bool) or exp is None:
        if got is not exp and got != exp:
            return Problem("wrong-value", msg("{where} is {got}; expected {expected}", where=where, got=_fmt(got),
                                              expected=_fmt(exp)), where, rows=[((), exp, got)])
        return None
    if isinstance(exp, (int, float)) and got is None:
        return _none(where)
    if isinstance(exp, int):
        if isinstance(got, torch.Tensor):
            return Problem("wrong-type", msg("{where} is a torch.Tensor; return a Python int (use int(...))",
                                             where=where), where)
        if isinstance(got, float) or not isinstance(got, int) or isinstance(got, bool):
            if hasattr(got, "__index__") and not isinstance(got, bool):
                got = int(got)
            else:
                return Problem("wrong-type", msg("{where} is a {name}; expected an exact int", where=where,
                                                 name=_typename(got)), where)
        if got != exp:
            return Problem("wrong-value", msg("{where} is {got:,}; expected {expected:,} (off by {off:+,})",
                                              where=where, got=got, expected=exp, off=got - exp), where,
                           rows=[((), exp, got)], max_abs=float(abs(got - exp)),
                           max_rel=abs(got - exp) / max(abs(exp), 1))
        return None
    if isinstance(exp, float):
        if isinstance(got, torch.Tensor):
            return Problem("wrong-type", msg("{where} is a torch.Tensor; return a Python float (use float(...))",
                                             where=where), where)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return Problem("wrong-type", msg("{where} is a {name}; expected a float", where=where,
                                             name=_typename(got)), where)
        if tol and float in tol:
            rtol, atol = tol[float]
        else:
            rtol, atol = (tol or TOLERANCE)[torch.float64]
            rtol = max(rtol, 1e-12)
        if not math.isclose(got, exp, rel_tol=rtol, abs_tol=atol):
            return Problem("wrong-value", msg("{where} is {got}; expected {expected}", where=where,
                                              got=_fmt(float(got)), expected=_fmt(exp)), where,
                           rows=[((), exp, float(got))], max_abs=abs(got - exp),
                           max_rel=abs(got - exp) / max(abs(exp), 1e-300), tolerance=(rtol, atol))
        return None
    if got != exp:
        if type(got) is not type(exp):
            return Problem("wrong-type", msg("{where} is {got}; expected {expected} ({value})", where=where,
                                             got=_a(_typename(got)), expected=_a(_typename(exp)), value=_short(exp)),
                           where)
        return Problem("wrong-value", msg("{where} is {got!r}; expected {expected!r}", where=where, got=got,
                                          expected=exp), where)
    return None


def same(a, b, rtol=1e-4, atol=1e-5) -> bool:
    """Loose equality of two results (nested), NaN equal to NaN: used to match a known mistake.
    Verdicts are the same when their kind and key agree."""
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
