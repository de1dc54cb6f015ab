"""Where a jitted Ginger step's time goes on small blocks (JAX, CPU, one thread), as ratios and microseconds.

Two tables, each measured in one run (the minimum over rounds of the mean over repetitions):

1. The optax ``ginger`` transformation step on the digits MLP's parameter shapes (64-128-128-10) against
   optax Adam's step, in variants that separate the costs: the default (one block per array, τ = 4),
   no re-orthonormalisation, one block for the whole model, a curvature update every 10 steps, τ = 1.
2. The jitted fused step on one block of the MLP's size (d = 26,122, τ = 4), its update and its query
   alone, and the pieces of its dependency chain: the two projections ``Uᵀv``, ``Uᵀg``, the (τ+1)²
   eigendecomposition, and ``U c + v`` — the products with ``U`` stored as the state keeps it (d × τ,
   row-major) and as ``Uᵀ`` (τ × d, row-major), which the step uses at τ ≤ 4 on the CPU — and a copy of ``U``.

With ``--ops``, instead: the operations of the compiled optax step (top level: fusions, conditionals;
LAPACK eigh calls anywhere), which do not depend on the machine's load.

    python benchmarks/step_latency.py [--ops] [--lib PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _bench(f, *args, reps: int = 300, rounds: int = 5) -> float:
    import jax

    out = f(*args)
    jax.block_until_ready(out)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            out = f(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best * 1e6


def mlp_params() -> list:
    """The digits MLP's parameters (64-128-128-10), one dict of ``w`` and ``b`` per layer."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    params = []
    for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True):
        key, k = jax.random.split(key)
        params.append({"w": jax.random.normal(k, (a, b)) / a**0.5, "b": jnp.zeros(b)})
    return params


MLP_SIZES = (64, 128, 128, 10)


def random_gradients(params: list, count: int = 11) -> list:
    """``count`` random gradients shaped like ``params`` (entries of size 0.01), to cycle through.

    Ginger's update takes its cheapest path when the new vector has most of its norm outside the span of the
    basis, as a fresh gradient has; a step fed the same vector again and again (or cycling through τ or
    fewer) would measure the re-orthogonalising path at every step instead.
    """
    import jax

    keys = jax.random.split(jax.random.PRNGKey(1), count)
    leaves, tree = jax.tree.flatten(params)
    return [
        jax.tree.unflatten(
            tree,
            [
                0.01 * jax.random.normal(k, p.shape)
                for k, p in zip(jax.random.split(key, len(leaves)), leaves, strict=True)
            ],
        )
        for key in keys
    ]


def _optax_variants() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from lowrank_ggn.optim.optax import ginger

    params = mlp_params()
    grads = random_gradients(params)

    def step_time(tx) -> float:
        def step(p, s, g):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        f = jax.jit(step, donate_argnums=(0, 1))
        carry = [jax.tree.map(jnp.copy, params), tx.init(params), 0]

        def go():
            carry[2] = (carry[2] + 1) % len(grads)
            carry[0], carry[1] = f(carry[0], carry[1], grads[carry[2]])
            return carry[0]

        return _bench(go, reps=200, rounds=7)

    adam = step_time(optax.adam(1e-3))
    print("| optax step, digits MLP shapes | × Adam | µs |\n|---|---|---|")
    print(f"| Adam | 1.00 | {adam:.0f} |")
    for name, tx in (
        ("ginger, τ = 4, one block per array (default)", ginger(0.1, rank=4)),
        ("the same, no re-orthonormalisation", ginger(0.1, rank=4, reorthonormalize_every=None)),
        ("ginger, τ = 4, one block for the model", ginger(0.1, rank=4, blocks="model")),
        ("ginger, τ = 4, curvature update every 10 steps", ginger(0.1, rank=4, update_every=10)),
        ("ginger, τ = 1", ginger(0.1, rank=1)),
    ):
        t = step_time(tx)
        print(f"| {name} | {t / adam:.2f} | {t:.0f} |")


def _chain() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import lowrank_ggn as lg

    dim, tau = 26122, 4
    rng = np.random.default_rng(0)
    state = lg.ginger_init(dim, tau, xp=jnp, dtype=jnp.float32)
    for _ in range(8):
        state = lg.ginger_update(state, jnp.asarray(rng.standard_normal(dim), jnp.float32), decay=0.99)
    v = jnp.asarray(rng.standard_normal(dim), jnp.float32)
    g = jnp.asarray(rng.standard_normal(dim), jnp.float32)
    u, c = state.basis, jnp.ones(tau, jnp.float32)
    ut = jnp.asarray(np.asarray(u).T.copy())  # Uᵀ stored row-major: the layout the step uses at τ ≤ 4
    core = jnp.eye(tau + 1, dtype=jnp.float32) + 0.1
    opts = {"decay": 0.99, "reorthonormalize_every": None}
    rows = (
        (
            "fused update + query",
            jax.jit(lambda s, d, g: lg.ginger_update_precondition(s, d, g, damping=1e-2, **opts)),
            (state, v, g),
        ),
        ("update alone", jax.jit(lambda s, d: lg.ginger_update(s, d, **opts)), (state, v)),
        ("query alone", jax.jit(lambda s, g: lg.ginger_precondition(s, g, damping=1e-2)), (state, g)),
        ("Uᵀv and Uᵀg (two products), U stored d × τ", jax.jit(lambda u, v, g: (u.T @ v, u.T @ g)), (u, v, g)),
        ("the same, Uᵀ stored τ × d", jax.jit(lambda ut, v, g: (ut @ v, ut @ g)), (ut, v, g)),
        ("eigh of the (τ+1)² core", jax.jit(jnp.linalg.eigh), (core,)),
        ("U c + v, U stored d × τ", jax.jit(lambda u, c, v: u @ c + v), (u, c, v)),
        ("the same, Uᵀ stored τ × d", jax.jit(lambda ut, c, v: c @ ut + v), (ut, c, v)),
        ("a copy of U", jax.jit(lambda u: u + 0), (u,)),
    )
    print(f"\n| jitted, d = {dim:,}, τ = {tau}, float32 | µs |\n|---|---|")
    for name, f, args in rows:
        print(f"| {name} | {_bench(f, *args):.0f} |")


def _ops() -> None:
    import re
    from collections import Counter

    import jax

    from lowrank_ggn.optim.optax import ginger

    params = mlp_params()
    tx = ginger(0.1, rank=4)
    state = tx.init(params)
    text = jax.jit(lambda p, s, g: tx.update(g, s, p)).lower(params, state, params).compile().as_text()
    entry = text[text.index("\nENTRY") :]
    entry = entry[: entry.index("\n}")]
    ops = Counter(re.findall(r"= \S+ ([a-z-]+)\(", entry) + re.findall(r"= \([^=]*\) ([a-z-]+)\(", entry))
    eigh = len(re.findall("syevd", text))
    print(
        f"compiled optax ginger step, digits MLP shapes, tau=4: {ops['fusion']} fusions, "
        f"{ops['conditional']} conditionals, {eigh} eigh calls"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lib", default=None, help="import lowrank_ggn from this checkout")
    p.add_argument("--ops", action="store_true", help="count the compiled step's operations instead")
    args = p.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    if args.lib:
        sys.path.insert(0, os.path.abspath(args.lib))
    if args.ops:
        _ops()
        return
    _optax_variants()
    _chain()


if __name__ == "__main__":
    main()
