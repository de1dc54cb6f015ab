"""Random inputs with controlled spectra and dense float64 NumPy references."""

from __future__ import annotations

import numpy as np

__all__ = [
    "ema",
    "fit_exponent",
    "inv_refined",
    "numerical_rank",
    "orthonormal",
    "rel_err",
    "solve_refined",
    "stream",
    "sym_eigvalsh",
]


def stream(rng: np.random.Generator, steps: int, dim: int, *, exponent: float = 1.5, scale: float = 1.0) -> np.ndarray:
    r"""Draw curvature vectors ``d_t = Q diag(√s) z_t`` with a power-law spectrum ``s_i = i^{-exponent}``.

    ``E[d dᵀ] = Q diag(s) Qᵀ`` with a random orthogonal ``Q``; shape (steps, dim).
    """
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    s = np.arange(1, dim + 1, dtype=np.float64) ** -exponent
    return scale * (rng.standard_normal((steps, dim)) * np.sqrt(s)) @ q.T


def orthonormal(rng: np.random.Generator, dim: int, rank: int) -> np.ndarray:
    """Draw a random ``dim × rank`` matrix with orthonormal columns."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    return q


def ema(data: np.ndarray, decay: float, initial: np.ndarray | None = None) -> np.ndarray:
    r"""Compute the exact EMA of Eq 7 in float64: :math:`M_t = \alpha M_{t-1} + (1-\alpha) d_t d_t^\top`."""
    dim = data.shape[1]
    m = np.zeros((dim, dim)) if initial is None else np.array(initial, dtype=np.float64)
    for d in np.asarray(data, dtype=np.float64):
        m = decay * m + (1 - decay) * np.outer(d, d)
    return m


def solve_refined(a: np.ndarray, b: np.ndarray, steps: int = 2) -> np.ndarray:
    """Solve ``a x = b`` in float64 with ``steps`` rounds of iterative refinement.

    Refinement removes most of the condition-number factor from the error of a plain solve, so the
    reference is accurate to a few ulps also for the ill-conditioned damped operators used here.
    """
    x = np.linalg.solve(a, b)
    for _ in range(steps):
        x = x + np.linalg.solve(a, b - a @ x)
    return x


def inv_refined(a: np.ndarray) -> np.ndarray:
    """Invert ``a`` in float64 with iterative refinement (see :func:`solve_refined`)."""
    return solve_refined(a, np.eye(a.shape[0]))


def sym_eigvalsh(m: np.ndarray) -> np.ndarray:
    """Eigenvalues of the symmetric part of ``m``, descending (NumPy, float64)."""
    m = np.asarray(m, dtype=np.float64)
    return np.linalg.eigvalsh((m + m.T) / 2)[::-1]


def numerical_rank(m: np.ndarray, rtol: float) -> int:
    """Count the eigenvalues of the symmetric ``m`` above ``rtol`` times the largest magnitude."""
    w = sym_eigvalsh(m)
    scale = np.abs(w).max()
    return int(np.sum(np.abs(w) > rtol * scale)) if scale > 0 else 0


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Max-abs error of ``a`` against the reference ``b``, relative to the max-abs of ``b``."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


def fit_exponent(sizes: np.ndarray, costs: np.ndarray) -> float:
    """Least-squares slope of ``log cost`` against ``log size``: the exponent p of ``cost ∝ size^p``."""
    slope, _ = np.polyfit(np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(costs, dtype=float)), 1)
    return float(slope)
