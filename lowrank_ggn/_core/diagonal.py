r"""The exact diagonal of the EMA, alone (:func:`lowrank_ggn.diagonal`) or beside Ginger (SLANG), unchecked.

``m_t = α m_{t−1} + (1−α) d_t ∘ d_t`` is the diagonal of the exact EMA
``M_t`` (DESIGN §9), O(dim) memory and time per step. Beside Ginger's
``M̃ = U diag(σ) Uᵀ`` the operator is ``D + M̃`` with
``D = γ + max(m − diag(M̃), 0)``: since ``M̃ ⪯ M``, ``diag(M̃) ≤ m`` in exact
arithmetic and ``diag(D + M̃) = γ + m``, the diagonal of ``γI + M``.
A non-finite ``d`` leaves ``m`` unchanged (and counts in ``num_nonfinite``).
"""

from __future__ import annotations

from typing import Any

from lowrank_ggn._core import ginger
from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.brand import finite_max_abs
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn._core.reduction import LOCAL, Reduction

__all__ = ["correction", "fold_diagonal", "ginger_update", "update"]


def fold_diagonal(xp: ArrayNamespace, m: Array, d: Array, alpha: Array, ok: Array) -> Array:
    """``α m + (1−α) d∘d`` where ``ok``, else ``m`` (a non-finite ``d`` never reaches ``m``).

    The new term is ``(√(1−α) d)²``: it overflows only where ``(1−α) d_i²`` does.
    """
    d_safe = xp.where(ok, d, xp.zeros_like(d)) * xp.sqrt(1 - alpha)
    return xp.where(ok, alpha * m + d_safe * d_safe, m)


def update(xp: ArrayNamespace, state: Any, d: Array, *, decay: Any, reduce: Reduction = LOCAL) -> Any:
    """Fold ``d`` into ``state.diagonal`` (fields ``diagonal``, ``step``, ``num_nonfinite``). Cost O(dim)."""
    alpha = as_scalar(xp, decay, state.diagonal)
    ok = reduce.all(finite_max_abs(xp, d)[0])
    new = fold_diagonal(xp, state.diagonal, d, alpha, ok)
    ok = ok & xp.all(xp.isfinite(new))
    return state._replace(
        diagonal=xp.where(ok, new, state.diagonal),
        step=ginger.saturating_increment(xp, state.step, ok),
        num_nonfinite=ginger.saturating_increment(xp, state.num_nonfinite, ~ok),
    )


def ginger_update(
    xp: ArrayNamespace,
    state: Any,
    d: Array,
    *,
    decay: Any,
    reorthonormalize_every: int | None,
    reduce: Reduction = LOCAL,
    donate: bool = False,
) -> Any:
    """Ginger's update of the low-rank fields and the exact diagonal, accepted or rejected together.

    A ``d`` whose diagonal update overflows is passed to Ginger as NaN (rejected, counted).
    """
    alpha = as_scalar(xp, decay, state.diagonal)
    finite = reduce.all(finite_max_abs(xp, d)[0])
    m = fold_diagonal(xp, state.diagonal, d, alpha, finite)
    d = xp.where(reduce.all(finite & xp.all(xp.isfinite(m))), d, xp.full_like(d, xp.nan))
    # Ginger's counters saturate: its verdict is read from a rejection counter started at 0.
    zero = xp.zeros_like(state.num_nonfinite)
    new = ginger.update(
        xp,
        state._replace(num_nonfinite=zero),
        d,
        decay=decay,
        reorthonormalize_every=reorthonormalize_every,
        reduce=reduce,
        donate=donate,
    )
    ok = new.num_nonfinite == zero
    return new._replace(
        diagonal=xp.where(ok, m, state.diagonal),
        num_nonfinite=ginger.saturating_increment(xp, state.num_nonfinite, ~ok),
    )


def correction(xp: ArrayNamespace, state: Any, gamma: Array) -> Array:
    """``D = γ + max(m − diag(U diag(σ) Uᵀ), 0)``, shape (dim,). Cost O(dim · rank)."""
    low = (state.basis * state.basis) @ state.eigvals
    gap = state.diagonal - low
    return gamma + xp.where(gap > 0, gap, xp.zeros_like(gap))
