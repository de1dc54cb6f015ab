r"""Reporting: the CSV files, the terminal summary, the headline answers, the plots and the markdown report.

Every number is computed from the study's rows; nothing is typed in. Means
are over seeds (and, for the headline win rates, over every setting of the
grid).
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from lowrank_ggn.studies._methods import DENSE_LIMIT, METHODS, PROTOCOL_METHODS
from lowrank_ggn.studies._runner import COLUMNS, StudyResult
from lowrank_ggn.studies._streams import LARGE_STREAMS

__all__ = [
    "StudyFiles",
    "headline",
    "markdown_report",
    "plot_study",
    "prepare_output_dir",
    "read_study",
    "scale_headline",
    "scale_markdown",
    "summary_table",
    "write_csv",
    "write_outputs",
]

# Metrics in the tables: column, short label, "better" direction.
METRICS = (
    ("inv_spectral_error", "inv err", "low"),
    ("curv_spectral_error", "curv err", "low"),
    ("angle_max_deg", "angle°", "low"),
    ("subspace_overlap", "overlap", "high"),
    ("cosine", "cos", "high"),
    ("decrease_fraction", "decrease", "high"),
    ("captured_share", "captured", "high"),
)

TABLE_METHODS = METHODS


_REFERENCE = ("exact", "oracle", "oracle-tail")


def _select(rows: Iterable[dict[str, Any]], **criteria: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in criteria.items())]


def _finite(values: Iterable[Any]) -> np.ndarray:
    arr = np.array([float(v) for v in values if v != ""], dtype=np.float64)
    return arr[np.isfinite(arr)]


def _mean(rows: Sequence[dict[str, Any]], column: str) -> float:
    vals = _finite(r[column] for r in rows)
    return float(vals.mean()) if vals.size else math.nan


def _fmt(x: float, column: str = "") -> str:
    if not np.isfinite(x):
        return "–"
    if column == "angle_max_deg":
        return f"{x:.1f}"
    if column in {"cosine", "decrease_fraction", "captured_share", "subspace_overlap"}:
        return f"{x:.4f}"
    if column.startswith("time"):
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _csv_cell(v: Any) -> Any:
    return repr(float(v)) if isinstance(v, float | np.floating) else v


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path, columns: Sequence[str] = COLUMNS) -> Path:
    """Write rows (dicts) to a CSV file; floats at full precision (``repr``, round-trip exact).

    The file is written next to its final place and then renamed over it,
    so that a reader (or an interruption) never sees it half written.

    Parameters
    ----------
    rows : sequence of dict
        The rows; keys not in ``columns`` are ignored, missing ones left empty.
    path : str or pathlib.Path
        The file to write (replaced).
    columns : sequence of str, default COLUMNS
        The header, in order.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


SPECTRA_COLUMNS = ("stream", "seed", "decay", "step", "index", "eigval")
"""Columns of ``spectra.csv``: the eigenvalues of every exact EMA at the last step."""


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create an output folder (with its parents) and check that files can be written in it.

    Call it before a long computation whose results go there.

    Parameters
    ----------
    path : str or os.PathLike
        The folder.

    Returns
    -------
    pathlib.Path
        ``path``, which exists and is writable.

    Raises
    ------
    ValueError
        If ``path`` (or a folder above it) is an existing file, or the folder
        cannot be created or written to; the message names the path and the
        reason.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        msg = f"output folder {str(out)!r} is an existing file"
        raise ValueError(msg)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except (FileExistsError, NotADirectoryError):
        msg = f"output folder {str(out)!r} lies under an existing file"
        raise ValueError(msg) from None
    except OSError as err:
        msg = f"output folder {str(out)!r} cannot be written to ({err.strerror or err})"
        raise ValueError(msg) from None
    return out


class StudyFiles:
    """``study.csv`` and ``spectra.csv`` of a running study, appended and flushed pass by pass.

    Constructing it checks the folder (:func:`prepare_output_dir`) and
    starts both files with their headers (replacing files of the same names).
    Calling it with the :class:`~lowrank_ggn.studies.StudyResult` of a
    finished pass appends that pass's rows and spectra and flushes them, so
    that an interrupted study keeps every pass it finished.
    :func:`run_study` uses it for ``out_dir``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder, created if needed.

    Raises
    ------
    ValueError
        As :func:`prepare_output_dir`.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        out = prepare_output_dir(out_dir)
        self.paths = {"csv": out / "study.csv", "spectra": out / "spectra.csv"}
        """The two files, by kind: ``"csv"`` (the rows) and ``"spectra"``."""
        for key, columns in (("csv", COLUMNS), ("spectra", SPECTRA_COLUMNS)):
            write_csv([], self.paths[key], columns)

    def __call__(self, part: StudyResult) -> None:
        """Append the rows and spectra of one finished pass, and flush both files."""
        for key, columns, rows in (("csv", COLUMNS, part.rows), ("spectra", SPECTRA_COLUMNS, part.spectra)):
            with self.paths[key].open("a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
                for row in rows:
                    writer.writerow({k: _csv_cell(v) for k, v in row.items()})
                fh.flush()


def _final(result: StudyResult) -> list[dict[str, Any]]:
    """Rows of the last step of each stream (``steps``, or ``large_steps`` for a large stream)."""
    c = result.config
    last = {name: c.steps_of(name) for name in c.stream_names}
    return [r for r in result.rows if r["step"] == last.get(r["stream"], c.steps)]


def _default_rows(result: StudyResult, mode: str) -> list[dict[str, Any]]:
    """Return the final rows of the default setting (τ, α; γ in the fixed mode), every stream, seed and method."""
    c = result.config
    out = []
    for r in _final(result):
        if r["decay"] != c.decay or r["damping_mode"] != mode:
            continue
        if mode == "fixed" and r["damping"] != c.damping:
            continue
        if r["rank"] not in ("", c.rank):
            continue
        out.append(r)
    return out


def _method_label(row: dict[str, Any], main_dtype: str) -> str:
    if row["method"] in {"exact", "oracle", "oracle-tail"} or row["dtype"] == main_dtype:
        return row["method"]
    return f"{row['method']} ({row['dtype']})"


def _grouped_means(rows: list[dict[str, Any]], main_dtype: str) -> dict[tuple[str, str], dict[str, float]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["stream"], _method_label(r, main_dtype)), []).append(r)
    return {
        key: {col: _mean(g, col) for col in (*(m[0] for m in METRICS), "time_vs_diag", "effective_damping")}
        for key, g in groups.items()
    }


def _order(label: str) -> tuple[int, str]:
    base = label.split(" ", maxsplit=1)[0]
    return (TABLE_METHODS.index(base) if base in TABLE_METHODS else len(TABLE_METHODS), label)


def _table(result: StudyResult, mode: str, *, markdown: bool) -> str:
    c = result.config
    means = _grouped_means(_default_rows(result, mode), c.main_dtype)
    header = ["stream", "method", "γ_eff", *(m[1] for m in METRICS), "time/diag"]
    lines = []
    for stream in c.stream_names:
        for label in sorted({k[1] for k in means if k[0] == stream}, key=_order):
            m = means[stream, label]
            lines.append(
                [
                    stream,
                    label,
                    _fmt(m["effective_damping"]),
                    *(_fmt(m[col], col) for col, _, _ in METRICS),
                    _fmt(m["time_vs_diag"], "time"),
                ]
            )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    previous = None
    for line in lines:
        if previous is not None and line[0] != previous:
            out.append("")
        out.append(fmt.format(*line))
        previous = line[0]
    return "\n".join(out)


def _seeds_text(result: StudyResult) -> str:
    c = result.config
    if not c.user_streams:
        return f"mean over {len(c.seeds)} seed(s)"
    if not c.streams:
        return "one run per stream"
    return f"mean over {len(c.seeds)} seed(s), one run of each user stream"


def _mode_title(result: StudyResult, mode: str) -> str:
    c = result.config
    if mode == "equal":
        return (
            f"Equal damping: γ = α^τ = {c.decay}^{c.rank} = {c.decay**c.rank:.4g} for every method and for the "
            f"reference (α^τ I + M)⁻¹ (τ = {c.rank}, last step, {_seeds_text(result)}). "
            "This is the comparison the paper's claim is about."
        )
    return (
        f"Fixed damping: γ = {c.damping:g} for every method, reference (γI + M)⁻¹; QNG keeps its implicit α^τ "
        f"(τ = {c.rank}, α = {c.decay}, last step, {_seeds_text(result)})."
    )


def summary_table(result: StudyResult, *, markdown: bool = False) -> str:
    """Return the summary tables of the default setting (both damping modes) and the headline answers, as text.

    One table per comparison (equal damping first, then fixed damping): a
    row per stream × method, with the effective damping, the metrics at the
    last step (mean over seeds) and the time per step relative to the
    diagonal EMA; then the sentences of :func:`headline`.

    Parameters
    ----------
    result : StudyResult
        The study.
    markdown : bool, default False
        Markdown tables (for the report) instead of aligned plain text (for
        the terminal).

    Returns
    -------
    str
        The tables and the headline.
    """
    parts = []
    for mode in ("equal", "fixed"):
        parts += [_mode_title(result, mode), "", _table(result, mode, markdown=markdown), ""]
    parts.append("Headline (final step, every setting of the grid):")
    parts += [f"{'- ' if markdown else '  '}{line}" for line in headline(result)["lines"]]
    return "\n".join(parts)


def _paired(
    rows: list[dict[str, Any]], a: str, b: str, *, keys: Sequence[str], dtype: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    index: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r["method"] == b and (r["dtype"] == dtype or r["method"] in _REFERENCE):
            index[tuple(r[k] for k in keys)] = r
    return [
        (r, index[k])
        for r in rows
        if r["method"] == a and r["dtype"] == dtype
        if (k := tuple(r[x] for x in keys)) in index
    ]


def _compare(pairs: list[tuple[dict[str, Any], dict[str, Any]]], column: str, better: str) -> tuple[float, float, int]:
    """Win rate of the first member, median of (first − second), count."""
    diffs = np.array([float(x[column]) - float(y[column]) for x, y in pairs])
    diffs = diffs[np.isfinite(diffs)]
    if not diffs.size:
        return math.nan, math.nan, 0
    wins = (diffs < 0) if better == "low" else (diffs > 0)
    return float(wins.mean()), float(np.median(diffs)), int(diffs.size)


_KEYS = ("stream", "seed", "rank", "decay", "damping_mode", "damping")


def _headline_qng(final: list[dict[str, Any]], main: str, values: dict[str, Any]) -> list[str]:
    lines = []
    for mode, metrics, text in (
        ("equal", METRICS, "Ginger vs QNG, equal memory τ and equal damping α^τ"),
        ("fixed", (METRICS[0], METRICS[4], METRICS[5]), "Ginger (γ) vs QNG (its own α^τ), against (γI + M)⁻¹"),
    ):
        pairs = _paired(_select(final, damping_mode=mode), "ginger", "qng", keys=_KEYS, dtype=main)
        parts = []
        for col, label, better in metrics:
            win, med, n = _compare(pairs, col, better)
            values[f"ginger_vs_qng_{mode}_{col}"] = {"win_rate": win, "median_difference": med, "n": n}
            parts.append(f"{label} {_pct(win)} (median Δ {med:+.3g})")
        lines.append(f"{text} ({len(pairs)} settings): Ginger better in " + ", ".join(parts))
    return lines


def _ratios(pairs: Iterable[tuple[Any, Any]]) -> np.ndarray:
    """Return ``a / b`` for each pair, NaN where ``b`` is 0 or either is not finite (float64)."""
    ab = np.array([(float(a), float(b)) for a, b in pairs], dtype=np.float64).reshape(-1, 2)
    ok = np.isfinite(ab).all(axis=1) & (ab[:, 1] != 0)
    return np.divide(ab[:, 0], ab[:, 1], out=np.full(ab.shape[0], np.nan), where=ok)


def _quantile(x: np.ndarray, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.quantile(x, q)) if x.size else math.nan


def _headline_oracle(final: list[dict[str, Any]], main: str, values: dict[str, Any]) -> list[str]:
    pairs = _paired(final, "ginger", "oracle", keys=_KEYS, dtype=main)
    # A ratio to the oracle is defined only where the oracle's error is positive: it is exactly 0 while
    # M_t has rank ≤ τ (t ≤ τ steps), where every rank-τ method can be exact too.
    ratio = _ratios([(g["inv_spectral_error"], o["inv_spectral_error"]) for g, o in pairs])
    cos_gap = np.array([float(o["cosine"]) - float(g["cosine"]) for g, o in pairs])
    cap = _ratios([(g["captured_share"], o["captured_share"]) for g, o in pairs])
    overlap = np.array([float(g["subspace_overlap"]) for g, _ in pairs])
    v = values["ginger_vs_oracle"] = {
        "inv_error_ratio_median": _quantile(ratio, 0.5),
        "inv_error_ratio_p90": _quantile(ratio, 0.9),
        "inv_error_ratio_n": int(np.isfinite(ratio).sum()),
        "cosine_gap_median": _quantile(cos_gap, 0.5),
        "captured_ratio_median": _quantile(cap, 0.5),
        "overlap_median": _quantile(overlap, 0.5),
        "n": len(pairs),
    }
    where = (
        ""
        if v["inv_error_ratio_n"] == len(pairs)
        else f" over the {v['inv_error_ratio_n']} settings where the oracle's error is positive"
    )
    return [
        (
            f"Ginger vs the oracle (best rank τ of the exact EMA, same damping; {len(pairs)} settings): inverse error "
            f"ratio{where} median {v['inv_error_ratio_median']:.3f} "
            f"(90th percentile {v['inv_error_ratio_p90']:.3f}), cosine "
            f"gap median {v['cosine_gap_median']:.2g}, captured curvature {v['captured_ratio_median']:.3f} of the "
            f"oracle's, subspace overlap (mean cos² of principal angles) median {v['overlap_median']:.3f}"
        )
    ]


def _headline_precision(final: list[dict[str, Any]], dtypes: tuple[str, ...], values: dict[str, Any]) -> list[str]:
    other = [d for d in dtypes if d != "float64"]
    if "float64" not in dtypes or not other:
        return []
    low = other[0]
    fixed = _select(final, damping_mode="fixed")

    def stat(method: str, dtype: str, column: str, q: float) -> float:
        return _quantile(_finite(r[column] for r in _select(fixed, method=method, dtype=dtype)), q)

    p = values["precision"] = {
        "sm_low_max": stat("ginger-sm", low, "dev_from_ginger64", 1.0),
        "sm_low_median": stat("ginger-sm", low, "dev_from_ginger64", 0.5),
        "sm_low_sigma_max": stat("ginger-sm", low, "sigma_relerr", 1.0),
        "eigen_low_max": stat("ginger", low, "dev_from_ginger64", 1.0),
        "eigen_low_median": stat("ginger", low, "dev_from_ginger64", 0.5),
        "eigen_low_sigma_max": stat("ginger", low, "sigma_relerr", 1.0),
        "sm_float64_max": stat("ginger-sm", "float64", "dev_from_ginger64", 1.0),
        "dtype": low,
    }
    return [
        (
            f"Sherman–Morrison path in {low}: distance of G̃⁻¹ from float64 eigen-path Ginger up to "
            f"{p['sm_low_max']:.2e} relative (median {p['sm_low_median']:.2e}; σ up to {p['sm_low_sigma_max']:.2e}); "
            f"eigen path in {low}: up to {p['eigen_low_max']:.2e} (median {p['eigen_low_median']:.2e}; "
            f"σ up to {p['eigen_low_sigma_max']:.2e}); "
            f"Sherman–Morrison path in float64: up to {p['sm_float64_max']:.2e}"
        )
    ]


def _headline_tail(
    final: list[dict[str, Any]], main: str, values: dict[str, Any], variants: Sequence[str]
) -> list[str]:
    lines = []
    columns = (("inv_spectral_error", "low"), ("cosine", "high"), ("decrease_fraction", "high"))
    for variant in variants:
        summary: dict[str, Any] = {}
        for mode in ("fixed", "equal"):
            rows = _select(final, damping_mode=mode)
            for ref in ("ginger", "oracle"):
                pairs = _paired(rows, variant, ref, keys=_KEYS, dtype=main)
                for col, better in columns:
                    win, med, n = _compare(pairs, col, better)
                    summary[f"{mode}_{ref}_{col}"] = {"win_rate": win, "median_difference": med, "n": n}
        values[variant] = summary

        def say(mode: str, ref: str, summary: dict[str, Any] = summary) -> str:
            parts = [
                f"{label} {_pct(summary[f'{mode}_{ref}_{col}']['win_rate'])} "
                f"(median Δ {summary[f'{mode}_{ref}_{col}']['median_difference']:+.3g})"
                for (col, _), label in zip(columns, ("inv err", "cos", "decrease"), strict=True)
            ]
            return ", ".join(parts)

        lines.append(
            f"{variant}, fixed γ: better than ginger in {say('fixed', 'ginger')}; better than the oracle in "
            f"{say('fixed', 'oracle')}. Equal damping: better than ginger in {say('equal', 'ginger')}"
        )
    return lines


def headline(result: StudyResult) -> dict[str, Any]:
    """Compute the headline answers, as numbers (``values``) and sentences (``lines``).

    Over every setting of the grid at the final step, in the main dtype:
    Ginger against QNG (equal damping and fixed damping), Ginger against the
    oracle, the precision of the Sherman–Morrison path and of the eigen path
    in the low dtype against float64, and the tail-aware variants against
    Ginger and against the oracle. Win rates count the settings where the
    first method is better; "median Δ" is the median of (first − second).

    Parameters
    ----------
    result : StudyResult
        The study.

    Returns
    -------
    dict
        ``{"values": dict, "lines": list of str}``. ``values`` maps
        ``ginger_vs_qng_{equal,fixed}_<metric>`` to
        ``{"win_rate", "median_difference", "n"}``; ``ginger_vs_oracle`` to
        quantiles of the inverse-error ratio, the cosine gap, the captured
        share and the subspace overlap; ``precision`` to the float32 and
        Sherman–Morrison deviations (absent with one dtype);
        ``ginger-tail`` and ``ginger-fd`` to their win rates against
        ``ginger`` and the oracle. ``lines`` are the same answers as sentences.
        An answer about a method the study did not record
        (``StudyConfig.methods``) is left out of both.
    """
    c = result.config
    final = _final(result)
    values: dict[str, Any] = {}
    chosen = set(c.methods)
    lines = []
    if {"ginger", "qng"} <= chosen:
        lines += _headline_qng(final, c.main_dtype, values)
    if {"ginger", "oracle"} <= chosen:
        lines += _headline_oracle(final, c.main_dtype, values)
    if chosen & {"ginger", "ginger-sm"}:
        lines += _headline_precision(final, c.dtypes, values)
    variants = tuple(v for v in ("ginger-tail", "ginger-fd") if v in chosen and chosen & {"ginger", "oracle"})
    lines += _headline_tail(final, c.main_dtype, values, variants)
    return {"values": values, "lines": lines}


# ------------------------------------------------------------------ at both scales

_SCALE_COLUMNS = (
    ("inv_spectral_error", "inv err", "low"),
    ("cosine", "cos", "high"),
    ("decrease_fraction", "decrease", "high"),
)


def _scale(row: dict[str, Any]) -> str:
    """``small`` (dense reference), ``large`` (matrix-free, whole model) or ``blocks`` (matrix-free, per array)."""
    if int(row["dim"]) <= DENSE_LIMIT:
        return "small"
    spec = LARGE_STREAMS.get(row["stream"])
    return "blocks" if spec is not None and spec.per_tensor else "large"


def _scale_label(final: list[dict[str, Any]], scale: str) -> str:
    dims = sorted({int(r["dim"]) for r in final if _scale(r) == scale})
    if not dims:
        return scale
    span = f"{dims[0]:,}" if len(dims) == 1 else f"{dims[0]:,}–{dims[-1]:,}"
    return f"d = {span}" + (" per array" if scale == "blocks" else "")


def _equal_memory_pairs(
    final: list[dict[str, Any]], method: str, main: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair each fixed-γ row of ``method`` with the Ginger row of closest memory (same stream, seed, α, γ)."""
    keys = ("stream", "seed", "decay", "damping")
    ginger: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in final:
        if r["method"] == "ginger" and r["dtype"] == main and r["damping_mode"] == "fixed":
            ginger.setdefault(tuple(r[k] for k in keys), []).append(r)
    pairs = []
    for r in final:
        if r["method"] != method or r["damping_mode"] != "fixed":
            continue
        if r["dtype"] != main and method not in _REFERENCE:
            continue
        mem = float(r["memory_floats"])
        candidates = ginger.get(tuple(r[k] for k in keys))
        if not candidates or not mem > 0:
            continue
        best = min(candidates, key=lambda g: abs(math.log(float(g["memory_floats"]) / mem)))
        pairs.append((best, r))
    return pairs


def _compared_methods(final: list[dict[str, Any]], main: str) -> list[str]:
    present = {r["method"] for r in final if r["dtype"] == main or r["method"] in _REFERENCE}
    order = [m for m in TABLE_METHODS if m not in {"exact", "ginger"}]
    order += sorted(m for m in present if m not in TABLE_METHODS)
    return [m for m in order if m in present]


def scale_headline(result: StudyResult) -> dict[str, Any]:  # noqa: C901 - flat loops over the tables
    """Compute Ginger against every method at equal memory and at equal damping, at each scale.

    The scales: ``small`` (d ≤ ``DENSE_LIMIT``, dense reference), ``large``
    (matrix-free, the whole model one block) and ``blocks`` (matrix-free, one
    block per parameter array).

    *Equal damping*: the ``equal`` rows (γ = α^τ for both and for the
    reference), paired on stream, seed, τ, α. *Equal memory*: every
    ``fixed``-damping row of the method, paired with the Ginger row (same
    stream, seed, α, γ) whose ``memory_floats`` is the closest. Final step,
    main dtype, every setting of the grid. Also the ρ certificates' tightness
    and the time per step of each method, by scale.

    Parameters
    ----------
    result : StudyResult
        The study.

    Returns
    -------
    dict
        ``comparisons``: ``{(comparison, method, scale): {column: {"win_rate", "median_difference", "n"},
        "memory_ratio": median Ginger / method floats}}``; ``certificates``:
        ``{(method, scale): {"n", "median", "max", "violations"}}``; ``timing``:
        ``{(method, scale): {"memory_floats", "time_per_step_s", "time_vs_diag"}}``; ``labels``: scale → text;
        ``verdict``: list of sentences.
    """
    c = result.config
    main = c.main_dtype
    final = _final(result)
    scales = [s for s in ("small", "large", "blocks") if any(_scale(r) == s for r in final)]
    comparisons: dict[tuple[str, str, str], dict[str, Any]] = {}
    for method in _compared_methods(final, main):
        equal = _paired(_select(final, damping_mode="equal"), "ginger", method, keys=_KEYS, dtype=main)
        for comparison, pairs in (("equal damping", equal), ("equal memory", _equal_memory_pairs(final, method, main))):
            for scale in scales:
                mine = [(g, m) for g, m in pairs if _scale(g) == scale]
                if not mine:
                    continue
                entry: dict[str, Any] = {}
                for col, _, better in _SCALE_COLUMNS:
                    win, med, n = _compare(mine, col, better)
                    entry[col] = {"win_rate": win, "median_difference": med, "n": n}
                entry["memory_ratio"] = _quantile(
                    _ratios((g["memory_floats"], m["memory_floats"]) for g, m in mine), 0.5
                )
                comparisons[comparison, method, scale] = entry
    certificates = {}
    for method in sorted({r["method"] for r in final if _finite([r["certificate_tightness"]]).size}):
        for scale in scales:
            t = _finite(r["certificate_tightness"] for r in final if r["method"] == method and _scale(r) == scale)
            if t.size:
                certificates[method, scale] = {
                    "n": int(t.size),
                    "median": float(np.median(t)),
                    "max": float(t.max()),
                    "violations": int((t > 1 + 1e-6).sum()),
                }
    timing = {}
    for method in ["ginger", *_compared_methods(final, main)]:
        for scale in scales:
            sel = [
                r
                for r in final
                if r["method"] == method
                and _scale(r) == scale
                and (r["dtype"] == main or method in _REFERENCE)
                and r["damping_mode"] == "fixed"
                and r["damping"] == c.damping
                and r["decay"] == c.decay
                and r["rank"] in ("", c.rank)
            ]
            if sel:
                timing[method, scale] = {
                    "memory_floats": _quantile(_finite(r["memory_floats"] for r in sel), 0.5),
                    "time_per_step_s": _quantile(_finite(r["time_per_step_s"] for r in sel), 0.5),
                    "time_vs_diag": _quantile(_finite(r["time_vs_diag"] for r in sel), 0.5),
                }
    labels = {s: _scale_label(final, s) for s in scales}
    out = {"comparisons": comparisons, "certificates": certificates, "timing": timing, "labels": labels}
    out["verdict"] = _verdict(out, scales)
    return out


def _claim_status(entry: dict[str, Any] | None) -> str | None:
    if entry is None:
        return None
    wins = [entry[col]["win_rate"] for col, _, _ in _SCALE_COLUMNS if entry[col]["n"]]
    if not wins:
        return None
    if all(w >= 0.5 for w in wins):
        return "holds"
    if all(w < 0.5 for w in wins):
        return "does not hold"
    return "holds only in part"


def _verdict(h: dict[str, Any], scales: list[str]) -> list[str]:  # noqa: C901 - one sentence per case
    """Plain-language sentences on the paper's claim (Ginger's low-rank part beats QNG's), per scale."""
    lines = []
    for scale in scales:
        label = h["labels"][scale]
        parts = []
        for comparison in ("equal damping", "equal memory"):
            entry = h["comparisons"].get((comparison, "qng", scale))
            status = _claim_status(entry)
            if status is None:
                continue
            wins = ", ".join(
                f"{lab} {_pct(entry[col]['win_rate'])}" for col, lab, _ in _SCALE_COLUMNS if entry[col]["n"]
            )
            parts.append(f"at {comparison} the claim {status} (Ginger better than QNG in {wins} of the settings)")
        oracle = h["comparisons"].get(("equal damping", "oracle", scale))
        if oracle is not None and oracle["inv_spectral_error"]["n"]:
            gap = oracle["inv_spectral_error"]["median_difference"]
            parts.append(f"Ginger's inverse error exceeds the oracle's by {gap:+.3g} in the median")
        others = []
        for method in ("frequent-directions", "nystrom", "ginger-diagonal", "diag", "identity"):
            entry = h["comparisons"].get(("equal memory", method, scale))
            status = _claim_status(entry)
            if status is not None:
                word = {"holds": "better than", "does not hold": "worse than", "holds only in part": "mixed against"}
                others.append(f"{word[status]} {method}")
        if others:
            parts.append("at equal memory Ginger is " + ", ".join(others))
        if parts:
            lines.append(f"{label}: " + "; ".join(parts) + ".")
    status = {
        scale: _claim_status(h["comparisons"].get(("equal damping", "qng", scale)))
        for scale in scales
        if h["comparisons"].get(("equal damping", "qng", scale)) is not None
    }
    if status:
        held = [h["labels"][sc] for sc, st in status.items() if st == "holds"]
        if len(held) == len(status):
            overall = "holds at every scale of this study"
        elif held:
            overall = "holds at " + ", ".join(held) + " but not everywhere: read the tables before relying on it"
        else:
            overall = "does not hold in this study"
        lines.insert(
            0,
            "In plain words: the paper's claim that Ginger's rank-τ part beats QNG's at the same form "
            f"(damping α^τ, rank τ) {overall}.",
        )
    return lines


def scale_markdown(result: StudyResult) -> str:  # noqa: C901 - flat loops over the tables
    """Return the headline at both scales as markdown: verdict, comparison tables, certificates, run times.

    Parameters
    ----------
    result : StudyResult
        The study.

    Returns
    -------
    str
        Markdown (the body of ``headline.md``, embedded in ``report.md``).
    """
    h = scale_headline(result)
    scales = list(h["labels"])
    lines = ["**Verdict.** " + (" ".join(h["verdict"]) if h["verdict"] else "no Ginger–QNG pairs in this study."), ""]
    lines += [
        (
            "Each cell: the share of settings where Ginger is better than the method, and the median of "
            "(Ginger − method) in parentheses; final step, every setting of the grid, "
            f"{result.config.main_dtype}. Equal damping: γ = α^τ for both and for the reference, same τ. Equal "
            "memory: fixed γ, the method against the Ginger rank whose state has the closest number of floats "
            "(`memory_floats`; ratio Ginger / method in the column *mem*)."
        ),
        "",
    ]
    header = ["comparison", "method"]
    for scale in scales:
        header += [f"{h['labels'][scale]}: {lab}" for _, lab, _ in _SCALE_COLUMNS] + ["mem", "n"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for comparison in ("equal memory", "equal damping"):
        methods = sorted({m for (cmp, m, _) in h["comparisons"] if cmp == comparison}, key=_order)
        for method in methods:
            cells = [comparison, method]
            for scale in scales:
                entry = h["comparisons"].get((comparison, method, scale))
                if entry is None:
                    cells += ["–"] * (len(_SCALE_COLUMNS) + 2)
                    continue
                for col, _, _ in _SCALE_COLUMNS:
                    e = entry[col]
                    cells.append(f"{_pct(e['win_rate'])} ({e['median_difference']:+.2g})" if e["n"] else "–")
                cells += [f"{entry['memory_ratio']:.3g}", str(entry[_SCALE_COLUMNS[0][0]]["n"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "**ρ certificates** (‖G̃ − G‖₂ ≤ ρ, ρ = `discarded`): tightness = true ‖G̃ − G‖₂ / ρ.", ""]
    lines += [
        "| method | scale | n | median tightness | max tightness | violations (> 1) |",
        "|---|---|---|---|---|---|",
    ]
    for (method, scale), v in sorted(
        h["certificates"].items(), key=lambda kv: (_order(kv[0][0]), scales.index(kv[0][1]))
    ):
        lines.append(
            f"| {method} | {h['labels'][scale]} | {v['n']} | {v['median']:.3g} | {v['max']:.3g} | {v['violations']} |"
        )
    c = result.config
    lines += [
        "",
        (
            f"**Memory and time per step** (τ = {c.rank}, γ = {c.damping:g}, α = {c.decay}, median over streams "
            "and seeds"
            + (f"; the study took {result.seconds:.0f} s in all)." if math.isfinite(result.seconds) else ").")
        ),
        "",
    ]
    header = ["method"]
    for scale in scales:
        header += [f"{h['labels'][scale]}: floats", "ms / step", "× diag"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for method in sorted({m for m, _ in h["timing"]}, key=_order):
        cells = [method]
        for scale in scales:
            t = h["timing"].get((method, scale))
            if t is None:
                cells += ["–"] * 3
                continue
            cells += [
                f"{t['memory_floats']:,.0f}" if math.isfinite(t["memory_floats"]) else "–",
                f"{1e3 * t['time_per_step_s']:.3g}" if math.isfinite(t["time_per_step_s"]) else "–",
                f"{t['time_vs_diag']:.3g}" if math.isfinite(t["time_vs_diag"]) else "–",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.0f}%"


# ---------------------------------------------------------------- plots

_STYLE = {
    "oracle": ("black", "-"),
    "oracle-tail": ("gray", "--"),
    "ginger": ("tab:blue", "-"),
    "ginger-tail": ("tab:cyan", "--"),
    "ginger-fd": ("tab:purple", ":"),
    "ginger-sm": ("tab:green", "-."),
    "qng": ("tab:red", "-"),
    "diag": ("tab:orange", "-"),
    "identity": ("tab:brown", ":"),
    "frequent-directions": ("tab:olive", "-"),
    "nystrom": ("tab:pink", "-"),
    "ginger-diagonal": ("navy", "--"),
}


def _series(rows: list[dict[str, Any]], x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    groups: dict[float, list[float]] = {}
    for r in rows:
        val = float(r[y])
        if np.isfinite(val):
            groups.setdefault(float(r[x]), []).append(val)
    xs = np.array(sorted(groups))
    mean = np.array([np.mean(groups[k]) for k in xs])
    std = np.array([np.std(groups[k]) for k in xs])
    return xs, mean, std


def _plot_lines(ax: Any, rows: list[dict[str, Any]], x: str, y: str, methods: Sequence[str]) -> None:
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        xs, mean, std = _series(sel, x, y)
        if not xs.size:
            continue
        color, ls = _STYLE.get(method, ("k", "-"))
        ax.plot(xs, mean, ls, color=color, label=method, marker="o" if xs.size < 8 else None, ms=3)
        ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)


_PLOT_METRICS = (
    ("inv_spectral_error", "rel. spectral error of G̃⁻¹"),
    ("cosine", "cos(G̃⁻¹g, G⁻¹g)"),
    ("decrease_fraction", "fraction of optimal decrease"),
    ("captured_share", "captured curvature share"),
)


_PLOT_METHODS = ("oracle", "oracle-tail", "ginger", "ginger-tail", "ginger-fd", "qng", "diag", "identity")


def _plot_methods(result: StudyResult) -> tuple[str, ...]:
    """Return the plotted methods: the fixed list and every method of the protocol the study ran."""
    extra = tuple(m for m in result.config.methods if m not in METHODS or m in PROTOCOL_METHODS)
    return (*_PLOT_METHODS, *(m for m in extra if m not in _PLOT_METHODS))


def _robust_limits(values: np.ndarray, column: str) -> tuple[float, float] | None:
    """Y-limits from the 5th and 95th percentiles, widened by a fifth (and by 1 of the data's natural range).

    One method's outliers (a decrease fraction of −10⁴ when a step overshoots) no longer stretch the axis:
    the curves outside the limits are clipped by the axes. The natural bounds of a metric (cosine ≤ 1,
    decrease fraction ≤ 1, errors ≥ 0) are kept in view.
    """
    if values.size < 2:
        return None
    lo, hi = np.quantile(values, 0.05), np.quantile(values, 0.95)
    if column in {"cosine", "decrease_fraction", "captured_share", "subspace_overlap"}:
        hi = max(hi, 1.0)
    if column.endswith("error") or column in {"captured_share", "subspace_overlap"}:
        lo = min(lo, 0.0)
    pad = 0.2 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1.0)
    return float(lo - pad), float(hi + pad)


def _in_main(row: dict[str, Any], main: str) -> bool:
    return row["dtype"] == main or row["method"] in _REFERENCE


def _metric_grid(
    plt: Any, result: StudyResult, rows: list[dict[str, Any]], *, x: str, title: str, path: Path, logx: bool
) -> Path:
    """One figure: a row per metric, a column per stream, a line per method (mean ± std over seeds)."""
    c = result.config
    nrow, ncol = len(_PLOT_METRICS), len(c.stream_names)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(3.4 * ncol, 9.0), 2.6 * nrow), squeeze=False)
    fig.suptitle(title + "; mean ± std over seeds", fontsize=10)
    for j, stream in enumerate(c.stream_names):
        mine = [r for r in rows if r["stream"] == stream]
        axes[0, j].set_title(stream, fontsize=9)
        axes[-1, j].set_xlabel({"rank": "τ", "damping": "γ", "decay": "α"}.get(x, x))
        for i, (col, label) in enumerate(_PLOT_METRICS):
            ax = axes[i, j]
            _plot_lines(ax, mine, x, col, _plot_methods(result))
            if logx:
                ax.set_xscale("log")
            if x == "rank":  # tick τ at the ranks used
                ranks = sorted({int(r["rank"]) for r in mine if r["rank"] != ""})
                if ranks:
                    ax.set_xticks(ranks)
                    ax.set_xticklabels([str(r) for r in ranks])
                    ax.minorticks_off()
            values = _finite(r[col] for r in mine if r["method"] in _plot_methods(result))
            limits = _robust_limits(values, col)
            if limits is not None:
                ax.set_ylim(*limits)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(visible=True, alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_study(result: StudyResult, out_dir: str | Path) -> list[Path]:
    """Write the PNG figures (matplotlib, Agg backend) and return their paths.

    ``timeseries_equal.png``, ``timeseries_fixed.png`` (the default setting
    over training), ``sweep_rank.png``, ``sweep_damping.png``,
    ``sweep_decay.png`` (final step over the grid), ``precision.png`` (float32
    and the Sherman–Morrison path against float64 Ginger) and ``spectra.png``
    (eigenvalues of the exact EMA). The metric figures have a row per metric
    and a column per stream, with the mean ± standard deviation over seeds.

    Parameters
    ----------
    result : StudyResult
        The study.
    out_dir : str or pathlib.Path
        An existing directory; files of the same names are overwritten.

    Returns
    -------
    list of pathlib.Path
        The seven files, in the order above.
    """
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    c = result.config
    rows = [r for r in result.rows if _in_main(r, c.main_dtype)]
    last = {name: c.steps_of(name) for name in c.stream_names}
    final = [r for r in rows if r["step"] == last.get(r["stream"], c.steps)]
    default = f"τ = {c.rank}, α = {c.decay}"
    figures = (
        (
            "timeseries_equal.png",
            "step",
            f"Over training, equal damping γ = α^min(τ,t) ({default})",
            [r for r in rows if r["damping_mode"] == "equal" and r["decay"] == c.decay and r["rank"] == c.rank],
            False,
        ),
        (
            "timeseries_fixed.png",
            "step",
            f"Over training, fixed damping γ = {c.damping:g} ({default})",
            [
                r
                for r in rows
                if r["damping_mode"] == "fixed"
                and r["decay"] == c.decay
                and r["damping"] == c.damping
                and r["rank"] in ("", c.rank)
            ],
            False,
        ),
        (
            "sweep_rank.png",
            "rank",
            f"Final step, equal damping α^τ, α = {c.decay}",
            [r for r in final if r["damping_mode"] == "equal" and r["decay"] == c.decay],
            True,
        ),
        (
            "sweep_damping.png",
            "damping",
            f"Final step, fixed damping γ ({default})",
            [r for r in final if r["damping_mode"] == "fixed" and r["decay"] == c.decay and r["rank"] in ("", c.rank)],
            True,
        ),
        (
            "sweep_decay.png",
            "decay",
            f"Final step, equal damping α^τ, τ = {c.rank}",
            [r for r in final if r["damping_mode"] == "equal" and r["rank"] == c.rank],
            False,
        ),
    )
    paths = [
        _metric_grid(plt, result, sel, x=x, title=title, path=out / name, logx=logx)
        for name, x, title, sel, logx in figures
    ]
    paths.append(_plot_precision(result, out, plt))
    paths.append(_plot_spectra(result, out, plt))
    return paths


def _plot_precision(result: StudyResult, out: Path, plt: Any) -> Path:
    c = result.config
    fixed = [r for r in _final(result) if r["damping_mode"] == "fixed" and r["decay"] == c.decay]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    variants = [("ginger", d) for d in c.dtypes] + [("ginger-sm", d) for d in c.dtypes]
    styles = {"float64": "-", "float32": "--"}
    for ax, x, keep, xlabel in (
        (axes[0], "damping", lambda r: r["rank"] == c.rank, "γ"),
        (axes[1], "rank", lambda r: r["damping"] == c.damping, "τ"),
    ):
        for method, dtype in variants:
            sel = [r for r in fixed if r["method"] == method and r["dtype"] == dtype and keep(r)]
            xs, mean, _ = _series(sel, x, "dev_from_ginger64")
            if xs.size:
                color = _STYLE[method][0]
                ax.plot(
                    xs,
                    np.maximum(mean, 1e-17),
                    styles.get(dtype, ":"),
                    color=color,
                    marker="o",
                    ms=3,
                    label=f"{method} {dtype}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(visible=True, alpha=0.3)
    axes[0].set_ylabel("‖G̃⁻¹ − G̃⁻¹(Ginger, float64)‖ / ‖·‖")
    axes[0].set_title(f"vs damping (τ = {c.rank}, α = {c.decay})", fontsize=9)
    axes[1].set_title(f"vs rank (γ = {c.damping:g}, α = {c.decay})", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.suptitle("Precision: the same algorithm in other paths and dtypes (mean over streams and seeds)", fontsize=10)
    fig.tight_layout()
    path = out / "precision.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_spectra(result: StudyResult, out: Path, plt: Any) -> Path:
    c = result.config
    names = c.stream_names
    fig, axes = plt.subplots(1, len(names), figsize=(max(3.4 * len(names), 6.0), 3.0), squeeze=False)
    for j, stream in enumerate(c.stream_names):
        ax = axes[0, j]
        for decay in c.decays:
            sel = [
                s for s in result.spectra if s["stream"] == stream and s["decay"] == decay and s["seed"] == c.seeds[0]
            ]
            lam = np.array([s["eigval"] for s in sel])
            if lam.size:
                ax.loglog(np.arange(1, lam.size + 1), np.maximum(lam / lam.sum(), 1e-18), label=f"α = {decay}")
        for rank in c.ranks:
            ax.axvline(rank + 1, color="gray", lw=0.5, alpha=0.5)
        ax.set_title(stream, fontsize=9)
        ax.set_xlabel("i (grey: τ + 1 for τ in the sweep)")
        ax.set_ylim(1e-12, 1)
        ax.grid(visible=True, alpha=0.3)
    axes[0, 0].set_ylabel("λ_i / tr M (final step)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "spectra.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- markdown

_METHOD_DOC = """\
- `exact`: γI + M_t, M_t = α M_{t−1} + (1−α) d_t d_tᵀ (Eq 7); the reference, NumPy float64, d² memory.
- `oracle`: γI + the best rank-τ approximation of M_t (Eckart–Young); no method of the form γI + rank τ
  does better at damping γ.
- `oracle-tail`: (γ + c*)I + the best rank τ, c* = Σ_{i>τ} λ_i / (d − τ) (trace-matched tail).
- `ginger`: γI + U diag(σ) Uᵀ, eigen path (Brand's rank-one update and truncation); dτ memory.
- `ginger-tail`: (γ + ρ/(d − τ))I + U diag(σ) Uᵀ, ρ = `GingerState.discarded`, the curvature dropped by
  truncation (tail-aware, trace-matched: the isotropic completion closest in Frobenius norm).
- `ginger-fd`: (γ + ρ)I + U diag(σ) Uᵀ (the frequent-directions bound: G̃ ⪰ γI + M, no overshoot).
- `ginger-sm`: as `ginger`, updated by the paper's Sherman–Morrison path (Eq 17, corrected) at damping γ.
- `qng`: ÂÂᵀ = α^k I + rank k, k = min(τ, t) (QNG with the corrected β); its damping α^k is implicit.
- `diag`: γI + diag(v_t), v_t the EMA of d ⊙ d (the diagonal Fisher, Adam's second moment); d memory.
- `identity`: (γ + m_t)I, m_t the EMA of ‖d‖²/d = tr(M_t)/d.
"""

_METRIC_DOC = """\
- `inv_spectral_error`: ‖G̃⁻¹ − G⁻¹‖₂ / ‖G⁻¹‖₂; for the oracle (and M singular, as M_t is for t < d) it is
  λ_{τ+1}/(γ + λ_{τ+1}), the `eckart_young_bound` column.
- `curv_spectral_error`: ‖G̃ − G‖₂ / ‖G‖₂.
- `angle_max_deg`, `subspace_overlap`: the largest principal angle between the top-τ eigenspaces of M and of
  G̃'s low-rank part, and the mean squared cosine of all of them (the largest angle is large whenever
  λ_τ ≈ λ_{τ+1}, where the top-τ subspace itself is ill-determined).
- `cosine`: cos(G̃⁻¹g, G⁻¹g), mean over the last gradients g of the training trajectory.
- `decrease_fraction`: [gᵀG̃⁻¹g − ½ gᵀG̃⁻¹GG̃⁻¹g] / [½ gᵀG⁻¹g], the share of the optimal decrease of the
  quadratic model reached by the step −G̃⁻¹g (1 is optimal; negative: the step goes uphill).
- `captured_share`: tr(QᵀMQ)/tr M for the method's top-τ subspace Q.
- `represented_share`: trace of the method's undamped low-rank part over tr M (Ginger: Σσ / tr M).
- `trace_gap`: |Σσ + ρ − tr M| / tr M, the identity tr M_t = Σσ + `discarded`.
- `dev_from_ginger64`, `sigma_relerr`: the distance of G̃⁻¹ (and of σ) from float64 eigen-path Ginger with the
  same setting.
- `time_per_step_s`, `time_vs_diag`: wall time of one update + precondition, and its ratio to the diagonal
  EMA's step measured in the same run (both include the per-call overhead of the backend).
"""


def markdown_report(result: StudyResult, figures: Sequence[Path] = ()) -> str:
    """Return the markdown report: setup, the paper's claim, summary tables, headline, figures, definitions.

    Parameters
    ----------
    result : StudyResult
        The study.
    figures : sequence of pathlib.Path, default ()
        Figures to embed, linked by file name (so the report must sit in
        their directory).

    Returns
    -------
    str
        The report, in GitHub-flavoured markdown.
    """
    c = result.config
    h = headline(result)
    cfg = {f.name: getattr(c, f.name) for f in fields(c)}  # not asdict: that would copy a user stream's data
    if c.methods == METHODS:
        del cfg["methods"]
    streams = []
    if c.streams:
        streams.append(
            f"- Streams: {', '.join(c.streams)}. `digits-*`: scikit-learn's digits (shipped with scikit-learn), "
            "softmax regression (d = 650) or a 64-16-10 tanh MLP (d = 1210), trained with Adam (lr 1e-2, batch 32); "
            "the curvature vector is the sampled-label gradient of Eq 8, d_t = |B|^{-1/2} Σ ∇log p(ŷ|x), ŷ ~ p_θ(·|x). "
            "`power`/`step`: synthetic streams with E[d dᵀ] = Q diag(s) Qᵀ, s_i = i^{-1.5} or a step at 16 (d = 500)."
        )
    if c.user_streams:
        streams.append(
            "- User streams: "
            + ", ".join(f"`{u.name}` (T = {u.length}, d = {u.dim})" for u in c.user_streams)
            + f"; step t folds in d_t = x_t, the t-th vector, and preconditions g_t = x_(t mod T)+1, the next one; "
            f"run once, with seed {c.seeds[0]}."
        )
    lines = [
        "# lowrank_ggn approximation-error study",
        "",
        (
            "How well do rank-τ curvature approximations track the exact EMA of the Fisher (Eq 7) along real "
            "training trajectories? Every number below is computed by this run; `study.csv` has them all "
            "(one row per method × setting × step)."
        ),
        "",
        "## Setup",
        "",
        *streams,
        (
            f"- {c.steps} steps, seeds {list(c.seeds)}, ranks τ ∈ {list(c.ranks)}, decays α ∈ {list(c.decays)}, "
            f"dampings γ ∈ {list(c.dampings)}, dtypes {list(c.dtypes)} on backend `{c.backend}`. Default setting "
            f"(time series): τ = {c.rank}, α = {c.decay}, γ = {c.damping:g}."
            + ("" if c.methods == METHODS else f" Methods recorded: {', '.join(c.methods)}.")
        ),
        (
            f"- Grid: in {c.main_dtype}, Ginger and QNG for every τ × α (every γ is a query of the same Ginger state); "
            "in the other dtype every τ at the default α; the Sherman–Morrison path for every γ at the default τ and "
            "every τ at the default γ. Exact references: NumPy float64."
        ),
        f"- Run time {result.seconds:.0f} s. Configuration: `{cfg}`.",
        "",
        "## Which comparison is the paper's claim about?",
        "",
        (
            "QNG's curvature is ÂÂᵀ = α^k I + (rank k, PSD), k = min(τ, t) (Observation 1, sharpened): its damping "
            "α^k is implicit and not a free parameter. The paper argues (Observation 1, §2.3) that Ginger keeps the "
            '*optimal* low-rank part where QNG does not, i.e. that at the same form "damping·I + rank τ" Ginger\'s '
            "subspace and eigenvalues are better. That is the **equal-damping** comparison (Ginger with γ = α^τ "
            "against the exact (α^τ I + M)⁻¹, same reference for QNG). The fixed-γ comparison (each method with its "
            "own damping, against (γI + M)⁻¹) mixes the quality of the low-rank part with the choice of damping, which "
            "dominates whenever γ ≠ α^τ; it is what a practitioner who tunes γ would see."
        ),
        "",
        "## Headline at both scales",
        "",
        scale_markdown(result),
        "## Headline (every stream)",
        "",
        *[f"- {line}" for line in h["lines"]],
        "",
        "## Summary tables (default setting, final step)",
        "",
    ]
    for mode in ("equal", "fixed"):
        lines += [_mode_title(result, mode), "", _table(result, mode, markdown=True), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in figures]
        lines.append("")
    lines += ["## Methods", "", _METHOD_DOC, "## Metrics", "", _METRIC_DOC]
    return "\n".join(lines)


_TEXT_COLUMNS = frozenset({"stream", "backend", "dtype", "method", "damping_mode"})


def read_study(out_dir: str | os.PathLike, config: Any = None, *, seconds: float = math.nan) -> StudyResult:
    """Read a study back from the ``study.csv`` and ``spectra.csv`` it wrote, to report on it again.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The study's output folder.
    config : StudyConfig, optional
        The configuration that produced it (default: ``StudyConfig()``, the
        ``lowrank-ggn study`` run); the reports take the grid and the last
        step of each stream from it.
    seconds : float, optional
        The run time to report (NaN: not known).

    Returns
    -------
    StudyResult
        The rows with the types :func:`run_study` gives them (``rank`` an int
        or ``""``, the other numbers floats, ``dim``, ``seed``, ``step`` ints).

    Raises
    ------
    ValueError
        If ``study.csv`` is missing or its header is not :data:`COLUMNS`.
    """
    from lowrank_ggn.studies._runner import StudyConfig

    folder = Path(out_dir)
    path = folder / "study.csv"
    if not path.is_file():
        msg = f"no study.csv in {str(folder)!r}"
        raise ValueError(msg)
    ints = {"dim", "seed", "step"}

    def convert(key: str, value: str) -> Any:
        if key in _TEXT_COLUMNS:
            return value
        if key == "rank":
            return int(value) if value else ""
        if key in ints:
            return int(value)
        return float(value) if value else math.nan

    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            msg = f"{str(path)!r} does not have the columns of this version's study.csv"
            raise ValueError(msg)
        rows = [{k: convert(k, v) for k, v in row.items()} for row in reader]
    spectra: list[dict[str, Any]] = []
    spectra_path = folder / "spectra.csv"
    if spectra_path.is_file():
        with spectra_path.open(newline="") as fh:
            spectra.extend(
                {
                    "stream": row["stream"],
                    "seed": int(row["seed"]),
                    "decay": float(row["decay"]),
                    "step": int(row["step"]),
                    "index": int(row["index"]),
                    "eigval": float(row["eigval"]),
                }
                for row in csv.DictReader(fh)
            )
    return StudyResult(StudyConfig() if config is None else config, rows, spectra, seconds)


def write_outputs(result: StudyResult, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``study.csv``, ``spectra.csv``, the figures, ``headline.md``, ``report.md`` and ``summary.txt``.

    Parameters
    ----------
    result : StudyResult
        The study.
    out_dir : str or pathlib.Path
        The output directory, created if needed; existing files of the same
        names are overwritten (``study.csv`` and ``spectra.csv`` by a rename,
        so that the rows streamed there by ``run_study(out_dir=...)`` are
        never lost half way).
    plots : bool, default True
        Write the figures (:func:`plot_study`); the report then embeds them.

    Returns
    -------
    dict of str to pathlib.Path
        The written files, by kind: ``"csv"``, ``"spectra"``,
        ``"figure <name>"`` for each figure, ``"headline"`` (``headline.md``: :func:`scale_markdown`),
        ``"report"``, ``"summary"``.

    Raises
    ------
    ValueError
        If ``out_dir`` cannot be created or written to (checked by ``prepare_output_dir``).
    """
    out = prepare_output_dir(out_dir)
    paths = {
        "csv": write_csv(result.rows, out / "study.csv"),
        "spectra": write_csv(result.spectra, out / "spectra.csv", SPECTRA_COLUMNS),
    }
    figures = plot_study(result, out) if plots else []
    for fig in figures:
        paths[f"figure {fig.stem}"] = fig
    headline_md = out / "headline.md"
    headline_md.write_text(scale_markdown(result))
    paths["headline"] = headline_md
    report = out / "report.md"
    report.write_text(markdown_report(result, figures))
    paths["report"] = report
    summary = out / "summary.txt"
    summary.write_text(summary_table(result) + "\n")
    paths["summary"] = summary
    return paths
