r"""Approximation-error metrics of a damped curvature :math:`\tilde G` against the exact :math:`G = \gamma I + M`.

All metrics are computed in NumPy float64 from the eigendecomposition
:math:`M = V \operatorname{diag}(\lambda) V^\top` (λ descending).

* relative spectral error of the inverse,
  :math:`\|\tilde G^{-1} - G^{-1}\|_2 / \|G^{-1}\|_2`; for the oracle it equals
  :math:`\lambda_{\tau+1}/(\gamma + \lambda_{\tau+1})` (Eckart–Young) when M is singular
  (as :math:`M_t` is for t < d), :math:`\|G^{-1}\|_2 = 1/\gamma`;
* relative spectral error of the curvature, :math:`\|\tilde G - G\|_2 / \|G\|_2`
  (oracle: :math:`\lambda_{\tau+1}/(\gamma + \lambda_1)`);
* principal angles between the top-τ eigenspace of :math:`M` and the method's
  subspace (largest angle, and the mean squared cosine);
* cosine between :math:`\tilde G^{-1} g` and :math:`G^{-1} g` for the model's
  gradients;
* fraction of the optimal decrease of the quadratic model
  :math:`q(s) = g^\top s + \tfrac12 s^\top G s` achieved by :math:`s = -\tilde G^{-1} g`:
  :math:`[\,g^\top \tilde G^{-1} g - \tfrac12 g^\top \tilde G^{-1} G \tilde G^{-1} g\,] / [\tfrac12 g^\top G^{-1} g]`
  (1 is optimal; negative means the step increases the model);
* captured share of the curvature mass,
  :math:`\operatorname{tr}(Q^\top M Q) / \operatorname{tr} M` for the method's
  subspace ``Q`` (oracle: :math:`\sum_{i\le\tau}\lambda_i / \sum_i \lambda_i`).

The spectral norms of a difference :math:`\operatorname{diag}(a) + W C W^\top - V f(\Lambda) V^\top`
are computed in the eigenbasis of M when ``a`` is constant (a diagonal plus
rank-k matrix there), densely for small dimensions, and otherwise by Lanczos
(``scipy.sparse.linalg.eigsh``) on the matrix-free product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lowrank_ggn.studies._methods import Structured

__all__ = [
    "ExactSpectrum",
    "captured_share",
    "cosine",
    "decrease_fraction",
    "difference_norm",
    "principal_angles",
    "relative_spectral_distance",
    "spectral_error",
    "symmetric_norm",
]

DENSE_MAX = 256
"""Dimensions up to this use dense eigenvalue routines for spectral norms."""


class ExactSpectrum:
    r"""The eigendecomposition of the exact EMA ``M`` and the damped matrices derived from it.

    Holds :math:`M = V \operatorname{diag}(\lambda) V^\top` (λ descending) and
    applies :math:`(\gamma I + M)` and its inverse for any damping γ without
    refactoring.

    Parameters
    ----------
    eigvals : numpy.ndarray
        λ, shape (dim,), descending, non-negative (as :meth:`ExactEMA.eig` returns them).
    eigvecs : numpy.ndarray
        V, shape (dim, dim), orthonormal columns in the order of ``eigvals``.
    matrix : numpy.ndarray, optional
        M itself, shape (dim, dim), if known: products with it cost one pass
        over a d × d matrix instead of two.

    Attributes
    ----------
    eigvals, eigvecs : numpy.ndarray
        λ and V, converted to float64.
    matrix : numpy.ndarray or None
        M, as given.
    dim : int
        d.
    """

    def __init__(self, eigvals: np.ndarray, eigvecs: np.ndarray, matrix: np.ndarray | None = None) -> None:
        self.eigvals = np.asarray(eigvals, dtype=np.float64)
        self.eigvecs = np.asarray(eigvecs, dtype=np.float64)
        self.matrix = matrix
        self.dim = self.eigvals.shape[0]

    @property
    def trace(self) -> float:
        """Return tr M."""
        return float(self.eigvals.sum())

    def solve(self, g: np.ndarray, damping: float) -> np.ndarray:
        r"""Solve with the damped exact curvature: :math:`(\gamma I + M)^{-1} g`.

        Computed as :math:`V \operatorname{diag}(1/(\gamma + \lambda)) V^\top g`.

        Parameters
        ----------
        g : numpy.ndarray
            Right-hand sides, shape (dim,) or (dim, m) (columns).
        damping : float
            γ > 0.

        Returns
        -------
        numpy.ndarray
            :math:`(\gamma I + M)^{-1} g`, of the shape of ``g``.
        """
        v = self.eigvecs
        scale = 1.0 / (damping + self.eigvals)
        return v @ ((scale if g.ndim == 1 else scale[:, None]) * (v.T @ g))

    def matvec(self, x: np.ndarray, damping: float) -> np.ndarray:
        r"""Apply the damped exact curvature: :math:`(\gamma I + M) x`.

        Parameters
        ----------
        x : numpy.ndarray
            Shape (dim,) or (dim, m) (columns).
        damping : float
            γ.

        Returns
        -------
        numpy.ndarray
            :math:`\gamma x + M x`, of the shape of ``x``.
        """
        if self.matrix is not None:
            return damping * x + self.matrix @ x
        v = self.eigvecs
        scale = damping + self.eigvals
        return v @ ((scale if x.ndim == 1 else scale[:, None]) * (v.T @ x))

    def top(self, rank: int) -> np.ndarray:
        r"""Return the eigenvectors of the ``rank`` largest eigenvalues.

        Parameters
        ----------
        rank : int
            τ, the number of eigenvectors.

        Returns
        -------
        numpy.ndarray
            :math:`V_\tau`, shape (dim, rank), a view of ``eigvecs``.
        """
        return self.eigvecs[:, :rank]


def symmetric_norm(
    matvec: Callable[[np.ndarray], np.ndarray], dim: int, *, dense: bool | None = None, max_restarts: int | None = None
) -> float | None:
    r"""Return the spectral norm :math:`\max_i |\mu_i|` of a symmetric operator given by its product.

    Dense (``eigvalsh`` of the materialised matrix) when ``dim ≤ DENSE_MAX``
    (256) or ``dense=True``; otherwise implicitly restarted Lanczos (ARPACK)
    for the eigenvalue of largest magnitude, with residual tolerance 1e-6
    relative (the eigenvalue itself is far more accurate: measured against
    dense ``eigvalsh``, relative differences below 1e-9). Lanczos converges
    slowly in the residual when the top of the spectrum is a tight cluster:
    with ``max_restarts`` set (about 20 products each), ``None`` is returned
    when it has not converged by then; otherwise ARPACK's own limit applies
    and the dense routine takes over after it.

    Parameters
    ----------
    matvec : callable
        ``x ↦ X x`` for the symmetric operator X; ``x`` has shape (dim,) or
        (dim, m) (the dense path passes the identity, m = dim).
    dim : int
        The dimension of X.
    dense : bool, optional
        Force (True) or forbid (False) the dense path. None (default): dense
        when ``dim ≤ DENSE_MAX``.
    max_restarts : int, optional
        Limit on Lanczos restarts; None (default): ARPACK's own.

    Returns
    -------
    float or None
        :math:`\|X\|_2`, or None when Lanczos has not converged within
        ``max_restarts``.
    """
    use_dense = dim <= DENSE_MAX if dense is None else dense
    if not use_dense:
        from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

        op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
        try:
            mu = eigsh(
                op,
                k=1,
                which="LM",
                tol=1e-6,
                v0=np.ones(dim),
                ncv=min(dim, 20),
                maxiter=max_restarts,
                return_eigenvectors=False,
            )
            return float(np.abs(mu).max())
        except ArpackNoConvergence:
            if max_restarts is not None:
                return None
    dense_matrix = matvec(np.eye(dim))
    return float(np.abs(np.linalg.eigvalsh((dense_matrix + dense_matrix.T) / 2)).max())


def _count_above(mu: float, delta: np.ndarray, b: np.ndarray, c: np.ndarray) -> int:
    r"""Count the eigenvalues of ``diag(δ) + B diag(c) Bᵀ`` greater than μ (Sylvester's law of inertia).

    With :math:`K = \begin{pmatrix} D - \mu I & B \\ B^\top & -C^{-1} \end{pmatrix}`,
    the two Schur complements give
    :math:`\#_+(X - \mu I) = \#\{\delta_i > \mu\} + \#_+(-C^{-1} - B^\top (D-\mu I)^{-1} B) - \#\{c_j < 0\}`.
    """
    gap = delta - mu
    gap = np.where(gap == 0, np.finfo(np.float64).tiny, gap)
    schur = -np.diag(1.0 / c) - (b.T / gap) @ b
    pos = int((np.linalg.eigvalsh((schur + schur.T) / 2) > 0).sum())
    return int((gap > 0).sum()) + pos - int((c < 0).sum())


def _largest_eigenvalue(delta: np.ndarray, b: np.ndarray, c: np.ndarray, lo: float, hi: float) -> float:
    """Bisection for the largest eigenvalue of ``diag(δ) + B diag(c) Bᵀ`` in ``[lo, hi]``, to 1e-14 relative."""
    scale = max(abs(lo), abs(hi), np.finfo(np.float64).tiny)
    while hi - lo > 1e-14 * scale:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _count_above(mid, delta, b, c) >= 1:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def diag_lowrank_norm(delta: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    r"""Return the exact spectral norm of :math:`X = \operatorname{diag}(\delta) + B \operatorname{diag}(c) B^\top`.

    The difference of two damped curvatures, written in the eigenbasis of the
    exact EMA, has this form. A bracket from Weyl's inequality and Cauchy
    interlacing answers when it is tight (many equal δ at the top, the hard
    case for Lanczos); otherwise Lanczos (ARPACK, up to about 300 products)
    and, when the top of the spectrum is too tightly clustered for it,
    bisection on Sylvester inertia counts (:math:`O(d k^2)` each), exact to
    1e-14 relative. Dense ``eigvalsh`` for d ≤ 256 or k > d/4.

    Parameters
    ----------
    delta : numpy.ndarray
        δ, shape (d,).
    b : numpy.ndarray
        B, shape (d, k), orthonormal columns.
    c : numpy.ndarray
        c, shape (k,), any sign (zero entries are dropped).

    Returns
    -------
    float
        :math:`\|X\|_2 = \max_i |\mu_i(X)|`.
    """
    dim, k = b.shape
    keep = c != 0
    b, c = b[:, keep], c[keep]
    k = c.shape[0]
    if k == 0:
        return float(np.abs(delta).max())
    if dim <= DENSE_MAX or 4 * k > dim:
        dense = np.diag(delta) + (b * c) @ b.T
        return float(np.abs(np.linalg.eigvalsh((dense + dense.T) / 2)).max())
    (lo_max, hi_max), (lo_min, hi_min) = _eigen_brackets(delta, c)
    lower = max(lo_max, -hi_min, 0.0)
    upper = max(abs(hi_max), abs(lo_max), abs(lo_min), abs(hi_min))
    if upper - lower <= 1e-13 * upper:
        return upper

    def mv(x: np.ndarray) -> np.ndarray:
        x = x.reshape(dim, -1)
        return delta[:, None] * x + b @ (c[:, None] * (b.T @ x))

    norm = symmetric_norm(mv, dim, dense=False, max_restarts=15)
    if norm is not None:
        return norm
    mu_max = _largest_eigenvalue(delta, b, c, lo_max, hi_max)
    mu_min = -_largest_eigenvalue(-delta, b, -c, -hi_min, -lo_min)
    return max(abs(mu_max), abs(mu_min))


def _eigen_brackets(delta: np.ndarray, coef: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    r"""Brackets ``(lo, hi)`` for the largest and the smallest eigenvalue of ``diag(δ) + B diag(c) Bᵀ``.

    B has orthonormal columns. With p positive and q negative coefficients,
    Weyl's inequality and Cauchy interlacing give
    :math:`\delta_{(q+1)} \le \mu_{\max} \le \delta_{(1)} + \max c_+` and
    :math:`\delta_{(d)} - \max |c_-| \le \mu_{\min} \le \delta_{(d-p)}`
    (δ sorted descending). When many δ coincide at the top (a cluster, the
    hard case for Lanczos) the bracket closes.
    """
    d = np.sort(delta)[::-1]
    n = d.shape[0]
    p = int((coef > 0).sum())
    q = int((coef < 0).sum())
    cpos = float(coef.max(initial=0.0))
    cneg = float(-coef.min(initial=0.0))
    top = (float(d[min(q, n - 1)]), float(d[0] + cpos))
    bottom = (float(d[-1] - cneg), float(d[max(n - 1 - p, 0)]))
    return top, bottom


def difference_norm(
    approx: Structured, exact: ExactSpectrum, target: np.ndarray, projection: np.ndarray | None
) -> float:
    r"""``‖diag(a) + W C Wᵀ − V diag(target) Vᵀ‖₂`` (``projection``: ``Vᵀ W`` if already known)."""
    v = exact.eigvecs
    dim = exact.dim
    if approx.isotropic:
        # In the eigenbasis of M: diag(a − target) + B C Bᵀ with B = Vᵀ W (orthonormal columns).
        delta = approx.diagonal[0] - target
        b = v.T @ approx.basis if projection is None else projection
        k = b.shape[1]
        if k and k <= dim and np.array_equal(b, np.eye(dim, k)):  # W is a leading block of V: diagonal
            return float(np.abs(delta + np.pad(approx.coef, (0, dim - k))).max())
        return diag_lowrank_norm(delta, b, approx.coef)

    def mv_full(x: np.ndarray) -> np.ndarray:
        x = x.reshape(dim, -1)
        return approx.matvec(x) - v @ (target[:, None] * (v.T @ x))

    norm = symmetric_norm(mv_full, dim)
    assert norm is not None
    return norm


def spectral_error(
    approx: Structured,
    exact: ExactSpectrum,
    damping: float,
    *,
    inverse: bool = True,
    projection: np.ndarray | None = None,
) -> float:
    r"""Relative spectral error of :math:`\tilde G^{-1}` (``inverse=True``) or of :math:`\tilde G`.

    Parameters
    ----------
    approx : Structured
        The damped approximate curvature :math:`\tilde G`.
    exact : ExactSpectrum
        Eigendecomposition of M.
    damping : float
        γ of the reference :math:`G = \gamma I + M`.
    inverse : bool
        Compare the inverses (default) or the matrices themselves.
    projection : array, optional
        ``Vᵀ W`` for the basis ``W`` of ``approx`` (a cache; the basis of the
        inverse is the same).

    Returns
    -------
    float
        :math:`\|\tilde G^{-1} - G^{-1}\|_2 / \|G^{-1}\|_2` or
        :math:`\|\tilde G - G\|_2 / \|G\|_2`.
    """
    lam = exact.eigvals
    if inverse:
        target = 1.0 / (damping + lam)
        return difference_norm(approx.inverse(), exact, target, projection) / float(target.max())
    target = damping + lam
    return difference_norm(approx, exact, target, projection) / float(target.max())


def relative_spectral_distance(a: Structured, b: Structured) -> float:
    r"""Return the relative spectral distance :math:`\|A - B\|_2 / \|B\|_2` of two isotropic + low-rank matrices.

    Exact: :math:`A - B` is isotropic + rank :math:`k_A + k_B`, brought to an
    orthonormal basis by QR (:meth:`Structured.from_lowrank`). Used to compare
    the same method in two dtypes or on two update paths.

    Parameters
    ----------
    a, b : Structured
        The two matrices; both must have a constant diagonal.

    Returns
    -------
    float
        :math:`\|A - B\|_2 / \|B\|_2`.

    Raises
    ------
    ValueError
        If a diagonal is not constant.
    """
    if not (a.isotropic and b.isotropic):
        msg = "both matrices must be isotropic + low rank"
        raise ValueError(msg)
    shift = a.diagonal[0] - b.diagonal[0]
    factor = np.concatenate([a.basis, b.basis], axis=1)
    core = np.diag(np.concatenate([a.coef, -b.coef]))
    diff = Structured.from_lowrank(shift, factor, core)
    gap = np.abs(diff.coef + shift).max(initial=abs(shift))
    norm_b = max(abs(b.diagonal[0]), float(np.abs(b.coef + b.diagonal[0]).max(initial=0.0)))
    return float(gap / norm_b)


def principal_angles(reference: np.ndarray, subspace: np.ndarray) -> np.ndarray:
    r"""Return the principal angles between the column spans of two orthonormal matrices.

    The cosines of the angles are the singular values of
    :math:`R^\top S`. The studies compare the top-τ eigenspace of the exact
    EMA with a method's subspace.

    Parameters
    ----------
    reference : numpy.ndarray
        R, shape (dim, τ), orthonormal columns.
    subspace : numpy.ndarray
        S, shape (dim, k), orthonormal columns (k may differ from τ, or be 0).

    Returns
    -------
    numpy.ndarray
        τ angles in radians, ascending; when k < τ the missing ones are π/2.
    """
    if subspace.shape[1] == 0:
        return np.full(reference.shape[1], np.pi / 2)
    s = np.linalg.svd(reference.T @ subspace, compute_uv=False)
    angles = np.arccos(np.clip(s, 0.0, 1.0))[::-1]
    missing = reference.shape[1] - angles.shape[0]
    return np.concatenate([np.sort(angles), np.full(max(missing, 0), np.pi / 2)])


def captured_share(exact: ExactSpectrum, subspace: np.ndarray, projection: np.ndarray | None = None) -> float:
    r"""Return the captured share of the curvature mass, :math:`\operatorname{tr}(Q^\top M Q) / \operatorname{tr} M`.

    For the top-τ eigenvectors of M it is :math:`\sum_{i\le\tau}\lambda_i / \sum_i \lambda_i`,
    the largest value any τ-dimensional subspace reaches (Ky Fan).

    Parameters
    ----------
    exact : ExactSpectrum
        The eigendecomposition of M.
    subspace : numpy.ndarray
        Q, shape (dim, k), orthonormal columns.
    projection : numpy.ndarray, optional
        :math:`V^\top Q`, shape (dim, k), when already known (a cache).

    Returns
    -------
    float
        The share, in [0, 1].
    """
    b = exact.eigvecs.T @ subspace if projection is None else projection
    return float((exact.eigvals[:, None] * b * b).sum() / exact.trace)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""Return the cosines between matching columns of ``a`` and ``b`` (or between two vectors).

    Parameters
    ----------
    a, b : numpy.ndarray
        Arrays of the same shape, (dim,) or (dim, m).

    Returns
    -------
    numpy.ndarray
        :math:`a_j^\top b_j / (\|a_j\| \|b_j\|)`, shape () or (m,).
    """
    num = (a * b).sum(axis=0)
    return num / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))


def decrease_fraction(
    g: np.ndarray, step: np.ndarray, exact: ExactSpectrum, damping: float, *, optimal_step: np.ndarray | None = None
) -> np.ndarray:
    r"""Return the fraction of the optimal decrease of the quadratic model reached by the step :math:`-\tilde G^{-1} g`.

    With :math:`q(s) = g^\top s + \frac12 s^\top G s` and :math:`G = \gamma I + M`,
    the best step :math:`-G^{-1}g` decreases q by :math:`\frac12 g^\top G^{-1} g`; the
    step :math:`s = -\tilde G^{-1} g` decreases it by
    :math:`g^\top \tilde G^{-1} g - \frac12 (\tilde G^{-1}g)^\top G (\tilde G^{-1}g)`.

    Parameters
    ----------
    g : numpy.ndarray
        Gradients, shape (dim,) or (dim, m) (columns).
    step : numpy.ndarray
        :math:`\tilde G^{-1} g`, of the shape of ``g``.
    exact : ExactSpectrum
        The eigendecomposition of M.
    damping : float
        γ of the reference :math:`G = \gamma I + M`.
    optimal_step : numpy.ndarray, optional
        :math:`G^{-1} g` when already known (computed otherwise).

    Returns
    -------
    numpy.ndarray
        The ratio of the two decreases, shape () or (m,): 1 is optimal, 0 no
        progress, negative a step that increases the model.
    """
    achieved = (g * step).sum(axis=0) - 0.5 * (step * exact.matvec(step, damping)).sum(axis=0)
    best = exact.solve(g, damping) if optimal_step is None else optimal_step
    optimal = 0.5 * (g * best).sum(axis=0)
    return achieved / optimal
