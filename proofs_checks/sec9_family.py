r"""DESIGN §9: the approximation family's certificates, checked against dense float64.

For Ginger and for Frequent Directions alike, :math:`0 \preceq M_t - \tilde M_t \preceq \rho_t I` with
:math:`\rho_t = \alpha\rho_{t-1} + \delta_t` (``state.escaped``); the streaming Nyström
reconstruction satisfies :math:`\hat M \preceq M` (to its shift ν) and is exact while
:math:`\operatorname{rank} M \le \tau \le s`. The library runs on the chosen backend; the references
are the dense EMA and its eigenvalues in NumPy float64.
"""

from __future__ import annotations

import numpy as np

import lowrank_ggn as lg
from proofs_checks._context import Context
from proofs_checks._numerics import ema, stream
from proofs_checks._registry import Outcome, check


def _kept(ctx: Context, state: lg.GingerState) -> np.ndarray:
    u, s = ctx.to_numpy(state.basis), ctx.to_numpy(state.eigvals)
    return (u * s) @ u.T


@check(
    "rho-bound",
    section="DESIGN §9",
    statement=r"$0 \preceq M_t - \tilde M_t \preceq \rho_t I$, $\rho_t = \alpha\rho_{t-1} + \delta_t$",
    what=r"for Ginger and Frequent Directions, at every step, the eigenvalues of $M_t - \tilde M_t$ (dense "
    r"float64 EMA) lie in $[0, \rho_t]$ with $\rho_t$ = `state.escaped`",
)
def rho_bound(ctx: Context) -> Outcome:
    """Run both methods on a power-law stream; compare with the dense EMA after every step."""
    dim, rank, alpha = 30, 4, 0.9
    steps = ctx.size(30, 120)
    data = stream(ctx.rng, steps, dim)
    out = Outcome(f"d={dim}, τ={rank}, α={alpha}, {steps} steps, power-law stream")
    for name, approx in (
        ("Ginger", lg.ginger(rank=rank, decay=alpha)),
        ("FD", lg.frequent_directions(rank=rank, decay=alpha)),
    ):
        state = approx.init(dim, xp=ctx.xp, dtype=ctx.dtype)
        low, high, ratio = 0.0, 0.0, 0.0
        for t in range(steps):
            state = approx.update(state, ctx.asarray(data[t]))
            m = ema(data[: t + 1], alpha)
            ev = np.linalg.eigvalsh(m - _kept(ctx, state))
            rho = ctx.scalar(state.escaped)
            scale = np.abs(m).max()
            low = max(low, -ev[0] / scale)
            high = max(high, (ev[-1] - rho) / scale)
            ratio = ev[-1] / rho if rho > 0 else ratio
        out.add(rf"{name}: $\max_t -\lambda_{{\min}}(M_t - \tilde M_t)$ (rel.)", low, ctx.tol(200))
        out.add(rf"{name}: $\max_t \lambda_{{\max}}(M_t - \tilde M_t) - \rho_t$ (rel.)", high, ctx.tol(200))
        out.add(rf"{name}: tightness $\|M - \tilde M\|_2/\rho$ at the last step", ratio, 1.0, form="info")
    return out


@check(
    "nystrom-order",
    section="DESIGN §9",
    statement=r"streaming Nyström: $\hat M \preceq M$; $\hat M = M$ when $\operatorname{rank} M \le \tau \le s$",
    what=r"the shifted reconstruction (Tropp et al. 2017, Alg. 3) of the streamed sketch $Y = M\Omega$ is "
    r"below the dense EMA, and equals it for a stream of rank ≤ τ",
)
def nystrom_order(ctx: Context) -> Outcome:
    """Full-rank and low-rank streams against the dense EMA."""
    dim, rank, size, alpha, gamma = 30, 4, 8, 0.9, 1.0
    steps = ctx.size(20, 60)
    approx = lg.nystrom(rank=rank, decay=alpha, sketch_size=size)
    out = Outcome(f"d={dim}, τ={rank}, s={size}, α={alpha}, {steps} steps")
    low_rank = ctx.rng.standard_normal((dim, 3)) @ ctx.rng.standard_normal((3, steps))
    for label, data in (("power-law stream", stream(ctx.rng, steps, dim)), ("rank-3 stream", low_rank.T)):
        state = approx.init(dim, xp=ctx.xp, dtype=ctx.dtype)
        for d in data:
            state = approx.update(state, ctx.asarray(d))
        m = ema(data, alpha)
        hat = ctx.to_numpy(approx.operator(state, damping=gamma).dense()) - gamma * np.eye(dim)
        scale = np.abs(m).max()
        out.add(
            rf"{label}: $-\lambda_{{\min}}(M - \hat M)$ (rel.)", -np.linalg.eigvalsh(m - hat)[0] / scale, ctx.tol(1000)
        )
        if label.startswith("rank"):
            out.add(r"rank-3 stream: $\|\hat M - M\|_{\max}$ (rel.)", np.abs(hat - m).max() / scale, ctx.tol(1e4))
    return out
