"""The ``lowrank-ggn`` command line.

``lowrank-ggn demo`` runs Ginger and QNG on a synthetic curvature stream with a
power-law spectrum and compares them with the exact EMA (dense float64).
``lowrank-ggn study`` runs the approximation-error study (:mod:`lowrank_ggn.studies`).

Bad arguments are argparse usage errors (one line, exit status 2), raised
before any computation.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

import lowrank_ggn as lg

__all__ = ["main"]

DESCRIPTION = (
    "Low-rank curvature (GGN/Fisher) approximations: Ginger and QNG. "
    "'lowrank-ggn demo' compares them with the exact EMA on a synthetic stream; "
    "'lowrank-ggn study' runs the approximation-error study. "
    "'lowrank-ggn COMMAND --help' describes a command's options."
)
"""The text of ``lowrank-ggn --help`` (plain text: argparse prints it as is)."""


# ---------------------------------------------------------------- argument types
# argparse calls these on the raw strings; an ArgumentTypeError becomes the usage error
# "argument --name: <message>" with exit status 2.


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        msg = f"expected {what}, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if kind is float and not math.isfinite(value):
        msg = f"must be finite, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def positive_int(text: str) -> int:
    """Parse an integer ≥ 1 (an argparse ``type``)."""
    value = int(_number(text, int))
    if value < 1:
        msg = f"must be a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def nonnegative_int(text: str) -> int:
    """Parse an integer ≥ 0 (an argparse ``type``)."""
    value = int(_number(text, int))
    if value < 0:
        msg = f"must be a non-negative integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def at_least_two(text: str) -> int:
    """Parse an integer ≥ 2 (an argparse ``type``)."""
    value = int(_number(text, int))
    if value < 2:
        msg = f"must be an integer >= 2, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def finite_float(text: str) -> float:
    """Parse a finite real number (an argparse ``type``)."""
    return float(_number(text, float))


def positive_float(text: str) -> float:
    """Parse a finite number > 0 (an argparse ``type``)."""
    value = finite_float(text)
    if value <= 0:
        msg = f"must be positive, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def unit_interval(text: str) -> float:
    """Parse a number in the open interval (0, 1), an EMA decay (an argparse ``type``)."""
    value = finite_float(text)
    if not 0 < value < 1:
        msg = f"must lie in (0, 1), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def comma_list(item: Callable[[str], object]) -> Callable[[str], tuple]:
    """Return an argparse ``type`` for a comma-separated list of ``item`` values (duplicates dropped, order kept)."""

    def parse(text: str) -> tuple:
        parts = [x.strip() for x in text.split(",")]
        if not parts or any(not x for x in parts):
            msg = f"expected a comma-separated list without empty items, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        values = []
        for x in parts:
            try:
                value = item(x)
            except argparse.ArgumentTypeError as err:
                msg = f"item {x!r}: {err}"
                raise argparse.ArgumentTypeError(msg) from None
            if value not in values:
                values.append(value)
        return tuple(values)

    parse.__name__ = f"list of {getattr(item, '__name__', 'values')}"
    return parse


def _demo(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    dim, rank, decay, damping = args.dim, args.rank, args.decay, args.damping
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -args.exponent
    ginger = lg.ginger_init(dim, rank)
    qng = lg.qng_init(dim, rank)
    exact = np.zeros((dim, dim))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        d = q @ (np.sqrt(spectrum) * rng.standard_normal(dim))
        ginger = lg.ginger_update(ginger, d, decay=decay)
        qng = lg.qng_update(qng, d, decay=decay)
        exact = lg.ema_update_dense(exact, d, decay=decay)
    elapsed = time.perf_counter() - t0

    k = min(rank, args.steps)
    floor = decay**k
    _, best = lg.best_rank_k(exact, rank)
    inv_exact = lg.damped_inverse_dense(exact, damping=damping)
    inv_exact_q = lg.damped_inverse_dense(exact, damping=floor)
    g = q @ (np.sqrt(spectrum) * rng.standard_normal(dim))

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b, 2) / np.linalg.norm(b, 2))

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    eye = np.eye(dim)
    rows = [
        ("Ginger", damping, lg.ginger_precondition(ginger, eye, damping=damping), inv_exact),
        ("Ginger", floor, lg.ginger_precondition(ginger, eye, damping=floor), inv_exact_q),
        ("QNG", floor, lg.qng_precondition(qng, eye), inv_exact_q),
        ("identity", damping, eye / damping, inv_exact),
    ]
    print(f"d={dim}  tau={rank}  alpha={decay}  steps={args.steps}  spectrum ~ i^-{args.exponent}")
    eig_err = np.abs(ginger.eigvals - best).max() / best[0]
    total = np.trace(exact)
    print(f"Ginger eigenvalues vs best rank-{rank} (oracle): max rel. error {eig_err:.2e}")
    print(f"trace captured by Ginger: {ginger.eigvals.sum() / total:.3f} (oracle {best.sum() / total:.3f})")
    print(f"{'method':<10} {'damping':>9} {'rel. spectral error of inverse':>31} {'cos(G~^-1 g, G^-1 g)':>21}")
    for name, gamma, approx, ref in rows:
        print(f"{name:<10} {gamma:>9.2e} {rel(approx, ref):>31.3e} {cosine(approx @ g, ref @ g):>21.4f}")
    print(f"({args.steps} updates of Ginger, QNG and the dense EMA in {elapsed:.2f} s)")
    return 0


def _check_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.rank >= args.dim:
        parser.error(f"argument --rank: must be below --dim ({args.dim}), got {args.rank}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="compare Ginger and QNG with the exact EMA on a synthetic stream",
        description=(
            "Feed a synthetic curvature stream d_t = Q diag(i^(-p/2)) z_t (power-law spectrum, d dimensions) to "
            "Ginger, QNG and the exact EMA M_t = alpha M_(t-1) + (1 - alpha) d_t d_t^T (dense float64), then print "
            "how far Ginger's eigenvalues are from the best rank-tau approximation of M_t and the relative spectral "
            "error of each preconditioner's inverse against the exact one, at damping gamma and at QNG's implicit "
            "damping alpha^min(tau, steps)."
        ),
    )
    p.add_argument("--dim", type=at_least_two, default=200, help="parameter dimension d (default: %(default)s)")
    p.add_argument("--rank", type=positive_int, default=8, help="rank tau, below --dim (default: %(default)s)")
    p.add_argument("--decay", type=unit_interval, default=0.95, help="EMA decay alpha in (0, 1) (default: %(default)s)")
    p.add_argument("--damping", type=positive_float, default=1e-2, help="damping gamma > 0 (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=300, help="curvature vectors fed (default: %(default)s)")
    p.add_argument(
        "--exponent",
        type=finite_float,
        default=1.5,
        help="power-law exponent p of the stream's spectrum i^-p (default: %(default)s)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed, >= 0 (default: %(default)s)")
    p.set_defaults(func=_demo, check=_check_demo, command_parser=p)


def _add_study(sub: argparse._SubParsersAction) -> None:
    from lowrank_ggn.studies import add_study_command

    add_study_command(sub)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_demo, _add_study]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lowrank-ggn`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status, 0 on success.

    Raises
    ------
    SystemExit
        With status 2 (and argparse's one-line usage error on stderr) for a
        bad argument, before any computation; with status 0 for ``--help``
        and ``--version``.
    """
    parser = argparse.ArgumentParser(prog="lowrank-ggn", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {lg.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args, args.command_parser)  # cross-argument checks: usage errors before any computation
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
