"""DampedLowRank with a scalar or vector diagonal against dense float64: matvec, solve, logdet, the factor L
(sqrt_matvec, inv_sqrt_matvec), trace, diag, dense, batches, to_scipy and to_lineax; bad diagonals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lowrank_ggn as lg


def _case(seed, dim=12, rank=3, vector=True, tiny=False):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    sigma = np.sort(rng.uniform(0, 10, rank))[::-1]
    sigma[-1] = 0.0  # σ = 0 must be safe (no Σ⁻¹)
    diag = rng.uniform(0.1, 2.0, dim) if vector else 0.7
    if tiny:
        sigma = sigma * 1e6
        diag = diag * 1e-3
    dense = (np.diag(diag) if vector else diag * np.eye(dim)) + (u * sigma) @ u.T
    return u, sigma, diag, dense, rng


def _op(xp, u, sigma, diag):
    d = xp.asarray(diag) if np.ndim(diag) else diag
    return lg.DampedLowRank(diagonal=d, basis=xp.asarray(u), eigvals=xp.asarray(sigma))


@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
@pytest.mark.parametrize("tiny", [False, True], ids=["moderate", "tiny-diagonal"])
def test_every_method_matches_dense(xp, vector, tiny):
    """Each method equals its dense float64 value, also when the diagonal is tiny against σ (relative errors)."""
    u, sigma, diag, dense, rng = _case(3, vector=vector, tiny=tiny)
    op = _op(xp, u, sigma, diag)
    g = rng.standard_normal((12, 4))
    tol = xp.tol(200)

    def rel(got, want):
        got = xp.to_numpy(got)
        assert np.all(np.isfinite(got))
        return np.abs(got - want).max() / np.abs(want).max()

    assert rel(op.matvec(xp.asarray(g)), dense @ g) < tol
    assert rel(op.matvec(xp.asarray(g[:, 0])), dense @ g[:, 0]) < tol
    # Woodbury in the cancellation-free form. Moderate G: forward error against the dense solve. Tiny diagonal
    # (cond(G) ~ 1e10, where the dense reference is itself off by cond·eps): backward error, ‖Gy − g‖ ≤ tol·‖G‖‖y‖.
    y = xp.to_numpy(op.solve(xp.asarray(g)))
    y1 = xp.to_numpy(op.solve(xp.asarray(g[:, 1])))
    assert np.all(np.isfinite(y))
    norm = np.linalg.norm(dense, 2)
    assert np.abs(dense @ y - g).max() <= tol * norm * np.abs(y).max()
    assert np.abs(dense @ y1 - g[:, 1]).max() <= tol * norm * np.abs(y1).max()
    if not tiny:
        assert rel(op.solve(xp.asarray(g)), np.linalg.solve(dense, g)) < tol
    # Reference by the determinant lemma on a small well-conditioned matrix (slogdet(G) is off by cond·eps).
    d_vec = np.broadcast_to(diag, (12,))
    small = np.eye(3) + (np.sqrt(sigma)[:, None] * (u.T / d_vec) @ u) * np.sqrt(sigma)[None, :]
    want = np.sum(np.log(d_vec)) + np.linalg.slogdet(small)[1]
    assert abs(float(xp.to_numpy(op.logdet())) - want) < tol * max(1.0, abs(want))
    eye = xp.asarray(np.eye(12))
    low = xp.to_numpy(op.sqrt_matvec(eye))
    assert np.abs(low @ low.T - dense).max() / np.abs(dense).max() < tol
    low_inv_t = xp.to_numpy(op.inv_sqrt_matvec(eye))
    # One factor: L⁻ᵀ is the inverse transpose of the same L (error ~ eps·cond(L) = eps·√cond(G)).
    assert np.abs(low.T @ low_inv_t - np.eye(12)).max() < tol * np.linalg.cond(dense) ** 0.5
    if not tiny:
        inv = np.linalg.inv(dense)
        assert np.abs(low_inv_t @ low_inv_t.T - inv).max() / np.abs(inv).max() < tol
    assert rel(op.trace(), np.trace(dense)) < tol
    assert rel(op.diag(), np.diag(dense)) < tol
    assert rel(op.dense(), dense) < tol


@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 5), log_scale=st.floats(-4, 4))
def test_solve_and_factor_random(seed, rank, log_scale):
    """Random vector diagonals and spectra (NumPy float64): solve, logdet and L Lᵀ = G."""
    u, sigma, diag, dense, rng = _case(seed, dim=9, rank=rank)
    diag = diag * 10.0**log_scale
    dense = np.diag(diag) + (u * sigma) @ u.T
    op = lg.DampedLowRank(diagonal=diag, basis=u, eigvals=sigma)
    g = rng.standard_normal(9)
    want = np.linalg.solve(dense, g)
    np.testing.assert_allclose(op.solve(g), want, rtol=0, atol=1e-11 * np.abs(want).max())
    np.testing.assert_allclose(float(op.logdet()), np.linalg.slogdet(dense)[1], rtol=1e-12, atol=1e-12)
    low = op.sqrt_matvec(np.eye(9))
    np.testing.assert_allclose(low @ low.T, dense, atol=1e-12 * np.abs(dense).max())


@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 5), log_scale=st.floats(-4, 4), vector=st.booleans())
def test_random_operators_every_backend(xp, seed, rank, log_scale, vector):
    """Random scalar or vector diagonals and spectra on every backend and dtype, against the dense float64 operator
    the backend holds (inputs rounded to its dtype): solve's backward error, logdet (determinant lemma), L Lᵀ = G
    and Lᵀ L⁻ᵀ = I for the same L."""
    u, sigma, diag, _, rng = _case(seed, dim=9, rank=rank, vector=vector)
    rounded = [np.asarray(a, dtype=xp.np_dtype).astype(np.float64) for a in (u, sigma, diag * 10.0**log_scale)]
    u, sigma, d_vec = rounded[0], rounded[1], np.broadcast_to(rounded[2], (9,))
    op = _op(xp, u, sigma, rounded[2] if vector else float(rounded[2]))
    dense = np.diag(d_vec) + (u * sigma) @ u.T
    norm = np.linalg.norm(dense, 2)
    tol = xp.tol(200)
    g = rng.standard_normal((9, 2))
    y = xp.to_numpy(op.solve(xp.asarray(g)))
    bound = tol * (norm * np.linalg.norm(y, axis=0) + np.linalg.norm(g, axis=0))
    assert np.all(np.linalg.norm(dense @ y - g, axis=0) <= bound)
    small = np.eye(rank) + np.sqrt(sigma)[:, None] * ((u.T / d_vec) @ u) * np.sqrt(sigma)[None, :]
    lemma = np.linalg.slogdet(small)[1]
    want = np.sum(np.log(d_vec)) + lemma
    scale = 1.0 + np.sum(np.abs(np.log(d_vec))) + lemma
    assert abs(float(xp.to_numpy(op.logdet())) - want) <= tol * scale
    eye = xp.asarray(np.eye(9))
    low = xp.to_numpy(op.sqrt_matvec(eye))
    assert np.linalg.norm(low @ low.T - dense, 2) <= tol * norm
    low_inv_t = xp.to_numpy(op.inv_sqrt_matvec(eye))
    assert np.linalg.norm(low.T @ low_inv_t - np.eye(9), 2) <= tol * np.linalg.cond(dense) ** 0.5


def test_sampling_covariances():
    """L z ~ N(0, G) and L⁻ᵀ z ~ N(0, G⁻¹) (Monte Carlo, 4e5 draws)."""
    u, sigma, diag, dense, rng = _case(1, dim=5, rank=2)
    op = lg.DampedLowRank(diagonal=diag, basis=u, eigvals=sigma)
    z = rng.standard_normal((5, 400_000))
    np.testing.assert_allclose(np.cov(op.sqrt_matvec(z)), dense, atol=0.02 * np.abs(dense).max())
    inv = np.linalg.inv(dense)
    np.testing.assert_allclose(np.cov(op.inv_sqrt_matvec(z)), inv, atol=0.02 * np.abs(inv).max())


def test_jit_vector_diagonal():
    """The operator is a pytree: its methods run under jax.jit with a traced vector diagonal."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    u, sigma, diag, dense, rng = _case(2)
    g = rng.standard_normal(12)

    @jax.jit
    def run(d, u, s, g):
        op = lg.DampedLowRank(diagonal=d, basis=u, eigvals=s)
        return op.solve(g), op.logdet(), op.sqrt_matvec(g), op.inv_sqrt_matvec(g)

    y, ld, _, _ = run(jnp.asarray(diag), jnp.asarray(u), jnp.asarray(sigma), jnp.asarray(g))
    np.testing.assert_allclose(np.asarray(y), np.linalg.solve(dense, g), rtol=1e-10)
    np.testing.assert_allclose(float(ld), np.linalg.slogdet(dense)[1], rtol=1e-12)


def test_to_scipy_runs_cg():
    """to_scipy gives a LinearOperator that SciPy's CG solves with."""
    from scipy.sparse.linalg import cg

    u, sigma, diag, dense, rng = _case(4)
    op = lg.DampedLowRank(diagonal=diag, basis=u, eigvals=sigma).to_scipy()
    b = rng.standard_normal(12)
    x, info = cg(op, b, rtol=1e-12, maxiter=200)
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(dense, b), rtol=1e-8)
    np.testing.assert_allclose(op @ np.eye(12), dense, atol=1e-13)


@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
def test_to_scipy_every_backend(xp, vector):
    """to_scipy converts at each product: its matvec and matmat equal G v on every backend and dtype."""
    u, sigma, diag, dense, rng = _case(6, vector=vector)
    op = _op(xp, u, sigma, diag).to_scipy()
    v = rng.standard_normal((12, 3))
    want = dense @ v
    got = op @ v
    assert got.dtype == xp.np_dtype
    assert np.abs(got - want).max() <= xp.tol(200) * np.abs(want).max()
    assert np.abs(op.matvec(v[:, 0]) - want[:, 0]).max() <= xp.tol(200) * np.abs(want).max()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
def test_to_lineax_represents_g(dtype, vector):
    """to_lineax's operator is G in both dtypes: its matrix and its mv against the dense float64 G."""
    pytest.importorskip("lineax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    u, sigma, diag, dense, rng = _case(7, vector=vector)
    d = jnp.asarray(diag, dtype=dtype) if vector else diag
    op = lg.DampedLowRank(diagonal=d, basis=jnp.asarray(u, dtype=dtype), eigvals=jnp.asarray(sigma, dtype=dtype))
    lop = op.to_lineax()
    tol = 200 * float(np.finfo(dtype).eps) * np.abs(dense).max()
    assert np.abs(np.asarray(lop.as_matrix(), dtype=np.float64) - dense).max() <= tol
    v = rng.standard_normal(12)
    got = np.asarray(lop.mv(jnp.asarray(v, dtype=dtype)), dtype=np.float64)
    assert np.abs(got - dense @ v).max() <= tol * np.abs(v).max() * 12


def test_to_lineax():
    """to_lineax gives a lineax operator that lineax's CG solves with."""
    lineax = pytest.importorskip("lineax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    u, sigma, diag, dense, rng = _case(5)
    op = lg.DampedLowRank(diagonal=jnp.asarray(diag), basis=jnp.asarray(u), eigvals=jnp.asarray(sigma))
    b = rng.standard_normal(12)
    sol = lineax.linear_solve(op.to_lineax(), jnp.asarray(b), solver=lineax.CG(rtol=1e-12, atol=1e-12))
    np.testing.assert_allclose(np.asarray(sol.value), np.linalg.solve(dense, b), rtol=1e-8)
    with pytest.raises(TypeError, match="JAX arrays"):
        lg.DampedLowRank(diagonal=0.5, basis=u, eigvals=sigma).to_lineax()


@pytest.mark.parametrize(
    ("diag", "err", "match"),
    [
        (np.r_[1.0, -1.0, np.ones(10)], ValueError, "diagonal must be positive"),
        (np.r_[np.nan, np.ones(11)], ValueError, "diagonal must be positive"),
        (np.ones(5), ValueError, "diagonal must have shape"),
        (0.0, ValueError, "diagonal must be positive"),
        (np.ones(12, dtype=np.float32), TypeError, "diagonal has dtype"),
    ],
)
def test_bad_diagonal(diag, err, match):
    """A bad diagonal is a one-line error naming it, before any computation."""
    u, sigma, _, _, _ = _case(0)
    with pytest.raises(err, match=match):
        lg.DampedLowRank(diagonal=diag, basis=u, eigvals=sigma).solve(np.ones(12))
