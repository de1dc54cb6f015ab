"""Dense float64 NumPy references for the optimiser front-ends (one block)."""

from __future__ import annotations

import numpy as np


class DenseGinger:
    """The truncated EMA of Eq 7 and the damped solve of Eq 15–16, densely."""

    def __init__(self, dim: int, rank: int) -> None:
        self.m = np.zeros((dim, dim))
        self.rank = rank

    def update(self, d: np.ndarray, decay: float) -> None:
        m = decay * self.m + (1 - decay) * np.outer(d, d)
        w, v = np.linalg.eigh((m + m.T) / 2)
        top = np.argsort(w)[::-1][: self.rank]
        self.m = (v[:, top] * np.maximum(w[top], 0)) @ v[:, top].T

    def solve(self, g: np.ndarray, damping: float) -> np.ndarray:
        return np.linalg.solve(damping * np.eye(self.m.shape[0]) + self.m, g)


class DenseQNG:
    """QNG's window of τ factors ``K = √α I + β q qᵀ``, multiplied out densely."""

    def __init__(self, dim: int, rank: int) -> None:
        self.dim, self.rank = dim, rank
        self.factors: list[np.ndarray] = []

    def a_hat(self) -> np.ndarray:
        a = np.eye(self.dim)
        for k in self.factors:  # oldest first
            a = a @ k
        return a

    def update(self, d: np.ndarray, decay: float) -> None:
        q = np.linalg.solve(self.a_hat(), d)
        n2 = q @ q
        beta = (np.sqrt(decay + (1 - decay) * n2) - np.sqrt(decay)) / n2 if n2 > 0 else 0.0
        self.factors.append(np.sqrt(decay) * np.eye(self.dim) + beta * np.outer(q, q))
        self.factors = self.factors[-self.rank :]

    def solve(self, g: np.ndarray) -> np.ndarray:
        a = self.a_hat()
        return np.linalg.solve(a @ a.T, g)
