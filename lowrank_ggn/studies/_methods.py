r"""The preconditioners compared by the studies, and the exact EMA they approximate.

Every approximate method represents a damped curvature :math:`\tilde G` of the
form "isotropic (or diagonal) + low rank" and applies :math:`\tilde G^{-1}` to
gradients. The stateful ones run on the chosen array backend and dtype through
the library's public API; the exact EMA and the oracle are NumPy float64.

.. list-table::
   :header-rows: 1
   :widths: 16 60 24

   * - method
     - represented damped curvature :math:`\tilde G`
     - state
   * - ``exact``
     - :math:`\gamma I + M_t` (the reference)
     - NumPy float64, d × d
   * - ``oracle``
     - :math:`\gamma I + V_\tau \Lambda_\tau V_\tau^\top` (Eckart–Young)
     - from ``exact``
   * - ``oracle-tail``
     - :math:`(\gamma + c^\star) I + V_\tau \Lambda_\tau V_\tau^\top`
     - from ``exact``
   * - ``ginger``
     - :math:`\gamma I + U \operatorname{diag}(\sigma) U^\top` (eigen path)
     - d × τ
   * - ``ginger-sm``
     - the same, updated by the Sherman–Morrison path (Eq 17) at damping γ
     - d × τ
   * - ``ginger-tail``
     - :math:`(\gamma + \rho/(d-\tau)) I + U \operatorname{diag}(\sigma) U^\top`
     - the ``ginger`` state
   * - ``ginger-fd``
     - :math:`(\gamma + \rho) I + U \operatorname{diag}(\sigma) U^\top`
     - the ``ginger`` state
   * - ``qng``
     - :math:`\hat A \hat A^\top = \alpha^k I + \text{rank } k`
     - d × τ
   * - ``diag``
     - :math:`\gamma I + \operatorname{diag}(v_t)`, :math:`v_t` the EMA of :math:`d_t \odot d_t`
     - d
   * - ``identity``
     - :math:`(\gamma + m_t) I`, :math:`m_t` the EMA of :math:`\|d_t\|^2/d`
     - 1

Here :math:`M_t = \alpha M_{t-1} + (1-\alpha) d_t d_t^\top` (Eq 7),
:math:`V_\tau, \Lambda_\tau` its top-τ eigenpairs,
:math:`c^\star = \sum_{i>\tau} \lambda_i / (d - \tau)`, and
:math:`\rho` = ``GingerState.discarded``, the EMA-weighted curvature that
truncation has dropped, so that :math:`\operatorname{tr} M_t = \sum\sigma + \rho`.

**Tail-aware damping** (beyond the paper). Truncation throws curvature away;
``ρ`` measures how much, at no cost. Two principled ways to give it back as
damping, in the spirit of frequent directions (Liberty, 2013) and Sketchy
(Feinberg et al., 2023):

* ``ginger-tail``: :math:`\gamma + \rho/(d-\tau)`. The isotropic matrix
  :math:`c (I - UU^\top)` closest in Frobenius norm to the residual
  :math:`(I - UU^\top) M (I - UU^\top)` has :math:`c = \operatorname{tr}((I-UU^\top)M)/(d-\tau)`;
  with :math:`\sum\sigma` in place of :math:`\operatorname{tr}(U^\top M U)` this is
  :math:`\rho/(d-\tau)`, and the approximation then has the exact trace of
  :math:`\gamma I + M`.
* ``ginger-fd``: :math:`\gamma + \rho`. The residual :math:`E_t = M_t - U\Sigma U^\top`
  obeys :math:`E_t = \alpha E_{t-1} + \mu_{\tau+1} p p^\top` (the dropped
  eigenpair), so :math:`0 \preceq E_t \preceq \rho_t I`: the damped
  approximation dominates :math:`\gamma I + M_t`, and the preconditioned step
  can never overshoot the quadratic model (the frequent-directions bound).

**QNG.** With ``P`` the orthogonal projector on the span of the window's
factors ``q_i`` (``Q`` an orthonormal basis of it), each factor maps that span
into itself and acts as ``√α`` on its complement, so
:math:`\hat A\hat A^\top = \alpha^k (I - P) + Q A_s A_s^\top Q^\top` with
:math:`A_s = Q^\top \hat A Q` (k × k). This is how its represented curvature is
formed, through :func:`lowrank_ggn.qng_factor_matvec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

import lowrank_ggn as lg
from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn.backends import jit, to_numpy

__all__ = [
    "APPROXIMATIONS",
    "DENSE_LIMIT",
    "METHODS",
    "PROTOCOL_METHODS",
    "DiagonalRun",
    "ExactEMA",
    "GingerRun",
    "IsotropicRun",
    "ProtocolRun",
    "QNGRun",
    "Structured",
    "operator_structure",
    "protocol_templates",
]

PROTOCOL_METHODS: dict[str, str] = {
    "frequent-directions": "frequent_directions",
    "nystrom": "nystrom",
    "ginger-diagonal": "ginger_diagonal",
}
"""Study name → factory of :mod:`lowrank_ggn` for the methods run through the approximation protocol.

A method of the protocol plugs into the study with one entry here: the factory is called as
``factory(rank=τ, decay=α)`` and the result is run by :class:`ProtocolRun`. An entry whose factory this
installation does not have is left out of :data:`METHODS`."""


def protocol_templates() -> dict[str, Any]:
    """Return the protocol methods this installation has: study name → approximation (τ = 8, α = 0.99).

    Returns
    -------
    dict
        One template per entry of :data:`PROTOCOL_METHODS` whose factory exists in :mod:`lowrank_ggn`;
        the study replaces its rank and decay (:class:`ProtocolRun`).
    """
    return {
        name: getattr(lg, factory)(rank=8, decay=0.99)
        for name, factory in PROTOCOL_METHODS.items()
        if hasattr(lg, factory)
    }


METHODS = (
    "exact",
    "oracle",
    "oracle-tail",
    "ginger",
    "ginger-tail",
    "ginger-fd",
    "ginger-sm",
    "qng",
    *(name for name in PROTOCOL_METHODS if hasattr(lg, PROTOCOL_METHODS[name])),
    "diag",
    "identity",
)
"""Every method name that can appear in the ``method`` column of a study (with this installation).

Further approximations of the protocol run under their own ``name`` when given to
``StudyConfig(approximations=...)``."""

APPROXIMATIONS = tuple(m for m in METHODS if m != "exact")
"""The methods compared with the exact EMA."""


class Structured(NamedTuple):
    r"""A symmetric matrix :math:`\operatorname{diag}(a) + W \operatorname{diag}(c) W^\top` in NumPy float64.

    The common form of every damped curvature in the studies: the diagonal
    ``a`` holds the damping (constant for every method but ``diag``), the
    orthonormal ``W`` and the coefficients ``c`` the low-rank part. ``W`` is
    orthonormal to float64 precision: a float32 state is re-orthonormalised
    when converted (:meth:`from_lowrank`), which leaves the matrix unchanged.

    Parameters
    ----------
    diagonal, basis, coef : numpy.ndarray
        The fields, in this order (see the attributes below).
    """

    diagonal: np.ndarray
    """The diagonal a, shape (dim,), float64."""
    basis: np.ndarray
    """The basis W, shape (dim, k), orthonormal columns, float64 (k may be 0)."""
    coef: np.ndarray
    """The coefficients c, shape (k,), float64 (any sign)."""

    @property
    def isotropic(self) -> bool:
        """True when the diagonal part is a multiple of the identity."""
        return bool(np.all(self.diagonal == self.diagonal[0]))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        r"""Apply the matrix: :math:`a \odot x + W (c \odot W^\top x)`.

        Parameters
        ----------
        x : numpy.ndarray
            A vector of shape (dim,) or a matrix of shape (dim, m) (columns).

        Returns
        -------
        numpy.ndarray
            The product, of the shape of ``x``.
        """
        a = self.diagonal if x.ndim == 1 else self.diagonal[:, None]
        c = self.coef if x.ndim == 1 else self.coef[:, None]
        return a * x + self.basis @ (c * (self.basis.T @ x))

    def dense(self) -> np.ndarray:
        r"""Materialise the matrix (for tests and small dimensions).

        Returns
        -------
        numpy.ndarray
            :math:`\operatorname{diag}(a) + W \operatorname{diag}(c) W^\top`, shape (dim, dim).
        """
        return np.diag(self.diagonal) + (self.basis * self.coef) @ self.basis.T

    def inverse(self) -> Structured:
        r"""Invert, in the same form (isotropic + low rank, or diagonal).

        For an isotropic diagonal :math:`a = s \mathbf 1`, since ``W`` is orthonormal,

        .. math::
           (sI + W\operatorname{diag}(c)W^\top)^{-1} = s^{-1} I + W \operatorname{diag}(1/(s+c) - 1/s) W^\top ;

        a purely diagonal matrix (k = 0) inverts elementwise. The matrix must
        be invertible (``s ≠ 0`` and ``s + c_j ≠ 0``).

        Returns
        -------
        Structured
            The inverse, with the same basis ``W``.

        Raises
        ------
        ValueError
            If the matrix has both a non-constant diagonal and a low-rank part.
        """
        if self.basis.shape[1] and not self.isotropic:
            msg = "only an isotropic + low-rank or a purely diagonal matrix can be inverted in this form"
            raise ValueError(msg)
        inv = 1.0 / self.diagonal
        if not self.basis.shape[1]:
            return Structured(inv, self.basis, self.coef)
        s = self.diagonal[0]
        return Structured(inv, self.basis, 1.0 / (s + self.coef) - 1.0 / s)

    @classmethod
    def from_lowrank(cls, shift: float, factor: np.ndarray, core: np.ndarray) -> Structured:
        r"""Build :math:`s I + F C F^\top` for any (not necessarily orthonormal) ``F`` and symmetric ``C``.

        With the thin QR factorisation :math:`F = QR` and the eigendecomposition
        :math:`R C R^\top = E \operatorname{diag}(w) E^\top`, the matrix is
        :math:`s I + (QE) \operatorname{diag}(w) (QE)^\top`, with orthonormal
        :math:`QE`.

        Parameters
        ----------
        shift : float
            s, the constant diagonal (typically a damping γ).
        factor : numpy.ndarray
            F, shape (dim, k), k ≤ dim; its columns need not be orthonormal
            (they must be linearly independent for the result to have rank k).
        core : numpy.ndarray
            C, shape (k, k), symmetric (it is symmetrised).

        Returns
        -------
        Structured
            The same matrix with an orthonormal basis and the coefficients
            ``w`` sorted descending.
        """
        q, r = np.linalg.qr(factor)
        small = r @ core @ r.T
        w, e = np.linalg.eigh((small + small.T) / 2)
        order = np.argsort(w)[::-1]
        dim = factor.shape[0]
        return cls(np.full(dim, float(shift)), q @ e[:, order], w[order])


def _empty(dim: int) -> np.ndarray:
    return np.zeros((dim, 0))


class ExactEMA:
    r"""The exact EMA :math:`M_t = \alpha M_{t-1} + (1-\alpha) d_t d_t^\top` (Eq 7, M₀ = 0), NumPy float64.

    The reference every method is compared with: d × d memory and
    :math:`O(d^3)` per eigendecomposition. Curvature vectors are buffered and
    folded in as one matrix product
    :math:`M \leftarrow \alpha^n M + D^\top \operatorname{diag}(w) D`, with
    :math:`w_i = (1-\alpha)\alpha^{n-i}` for the n buffered rows of ``D``,
    when the matrix is needed (the same sum, computed with BLAS 3).

    Parameters
    ----------
    dim : int
        Number of parameters d.
    decay : float
        α in (0, 1).
    """

    def __init__(self, dim: int, decay: float) -> None:
        self.dim, self.decay = dim, decay
        self._matrix = np.zeros((dim, dim))
        self._pending: list[np.ndarray] = []
        self._eig: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, d: np.ndarray) -> None:
        """Fold in one curvature vector (lazily: it is buffered until the matrix is needed).

        Parameters
        ----------
        d : numpy.ndarray
            The curvature vector :math:`d_t`, shape (dim,); converted to float64.
        """
        self._pending.append(np.asarray(d, dtype=np.float64))
        self._eig = None

    @property
    def matrix(self) -> np.ndarray:
        """The matrix :math:`M_t`, shape (dim, dim), float64 (folds in the buffered vectors)."""
        if self._pending:
            rows = np.stack(self._pending)
            n = rows.shape[0]
            w = (1 - self.decay) * self.decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
            self._matrix = self.decay**n * self._matrix + (rows.T * w) @ rows
            self._pending = []
        return self._matrix

    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the eigendecomposition of :math:`M_t` (cached until the next update).

        Returns
        -------
        eigvals : numpy.ndarray
            λ, shape (dim,), descending; negative rounding errors are clamped to 0.
        eigvecs : numpy.ndarray
            V, shape (dim, dim), orthonormal columns in the order of ``eigvals``.
        """
        if self._eig is None:
            m = self.matrix
            lam, vec = np.linalg.eigh((m + m.T) / 2)
            self._eig = (np.maximum(lam[::-1], 0.0), vec[:, ::-1])
        return self._eig

    def structure(self, damping: float, rank: int | None = None, *, tail: bool = False) -> Structured:
        r"""Return the damped exact EMA, or the oracle: its best rank-τ approximation, damped.

        Parameters
        ----------
        damping : float
            γ > 0.
        rank : int, optional
            τ, with ``1 ≤ rank < dim``. None (default): the damped exact EMA
            :math:`\gamma I + M_t` itself.
        tail : bool, default False
            With ``rank``: add the trace-matched tail
            :math:`c^\star = \sum_{i>\tau} \lambda_i / (d - \tau)` to the
            damping (the ``oracle-tail`` method).

        Returns
        -------
        Structured
            :math:`\gamma I + M_t`, or
            :math:`(\gamma + c^\star) I + V_\tau \Lambda_\tau V_\tau^\top`
            (:math:`c^\star = 0` unless ``tail``), which by the Eckart–Young
            theorem is the closest matrix of the form
            :math:`\gamma I + \text{rank } \tau` to :math:`\gamma I + M_t`
            in the spectral norm.
        """
        lam, vec = self.eig()
        if rank is None:
            return Structured(np.full(self.dim, damping), vec, lam)
        extra = float(lam[rank:].sum()) / (self.dim - rank) if tail else 0.0
        return Structured(np.full(self.dim, damping + extra), vec[:, :rank], lam[:rank])


def _time_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    from time import perf_counter

    from lowrank_ggn.backends import block_until_ready

    t0 = perf_counter()
    out = block_until_ready(fn())
    return out, perf_counter() - t0


@dataclass
class _Run:
    """Common part of the stateful methods: namespace, dtype, timing.

    Subclasses implement ``_build``, which returns the initial state and the
    pure functions ``update(state, d)`` and ``precondition(state, g, damping)``;
    both are compiled with ``jax.jit`` on JAX and called as they are elsewhere.
    """

    dim: int
    decay: float
    xp: ArrayNamespace
    dtype: Any
    seconds: float = 0.0
    steps: int = 0
    state: Any = field(default=None, init=False)
    _cache: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state, update, precondition = self._build()
        self._update = jit(update, self.xp)
        self._precondition = jit(precondition, self.xp)

    def _build(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:  # pragma: no cover - abstract
        """Return the initial state, ``update(state, d)`` and ``precondition(state, g, damping)``."""
        raise NotImplementedError

    def step(self, d: Array, g: Array, damping: float) -> None:
        """Update with ``d``, then precondition ``g`` (what one optimiser step costs); the time is accumulated.

        Parameters
        ----------
        d : array
            The curvature vector, shape (dim,), of the run's namespace and dtype.
        g : array
            A gradient, shape (dim,), of the run's namespace and dtype.
        damping : float
            γ of the query (ignored by QNG, whose damping is implicit).
        """

        def work() -> Any:
            self.state = self._update(self.state, d)
            return self._precondition(self.state, g, damping)

        _, seconds = _time_call(work)
        # The first step compiles (JAX) or warms caches: it is not counted.
        if self.steps:
            self.seconds += seconds
        self.steps += 1

    @property
    def memory_floats(self) -> int:
        """Floating-point numbers in the state (its integer counters excluded): the method's memory."""
        leaves = self.state if isinstance(self.state, tuple) else (self.state,)
        total = 0
        for leaf in leaves:
            a = np.asarray(to_numpy(leaf))
            if np.issubdtype(a.dtype, np.floating):
                total += int(a.size)
        return total

    @property
    def time_per_step(self) -> float:
        """Mean wall time of one step (update + precondition) in seconds, the first (compiling) step excluded."""
        return self.seconds / max(self.steps - 1, 1)

    def precondition(self, g: np.ndarray, damping: float) -> np.ndarray:
        r"""Apply the approximate inverse :math:`\tilde G^{-1}` on the backend, in the run's dtype.

        Parameters
        ----------
        g : numpy.ndarray
            Gradients, shape (dim,) or (dim, m) (columns).
        damping : float
            γ of the query (ignored by QNG).

        Returns
        -------
        numpy.ndarray
            :math:`\tilde G^{-1} g`, of the shape of ``g``, converted to float64.
        """
        out = self._precondition(self.state, self.xp.asarray(g, dtype=self.dtype), damping)
        return np.asarray(to_numpy(out), dtype=np.float64)


@dataclass
class GingerRun(_Run):
    r"""Ginger on the backend: eigen path, or the Sherman–Morrison path at a fixed damping.

    Keeps a :class:`lowrank_ggn.GingerState` of rank τ, updated by
    :func:`lowrank_ggn.ginger_update`, and represents
    :math:`\tilde G = \gamma I + U \operatorname{diag}(\sigma) U^\top`. On the
    eigen path the state does not depend on γ, so every damping (and every
    tail-aware variant, :meth:`tail_damping`) is a query of the same state.

    Every run (this class, :class:`QNGRun`, :class:`DiagonalRun`,
    :class:`IsotropicRun`) has the same interface, inherited from a common
    base class: ``step(d, g, damping)`` folds the curvature vector ``d`` into
    the state and then preconditions ``g`` (what one optimiser step costs),
    accumulating the wall time; ``precondition(g, damping)`` applies the
    approximate inverse to the columns of a NumPy array and returns NumPy
    float64; ``time_per_step`` is the mean seconds per step, the first step
    (which compiles, under JAX) excluded; ``structure(damping)`` is the
    represented damped curvature in float64, for the metrics.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    decay : float
        α in (0, 1), the decay of the EMA (Eq 7).
    xp : module
        The array namespace of the state (NumPy, JAX, PyTorch, CuPy or
        array-api-strict, as resolved by :mod:`lowrank_ggn.backends`).
    dtype : dtype
        ``float32`` or ``float64`` of ``xp``.
    seconds : float, default 0.0
        Accumulated wall time of the timed steps, in seconds (leave at 0).
    steps : int, default 0
        Number of steps taken so far (leave at 0).
    rank : int, default 8
        τ, with ``1 ≤ rank < dim``.
    path_damping : float, optional
        None (default): the eigen path. A damping γ > 0: the Sherman–Morrison
        path (Eq 17, corrected) at that damping, whose state depends on γ.

    Attributes
    ----------
    state : GingerState
        The current state, in the namespace and dtype of the run.
    """

    rank: int = 8
    path_damping: float | None = None

    def _build(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        state = lg.ginger_init(self.dim, self.rank, xp=self.xp, dtype=self.dtype)
        decay, gamma = self.decay, self.path_damping

        def update(s: lg.GingerState, d: Array) -> lg.GingerState:
            if gamma is None:
                return lg.ginger_update(s, d, decay=decay)
            return lg.ginger_update(s, d, decay=decay, damping=gamma, method="sherman-morrison")

        def precondition(s: lg.GingerState, g: Array, damping: Any) -> Array:
            return lg.ginger_precondition(s, g, damping=damping)

        return state, update, precondition

    @property
    def discarded(self) -> float:
        """The EMA-weighted curvature ρ that truncation has dropped (``GingerState.discarded``), as a float."""
        return float(to_numpy(self.state.discarded))

    def tail_damping(self, damping: float, variant: str) -> float:
        """Return the effective damping of a query variant (tail-aware damping, beyond the paper).

        Parameters
        ----------
        damping : float
            γ, the damping of the plain query.
        variant : {"plain", "tail", "fd"}
            ``plain``: γ (method ``ginger``); ``tail``: γ + ρ/(d − τ), the
            trace-matched isotropic tail (``ginger-tail``); ``fd``: γ + ρ,
            the frequent-directions bound (``ginger-fd``).

        Returns
        -------
        float
            The damping to query the state with.

        Raises
        ------
        ValueError
            If ``variant`` is not one of the three.
        """
        if variant == "plain":
            return damping
        if variant == "tail":
            return damping + self.discarded / (self.dim - self.rank)
        if variant == "fd":
            return damping + self.discarded
        msg = f"unknown variant {variant!r}"
        raise ValueError(msg)

    def lowrank(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the low-rank part of the state in NumPy float64.

        Returns
        -------
        basis : numpy.ndarray
            U, shape (dim, rank), orthonormal columns (to the run's precision).
        eigvals : numpy.ndarray
            σ, shape (rank,), descending.
        """
        return np.asarray(to_numpy(self.state.basis), np.float64), np.asarray(to_numpy(self.state.eigvals), np.float64)

    def structure(self, damping: float) -> Structured:
        r"""Return the represented damped curvature :math:`\gamma I + U \operatorname{diag}(\sigma) U^\top` in float64.

        U is re-orthonormalised in float64 (the matrix is unchanged); the
        low-rank part is cached until the next step.

        Parameters
        ----------
        damping : float
            γ (an effective damping from :meth:`tail_damping` for the variants).

        Returns
        -------
        Structured
            The matrix, isotropic + rank τ.
        """
        if self._cache is None or self._cache[0] != self.steps:
            basis, sigma = self.lowrank()
            self._cache = (self.steps, Structured.from_lowrank(0.0, basis, np.diag(sigma)))
        base = self._cache[1]
        return base._replace(diagonal=np.full(self.dim, float(damping)))

    def lowrank_trace(self) -> float:
        """Return Σσ, the trace of the undamped low-rank part.

        Returns
        -------
        float
            The sum of the eigenvalues σ of the state.
        """
        return float(self.lowrank()[1].sum())


@dataclass
class QNGRun(_Run):
    r"""QNG on the backend: a window of τ rank-one factors, with the implicit damping :math:`\alpha^k`.

    Keeps a :class:`lowrank_ggn.QNGState`, updated by
    :func:`lowrank_ggn.qng_update`, and represents
    :math:`\hat A \hat A^\top = \alpha^k (I - P) + Q A_s A_s^\top Q^\top`
    (k = min(τ, t); see the module introduction). Its damping is not a free
    parameter: the ``damping`` argument of every query is ignored.
    The common interface (``step``, ``precondition``, ``time_per_step``) is
    described in :class:`GingerRun`.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    decay : float
        α in (0, 1), the decay of the EMA (Eq 7).
    xp : module
        The array namespace of the state (NumPy, JAX, PyTorch, CuPy or
        array-api-strict, as resolved by :mod:`lowrank_ggn.backends`).
    dtype : dtype
        ``float32`` or ``float64`` of ``xp``.
    seconds : float, default 0.0
        Accumulated wall time of the timed steps, in seconds (leave at 0).
    steps : int, default 0
        Number of steps taken so far (leave at 0).
    rank : int, default 8
        τ, the window length, with ``1 ≤ rank < dim``.

    Attributes
    ----------
    state : QNGState
        The current state, in the namespace and dtype of the run.
    """

    rank: int = 8

    def _build(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        state = lg.qng_init(self.dim, self.rank, xp=self.xp, dtype=self.dtype)
        decay = self.decay

        def update(s: lg.QNGState, d: Array) -> lg.QNGState:
            return lg.qng_update(s, d, decay=decay)

        def precondition(s: lg.QNGState, g: Array, damping: Any) -> Array:
            del damping  # implicit: α^k
            return lg.qng_precondition(s, g)

        return state, update, precondition

    @property
    def implicit_damping(self) -> float:
        r"""The implicit damping :math:`\alpha^k = \prod_i s_i^2` over the window (k = min(τ, t)), as a float."""
        return float(np.prod(np.asarray(to_numpy(self.state.scales), np.float64) ** 2))

    def structure(self, damping: float | None = None) -> Structured:
        r"""Return the represented curvature :math:`\hat A\hat A^\top` in float64.

        :math:`\hat A\hat A^\top = \alpha^k (I - P) + Q A_s A_s^\top Q^\top` (see the
        module introduction) is formed from k + 1 products with the factors
        (:func:`lowrank_ggn.qng_factor_matvec`) and cached until the next step.

        Parameters
        ----------
        damping : float, optional
            Ignored: QNG's damping :math:`\alpha^k` is implicit.

        Returns
        -------
        Structured
            The matrix, :math:`\alpha^k I` + rank ≤ τ.
        """
        del damping
        if self._cache is not None and self._cache[0] == self.steps:
            return self._cache[1]
        factors = np.asarray(to_numpy(self.state.factors), np.float64)
        q, _ = np.linalg.qr(factors.T)
        a_q = np.asarray(to_numpy(lg.qng_factor_matvec(self.state, self.xp.asarray(q, dtype=self.dtype))), np.float64)
        a_s = q.T @ a_q
        floor = self.implicit_damping
        out = Structured.from_lowrank(floor, q, a_s @ a_s.T - floor * np.eye(q.shape[1]))
        self._cache = (self.steps, out)
        return out

    def lowrank_trace(self) -> float:
        r"""Return the trace of the low-rank part, :math:`\operatorname{tr}(\hat A\hat A^\top - \alpha^k I)`.

        Returns
        -------
        float
            The sum of the coefficients of :meth:`structure`.
        """
        return float(self.structure().coef.sum())


@dataclass
class DiagonalRun(_Run):
    r"""Diagonal EMA :math:`v_t = \alpha v_{t-1} + (1-\alpha)\, d_t \odot d_t` (diagonal Fisher, Adam's 2nd moment).

    Preconditioner :math:`(\gamma + v_t)^{-1} \odot g`. (Adam itself divides by
    :math:`\sqrt{v_t} + \epsilon`, which is not an approximation of
    :math:`(\gamma I + M)^{-1}`; here the diagonal of the same EMA is used.)
    It needs d numbers of memory, and :math:`v_t = \operatorname{diag}(M_t)`
    exactly.
    The common interface (``step``, ``precondition``, ``time_per_step``) is
    described in :class:`GingerRun`.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    decay : float
        α in (0, 1), the decay of the EMA (Eq 7).
    xp : module
        The array namespace of the state (NumPy, JAX, PyTorch, CuPy or
        array-api-strict, as resolved by :mod:`lowrank_ggn.backends`).
    dtype : dtype
        ``float32`` or ``float64`` of ``xp``.
    seconds : float, default 0.0
        Accumulated wall time of the timed steps, in seconds (leave at 0).
    steps : int, default 0
        Number of steps taken so far (leave at 0).

    Attributes
    ----------
    state : array
        :math:`v_t`, shape (dim,), in the namespace and dtype of the run.
    """

    def _build(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        decay = self.decay

        def update(v: Array, d: Array) -> Array:
            return decay * v + (1 - decay) * (d * d)

        def precondition(v: Array, g: Array, damping: Any) -> Array:
            scale = 1 / (damping + v)
            return scale * g if g.ndim == 1 else scale[:, None] * g

        return self.xp.zeros((self.dim,), dtype=self.dtype), update, precondition

    def structure(self, damping: float) -> Structured:
        r"""Return the represented damped curvature :math:`\gamma I + \operatorname{diag}(v_t)` in float64.

        Parameters
        ----------
        damping : float
            γ.

        Returns
        -------
        Structured
            The matrix, diagonal (no low-rank part).
        """
        v = np.asarray(to_numpy(self.state), np.float64)
        return Structured(damping + v, _empty(self.dim), np.zeros(0))

    def lowrank_trace(self) -> float:
        r"""Return :math:`\sum_i v_i`, the trace of the represented undamped curvature.

        Returns
        -------
        float
            The sum of :math:`v_t` (equal to :math:`\operatorname{tr} M_t` up to rounding).
        """
        return float(np.asarray(to_numpy(self.state), np.float64).sum())


@dataclass
class IsotropicRun(_Run):
    r"""Scaled identity :math:`(\gamma + m_t)^{-1} g`, :math:`m_t = \alpha m_{t-1} + (1-\alpha)\|d_t\|^2/d`.

    ``m_t = tr(M_t)/d``: the multiple of the identity closest to ``M_t`` in
    Frobenius norm (τ = 0 with the trace-matched tail). One number of memory.
    The common interface (``step``, ``precondition``, ``time_per_step``) is
    described in :class:`GingerRun`.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    decay : float
        α in (0, 1), the decay of the EMA (Eq 7).
    xp : module
        The array namespace of the state (NumPy, JAX, PyTorch, CuPy or
        array-api-strict, as resolved by :mod:`lowrank_ggn.backends`).
    dtype : dtype
        ``float32`` or ``float64`` of ``xp``.
    seconds : float, default 0.0
        Accumulated wall time of the timed steps, in seconds (leave at 0).
    steps : int, default 0
        Number of steps taken so far (leave at 0).

    Attributes
    ----------
    state : array
        :math:`m_t`, 0-d, in the namespace and dtype of the run.
    """

    def _build(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        decay, dim = self.decay, self.dim

        def update(m: Array, d: Array) -> Array:
            return decay * m + (1 - decay) * (d @ d) / dim

        def precondition(m: Array, g: Array, damping: Any) -> Array:
            return g / (damping + m)

        return self.xp.zeros((), dtype=self.dtype), update, precondition

    def structure(self, damping: float) -> Structured:
        r"""Return the represented damped curvature :math:`(\gamma + m_t) I` in float64.

        Parameters
        ----------
        damping : float
            γ.

        Returns
        -------
        Structured
            The matrix, a multiple of the identity.
        """
        return Structured(np.full(self.dim, damping + float(to_numpy(self.state))), _empty(self.dim), np.zeros(0))

    def lowrank_trace(self) -> float:
        r"""Return :math:`d \, m_t`, the trace of the represented undamped curvature.

        Returns
        -------
        float
            :math:`d \, m_t` (equal to :math:`\operatorname{tr} M_t` up to rounding).
        """
        return self.dim * float(to_numpy(self.state))


DENSE_LIMIT = 5000
"""Largest dimension d (of a stream, or of a block) for which the study forms d × d matrices.

Above it the exact EMA is a window of its curvature vectors
(:class:`~lowrank_ggn.studies.WindowEMA`) and every metric is computed matrix-free."""


def operator_structure(operator: Any, dim: int) -> Structured:
    r"""Convert an approximation's damped curvature operator to a :class:`Structured` matrix in float64.

    An operator with the attributes ``diagonal`` (a scalar γ or a (dim,)
    vector), ``basis`` (dim × k) and ``eigvals`` (k,) — the form of
    :class:`lowrank_ggn.DampedLowRank` — is converted exactly:
    :math:`\operatorname{diag}(a) + U \operatorname{diag}(\sigma) U^\top`
    with ``U`` re-orthonormalised in float64; a non-constant diagonal with a
    low-rank part (``ginger-diagonal``) stays in that form, which
    :meth:`Structured.inverse` cannot invert: the evaluators compute its
    spectral errors separately (densely up to ``DENSE_LIMIT``, by Lanczos
    above). An operator with only ``dense()`` (``dim`` ≤ ``DENSE_LIMIT``) is
    formed and brought to the form :math:`sI + V \operatorname{diag}(w - s) V^\top`
    with its full eigendecomposition (s the mean eigenvalue).

    Parameters
    ----------
    operator : object
        ``approximation.operator(state, damping=γ)``.
    dim : int
        d.

    Returns
    -------
    Structured
        The same matrix, in float64.

    Raises
    ------
    NotImplementedError
        If the operator has neither form, or has only ``dense()`` and ``dim`` > :data:`DENSE_LIMIT`.
    """
    if all(hasattr(operator, a) for a in ("diagonal", "basis", "eigvals")):
        diagonal = np.asarray(to_numpy(operator.diagonal), np.float64)
        basis = np.asarray(to_numpy(operator.basis), np.float64).reshape(dim, -1)
        sigma = np.asarray(to_numpy(operator.eigvals), np.float64).reshape(-1)
        if basis.shape[1]:
            low = Structured.from_lowrank(0.0, basis, np.diag(sigma))
        else:
            low = Structured(np.zeros(dim), _empty(dim), np.zeros(0))
        out = low._replace(diagonal=np.broadcast_to(diagonal, (dim,)).copy())
        return out  # a diagonal + low-rank matrix stays in that form (the evaluators read it as such)
    if hasattr(operator, "dense") and dim <= DENSE_LIMIT:
        matrix = np.asarray(to_numpy(operator.dense()), np.float64)
    else:
        msg = f"cannot convert the operator {type(operator).__name__} of dimension {dim} to a structured matrix"
        raise NotImplementedError(msg)
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    shift = float(w.mean())
    return Structured(np.full(dim, shift), v[:, ::-1], w[::-1] - shift)


@dataclass
class ProtocolRun(_Run):
    r"""Any approximation of the library's protocol (``lg.ginger``, ``lg.ginger_product``, ``lg.qng``, ...).

    The study's one adapter over the protocol: the state comes from
    ``approximation.init``, is advanced by ``approximation.update`` and
    queried by ``approximation.precondition`` (with ``damping=None`` when the
    approximation's ``needs_damping`` is False); its represented damped
    curvature, for the metrics, is ``approximation.operator(state, damping=γ)``
    converted by :func:`operator_structure`. The common interface is described
    in :class:`GingerRun`.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    decay : float
        α in (0, 1); the approximation runs with this decay.
    xp : module
        The array namespace of the state.
    dtype : dtype
        ``float32`` or ``float64`` of ``xp``.
    seconds : float, default 0.0
        Accumulated wall time of the timed steps, in seconds (leave at 0).
    steps : int, default 0
        Number of steps taken so far (leave at 0).
    rank : int, default 8
        τ; the approximation runs with ``with_rank(rank)``.
    approximation : object, optional
        The template (any rank and decay): a frozen dataclass of the
        protocol with fields ``rank`` and ``decay``. Required.
    """

    rank: int = 8
    approximation: Any = None

    def _build(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        import dataclasses

        if self.approximation is None:
            msg = "ProtocolRun needs an approximation"
            raise ValueError(msg)
        approx = dataclasses.replace(self.approximation.with_rank(self.rank), decay=self.decay)
        self.approximation = approx
        state = approx.init(self.dim, xp=self.xp, dtype=self.dtype)
        needs = bool(approx.needs_damping)

        def update(s: Any, d: Array) -> Any:
            return approx.update(s, d)

        def precondition(s: Any, g: Array, damping: Any) -> Array:
            return approx.precondition(s, g, damping=damping if needs else None)

        return state, update, precondition

    @property
    def needs_damping(self) -> bool:
        """Whether the approximation's query takes the damping γ (False: its damping is implicit)."""
        return bool(self.approximation.needs_damping)

    def structure(self, damping: float) -> Structured:
        r"""Return the represented damped curvature in float64 (:func:`operator_structure`), cached per step and γ.

        Parameters
        ----------
        damping : float
            γ (ignored when ``needs_damping`` is False).

        Returns
        -------
        Structured
            The matrix.
        """
        key = (self.steps, damping if self.needs_damping else None)
        if self._cache is None or self._cache[0] != key:
            op = self.approximation.operator(self.state, damping=damping if self.needs_damping else None)
            self._cache = (key, operator_structure(op, self.dim))
        return self._cache[1]

    def lowrank_trace(self, damping: float) -> float:
        """Return the trace of the represented curvature minus the damping part: the sum of the coefficients.

        Parameters
        ----------
        damping : float
            γ.

        Returns
        -------
        float
            ``sum(coef) + sum(diagonal − γ)`` of :meth:`structure`.
        """
        s = self.structure(damping)
        floor = damping if self.needs_damping else float(s.diagonal.min())
        return float(s.coef.sum() + (s.diagonal - floor).sum())
