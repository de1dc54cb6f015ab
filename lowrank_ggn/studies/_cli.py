"""The ``lowrank-ggn study`` command.

Every argument is checked when the command line is parsed (argparse ``type``
functions) or right after (``_check_study``): a bad value, an unusable
backend, a stream file that is not a finite (T, d) float array, a grid the
streams cannot take or an output folder that cannot be written to is
argparse's one-line usage error (exit status 2), before any computation.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from lowrank_ggn.cli import comma_list, nonnegative_int, positive_float, positive_int, unit_interval

__all__ = ["add_study_command"]


def _stream_file(text: str) -> Any:
    """Parse ``--stream-file``: a validated, memory-mapped :class:`UserStream` (an argparse ``type``)."""
    from lowrank_ggn.studies._runner import UserStream

    try:
        return UserStream.from_file(text)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _method(text: str) -> str:
    from lowrank_ggn.studies._methods import METHODS

    if text not in METHODS:
        msg = f"unknown method {text!r}; choose from {', '.join(METHODS)}"
        raise argparse.ArgumentTypeError(msg)
    return text


def _nearest(values: tuple[float, ...], target: float, scale: Any) -> Any:
    """Return the value of ``values`` closest to ``target`` on the scale ``scale`` (the first one on a tie)."""
    return min(values, key=lambda v: abs(scale(v) - scale(target)))


def _large_changes(args: argparse.Namespace, config: Any, user: tuple[Any, ...]) -> dict[str, Any]:
    """Return the changes for the streams with d > ``DENSE_LIMIT``: their steps, and their ranks (``--ranks``)."""
    changes: dict[str, Any] = {}
    if args.large_steps is not None:
        changes["large_steps"] = args.large_steps
    elif user:
        changes["large_steps"] = min(config.large_steps, *(u.length for u in user))
    if args.ranks:
        changes["large_ranks"] = None
    return changes


def _config(args: argparse.Namespace) -> Any:
    """Return the :class:`StudyConfig` of the parsed arguments (not yet validated)."""
    from lowrank_ggn.studies._runner import StudyConfig

    config = StudyConfig.quick() if args.quick else StudyConfig()
    changes: dict[str, Any] = {"backend": args.backend}
    if args.dtype != "both":
        changes["dtypes"] = (args.dtype,)
    if args.seed is not None:
        changes["seeds"] = tuple(args.seed + i for i in range(len(config.seeds)))
    user = tuple(args.stream_file or ())
    if user:
        changes["user_streams"] = user
        changes["streams"] = tuple(args.streams or ())
    elif args.streams:
        changes["streams"] = tuple(args.streams)
    if args.steps is not None:
        changes["steps"] = args.steps
    elif user:
        changes["steps"] = min(config.steps, *(u.length for u in user))
    changes.update(_large_changes(args, config, user))
    # A chosen grid that leaves out the default setting moves it to the nearest value of the grid.
    for grid, default, scale in (
        ("ranks", "rank", math.log),
        ("decays", "decay", lambda a: math.log1p(-a)),
        ("dampings", "damping", math.log),
    ):
        values = getattr(args, grid)
        if values:
            changes[grid] = tuple(sorted(values))
            changes[default] = _nearest(changes[grid], getattr(config, default), scale)
    if args.methods:
        changes["methods"] = tuple(args.methods)
    return replace(config, **changes)


def _check_study(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Build and check the configuration, the backend and the output folder; usage errors otherwise."""
    from lowrank_ggn.backends import namespace_by_name
    from lowrank_ggn.studies._report import prepare_output_dir

    config = _config(args)
    try:
        config.validate()
    except ValueError as err:
        parser.error(str(err))
    try:
        namespace_by_name(config.backend, float64="float64" in config.dtypes)
    except ValueError as err:
        parser.error(f"argument --backend: {err}")
    try:
        prepare_output_dir(args.out)
    except ValueError as err:
        parser.error(f"argument --out: {err}")
    args.config = config


def _study(args: argparse.Namespace) -> int:
    from lowrank_ggn.studies._report import summary_table, write_outputs
    from lowrank_ggn.studies._runner import run_study

    out = Path(args.out)
    result = run_study(args.config, progress=not args.no_progress, jobs=args.jobs, out_dir=out)
    paths = write_outputs(result, out, plots=not args.no_plots)
    print()
    print(summary_table(result))
    print()
    print(f"{len(result.rows)} rows in {result.seconds:.0f} s. Wrote to {out.resolve()}:")
    for path in paths.values():
        print(f"  {path.name}")
    return 0


def add_study_command(sub: argparse._SubParsersAction) -> None:
    """Register ``study`` on the ``lowrank-ggn`` command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The sub-command registry of the ``lowrank-ggn`` parser.
    """
    from lowrank_ggn.backends import BACKEND_NAMES
    from lowrank_ggn.studies._methods import DENSE_LIMIT, METHODS
    from lowrank_ggn.studies._runner import StudyConfig
    from lowrank_ggn.studies._streams import LARGE_STREAMS, STREAMS

    default = StudyConfig()
    p = sub.add_parser(
        "study",
        help="approximation-error study of Ginger, QNG and baselines on real Fisher streams",
        description=(
            "Run Ginger (eigen and Sherman-Morrison paths), QNG, a diagonal EMA, a scaled identity, the oracle "
            "(best rank-tau approximation of the exact EMA) and tail-aware damping variants on sampled-label "
            "Fisher streams of models trained on scikit-learn's digits, on synthetic streams and on streams read "
            "from .npy files; compare them with the exact EMA (NumPy float64) over time and over a grid of rank, "
            "decay, damping, seeds and dtypes. Writes study.csv (every number; rows are appended as each stream "
            "and seed finishes), spectra.csv, PNG plots, report.md and summary.txt."
        ),
    )
    p.add_argument("--quick", action="store_true", help="a small study (under a minute)")
    p.add_argument(
        "--out",
        default="lowrank-ggn-study",
        help="output folder, created and checked for writing before the study starts (default: %(default)s)",
    )
    p.add_argument("--backend", default="numpy", choices=BACKEND_NAMES, help="array backend of the methods")
    p.add_argument(
        "--dtype", default="both", choices=("float64", "float32", "both"), help="dtype(s) of the methods (default both)"
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=None, help="first seed, >= 0 (the study uses consecutive seeds)"
    )
    p.add_argument(
        "--streams",
        nargs="+",
        choices=(*STREAMS, *LARGE_STREAMS),
        help=(
            f"built-in streams to run (default: {' '.join(default.streams)}; none with --stream-file). Streams "
            f"with d > {DENSE_LIMIT} ({', '.join(LARGE_STREAMS)}) are evaluated matrix-free, once, with "
            "--large-steps steps; '-blocks': one state per parameter array"
        ),
    )
    p.add_argument(
        "--stream-file",
        action="append",
        type=_stream_file,
        metavar="PATH",
        help=(
            "a .npy file of shape (T, d), finite floats, d >= 2: a stream named by the file's stem, memory-mapped; "
            "step t folds in row t and preconditions the next row (row 1 after the last); run once, with the "
            "first seed. Repeatable. Without --steps, the study takes the shortest file's T steps if fewer"
        ),
    )
    p.add_argument("--steps", type=positive_int, default=None, help="steps per stream")
    p.add_argument(
        "--large-steps",
        type=positive_int,
        default=None,
        help=f"steps per stream with d > {DENSE_LIMIT} (default: {default.large_steps})",
    )
    p.add_argument(
        "--ranks",
        type=comma_list(positive_int),
        metavar="R1,R2,...",
        help=(
            "ranks tau of the grid (integers >= 1, below every stream's dimension; also for the large streams, "
            f"which default to {','.join(map(str, default.large_ranks or ()))})"
        ),
    )
    p.add_argument(
        "--decays", type=comma_list(unit_interval), metavar="A1,A2,...", help="EMA decays alpha of the grid, in (0, 1)"
    )
    p.add_argument(
        "--dampings", type=comma_list(positive_float), metavar="G1,G2,...", help="dampings gamma of the grid, > 0"
    )
    p.add_argument(
        "--methods",
        type=comma_list(_method),
        metavar="M1,M2,...",
        help=f"methods to record, among {','.join(METHODS)} (default: all)",
    )
    p.add_argument(
        "--jobs", type=positive_int, default=min(2, os.cpu_count() or 1), help="worker processes (default: %(default)s)"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.epilog = (
        "A grid given with --ranks, --decays or --dampings that leaves out the default setting "
        f"(tau = {default.rank}, alpha = {default.decay}, gamma = {default.damping:g}) takes the grid's nearest "
        "value instead (the default setting is the one of the time series and the summary tables)."
    )
    p.set_defaults(func=_study, check=_check_study, command_parser=p)
