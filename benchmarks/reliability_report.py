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


# --------------------------------------------------------------------------- static sections


_CHECKPOINT_INTRO = (
    "What saving and loading guarantee (each line is a test below; the format, now version 2, is in the module "
    "docstring; version-1 files still load):"
)
"""The paragraph above the checkpoint guarantees."""

_CHECKPOINT_GUARANTEES = [
    (
        "**Permissions.** A new file gets `0o666` less the umask, as `open()` gives (under umask `077` it is "
        "`0600`, no longer world-readable); overwriting keeps the existing file's permission bits."
    ),
    (
        "**Compressed or oversized members.** A deflated member is a `CheckpointError` before anything is inflated,"
        " and every member's size is checked against the manifest's shape and dtype from the zip directory before "
        "any leaf is read, so a damaged or hostile file costs no more memory than its own size."
    ),
    (
        "**Edited manifests.** A leaf used twice (`eigvals` pointing at `basis`), a leaf not used, an array "
        "replaced by a scalar and a leaf path out of place are a `CheckpointError`; so is any other edit of a "
        "version-2 manifest (a hyper-parameter, metadata, a type), through a SHA-256 digest of the manifest stored "
        "in it. The digest catches accidental and naive edits, not deliberate ones: whoever edits the manifest can "
        "recompute it, so it does not authenticate a file. Version-1 files have no digest and get the structural "
        "checks only. A manifest naming a missing `lowrank_ggn.*` module is a `CheckpointError`; a `lowrank_ggn` "
        "type whose module has moved is found by its public name."
    ),
    (
        "**Non-finite states.** A `GingerState`, `QNGState` or `GingerProductState` (all fields arrays) holding NaN"
        " or inf is a `CheckpointError` naming the field; NaN and inf elsewhere (optimiser bookkeeping, user data) "
        "load as saved."
    ),
    (
        "**Optimiser state dicts.** Dtype leaves (NumPy, PyTorch, JAX, array_api_strict, e.g. "
        "`state_dtype=torch.float64`) are stored and come back as the same objects, so `save_checkpoint(path, "
        '{"optimizer": opt.state_dict()})` round-trips a torch `Ginger`; a callable (a damping schedule) is a '
        "`TypeError` naming its path, and the module docstring gives the recipe that takes it out before saving and"
        " puts the live one back before loading."
    ),
    (
        "**Symlinks and temporary files.** Saving through a symlink writes its target and keeps the link; any "
        "exception during the write (`KeyboardInterrupt` included) removes the temporary file, and the next save to"
        " a target removes the temporary files that killed saves on the same host left behind (POSIX)."
    ),
    (
        "**Sharding.** A JAX state saved sharded over 4 devices loads onto a 2-device mesh with the sharding of "
        "each `like=` leaf (a `jax.Array` or a `jax.ShapeDtypeStruct`), and without `like=` onto one device."
    ),
]
"""What saving and loading guarantee (the checkpoint items of the reliability issue): one bullet each."""

_ISSUE_INTRO = (
    "Every item of the reliability issue and its outcome. The tables above run the checks on every backend; each "
    "item below also has a regression test that fails on the code before the fix: the library items in "
    "`tests/test_reliability_library.py` (the counters and ranges of QNG and the approximation family in "
    "`tests/test_adversarial.py`), the checkpoint items in `tests/test_checkpoint.py` (their guarantees are listed "
    "under [Checkpoints](#checkpoints)), the command-line items in `tests/test_cli.py`."
)

_LIBRARY_ITEMS = [
    (
        "1-D query with ‖g‖/γ overflowing",
        (
            "Every query (`ginger_precondition`, `damped_solve`, the fused `ginger_update_precondition`, the "
            "product form) uses the split form y = (g − Uc)/γ + U(c/(γ+σ)) in the same passes over U; it returns "
            "22.2 where it returned NaN (float32, γ = 1e-37)."
        ),
    ),
    (
        "optax integer/complex leaves",
        (
            "`init` and `update` raise `TypeError` naming the leaf path (`parameter leaf ['i'] has dtype int32`); "
            "integer leaves are never cast or modified."
        ),
    ),
    (
        "torch inputs with `requires_grad`",
        (
            "Inputs that require gradients take the generic (differentiable) kernels at every size; the blocked "
            "path is for plain tensors only."
        ),
    ),
    (
        "counters",
        (
            "`step` and `num_nonfinite` saturate instead of wrapping; at 2³¹−1 `step` steps back by the "
            "re-orthonormalisation period, so the period keeps running. The optax `count` does the same with "
            "`update_every`. Tensor dampings on scalar torch blocks and `np.int64` periods are accepted."
        ),
    ),
    (
        "counters of QNG and the approximation family",
        (
            "QNG's, the diagonal's and Nyström's `step` and `num_nonfinite` saturate at 2³¹−1 as Ginger's do (they "
            "wrapped to −2³¹). Ginger with the diagonal reads Ginger's verdict from its rejection count instead of "
            "`step` growing, so at a saturated `step` its diagonal is still updated with the low-rank part (it was "
            "left behind)."
        ),
    ),
    (
        "masked arrays, sparse tensors",
        (
            "`TypeError` naming the argument (`d is a NumPy masked array; ...`, `d is a sparse_coo PyTorch tensor; "
            "...`)."
        ),
    ),
    (
        "product form and floating-point errors",
        (
            "The product-form updates ignore NumPy floating-point errors and reject an overflowing update (counted "
            "in `num_nonfinite`), as `ginger_update` does."
        ),
    ),
    (
        "traced out-of-range decay/damping under `jax.jit`",
        (
            "An update is rejected (state unchanged, counted in `num_nonfinite`); a query with an out-of-range "
            "damping returns NaN."
        ),
    ),
    (
        "dtype of input vectors",
        (
            "One rule: a lower precision than the state's (float16, bfloat16; float32 into float64) is promoted "
            "exactly; a higher one is a `TypeError`. `docs/backends.md` states this rule."
        ),
    ),
    (
        "product form decay/damping",
        (
            "Checked in the state's dtype, as the direct form: `decay=1-1e-9` in float32 and `damping=1e-40` are "
            "`ValueError`s."
        ),
    ),
    (
        "bookkeeping beyond the range",
        (
            "Ginger (both paths, and Frequent Directions) and the product form reject an update whose `discarded` "
            "or `escaped` (α·ρ + δ) would overflow; they accepted it and stored inf (float32, a stream whose EMA "
            "has a trace beyond the range while its eigenvalues are inside)."
        ),
    ),
    (
        "entries beyond √max in the family",
        (
            "The diagonal's (1−α)·d∘d and Nyström's (1−α)·d(dᵀΩ) apply the factor 1−α first: a d with d_i² beyond "
            "the range and (1−α)·d_i² inside is accepted (the diagonal rejected it; Ginger with the diagonal kept "
            "its low-rank part and stored inf in the diagonal). A diagonal that overflows now rejects the low-rank "
            "update too (counted once), so the two parts never disagree."
        ),
    ),
    (
        "Nyström near the top of the range",
        (
            "The reconstruction works on Y / max|Y| (two products with 1/√max|Y|, which stays a normal number) and "
            "scales the eigenvalues back: a float64 sketch with entries above about 1e150 made ‖Y‖_F overflow, "
            "then a NaN shift and a `LinAlgError` from the SVD. An eigenvalue of the reconstruction beyond the "
            "dtype's range is +inf; the query stays finite."
        ),
    ),
    (
        "product form near the underflow edge",
        (
            "The product form folds (1−α)ddᵀ as ρ·vvᵀ with v = d/max|d|, as the direct form: on JAX (CPU), which "
            "flushes subnormals to zero, a d of norm about √(smallest normal) left W non-orthonormal (‖UᵀU − I‖ "
            "up to 0.08) where it now stays orthonormal; a d with ‖d‖² beyond the range but (1−α)‖d‖² inside is "
            "accepted, as by the direct form."
        ),
    ),
    (
        "product form and the family in the adversarial and fuzz suites",
        (
            "The adversarial streams and the fuzz tests run the product form (`ginger_product_*` and "
            "`lg.ginger_product`, the fused step included) and the approximations of the protocol (Frequent "
            "Directions, diagonal, Ginger with the diagonal, Nyström) against one-step float64 references of their "
            "own (method=product and the family methods in the tables above)."
        ),
    ),
]
"""Library items of the reliability issue: (item, what now happens)."""

_CLI_ITEMS = [
    (
        "16. the study (Part B)",
        (
            "`lowrank-ggn study` takes `--stream-file` (user streams) and `--ranks/--decays/--dampings/--methods`, "
            "appends rows per finished pass, and no longer divides by zero for `--steps` at most the largest rank "
            "or a checkpoint at step 1."
        ),
    ),
    (
        "17. bad arguments",
        (
            "Every out-of-range or malformed option of `demo` and `study` (rank ≥ dim, decay ∉ (0, 1), a NaN "
            "damping, `--steps 0`, a bad stream file, a grid the streams cannot take, an unavailable backend) is "
            "argparse's usage error (exit 2) naming the option, before any computation."
        ),
    ),
    (
        "18. output folder",
        (
            "An output path that is a file or a folder that cannot be written is refused before computing; "
            "writability is tested by writing."
        ),
    ),
    (
        "19. help texts",
        ("`--help` is plain text (no reST markup), and every option of `demo` and `study` has help."),
    ),
    (
        "20. documentation of half precision",
        (
            "`docs/backends.md` says what the code does: float16/bfloat16 (and float32 into float64) inputs are "
            "promoted exactly, not rejected."
        ),
    ),
]
"""Command-line and documentation items of the reliability issue: (item, what now happens)."""


def _checkpoint_notes() -> str:
    """The checkpoint guarantees, written between the checkpoint section's introduction and its table."""
    return "\n".join([_CHECKPOINT_INTRO, "", *(f"- {b}" for b in _CHECKPOINT_GUARANTEES)])


def _cell_text(text: str) -> str:
    """A table cell: ``|`` escaped (``max|Y|``)."""
    return text.replace("|", "\\|")


def _issue_section() -> list[str]:
    """The static section listing every item of the reliability issue with its outcome."""
    lines = ["## Items of the reliability issue", "", _ISSUE_INTRO, ""]
    lines += ["### Library", "", "| item | what now happens |", "|---|---|"]
    lines += [f"| {_cell_text(item)} | {_cell_text(what)} |" for item, what in _LIBRARY_ITEMS]
    lines += ["", "### Command line and documentation", "", "| item | what now happens |", "|---|---|"]
    lines += [f"| {_cell_text(item)} | {_cell_text(what)} |" for item, what in _CLI_ITEMS]
    return [*lines, ""]


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


def _table(records: list[dict[str, Any]], title: str, intro: str, notes: str = "") -> list[str]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for rec in records:
        key = (rec["doc"], _case_label(rec))
        if key not in groups:
            order.append(key)
        groups[key].append(rec)
    used = [b for b in BACKENDS if any(_backend(r["params"]) == b for r in records)]
    lines = [f"## {title}", "", intro, ""]
    if notes:
        lines += [notes.strip("\n"), ""]
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
            "σ ≥ 0 descending (QNG: β ≥ 0, scales in (0, 1], stored ‖q‖² exact; product form: W's and Q's "
            "unused rows zero; diagonals ≥ 0). A query never returns NaN from finite inputs."
        ),
        "",
        *_reproduce(),
        *_soak_section(args.soak, args.soak_no_x64),
        *_table(
            by_file["tests/test_adversarial.py"],
            "Adversarial streams",
            "Both Ginger paths (eigen, Sherman–Morrison), the product form (method=product) and QNG, and for the "
            "inputs that apply to every method the approximation family (frequent-directions, diagonal, "
            "ginger-diagonal, nystrom), dim = 10 and τ = 3 unless stated. "
            "The outcome column quotes the measurement recorded on NumPy (float32 and float64); "
            "'err/tol' is the worst deviation from the reference in tolerance units (≤ 1 passes).",
        ),
        *_table(
            by_file["tests/test_low_precision.py"],
            "float16 and bfloat16",
            "States are float32 or float64; `ginger_init`/`qng_init` refuse half precision with a TypeError "
            "that says so. Every function that takes a vector next to a state accepts a lower floating "
            "precision of the same namespace and device (float16, bfloat16; float32 into a float64 state), "
            "promotes it exactly to the state's dtype, reduces there, and returns vector results in the "
            "input's dtype (rounded once); a higher precision is a TypeError. Columns: backend and state dtype; "
            "the input dtype is in the case.",
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
            _checkpoint_notes(),
        ),
        *_issue_section(),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}: {dict(counts)}")
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
