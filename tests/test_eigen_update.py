"""Brand's rank-one eigen-update with truncation: Eckart–Young, r = 0, ordering, re-orthonormalisation."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import lowrank_ggn as lg
from tests._streams import orthonormal

seeds = st.integers(0, 2**32 - 1)


def _check_invariants(xp, basis, eigvals, *, factor=20.0):
    rank = basis.shape[1]
    assert np.all(np.isfinite(basis))
    assert np.all(np.isfinite(eigvals))
    assert np.abs(basis.T @ basis - np.eye(rank)).max() <= xp.tol(factor * np.sqrt(basis.shape[0]))
    assert np.all(eigvals >= 0)
    assert np.all(np.diff(eigvals) <= 0)


@given(seed=seeds, dim=st.integers(3, 40), data=st.data())
def test_eckart_young_truncation(xp, seed, dim, data):
    """The result is the best rank-τ approximation; its spectral error is λ_{τ+1} = ``discarded``."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    scale = data.draw(st.floats(0.1, 1.0), label="scale")
    weight = data.draw(st.floats(0.01, 1.0), label="weight")
    u = orthonormal(rng, dim, rank)
    lam = np.sort(rng.exponential(1.0, rank))[::-1]
    v = rng.standard_normal(dim)
    U, L, V = (xp.asarray(a) for a in (u, lam, v))
    u, lam, v = (xp.to_numpy(a) for a in (U, L, V))
    full = scale * (u * lam) @ u.T + weight * np.outer(v, v)
    w = np.sort(np.linalg.eigvalsh(full))[::-1]
    out = lg.lowrank_eigh_update(U, L, V, weight=weight, scale=scale)
    nb, nl, disc = (xp.to_numpy(a) for a in out)
    _check_invariants(xp, nb, nl)
    size = w[0]
    np.testing.assert_allclose(nl, w[:rank], atol=xp.tol(40) * size)
    np.testing.assert_allclose(disc, max(w[rank], 0), atol=xp.tol(40) * size)
    err = np.linalg.norm(full - (nb * nl) @ nb.T, 2)
    np.testing.assert_allclose(err, w[rank], atol=xp.tol(100) * size)


@given(seed=seeds, dim=st.integers(3, 30), data=st.data())
def test_vector_in_span_is_a_rotation(xp, seed, dim, data):
    """r = 0: v ∈ span U. The update only rotates U; nothing is truncated."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    u = orthonormal(rng, dim, rank)
    lam = np.sort(rng.exponential(1.0, rank))[::-1]
    v = u @ rng.standard_normal(rank)
    U, L, V = (xp.asarray(a) for a in (u, lam, v))
    u, lam, v = (xp.to_numpy(a) for a in (U, L, V))
    nb, nl, disc = (xp.to_numpy(a) for a in lg.lowrank_eigh_update(U, L, V, weight=0.5, scale=0.9))
    _check_invariants(xp, nb, nl)
    full = 0.9 * (u * lam) @ u.T + 0.5 * np.outer(v, v)
    size = np.abs(full).max()
    np.testing.assert_allclose((nb * nl) @ nb.T, full, atol=xp.tol(100) * size)
    assert disc <= xp.tol(100) * size
    # The new basis spans the old one: nothing left span U.
    assert np.abs(nb - u @ (u.T @ nb)).max() <= xp.tol(100)


def test_zero_vector_and_zero_state(xp):
    """v = 0 and an all-zero state: no division by r, the basis stays orthonormal."""
    dim, rank = 6, 3
    U = xp.asarray(np.eye(dim, rank))
    L = xp.asarray(np.zeros(rank))
    V = xp.asarray(np.zeros(dim))
    nb, nl, disc = (xp.to_numpy(a) for a in lg.lowrank_eigh_update(U, L, V, weight=0.1, scale=0.9))
    _check_invariants(xp, nb, nl)
    assert np.all(nl == 0)
    assert disc == 0
    # Repeating the same vector: afterwards it lies in span U (r ≈ 0 up to rounding).
    v = np.random.default_rng(0).standard_normal(dim)
    state = (U, L)
    for _ in range(4):
        state = lg.lowrank_eigh_update(*state, xp.asarray(v), weight=0.1, scale=0.9)[:2]
    nb, nl = (xp.to_numpy(a) for a in state)
    _check_invariants(xp, nb, nl)
    expected = 0.1 * sum(0.9**k for k in range(4)) * (v @ v)
    np.testing.assert_allclose(nl[0], expected, rtol=xp.tol(50))
    np.testing.assert_allclose(nl[1:], 0, atol=xp.tol(50) * expected)


def test_eigenvalues_sorted_and_clamped(xp):
    """Eigenvalues come back sorted descending even when the input order makes eigh's order differ."""
    rng = np.random.default_rng(3)
    dim, rank = 12, 4
    u = orthonormal(rng, dim, rank)
    lam = np.array([1e-3, 0.0, 5.0, 2.0])  # deliberately unsorted
    U, L = xp.asarray(u), xp.asarray(lam)
    v = xp.asarray(rng.standard_normal(dim) * 1e-2)
    nb, nl, _ = (xp.to_numpy(a) for a in lg.lowrank_eigh_update(U, L, v, weight=1.0, scale=1.0))
    _check_invariants(xp, nb, nl)


@given(seed=seeds, dim=st.integers(4, 40), data=st.data())
def test_reorthonormalize_keeps_matrix(xp, seed, dim, data):
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    u = orthonormal(rng, dim, rank)
    u = u + 1e-4 * rng.standard_normal(u.shape)  # drifted basis
    lam = np.sort(rng.exponential(1.0, rank))[::-1]
    U, L = xp.asarray(u), xp.asarray(lam)
    u, lam = xp.to_numpy(U), xp.to_numpy(L)
    nb, nl = (xp.to_numpy(a) for a in lg.reorthonormalize(U, L))
    _check_invariants(xp, nb, nl)
    np.testing.assert_allclose((nb * nl) @ nb.T, (u * lam) @ u.T, atol=xp.tol(50) * lam.max())
