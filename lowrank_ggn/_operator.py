r"""The damped diagonal-plus-low-rank operator :math:`G = \gamma I + U \operatorname{diag}(\sigma) U^\top`.

``U`` (``basis``, shape ``(dim, rank)``) has orthonormal columns and
``σ`` (``eigvals``, shape ``(rank,)``) is non-negative, so ``G`` is symmetric
positive definite with eigenvalues ``γ + σ_i`` on ``span(U)`` and ``γ`` on its
orthogonal complement. Everything here costs O(dim · rank) per vector.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core import operator as core
from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.checks import cast_like, check_damping, check_like, check_lowrank, nan_if, traced_out_of_range
from lowrank_ggn.backends import array_namespace, is_array

__all__ = ["DampedLowRank", "damped_dense", "damped_matvec", "damped_solve", "kappa_from_sigma", "sigma_from_kappa"]


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
    return core.kappa_from_sigma(eigvals, core.as_scalar(xp, damping, eigvals))


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
    return core.sigma_from_kappa(xp, kappa, core.as_scalar(xp, damping, kappa))


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
    xp = check_lowrank(basis, eigvals)
    _check_rhs(g, "g", basis)
    check_damping(damping, like=basis)
    damping = nan_if(xp, traced_out_of_range(xp, basis, damping=damping), damping, basis)
    return cast_like(xp, core.solve(xp, basis, eigvals, cast_like(xp, g, basis), core.as_scalar(xp, damping, basis)), g)


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
    xp = check_lowrank(basis, eigvals)
    _check_rhs(v, "v", basis)
    check_damping(damping, like=basis)
    damping = nan_if(xp, traced_out_of_range(xp, basis, damping=damping), damping, basis)
    gamma = core.as_scalar(xp, damping, basis)
    return cast_like(xp, core.matvec(xp, basis, eigvals, cast_like(xp, v, basis), gamma), v)


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
    xp = check_lowrank(basis, eigvals)
    if not (is_array(damping) or float(damping) == 0.0):
        check_damping(damping, like=basis)
    return core.dense(xp, basis, eigvals, core.as_scalar(xp, damping, basis))


class DampedLowRank(NamedTuple):
    r"""The operator :math:`G = \gamma I + U \operatorname{diag}(\sigma) U^\top` as an object.

    A NamedTuple (hence a JAX pytree: it goes through ``jax.jit``) holding the
    three arrays that define the operator; the methods validate their inputs
    and call the library's core. Every approximation's ``operator(state,
    damping=γ)`` returns one (QNG's returns :class:`FactorProduct`), and
    :func:`lowrank_ggn.ginger_precondition` is ``operator(state, damping=γ).solve(g)``.

    This is the inverse on the whole space (``γ⁻¹`` on the complement of
    ``span U``), not a pseudo-inverse restricted to ``span U``.

    Parameters
    ----------
    diagonal : float or 0-d array
        γ > 0 (it may be traced under ``jax.jit``).
    basis : array, shape (dim, rank)
        U, orthonormal columns.
    eigvals : array, shape (rank,)
        σ ≥ 0.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank_ggn as lg
    >>> u, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 2)))
    >>> op = lg.DampedLowRank(diagonal=0.5, basis=u, eigvals=np.array([3.0, 1.0]))
    >>> g = np.ones(6)
    >>> bool(np.allclose(op.matvec(op.solve(g)), g))
    True
    """

    diagonal: Any
    """The damping γ > 0, the multiple of the identity."""
    basis: Array
    """The basis U, shape (dim, rank), orthonormal columns."""
    eigvals: Array
    """The eigenvalues σ, shape (rank,), non-negative."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``."""
        dim = self.basis.shape[0]
        return (dim, dim)

    def _checked(self, x: Any, name: str) -> tuple[ArrayNamespace, Any]:
        xp = check_lowrank(self.basis, self.eigvals)
        _check_rhs(x, name, self.basis)
        check_damping(self.diagonal, "diagonal", like=self.basis)
        return xp, core.as_scalar(xp, self.diagonal, self.basis)

    def matvec(self, v: Array) -> Array:
        """Apply the operator, ``G v = γv + U diag(σ) Uᵀ v``. Cost O(dim · rank · k).

        Parameters
        ----------
        v : array, shape (dim,) or (dim, k)
            Vector(s), one per column (float16/bfloat16 promoted exactly).

        Returns
        -------
        array
            ``G v``, shaped like ``v``, in its dtype.

        Raises
        ------
        ValueError, TypeError
            For a bad ``v`` or a non-positive ``diagonal``, as :func:`damped_matvec`.
        """
        xp, gamma = self._checked(v, "v")
        return cast_like(xp, core.matvec(xp, self.basis, self.eigvals, cast_like(xp, v, self.basis), gamma), v)

    def solve(self, g: Array) -> Array:
        """Apply the inverse, ``G⁻¹ g``, by Woodbury's identity (Eq 16), cancellation-free. Cost O(dim · rank · k).

        Parameters
        ----------
        g : array, shape (dim,) or (dim, k)
            Right-hand side(s), one per column (float16/bfloat16 promoted exactly).

        Returns
        -------
        array
            ``G⁻¹ g``, shaped like ``g``, in its dtype.

        Raises
        ------
        ValueError, TypeError
            For a bad ``g`` or a non-positive ``diagonal``, as :func:`damped_solve`.
        """
        xp, gamma = self._checked(g, "g")
        return cast_like(xp, core.solve(xp, self.basis, self.eigvals, cast_like(xp, g, self.basis), gamma), g)

    def dense(self) -> Array:
        """Materialise ``G`` (O(dim²) memory: for tests and small problems).

        Returns
        -------
        array, shape (dim, dim)
            ``γI + U diag(σ) Uᵀ``.
        """
        xp = check_lowrank(self.basis, self.eigvals)
        check_damping(self.diagonal, "diagonal", like=self.basis)
        return core.dense(xp, self.basis, self.eigvals, core.as_scalar(xp, self.diagonal, self.basis))
