"""The markdown report: a summary table, then one short section per check."""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence

import numpy as np

import lowrank_ggn as lg
from proofs_checks._registry import Measurement, Result

__all__ = ["format_number", "render", "summary_table"]

_SYMBOL = {"<=": "≤", "<": "<", ">=": "≥", ">": ">", "==": "="}
_NEGATION = {"<=": ">", "<": "≥", ">=": "<", ">": "≤", "==": "≠"}


def format_number(x: float) -> str:
    """Format a measured number compactly (integers as integers)."""
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.2e}"


def _relation(m: Measurement) -> str:
    symbol = _SYMBOL[m.relation] if m.holds else _NEGATION[m.relation]
    return f"{format_number(m.value)} {symbol} {format_number(m.bound)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _status(result: Result) -> str:
    if result.error:
        return "**ERROR**"
    return "pass" if result.passed else "**FAIL**"


def summary_table(results: Sequence[Result]) -> str:
    """Render the results table: statement, what is checked, inputs, worst measurement, printed form."""
    lines = [
        (
            "| # | statement | what is checked | inputs | largest error or margin | printed form | result | "
            "backend | dtype |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        worst = r.worst("corrected")
        printed = r.worst("printed")
        worst_text = _relation(worst) if worst is not None else (r.error.splitlines()[0] if r.error else "–")
        if printed is None:
            printed_text = "–"
        else:
            printed_text = ("fails: " if not printed.holds else "**holds**: ") + _relation(printed)
        inputs = r.outcome.inputs if r.outcome is not None else "–"
        lines.append(
            "| "
            + " | ".join(
                _cell(s)
                for s in (
                    f"[{i}](#{r.check.key})",
                    f"{r.check.section}: {r.check.statement}",
                    r.check.what,
                    inputs,
                    worst_text,
                    printed_text,
                    _status(r),
                    r.backend,
                    r.dtype,
                )
            )
            + " |"
        )
    return "\n".join(lines)


def _section(i: int, r: Result) -> str:
    out = [f'<a id="{r.check.key}"></a>', "", f"### {i}. {r.check.section}: {r.check.statement}", ""]
    out += [f"*Checked:* {r.check.what}", ""]
    if r.outcome is not None:
        out += [f"*Inputs:* {r.outcome.inputs}", ""]
    out += [f"*Result:* {_status(r)} ({r.backend}, {r.dtype}; key `{r.check.key}`)", ""]
    if r.outcome is not None and r.outcome.measurements:
        out += ["| measurement | form | value | relation | bound | as required |", "|---|---|---|---|---|---|"]
        for m in r.outcome.measurements:
            symbol = _SYMBOL[m.relation] if not math.isnan(m.bound) else "–"
            need = {"corrected": "must hold", "printed": "must fail (paper as printed)", "info": "reported"}[m.form]
            out.append(
                f"| {_cell(m.label)} | {need} | {format_number(m.value)} | {symbol} | "
                f"{format_number(m.bound) if not math.isnan(m.bound) else '–'} | "
                f"{('yes' if m.ok else '**no**') if m.form != 'info' else '–'} |"
            )
        out.append("")
    if r.outcome is not None:
        for note in r.outcome.notes:
            out += [note, ""]
    if r.error:
        out += ["```text", r.error.rstrip(), "```", ""]
    return "\n".join(out)


def render(results: Sequence[Result], *, command: str, seed: int, quick: bool) -> str:
    """Render the whole report as markdown (self-contained: no external files).

    Parameters
    ----------
    results : sequence of Result
    command : str
        The command line that produced the report (to reproduce it).
    seed : int
        The run's seed.
    quick : bool
        Whether quick mode was used.

    Returns
    -------
    str
    """
    n_fail = sum(not r.passed for r in results)
    backends = sorted({r.backend for r in results})
    dtypes = sorted({r.dtype for r in results})
    head = [
        "# Numerical checks of the paper's statements",
        "",
        (
            "Every numbered equation, lemma and observation of *Ginger: an efficient curvature approximation "
            "with linear complexity for general neural networks* is checked numerically, with the library "
            "`lowrank_ggn` for the corrected forms and dense float64 NumPy linear algebra as the reference. "
            "Each erratum of the paper is shown both ways: the printed form fails (its error is reported) and "
            "the corrected form passes. Tolerances are multiples of the machine epsilon of the dtype the "
            "library runs in."
        ),
        "",
        f"- command: `{command}`",
        (
            f"- backend: {', '.join(backends)}; dtype: {', '.join(dtypes)}; "
            f"mode: {'quick' if quick else 'full'}; seed: {seed}"
        ),
        f"- lowrank_ggn {lg.__version__}, NumPy {np.__version__}, Python {platform.python_version()}",
        f"- **{len(results) - n_fail} of {len(results)} checks pass**" + ("" if n_fail == 0 else f"; {n_fail} fail"),
        "",
        (
            "A measurement of a *corrected* statement must hold; one of a *printed* statement (the paper as "
            "printed, where it is wrong) must fail; a check passes when all of its measurements do so. The "
            "column *largest error or margin* shows the corrected measurement closest to its bound; *printed "
            "form* shows the printed measurement closest to holding."
        ),
        "",
        "## Summary",
        "",
        summary_table(results),
        "",
        "## Checks",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(_section(i, r) for i, r in enumerate(results, 1))
