"""The ``lowrank-ggn`` command line.

``lowrank-ggn demo`` runs Ginger and QNG on a synthetic curvature stream with a
power-law spectrum and compares them with the exact EMA (dense float64).
``lowrank-ggn study`` runs the approximation-error study (:mod:`lowrank_ggn.studies`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

import lowrank_ggn as lg

__all__ = ["main"]


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


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compare Ginger and QNG with the exact EMA on a synthetic stream")
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--decay", type=float, default=0.95)
    p.add_argument("--damping", type=float, default=1e-2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--exponent", type=float, default=1.5, help="power-law exponent of the stream's spectrum")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


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
    """
    parser = argparse.ArgumentParser(prog="lowrank-ggn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {lg.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
