"""A report fits on one screen: the first failing case only, expected against got, the diagnosis, a hint."""

from __future__ import annotations

import html

NOT_ATTEMPTED = ("not attempted yet: replace `raise NotImplementedError(...)` with your code "
                 "and run this cell again.")


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return repr(v)


def lines(report) -> list[tuple[str, str]]:
    """(label, text) rows shared by the text and HTML renderings."""
    rows = []
    if report.status == "not attempted":
        return [("", NOT_ATTEMPTED)]
    if report.passed:
        rows.append(("", f"all {report.n_cases} cases passed in {report.seconds:.2f} s"))
        rows.append(("checked", "; ".join(report.checks)))
        return rows
    f = report.failure
    p = f.problem
    if f.call:
        total = f"case {f.case + 1} of {report.n_cases}" if f.case < report.n_cases else "property check"
        rows.append((total, f.call + (f"   [{f.note}]" if f.note else "")))
    rows.append(("problem", p.message))
    if f.frame:
        rows.append(("in your code", f.frame))
    for idx, exp, got in p.rows[:4]:
        at = f"[{', '.join(map(str, idx))}]" if idx else ""
        rows.append((f"{p.where}{at}", f"expected {_num(exp)}, got {_num(got)}"))
    if p.max_abs is not None:
        tol = f" (tolerance rtol={p.tolerance[0]:g}, atol={p.tolerance[1]:g})" if p.tolerance else ""
        rows.append(("error", f"max abs {p.max_abs:.3g}, max rel {p.max_rel:.3g}{tol}"))
    if f.diagnosis:
        rows.append(("diagnosis", f.diagnosis))
    if report.hint:
        rows.append(("hint", report.hint))
    return rows


def _headline(report) -> tuple[str, str]:
    mark = {"passed": "✓ passed", "failed": "✗ failed", "not attempted": "… not attempted"}[report.status]
    if report.status == "failed":
        mark += f" ({report.n_passed} of {report.n_cases} cases passed before the failure)"
    return report.signature, mark


def as_text(report) -> str:
    sig, mark = _headline(report)
    out = [f"{sig}: {mark}"]
    for label, text in lines(report):
        out.append(f"  {label + ':' if label else ''} {text}".rstrip() if label else f"  {text}")
    return "\n".join(out)


_COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "not attempted": "#6e7781"}


def as_html(report) -> str:
    sig, mark = _headline(report)
    colour = _COLOURS[report.status]
    body = "".join(
        f"<tr><td style='padding:2px 10px 2px 0;color:#57606a;white-space:nowrap;vertical-align:top'>"
        f"{html.escape(label)}</td><td style='padding:2px 0'><code style='white-space:pre-wrap'>"
        f"{html.escape(text)}</code></td></tr>"
        for label, text in lines(report))
    return (f"<div class='hwllm-report' style='border-left:4px solid {colour};padding:6px 12px;margin:4px 0'>"
            f"<div><b><code>{html.escape(sig)}</code></b> "
            f"<span style='color:{colour};font-weight:600'>{html.escape(mark)}</span></div>"
            f"<table style='border:none;margin-top:4px'>{body}</table></div>")
