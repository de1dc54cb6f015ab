r"""The damped diagonal-plus-low-rank operator :math:`G = \gamma I + U \operatorname{diag}(\sigma) U^\top`.

``U`` (``basis``, shape ``(dim, rank)``) has orthonormal columns and
``σ`` (``eigvals``, shape ``(rank,)``) is non-negative, so ``G`` is symmetric
positive definite with eigenvalues ``γ + σ_i`` on ``span(U)`` and ``γ`` on its
orthogonal complement. Everything here costs O(dim · rank) per vector.
"""

from __future__ import annotations

from typing import Any

from lowrank_ggn._reduction import LOCAL, Reduction
from lowrank_ggn._typing import Array, ArrayNamespace
from lowrank_ggn._validation import cast_like, check_damping, check_like
from lowrank_ggn.backends import array_namespace, device_of, is_array
from lowrank_ggn.backends._kernels import apply

__all__ = ["damped_dense", "damped_matvec", "damped_solve", "kappa_from_sigma", "sigma_from_kappa"]


def _scalar(xp: ArrayNamespace, value: Any, like: Array) -> Array:
    """``value`` as a 0-d array with the dtype and device of ``like``."""
    return xp.asarray(value, dtype=like.dtype, device=device_of(like))


def _check_lowrank(basis: Array, eigvals: Array) -> ArrayNamespace:
    if not is_array(basis):
        msg = f"basis must be an array, got {type(basis).__name__}"
        raise TypeError(msg)
    if basis.ndim != 2:
        msg = f"basis must be a 2-d array (dim, rank), got shape {tuple(basis.shape)}"
        raise ValueError(msg)
    xp = array_namespace(basis)
    if not xp.isdtype(basis.dtype, "real floating"):
        msg = f"basis must have a real floating dtype, got {basis.dtype}"
        raise TypeError(msg)
    check_like(eigvals, "eigvals", basis, shapes=((basis.shape[1],),))
    return xp


def _check_rhs(g: Array, name: str, basis: Array) -> ArrayNamespace:
    dim = basis.shape[0]
    return check_like(g, name, basis, shapes=((dim,), (dim, -1)), promote=True)


def kappa_from_sigma(eigvals: Array, damping: Any) -> Array:
    r"""Map curvature eigenvalues σ to the inverse-domain coefficients κ (Eq 16).

    .. math:: \kappa_i = \frac{\sigma_i}{\gamma(\gamma + \sigma_i)},
       \qquad (\gamma I + U\operatorname{diag}(\sigma)U^\top)^{-1}
       = \gamma^{-1} I - U \operatorname{diag}(\kappa) U^\top .

    Parameters
    ----------
    eigvals : array, shape (rank,)
        σ ≥ 0.
    damping : float or 0-d array
        γ > 0.

    Returns
    -------
    array, shape (rank,)
        κ, in [0, 1/γ).

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite, or ``γ²`` is outside the
        normal range of the dtype (``γ(γ + σ)`` would underflow to 0).
    """
    check_damping(damping, like=eigvals, squared=True)
    xp = array_namespace(eigvals)
    gamma = _scalar(xp, damping, eigvals)
    return eigvals / (gamma * (gamma + eigvals))


def sigma_from_kappa(kappa: Array, damping: Any) -> Array:
    r"""Map inverse-domain coefficients κ back to curvature eigenvalues σ (Eq 18).

    .. math:: \sigma_i = \frac{\gamma^2 \kappa_i}{1 - \gamma \kappa_i}

    The inverse of :func:`kappa_from_sigma` on ``0 ≤ κ < 1/γ``. The map
    loses relative precision as ``γκ → 1`` (that is, σ ≫ γ): ``1 − γκ ≈ γ/σ``
    is computed by cancellation. That is why the library's default Ginger
    update never goes through it.

    Parameters
    ----------
    kappa : array, shape (rank,)
        κ in [0, 1/γ). Values with ``γκ ≥ 1`` (only produced by rounding) map
        to ``+inf``.
    damping : float or 0-d array
        γ > 0.

    Returns
    -------
    array, shape (rank,)
        σ ≥ 0.

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite, or ``γ²`` is outside the
        normal range of the dtype.
    """
    check_damping(damping, like=kappa, squared=True)
    xp = array_namespace(kappa)
    return _sigma_from_kappa(xp, kappa, _scalar(xp, damping, kappa))


def _sigma_from_kappa(xp: ArrayNamespace, kappa: Array, gamma: Array) -> Array:
    """Unchecked core of :func:`sigma_from_kappa` (``gamma`` a 0-d array)."""
    denom = 1 - gamma * kappa
    positive = denom > 0
    safe = xp.where(positive, denom, xp.ones_like(denom))
    return xp.where(positive, gamma * gamma * kappa / safe, xp.full_like(kappa, xp.inf))


def damped_solve(basis: Array, eigvals: Array, g: Array, *, damping: Any) -> Array:
    r"""Apply the inverse of the damped operator to a vector or to a batch of vectors (Eq 15–16).

    .. math::
       (\gamma I + U\operatorname{diag}(\sigma)U^\top)^{-1} g
       = U\,\frac{c}{\gamma + \sigma} + \frac{g - U c}{\gamma},
       \qquad c = U^\top g,

    which is Eq 16 (``g/γ − U diag(κ) Uᵀ g``) rearranged so that no two large
    terms cancel when σ ≫ γ. Both products with ``U`` are done in one matrix
    product, so ``U`` is read twice in total. Cost O(dim · rank · k).

    Parameters
    ----------
    basis : array, shape (dim, rank)
        U, orthonormal columns.
    eigvals : array, shape (rank,)
        σ ≥ 0.
    g : array, shape (dim,) or (dim, k)
        Right-hand side(s), one per column.
    damping : float or 0-d array
        γ > 0. May be traced under ``jax.jit`` (then it is not checked).

    Returns
    -------
    array, same shape as ``g``
        ``G⁻¹ g``, with the dtype and device of the inputs.

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite (or outside the normal range
        of the dtype), or a shape is wrong.
    TypeError
        If the arrays come from different namespaces or have different or
        non-real-floating dtypes.
    """
    xp = _check_lowrank(basis, eigvals)
    _check_rhs(g, "g", basis)
    check_damping(damping, like=basis)
    return cast_like(xp, _solve(xp, basis, eigvals, cast_like(xp, g, basis), _scalar(xp, damping, basis)), g)


def _solve(
    xp: ArrayNamespace, basis: Array, eigvals: Array, g: Array, gamma: Array, *, reduce: Reduction = LOCAL
) -> Array:
    """Unchecked core of :func:`damped_solve` (``gamma`` a 0-d array; ``reduce`` completes ``Uᵀg``)."""
    if g.ndim == 1:
        # Eq 16 with the coefficients combined before touching U again:
        # y = g/γ + U z, z = c/(γ+σ) − c/γ = −σc/(γ(γ+σ)). Two reads of U and
        # O(dim) vector work; the same rounding as (g − Uc)/γ + U c/(γ+σ).
        c = reduce.sum(g @ basis)
        return apply(xp, basis, -(c / gamma) * (eigvals / (gamma + eigvals)), g, 1 / gamma)
    g2 = g
    k = g2.shape[1]
    c = reduce.sum(basis.T @ g2)
    coef = xp.concat([c, c / (gamma + eigvals)[:, None]], axis=1)
    both = basis @ coef
    return (g2 - both[:, :k]) / gamma + both[:, k:]


def damped_matvec(basis: Array, eigvals: Array, v: Array, *, damping: Any) -> Array:
    r"""Apply the damped operator: :math:`\gamma v + U \operatorname{diag}(\sigma) U^\top v`.

    Parameters
    ----------
    basis : array, shape (dim, rank)
        U, orthonormal columns.
    eigvals : array, shape (rank,)
        σ ≥ 0.
    v : array, shape (dim,) or (dim, k)
        Vector(s), one per column.
    damping : float or 0-d array
        γ > 0.

    Returns
    -------
    array, same shape as ``v``
        ``γ v + U diag(σ) Uᵀ v``.

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite (or outside the normal range
        of the dtype), or a shape is wrong.
    TypeError
        If the arrays come from different namespaces or have different dtypes.
    """
    xp = _check_lowrank(basis, eigvals)
    _check_rhs(v, "v", basis)
    check_damping(damping, like=basis)
    gamma = _scalar(xp, damping, basis)
    w = cast_like(xp, v, basis)
    c = basis.T @ w
    scaled = eigvals * c if v.ndim == 1 else eigvals[:, None] * c
    return cast_like(xp, gamma * w + basis @ scaled, v)


def damped_dense(basis: Array, eigvals: Array, *, damping: Any = 0.0) -> Array:
    r"""Materialise :math:`\gamma I + U \operatorname{diag}(\sigma) U^\top` as a dense matrix.

    O(dim²) memory: for tests, studies and small problems only.

    Parameters
    ----------
    basis : array, shape (dim, rank)
        U.
    eigvals : array, shape (rank,)
        σ.
    damping : float or 0-d array, default 0
        γ ≥ 0; ``0`` gives the undamped low-rank part.

    Returns
    -------
    array, shape (dim, dim)
        ``γI + U diag(σ) Uᵀ``.

    Raises
    ------
    ValueError
        If ``damping`` is negative or non-finite.
    """
    xp = _check_lowrank(basis, eigvals)
    if not (is_array(damping) or float(damping) == 0.0):
        check_damping(damping, like=basis)
    dim = basis.shape[0]
    eye = xp.eye(dim, dtype=basis.dtype, device=device_of(basis))
    return _scalar(xp, damping, basis) * eye + (basis * eigvals) @ basis.T
