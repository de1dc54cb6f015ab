"""Where the product form's step goes on NumPy: its two passes over W and its compression, in passes over U.

The donated product step (``ginger_product_update_precondition(..., donate=True)``)
reads the live rows of W twice (the projection ``Wᵀ[d, g]``, then the pass that
writes the new column and the query) and, every ``capacity − rank`` steps,
compresses W (``W ← WQ``). This script times, in one run and against a copy of a
d×τ array (two passes), the step averaged over whole compression cycles and its
parts on their own: the projection and the second pass at the fullest buffer of a
cycle, and one compression (per event and per step). Each step gets a fresh
direction (a random roll of one vector, untimed), so the steps take the one-pass
path of a direction far from span W. Minimum over rounds for every quantity.

Usage::

    python benchmarks/product_parts.py [--dim 1e6] [--rank 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 - after the thread limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lowrank_ggn as lg  # noqa: E402
from lowrank_ggn._core.kernels import compress_rows, project, rotate  # noqa: E402


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _copy_time(u: np.ndarray, rounds: int) -> float:
    """Seconds of a copy of ``u`` into an already-touched buffer (two passes over U)."""
    dst = np.empty_like(u)
    np.copyto(dst, u)
    return _best(lambda: np.copyto(dst, u), rounds)


def measure(dim: int, rank: int, rounds: int = 3) -> dict[str, float]:
    """Return passes over U (float32) of the step and of its parts."""
    rng = np.random.default_rng(0)
    dt = np.float32
    t_copy = _copy_time(rng.standard_normal((dim, rank)).astype(dt), rounds + 2)

    def passes(t: float) -> float:
        return 2 * t / t_copy

    base = rng.standard_normal(dim).astype(dt)
    g = rng.standard_normal(dim).astype(dt)
    state = lg.ginger_product_init(dim, rank, xp=np, dtype=dt)
    capacity = state.columns.shape[0]
    cycle = capacity - rank
    kw = {"decay": 0.95, "damping": 1e-3, "donate": True}
    for _ in range(2 * cycle):  # fill the rank, then start from a fresh compression
        state, _ = lg.ginger_product_update_precondition(state, np.roll(base, int(rng.integers(dim))), g, **kw)
    while int(state.count) != rank:
        state, _ = lg.ginger_product_update_precondition(state, np.roll(base, int(rng.integers(dim))), g, **kw)
    step = float("inf")
    for _ in range(rounds):  # whole compression cycles, so that each sample holds one compression
        total = 0.0
        for _ in range(cycle):
            d = np.roll(base, int(rng.integers(dim)))
            t0 = time.perf_counter()
            state, _ = lg.ginger_product_update_precondition(state, d, g, **kw)
            total += time.perf_counter() - t0
        step = min(step, total / cycle)
    # The parts at the fullest buffer of a cycle (capacity − 1 live rows), on a copy.
    full = rng.standard_normal((capacity, dim)).astype(dt)
    live = full[: capacity - 1]
    d = rng.standard_normal(dim).astype(dt)
    t_project = _best(lambda: project(np, live, (d, g), rows=True), rounds)
    n = live.shape[0]
    rot = rng.standard_normal((n, 1)).astype(dt)
    query = (rng.standard_normal(n).astype(dt), dt(0.5), g, dt(2.0))
    out = full[capacity - 1 : capacity]
    t_second = _best(lambda: rotate(np, live, rot, d, np.ones(1, dt), query=query, out=out.T, rows=True), rounds)
    coef = rng.standard_normal((capacity, rank)).astype(dt)
    t_compress = _best(lambda: compress_rows(np, full, capacity, coef, in_place=True), rounds)
    return {
        "step (mean over a cycle)": passes(step),
        "projection W^T[d, g], fullest buffer": passes(t_project),
        "new column + query, fullest buffer": passes(t_second),
        "one compression": passes(t_compress),
        "compression per step": passes(t_compress) / cycle,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=float, default=1e6)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    dim = int(args.dim)
    print(f"NumPy float32, d = {dim:.0e}, τ = {args.rank}, capacity 2τ, one thread: passes over U")
    for name, value in measure(dim, args.rank, args.rounds).items():
        print(f"  {name:40s} {value:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
