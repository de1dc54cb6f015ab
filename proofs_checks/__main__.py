"""Command line: ``python -m proofs_checks [--backend ...] [--dtype ...] [--quick] [--out report.md]``."""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from proofs_checks._context import BACKENDS, DTYPES, make_context
from proofs_checks._registry import Result, all_checks, run_checks
from proofs_checks._report import render, summary_table

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proofs_checks",
        description="Numerically check every equation, lemma, observation and erratum of the Ginger paper.",
    )
    p.add_argument("--backend", choices=BACKENDS, default="numpy", help="array backend the library runs on")
    p.add_argument("--dtype", choices=DTYPES, default="float64", help="precision the library runs in")
    p.add_argument("--quick", action="store_true", help="smaller problems (well under a minute)")
    p.add_argument("--out", help="write the markdown report here (default: print it)")
    p.add_argument("--seed", type=int, help="seed of the random inputs (default: fresh; printed in the report)")
    p.add_argument("--only", action="append", default=[], help="run the checks whose key contains this (repeatable)")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; return 0 when every check passes, 1 otherwise."""
    args = _parser().parse_args(argv)
    checks = all_checks()
    if args.list:
        for c in checks:
            print(f"{c.key:<22} {c.section:<12} {c.statement}")
        return 0
    if args.only:
        checks = [c for c in checks if any(s in c.key for s in args.only)]
        if not checks:
            print(f"no check matches {args.only}", file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    try:
        ctx = make_context(args.backend, args.dtype, quick=args.quick, seed=seed)
    except (ImportError, RuntimeError) as exc:
        print(f"backend {args.backend!r} is not available: {exc}", file=sys.stderr)
        return 2

    def progress(r: Result) -> None:
        status = "pass" if r.passed else ("ERROR" if r.error else "FAIL")
        print(f"[{status:>5}] {r.check.key:<22} {r.seconds:6.2f} s", file=sys.stderr, flush=True)

    results = run_checks(ctx, checks, progress=progress)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if "--seed" not in argv_list:
        argv_list += ["--seed", str(seed)]
    command = "python -m proofs_checks " + shlex.join(argv_list)
    report = render(results, command=command.strip(), seed=seed, quick=args.quick)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
        print(summary_table(results))
        print(f"\nreport written to {args.out}", file=sys.stderr)
    else:
        print(report)
    failed = [r.check.key for r in results if not r.passed]
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(results)} checks pass", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
