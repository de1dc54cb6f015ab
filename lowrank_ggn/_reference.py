r"""Exact dense references: the EMA of Eq 7, the damped inverse and the best rank-k approximation.

These cost O(dim²) memory and O(dim³) time. They are the oracles of the tests,
``proofs_checks`` and the approximation-error studies; they run on any array
namespace (use float64 for reference values).
"""

from __future__ import annotations

from typing import Any

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.checks import cast_like, check_damping, check_decay, check_like
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn.backends import array_namespace, device_of, is_array

__all__ = ["best_rank_k", "damped_inverse_dense", "ema_dense", "ema_update_dense"]


def _check_square(m: Array, name: str) -> ArrayNamespace:
    if not is_array(m):
        msg = f"{name} must be an array, got {type(m).__name__}"
        raise TypeError(msg)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        msg = f"{name} must be a square matrix, got shape {tuple(m.shape)}"
        raise ValueError(msg)
    xp = array_namespace(m)
    if not xp.isdtype(m.dtype, "real floating"):
        msg = f"{name} must have a real floating dtype, got {m.dtype}"
        raise TypeError(msg)
    return xp


def ema_update_dense(m: Array, d: Array, *, decay: Any) -> Array:
    r"""One step of the exact EMA (Eq 7): :math:`\alpha M + (1 - \alpha) d d^\top`.

    Parameters
    ----------
    m : array, shape (dim, dim)
        The current EMA ``M``.
    d : array, shape (dim,)
        The curvature vector.
    decay : float
        α ∈ (0, 1).

    Returns
    -------
    array, shape (dim, dim)
        ``α M + (1 − α) d dᵀ``.
    """
    xp = _check_square(m, "m")
    check_like(d, "d", m, shapes=((m.shape[0],),), promote=True)
    check_decay(decay, like=m)
    d = cast_like(xp, d, m)
    alpha = as_scalar(xp, decay, m)
    return alpha * m + (1 - alpha) * (d[:, None] * d[None, :])


def ema_dense(stream: Array, *, decay: Any, initial: Array | None = None) -> Array:
    r"""Compute the exact EMA of a stream of curvature vectors (Eq 7).

    .. math:: M_t = \alpha M_{t-1} + (1 - \alpha)\, d_t d_t^\top, \qquad M_0 = \text{initial}

    Parameters
    ----------
    stream : array, shape (steps, dim)
        ``d_1, …, d_T``, one per row.
    decay : float
        α ∈ (0, 1).
    initial : array, shape (dim, dim), optional
        ``M_0``; default 0 (the undamped EMA that Ginger approximates).

    Returns
    -------
    array, shape (dim, dim)
        ``M_T``.
    """
    if not is_array(stream) or stream.ndim != 2:
        msg = "stream must be a 2-d array (steps, dim)"
        raise ValueError(msg) if is_array(stream) else TypeError(msg)
    xp = array_namespace(stream)
    check_decay(decay, like=stream)
    dim = stream.shape[1]
    if initial is None:
        m = xp.zeros((dim, dim), dtype=stream.dtype, device=device_of(stream))
    else:
        check_like(initial, "initial", stream, shapes=((dim, dim),))
        m = initial
    alpha = as_scalar(xp, decay, stream)
    for t in range(stream.shape[0]):
        d = stream[t, :]
        m = alpha * m + (1 - alpha) * (d[:, None] * d[None, :])
    return m


def _sorted_eigh(xp: ArrayNamespace, m: Array) -> tuple[Array, Array]:
    sym = (m + m.T) / 2
    w, v = xp.linalg.eigh(sym)
    order = xp.argsort(w, descending=True)
    return xp.take(w, order, axis=0), xp.take(v, order, axis=1)


def damped_inverse_dense(m: Array, *, damping: Any) -> Array:
    r"""Compute the exact damped inverse :math:`(\gamma I + M)^{-1}` of a symmetric PSD matrix.

    Computed from the eigendecomposition of M (its rounding-negative
    eigenvalues clamped to 0).

    Parameters
    ----------
    m : array, shape (dim, dim)
        Symmetric PSD.
    damping : float
        γ > 0.

    Returns
    -------
    array, shape (dim, dim)
        ``(γI + M)⁻¹``, symmetric positive definite.
    """
    xp = _check_square(m, "m")
    check_damping(damping, like=m)
    gamma = as_scalar(xp, damping, m)
    w, v = _sorted_eigh(xp, m)
    w = xp.where(w > 0, w, xp.zeros_like(w))
    return (v / (gamma + w)[None, :]) @ v.T


def best_rank_k(m: Array, k: int) -> tuple[Array, Array]:
    r"""Compute the best rank-k approximation of a symmetric PSD matrix (Eckart–Young).

    .. math:: \min_{\operatorname{rank} X \le k} \|M - X\|_2 = \lambda_{k+1}(M),

    attained by the top-k eigenpairs.

    Parameters
    ----------
    m : array, shape (dim, dim)
        Symmetric PSD.
    k : int
        1 ≤ k ≤ dim.

    Returns
    -------
    tuple of arrays
        ``(basis, eigvals)``: shape (dim, k) orthonormal columns and shape
        (k,) eigenvalues, descending, rounding negatives clamped to 0.
    """
    xp = _check_square(m, "m")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m.shape[0]:
        msg = f"k must be an integer in [1, {m.shape[0]}], got {k!r}"
        raise ValueError(msg)
    w, v = _sorted_eigh(xp, m)
    w = w[:k]
    return v[:, :k], xp.where(w > 0, w, xp.zeros_like(w))
