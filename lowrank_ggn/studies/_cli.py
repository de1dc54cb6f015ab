"""The ``lowrank-ggn study`` command."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["add_study_command"]


def _study(args: argparse.Namespace) -> int:
    from lowrank_ggn.studies._report import summary_table, write_outputs
    from lowrank_ggn.studies._runner import StudyConfig, run_study

    config = StudyConfig.quick() if args.quick else StudyConfig()
    changes: dict[str, Any] = {"backend": args.backend}
    if args.dtype != "both":
        changes["dtypes"] = (args.dtype,)
    if args.seed is not None:
        changes["seeds"] = tuple(args.seed + i for i in range(len(config.seeds)))
    if args.streams:
        changes["streams"] = tuple(args.streams)
    if args.steps is not None:
        changes["steps"] = args.steps
    config = replace(config, **changes)
    result = run_study(config, progress=not args.no_progress, jobs=args.jobs)
    paths = write_outputs(result, args.out, plots=not args.no_plots)
    print()
    print(summary_table(result))
    print()
    print(f"{len(result.rows)} rows in {result.seconds:.0f} s. Wrote to {Path(args.out).resolve()}:")
    for path in paths.values():
        print(f"  {path.name}")
    return 0


def add_study_command(sub: argparse._SubParsersAction) -> None:
    """Register ``study`` on the ``lowrank-ggn`` command line."""
    from lowrank_ggn.backends import BACKEND_NAMES
    from lowrank_ggn.studies._streams import STREAMS

    p = sub.add_parser(
        "study",
        help="approximation-error study of Ginger, QNG and baselines on real Fisher streams",
        description=(
            "Run Ginger (eigen and Sherman-Morrison paths), QNG, a diagonal EMA, a scaled identity, the oracle "
            "(best rank-tau approximation of the exact EMA) and tail-aware damping variants on sampled-label "
            "Fisher streams of models trained on scikit-learn's digits and on synthetic streams; compare them "
            "with the exact EMA (NumPy float64) over time and over a grid of rank, decay, damping, seeds and "
            "dtypes. Writes study.csv (every number), spectra.csv, PNG plots, report.md and summary.txt."
        ),
    )
    p.add_argument("--quick", action="store_true", help="a small study (under a minute)")
    p.add_argument("--out", default="lowrank-ggn-study", help="output directory (default: %(default)s)")
    p.add_argument("--backend", default="numpy", choices=BACKEND_NAMES, help="array backend of the methods")
    p.add_argument(
        "--dtype", default="both", choices=("float64", "float32", "both"), help="dtype(s) of the methods (default both)"
    )
    p.add_argument("--seed", type=int, default=None, help="first seed (the study uses consecutive seeds)")
    p.add_argument("--streams", nargs="+", choices=STREAMS, help="streams to run (default: all)")
    p.add_argument("--steps", type=int, default=None, help="steps per stream")
    p.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: %(default)s)"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_study)
