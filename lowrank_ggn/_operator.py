r"""The damped diagonal-plus-low-rank operator :math:`G = \gamma I + U \operatorname{diag}(\sigma) U^\top`.

``U`` (``basis``, shape ``(dim, rank)``) has orthonormal columns and
``σ`` (``eigvals``, shape ``(rank,)``) is non-negative, so ``G`` is symmetric
positive definite with eigenvalues ``γ + σ_i`` on ``span(U)`` and ``γ`` on its
orthogonal complement. Everything here costs O(dim · rank) per vector.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from lowrank_ggn._core import operator as core
from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.checks import cast_like, check_damping, check_like, check_lowrank, nan_if, traced_out_of_range
from lowrank_ggn.backends import array_namespace, device_of, is_array, is_traced, to_numpy

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
    r"""The operator :math:`G = D + U \operatorname{diag}(\sigma) U^\top` as an object, ``D`` a scalar or a diagonal.

    A NamedTuple (hence a JAX pytree: it goes through ``jax.jit``) holding the
    three arrays that define the operator; the methods validate their inputs
    and call the library's core. Every approximation's ``operator(state,
    damping=γ)`` returns one (QNG's returns :class:`FactorProduct`), and
    :func:`lowrank_ggn.ginger_precondition` is ``operator(state, damping=γ).solve(g)``.

    ``solve`` is the inverse on the whole space (``D⁻¹`` on the complement of
    ``span U``, for a scalar D), not a pseudo-inverse restricted to ``span U``
    (the operator nngeometry's low-rank inverses compute is that other one).

    Cost: with a scalar ``diagonal`` every query is O(dim · rank) per vector.
    With a vector ``diagonal``, ``solve``, ``logdet``, ``sqrt_matvec`` and
    ``inv_sqrt_matvec`` first factorise ``D^{-1/2} U diag(σ)^{1/2}`` (thin QR
    and a rank × rank SVD, O(dim · rank²)) at every call; ``matvec``,
    ``diag``, ``trace`` stay O(dim · rank). Formulas: DESIGN §9 and the
    module ``lowrank_ggn._core.operator``.

    Parameters
    ----------
    diagonal : float, 0-d array or array of shape (dim,)
        D > 0 (entrywise): γ, or a diagonal (it may be traced under ``jax.jit``).
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
    >>> z = np.random.default_rng(1).standard_normal((6, 100_000))
    >>> bool(np.allclose(np.cov(op.sqrt_matvec(z)), op.dense(), atol=0.05))
    True
    """

    diagonal: Any
    """The diagonal D > 0: a scalar (the damping γ) or a (dim,) vector."""
    basis: Array
    """The basis U, shape (dim, rank), orthonormal columns."""
    eigvals: Array
    """The eigenvalues σ, shape (rank,), non-negative."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``."""
        dim = self.basis.shape[0]
        return (dim, dim)

    def _diag(self) -> tuple[ArrayNamespace, Array]:
        """Check the operator; return its namespace and D as a 0-d or (dim,) array."""
        xp = check_lowrank(self.basis, self.eigvals)
        diag = self.diagonal
        if is_array(diag) and getattr(diag, "ndim", 0) == 1:
            check_like(diag, "diagonal", self.basis, shapes=((self.basis.shape[0],),))
            if not is_traced(diag):
                host = to_numpy(diag)  # on the host: also concrete inside another function's trace
                low = float(host.min())
                if not (low > 0 and bool(np.all(np.isfinite(host)))):
                    msg = f"diagonal must be positive and finite everywhere, got a minimum of {low!r}"
                    raise ValueError(msg)
            return xp, diag
        check_damping(diag, "diagonal", like=self.basis)
        return xp, core.as_scalar(xp, diag, self.basis)

    def _checked(self, x: Any, name: str) -> tuple[ArrayNamespace, Any]:
        xp, diag = self._diag()
        _check_rhs(x, name, self.basis)
        return xp, diag

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
        xp, diag = self._checked(v, "v")
        out = core.diag_matvec(xp, diag, self.basis, self.eigvals, cast_like(xp, v, self.basis))
        return cast_like(xp, out, v)

    def solve(self, g: Array) -> Array:
        """Apply the inverse, ``G⁻¹ g``, by Woodbury's identity, cancellation-free.

        Stable when D is tiny against σ (no ``Σ⁻¹`` and no difference of two
        large terms). Cost O(dim · rank · k), plus O(dim · rank²) for a vector D.

        Parameters
        ----------
        g : array, shape (dim,) or (dim, k)
            Right-hand side(s), one per column (lower precisions promoted exactly).

        Returns
        -------
        array
            ``G⁻¹ g``, shaped like ``g``, in its dtype.

        Raises
        ------
        ValueError, TypeError
            For a bad ``g`` or a non-positive ``diagonal``, as :func:`damped_solve`.
        """
        xp, diag = self._checked(g, "g")
        x = cast_like(xp, g, self.basis)
        if diag.ndim == 0:
            return cast_like(xp, core.solve(xp, self.basis, self.eigvals, x, diag), g)
        return cast_like(xp, core.diag_solve(xp, core.whiten(xp, diag, self.basis, self.eigvals), x), g)

    def sqrt_matvec(self, v: Array) -> Array:
        """``L v`` for one factor ``L`` with ``L Lᵀ = G`` (so ``L z ~ N(0, G)`` for ``z ~ N(0, I)``).

        ``L = D^{1/2}(I + B(√(1+s²) − 1)Bᵀ)`` with ``B diag(s²) Bᵀ`` the
        eigendecomposition of ``D^{-1/2} U diag(σ) Uᵀ D^{-1/2}``.
        Cost as :meth:`solve`.

        Parameters
        ----------
        v : array, shape (dim,) or (dim, k)
            The vector(s) to multiply, in the operator's namespace.

        Returns
        -------
        array, shape and dtype of ``v``
            ``L v``.
        """
        xp, diag = self._checked(v, "v")
        wh = core.whiten(xp, diag, self.basis, self.eigvals)
        return cast_like(xp, core.diag_sqrt_matvec(xp, wh, cast_like(xp, v, self.basis)), v)

    def inv_sqrt_matvec(self, v: Array) -> Array:
        """``L⁻ᵀ v`` for the factor ``L`` of :meth:`sqrt_matvec` (so ``L⁻ᵀ z ~ N(0, G⁻¹)``: Laplace samples).

        Cost as :meth:`solve`.

        Parameters
        ----------
        v : array, shape (dim,) or (dim, k)
            The vector(s) to multiply, in the operator's namespace.

        Returns
        -------
        array, shape and dtype of ``v``
            ``L⁻ᵀ v``.
        """
        xp, diag = self._checked(v, "v")
        wh = core.whiten(xp, diag, self.basis, self.eigvals)
        out = core.diag_sqrt_matvec(xp, wh, cast_like(xp, v, self.basis), inverse_transpose=True)
        return cast_like(xp, out, v)

    def logdet(self) -> Array:
        """``log det G`` by the matrix determinant lemma: ``Σ log D + Σ log(1 + s²)``.

        Returns
        -------
        0-d array
            ``log det G``, in the operator's dtype.
        """
        xp, diag = self._diag()
        return core.diag_logdet(xp, core.whiten(xp, diag, self.basis, self.eigvals), self.basis.shape[0])

    def trace(self) -> Array:
        """``trace G = Σ D + Σ σ`` (U orthonormal). Cost O(dim).

        Returns
        -------
        0-d array
            ``trace G``, in the operator's dtype.
        """
        xp, diag = self._diag()
        dim = self.basis.shape[0]
        return (diag * dim if diag.ndim == 0 else xp.sum(diag)) + xp.sum(self.eigvals)

    def diag(self) -> Array:
        """Return the diagonal of G. Cost O(dim · rank).

        Returns
        -------
        array, shape (dim,)
            ``D + Σ_i σ_i U_{:,i}²``.
        """
        xp, diag = self._diag()
        return core.diag_diagonal(xp, diag, self.basis, self.eigvals)

    def dense(self) -> Array:
        """Materialise ``G`` (O(dim²) memory: for tests and small problems).

        Returns
        -------
        array, shape (dim, dim)
            ``D + U diag(σ) Uᵀ``.
        """
        xp, diag = self._diag()
        return core.diag_dense(xp, diag, self.basis, self.eigvals)

    def to_scipy(self) -> Any:
        """Return ``G`` as a SciPy ``scipy.sparse.linalg.LinearOperator`` (NumPy in and out; symmetric).

        Arrays of another namespace are converted at each product (to the
        operator's namespace and device on the way in, to NumPy on the way out).

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            ``matvec``, ``rmatvec`` and ``matmat`` all apply ``G``.
        """
        import numpy as np
        from scipy.sparse.linalg import LinearOperator

        xp, _ = self._diag()
        dtype = np.dtype(str(to_numpy(self.eigvals).dtype))
        dev = device_of(self.basis)

        def product(v: Any) -> Any:
            x = xp.asarray(np.ascontiguousarray(v, dtype=dtype), device=dev)
            return np.asarray(to_numpy(self.matvec(x)))

        return LinearOperator(self.shape, matvec=product, rmatvec=product, matmat=product, dtype=dtype)

    def to_lineax(self) -> Any:
        """Return ``G`` as a ``lineax.FunctionLinearOperator`` (JAX arrays only; tagged symmetric PSD).

        Needs the optional package ``lineax``; ``lineax.linear_solve(op.to_lineax(), b)`` then runs
        lineax's solvers (e.g. conjugate gradients) against this operator.

        Returns
        -------
        lineax.FunctionLinearOperator
            The operator ``v ↦ G v`` on vectors of shape (dim,).

        Raises
        ------
        ImportError
            If lineax (or JAX) is not installed.
        TypeError
            If the operator does not hold JAX arrays.
        """
        import jax
        import lineax

        self._diag()
        if not isinstance(self.basis, jax.Array):
            msg = f"to_lineax needs JAX arrays, the operator holds {type(self.basis).__module__} arrays"
            raise TypeError(msg)
        structure = jax.ShapeDtypeStruct((self.basis.shape[0],), self.basis.dtype)
        return lineax.FunctionLinearOperator(
            self.matvec, structure, tags=(lineax.symmetric_tag, lineax.positive_semidefinite_tag)
        )
