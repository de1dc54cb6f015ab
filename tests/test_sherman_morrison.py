"""The Sherman–Morrison EMA step: Eq 17 (corrected) and Eq 19 against dense float64."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import lowrank_ggn as lg
from tests._streams import orthonormal

seeds = st.integers(0, 2**32 - 1)


def _inputs(xp, rng, dim, rank, gamma, spread):
    u = orthonormal(rng, dim, rank)
    sigma = np.sort(gamma * spread * rng.uniform(0, 1, rank))[::-1]
    d = rng.standard_normal(dim) * np.sqrt(gamma * spread)
    arrays = [xp.asarray(a) for a in (u, sigma, d)]
    return arrays, [xp.to_numpy(a) for a in arrays]


@given(seed=seeds, dim=st.integers(3, 30), data=st.data())
def test_eq17_corrected(xp, seed, dim, data):
    """(γI + αUΣUᵀ + (1−α)ddᵀ)⁻¹ = γ⁻¹I − U diag(κ') Uᵀ − β h hᵀ."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    alpha = data.draw(st.sampled_from([0.5, 0.9, 0.99, 0.999]), label="alpha")
    gamma = 10.0 ** data.draw(st.floats(-2, 1), label="log10 gamma")
    (U, S, D), (u, sigma, d) = _inputs(xp, rng, dim, rank, gamma, spread=10.0)
    kappa, h, beta = (xp.to_numpy(a) for a in lg.sherman_morrison_step(U, S, D, decay=alpha, damping=gamma))
    exact = np.linalg.inv(gamma * np.eye(dim) + alpha * (u * sigma) @ u.T + (1 - alpha) * np.outer(d, d))
    rebuilt = np.eye(dim) / gamma - (u * kappa) @ u.T - beta * np.outer(h, h)
    cond = 1 + (sigma.max() + d @ d) / gamma
    assert np.abs(rebuilt - exact).max() <= xp.tol(50 * cond) / gamma
    # The printed β = α⁻¹/(α + (1−α)hᵀd) does not give the inverse (erratum).
    printed = (1 / alpha) / (alpha + (1 - alpha) * h @ d)
    wrong = np.eye(dim) / gamma - (u * kappa) @ u.T - printed * np.outer(h, h)
    assert np.abs(wrong - exact).max() > 1e-2 * np.abs(exact).max()


@given(seed=seeds, dim=st.integers(3, 30), data=st.data())
def test_eq19_inverse_part_is_bounded(xp, seed, dim, data):
    """0 ⪯ U diag(κ') Uᵀ + β h hᵀ ≺ γ⁻¹ I, so Eq 18 returns σ ≥ 0."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    alpha = data.draw(st.sampled_from([0.5, 0.9, 0.99]), label="alpha")
    gamma = 10.0 ** data.draw(st.floats(-2, 1), label="log10 gamma")
    (U, S, D), (u, _, _) = _inputs(xp, rng, dim, rank, gamma, spread=10.0)
    kappa, h, beta = (xp.to_numpy(a) for a in lg.sherman_morrison_step(U, S, D, decay=alpha, damping=gamma))
    part = (u * kappa) @ u.T + beta * np.outer(h, h)
    w = np.linalg.eigvalsh((part + part.T) / 2)
    assert w.min() >= -xp.tol(50) / gamma
    assert w.max() < 1 / gamma
    assert beta > 0
