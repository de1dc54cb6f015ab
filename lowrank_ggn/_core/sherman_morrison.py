r"""The Sherman–Morrison EMA step (the paper's Eq 17, corrected), unchecked.

With ``h = (γI + α U diag(σ) Uᵀ)⁻¹ d`` and ``β = (1−α) / (1 + (1−α) hᵀd)``,

.. math::
   (\gamma I + \alpha U \Sigma U^\top + (1-\alpha) d d^\top)^{-1}
   = \gamma^{-1} I - U \operatorname{diag}(\kappa') U^\top - \beta\, h h^\top,
   \qquad \kappa' = \frac{\alpha\sigma}{\gamma(\gamma + \alpha\sigma)} .

The public face is :func:`lowrank_ggn.sherman_morrison_step`; Ginger's
Sherman–Morrison update path (:func:`lowrank_ggn._core.ginger.update_sherman_morrison`)
Brand-updates this inverse and maps back with Eq 18.
"""

from __future__ import annotations

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.operator import solve
from lowrank_ggn._core.reduction import LOCAL, Reduction

__all__ = ["step"]


def step(
    xp: ArrayNamespace, basis: Array, eigvals: Array, d: Array, *, alpha: Array, gamma: Array, reduce: Reduction = LOCAL
) -> tuple[Array, Array, Array]:
    """Return ``(κ', h, β)`` of Eq 17 (corrected); ``alpha`` and ``gamma`` are 0-d arrays. Cost O(dim · rank)."""
    decayed = alpha * eigvals
    h = solve(xp, basis, decayed, d, gamma, reduce=reduce)
    beta = (1 - alpha) / (1 + (1 - alpha) * reduce.sum(xp.sum(h * d)))
    kappa = decayed / (gamma * (gamma + decayed))
    return kappa, h, beta
