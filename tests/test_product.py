"""Ginger in product form (U = W Q) against the direct form and dense float64.

The product form must represent the same matrix as the direct form after every
step — to dtype tolerance — while W only grows by one column per step and is
compressed when its buffer is full. Checked on every backend (jitted on JAX),
with capacities from τ + 1 to d, on streams with r = 0 steps, with non-finite
input, with buffer donation and through the conversions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowrank_ggn as lg
from tests._streams import ema, stream

seeds = st.integers(0, 2**32 - 1)
decays = st.sampled_from([0.5, 0.9, 0.99])


def _dense(xp, state):
    """``U diag(σ) Uᵀ`` with ``U = W Q``, in NumPy float64 (no backend dispatch per step)."""
    u = xp.to_numpy(state.columns).T @ xp.to_numpy(state.coords)
    return (u * xp.to_numpy(state.eigvals)) @ u.T


def _direct_dense(xp, state):
    u = xp.to_numpy(state.basis)
    return (u * xp.to_numpy(state.eigvals)) @ u.T


def _check_structure(xp, state, *, factor=20.0):
    """W orthonormal, Q orthonormal, unused rows zero, rank ≤ count < capacity, σ sorted and ≥ 0."""
    cols, q = xp.to_numpy(state.columns), xp.to_numpy(state.coords)
    m = int(xp.to_numpy(state.count))
    capacity, rank = q.shape
    assert rank <= m < capacity
    tol = xp.tol(factor * np.sqrt(cols.shape[1]))
    assert np.abs(cols[:m] @ cols[:m].T - np.eye(m)).max() <= tol
    assert np.abs(q.T @ q - np.eye(rank)).max() <= tol
    assert np.all(cols[m:] == 0)
    assert np.all(q[m:] == 0)
    s = xp.to_numpy(state.eigvals)
    assert np.all(np.isfinite(s))
    assert np.all(s >= 0)
    assert np.all(np.diff(s) <= 0)


@settings(max_examples=5)
@given(seed=seeds, dim=st.integers(4, 24), decay=decays, data=st.data())
def test_product_equals_direct_every_step(xp, seed, dim, decay, data):
    """After every step the product form represents the direct form's matrix (any capacity)."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    capacity = data.draw(st.integers(rank + 1, dim), label="capacity")
    kind = data.draw(st.sampled_from(["power", "step", "flat"]), label="spectrum")
    d = xp.to_numpy(xp.asarray(stream(rng, 2 * rank + 4, dim, kind)))
    update = xp.maybe_jit(lg.ginger_product_update)
    direct_update = xp.maybe_jit(lg.ginger_update)
    p = lg.ginger_product_init(dim, rank, capacity=capacity, xp=xp.module, dtype=xp.dtype)
    s = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    for t, dt in enumerate(d):
        p = update(p, xp.asarray(dt), decay=decay)
        s = direct_update(s, xp.asarray(dt), decay=decay)
        _check_structure(xp, p, factor=20.0 * (t + 1))
        ref = _direct_dense(xp, s)
        size = max(np.abs(ref).max(), 1e-300)
        assert np.abs(_dense(xp, p) - ref).max() <= xp.tol(100 * (t + 1)) * size
        np.testing.assert_allclose(xp.to_numpy(p.eigvals), xp.to_numpy(s.eigvals), atol=xp.tol(50 * (t + 1)) * size)
    assert int(xp.to_numpy(p.step)) == len(d)
    np.testing.assert_allclose(
        float(xp.to_numpy(p.discarded)), float(xp.to_numpy(s.discarded)), rtol=xp.tol(500), atol=xp.tol(500) * size
    )


@settings(max_examples=4)
@given(seed=seeds, decay=decays)
def test_product_against_exact_ema(xp, seed, decay):
    """While t ≤ τ the product form is the exact EMA; afterwards the trace identity holds."""
    rng = np.random.default_rng(seed)
    dim, rank = 16, 5
    d = xp.to_numpy(xp.asarray(stream(rng, 40, dim, "power", exponent=0.5)))
    p = lg.ginger_product_init(dim, rank, capacity=8, xp=xp.module, dtype=xp.dtype)
    update = xp.maybe_jit(lg.ginger_product_update)
    for t, dt in enumerate(d):
        p = update(p, xp.asarray(dt), decay=decay)
        if t + 1 == rank:
            m = ema(d[:rank], decay)
            assert np.abs(_dense(xp, p) - m).max() <= xp.tol(50 * rank) * np.abs(m).max()
    total = np.trace(ema(d, decay))
    got = float(np.sum(xp.to_numpy(p.eigvals)) + xp.to_numpy(p.discarded))
    np.testing.assert_allclose(got, total, rtol=xp.tol(300))


@settings(max_examples=4)
@given(seed=seeds, dim=st.integers(4, 24), data=st.data())
def test_product_queries(xp, seed, dim, data):
    """The product-form query and the fused step against the dense inverse and the direct form."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    gamma = 10.0 ** data.draw(st.floats(-3, 0), label="log10 gamma")
    d = stream(rng, 2 * rank + 3, dim, "power")
    fused = xp.maybe_jit(lg.ginger_product_update_precondition)
    query = xp.maybe_jit(lg.ginger_product_precondition)
    p = lg.ginger_product_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    for dt in d:
        g = xp.asarray(rng.standard_normal(dim))
        p, y = fused(p, xp.asarray(dt), g, decay=0.9, damping=gamma)
        exact = np.linalg.solve(gamma * np.eye(dim) + _dense(xp, p), xp.to_numpy(g))
        scale = 1 + np.abs(xp.to_numpy(p.eigvals)).max() / gamma
        assert np.linalg.norm(xp.to_numpy(y) - exact) <= xp.tol(200 * scale) * np.linalg.norm(exact)
    y2 = xp.to_numpy(query(p, g, damping=gamma))
    assert np.linalg.norm(y2 - exact) <= xp.tol(200 * scale) * np.linalg.norm(exact)
    batch = xp.asarray(rng.standard_normal((dim, 3)))
    yb = xp.to_numpy(query(p, batch, damping=gamma))
    exact = np.linalg.solve(gamma * np.eye(dim) + _dense(xp, p), xp.to_numpy(batch))
    assert np.linalg.norm(yb - exact) <= xp.tol(200 * scale) * np.linalg.norm(exact)


@settings(max_examples=3)
@given(seed=seeds)
def test_product_streams_with_r_zero(xp, seed):
    """Repeated vectors, vectors in span W and zero vectors: nothing is appended, the structure holds."""
    rng = np.random.default_rng(seed)
    dim, rank = 12, 3
    base = rng.standard_normal((2, dim))
    d = rng.standard_normal((30, 2)) @ base
    d[10:15] = d[9]
    d[20] = 0.0
    d = xp.to_numpy(xp.asarray(d))
    p = lg.ginger_product_init(dim, rank, capacity=5, xp=xp.module, dtype=xp.dtype)
    s = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    update = xp.maybe_jit(lg.ginger_product_update)
    direct = xp.maybe_jit(lg.ginger_update)
    for t, dt in enumerate(d):
        p = update(p, xp.asarray(dt), decay=0.9)
        s = direct(s, xp.asarray(dt), decay=0.9)
        if t % 5 == 4:
            _check_structure(xp, p, factor=20.0 * (t + 1))
    m = ema(d, 0.9)
    assert np.abs(_dense(xp, p) - m).max() <= xp.tol(500) * np.abs(m).max()
    assert np.abs(_dense(xp, p) - _direct_dense(xp, s)).max() <= xp.tol(500) * np.abs(m).max()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_product_nonfinite_leaves_state_unchanged(xp, bad):
    rng = np.random.default_rng(0)
    p = lg.ginger_product_init(10, 3, xp=xp.module, dtype=xp.dtype)
    update = xp.maybe_jit(lg.ginger_product_update)
    for dt in stream(rng, 4, 10, "power"):
        p = update(p, xp.asarray(dt), decay=0.9)
    d = rng.standard_normal(10)
    d[3] = bad
    g = xp.asarray(rng.standard_normal(10))
    new, y = xp.maybe_jit(lg.ginger_product_update_precondition)(p, xp.asarray(d), g, decay=0.9, damping=0.1)
    for field in ("columns", "coords", "count", "eigvals", "discarded", "step"):
        np.testing.assert_array_equal(xp.to_numpy(getattr(new, field)), xp.to_numpy(getattr(p, field)))
    assert int(xp.to_numpy(new.num_nonfinite)) == 1
    y_ref = np.linalg.solve(0.1 * np.eye(10) + _dense(xp, p), xp.to_numpy(g))
    np.testing.assert_allclose(xp.to_numpy(y), y_ref, rtol=xp.tol(500), atol=xp.tol(500) * np.abs(y_ref).max())


def test_product_conversions(xp):
    rng = np.random.default_rng(1)
    s = lg.ginger_init(20, 4, xp=xp.module, dtype=xp.dtype)
    direct = xp.maybe_jit(lg.ginger_update)
    for dt in stream(rng, 6, 20, "power"):
        s = direct(s, xp.asarray(dt), decay=0.9)
    p = lg.ginger_product_from_state(s, capacity=7)
    assert p.columns.shape == (7, 20)
    _check_structure(xp, p)
    back = lg.ginger_product_to_state(p)
    np.testing.assert_allclose(xp.to_numpy(back.basis), xp.to_numpy(s.basis), atol=xp.tol(4))
    update = xp.maybe_jit(lg.ginger_product_update)
    for dt in stream(rng, 2, 20, "power"):
        p = update(p, xp.asarray(dt), decay=0.9)
    assert int(xp.to_numpy(p.count)) > 4
    packed = lg.ginger_product_compress(p)
    assert int(xp.to_numpy(packed.count)) == 4
    _check_structure(xp, packed)
    np.testing.assert_allclose(_dense(xp, packed), _dense(xp, p), atol=xp.tol(50) * np.abs(_dense(xp, p)).max())
    fresh = lg.ginger_product_init(20, 4, xp=xp.module, dtype=xp.dtype)
    np.testing.assert_array_equal(xp.to_numpy(lg.ginger_product_to_state(fresh).basis), np.eye(20, 4))
    assert fresh.columns.shape == (8, 20)


@pytest.mark.parametrize("dim", [20_000, 10_000])
def test_product_donation(xp, dim):
    """``donate=True`` (NumPy, PyTorch) and ``donate_argnums`` (JAX) give the pure results.

    At ``dim = 10_000`` the buffer (capacity 8) is large enough for the blocked
    kernels and the live rows (4 after a compression) are not: the donated step
    must then fall back to writing the new row itself.
    """
    rng = np.random.default_rng(2)
    rank = 4
    data = [
        xp.asarray(np.tile(x, dim // 40)) + xp.asarray(rng.standard_normal(dim)) for x in stream(rng, 10, 40, "power")
    ]
    g = xp.asarray(rng.standard_normal(dim))
    if xp.name == "jax":
        import jax

        pure_step = jax.jit(lambda s, d, g: lg.ginger_product_update_precondition(s, d, g, decay=0.9, damping=0.1))
        donated_step = jax.jit(
            lambda s, d, g: lg.ginger_product_update_precondition(s, d, g, decay=0.9, damping=0.1), donate_argnums=0
        )
    else:

        def pure_step(s, d, g):
            return lg.ginger_product_update_precondition(s, d, g, decay=0.9, damping=0.1)

        def donated_step(s, d, g):
            return lg.ginger_product_update_precondition(s, d, g, decay=0.9, damping=0.1, donate=True)

    pure = lg.ginger_product_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    donated = lg.ginger_product_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    for dt in data:
        pure, y_pure = pure_step(pure, dt, g)
        donated, y_don = donated_step(donated, dt, g)
    np.testing.assert_allclose(xp.to_numpy(donated.columns), xp.to_numpy(pure.columns), atol=xp.tol(10))
    np.testing.assert_allclose(xp.to_numpy(y_don), xp.to_numpy(y_pure), rtol=xp.tol(10), atol=xp.tol(10))
    _check_structure(xp, donated, factor=50.0)


def test_product_validation():
    with pytest.raises(ValueError, match="capacity"):
        lg.ginger_product_init(10, 3, capacity=3)
    with pytest.raises(ValueError, match="capacity"):
        lg.ginger_product_init(10, 3, capacity=11)
    with pytest.raises(TypeError, match="capacity"):
        lg.ginger_product_init(10, 3, capacity=4.0)
    p = lg.ginger_product_init(10, 3)
    assert p.columns.shape == (6, 10)
    with pytest.raises(TypeError, match="GingerProductState"):
        lg.ginger_product_update(lg.ginger_init(10, 3), np.ones(10), decay=0.9)
    with pytest.raises(ValueError, match="count"):
        lg.ginger_product_update(p._replace(count=np.asarray(6, np.int32)), np.ones(10), decay=0.9)
    with pytest.raises(ValueError, match="d must have shape"):
        lg.ginger_product_update(p, np.ones(9), decay=0.9)
    with pytest.raises(ValueError, match="decay"):
        lg.ginger_product_update(p, np.ones(10), decay=0.0)
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_product_precondition(p, np.ones(10), damping=-1.0)
    with pytest.raises(TypeError, match="donate"):
        lg.ginger_product_update(p, np.ones(10), decay=0.9, donate="yes")
