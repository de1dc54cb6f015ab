r"""QNG's windowed product of rank-one factors, unchecked (the paper's §2.2, corrected).

``Â = K_0 K_1 ⋯ K_{τ−1}`` (slot 0 oldest) with ``K_i = s_i I + β_i q_i q_iᵀ``.
The state is any NamedTuple with the fields of :class:`lowrank_ggn.QNGState`;
the public face is :mod:`lowrank_ggn._qng`. Every sum over the parameter axis
(``q_iᵀv``, ``‖q‖²``, the finiteness of ``d``) is completed through ``reduce``.
"""

from __future__ import annotations

import math
from typing import Any

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.brand import finite_max_abs
from lowrank_ggn._core.checks import concrete_float
from lowrank_ggn._core.ginger import saturating_increment
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn._core.reduction import LOCAL, Reduction
from lowrank_ggn.backends import cond

__all__ = ["apply_factor", "check_decay_range", "factor_product", "precondition", "update"]


def apply_factor(state: Any, i: int, v: Array, *, inverse: bool, reduce: Reduction = LOCAL) -> Array:
    """``K_i v`` or ``K_i⁻¹ v`` for one slot; ``v`` of shape (dim, k)."""
    q = state.factors[i, :]
    s, beta = state.scales[i], state.betas[i]
    qv = reduce.sum(q @ v)  # (k,)
    # Scalars are combined with the (k,) coefficients first: one d×k temporary per term.
    if inverse:
        coef = beta / (s + beta * state.sqnorms[i])
        return (v - q[:, None] * (coef * qv)[None, :]) * (1 / s)
    return s * v + q[:, None] * (beta * qv)[None, :]


def factor_product(state: Any, v: Array, *, inverse: bool, transpose: bool, reduce: Reduction = LOCAL) -> Array:
    """Â v, Âᵀ v, Â⁻¹ v or Â⁻ᵀ v with ``Â = K_0 K_1 ⋯ K_{τ−1}`` (slot 0 oldest)."""
    rank = state.factors.shape[0]
    v2 = v if v.ndim == 2 else v[:, None]
    # Â v and Â⁻ᵀ v apply the newest factor first; Âᵀ v and Â⁻¹ v the oldest.
    newest_first = inverse == transpose
    order = range(rank - 1, -1, -1) if newest_first else range(rank)
    for i in order:
        v2 = apply_factor(state, i, v2, inverse=inverse, reduce=reduce)
    return v2 if v.ndim == 2 else v2[:, 0]


def update(xp: ArrayNamespace, state: Any, d: Array, *, decay: Any, reduce: Reduction = LOCAL) -> Any:
    """Append the factor of ``d`` and drop the oldest (see :func:`lowrank_ggn.qng_update`); a rejected ``d`` is counted."""
    factors = state.factors
    alpha = as_scalar(xp, decay, factors)
    finite = reduce.all(finite_max_abs(xp, d)[0])  # no boolean temporary of the size of d
    d_safe = xp.where(finite, d, xp.zeros_like(d))
    q = factor_product(state, d_safe, inverse=True, transpose=False, reduce=reduce)
    sqnorm = reduce.sum(xp.sum(q * q))
    sqrt_alpha = xp.sqrt(alpha)
    beta = (1 - alpha) / (xp.sqrt(alpha + (1 - alpha) * sqnorm) + sqrt_alpha)
    # ‖q‖² beyond √max would let the products qᵀv of a query (~ ‖q‖·‖(ÂÂᵀ)⁻¹g‖) overflow.
    limit = float(xp.finfo(factors.dtype).max) ** 0.5
    ok = finite & (sqnorm <= limit) & xp.isfinite(beta)

    def push(old: Array, new: Array) -> Array:
        return xp.concat([old[1:, ...], new[None, ...]], axis=0)

    def accept(st: Any) -> Any:
        return st._replace(
            factors=push(st.factors, q),
            betas=push(st.betas, beta),
            scales=push(st.scales, sqrt_alpha),
            sqnorms=push(st.sqnorms, sqnorm),
        )

    # A branch rather than a select over the window: a rejected update costs no pass over it.
    new = cond(ok, accept, lambda st: st, state)
    return new._replace(
        step=saturating_increment(xp, state.step, ok),
        num_nonfinite=saturating_increment(xp, state.num_nonfinite, ~ok),
    )


def check_decay_range(xp: ArrayNamespace, decay: Any, factors: Array) -> None:
    """Refuse a decay whose ``decay**rank`` leaves the dtype no range for the data.

    The factor vectors grow like ``α^{-τ/2}‖d‖`` and the preconditioner like
    ``α^{-τ}`` (its smallest eigenvalue is ``α^k``); half of the exponent range,
    ``α^τ ≥ √(smallest normal)``, is reserved for them.
    """
    value = concrete_float(decay, "decay")
    if value is None:
        return
    rank = factors.shape[0]
    floor = math.sqrt(float(xp.finfo(factors.dtype).smallest_normal))
    if rank * math.log(value) < math.log(floor):
        msg = (
            f"decay**rank = {value!r}**{rank} is below {floor:.3g}: QNG's factors grow like "
            f"decay**(-rank/2) and its preconditioner like decay**(-rank), which would overflow "
            f"{factors.dtype}; use a larger decay or a smaller rank"
            + (" (or float64)" if xp.finfo(factors.dtype).bits < 64 else "")
        )
        raise ValueError(msg)


def precondition(state: Any, g: Array, *, reduce: Reduction = LOCAL) -> Array:
    """``(ÂÂᵀ)⁻¹ g = Â⁻ᵀ Â⁻¹ g`` for ``g`` of shape (dim,) or (dim, k). Cost O(dim · rank · k)."""
    half = factor_product(state, g, inverse=True, transpose=False, reduce=reduce)
    return factor_product(state, half, inverse=True, transpose=True, reduce=reduce)
