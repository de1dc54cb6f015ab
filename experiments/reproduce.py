"""Reproduce the paper's image-classification experiments (§4.1, §4.3) at small scale on CPU.

One command regenerates every number, table and plot::

    python -m experiments.reproduce --out results/reproduction          # full (~30–45 min on 2 cores)
    python -m experiments.reproduce --out /tmp/repro-quick --quick      # smoke run (a few minutes)

Stages (each cached in ``<out>/cache`` so an interrupted run resumes):

1. ``damping`` — Ginger (τ=4) with γ ∈ {1e-3, 1e-2, 1e-1, 1}, learning rate
   tuned for each γ, on the digits MLP and CNN: how the default damping was chosen.
2. ``tune`` — for Momentum, Adam, QNG (τ=4) and Ginger (τ=4), every learning
   rate of {1, 5} × 10^{−1…−4} with every seed; the rate with the best mean
   accuracy on the tuning split is fixed for all variants of the optimiser
   (as in §4.1: "after tuning, we fix the learning rate for each optimizer
   across all variations of it").
3. ``main`` — QNG (τ ∈ {1, 2, 4, 8}) and Ginger (τ ∈ {1, 2, 4, 8, 16}) at the
   tuned rates (Table 1).
4. ``sensitivity`` — Ginger on the digits models with α ∈ {0.9, 0.99, 0.999}
   × τ ∈ {2, 4, 8} (Tables 3–4).
5. ``cost`` — time per step, peak memory and FLOPs of one training step
   (forward, backward, sampled-label gradient where used, optimiser) relative
   to Adam, measured in one process with interleaved rounds.

Outputs in ``<out>``: ``runs.csv`` (one row per run and seed), ``table1.csv``,
``sensitivity.csv``, ``damping.csv``, ``tuning.csv``, ``costs.csv``,
``results.md`` (the tables, mean ± std over seeds) and ``*.png`` plots.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Settings", "main"]

LR_GRID = (5e-1, 1e-1, 5e-2, 1e-2, 5e-3, 1e-3, 5e-4, 1e-4)
REFERENCE_RANK = 4
STAGES = ("damping", "tune", "main", "sensitivity", "cost")


@dataclass
class Settings:
    """Sizes of the experiment; ``--quick`` shrinks every axis."""

    combos: tuple[tuple[str, str], ...] = (("digits", "mlp"), ("digits", "cnn"), ("cancer", "mlp"))
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: dict[str, int] = field(default_factory=lambda: {"digits": 25, "cancer": 30})
    batch_size: dict[str, int] = field(default_factory=lambda: {"digits": 64, "cancer": 32})
    lr_grid: tuple[float, ...] = LR_GRID
    qng_ranks: tuple[int, ...] = (1, 2, 4, 8)
    ginger_ranks: tuple[int, ...] = (1, 2, 4, 8, 16)
    sens_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    sens_ranks: tuple[int, ...] = (2, 4, 8)
    sens_combos: tuple[tuple[str, str], ...] = (("digits", "mlp"), ("digits", "cnn"))
    dampings: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    damping_combos: tuple[tuple[str, str], ...] = (("digits", "mlp"), ("digits", "cnn"))
    damping_seeds: tuple[int, ...] = (0,)
    cost_rounds: int = 11

    @classmethod
    def quick(cls) -> Settings:
        """Return a smoke-test configuration that exercises every stage in a few minutes."""
        return cls(
            combos=(("digits", "mlp"), ("digits", "cnn"), ("cancer", "mlp")),
            seeds=(0, 1),
            epochs={"digits": 2, "cancer": 2},
            lr_grid=(1e-1, 1e-2, 1e-3),
            qng_ranks=(1, 4),
            ginger_ranks=(1, 4),
            sens_decays=(0.9, 0.99),
            sens_ranks=(2, 4),
            sens_combos=(("digits", "mlp"),),
            dampings=(1e-2, 1.0),
            damping_combos=(("digits", "mlp"),),
            damping_seeds=(0,),
            cost_rounds=2,
        )


# ------------------------------------------------------------------------------------------------
# running with a cache


class Runner:
    """Runs :func:`experiments.train.train_many` jobs, caching each result as an ``.npz`` file."""

    def __init__(self, out: Path, settings: Settings) -> None:
        self.cache = out / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self._datasets: dict[str, Any] = {}

    def dataset(self, name: str) -> Any:
        from experiments.data import load

        if name not in self._datasets:
            self._datasets[name] = load(name)
        return self._datasets[name]

    def key(self, **kw: Any) -> str:
        blob = json.dumps({**kw, "version": 1}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def train(
        self, dataset: str, model: str, spec: Any, lrs: list[float], seeds: list[int], decays: list[float]
    ) -> dict[str, np.ndarray]:
        from experiments.train import train_many

        epochs, batch = self.settings.epochs[dataset], self.settings.batch_size[dataset]
        key = self.key(
            dataset=dataset, model=model, spec=asdict(spec), lrs=lrs, seeds=seeds, decays=decays, epochs=epochs, b=batch
        )
        path = self.cache / f"{key}.npz"
        if path.exists():
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        t0 = time.perf_counter()
        out = train_many(
            self.dataset(dataset),
            model,
            spec,
            np.asarray(lrs),
            np.asarray(seeds),
            decays=np.asarray(decays),
            epochs=epochs,
            batch_size=batch,
        )
        out["wall_seconds"] = np.asarray(time.perf_counter() - t0)
        np.savez(path, **out)
        return out


def _summarise(out: dict[str, np.ndarray], i: int) -> dict[str, float]:
    """Table-1 metrics of run ``i``: best validation accuracy, its loss, min training loss."""
    val_acc, val_loss = out["val_acc"][i], out["val_loss"][i]
    best = int(np.argmax(val_acc))
    tune_acc = out["tune_acc"][i]
    return {
        "best_val_acc": float(val_acc[best]),
        "val_loss_at_best": float(val_loss[best]),
        "best_epoch": best + 1,
        "min_train_loss": float(out["min_train_loss"][i]),
        "best_tune_acc": float(np.max(tune_acc)),
        "final_val_acc": float(val_acc[-1]),
        "diverged": bool(not np.isfinite(val_loss[-1])),
    }


# ------------------------------------------------------------------------------------------------
# stages


def _jobs(settings: Settings) -> list[tuple[str, Callable[[Runner, dict[str, Any]], None]]]:
    from experiments.train import OptSpec

    jobs: list[tuple[str, Callable[[Runner, dict[str, Any]], None]]] = []
    seeds = list(settings.seeds)
    grid = list(settings.lr_grid)

    def grid_runs(spec: OptSpec, dataset: str, model: str, stage: str, run_seeds: list[int]) -> Callable:
        def job(runner: Runner, acc: dict[str, Any]) -> None:
            lrs = [lr for lr in grid for _ in run_seeds]
            ss = [s for _ in grid for s in run_seeds]
            out = runner.train(dataset, model, spec, lrs, ss, [0.99] * len(lrs))
            for i, (lr, s) in enumerate(zip(lrs, ss, strict=True)):
                row = {"stage": stage, "dataset": dataset, "model": model, "optimizer": spec.name}
                row.update(family=spec.family, rank=spec.rank, decay=0.99, damping=spec.damping, lr=lr, seed=s)
                row.update(_summarise(out, i))
                acc["rows"].append(row)
            acc["curves"][(stage, dataset, model, spec.name, spec.damping)] = out

        return job

    # 1. damping study (Ginger τ = 4)
    for dataset, model in settings.damping_combos:
        for gamma in settings.dampings:
            spec = OptSpec("ginger", REFERENCE_RANK, damping=gamma)
            job = grid_runs(spec, dataset, model, "damping", list(settings.damping_seeds))
            jobs.append((f"damping {dataset}-{model} γ={gamma:g}", job))

    # 2. tuning
    ref = {
        "momentum": OptSpec("momentum"),
        "adam": OptSpec("adam"),
        "qng": OptSpec("qng", REFERENCE_RANK),
        "ginger": OptSpec("ginger", REFERENCE_RANK),
    }
    jobs += [
        (f"tune {dataset}-{model} {spec.name}", grid_runs(spec, dataset, model, "tune", seeds))
        for dataset, model in settings.combos
        for spec in ref.values()
    ]

    def tuned_lr(acc: dict[str, Any], dataset: str, model: str, family: str) -> float:
        rows = [r for r in acc["rows"] if r["stage"] == "tune" and r["dataset"] == dataset and r["model"] == model]
        rows = [r for r in rows if r["family"] == family]
        scores = {}
        for lr in grid:
            sel = [r for r in rows if r["lr"] == lr]
            scores[lr] = (np.mean([r["best_tune_acc"] for r in sel]), -np.mean([r["min_train_loss"] for r in sel]))
        return max(grid, key=lambda lr: scores[lr])

    # 3. main table: the other ranks at the tuned learning rate
    def fixed_runs(spec: OptSpec, dataset: str, model: str, stage: str, decays: list[float]) -> Callable:
        def job(runner: Runner, acc: dict[str, Any]) -> None:
            lr = tuned_lr(acc, dataset, model, spec.family)
            lrs = [lr for _ in decays for _ in seeds]
            ss = [s for _ in decays for s in seeds]
            ds_ = [a for a in decays for _ in seeds]
            out = runner.train(dataset, model, spec, lrs, ss, ds_)
            for i, (s, a) in enumerate(zip(ss, ds_, strict=True)):
                row = {"stage": stage, "dataset": dataset, "model": model, "optimizer": spec.name}
                row.update(family=spec.family, rank=spec.rank, decay=a, damping=spec.damping, lr=lr, seed=s)
                row.update(_summarise(out, i))
                acc["rows"].append(row)
            acc["curves"][(stage, dataset, model, spec.name, tuple(decays))] = out

        return job

    for dataset, model in settings.combos:
        for r in settings.qng_ranks:
            if r != REFERENCE_RANK:
                spec = OptSpec("qng", r)
                jobs.append((f"main {dataset}-{model} {spec.name}", fixed_runs(spec, dataset, model, "main", [0.99])))
        for r in settings.ginger_ranks:
            if r != REFERENCE_RANK:
                spec = OptSpec("ginger", r)
                jobs.append((f"main {dataset}-{model} {spec.name}", fixed_runs(spec, dataset, model, "main", [0.99])))

    # 4. sensitivity grid
    for dataset, model in settings.sens_combos:
        for r in settings.sens_ranks:
            spec = OptSpec("ginger", r)
            decays = list(settings.sens_decays)
            jobs.append(
                (f"sensitivity {dataset}-{model} τ={r}", fixed_runs(spec, dataset, model, "sensitivity", decays))
            )

    # 5. costs
    def cost_job(dataset: str, model: str) -> Callable:
        def job(runner: Runner, acc: dict[str, Any]) -> None:
            from experiments.train import measure_step_costs

            specs = [OptSpec("momentum"), OptSpec("adam")]
            specs += [OptSpec("qng", r) for r in settings.qng_ranks]
            specs += [OptSpec("ginger", r) for r in settings.ginger_ranks]
            key = runner.key(stage="cost", dataset=dataset, model=model, specs=[asdict(s) for s in specs])
            path = runner.cache / f"{key}.json"
            if path.exists():
                costs = json.loads(path.read_text())
            else:
                res = measure_step_costs(
                    runner.dataset(dataset),
                    model,
                    specs,
                    batch_size=runner.settings.batch_size[dataset],
                    rounds=runner.settings.cost_rounds,
                )
                costs = {k: asdict(v) for k, v in res.items()}
                path.write_text(json.dumps(costs))
            for name, c in costs.items():
                acc["costs"].append({"dataset": dataset, "model": model, "optimizer": name, **c})

        return job

    for dataset, model in settings.combos:
        jobs.append((f"cost {dataset}-{model}", cost_job(dataset, model)))
    return jobs


# ------------------------------------------------------------------------------------------------
# reporting


def _ms(values: list[float], fmt: str = "{:.2f}") -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "–"
    if not np.all(np.isfinite(v)):
        return (
            "diverged"
            if not np.any(np.isfinite(v))
            else fmt.format(np.nanmean(np.where(np.isfinite(v), v, np.nan))) + " (some diverged)"
        )
    if v.size == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))}"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _order(name: str) -> tuple[int, int]:
    fam = ["Momentum", "Adam", "QNG", "Ginger"]
    base = name.split(" ", maxsplit=1)[0]
    rank = int(name.split("τ=")[1].rstrip(")")) if "τ=" in name else 0
    return fam.index(base), rank


def _main_rows(rows: list[dict[str, Any]], dataset: str, model: str) -> dict[str, list[dict[str, Any]]]:
    """Per optimiser, the seeds at the tuned learning rate (tune stage for the reference, main otherwise)."""
    out: dict[str, list[dict[str, Any]]] = {}
    combo = [r for r in rows if r["dataset"] == dataset and r["model"] == model]
    tuned = {}
    for r in combo:
        if r["stage"] == "main":
            tuned[r["family"]] = r["lr"]
    for r in combo:
        if r["stage"] == "main":
            out.setdefault(r["optimizer"], []).append(r)
    # reference configurations: their rows at the chosen learning rate
    for fam in ("momentum", "adam", "qng", "ginger"):
        tune_rows = [r for r in combo if r["stage"] == "tune" and r["family"] == fam]
        if not tune_rows:
            continue
        lr = tuned.get(fam, _best_lr(tune_rows))
        sel = [r for r in tune_rows if r["lr"] == lr]
        out[sel[0]["optimizer"]] = sel
    return dict(sorted(out.items(), key=lambda kv: _order(kv[0])))


def _best_lr(tune_rows: list[dict[str, Any]]) -> float:
    lrs = sorted({r["lr"] for r in tune_rows})

    def score(lr: float) -> tuple[float, float]:
        sel = [r for r in tune_rows if r["lr"] == lr]
        return float(np.mean([r["best_tune_acc"] for r in sel])), -float(np.mean([r["min_train_loss"] for r in sel]))

    return max(lrs, key=score)


def _report(out: Path, acc: dict[str, Any], settings: Settings, elapsed: float, command: str | None = None) -> None:
    """Write the CSV files, ``results.md`` and the plots; ``command`` is the command line that ran the study."""
    rows, costs = acc["rows"], acc["costs"]
    _write_csv(out / "runs.csv", rows)
    _write_csv(out / "costs.csv", costs)
    command = command or f"python -m experiments.reproduce --out {out}"
    rates = ", ".join(f"{lr:g}" for lr in settings.lr_grid)
    md = ["# Small-scale reproduction of the paper's image-classification experiments", ""]
    md += [
        (
            f"Generated by `{command}` "
            f"(this invocation: {elapsed / 60:.1f} min; jobs found in the cache are not rerun) "
            f"({len(settings.seeds)} seeds: {', '.join(map(str, settings.seeds))}; "
            f"epochs {settings.epochs}; batch sizes {settings.batch_size}). "
            "Entries are mean ± sample standard deviation over seeds. Acc: best validation accuracy (%) over epochs; "
            "L_val: validation loss at that epoch; L_train: minimum training loss over sampled batches; "
            "time, memory and FLOPs of one training step relative to Adam. "
            f"Learning rates tuned on the tuning split over {{{rates}}}"
            + (" (the full grid)." if tuple(settings.lr_grid) == LR_GRID else " (a reduced grid, not the full one).")
        ),
        "",
    ]
    table_rows = []
    for dataset, model in settings.combos:
        main = _main_rows(rows, dataset, model)
        cost = {c["optimizer"]: c for c in costs if c["dataset"] == dataset and c["model"] == model}
        adam = cost.get("Adam")
        md += [f"## Table 1 — {dataset}, {model.upper()}", ""]
        md += [
            "| optimiser | lr | Acc ↑ | L_val | L_train | time/step | peak mem | FLOPs |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, rs in main.items():
            c = cost.get(name)
            rel = {k: f"{c[k] / adam[k]:.2f}×" if (c and adam) else "–" for k in ("seconds", "peak_bytes", "flops")}
            accs = [100 * r["best_val_acc"] for r in rs]
            val_loss = _ms([r["val_loss_at_best"] for r in rs], "{:.3f}")
            train_loss = _ms([r["min_train_loss"] for r in rs], "{:.2e}")
            md.append(
                f"| {name} | {rs[0]['lr']:g} | {_ms(accs)} | {val_loss} | {train_loss} | "
                f"{rel['seconds']} | {rel['peak_bytes']} | {rel['flops']} |"
            )
            table_rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "optimizer": name,
                    "lr": rs[0]["lr"],
                    "seeds": len(rs),
                    "acc_mean": float(np.mean(accs)),
                    "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                    "val_loss_mean": float(np.mean([r["val_loss_at_best"] for r in rs])),
                    "val_loss_std": float(np.std([r["val_loss_at_best"] for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
                    "min_train_loss_mean": float(np.mean([r["min_train_loss"] for r in rs])),
                    "min_train_loss_std": float(np.std([r["min_train_loss"] for r in rs], ddof=1))
                    if len(rs) > 1
                    else 0.0,
                    "time_rel_adam": c["seconds"] / adam["seconds"] if (c and adam) else math.nan,
                    "mem_rel_adam": c["peak_bytes"] / adam["peak_bytes"] if (c and adam) else math.nan,
                    "flops_rel_adam": c["flops"] / adam["flops"] if (c and adam) else math.nan,
                }
            )
        md.append("")
    _write_csv(out / "table1.csv", table_rows)

    # tuning
    tune_rows = []
    for dataset, model in settings.combos:
        for fam in ("momentum", "adam", "qng", "ginger"):
            sel = [
                r
                for r in rows
                if r["stage"] == "tune" and r["dataset"] == dataset and r["model"] == model and r["family"] == fam
            ]
            for lr in settings.lr_grid:
                s = [r for r in sel if r["lr"] == lr]
                if s:
                    tune_rows.append(
                        {
                            "dataset": dataset,
                            "model": model,
                            "optimizer": s[0]["optimizer"],
                            "lr": lr,
                            "tune_acc_mean": float(np.mean([r["best_tune_acc"] for r in s])),
                            "chosen": lr == _best_lr(sel),
                        }
                    )
    _write_csv(out / "tuning.csv", tune_rows)

    # sensitivity
    sens_rows = []
    for dataset, model in settings.sens_combos:
        sel = [r for r in rows if r["stage"] == "sensitivity" and r["dataset"] == dataset and r["model"] == model]
        if not sel:
            continue
        for metric, title, fmt, scale in (
            ("best_val_acc", "validation accuracy (%)", "{:.2f}", 100.0),
            ("min_train_loss", "minimum training loss", "{:.2e}", 1.0),
        ):
            number = 3 if metric == "best_val_acc" else 4
            md += [
                f"## Table {number} — Ginger sensitivity, {dataset}, {model.upper()}: {title}",
                "",
            ]
            md += ["| α \\ τ | " + " | ".join(str(r) for r in settings.sens_ranks) + " |"]
            md += ["|---|" + "---|" * len(settings.sens_ranks)]
            for a in settings.sens_decays:
                cells = []
                for r in settings.sens_ranks:
                    vals = [scale * x[metric] for x in sel if x["rank"] == r and x["decay"] == a]
                    cells.append(_ms(vals, fmt))
                    if metric == "best_val_acc":
                        tl = [x["min_train_loss"] for x in sel if x["rank"] == r and x["decay"] == a]
                        sens_rows.append(
                            {
                                "dataset": dataset,
                                "model": model,
                                "decay": a,
                                "rank": r,
                                "acc_mean": float(np.mean(vals)),
                                "acc_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                                "min_train_loss_mean": float(np.mean(tl)),
                                "min_train_loss_std": float(np.std(tl, ddof=1)) if len(tl) > 1 else 0.0,
                            }
                        )
                md.append(f"| {a:g} | " + " | ".join(cells) + " |")
            md.append("")
    _write_csv(out / "sensitivity.csv", sens_rows)

    # damping study
    damp_rows = []
    md += ["## Damping study — Ginger (τ=4), learning rate tuned for each γ", ""]
    md += ["| data | model | γ | tuned lr | tuning Acc | validation Acc |", "|---|---|---|---|---|---|"]
    for dataset, model in settings.damping_combos:
        for gamma in settings.dampings:
            sel = [
                r
                for r in rows
                if r["stage"] == "damping" and r["dataset"] == dataset and r["model"] == model and r["damping"] == gamma
            ]
            if not sel:
                continue
            lr = _best_lr(sel)
            s = [r for r in sel if r["lr"] == lr]
            ta = [100 * r["best_tune_acc"] for r in s]
            va = [100 * r["best_val_acc"] for r in s]
            md.append(f"| {dataset} | {model} | {gamma:g} | {lr:g} | {_ms(ta)} | {_ms(va)} |")
            damp_rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "damping": gamma,
                    "lr": lr,
                    "tune_acc_mean": float(np.mean(ta)),
                    "val_acc_mean": float(np.mean(va)),
                }
            )
    md.append("")
    _write_csv(out / "damping.csv", damp_rows)
    (out / "results.md").write_text("\n".join(md) + "\n")
    _plots(out, acc, settings, rows)


def _plots(out: Path, acc: dict[str, Any], settings: Settings, rows: list[dict[str, Any]]) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    # validation-accuracy curves at the tuned learning rates
    fig, axes = plt.subplots(1, len(settings.combos), figsize=(5 * len(settings.combos), 4), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], settings.combos, strict=True):
        main = _main_rows(rows, dataset, model)
        for name, rs in main.items():
            lr = rs[0]["lr"]
            curve = None
            for (stage, ds_, mo, nm, _), o in acc["curves"].items():
                if ds_ == dataset and mo == model and nm == name and stage in ("tune", "main"):
                    idx = list(range(o["val_acc"].shape[0]))
                    if stage == "tune":
                        n_seeds = len(settings.seeds)
                        li = list(settings.lr_grid).index(lr)
                        idx = list(range(li * n_seeds, (li + 1) * n_seeds))
                    curve = o["val_acc"][idx].mean(0)
            if curve is not None:
                style = "-" if name.startswith("Ginger") else ("--" if name.startswith("QNG") else ":")
                ax.plot(np.arange(1, len(curve) + 1), 100 * curve, style, label=name)
        ax.set_title(f"{dataset}, {model.upper()}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    # learning-rate tuning
    fig, axes = plt.subplots(1, len(settings.combos), figsize=(5 * len(settings.combos), 4), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], settings.combos, strict=True):
        for fam in ("momentum", "adam", "qng", "ginger"):
            sel = [
                r
                for r in rows
                if r["stage"] == "tune" and r["dataset"] == dataset and r["model"] == model and r["family"] == fam
            ]
            if not sel:
                continue
            lrs = sorted(settings.lr_grid)
            ys = [100 * np.mean([r["best_tune_acc"] for r in sel if r["lr"] == lr]) for lr in lrs]
            ax.semilogx(lrs, ys, "o-", label=sel[0]["optimizer"])
        ax.set_title(f"{dataset}, {model.upper()}: learning-rate tuning")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("best tuning-split accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "tuning.png", dpi=120)
    plt.close(fig)

    # sensitivity heatmaps
    combos = [
        c
        for c in settings.sens_combos
        if any(r["stage"] == "sensitivity" and (r["dataset"], r["model"]) == c for r in rows)
    ]
    if combos:
        fig, axes = plt.subplots(1, len(combos), figsize=(4.5 * len(combos), 3.5), squeeze=False)
        for ax, (dataset, model) in zip(axes[0], combos, strict=True):
            grid = np.array(
                [
                    [
                        100
                        * np.mean(
                            [
                                r["best_val_acc"]
                                for r in rows
                                if r["stage"] == "sensitivity"
                                and (r["dataset"], r["model"]) == (dataset, model)
                                and r["rank"] == t
                                and r["decay"] == a
                            ]
                        )
                        for t in settings.sens_ranks
                    ]
                    for a in settings.sens_decays
                ]
            )
            im = ax.imshow(grid, cmap="viridis")
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
            ax.set_xticks(range(len(settings.sens_ranks)), [str(t) for t in settings.sens_ranks])
            ax.set_yticks(range(len(settings.sens_decays)), [f"{a:g}" for a in settings.sens_decays])
            ax.set_xlabel("τ")
            ax.set_ylabel("α")
            ax.set_title(f"Ginger, {dataset} {model.upper()}: val. acc. (%)")
            fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(out / "sensitivity.png", dpi=120)
        plt.close(fig)


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    from lowrank_ggn.cli import positive_int

    parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/reproduction"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer epochs, seeds, ranks and rates")
    parser.add_argument("--seeds", type=positive_int, default=None, help="number of seeds (default 3; 2 with --quick)")
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (main and sensitivity imply tune)",
    )
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw_argv)

    settings = Settings.quick() if args.quick else Settings()
    if args.seeds is not None:
        settings.seeds = tuple(range(args.seeds))
    os.environ.setdefault("XLA_FLAGS", "")
    import jax
    from tqdm import tqdm

    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "lowrank_ggn" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, settings)
    acc: dict[str, Any] = {"rows": [], "curves": {}, "costs": []}
    jobs = _jobs(settings)
    stages = {x.strip() for x in args.stages.split(",") if x.strip()}
    unknown = stages - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    if stages & {"main", "sensitivity"}:
        stages.add("tune")
    jobs = [(label, fn) for label, fn in jobs if label.split(" ")[0] in stages]
    t0 = time.perf_counter()
    with tqdm(jobs, desc="reproduction", unit="job", file=sys.stderr, dynamic_ncols=True) as bar:
        for label, fn in bar:
            bar.set_postfix_str(label)
            fn(runner, acc)
    command = " ".join(["python -m experiments.reproduce", *(shlex.quote(a) for a in raw_argv)])
    _report(out, acc, settings, time.perf_counter() - t0, command)
    print(f"wrote {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
