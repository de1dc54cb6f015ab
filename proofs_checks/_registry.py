r"""The registry of checks, what a check returns, and the runner.

A check is a function ``Context -> Outcome`` registered with :func:`check`. Its
:class:`Outcome` lists :class:`Measurement`\ s, each a number compared with a
bound. A measurement of a *corrected* statement must hold; a measurement of a
*printed* statement (the paper's form where it is wrong) must fail; an *info*
measurement is reported only. A check passes when every measurement does what
it must and at least one of them is a corrected statement. NaN never holds.
"""

from __future__ import annotations

import importlib
import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from proofs_checks._context import Context

__all__ = ["SECTION_MODULES", "Check", "Form", "Measurement", "Outcome", "Result", "all_checks", "check", "run_checks"]

Relation = Literal["<=", "<", ">=", ">", "=="]
Form = Literal["corrected", "printed", "info"]


@dataclass(frozen=True)
class Measurement:
    """One measured number and the bound it is compared with.

    Attributes
    ----------
    label : str
        What was measured (markdown).
    value : float
        The measured number.
    bound : float
        The bound (tolerance, margin or target).
    relation : str
        ``value <relation> bound`` is the statement.
    form : str
        ``"corrected"``: must hold; ``"printed"``: the paper's printed form, must
        fail; ``"info"``: reported, not judged.
    """

    label: str
    value: float
    bound: float
    relation: Relation = "<="
    form: Form = "corrected"
    headline: bool = False
    """Shown in the summary table (unless another measurement fails)."""

    @property
    def holds(self) -> bool:
        """Whether ``value <relation> bound``; False when either is NaN."""
        v, b = float(self.value), float(self.bound)
        if math.isnan(v) or math.isnan(b):
            return False
        return {
            "<=": v <= b,
            "<": v < b,
            ">=": v >= b,
            ">": v > b,
            "==": v == b,
        }[self.relation]

    @property
    def ok(self) -> bool:
        """Whether the measurement behaves as its form requires."""
        if self.form == "corrected":
            return self.holds
        if self.form == "printed":
            return not self.holds
        return True

    @property
    def utilisation(self) -> float:
        """How much of the room to the bound is used: ≤ 1 when the statement holds, near 1 when tight.

        ``1 − slack / max(|value|, |bound|)`` with ``slack = bound − value`` for an
        upper bound and ``value − bound`` for a lower bound (inf for NaN).
        """
        v, b = float(self.value), float(self.bound)
        if math.isnan(v) or math.isnan(b):
            return math.inf
        if self.relation == "==":
            return 0.0 if v == b else math.inf
        slack = b - v if self.relation in {"<=", "<"} else v - b
        scale = max(abs(v), abs(b))
        return 1.0 if scale == 0 else 1.0 - slack / scale


@dataclass
class Outcome:
    """What a check function returns.

    Attributes
    ----------
    inputs : str
        The inputs, briefly (sizes, α, γ, …).
    measurements : list of Measurement
    notes : list of str
        Markdown paragraphs for the check's section of the report.
    """

    inputs: str
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        label: str,
        value: float,
        bound: float = math.nan,
        relation: Relation = "<=",
        form: Form = "corrected",
        *,
        headline: bool = False,
    ) -> Measurement:
        """Append a measurement and return it (an ``"info"`` measurement needs no bound)."""
        m = Measurement(label, float(value), float(bound), relation, form, headline)
        self.measurements.append(m)
        return m

    def note(self, text: str) -> None:
        """Append a paragraph to the check's notes."""
        self.notes.append(text)


@dataclass(frozen=True)
class Check:
    """A registered check of one numbered statement of the paper."""

    key: str
    section: str
    statement: str
    what: str
    func: Callable[[Context], Outcome]
    erratum: bool = False


@dataclass
class Result:
    """A check's outcome in one run."""

    check: Check
    outcome: Outcome | None
    backend: str
    dtype: str
    seconds: float
    error: str = ""

    @property
    def passed(self) -> bool:
        """True when every measurement is ok and a corrected statement was measured."""
        if self.outcome is None or self.error:
            return False
        ms = self.outcome.measurements
        return any(m.form == "corrected" for m in ms) and all(m.ok for m in ms)

    def worst(self, form: Form) -> Measurement | None:
        """Return the measurement of ``form`` closest to failing (corrected) or to holding (printed)."""
        if self.outcome is None:
            return None
        ms = [m for m in self.outcome.measurements if m.form == form]
        if not ms:
            return None
        if form == "printed":
            return min(ms, key=lambda m: (m.holds, -m.utilisation))
        # A failing measurement first, then the check's chosen headline; otherwise the one closest to
        # its bound, preferring continuous measurements to exact (discrete) statements met with equality.
        return max(ms, key=lambda m: (not m.ok, m.headline, m.value != m.bound, m.utilisation))


_REGISTRY: dict[str, Check] = {}


def check(
    key: str, *, section: str, statement: str, what: str, erratum: bool = False
) -> Callable[[Callable[[Context], Outcome]], Callable[[Context], Outcome]]:
    """Register a check function under ``key`` (decorator).

    Parameters
    ----------
    key : str
        A short unique identifier, used to select checks and seed their randomness.
    section : str
        Where the statement is (``"§2.3"``, ``"Algorithm 1"``, …).
    statement : str
        The statement as numbered or named in the paper.
    what : str
        What is checked, in one sentence (markdown).
    erratum : bool
        True for a check that shows an erratum both ways.
    """

    def register(func: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        if key in _REGISTRY:
            msg = f"check {key!r} is registered twice"
            raise ValueError(msg)
        _REGISTRY[key] = Check(key, section, statement, what, func, erratum)
        return func

    return register


SECTION_MODULES = (
    "proofs_checks.sec2_1_ggn_fisher",
    "proofs_checks.sec2_2_qng",
    "proofs_checks.sec2_3_ginger",
    "proofs_checks.sec3_convergence",
    "proofs_checks.sec9_family",
    "proofs_checks.errata",
)
"""The modules that register checks, in the order of the paper."""


def all_checks() -> list[Check]:
    """Every registered check, in the order of the paper (importing the section modules)."""
    for name in SECTION_MODULES:
        importlib.import_module(name)
    order = {name: i for i, name in enumerate(SECTION_MODULES)}
    checks = list(_REGISTRY.values())
    return sorted(checks, key=lambda c: order.get(c.func.__module__, len(order)))  # stable: keeps file order


def run_checks(
    ctx: Context, checks: Iterable[Check] | None = None, *, progress: Callable[[Result], None] | None = None
) -> list[Result]:
    """Run checks and collect their results; an exception makes that check fail, not the run.

    Parameters
    ----------
    ctx : Context
        The run's context; each check gets :meth:`Context.for_check` of it.
    checks : iterable of Check, optional
        Default: :func:`all_checks`.
    progress : callable, optional
        Called with each result as soon as it is ready.

    Returns
    -------
    list of Result
    """
    results = []
    for chk in all_checks() if checks is None else checks:
        t0 = time.perf_counter()
        try:
            outcome, error = chk.func(ctx.for_check(chk.key)), ""
        except Exception as exc:  # noqa: BLE001 - a broken check is reported as a failure
            outcome = None
            error = f"{type(exc).__name__}: {exc}\n\n" + "".join(traceback.format_exc(limit=-3))
        result = Result(chk, outcome, ctx.backend, ctx.dtype_name, time.perf_counter() - t0, error)
        results.append(result)
        if progress is not None:
            progress(result)
    return results
