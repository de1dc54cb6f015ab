r"""The Sherman–Morrison EMA step of the paper's Eq 17, corrected.

The undamped curvature ``U diag(σ) Uᵀ`` is decayed by α and receives the
rank-one term ``(1 − α) d dᵀ``; the damping γ is added afterwards. With

.. math::
   h = (\gamma I + \alpha U \operatorname{diag}(\sigma) U^\top)^{-1} d, \qquad
   \beta = \frac{1 - \alpha}{1 + (1 - \alpha)\, h^\top d}, \qquad
   \kappa'_i = \frac{\alpha\sigma_i}{\gamma(\gamma + \alpha\sigma_i)},

the inverse of the untruncated damped EMA is

.. math::
   \bigl(\gamma I + \alpha U \operatorname{diag}(\sigma) U^\top + (1-\alpha) d d^\top\bigr)^{-1}
   = \gamma^{-1} I - \bigl[U \operatorname{diag}(\kappa') U^\top + \beta\, h h^\top\bigr].

The paper prints ``γI + αG_{t−1,γ}`` (which decays the damping too),
``β = α⁻¹/(α + (1−α)hᵀd)`` and ``h = G_{t,γ/α}⁻¹ d``; the forms above are the
correct ones (see the errata page).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core import sherman_morrison as core
from lowrank_ggn._core.aliases import Array
from lowrank_ggn._core.checks import cast_like, check_damping, check_decay, check_like, check_lowrank
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn.backends import array_namespace

__all__ = ["ShermanMorrisonStep", "sherman_morrison_step"]


class ShermanMorrisonStep(NamedTuple):
    r"""The inverse-domain pieces of Eq 17 (corrected).

    ``(γI + αUΣUᵀ + (1−α)ddᵀ)⁻¹ = γ⁻¹I − U diag(kappa) Uᵀ − beta · h hᵀ``.

    Parameters
    ----------
    kappa, h, beta : array
        The fields, in this order (see the attributes below).
    """

    kappa: Array
    """Coefficients κ' = ασ/(γ(γ+ασ)), shape (rank,)."""
    h: Array
    """Vector h = (γI + αUΣUᵀ)⁻¹ d, shape (dim,)."""
    beta: Array
    """Weight β = (1−α)/(1 + (1−α)hᵀd), 0-d."""


def sherman_morrison_step(basis: Array, eigvals: Array, d: Array, *, decay: Any, damping: Any) -> ShermanMorrisonStep:
    r"""One EMA step of the damped curvature, in the inverse domain (Eq 17, corrected).

    Parameters
    ----------
    basis : array, shape (dim, rank)
        U, orthonormal columns.
    eigvals : array, shape (rank,)
        σ ≥ 0, the undamped curvature's eigenvalues.
    d : array, shape (dim,)
        The curvature vector (Eq 8).
    decay : float or 0-d array
        α ∈ (0, 1).
    damping : float or 0-d array
        γ > 0.

    Returns
    -------
    ShermanMorrisonStep
        ``(kappa, h, beta)`` with
        ``(γI + αUΣUᵀ + (1−α)ddᵀ)⁻¹ = γ⁻¹I − U diag(kappa) Uᵀ − beta h hᵀ``.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), ``damping`` ≤ 0, non-finite or with ``γ²``
        outside the dtype's normal range, or a shape is wrong.
    TypeError
        If the arrays come from different namespaces or have different dtypes.
    """
    check_lowrank(basis, eigvals)
    check_like(d, "d", basis, shapes=((basis.shape[0],),), promote=True)
    check_decay(decay, like=basis)
    check_damping(damping, like=basis, squared=True)
    xp = array_namespace(basis, d)
    return ShermanMorrisonStep(
        *core.step(
            xp,
            basis,
            eigvals,
            cast_like(xp, d, basis),
            alpha=as_scalar(xp, decay, basis),
            gamma=as_scalar(xp, damping, basis),
        )
    )
