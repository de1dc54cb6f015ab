"""Turn benchmark results (``bench.py`` CSVs, before and after) into tables, plots and a docs page.

Usage (from the repository root)::

    python benchmarks/report.py RESULTS.csv [MORE.csv ...] --out docs/benchmarks_results --page docs/benchmarks.md

Rows are keyed by (label, backend, dtype, d, τ, op); later files override
earlier ones. Writes ``<out>/results.csv`` (merged), ``<out>/tables.md`` and
PNG figures into ``<out>``, and the results page ``docs/benchmarks.md``
(``--page``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# The operations shown in the tables, in order, with the column titles.
OPS = {
    "ginger.update": "update",
    "ginger.query": "query",
    "ginger.update+query": "update, then query",
    "ginger.fused": "fused",
    "ginger.fused.donated": "fused, donated",
    "product.fused": "product",
    "product.fused.donated": "product, donated",
    "ginger.fused.near.donated": "fused, donated, d near span U",
    "product.fused.near.donated": "product, donated, d near span U",
    "qng.update+query": "QNG update+query",
    "rotate.gemm": "U·R alone (GEMM)",
    "rotate.flop-floor": "flops of U·R at peak (modelled)",
}
BEST_AFTER = ("ginger.fused.donated", "product.fused.donated")


def _read(paths: list[Path], *, first_wins: bool = False) -> list[dict[str, Any]]:
    """Rows of all files; a (label, backend, dtype, d, τ, op) measured twice keeps the later file's row.

    ``first_wins``: the earlier file's row instead (a later run that repeated some
    operations only as same-run references then adds just its new ones).
    """
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for path in paths:
        with path.open() as f:
            for row in csv.DictReader(f):
                key = (row["label"], row["backend"], row["dtype"], row["dim"], row["rank"], row["op"])
                if not (first_wins and key in rows):
                    rows[key] = row
    return list(rows.values())


def _num(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _index(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(r["label"], r["backend"], r["dtype"], int(r["dim"]), int(r["rank"]), r["op"]): r for r in rows}


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    seen = []
    for r in rows:
        key = (r["backend"], r["dtype"])
        if key not in seen and r["op"] != "*":
            seen.append(key)
    order = {"numpy": 0, "jax": 1, "torch": 2, "cupy": 3}
    return sorted(seen, key=lambda k: (order.get(k[0], 9), k[1]))


def table_passes(rows: list[dict[str, Any]], label: str, field: str = "passes") -> str:
    """One markdown table per (backend, dtype): rows (d, τ), columns the ops."""
    idx = _index(rows)
    dims = sorted({int(r["dim"]) for r in rows if r["label"] == label and r["op"] != "*"})
    ranks = sorted({int(r["rank"]) for r in rows if r["label"] == label and r["op"] != "*"})
    out = []
    for backend, dtype in _groups([r for r in rows if r["label"] == label]):
        ops = [op for op in OPS if any(k[0] == label and k[1] == backend and k[5] == op for k in idx)]
        if not ops:
            continue
        out.append(f"**{backend}, {dtype}** ({label})\n")
        out.append("| d | τ | " + " | ".join(OPS[o] for o in ops) + " |")
        out.append("|---|---|" + "---|" * len(ops))
        for dim in dims:
            for rank in ranks:
                cells = []
                any_value = False
                for op in ops:
                    r = idx.get((label, backend, dtype, dim, rank, op))
                    x = None if r is None else _num(r.get(field, ""))
                    any_value |= x is not None
                    skipped = r is not None and x is None and r.get("note", "").startswith("skipped")
                    cells.append("skipped" if skipped else _fmt(x))
                if any_value:
                    out.append(f"| {dim:.0e} | {rank} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def table_before_after(rows: list[dict[str, Any]], before: str, after: str) -> str:
    """Update + query: the paper-style two calls before, the best variant after (passes, ×Adam, peak)."""
    idx = _index(rows)
    out = [
        (
            "| backend | dtype | d | τ | before: passes | ×Adam | peak/U | after: passes | ×Adam | peak/U | variant "
            "| U·R alone (GEMM) | flops of U·R at peak |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(k[1], k[2], k[3], k[4]) for k in idx if k[0] == after},
        key=lambda k: ({"numpy": 0, "jax": 1, "torch": 2}.get(k[0], 9), k[1], k[2], k[3]),
    )
    for backend, dtype, dim, rank in keys:
        b = idx.get((before, backend, dtype, dim, rank, "ginger.update+query"))
        cands = [idx.get((after, backend, dtype, dim, rank, op)) for op in BEST_AFTER]
        cands = [c for c in cands if c is not None and _num(c["passes"]) is not None]
        if not cands:
            continue
        best = min(cands, key=lambda r: float(r["passes"]))
        b_passes = None if b is None else _num(b["passes"])
        refs = [idx.get((after, backend, dtype, dim, rank, op)) for op in ("rotate.gemm", "rotate.flop-floor")]
        ref_cells = " | ".join(_fmt(None if r is None else _num(r["passes"])) for r in refs)
        out.append(
            f"| {backend} | {dtype} | {dim:.0e} | {rank} | {_fmt(b_passes)} | "
            f"{_fmt(None if b is None else _num(b['adam_ratio']))} | "
            f"{_fmt(None if b is None else _num(b['peak_rel']), 2)} | {_fmt(_num(best['passes']))} | "
            f"{_fmt(_num(best['adam_ratio']))} | {_fmt(_num(best['peak_rel']), 2)} | {OPS[best['op']]} | "
            f"{ref_cells} |"
        )
    return "\n".join(out) + "\n"


def exponents(rows: list[dict[str, Any]], label: str, min_dim: int = 100_000) -> dict[tuple[str, ...], float]:
    """Least-squares slope of log(time) against log(d) for d ≥ min_dim (time linear in d: slope 1)."""
    series: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        t = _num(r.get("seconds", ""))
        if r["label"] != label or t is None or int(r["dim"]) < min_dim or r["op"] == "rotate.flop-floor":
            continue
        series[r["backend"], r["dtype"], r["rank"], r["op"]].append((math.log(int(r["dim"])), math.log(t)))
    slopes = {}
    for key, pts in series.items():
        if len({p[0] for p in pts}) < 2:
            continue
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        sxx = sum((p[0] - mx) ** 2 for p in pts)
        slopes[key] = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return slopes


def table_exponents(rows: list[dict[str, Any]], label: str) -> str:
    slopes = exponents(rows, label)
    ops = [op for op in OPS if any(k[3] == op for k in slopes)]
    groups = sorted({k[:3] for k in slopes}, key=lambda k: (k[0], k[1], int(k[2])))
    out = ["| backend | dtype | τ | " + " | ".join(OPS[o] for o in ops) + " |", "|---|---|---|" + "---|" * len(ops)]
    for backend, dtype, rank in groups:
        cells = [_fmt(slopes.get((backend, dtype, rank, op)), 2) for op in ops]
        out.append(f"| {backend} | {dtype} | {rank} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plots(rows: list[dict[str, Any]], labels: list[str], out: Path) -> list[Path]:
    """Passes over U against d (one panel per backend/dtype, one line per op and τ); time against d."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    idx = _index(rows)
    for label in labels:
        groups = _groups([r for r in rows if r["label"] == label])
        if not groups:
            continue
        ranks = sorted({int(r["rank"]) for r in rows if r["label"] == label and r["op"] != "*"})
        fig, axes = plt.subplots(len(groups), len(ranks), figsize=(3.2 * len(ranks), 2.6 * len(groups)), squeeze=False)
        for i, (backend, dtype) in enumerate(groups):
            for j, rank in enumerate(ranks):
                ax = axes[i][j]
                for op, title in OPS.items():
                    pts = sorted(
                        (k[3], _num(r["passes"]))
                        for k, r in idx.items()
                        if k[:3] == (label, backend, dtype) and k[4] == rank and k[5] == op and _num(r["passes"])
                    )
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=title)
                ax.axhline(4, color="k", lw=0.6, ls="--")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_title(f"{backend} {dtype} τ={rank}", fontsize=8)
                ax.tick_params(labelsize=7)
                if j == 0:
                    ax.set_ylabel("passes over U", fontsize=8)
                if i == len(groups) - 1:
                    ax.set_xlabel("d", fontsize=8)
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="upper center", ncol=4, fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        path = out / f"passes_{label}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    if len(labels) >= 2:
        made.append(_plot_before_after(rows, labels[0], labels[-1], out, plt))
    return made


def _plot_before_after(rows: list[dict[str, Any]], before: str, after: str, out: Path, plt: Any) -> Path:
    idx = _index(rows)
    bars = []
    for k, r in idx.items():
        if k[0] != before or k[5] != "ginger.update+query" or _num(r["passes"]) is None:
            continue
        cands = [idx.get((after, *k[1:5], op)) for op in BEST_AFTER]
        cands = [c for c in cands if c is not None and _num(c["passes"]) is not None]
        if cands:
            best = min(float(c["passes"]) for c in cands)
            bars.append((f"{k[1]} {k[2][-2:]}\nd={k[3]:.0e} τ={k[4]}", float(r["passes"]), best))
    bars.sort()
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(bars)), 3.6))
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], width=0.4, label=before)
    ax.bar([x + 0.2 for x in xs], [b[2] for b in bars], width=0.4, label=after)
    ax.axhline(4, color="k", lw=0.6, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([b[0] for b in bars], fontsize=6, rotation=90)
    ax.set_ylabel("update + query: passes over U", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "before_after.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--before", default="before")
    p.add_argument("--after", default="after")
    p.add_argument("--page", type=Path, default=None, help="write the documentation page here")
    p.add_argument(
        "--first-wins", action="store_true", help="a case measured in several files keeps its first file's row"
    )
    args = p.parse_args()
    rows = _read(args.results, first_wins=args.first_wins)
    args.out.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys())
    with (args.out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(sorted(rows, key=lambda r: (r["label"], r["backend"], r["dtype"], int(r["dim"]), int(r["rank"]))))
    labels = [lab for lab in (args.before, args.after) if any(r["label"] == lab for r in rows)]
    parts = []
    if len(labels) == 2:
        parts += ["## Update + query, before and after\n", table_before_after(rows, *labels)]
    for label in labels:
        parts += [f"## Passes over U ({label})\n", table_passes(rows, label)]
        parts += [f"## Time relative to an Adam step ({label})\n", table_passes(rows, label, "adam_ratio")]
        parts += [f"## Peak memory beyond the inputs, relative to bytes(U) ({label})\n"]
        parts += [table_passes(rows, label, "peak_rel")]
        parts += [f"## Fitted exponent of time against d, d ≥ 1e5 ({label})\n", table_exponents(rows, label)]
    tables = "\n".join(parts)
    (args.out / "tables.md").write_text(tables)
    figures = plots(rows, labels, args.out)
    print(f"wrote {args.out / 'results.csv'}, {args.out / 'tables.md'} and {len(figures)} figures")
    if args.page is not None:
        from _page import page

        args.page.write_text(page(rows, tables, figures, args.page.parent))
        print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
