r"""Frequent Directions in EMA form (Liberty 2013; Ghashami et al. 2016; Sketchy), unchecked.

The state is a :class:`lowrank_ggn.GingerState`. One step plans Brand's update
of the (τ+1)-core of ``α M̃ + (1−α) d dᵀ`` exactly as Ginger does
(:func:`lowrank_ggn._core.brand.plan`, same two passes over the basis and the
same fused query), then, instead of dropping the smallest eigenvalue
``δ = λ_{τ+1}``, subtracts it from the τ kept ones (clamped at 0):

.. math:: \tilde M_t = \sum_{i \le \tau} (\lambda_i - \delta)_+ u_i u_i^\top,
   \qquad 0 \preceq C_t - \tilde M_t \preceq \delta I .

``escaped ← α·escaped + δ`` (the certificate ``0 ⪯ M_t − M̃_t ⪯ ρ_t I``) and
``discarded ← α·discarded + (trace dropped)``, which keeps
``trace(M_t) = Σσ + discarded``. Cost O(dim · rank²) per step, as Ginger.
"""

from __future__ import annotations

from typing import Any

from lowrank_ggn._core import ginger
from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.brand import Plan
from lowrank_ggn._core.reduction import LOCAL, Reduction

__all__ = ["shrink", "update", "update_precondition"]


def shrink(xp: ArrayNamespace, brand: Plan) -> ginger.Truncation:
    """Frequent Directions' rule: subtract δ (the dropped eigenvalue plus residual mass) from the kept ones."""
    delta = brand.discarded
    shifted = brand.eigvals - delta
    kept = xp.where(shifted > 0, shifted, xp.zeros_like(shifted))
    # What each kept direction lost, min(λ_i, δ), plus the dropped direction itself.
    trace = xp.sum(brand.eigvals - kept) + delta
    return ginger.Truncation(kept, trace, delta)


def update(
    xp: ArrayNamespace,
    state: Any,
    d: Array,
    *,
    decay: Any,
    reorthonormalize_every: int | None,
    reduce: Reduction = LOCAL,
    donate: bool = False,
) -> Any:
    """Fold ``d`` into the sketch (Ginger's update with :func:`shrink`). Cost O(dim · rank²)."""
    return ginger.update(
        xp,
        state,
        d,
        decay=decay,
        reorthonormalize_every=reorthonormalize_every,
        reduce=reduce,
        donate=donate,
        truncate=shrink,
    )


def update_precondition(
    xp: ArrayNamespace,
    state: Any,
    d: Array,
    g: Array,
    *,
    decay: Any,
    damping: Any,
    reorthonormalize_every: int | None,
    reduce: Reduction = LOCAL,
    donate: bool = False,
) -> tuple[Any, Array]:
    """Fold ``d``, then ``(γI + U'diag(σ')U'ᵀ)⁻¹ g`` of the new sketch, in Ginger's two passes."""
    return ginger.update_precondition(
        xp,
        state,
        d,
        g,
        decay=decay,
        damping=damping,
        reorthonormalize_every=reorthonormalize_every,
        reduce=reduce,
        donate=donate,
        truncate=shrink,
    )
