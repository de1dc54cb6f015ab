"""Random curvature streams with controlled spectra, drawn fresh from a seed."""

from __future__ import annotations

import numpy as np


def spectrum(dim: int, kind: str, *, exponent: float = 1.5, step_at: int = 4, floor: float = 1e-3) -> np.ndarray:
    """Eigenvalues of the stream's covariance: ``power`` law, ``step`` or ``flat``."""
    i = np.arange(1, dim + 1, dtype=np.float64)
    if kind == "power":
        return i**-exponent
    if kind == "step":
        return np.where(i <= step_at, 1.0, floor)
    if kind == "flat":
        return np.ones(dim)
    msg = f"unknown spectrum {kind}"
    raise ValueError(msg)


def stream(
    rng: np.random.Generator, steps: int, dim: int, kind: str = "power", *, scale: float = 1.0, **kw: float
) -> np.ndarray:
    """``steps`` vectors ``d_t = Q diag(√s) z_t``, so that ``E[d dᵀ] = Q diag(s) Qᵀ``; shape (steps, dim)."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    s = spectrum(dim, kind, **kw)
    z = rng.standard_normal((steps, dim))
    return scale * (z * np.sqrt(s)) @ q.T


def orthonormal(rng: np.random.Generator, dim: int, rank: int) -> np.ndarray:
    """A random dim × rank matrix with orthonormal columns."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    return q


def ema(stream_: np.ndarray, decay: float) -> np.ndarray:
    """The exact undamped EMA in NumPy float64."""
    dim = stream_.shape[1]
    m = np.zeros((dim, dim))
    for d in stream_:
        m = decay * m + (1 - decay) * np.outer(d, d)
    return m
