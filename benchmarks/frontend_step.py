"""Optimiser front-ends against the library's fused step, in one run: time per step as a ratio.

The cost of a ``torch.optim`` ``Ginger`` step and of a jitted optax ``ginger``
step on one parameter tensor of ``--dim`` numbers, against the fused, donated
update + query (``ginger_update_precondition(..., donate=True)`` on PyTorch,
``jax.jit(..., donate_argnums=0)`` on JAX) at the same rank and dtype. The
optimiser step also updates the parameter (momentum, learning rate), which the
fused step does not: the ratio is the front-end's whole overhead.

    python benchmarks/frontend_step.py --dim 1e6 --rank 16 [--lib PATH] [--threads 1]

``--lib`` imports lowrank_ggn from another checkout (a ``git worktree`` of an
older commit) to measure before and after in the same way.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time


def _median_time(step, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=float, default=1e6)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lib", default=None, help="import lowrank_ggn from this checkout")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.lib:
        sys.path.insert(0, os.path.abspath(args.lib))
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch

    import lowrank_ggn as lg
    from lowrank_ggn.optim.optax import ginger as optax_ginger
    from lowrank_ggn.optim.torch import Ginger

    torch.set_num_threads(args.threads)
    dim, rank, n = int(args.dim), args.rank, args.steps
    rng = np.random.default_rng(0)
    ds = rng.standard_normal((4, dim)).astype(np.float32)
    print(f"lowrank_ggn from {os.path.dirname(lg.__file__)}; d={dim}, tau={rank}, float32, {args.threads} thread(s)")

    # PyTorch: the fused donated step, then the optimiser.
    td = [torch.from_numpy(x) for x in ds]
    state = lg.ginger_init(dim, rank, xp=torch, dtype=torch.float32)
    k = [0]

    def fused_torch() -> None:
        nonlocal state
        i = k[0] % 4
        k[0] += 1
        state, _ = lg.ginger_update_precondition(state, td[i], td[(i + 1) % 4], decay=0.99, damping=1.0, donate=True)

    for _ in range(3):
        fused_torch()
    t_fused = _median_time(fused_torch, n)
    param = torch.nn.Parameter(torch.zeros(dim))
    opt = Ginger([param], lr=1e-3, rank=rank, damping=1.0)

    def opt_step() -> None:
        i = k[0] % 4
        k[0] += 1
        param.grad = td[i]
        opt.step(curvature=[td[(i + 1) % 4]])

    for _ in range(3):
        opt_step()
    t_opt = _median_time(opt_step, n)
    print(f"torch: Ginger optimiser step / fused donated step = {t_opt / t_fused:.2f}")

    # JAX: the jitted, donated fused step, then the optax transformation.
    jd = [jnp.asarray(x) for x in ds]
    fused = jax.jit(lambda s, d, g: lg.ginger_update_precondition(s, d, g, decay=0.99, damping=1.0), donate_argnums=0)
    jstate = lg.ginger_init(dim, rank, xp=jnp, dtype=jnp.float32)

    def fused_jax() -> None:
        nonlocal jstate
        i = k[0] % 4
        k[0] += 1
        jstate, y = fused(jstate, jd[i], jd[(i + 1) % 4])
        y.block_until_ready()

    for _ in range(3):
        fused_jax()
    t_jfused = _median_time(fused_jax, n)
    tx = optax_ginger(1e-3, rank=rank, damping=1.0)
    params = {"w": jnp.zeros(dim, jnp.float32)}
    ostate = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train(params, ostate, g, d):
        updates, ostate = tx.update({"w": g}, ostate, params, curvature={"w": d})
        return optax.apply_updates(params, updates), ostate

    def optax_step() -> None:
        nonlocal params, ostate
        i = k[0] % 4
        k[0] += 1
        params, ostate = train(params, ostate, jd[i], jd[(i + 1) % 4])
        params["w"].block_until_ready()

    for _ in range(3):
        optax_step()
    t_optax = _median_time(optax_step, n)
    print(f"jax: optax ginger step / jitted donated fused step = {t_optax / t_jfused:.2f}")


if __name__ == "__main__":
    main()
