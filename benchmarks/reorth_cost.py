"""Cost of re-orthonormalising the Ginger basis, as a ratio to one update, measured in one run.

``ginger_update`` with ``reorthonormalize_every = k`` pays one
:func:`lowrank_ggn.ginger_reorthonormalize` every k accepted updates, so its
overhead is about ``ratio / k``. Both are jitted (JAX) and timed interleaved;
the median of the per-round ratios is reported (robust to load from other
processes).

On a shared or oversubscribed CPU, limit BLAS to one thread: a multithreaded
LAPACK QR of a 10⁴ × 16 matrix was measured 40 times slower (180 ms against
4.6 ms) on 2 cores with a load average of 7, which measures the contention,
not the algorithm.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/reorth_cost.py [--dim 10000] [--rank 16] [--backend jax|numpy]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lowrank_ggn as lg  # noqa: E402


def measure(dim: int, rank: int, backend: str, rounds: int = 30, inner: int = 20) -> dict[str, float]:
    """Return the median time ratio reorthonormalize / update (float32)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((inner, dim)).astype(np.float32)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        state = lg.ginger_init(dim, rank, xp=jnp, dtype=jnp.float32)
        update = jax.jit(lambda s, d: lg.ginger_update(s, d, decay=0.99, reorthonormalize_every=None))
        reorth = jax.jit(lg.ginger_reorthonormalize)
        vecs = [jnp.asarray(d) for d in data]

        def block(x: lg.GingerState) -> None:
            x.basis.block_until_ready()
    else:
        state = lg.ginger_init(dim, rank, dtype=np.float32)

        def update(s: lg.GingerState, d: np.ndarray) -> lg.GingerState:
            return lg.ginger_update(s, d, decay=0.99, reorthonormalize_every=None)

        reorth = lg.ginger_reorthonormalize
        vecs = list(data)

        def block(x: lg.GingerState) -> None:
            del x

    for d in vecs:  # warm up and fill the state
        state = update(state, d)
    block(reorth(state))
    ratios = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for d in vecs:
            state = update(state, d)
        block(state)
        t_update = (time.perf_counter() - t0) / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            out = reorth(state)
        block(out)
        t_reorth = (time.perf_counter() - t0) / inner
        ratios.append(t_reorth / t_update)
    return {
        "ratio": statistics.median(ratios),
        "q25": float(np.quantile(ratios, 0.25)),
        "q75": float(np.quantile(ratios, 0.75)),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--backend", choices=["jax", "numpy"], default="jax")
    args = parser.parse_args(argv)
    res = measure(args.dim, args.rank, args.backend)
    print(
        f"d={args.dim} tau={args.rank} {args.backend} float32: reorthonormalize / update = {res['ratio']:.2f} "
        f"(quartiles {res['q25']:.2f}-{res['q75']:.2f}); overhead every 100: {res['ratio'] / 100:.1%}, "
        f"every 50: {res['ratio'] / 50:.1%}, every 10: {res['ratio'] / 10:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
