r"""Numerical checks of every equation, lemma, observation and erratum of the Ginger paper.

Run ``python -m proofs_checks [--backend numpy|jax|torch|cupy|array_api_strict]
[--dtype float64|float32] [--quick] [--out report.md]``. Each check
measures one numbered statement of the paper with the library's primitives on
the chosen backend and dtype, against dense float64 NumPy references, and the
run writes a markdown report. The run exits non-zero when a corrected statement
fails (or a printed erratum unexpectedly holds).

Modules, in the order of the paper:

- :mod:`proofs_checks.sec2_1_ggn_fisher` — §2.1: Hessian = GGN + residual, Eq 4–8;
- :mod:`proofs_checks.sec2_2_qng` — §2.2: QNG, Eq 9–13, Observation 1;
- :mod:`proofs_checks.sec2_3_ginger` — §2.3: Ginger, Eq 14–19, Brand's update, complexity,
  eigen path ≡ Sherman–Morrison path;
- :mod:`proofs_checks.sec3_convergence` — §3: Lemma 1, Lemma 2, Theorem 1;
- :mod:`proofs_checks.errata` — every erratum, printed form and corrected form.
"""

from proofs_checks._context import BACKENDS, DTYPES, Context, make_context
from proofs_checks._registry import Check, Measurement, Outcome, Result, all_checks, check, run_checks
from proofs_checks._report import render, summary_table

__all__ = [
    "BACKENDS",
    "DTYPES",
    "Check",
    "Context",
    "Measurement",
    "Outcome",
    "Result",
    "all_checks",
    "check",
    "make_context",
    "render",
    "run_checks",
    "summary_table",
]
