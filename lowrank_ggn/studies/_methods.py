r"""The preconditioners compared by the studies, and the exact EMA they approximate.

Every approximate method represents a damped curvature :math:`\tilde G` of the
form "isotropic (or diagonal) + low rank" and applies :math:`\tilde G^{-1}` to
gradients. The stateful ones run on the chosen array backend and dtype through
the library's public API; the exact EMA and the oracle are NumPy float64.

=============== ==================================================================== ===================
method          represented damped curvature :math:`\tilde G`                        state
=============== ==================================================================== ===================
``exact``       :math:`\gamma I + M_t` (the reference)                                NumPy float64, d × d
``oracle``      :math:`\gamma I + V_\tau \Lambda_\tau V_\tau^\top` (Eckart–Young)     from ``exact``
``oracle-tail`` :math:`(\gamma + c^\star) I + V_\tau \Lambda_\tau V_\tau^\top`        from ``exact``
``ginger``      :math:`\gamma I + U \operatorname{diag}(\sigma) U^\top` (eigen path)  d × τ
``ginger-sm``   same, updated by the Sherman–Morrison path (Eq 17) at damping γ       d × τ
``ginger-tail`` :math:`(\gamma + \rho/(d-\tau)) I + U \operatorname{diag}(\sigma) U^\top` the ``ginger`` state
``ginger-fd``   :math:`(\gamma + \rho) I + U \operatorname{diag}(\sigma) U^\top`      the ``ginger`` state
``qng``         :math:`\hat A \hat A^\top = \alpha^k I + \text{rank } k`             d × τ
``diag``        :math:`\gamma I + \operatorname{diag}(v_t)`, :math:`v_t` the EMA of d ⊙ d d
``identity``    :math:`(\gamma + m_t) I`, :math:`m_t` the EMA of ‖d‖²/d               1
=============== ==================================================================== ===================

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
from lowrank_ggn._typing import Array, ArrayNamespace
from lowrank_ggn.backends import to_numpy
from lowrank_ggn.backends._select import jit

__all__ = [
    "APPROXIMATIONS",
    "METHODS",
    "DiagonalRun",
    "ExactEMA",
    "GingerRun",
    "IsotropicRun",
    "QNGRun",
    "Structured",
]

METHODS = (
    "exact",
    "oracle",
    "oracle-tail",
    "ginger",
    "ginger-tail",
    "ginger-fd",
    "ginger-sm",
    "qng",
    "diag",
    "identity",
)
"""Every method name that appears in the ``method`` column of a study."""

APPROXIMATIONS = tuple(m for m in METHODS if m != "exact")
"""The methods compared with the exact EMA."""


class Structured(NamedTuple):
    r"""A symmetric matrix :math:`\operatorname{diag}(a) + W \operatorname{diag}(c) W^\top` in NumPy float64.

    ``W`` has orthonormal columns (float64-exact: a float32 state is
    re-orthonormalised when converted, which leaves the matrix unchanged).
    """

    diagonal: np.ndarray
    """a, shape (dim,)."""
    basis: np.ndarray
    """W, shape (dim, k), orthonormal columns (k may be 0)."""
    coef: np.ndarray
    """c, shape (k,)."""

    @property
    def isotropic(self) -> bool:
        """True when the diagonal part is a multiple of the identity."""
        return bool(np.all(self.diagonal == self.diagonal[0]))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """Apply the matrix to ``x`` of shape (dim,) or (dim, m)."""
        a = self.diagonal if x.ndim == 1 else self.diagonal[:, None]
        c = self.coef if x.ndim == 1 else self.coef[:, None]
        return a * x + self.basis @ (c * (self.basis.T @ x))

    def dense(self) -> np.ndarray:
        """Materialise the dim × dim matrix."""
        return np.diag(self.diagonal) + (self.basis * self.coef) @ self.basis.T

    def inverse(self) -> Structured:
        r"""Invert, in the same form (isotropic + low rank, or diagonal).

        :math:`(sI + W\operatorname{diag}(c)W^\top)^{-1} = s^{-1} I + W \operatorname{diag}(1/(s+c) - 1/s) W^\top`.
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
        r"""Build :math:`s I + F C F^\top` for any (not necessarily orthonormal) ``F`` and symmetric ``C``."""
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

    Curvature vectors are buffered and folded in as one matrix product
    :math:`M \leftarrow \alpha^n M + D^\top \operatorname{diag}(w) D` when the
    matrix is needed (the same sum, computed with BLAS 3).
    """

    def __init__(self, dim: int, decay: float) -> None:
        self.dim, self.decay = dim, decay
        self._matrix = np.zeros((dim, dim))
        self._pending: list[np.ndarray] = []
        self._eig: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, d: np.ndarray) -> None:
        """Fold in one curvature vector (lazily)."""
        self._pending.append(np.asarray(d, dtype=np.float64))
        self._eig = None

    @property
    def matrix(self) -> np.ndarray:
        """M_t, dim × dim."""
        if self._pending:
            rows = np.stack(self._pending)
            n = rows.shape[0]
            w = (1 - self.decay) * self.decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
            self._matrix = self.decay**n * self._matrix + (rows.T * w) @ rows
            self._pending = []
        return self._matrix

    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (descending, rounding negatives clamped to 0) and eigenvectors of M_t."""
        if self._eig is None:
            m = self.matrix
            lam, vec = np.linalg.eigh((m + m.T) / 2)
            self._eig = (np.maximum(lam[::-1], 0.0), vec[:, ::-1])
        return self._eig

    def structure(self, damping: float, rank: int | None = None, *, tail: bool = False) -> Structured:
        r"""``γI + M`` (``rank=None``) or the oracle ``(γ [+ c*]) I + V_τ Λ_τ V_τᵀ``."""
        lam, vec = self.eig()
        if rank is None:
            return Structured(np.full(self.dim, damping), vec, lam)
        extra = float(lam[rank:].sum()) / (self.dim - rank) if tail else 0.0
        return Structured(np.full(self.dim, damping + extra), vec[:, :rank], lam[:rank])


def _time_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    from time import perf_counter

    from lowrank_ggn.backends._select import block_until_ready

    t0 = perf_counter()
    out = block_until_ready(fn())
    return out, perf_counter() - t0


@dataclass
class _Run:
    """Common part of the stateful methods: namespace, dtype, timing."""

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
        """Update with ``d``, then precondition ``g`` (what one optimiser step costs); the time is accumulated."""

        def work() -> Any:
            self.state = self._update(self.state, d)
            return self._precondition(self.state, g, damping)

        _, seconds = _time_call(work)
        # The first step compiles (JAX) or warms caches: it is not counted.
        if self.steps:
            self.seconds += seconds
        self.steps += 1

    @property
    def time_per_step(self) -> float:
        """Mean seconds per step (update + precondition), the first step excluded."""
        return self.seconds / max(self.steps - 1, 1)

    def precondition(self, g: np.ndarray, damping: float) -> np.ndarray:
        """Apply the approximate inverse on the backend to columns of ``g`` (NumPy), return NumPy float64."""
        out = self._precondition(self.state, self.xp.asarray(g, dtype=self.dtype), damping)
        return np.asarray(to_numpy(out), dtype=np.float64)


@dataclass
class GingerRun(_Run):
    """Ginger on the backend: eigen path, or the Sherman–Morrison path at a fixed damping."""

    rank: int = 8
    path_damping: float | None = None
    """None: eigen path; γ: the Sherman–Morrison path at damping γ."""

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
        """ρ: the EMA-weighted curvature dropped by truncation."""
        return float(to_numpy(self.state.discarded))

    def tail_damping(self, damping: float, variant: str) -> float:
        """Return the damping of a query variant: ``plain`` γ, ``tail`` γ + ρ/(d − τ), ``fd`` γ + ρ."""
        if variant == "plain":
            return damping
        if variant == "tail":
            return damping + self.discarded / (self.dim - self.rank)
        if variant == "fd":
            return damping + self.discarded
        msg = f"unknown variant {variant!r}"
        raise ValueError(msg)

    def lowrank(self) -> tuple[np.ndarray, np.ndarray]:
        """U and σ in NumPy float64."""
        return np.asarray(to_numpy(self.state.basis), np.float64), np.asarray(to_numpy(self.state.eigvals), np.float64)

    def structure(self, damping: float) -> Structured:
        """``γI + U diag(σ) Uᵀ`` in float64 (U re-orthonormalised in float64; the matrix is unchanged)."""
        if self._cache is None or self._cache[0] != self.steps:
            basis, sigma = self.lowrank()
            self._cache = (self.steps, Structured.from_lowrank(0.0, basis, np.diag(sigma)))
        base = self._cache[1]
        return base._replace(diagonal=np.full(self.dim, float(damping)))

    def lowrank_trace(self) -> float:
        """Σσ."""
        return float(self.lowrank()[1].sum())


@dataclass
class QNGRun(_Run):
    """QNG on the backend (window of τ factors; implicit damping α^k)."""

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
        r"""α^k = ∏ s_i² over the window (k = min(τ, t))."""
        return float(np.prod(np.asarray(to_numpy(self.state.scales), np.float64) ** 2))

    def structure(self, damping: float | None = None) -> Structured:
        r"""``ÂÂᵀ = α^k (I − P) + Q A_s A_sᵀ Qᵀ`` in float64 (``damping`` is ignored: QNG's is implicit)."""
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
        """trace(ÂÂᵀ − α^k I)."""
        return float(self.structure().coef.sum())


@dataclass
class DiagonalRun(_Run):
    r"""Diagonal EMA :math:`v_t = \alpha v_{t-1} + (1-\alpha)\, d_t \odot d_t` (diagonal Fisher, Adam's 2nd moment).

    Preconditioner :math:`(\gamma + v_t)^{-1} \odot g`. (Adam itself divides by
    :math:`\sqrt{v_t} + \epsilon`, which is not an approximation of
    :math:`(\gamma I + M)^{-1}`; here the diagonal of the same EMA is used.)
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
        """``γI + diag(v)`` in float64."""
        v = np.asarray(to_numpy(self.state), np.float64)
        return Structured(damping + v, _empty(self.dim), np.zeros(0))

    def lowrank_trace(self) -> float:
        """Σv (the diagonal represents the whole trace)."""
        return float(np.asarray(to_numpy(self.state), np.float64).sum())


@dataclass
class IsotropicRun(_Run):
    r"""Scaled identity :math:`(\gamma + m_t)^{-1} g`, :math:`m_t = \alpha m_{t-1} + (1-\alpha)\|d_t\|^2/d`.

    ``m_t = tr(M_t)/d``: the multiple of the identity closest to ``M_t`` in
    Frobenius norm (τ = 0 with the trace-matched tail).
    """

    def _build(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        decay, dim = self.decay, self.dim

        def update(m: Array, d: Array) -> Array:
            return decay * m + (1 - decay) * (d @ d) / dim

        def precondition(m: Array, g: Array, damping: Any) -> Array:
            return g / (damping + m)

        return self.xp.zeros((), dtype=self.dtype), update, precondition

    def structure(self, damping: float) -> Structured:
        """``(γ + m) I`` in float64."""
        return Structured(np.full(self.dim, damping + float(to_numpy(self.state))), _empty(self.dim), np.zeros(0))

    def lowrank_trace(self) -> float:
        """Return d · m = tr(M) as tracked."""
        return self.dim * float(to_numpy(self.state))
