"""Time the matrix-free exact oracle (``WindowEMA``) at d = 1e5 and 1e6, with a window of W vectors.

For each d: W updates (random vectors with a decaying per-coordinate scale),
one reduction with q gradients (the thin QR of the window, shared by every
method of a checkpoint), the oracle's top-τ eigenpairs as d-vectors, and the
metrics of the oracle, of a Ginger-like state (orthonormal U, diag σ, d × τ),
of a QNG-like one (a full τ × τ core) and of the scaled identity. ``--diag``
adds the diagonal method's Lanczos metrics (at most ``--restarts`` restarts).
Prints one row per d: seconds per part and the peak resident memory.

Usage::

    python benchmarks/oracle_scale.py [--dims 1e5 1e6] [--window 200] [--rank 16] [--grads 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_parser.add_argument("--dims", type=float, nargs="+", default=[1e5, 1e6])
_parser.add_argument("--window", type=int, default=200)
_parser.add_argument("--rank", type=int, default=16)
_parser.add_argument("--grads", type=int, default=8)
_parser.add_argument("--threads", type=int, default=2)
_parser.add_argument("--diag", action="store_true", help="also time the diagonal method's Lanczos metrics")
_parser.add_argument("--restarts", type=int, default=5)
ARGS = _parser.parse_args()

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402 - after the thread limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lowrank_ggn.studies import WindowEMA  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(dim: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    tau, gamma = ARGS.rank, 1e-2
    window = WindowEMA(dim, 0.99, max_size=ARGS.window)
    scale = 1.0 / np.sqrt(np.arange(1, dim + 1))
    seconds = 0.0
    for _ in range(ARGS.window):
        d = rng.standard_normal(dim) * scale
        seconds += _timed(lambda d=d: window.update(d))[1]
    row = {"update (all W)": seconds}
    g = rng.standard_normal((dim, ARGS.grads)) * scale[:, None]
    red, row["reduce"] = _timed(lambda: window.reduce(g))
    (lam, vec), row["eigh(τ)"] = _timed(lambda: red.eigh(tau))
    _, row["oracle"] = _timed(lambda: red.oracle_metrics(gamma, tau))
    u = np.linalg.qr(vec + 0.1 * rng.standard_normal((dim, tau)) * scale[:, None])[0]
    _, row["ginger"] = _timed(lambda: red.metrics(u, lam, gamma, gamma, rank=tau))
    factor = rng.standard_normal((dim, tau)) * scale[:, None]
    core = np.cov(rng.standard_normal((tau, 3 * tau)))
    _, row["qng"] = _timed(lambda: red.metrics(factor, core, 0.99**tau, gamma, rank=tau))
    _, row["identity"] = _timed(lambda: red.metrics(np.zeros((dim, 0)), np.zeros(0), gamma + red.trace / dim, gamma))
    if ARGS.diag:
        diag = gamma + (window.weights[:, None] * window.vectors**2).sum(axis=0)
        out, row["diag (Lanczos)"] = _timed(lambda: red.diagonal_metrics(diag, gamma, max_restarts=ARGS.restarts))
        row["diag converged"] = float(np.isfinite(out["inv_spectral_error"]))
    row["peak RSS GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def main() -> None:
    print(f"W = {ARGS.window}, τ = {ARGS.rank}, q = {ARGS.grads} gradients, {ARGS.threads} BLAS threads; seconds")
    rows = {int(d): run(int(d)) for d in ARGS.dims}
    keys = list(next(iter(rows.values())))
    print("| d | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for dim, row in rows.items():
        print(f"| {dim:.0e} | " + " | ".join(f"{row[k]:.3g}" for k in keys) + " |")


if __name__ == "__main__":
    main()
