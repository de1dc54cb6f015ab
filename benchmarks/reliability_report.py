"""Build ``docs/reliability.md``: every reliability case, on which backends, and its outcome.

Runs the reliability test files (adversarial streams, low precision, fuzzing,
checkpoints) with pytest, collects each test's outcome and the measurement it
records (``record_property("outcome", ...)``), reads the float32 soak results
written by ``benchmarks/soak_float32.py``, and writes one markdown page.

Usage::

    python benchmarks/reliability_report.py            # default cases (about the default test run)
    python benchmarks/reliability_report.py --slow     # also the long cases (10⁴ repeats, ...)
    python benchmarks/reliability_report.py --slow -n 2   # with pytest-xdist

The page is produced only from what ran: a failing case shows ✗ and the
command exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ["tests/test_adversarial.py", "tests/test_low_precision.py", "tests/test_fuzz.py", "tests/test_checkpoint.py"]
BACKENDS = [f"{b}-{d}" for b in ("numpy", "array_api_strict", "jax", "torch", "cupy") for d in ("float64", "float32")]
SOAK = ROOT / "benchmarks" / "results" / "soak_float32.json"
SOAK_NO_X64 = ROOT / "benchmarks" / "results" / "soak_float32_no_x64.json"


# --------------------------------------------------------------------------- pytest plugin (also loaded in workers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:  # noqa: ARG001
    """Attach the test's parameters and docstring to its report (JSON, so that xdist can ship them)."""
    report = yield
    params = dict(item.callspec.params) if hasattr(item, "callspec") else {}
    doc = (getattr(item.function, "__doc__", None) or "").strip().splitlines()
    # A callable parameter (a lambda editing a file, say) has no readable value; its neighbours name the case.
    shown = {k: _jsonable(v) for k, v in params.items() if not callable(v)}
    info = {"params": shown, "doc": doc[0] if doc else ""}
    report.user_properties.append(("reliability", json.dumps(info)))
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return repr(value)


class Collector:
    """Controller-side: one record per test (its call phase, or the phase that skipped/failed it)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        """Keep the report of each reliability test."""
        props = dict(report.user_properties)
        if "reliability" not in props:
            return
        if report.when != "call" and report.passed:
            return
        info = json.loads(props["reliability"])
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            reason = str(report.longrepr).strip().splitlines()[-1][:200]
        self.records[report.nodeid] = {
            **info,
            "nodeid": report.nodeid,
            "outcome": report.outcome,
            "measured": props.get("outcome", ""),
            "reason": reason,
        }


# --------------------------------------------------------------------------- tables


def _backend(params: dict[str, Any]) -> str | None:
    if "xp" in params:
        return "-".join(params["xp"])
    if "case" in params:  # low precision: (backend, state dtype, input dtype)
        return "-".join(params["case"][:2])
    return None


def _md(text: str) -> str:
    """Escape the characters that markdown would read as emphasis or a table cell's end (``decay**rank``)."""
    return text.replace("*", "\\*").replace("|", "\\|")


def _symbol(recs: list[dict[str, Any]]) -> str:
    return " ".join(sorted({_cell(r) for r in recs}))


def _cell(rec: dict[str, Any]) -> str:
    if rec["outcome"] == "passed":
        return "✓"
    if rec["outcome"] == "failed":
        return "✗"
    if "could not import" in rec["reason"] or "no CUDA" in rec["reason"] or "CUDA" in rec["reason"]:
        return "–"
    return "n/a"


def _case_label(rec: dict[str, Any]) -> str:
    extra = {k: v for k, v in rec["params"].items() if k not in ("xp", "case")}
    case = rec["params"].get("case")
    if isinstance(case, list) and len(case) > 2:  # low precision: (backend, state dtype, input dtype)
        extra = {"input": case[2], **extra}
    name = rec["nodeid"].split("::")[1].split("[")[0].removeprefix("test_").replace("_", " ")
    suffix = ", ".join(f"{k}={v}" for k, v in extra.items())
    return f"{name} ({suffix})" if suffix else name


def _measured(recs: list[dict[str, Any]]) -> str:
    """Outcome column: the recorded measurement on NumPy float32 and float64 (others agree within the checks)."""
    by = {_backend(r["params"]): r for r in recs}
    parts = []
    for key in ("numpy-float32", "numpy-float64"):
        r = by.get(key)
        if r and r["measured"]:
            parts.append(f"{key.split('-')[1]}: {r['measured']}")
    if not parts:
        measured = [r["measured"] for r in recs if r["measured"]]
        parts = measured[:1]
    if all(_backend(r["params"]) is None for r in recs):  # one run, not per backend
        parts.insert(0, f"{_symbol(recs)} (one run, not per backend)")
    failed = [f"✗ {_backend(r['params'])}: {r['reason']}" for r in recs if r["outcome"] == "failed"]
    skipped = {r["reason"] for r in recs if _cell(r) == "n/a"}
    return _md("<br>".join(parts + failed + sorted(skipped)))


def _table(records: list[dict[str, Any]], title: str, intro: str) -> list[str]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for rec in records:
        key = (rec["doc"], _case_label(rec))
        if key not in groups:
            order.append(key)
        groups[key].append(rec)
    used = [b for b in BACKENDS if any(_backend(r["params"]) == b for r in records)]
    lines = [f"## {title}", "", intro, ""]
    lines.append("| case | " + " | ".join(b.replace("-", " ") for b in used) + " | outcome |")
    lines.append("|---" * (len(used) + 2) + "|")
    last_doc = None
    for doc, label in order:
        recs = groups[(doc, label)]
        cells = []
        for b in used:
            hits = [r for r in recs if _backend(r["params"]) == b]
            cells.append(" ".join(sorted({_cell(r) for r in hits})) if hits else "")
        case = f"**{_md(doc)}**<br>{_md(label)}" if doc and doc != last_doc else _md(label)
        last_doc = doc
        lines.append(f"| {case} | " + " | ".join(cells) + f" | {_measured(recs)} |")
    lines.append("")
    return lines


_REPRODUCE = [
    (
        "python benchmarks/soak_float32.py",
        (
            "the long float32 run (10⁵ updates at d = 10⁴, τ = 16, α = 0.999) for several "
            "re-orthonormalisation periods, against float64; writes `benchmarks/results/soak_float32.json`"
        ),
    ),
    (
        "python benchmarks/soak_float32.py --no-x64",
        "the same on JAX without `jax_enable_x64`; writes `benchmarks/results/soak_float32_no_x64.json`",
    ),
    (
        "OPENBLAS_NUM_THREADS=1 python benchmarks/reorth_cost.py",
        (
            "the cost of one re-orthonormalisation as a ratio to one update (JAX, float32, d = 10⁴, τ = 16; one "
            "BLAS thread, as a multithreaded QR on an oversubscribed CPU is tens of times slower)"
        ),
    ),
    ("pytest -m slow tests/test_soak.py", "the long float32 run with the default settings, asserting the targets"),
    (
        "python benchmarks/reliability_report.py --slow -n 2",
        "the adversarial, half-precision, fuzzing and checkpoint tests below (slow cases included), and this page",
    ),
]
"""Commands that reproduce the page: (command, what it runs)."""


def _reproduce() -> list[str]:
    lines = ["**Reproduce.** Each command writes or checks the numbers of one part of this page:", ""]
    lines += ["| command | what it runs |", "|---|---|"]
    return [*lines, *(f"| `{cmd}` | {what} |" for cmd, what in _REPRODUCE), ""]


_SOAK_INTRO = """
Ginger (eigen path) on a power-law stream (covariance spectrum i^-1.5), float32 against a float64 run of the same
vectors, measured every {every} steps (coprime with the re-orthonormalisation periods, so every phase of a period
is sampled). Targets: ‖UᵀU − I‖₂ ≤ 1e-5, eigenvalues within 1e-3 (relative), preconditioned direction within 1e-3,
nothing non-finite. The time column is the median per-chunk ratio measured in the same run on a shared CPU (noisy);
`benchmarks/reorth_cost.py` measures one re-orthonormalisation at about two updates (JAX, float32, d = 10⁴,
τ = 16), so every 100 updates costs about 2%. Reproduce with `python benchmarks/soak_float32.py`.
"""
_SOAK_NO_X64 = """
The same run on JAX without `jax_enable_x64` (`python benchmarks/soak_float32.py --no-x64`), where the small
(τ+1)×(τ+1) eigendecompositions cannot run in float64 and float32 LAPACK's eigenvectors are orthonormal to only
about 1e-6 ({steps} steps; the float64 reference runs on NumPy):
"""
_SOAK_DEFAULT = """
**Default.** `ginger_update(..., reorthonormalize_every="auto")` re-orthonormalises float32 states every 100
accepted updates and float64 states never. Every 100 keeps ‖UᵀU − I‖₂ ten times below the target where the small
eigendecompositions run in float64 (NumPy, PyTorch, CuPy, JAX with x64), and the eigenvalue and direction errors
far below theirs everywhere, for about 2% of the update time. Every 1000 also meets the targets with float64;
never re-orthonormalising fails the orthogonality target after about 4·10³ updates (before 10³ without float64, where
the eigenvalue and direction errors also exceed 1e-3). Without float64 (JAX without x64) the orthogonality peaks
slightly above 1e-5 with the default (the second table): pass `reorthonormalize_every=25` there if that bound
matters. float64 drifts by about 1e-16 per update.
"""


def _paragraph(text: str, **fields: Any) -> str:
    return " ".join(text.split()).format(**fields)


def _soak_section(path: Path, no_x64: Path) -> list[str]:
    lines = ["## Long float32 run", ""]
    if not path.exists():
        return [*lines, f"No soak results at `{path.relative_to(ROOT)}`: run `python benchmarks/soak_float32.py`.", ""]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from soak_float32 import summary

    record = json.loads(path.read_text())
    every = record["history"][1]["step"] - record["history"][0]["step"]
    lines += [_paragraph(_SOAK_INTRO, every=every), "", summary(record), ""]
    if no_x64.exists():
        other = json.loads(no_x64.read_text())
        steps = other.get("steps_done", other["steps"])
        lines += [_paragraph(_SOAK_NO_X64, steps=steps), "", summary(other), ""]
    return [*lines, _paragraph(_SOAK_DEFAULT), ""]


def main(argv: list[str] | None = None) -> int:
    """Run the cases and write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="include the long cases (marker 'slow')")
    parser.add_argument("-n", default="0", help="pytest-xdist workers")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--soak", type=Path, default=SOAK)
    parser.add_argument("--soak-no-x64", type=Path, default=SOAK_NO_X64)
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(ROOT))
    collector = Collector()
    marker = "" if args.slow else "not slow"
    code = pytest.main(
        [*FILES, "-q", "-p", "no:cacheprovider", "-p", "benchmarks.reliability_report", "-m", marker, "-n", args.n],
        plugins=[collector],
    )
    records = sorted(collector.records.values(), key=lambda r: r["nodeid"])
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_file[rec["nodeid"].split("::")[0]].append(rec)

    import numpy as np

    import lowrank_ggn as lg

    versions = [f"lowrank_ggn {lg.__version__}", f"NumPy {np.__version__}"]
    for mod in ("jax", "torch", "array_api_strict", "hypothesis"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} not installed")
    counts = defaultdict(int)
    for rec in records:
        counts[rec["outcome"]] += 1
    lines = [
        "# Reliability",
        "",
        (
            "Every case below is a test in `tests/` that ran to produce this page "
            f"(`python benchmarks/reliability_report.py{' --slow' if args.slow else ''}`); "
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped. "
            "✓ passed, ✗ failed, – backend not available here (CuPy needs a CUDA GPU), n/a not applicable. "
            f"Python {platform.python_version()}, {', '.join(versions)}."
        ),
        "",
        (
            "**What is checked.** Each update of an adversarial stream is compared with a dense float64 reference "
            "of one step from the previous state: it must agree (to a tolerance set by the dtype and, for "
            "queries, the condition number), or — only where the exact result overflows the dtype — be rejected, "
            "counted in `num_nonfinite` and leave the state bit for bit unchanged, or the call must raise a "
            "`ValueError`/`TypeError` that names the argument. After every step: all entries finite, UᵀU = I, "
            "σ ≥ 0 descending (QNG: β ≥ 0, scales in (0, 1], stored ‖q‖² exact). A query never returns NaN "
            "from finite inputs."
        ),
        "",
        *_reproduce(),
        *_soak_section(args.soak, args.soak_no_x64),
        *_table(
            by_file["tests/test_adversarial.py"],
            "Adversarial streams",
            "Both Ginger paths (eigen, Sherman–Morrison) and QNG, dim = 10 and τ = 3 unless stated. "
            "The outcome column quotes the measurement recorded on NumPy (float32 and float64); "
            "'err/tol' is the worst deviation from the reference in tolerance units (≤ 1 passes).",
        ),
        *_table(
            by_file["tests/test_low_precision.py"],
            "float16 and bfloat16",
            "States are float32 or float64; `ginger_init`/`qng_init` refuse half precision with a TypeError "
            "that says so. Every function that takes a vector next to a state accepts float16/bfloat16 of the "
            "same namespace and device, promotes it exactly to the state's dtype, reduces there, and returns "
            "vector results in the input's dtype (rounded once). Columns: backend and state dtype; the input "
            "dtype is in the case.",
        ),
        *_table(
            by_file["tests/test_fuzz.py"],
            "Fuzzing (hypothesis)",
            "Each test draws shapes, dtypes (same, other float, integer, complex, half), values (normal, "
            "tiny, huge, subnormal, zero, NaN, inf) and scalars (valid, out of range, rounding to 0/1, wrong "
            "type), predicts from the documented contract whether the call must raise, and checks the "
            "error type or the result against the dense reference. Examples per backend: "
            f"{os.environ.get('HYPOTHESIS_PROFILE', 'ci')} profile.",
        ),
        *_table(
            by_file["tests/test_checkpoint.py"],
            "Checkpoints",
            "`save_checkpoint`/`load_checkpoint` (format in `lowrank_ggn/checkpoint.py`): bit-exact round "
            "trips, resumed trajectories, restore onto another namespace/device/dtype, damaged and mismatched "
            "files.",
        ),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}: {dict(counts)}")
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
