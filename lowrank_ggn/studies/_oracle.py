r"""Exact oracle at scale: the study's metrics from a window of stored curvature vectors, never a d × d matrix.

The exact EMA (Eq 7, :math:`M_0 = 0`) after t steps is

.. math::
   M_t = \sum_{i \le t} w_i\, d_i d_i^\top, \qquad w_i = (1-\alpha)\,\alpha^{t-i},

so it is known exactly from the vectors themselves: :class:`WindowEMA` keeps
them as the rows of a window X (W × d). A vector whose weight has fallen below
``threshold`` times the largest weight (that of the newest vector, 1 − α), or
that is older than the ``max_size`` newest ones, leaves the window; the mass it
takes with it, :math:`\delta = \sum_{\text{dropped}} w_i \|d_i\|^2` (with the
weights of today), bounds what the window misses:
:math:`0 \preceq M_t - M_{\text{window}} \preceq \delta I`, so
:math:`\|M_t - M_{\text{window}}\|_2 \le \delta` (:attr:`WindowEMA.dropped`).
The window is the reference of every metric.

**Reduction.** With P (d × k, k ≤ W) an orthonormal basis of the span of the
window, M is :math:`P M_k P^\top`, :math:`M_k = P^\top M P` (k × k), and it is 0
on the complement. A method whose damped curvature is
:math:`\tilde G = \tilde\gamma I + U C U^\top` (Ginger: C = diag σ; QNG:
:math:`\alpha^k I` + its rank-k part; the oracle; the scaled identity, U empty)
is a scalar on the complement of span U. Extending P by an orthonormal basis
of the part of span U outside it gives P' (d × k', k' ≤ W + m) on whose span
both :math:`G = \gamma I + M` and :math:`\tilde G` act, and on whose complement
they are :math:`\gamma` and :math:`\tilde\gamma`: both are block diagonal, so

.. math::
   \|\tilde G^{-1} - G^{-1}\|_2 = \max\bigl(\|P'^\top(\tilde G^{-1} - G^{-1})P'\|_2,\;
   |\tilde\gamma^{-1} - \gamma^{-1}|\bigr),

the second term only when k' < d (the dampings may differ), and the same for
:math:`\tilde G - G`. Every metric of the study (:mod:`lowrank_ggn.studies`,
``_metrics``) is computed this way, with the same definitions: the spectral
norms are normalised by :math:`\|G^{-1}\|_2 = 1/(\gamma + \lambda_{\min})` and
:math:`\|G\|_2 = \gamma + \lambda_{\max}` of the full spectrum (which is that of
:math:`M_k` and d − k zeros). The steps :math:`\tilde G^{-1}g` and
:math:`G^{-1}g` share the residual :math:`g - P'P'^\top g` (on which they are
:math:`1/\tilde\gamma` and :math:`1/\gamma` times it), so the cosine and the
decrease fraction come from k'-dimensional coordinates too; a method's own
explicit step is used as given, with :math:`G^{-1}g` formed as a d-vector and
:math:`s^\top M s = (P^\top s)^\top M_k (P^\top s)`. Cost: one
factorisation of the window (:class:`WindowReduction`: a W × W Gram matrix
and d × W matrix products, :math:`O(d W^2)`), shared by every method at a
checkpoint, then :math:`O(d k' m)` per method; memory :math:`O(d (W + m))`.

**A diagonal approximation** :math:`\operatorname{diag}(a)` is not a scalar on
any known complement. Its cosine and decrease fraction are exact (they only
need the step :math:`g / a`); its two spectral errors are computed by Lanczos
(ARPACK) on the matrix-free difference, :math:`O(d k)` per product, and are NaN
when Lanczos has not converged (:meth:`WindowReduction.diagonal_metrics`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowrank_ggn.studies._metrics import principal_angles, symmetric_norm

__all__ = ["WindowEMA", "WindowReduction", "window_metrics"]

_INITIAL_CAPACITY = 16


def _as_columns(name: str, a: Any, dim: int) -> np.ndarray:
    """Return ``a`` as a float64 (dim, q) array (a vector becomes one column); reject a wrong shape or NaN."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != dim:
        msg = f"{name} must have shape ({dim},) or ({dim}, q), got {a.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(a)):
        msg = f"{name} must be finite"
        raise ValueError(msg)
    return a


def _norm2(a: np.ndarray) -> float:
    """Spectral norm of a small symmetric matrix (0 for an empty one)."""
    if a.size == 0:
        return 0.0
    return float(np.abs(np.linalg.eigvalsh((a + a.T) / 2)).max())


class WindowEMA:
    r"""The exact EMA :math:`M_t = \sum_i w_i d_i d_i^\top` kept as a window of the vectors themselves.

    Memory :math:`O(d W)` for a window of W vectors, never d × d; the weights
    :math:`w_i = (1-\alpha)\alpha^{t-i}` are those of Eq 7 with
    :math:`M_0 = 0`. A vector leaves the window when its weight falls below
    ``threshold`` × (1 − α) (the newest vector's weight, the largest), or when
    more than ``max_size`` newer ones are kept; its mass
    :math:`w_i \|d_i\|^2` is added to ``dropped``, which decays with the
    weights, so that at every step
    :math:`0 \preceq M_t - M_{\text{window}} \preceq` ``dropped`` · I.

    Parameters
    ----------
    dim : int
        d ≥ 1.
    decay : float
        α in (0, 1).
    threshold : float, default 1e-12
        ε in [0, 1): relative weight below which a vector is dropped. The
        window then holds at most :math:`\lceil \log\varepsilon / \log\alpha \rceil`
        vectors (about 2,750 for α = 0.99); 0 keeps every vector.
    max_size : int, optional
        W ≥ 1: keep at most this many vectors (the newest); None (default):
        no limit but ``threshold``.

    Attributes
    ----------
    dim : int
        d.
    decay, threshold : float
        α and ε.
    max_size : int or None
        W's limit.
    steps : int
        t, the number of vectors folded in so far.

    Raises
    ------
    ValueError
        If an argument is out of range (the message names it).

    Notes
    -----
    Stateful, like the dense reference ``ExactEMA``: :meth:`update` writes
    into a ring buffer of rows, allocated at ``max_size`` rows when it is
    given and doubled when full otherwise (amortised :math:`O(d)` per step).
    """

    def __init__(self, dim: int, decay: float, *, threshold: float = 1e-12, max_size: int | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            msg = f"dim must be a positive integer, got {dim!r}"
            raise ValueError(msg)
        if not 0.0 < decay < 1.0:
            msg = f"decay must lie in (0, 1), got {decay!r}"
            raise ValueError(msg)
        if not 0.0 <= threshold < 1.0:
            msg = f"threshold must lie in [0, 1), got {threshold!r}"
            raise ValueError(msg)
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 1
        ):
            msg = f"max_size must be a positive integer or None, got {max_size!r}"
            raise ValueError(msg)
        self.dim, self.decay, self.threshold, self.max_size = int(dim), float(decay), float(threshold), max_size
        self.steps = 0
        self._dropped = 0.0
        # With max_size the buffer is allocated at once (its pages are touched only when written).
        cap = _INITIAL_CAPACITY if max_size is None else max_size
        # A ring buffer: slot i holds a vector born at step _born[i] (0: free); _head is the next slot to
        # write, the _count live vectors are the slots before it (cyclically), oldest first.
        self._rows = np.empty((cap, self.dim))
        self._born = np.zeros(cap, dtype=np.int64)
        self._sqnorm = np.zeros(cap)
        self._head = self._count = 0

    # ------------------------------------------------------------------ state

    @property
    def size(self) -> int:
        """W, the number of vectors in the window."""
        return self._count

    def _live(self) -> slice | np.ndarray:
        """Return the live slots: a slice when they are contiguous in the buffer, else their indices (oldest first)."""
        cap, n = self._rows.shape[0], self._count
        if n == cap:
            return slice(0, cap)
        first = (self._head - n) % cap
        if first + n <= cap:
            return slice(first, first + n)
        return (first + np.arange(n)) % cap

    @property
    def vectors(self) -> np.ndarray:
        """The window's vectors as rows, shape (size, dim), float64, in the order of :attr:`weights`.

        A read-only view of the buffer when the live vectors are contiguous in
        it (always once the window has reached a steady size), a copy otherwise.
        """
        rows = self._rows[self._live()]
        rows.flags.writeable = False
        return rows

    @property
    def weights(self) -> np.ndarray:
        r"""The weights :math:`w_i = (1-\alpha)\alpha^{t-i}` of the rows of :attr:`vectors`, shape (size,)."""
        age = self.steps - self._born[self._live()]
        return (1.0 - self.decay) * self.decay ** age.astype(np.float64)

    @property
    def dropped(self) -> float:
        r"""The mass δ the window has dropped, :math:`\sum_{\text{dropped}} w_i \|d_i\|^2` at today's weights.

        :math:`M_t - M_{\text{window}}` is positive semidefinite with trace δ,
        so :math:`\|M_t - M_{\text{window}}\|_2 \le \delta` (up to rounding).
        """
        return self._dropped

    @property
    def trace(self) -> float:
        r"""Return :math:`\operatorname{tr} M_{\text{window}} = \sum_i w_i \|d_i\|^2`."""
        return float(self.weights @ self._sqnorm[self._live()])

    def update(self, d: Any) -> None:
        r"""Fold in one curvature vector: :math:`M_t = \alpha M_{t-1} + (1-\alpha) d d^\top`.

        :math:`O(d)` amortised (the buffer doubles when full, up to ``max_size``).

        Parameters
        ----------
        d : array_like
            :math:`d_t`, shape (dim,); converted to float64 (copied).

        Raises
        ------
        ValueError
            If ``d`` has the wrong shape or is not finite (the window is unchanged).
        """
        d = np.asarray(d, dtype=np.float64)
        if d.shape != (self.dim,):
            msg = f"d must have shape ({self.dim},), got {d.shape}"
            raise ValueError(msg)
        if not np.all(np.isfinite(d)):
            msg = "d must be finite"
            raise ValueError(msg)
        self.steps += 1
        self._dropped *= self.decay
        if self.max_size is not None and self._count == self.max_size:
            self._drop_oldest()
        if self._count == self._rows.shape[0]:
            self._grow()
        i = self._head
        self._rows[i] = d
        self._born[i] = self.steps
        self._sqnorm[i] = float(d @ d)
        self._head = (i + 1) % self._rows.shape[0]
        self._count += 1
        while self.decay ** (self.steps - int(self._born[self._oldest])) < self.threshold:
            self._drop_oldest()

    @property
    def _oldest(self) -> int:
        return (self._head - self._count) % self._rows.shape[0]

    def _drop_oldest(self) -> None:
        i = self._oldest
        age = self.steps - int(self._born[i])
        self._dropped += (1.0 - self.decay) * self.decay**age * float(self._sqnorm[i])
        self._born[i] = 0
        self._count -= 1

    def _grow(self) -> None:
        """Double the (full) buffer, up to ``max_size`` slots, keeping the vectors oldest first."""
        cap = self._rows.shape[0]
        new_cap = 2 * cap if self.max_size is None else min(2 * cap, self.max_size)
        order = (self._head + np.arange(cap)) % cap
        rows = np.empty((new_cap, self.dim))
        rows[:cap] = self._rows[order]
        born = np.zeros(new_cap, dtype=np.int64)
        born[:cap] = self._born[order]
        sq = np.zeros(new_cap)
        sq[:cap] = self._sqnorm[order]
        self._rows, self._born, self._sqnorm = rows, born, sq
        self._head = cap

    # ---------------------------------------------------------------- queries

    def matvec(self, x: Any) -> np.ndarray:
        r"""Apply the window's EMA: :math:`M x = X^\top (w \odot X x)`, :math:`O(d W)` per column.

        Parameters
        ----------
        x : array_like
            Shape (dim,) or (dim, m).

        Returns
        -------
        numpy.ndarray
            :math:`M_{\text{window}} x`, of the shape of ``x``, float64.
        """
        x = np.asarray(x, dtype=np.float64)
        rows = self._rows[self._live()]
        w = self.weights
        return rows.T @ ((w if x.ndim == 1 else w[:, None]) * (rows @ x))

    def dense(self) -> np.ndarray:
        r"""Materialise :math:`M_{\text{window}}` (d × d; for tests and small dimensions only).

        Returns
        -------
        numpy.ndarray
            Shape (dim, dim), float64, symmetric.
        """
        rows = self._rows[self._live()]
        return (rows.T * self.weights) @ rows

    def reduce(self, gradients: Any = None, *, cutoff: float = 1e-12) -> WindowReduction:
        """Factor the window once for all the metrics of one checkpoint (see :class:`WindowReduction`).

        Parameters
        ----------
        gradients : array_like, optional
            The gradients g of the cosine and decrease metrics, shape (dim,)
            or (dim, q); None: no gradient metrics.
        cutoff : float, default 1e-12
            Relative eigenvalue below which a direction is left out (see
            :class:`WindowReduction`).

        Returns
        -------
        WindowReduction
            :math:`O(d W^2)` time, :math:`O(d (W + q))` memory.

        Raises
        ------
        ValueError
            If ``gradients`` has the wrong shape or is not finite.
        """
        return WindowReduction(self, gradients, cutoff=cutoff)

    def eigh(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        r"""Return the top eigenpairs of :math:`M_{\text{window}}`: the oracle's rank-τ part (Eckart–Young).

        Parameters
        ----------
        rank : int
            τ ≥ 1.

        Returns
        -------
        eigvals : numpy.ndarray
            The r = min(τ, k) largest eigenvalues, descending, clamped at 0;
            k ≤ W is the dimension of the window's span (the other d − k
            eigenvalues are 0).
        eigvecs : numpy.ndarray
            Shape (dim, r), orthonormal columns in the span of the window.

        Raises
        ------
        ValueError
            If ``rank`` < 1.
        """
        return self.reduce().eigh(rank)


class WindowReduction:
    r"""A :class:`WindowEMA` factored once: an orthonormal basis P of its span and :math:`M_k = P^\top M P`.

    Built by :meth:`WindowEMA.reduce`. With :math:`B = \operatorname{diag}(\sqrt w) X`
    (so that :math:`M = B^\top B`) and the eigendecomposition of the W × W Gram
    matrix :math:`B B^\top = E \operatorname{diag}(s^2) E^\top`, the columns of
    :math:`P_1 = B^\top E S^{-1}` are the eigenvectors of M; one Cholesky QR
    pass, :math:`P_1 = P L^\top`, makes them orthonormal to working precision,
    and :math:`M = P (L^\top S^2 L) P^\top`. Eigenvalues :math:`s_j^2` below
    ``cutoff`` × the largest are left out (their directions cannot be resolved
    from the Gram matrix); their sum is added to ``dropped``, so the
    reference is :math:`M_{\text{kept}}` with
    :math:`0 \preceq M_t - M_{\text{kept}} \preceq` ``dropped`` · I. Cost
    :math:`O(d W^2)` in matrix products (BLAS 3), memory :math:`O(d W)`; the
    reduction keeps no reference to the window, which may go on updating.

    It holds P (d × k), the eigendecomposition of :math:`M_k` and, for the
    given gradients g, :math:`P^\top g` and the part :math:`g_\perp` orthogonal
    to P. Every method's metrics are then computed in a (k + m)-dimensional
    space (see the module introduction).

    Parameters
    ----------
    window : WindowEMA
        The exact EMA.
    gradients : array_like, optional
        Gradients, shape (dim,) or (dim, q).
    cutoff : float, default 1e-12
        Relative eigenvalue below which a direction of the window is left out
        (and its mass added to ``dropped``); it must keep
        ε / ``cutoff`` well below 1 (ε = 2.2e-16) for the Cholesky pass.

    Attributes
    ----------
    dim : int
        d.
    basis : numpy.ndarray
        P, shape (dim, k), orthonormal columns spanning the window (k ≤ min(W, d)).
    eigvals : numpy.ndarray
        λ of :math:`M_k`, shape (k,), descending, clamped at 0.
    eigvecs : numpy.ndarray
        Y, shape (k, k): :math:`M_k = Y \operatorname{diag}(\lambda) Y^\top`
        (the eigenvectors of M are :math:`P Y`).
    gradients : numpy.ndarray
        g, shape (dim, q) (q = 0 without gradients).
    dropped : float
        δ: the window's :attr:`WindowEMA.dropped` when reduced plus the mass
        left out here; :math:`\|M_t - P M_k P^\top\|_2 \le \delta` (up to rounding).
    """

    def __init__(self, window: WindowEMA, gradients: Any = None, *, cutoff: float = 1e-12) -> None:
        if not 1e-15 <= cutoff < 1:
            msg = f"cutoff must lie in [1e-15, 1), got {cutoff!r}"
            raise ValueError(msg)
        dim = window.dim
        self.dim = dim
        self.gradients = np.zeros((dim, 0)) if gradients is None else _as_columns("gradients", gradients, dim)
        import scipy.linalg

        rows = window.vectors
        root = np.sqrt(window.weights)
        gram = rows @ rows.T
        s2, e = np.linalg.eigh(root[:, None] * ((gram + gram.T) / 2) * root[None, :])
        s2, e = s2[::-1], e[:, ::-1]
        keep = s2 > cutoff * s2[0] if s2.size and s2[0] > 0 else np.zeros(s2.shape, dtype=bool)
        self.dropped = window.dropped + float(np.maximum(s2[~keep], 0.0).sum())
        s = np.sqrt(s2[keep])
        p1 = rows.T @ (e[:, keep] * (root[:, None] / s))
        if s.size:
            chol = np.linalg.cholesky(p1.T @ p1)  # ≈ I: P₁ is orthonormal to about ε / cutoff
            inv = scipy.linalg.solve_triangular(chol, np.eye(s.size), lower=True)  # L⁻¹, well conditioned
            p = p1 @ inv.T  # P = P₁ L⁻ᵀ
            m_k = (chol.T * s2[keep]) @ chol
        else:
            p, m_k = np.zeros((dim, 0)), np.zeros((0, 0))
        self.basis = p
        m_k = (m_k + m_k.T) / 2
        lam, y = np.linalg.eigh(m_k)
        self.eigvals = np.maximum(lam[::-1], 0.0)
        self.eigvecs = y[:, ::-1]
        self._m_k = m_k
        self.grad_coords, self.grad_perp = self._split(self.gradients)
        self._solves: dict[float, np.ndarray] = {}
        self._spaces: dict[int, tuple[Any, dict[str, Any]]] = {}

    # ------------------------------------------------------------- spectrum

    @property
    def rank_bound(self) -> int:
        """K, the number of columns of P (the dimension of the window's span, to rounding)."""
        return self.basis.shape[1]

    @property
    def trace(self) -> float:
        r"""Return :math:`\operatorname{tr} M = \sum_i \lambda_i`."""
        return float(self.eigvals.sum())

    @property
    def lambda_max(self) -> float:
        """The largest eigenvalue of M (0 for an empty window)."""
        return float(self.eigvals[0]) if self.eigvals.size else 0.0

    @property
    def lambda_min(self) -> float:
        """The smallest eigenvalue of M: 0 when the window does not span ℝᵈ."""
        return float(self.eigvals[-1]) if self.rank_bound == self.dim else 0.0

    def spectrum(self, count: int) -> np.ndarray:
        """Return the ``count`` largest eigenvalues of M (the window's, then zeros), descending.

        Parameters
        ----------
        count : int
            0 ≤ count ≤ dim.

        Returns
        -------
        numpy.ndarray
            Shape (count,), float64.
        """
        top = self.eigvals[:count]
        return np.concatenate([top, np.zeros(count - top.shape[0])])

    def eigh(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the top min(rank, k) eigenpairs of M, eigenvectors as d-vectors (see :meth:`WindowEMA.eigh`).

        Parameters
        ----------
        rank : int
            τ ≥ 1.

        Returns
        -------
        eigvals : numpy.ndarray
            Shape (r,), r = min(τ, k), descending.
        eigvecs : numpy.ndarray
            Shape (dim, r), orthonormal columns.

        Raises
        ------
        ValueError
            If ``rank`` < 1.
        """
        if rank < 1:
            msg = f"rank must be at least 1, got {rank!r}"
            raise ValueError(msg)
        r = min(rank, self.rank_bound)
        return self.eigvals[:r].copy(), self.basis @ self.eigvecs[:, :r]

    # -------------------------------------------------------------- helpers

    def _split(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Pᵀa, a − P Pᵀa)`` by two passes of classical Gram–Schmidt."""
        p = self.basis
        c = p.T @ a
        perp = a - p @ c
        c2 = p.T @ perp
        return c + c2, perp - p @ c2

    def _ginv(self, damping: float) -> np.ndarray:
        r"""``(γ I + M_k)⁻¹``, k × k."""
        y = self.eigvecs
        return (y / (damping + self.eigvals)) @ y.T

    def solve(self, damping: float) -> np.ndarray:
        r"""Return :math:`G^{-1} g = (\gamma I + M)^{-1} g` for the gradients, explicit, cached per γ.

        :math:`P (\gamma I + M_k)^{-1} P^\top g + g_\perp / \gamma`, :math:`O(d k q)`.

        Parameters
        ----------
        damping : float
            γ > 0.

        Returns
        -------
        numpy.ndarray
            Shape (dim, q).
        """
        if damping not in self._solves:
            self._solves[damping] = self.basis @ (self._ginv(damping) @ self.grad_coords) + self.grad_perp / damping
        return self._solves[damping]

    def _quadratic(self, s: np.ndarray) -> np.ndarray:
        r"""Column-wise :math:`s^\top M s = (P^\top s)^\top M_k (P^\top s)`, O(d k q)."""
        c = self.basis.T @ s
        return (c * (self._m_k @ c)).sum(axis=0)

    def step_terms(self, step: Any, damping: float) -> dict[str, np.ndarray]:
        r"""Return the inner products behind the cosine and the decrease fraction of explicit steps, per column.

        With :math:`s = \tilde G^{-1} g` (the method's step) and :math:`b = G^{-1} g`:
        ``dot`` :math:`s^\top b`, ``ss`` :math:`s^\top s`, ``bb`` :math:`b^\top b`,
        ``achieved`` :math:`g^\top s - \tfrac12 s^\top G s` and ``optimal``
        :math:`\tfrac12 g^\top b`. They add up over the blocks of a
        block-diagonal G, so that the cosine
        :math:`\sum \text{dot} / \sqrt{\sum \text{ss} \sum \text{bb}}` and the decrease
        fraction :math:`\sum \text{achieved} / \sum \text{optimal}` of a
        whole step follow from its blocks. :math:`O(d k q)`.

        Parameters
        ----------
        step : array_like
            Shape of the gradients, (dim, q).
        damping : float
            γ > 0.

        Returns
        -------
        dict of numpy.ndarray
            Each of shape (q,).

        Raises
        ------
        ValueError
            If ``step`` does not have the shape of the gradients or is not finite, or γ ≤ 0.
        """
        _check_damping("damping", damping)
        step = _as_columns("step", step, self.dim)
        if step.shape != self.gradients.shape:
            msg = f"step must have the shape of the gradients {self.gradients.shape}, got {step.shape}"
            raise ValueError(msg)
        g = self.gradients
        best = self.solve(damping)
        ss = (step * step).sum(axis=0)
        return {
            "dot": (step * best).sum(axis=0),
            "ss": ss,
            "bb": (best * best).sum(axis=0),
            "achieved": (g * step).sum(axis=0) - 0.5 * (damping * ss + self._quadratic(step)),
            "optimal": 0.5 * (g * best).sum(axis=0),
        }

    def _gradient_metrics(self, step: np.ndarray, damping: float) -> dict[str, float]:
        """Cosine and decrease fraction of explicit steps ``G̃⁻¹g`` (definitions of ``_metrics``)."""
        if self.gradients.shape[1] == 0:
            return {"cosine": math.nan, "decrease_fraction": math.nan}
        t = self.step_terms(step, damping)
        cos = t["dot"] / np.sqrt(t["ss"] * t["bb"])
        return {"cosine": float(np.mean(cos)), "decrease_fraction": float(np.mean(t["achieved"] / t["optimal"]))}

    def _extend(self, u: np.ndarray) -> dict[str, Any]:
        """Return the (k + m)-dimensional space of a method with basis ``u``: coordinates of M, U, g; the lift."""
        p, k, dim = self.basis, self.rank_bound, self.dim
        m = u.shape[1]
        if m == 0 or k + m < dim:
            if m:
                c, r = self._split(u)
                q2, r2 = np.linalg.qr(r)
                diag = np.abs(np.diag(r2))
                if diag.min() <= 1e-8 * max(diag.max(), np.abs(c).max(initial=0.0)):
                    # A (nearly) dependent residual: Householder fills q2 with columns that need not be
                    # orthogonal to P. Orthogonalise them again (U = P c + q2 r2 is kept).
                    c3, q2b = self._split(q2)
                    q2, r3 = np.linalg.qr(q2b)
                    c = c + c3 @ r2
                    r2 = r3 @ r2
            else:
                q2, c, r2 = np.zeros((dim, 0)), np.zeros((k, 0)), np.zeros((0, 0))
            e = q2.shape[1]
            m_full = np.zeros((k + e, k + e))
            m_full[:k, :k] = self._m_k
            gq = q2.T @ self.grad_perp
            return {
                "m": m_full,
                "u": np.concatenate([c, r2], axis=0),
                "g": np.concatenate([self.grad_coords, gq], axis=0),
                "perp": self.grad_perp - q2 @ gq,
                "lift": lambda x: p @ x[:k] + q2 @ x[k:],
                "complement": dim - k - e,
            }
        # Small dimensions: a complete orthonormal basis F whose first k columns span P.
        f = np.linalg.qr(p, mode="complete")[0] if k else np.eye(dim)
        t = f.T @ p
        return {
            "m": t @ self._m_k @ t.T,
            "u": f.T @ u,
            "g": f.T @ self.gradients,
            "perp": np.zeros_like(self.gradients),
            "lift": lambda x: f @ x,
            "complement": 0,
        }

    def _reference_top(self, space: dict[str, Any], rank: int) -> np.ndarray | None:
        """Top-τ eigenvectors of M in the coordinates of ``space`` (None when τ exceeds the window's span)."""
        if space["complement"] == 0 and space["m"].shape[0] == self.dim:
            y = np.linalg.eigh(space["m"])[1]
            return y[:, ::-1][:, :rank]
        if rank > self.rank_bound:
            return None
        size = space["m"].shape[0]
        out = np.zeros((size, rank))
        out[: self.rank_bound] = self.eigvecs[:, :rank]
        return out

    # -------------------------------------------------------------- metrics

    def metrics(
        self,
        basis: Any,
        core: Any,
        approx_damping: float,
        damping: float,
        *,
        rank: int | None = None,
        step: Any = None,
    ) -> dict[str, float]:
        r"""Every metric of :math:`\tilde G = \tilde\gamma I + U C U^\top` against :math:`G = \gamma I + M`.

        The definitions are those of the dense study (``_metrics``,
        ``_runner``); see the module introduction for how they are reduced.

        Parameters
        ----------
        basis : array_like
            U, shape (dim, m), m ≥ 0 (need not be orthonormal; ``m = 0`` for
            a scaled identity).
        core : array_like
            C: shape (m,) for :math:`\operatorname{diag}(\sigma)` (Ginger) or
            (m, m) symmetric (QNG's rank-k part).
        approx_damping : float
            :math:`\tilde\gamma` > 0, the method's effective damping (γ, a
            tail-aware γ, QNG's :math:`\alpha^k`, γ + m_t of the identity).
        damping : float
            γ > 0 of the reference.
        rank : int, optional
            τ: also report ``lambda_next`` (:math:`\lambda_{\tau+1}` of M),
            ``eckart_young_bound``, and, when m > 0, the subspace metrics
            ``angle_max_deg``, ``subspace_overlap`` and ``captured_share``
            for span U (or, when m > τ, the eigenvectors of its τ largest
            coefficients, as the dense study does). The angles are NaN when
            τ exceeds the dimension of the window's span (the top-τ
            eigenspace of M is then not determined).
        step : array_like, optional
            The method's own :math:`\tilde G^{-1} g` (shape of the gradients),
            e.g. computed on its backend in float32; None (default): computed
            from U, C, :math:`\tilde\gamma` in float64.

        Returns
        -------
        dict
            ``inv_spectral_error``, ``curv_spectral_error``, ``cosine`` and
            ``decrease_fraction`` (the means over the gradients; NaN without
            gradients), ``dropped`` (:attr:`WindowEMA.dropped`), and with
            ``rank`` the keys above. :math:`O(d (k + m) (m + q))` time after
            the reduction.

        Raises
        ------
        ValueError
            If the shapes disagree, an input is not finite, a damping is not
            positive, or :math:`\tilde G` is singular.
        """
        u = _as_columns("basis", basis, self.dim) if np.size(basis) else np.zeros((self.dim, 0))
        m = u.shape[1]
        core = np.asarray(core, dtype=np.float64)
        if core.ndim == 1:
            core = np.diag(core)
        if core.shape != (m, m) or not np.all(np.isfinite(core)):
            msg = f"core must be finite with shape ({m},) or ({m}, {m}), got {core.shape}"
            raise ValueError(msg)
        _check_damping("approx_damping", approx_damping)
        _check_damping("damping", damping)
        if rank is not None and not 1 <= rank < self.dim:
            msg = f"rank must lie in [1, {self.dim}), got {rank!r}"
            raise ValueError(msg)
        if step is not None:
            step = _as_columns("step", step, self.dim)
            if step.shape != self.gradients.shape:
                msg = f"step must have the shape of the gradients {self.gradients.shape}, got {step.shape}"
                raise ValueError(msg)
        # The space depends on U only: cached for the same array object (several dampings of one state).
        cached = self._spaces.get(id(basis))
        if cached is not None and cached[0] is basis:
            space = cached[1]
        else:
            space = self._extend(u)
            if isinstance(basis, np.ndarray):
                self._spaces = {id(basis): (basis, space)}
        # As Structured.from_lowrank: U C Uᵀ = W diag(c) Wᵀ with W = Q E orthonormal (coordinates), U = Q R.
        q, r = np.linalg.qr(space["u"])
        small = r @ core @ r.T
        c, e = np.linalg.eigh((small + small.T) / 2)
        order = np.argsort(c)[::-1]
        return self._evaluate(
            space, q @ e[:, order], c[order], approx_damping=approx_damping, damping=damping, rank=rank, step=step
        )

    def oracle_metrics(self, damping: float, rank: int, *, tail: bool = False, step: Any = None) -> dict[str, float]:
        r"""Return the metrics of the oracle :math:`(\gamma + c) I + V_\tau \Lambda_\tau V_\tau^\top`.

        Parameters
        ----------
        damping : float
            γ > 0.
        rank : int
            τ in [1, dim).
        tail : bool, default False
            Add the trace-matched tail :math:`c = \sum_{i>\tau}\lambda_i/(d-\tau)`
            (``oracle-tail``); otherwise c = 0 (``oracle``).
        step : array_like, optional
            As in :meth:`metrics`.

        Returns
        -------
        dict
            The keys of :meth:`metrics` with ``rank``, and ``effective_damping``
            (γ + c).

        Raises
        ------
        ValueError
            As :meth:`metrics`.
        """
        if not 1 <= rank < self.dim:
            msg = f"rank must lie in [1, {self.dim}), got {rank!r}"
            raise ValueError(msg)
        _check_damping("damping", damping)
        r = min(rank, self.rank_bound)
        lam = self.eigvals[:r]
        extra = float(self.eigvals[r:].sum()) / (self.dim - rank) if tail else 0.0
        if step is not None:
            step = _as_columns("step", step, self.dim)
        space = self._extend(np.zeros((self.dim, 0)))
        out = self._evaluate(
            space, self.eigvecs[:, :r], lam, approx_damping=damping + extra, damping=damping, rank=rank, step=step
        )
        out["effective_damping"] = damping + extra
        return out

    def _evaluate(
        self,
        space: dict[str, Any],
        w: np.ndarray,
        coef: np.ndarray,
        *,
        approx_damping: float,
        damping: float,
        rank: int | None,
        step: np.ndarray | None,
    ) -> dict[str, float]:
        """Return the metrics of γ̃ I + W diag(c) Wᵀ (W orthonormal, in the coordinates of ``space``)."""
        m_small = space["m"]
        size = m_small.shape[0]
        if np.any(approx_damping + coef == 0):
            msg = "the approximation must be invertible"
            raise ValueError(msg)
        lam, y = np.linalg.eigh((m_small + m_small.T) / 2)
        lam = np.maximum(lam, 0.0)
        approx = approx_damping * np.eye(size) + (w * coef) @ w.T
        # The inverse in the same form (as Structured.inverse): exact on the scalar part.
        approx_inv = np.eye(size) / approx_damping + (w * (1 / (approx_damping + coef) - 1 / approx_damping)) @ w.T
        exact_inv = (y / (damping + lam)) @ y.T
        exact = (y * (damping + lam)) @ y.T
        outside = space["complement"] > 0
        inv_gap = max(_norm2(approx_inv - exact_inv), abs(1 / approx_damping - 1 / damping) if outside else 0.0)
        curv_gap = max(_norm2(approx - exact), abs(approx_damping - damping) if outside else 0.0)
        out = {
            "inv_spectral_error": inv_gap * (damping + self.lambda_min),
            "curv_spectral_error": curv_gap / (damping + self.lambda_max),
            "dropped": self.dropped,
        }
        if not self.gradients.shape[1]:
            out.update(cosine=math.nan, decrease_fraction=math.nan)
        elif step is not None:
            out.update(self._gradient_metrics(step, damping))
        else:
            # G̃⁻¹g = P'a + r/γ̃ and G⁻¹g = P'b + r/γ share the residual r = g − P'P'ᵀg: O(k'² q).
            gc = space["g"]
            a, b = approx_inv @ gc, exact_inv @ gc
            rho = (space["perp"] ** 2).sum(axis=0)
            sb = (a * b).sum(axis=0) + rho / (approx_damping * damping)
            ss = (a * a).sum(axis=0) + rho / approx_damping**2
            bb = (b * b).sum(axis=0) + rho / damping**2
            gs = (gc * a).sum(axis=0) + rho / approx_damping
            gb = (gc * b).sum(axis=0) + rho / damping
            achieved = gs - 0.5 * (damping * ss + (a * (m_small @ a)).sum(axis=0))
            out["cosine"] = float(np.mean(sb / np.sqrt(ss * bb)))
            out["decrease_fraction"] = float(np.mean(achieved / (0.5 * gb)))
        if rank is not None:
            lam_next = float(self.spectrum(rank + 1)[rank])
            out["lambda_next"] = lam_next
            out["eckart_young_bound"] = lam_next / (damping + lam_next) * (damping + self.lambda_min) / damping
            if w.shape[1]:
                out.update(self._subspace_metrics(space, w[:, :rank], rank))
        return out

    def _subspace_metrics(self, space: dict[str, Any], sub: np.ndarray, rank: int) -> dict[str, float]:
        """Angles between the top-τ eigenspace of M and ``sub`` (orthonormal coordinates), and its captured share."""
        trace = self.trace
        share = float(np.trace(sub.T @ space["m"] @ sub) / trace) if trace > 0 else math.nan
        ref = self._reference_top(space, rank)
        if ref is None:
            return {"angle_max_deg": math.nan, "subspace_overlap": math.nan, "captured_share": share}
        angles = principal_angles(ref, sub)
        cosines = np.cos(angles)
        return {
            "angle_max_deg": float(np.degrees(angles.max())),
            "subspace_overlap": float(np.mean(cosines * cosines)),
            "captured_share": share,
        }

    def diagonal_metrics(
        self,
        diagonal: Any,
        damping: float,
        *,
        step: Any = None,
        max_restarts: int | None = 20,
        lowrank: tuple[Any, Any] | None = None,
    ) -> dict[str, float]:
        r"""Return the metrics of :math:`\tilde G = \operatorname{diag}(a) + V \operatorname{diag}(c) V^\top`.

        ``lowrank=None`` is a diagonal approximation (``diag``); with
        ``lowrank=(V, c)`` the approximation is a diagonal plus a low-rank
        part (``ginger-diagonal``), inverted by Woodbury's identity.

        The cosine and the decrease fraction are exact (:math:`O(d q)`). The
        spectral errors of the inverse and of the curvature use
        :func:`~lowrank_ggn.studies.symmetric_norm` on the matrix-free
        differences (:math:`O(d k)` per product): dense for d ≤ 256,
        Lanczos otherwise, NaN when Lanczos has not converged within
        ``max_restarts`` (a diagonal is not a scalar on a known complement,
        so there is no exact reduction).

        Parameters
        ----------
        diagonal : array_like
            a, shape (dim,), positive (γ + the diagonal EMA for ``diag``).
        damping : float
            γ > 0 of the reference.
        step : array_like, optional
            :math:`\tilde G^{-1} g` as the method computed it; None: ``g / a``.
        max_restarts : int, optional
            Lanczos restarts (about 20 products each); None: ARPACK's limit,
            then the dense fallback (d × d: small d only).
        lowrank : tuple of array_like, optional
            ``(V, c)``: V of shape (dim, k), c ≥ 0 of shape (k,) (V need not
            be orthonormal). None: no low-rank part.

        Returns
        -------
        dict
            ``inv_spectral_error``, ``curv_spectral_error``, ``cosine``,
            ``decrease_fraction``, ``dropped``.

        Raises
        ------
        ValueError
            If ``diagonal`` is not positive and finite with shape (dim,), or γ ≤ 0,
            or ``lowrank`` is not a finite (dim, k) basis with k coefficients ≥ 0.
        """
        a = np.asarray(diagonal, dtype=np.float64)
        if a.shape != (self.dim,) or not np.all(np.isfinite(a)) or not np.all(a > 0):
            msg = f"diagonal must be positive and finite with shape ({self.dim},)"
            raise ValueError(msg)
        _check_damping("damping", damping)
        v, c = _lowrank_part(lowrank, self.dim)
        p, m_k = self.basis, self._m_k
        corr = self._ginv(damping) - np.eye(self.rank_bound) / damping
        # Woodbury: (A + V C Vᵀ)⁻¹ = A⁻¹ − A⁻¹V (C⁻¹ + VᵀA⁻¹V)⁻¹ VᵀA⁻¹, over the coefficients c > 0.
        v_a = v / a[:, None]
        small = np.diag(1 / c) + v.T @ v_a

        def approx_inv(x: np.ndarray) -> np.ndarray:
            return x / a[:, None] - v_a @ np.linalg.solve(small, v_a.T @ x) if c.size else x / a[:, None]

        def inv_diff(x: np.ndarray) -> np.ndarray:
            x = x.reshape(self.dim, -1)
            return approx_inv(x) - (p @ (corr @ (p.T @ x)) + x / damping)

        def curv_diff(x: np.ndarray) -> np.ndarray:
            x = x.reshape(self.dim, -1)
            return (a[:, None] - damping) * x + v @ (c[:, None] * (v.T @ x)) - p @ (m_k @ (p.T @ x))

        inv = symmetric_norm(inv_diff, self.dim, max_restarts=max_restarts)
        curv = symmetric_norm(curv_diff, self.dim, max_restarts=max_restarts)
        out = {
            "inv_spectral_error": math.nan if inv is None else inv * (damping + self.lambda_min),
            "curv_spectral_error": math.nan if curv is None else curv / (damping + self.lambda_max),
            "dropped": self.dropped,
        }
        if self.gradients.shape[1]:
            step = approx_inv(self.gradients) if step is None else _as_columns("step", step, self.dim)
            out.update(self._gradient_metrics(step, damping))
        else:
            out.update(cosine=math.nan, decrease_fraction=math.nan)
        return out


def _lowrank_part(lowrank: tuple[Any, Any] | None, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(V, c)`` in float64 with the columns of coefficient 0 left out; empty for None."""
    if lowrank is None:
        return np.zeros((dim, 0)), np.zeros(0)
    v = np.asarray(lowrank[0], dtype=np.float64).reshape(dim, -1)
    c = np.asarray(lowrank[1], dtype=np.float64).reshape(-1)
    if c.shape != (v.shape[1],) or not (np.all(np.isfinite(v)) and np.all(np.isfinite(c)) and np.all(c >= 0)):
        msg = f"lowrank must be a finite basis of shape ({dim}, k) and k coefficients >= 0"
        raise ValueError(msg)
    keep = c > 0
    return v[:, keep], c[keep]


def _check_damping(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        msg = f"{name} must be positive and finite, got {value!r}"
        raise ValueError(msg)


def window_metrics(
    window: WindowEMA,
    approx_basis: Any,
    approx_eigvals: Any,
    approx_damping: float,
    damping: float,
    *,
    g: Any = None,
    rank: int | None = None,
    step: Any = None,
) -> dict[str, float]:
    r"""Every metric of :math:`\tilde G = \tilde\gamma I + U \operatorname{diag}(\sigma) U^\top` against the window.

    One-shot form of ``window.reduce(g).metrics(...)``; to evaluate several
    methods at one checkpoint, reduce once and call
    :meth:`WindowReduction.metrics` for each.

    Parameters
    ----------
    window : WindowEMA
        The exact EMA M.
    approx_basis : array_like
        U, shape (dim, m).
    approx_eigvals : array_like
        σ, shape (m,), or a symmetric (m, m) core.
    approx_damping : float
        :math:`\tilde\gamma` > 0.
    damping : float
        γ > 0 of the reference :math:`G = \gamma I + M`.
    g : array_like, optional
        Gradients, shape (dim,) or (dim, q).
    rank : int, optional
        τ (see :meth:`WindowReduction.metrics`).
    step : array_like, optional
        The method's own :math:`\tilde G^{-1} g`.

    Returns
    -------
    dict
        See :meth:`WindowReduction.metrics`. :math:`O(d (W + m)^2)` time.
    """
    return window.reduce(g).metrics(approx_basis, approx_eigvals, approx_damping, damping, rank=rank, step=step)
