"""Step cost against its references, in one run: the optax front-end against Adam, the JAX fused step against
the straightforward formulation.

Two measurements, each a ratio of times taken in the same process, interleaved round by round and the minimum
over the rounds kept for each (so that other processes on the machine disturb both sides alike):

``--what optax``
    A jitted optax step (``tx.update`` + ``optax.apply_updates``) of the library's ``ginger`` (τ = 4, one block per
    parameter array) on the parameter shapes of the digits MLP (64-128-128-10), against the same step of
    ``optax.adam``; and a whole training step of that MLP (forward, loss gradient, the sampled-label curvature
    vector of Eq 8 for Ginger) against Adam's training step.
``--what torch``
    A ``torch.optim`` step (``optimizer.step``, gradients and curvature vectors given) of the library's ``Ginger``
    (τ = 4, one block per parameter tensor) on the digits MLP's parameter shapes, against ``torch.optim.Adam``'s step.
``--what fused``
    The jitted, donated fused step ``ginger_update_precondition`` at ``--dim`` against the straightforward
    formulation of the same step as the authors' code writes it (``c = Uᵀd``, ``p = d − Uc``, ``eigh`` of the
    (τ+1)² core, ``U ← [U, p/r]V``, Woodbury query), also jitted and donated, at τ ∈ ``--ranks``.

    python benchmarks/step_cost.py --what optax,torch,fused --dim 1e6 --ranks 4,16 [--lib PATH] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _interleaved(fns: dict, rounds: int, reps: int) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / reps)
    return best


def _optax(lg, rounds: int) -> None:
    import jax
    import jax.numpy as jnp
    import optax
    from step_latency import mlp_params, random_gradients

    from lowrank_ggn.optim.jax_likelihoods import value_grad_and_curvature
    from lowrank_ggn.optim.optax import ginger

    params = mlp_params()
    grads = random_gradients(params)
    key = jax.random.PRNGKey(2)
    keys = list(jax.random.split(key, len(grads)))
    x = jax.random.normal(key, (64, 64))
    y = jax.random.randint(key, (64,), 0, 10)

    def model(p, x):
        for i, layer in enumerate(p):
            x = x @ layer["w"] + layer["b"]
            if i < len(p) - 1:
                x = jnp.tanh(x)
        return x

    def nll(p):
        logits = model(p, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    results = {}
    for name, tx in (("ginger", ginger(0.1, rank=4)), ("adam", optax.adam(1e-3))):
        state = tx.init(params)

        def tstep(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        def train(p, s, k, tx=tx, name=name):
            if name == "ginger":
                _, g, d, _ = value_grad_and_curvature(lambda q: model(q, x), p, y, k, "categorical")
                u, s = tx.update(g, s, p, curvature=d)
            else:
                g = jax.grad(nll)(p)
                u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        results[name] = (jax.jit(tstep, donate_argnums=(0, 1)), jax.jit(train, donate_argnums=(0, 1)), state)

    carry = {}
    for name, (tstep, train, state) in results.items():
        carry[name] = [jax.tree.map(jnp.copy, params), state, jax.tree.map(jnp.copy, params), tx_state_copy(state), 0]

    def runner(name, which):
        tstep, train, _ = results[name]

        def go():
            c = carry[name]
            i = c[4] = (c[4] + 1) % len(grads)
            if which == "transform":
                c[0], c[1] = tstep(c[0], c[1], grads[i])
                jax.block_until_ready(c[0])
            else:
                c[2], c[3] = train(c[2], c[3], keys[i])
                jax.block_until_ready(c[2])

        return go

    fns = {f"{n}.{w}": runner(n, w) for n in results for w in ("transform", "train")}
    for fn in fns.values():  # compile
        fn()
    best = _interleaved(fns, rounds, reps=20)
    print(
        f"optax transformation step, digits MLP shapes, tau=4: ginger / adam = {best['ginger.transform'] / best['adam.transform']:.2f}"
    )
    print(
        f"optax training step (with the sampled-label gradient for ginger): ginger / adam = {best['ginger.train'] / best['adam.train']:.2f}"
    )


def _torch(rounds: int) -> None:
    import torch

    from lowrank_ggn.optim.torch import Ginger

    torch.set_num_threads(1)
    torch.manual_seed(0)
    sizes = [64, 128, 128, 10]
    shapes = [s for a, b in zip(sizes[:-1], sizes[1:], strict=True) for s in ((b, a), (b,))]
    opts = {}
    for name in ("ginger", "adam"):
        params = [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
        for q in params:
            q.grad = torch.randn_like(q) * 0.01
        curv = [torch.randn_like(q) * 0.01 for q in params]
        if name == "ginger":
            opt = Ginger(params, lr=0.1, rank=4)
            opts[name] = lambda opt=opt, curv=curv: opt.step(curvature=curv)
        else:
            opt = torch.optim.Adam(params, lr=1e-3)
            opts[name] = opt.step
    for fn in opts.values():
        fn()
    best = _interleaved(opts, rounds, reps=20)
    print(f"torch.optim step, digits MLP shapes, tau=4: Ginger / Adam = {best['ginger'] / best['adam']:.2f}")


def tx_state_copy(state):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.copy, state)


def _fused(lg, dim: int, ranks: list[int], rounds: int) -> None:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    for tau in ranks:
        # More distinct vectors than the rank: each d has a component outside span U, as a fresh curvature
        # vector has (cycling through τ or fewer vectors would put every d in span U, the rare CGS2 path).
        count = 2 * tau + 3
        ds = [jnp.asarray(rng.standard_normal(dim), jnp.float32) for _ in range(count)]
        lib = jax.jit(
            lambda s, d, g: lg.ginger_update_precondition(
                s, d, g, decay=0.99, damping=1e-2, reorthonormalize_every=None
            ),
            donate_argnums=0,
        )

        @functools.partial(jax.jit, donate_argnums=(0,))
        def plain(u, s, d, g, tau=tau):
            alpha, gamma = 0.99, 1e-2
            c = u.T @ d
            p = d - u @ c
            r = jnp.linalg.norm(p)
            top = alpha * jnp.diag(s) + (1 - alpha) * jnp.outer(c, c)
            core = jnp.block(
                [
                    [top, ((1 - alpha) * r * c)[:, None]],
                    [((1 - alpha) * r * c)[None, :], ((1 - alpha) * r * r)[None, None]],
                ]
            )
            lam, v = jnp.linalg.eigh(core)
            lam, v = lam[::-1][:tau], v[:, ::-1][:, :tau]
            u = jnp.concatenate([u, (p / r)[:, None]], axis=1) @ v
            lam = jnp.maximum(lam, 0)
            cg = u.T @ g
            y = g / gamma - u @ (cg * lam / (gamma * (gamma + lam)))
            return u, lam, y

        state = [lg.ginger_init(dim, tau, xp=jnp, dtype=jnp.float32)]
        plain_state = [jnp.eye(dim, tau, dtype=jnp.float32), jnp.zeros(tau, jnp.float32)]
        k = [0]

        def run_lib():
            i = k[0] = (k[0] + 1) % count
            state[0], y = lib(state[0], ds[i], ds[(i + 1) % count])
            y.block_until_ready()

        def run_plain():
            i = k[0] = (k[0] + 1) % count
            plain_state[0], plain_state[1], y = plain(plain_state[0], plain_state[1], ds[i], ds[(i + 1) % count])
            y.block_until_ready()

        for _ in range(3):
            run_lib()
            run_plain()
        best = _interleaved({"lib": run_lib, "plain": run_plain}, rounds, reps=5)
        print(
            f"JAX fused step, d={dim}, tau={tau}, float32: library / straightforward = {best['lib'] / best['plain']:.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", default="optax,fused")
    p.add_argument("--dim", type=float, default=1e6)
    p.add_argument("--ranks", default="4,16")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--lib", default=None, help="import lowrank_ggn from this checkout")
    args = p.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    if args.lib:
        sys.path.insert(0, os.path.abspath(args.lib))
    import lowrank_ggn as lg

    print(f"lowrank_ggn from {os.path.dirname(lg.__file__)}")
    what = set(args.what.split(","))
    if "optax" in what:
        _optax(lg, args.rounds)
    if "torch" in what:
        _torch(args.rounds)
    if "fused" in what:
        _fused(lg, int(args.dim), [int(r) for r in args.ranks.split(",")], args.rounds)


if __name__ == "__main__":
    main()
