"""The damped operator γI + U diag(σ) Uᵀ: Eq 15–16, Eq 18 and Lemma 1 against dense float64."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import lowrank_ggn as lg
from tests._streams import orthonormal

seeds = st.integers(0, 2**32 - 1)
log_gamma = st.floats(-3.0, 2.0)


def _problem(rng: np.random.Generator, dim: int, rank: int, gamma: float, spread: float):
    """Orthonormal U and σ ≥ 0 (descending, some zeros possible) with σ_max/γ ≤ ``spread``."""
    u = orthonormal(rng, dim, rank)
    sigma = np.sort(gamma * spread * rng.uniform(0, 1, rank) ** 3)[::-1]
    if rank > 1:
        sigma[-1] = 0.0
    return u, sigma


def _cast(xp, *arrays):
    """Arrays on the backend, plus the same values back in float64 (the reference sees the rounded inputs)."""
    out = [xp.asarray(a) for a in arrays]
    return out, [xp.to_numpy(a) for a in out]


def _dense_inverse(u, sigma, gamma):
    return np.linalg.inv(gamma * np.eye(u.shape[0]) + (u * sigma) @ u.T)


@given(seed=seeds, dim=st.integers(3, 40), data=st.data())
def test_eq15_16_solve_matches_dense(xp, seed, dim, data):
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    gamma = 10.0 ** data.draw(log_gamma, label="log10 gamma")
    u, sigma = _problem(rng, dim, rank, gamma, spread=1e3)
    g = rng.standard_normal(dim)
    batch = rng.standard_normal((dim, 3))
    (U, S, G, B), (u, sigma, g, batch) = _cast(xp, u, sigma, g, batch)
    inv = _dense_inverse(u, sigma, gamma)
    cond = 1 + sigma.max() / gamma
    tol = xp.tol(20 * cond)
    y = xp.to_numpy(lg.damped_solve(U, S, G, damping=gamma))
    assert np.all(np.isfinite(y))
    assert np.linalg.norm(y - inv @ g) <= tol * np.linalg.norm(inv @ g)
    yb = xp.to_numpy(lg.damped_solve(U, S, B, damping=gamma))
    assert yb.shape == (dim, 3)
    assert np.linalg.norm(yb - inv @ batch) <= tol * np.linalg.norm(inv @ batch)


@given(seed=seeds, dim=st.integers(3, 30), data=st.data())
def test_eq16_woodbury_form_and_kappa(xp, seed, dim, data):
    """γ⁻¹I − U diag(κ) Uᵀ with κ = σ/(γ(γ+σ)) is the inverse (Eq 15–16)."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    gamma = 10.0 ** data.draw(log_gamma, label="log10 gamma")
    u, sigma = _problem(rng, dim, rank, gamma, spread=1e2)
    (_, S), (u, sigma) = _cast(xp, u, sigma)
    kappa = xp.to_numpy(lg.kappa_from_sigma(S, gamma))
    np.testing.assert_allclose(kappa, sigma / (gamma * (gamma + sigma)), rtol=xp.tol(8), atol=0)
    woodbury = np.eye(dim) / gamma - (u * kappa) @ u.T
    inv = _dense_inverse(u, sigma, gamma)
    assert np.abs(woodbury - inv).max() <= xp.tol(20 * (1 + sigma.max() / gamma)) / gamma


@given(seed=seeds, data=st.data())
def test_eq18_round_trip(xp, seed, data):
    """σ → κ (Eq 16) → σ (Eq 18) returns σ, to eps times the conditioning of 1 − γκ."""
    rng = np.random.default_rng(seed)
    gamma = 10.0 ** data.draw(log_gamma, label="log10 gamma")
    sigma = gamma * 10.0 ** rng.uniform(-3, 3, 16)
    S = xp.asarray(sigma)
    sigma = xp.to_numpy(S)
    back = xp.to_numpy(lg.sigma_from_kappa(lg.kappa_from_sigma(S, gamma), gamma))
    rel = np.abs(back - sigma) / sigma
    assert np.all(rel <= xp.tol(8) * (2 + sigma / gamma))
    zero = xp.to_numpy(lg.sigma_from_kappa(lg.kappa_from_sigma(S * 0, gamma), gamma))
    assert np.all(zero == 0)


def test_eq18_overflow_region_maps_to_inf(xp):
    gamma = 0.5
    kappa = xp.asarray(np.array([1 / gamma, 2 / gamma]))
    assert np.all(np.isposinf(xp.to_numpy(lg.sigma_from_kappa(kappa, gamma))))


@given(seed=seeds, dim=st.integers(3, 30), data=st.data())
def test_matvec_dense_and_solve_are_consistent(xp, seed, dim, data):
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    gamma = 10.0 ** data.draw(log_gamma, label="log10 gamma")
    u, sigma = _problem(rng, dim, rank, gamma, spread=1e2)
    v = rng.standard_normal((dim, 2))
    (U, S, V), (u, sigma, v) = _cast(xp, u, sigma, v)
    dense = gamma * np.eye(dim) + (u * sigma) @ u.T
    scale = gamma + sigma.max()
    np.testing.assert_allclose(xp.to_numpy(lg.damped_dense(U, S, damping=gamma)), dense, atol=xp.tol(8) * scale)
    mv = xp.to_numpy(lg.damped_matvec(U, S, V, damping=gamma))
    assert np.abs(mv - dense @ v).max() <= xp.tol(8 * dim) * scale * np.abs(v).max()
    mv1 = xp.to_numpy(lg.damped_matvec(U, S, V[:, 0], damping=gamma))
    np.testing.assert_allclose(mv1, mv[:, 0], rtol=xp.tol(4), atol=xp.tol(4) * scale)
    back = xp.to_numpy(lg.damped_solve(U, S, lg.damped_matvec(U, S, V, damping=gamma), damping=gamma))
    assert np.abs(back - v).max() <= xp.tol(40 * (1 + sigma.max() / gamma)) * np.abs(v).max()


@given(seed=seeds, dim=st.integers(3, 30), data=st.data())
def test_lemma1_eigenvalues_of_inverse(xp, seed, dim, data):
    """Eigenvalues of G⁻¹ lie in (0, 1/γ]; the largest equals 1/γ because τ < d (Lemma 1)."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    gamma = 10.0 ** data.draw(log_gamma, label="log10 gamma")
    u, sigma = _problem(rng, dim, rank, gamma, spread=1e3)
    (U, S), (u, sigma) = _cast(xp, u, sigma)
    eye = xp.asarray(np.eye(dim))
    ginv = xp.to_numpy(lg.damped_solve(U, S, eye, damping=gamma))
    w = np.linalg.eigvalsh((ginv + ginv.T) / 2)
    tol = xp.tol(40 * (1 + sigma.max() / gamma)) / gamma
    assert w.min() > 0
    assert w.min() >= 1 / (gamma + sigma.max()) - tol
    assert abs(w.max() - 1 / gamma) <= tol


def test_damped_dense_undamped_default(xp):
    u = np.eye(4, 2)
    sigma = np.array([2.0, 1.0])
    out = xp.to_numpy(lg.damped_dense(xp.asarray(u), xp.asarray(sigma)))
    np.testing.assert_array_equal(out, np.diag([2.0, 1.0, 0.0, 0.0]))
