r"""Rank-one update of a truncated symmetric eigendecomposition (Brand, 2006).

Given ``U`` (dim × rank, orthonormal columns), eigenvalues ``λ ≥ 0`` and a
vector ``v``, compute the best rank-``rank`` eigendecomposition of

.. math:: s\, U \operatorname{diag}(\lambda) U^\top + \rho\, v v^\top

by working in the (rank + 1)-dimensional space ``span[U, v]``. With
``c = Uᵀv``, ``p̃ = v − Uc``, ``r = ‖p̃‖`` and ``p = p̃ / r``:

.. math::
   s\,U\Lambda U^\top + \rho\, v v^\top = [U\;p]\; C\; [U\;p]^\top, \qquad
   C = \begin{pmatrix} s\Lambda + \rho\, c c^\top & \rho\, r\, c \\
                       \rho\, r\, c^\top & \rho\, r^2 \end{pmatrix}.

The eigendecomposition ``C = V diag(μ) Vᵀ`` gives the new basis ``[U p] V``;
keeping the ``rank`` largest ``μ`` is the Eckart–Young truncation. Cost
O(dim · rank² + rank³).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core.aliases import Array
from lowrank_ggn._core.brand import rank_one_update, reorthonormalize_qr
from lowrank_ggn._core.checks import cast_like, check_like, check_scalar, concrete_float
from lowrank_ggn.backends import array_namespace, is_array

__all__ = ["RankOneUpdate", "lowrank_eigh_update", "reorthonormalize"]


class RankOneUpdate(NamedTuple):
    """Result of :func:`lowrank_eigh_update`.

    Parameters
    ----------
    basis, eigvals, discarded : array
        The fields, in this order (see the attributes below).
    """

    basis: Array
    """New orthonormal basis, shape (dim, rank)."""
    eigvals: Array
    """New eigenvalues, shape (rank,), non-negative and sorted descending."""
    discarded: Array
    """The largest eigenvalue dropped by the truncation (0-d).

    It is the spectral-norm error of the truncation (Eckart–Young), plus
    ``ρr²`` when a rounding-level residual was dropped."""


def lowrank_eigh_update(
    basis: Array,
    eigvals: Array,
    v: Array,
    *,
    weight: Any,
    scale: Any = 1.0,
) -> RankOneUpdate:
    r"""Best rank-``rank`` eigendecomposition of ``scale·U diag(λ) Uᵀ + weight·v vᵀ``.

    Brand's (2006) rank-one update of a symmetric eigendecomposition followed
    by the Eckart–Young truncation back to ``rank = basis.shape[1]`` columns.

    .. math::
       U' \operatorname{diag}(\lambda') U'^\top
       = \operatorname*{arg\,min}_{\operatorname{rank} \le \tau}
         \bigl\| s\,U\Lambda U^\top + \rho\, v v^\top - X \bigr\|_2

    Numerical details:

    * ``v − U Uᵀ v`` is re-orthogonalised once (classical Gram–Schmidt twice,
      DGKS criterion) when cancellation makes it necessary, so the new basis
      stays orthonormal to working precision.
    * ``r = 0`` (``v`` in ``span U``, or ``v = 0``) is handled without
      dividing by ``r``: the extra direction gets a negative sentinel
      eigenvalue, so only ``U`` is rotated. A residual at the rounding level,
      ``r ≤ √eps·‖v‖``, is treated the same way (its curvature ``ρr²``, below
      the rounding level of the update, is counted in ``discarded``): such a
      residual is mostly rounding error, and admitting it as a new direction
      would let the basis lose orthogonality step after step.
    * Eigenvalues are sorted explicitly (the array API does not promise
      ``eigh``'s order) and rounding negatives are clamped to 0.

    Parameters
    ----------
    basis : array, shape (dim, rank)
        U, orthonormal columns.
    eigvals : array, shape (rank,)
        λ ≥ 0.
    v : array, shape (dim,)
        The update vector.
    weight : float or 0-d array
        ρ ≥ 0 (the update is a PSD rank-one term).
    scale : float or 0-d array, default 1
        s ≥ 0, multiplies the current matrix (the EMA decay).

    Returns
    -------
    RankOneUpdate
        ``(basis, eigvals, discarded)``: the new basis (orthonormal columns),
        the new eigenvalues (descending, ≥ 0) and the largest eigenvalue that
        the truncation dropped. If the (rank+1)×(rank+1) core overflows (a
        huge ``v``), the eigenvalues are NaN so that callers can reject the
        update; non-finite inputs give non-finite outputs.

    Raises
    ------
    ValueError
        If ``weight`` or ``scale`` is negative (when concrete) or a shape is
        wrong.
    TypeError
        If the arrays come from different namespaces or have different dtypes.
    """
    if not is_array(basis) or basis.ndim != 2:
        msg = "basis must be a 2-d array (dim, rank)"
        raise ValueError(msg) if is_array(basis) else TypeError(msg)
    check_like(eigvals, "eigvals", basis, shapes=((basis.shape[1],),))
    check_like(v, "v", basis, shapes=((basis.shape[0],),), promote=True)
    for value, name in ((weight, "weight"), (scale, "scale")):
        check_scalar(value, name)
        concrete = concrete_float(value, name)
        if concrete is not None and not concrete >= 0.0:
            msg = f"{name} must be non-negative, got {concrete!r}"
            raise ValueError(msg)
    xp = array_namespace(basis, eigvals, v)
    return RankOneUpdate(*rank_one_update(xp, basis, eigvals, cast_like(xp, v, basis), weight=weight, scale=scale))


def reorthonormalize(basis: Array, eigvals: Array) -> tuple[Array, Array]:
    r"""Restore exact orthonormality of ``U`` without changing ``U diag(λ) Uᵀ``.

    With ``U = QR`` (thin QR), ``U Λ Uᵀ = Q (R Λ Rᵀ) Qᵀ``; the eigendecomposition
    ``R Λ Rᵀ = W diag(μ) Wᵀ`` gives ``U' = QW`` (orthonormal to working
    precision) and ``λ' = μ`` (sorted descending, rounding negatives clamped
    to 0). Cost O(dim · rank²).

    Parameters
    ----------
    basis : array, shape (dim, rank)
        A nearly orthonormal U.
    eigvals : array, shape (rank,)
        λ ≥ 0.

    Returns
    -------
    tuple of arrays
        ``(basis, eigvals)`` representing the same matrix.
    """
    if not is_array(basis) or basis.ndim != 2:
        msg = "basis must be a 2-d array (dim, rank)"
        raise ValueError(msg) if is_array(basis) else TypeError(msg)
    check_like(eigvals, "eigvals", basis, shapes=((basis.shape[1],),))
    xp = array_namespace(basis, eigvals)
    return reorthonormalize_qr(xp, basis, eigvals)
