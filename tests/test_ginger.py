"""Ginger against the exact EMA (dense float64): exactness for t ≤ τ, Eckart–Young per step,
eigen ≡ Sherman–Morrison, float32 accuracy, invariants, the discarded mass, non-finite input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lowrank_ggn as lg
from tests._streams import ema, stream

seeds = st.integers(0, 2**32 - 1)
decays = st.sampled_from([0.5, 0.9, 0.99, 0.999])


def _np_state(xp, state):
    return xp.to_numpy(state.basis), xp.to_numpy(state.eigvals)


def _check_invariants(xp, state, *, factor=20.0):
    u, s = _np_state(xp, state)
    rank = u.shape[1]
    assert np.all(np.isfinite(u))
    assert np.all(np.isfinite(s))
    assert np.abs(u.T @ u - np.eye(rank)).max() <= xp.tol(factor * np.sqrt(u.shape[0]))
    assert np.all(s >= 0)
    assert np.all(np.diff(s) <= 0)


def _update(xp):
    return xp.maybe_jit(lg.ginger_update, static_argnames=("method", "reorthonormalize_every"))


def _run(xp, data, decay, rank, **kw):
    update = _update(xp)
    state = lg.ginger_init(data.shape[1], rank, xp=xp.module, dtype=xp.dtype)
    for d in data:
        state = update(state, xp.asarray(d), decay=decay, **kw)
    return state


@given(seed=seeds, dim=st.integers(4, 40), decay=decays, data=st.data())
def test_equals_exact_ema_while_t_le_rank(xp, seed, dim, decay, data):
    """While t ≤ τ the EMA has rank ≤ τ and Ginger represents it exactly."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    steps = data.draw(st.integers(1, rank), label="steps")
    d = xp.to_numpy(xp.asarray(stream(rng, steps, dim, "power")))
    state = _run(xp, d, decay, rank)
    _check_invariants(xp, state)
    u, s = _np_state(xp, state)
    m = ema(d, decay)
    assert np.abs((u * s) @ u.T - m).max() <= xp.tol(50 * steps) * np.abs(m).max()
    assert int(xp.to_numpy(state.step)) == steps


@given(seed=seeds, dim=st.integers(4, 30), decay=decays, data=st.data())
def test_every_step_is_the_best_rank_tau_update(xp, seed, dim, decay, data):
    """Each step is Eckart–Young of α·(previous state) + (1−α) d dᵀ; invariants hold after every step."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    kind = data.draw(st.sampled_from(["power", "step", "flat"]), label="spectrum")
    d = xp.to_numpy(xp.asarray(stream(rng, 3 * rank + 5, dim, kind)))
    state = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    update = _update(xp)
    for t, dt in enumerate(d):
        u, s = _np_state(xp, state)
        full = decay * (u * s) @ u.T + (1 - decay) * np.outer(dt, dt)
        w = np.sort(np.linalg.eigvalsh(full))[::-1]
        state = update(state, xp.asarray(dt), decay=decay)
        _check_invariants(xp, state, factor=20.0 * (t + 1))
        nu, ns = _np_state(xp, state)
        np.testing.assert_allclose(ns, w[:rank], atol=xp.tol(100) * w[0])
        err = np.linalg.norm(full - (nu * ns) @ nu.T, 2)
        np.testing.assert_allclose(err, w[rank], atol=xp.tol(200) * w[0])


@given(seed=seeds, decay=decays)
def test_discarded_mass_closes_the_trace(xp, seed, decay):
    """trace(M_t) = sum(σ) + discarded for the exact EMA M_t."""
    rng = np.random.default_rng(seed)
    d = xp.to_numpy(xp.asarray(stream(rng, 40, 20, "power", exponent=0.5)))
    state = _run(xp, d, decay, 3)
    total = np.trace(ema(d, decay))
    got = float(np.sum(xp.to_numpy(state.eigvals)) + xp.to_numpy(state.discarded))
    np.testing.assert_allclose(got, total, rtol=xp.tol(200))
    assert float(xp.to_numpy(state.discarded)) > 0


def test_eigen_path_equals_sherman_morrison_path_float64(xp64):
    """The two update paths are the same algorithm: they agree to rounding over 300 steps."""
    rng = np.random.default_rng(1)
    d = stream(rng, 300, 40, "power")
    eig = _run(xp64, d, 0.99, 4)
    sm = _run(xp64, d, 0.99, 4, damping=1e-2, method="sherman-morrison")
    ue, se = _np_state(xp64, eig)
    us, ss = _np_state(xp64, sm)
    np.testing.assert_allclose(ss, se, rtol=1e-9, atol=1e-12 * se[0])
    np.testing.assert_allclose((us * ss) @ us.T, (ue * se) @ ue.T, atol=1e-9 * se[0])
    _check_invariants(xp64, sm, factor=300.0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_eigen_path_is_more_accurate_in_float32(backend):
    """With σ ≫ γ the Sherman–Morrison path loses digits in 1 − γκ; the eigen path does not."""
    from tests._backends import make_backend

    xp32 = make_backend(backend, "float32")
    rng = np.random.default_rng(2)
    d = stream(rng, 400, 60, "power")
    gamma = 1e-4
    ref = _run(make_backend("numpy", "float64"), d, 0.99, 6)
    _, s_ref = ref.basis, np.asarray(ref.eigvals)
    _, s_eig = _np_state(xp32, _run(xp32, d, 0.99, 6))
    _, s_sm = _np_state(xp32, _run(xp32, d, 0.99, 6, damping=gamma, method="sherman-morrison"))
    err_eig = np.abs(s_eig - s_ref).max() / s_ref[0]
    err_sm = np.abs(s_sm - s_ref).max() / s_ref[0]
    assert err_eig < 1e-4
    assert err_sm > 10 * err_eig


@given(seed=seeds, dim=st.integers(4, 30), data=st.data())
def test_precondition_matches_dense_inverse(xp, seed, dim, data):
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    gamma = 10.0 ** data.draw(st.floats(-3, 1), label="log10 gamma")
    d = stream(rng, 2 * rank + 3, dim, "power")
    state = _run(xp, d, 0.9, rank)
    u, s = _np_state(xp, state)
    g = xp.to_numpy(xp.asarray(rng.standard_normal((dim, 2))))
    exact = np.linalg.solve(gamma * np.eye(dim) + (u * s) @ u.T, g)
    y = xp.to_numpy(lg.ginger_precondition(state, xp.asarray(g), damping=gamma))
    assert np.linalg.norm(y - exact) <= xp.tol(200 * (1 + s[0] / gamma)) * np.linalg.norm(exact)
    y1 = xp.to_numpy(lg.ginger_precondition(state, xp.asarray(g[:, 0]), damping=gamma))
    np.testing.assert_allclose(y1, y[:, 0], rtol=xp.tol(10), atol=xp.tol(10) * np.abs(y).max())
    dense = xp.to_numpy(lg.ginger_dense(state, damping=gamma))
    np.testing.assert_allclose(dense, gamma * np.eye(dim) + (u * s) @ u.T, atol=xp.tol(10) * (gamma + s[0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["eigen", "sherman-morrison"])
def test_nonfinite_vector_leaves_state_unchanged(xp, bad, method):
    rng = np.random.default_rng(0)
    kw = {"damping": 1e-2} if method == "sherman-morrison" else {}
    state = _run(xp, stream(rng, 5, 10, "power"), 0.9, 3, method=method, **kw)
    d = rng.standard_normal(10)
    d[4] = bad
    new = lg.ginger_update(state, xp.asarray(d), decay=0.9, method=method, **kw)
    for field in ("basis", "eigvals", "discarded", "step"):
        np.testing.assert_array_equal(xp.to_numpy(getattr(new, field)), xp.to_numpy(getattr(state, field)))
    assert int(xp.to_numpy(new.num_nonfinite)) == int(xp.to_numpy(state.num_nonfinite)) + 1
    # The next finite vector is accepted as usual.
    newer = lg.ginger_update(new, xp.asarray(rng.standard_normal(10)), decay=0.9, method=method, **kw)
    assert int(xp.to_numpy(newer.step)) == int(xp.to_numpy(state.step)) + 1


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_overflowing_update_is_rejected(xp):
    """A finite vector whose outer product overflows the dtype is rejected like a non-finite one."""
    big = 1e200 if xp.dtype_name == "float64" else 1e30
    state = _run(xp, np.eye(6)[:2], 0.9, 2)
    new = lg.ginger_update(state, xp.asarray(np.full(6, big)), decay=0.9)
    np.testing.assert_array_equal(xp.to_numpy(new.eigvals), xp.to_numpy(state.eigvals))
    assert int(xp.to_numpy(new.num_nonfinite)) == 1


@given(seed=seeds)
def test_streams_with_r_zero(xp, seed):
    """Repeated vectors and vectors in span U (r = 0) keep the invariants and match the exact EMA."""
    rng = np.random.default_rng(seed)
    dim, rank = 12, 3
    base = rng.standard_normal((2, dim))
    coeffs = rng.standard_normal((30, 2))
    d = coeffs @ base  # rank-2 stream: from step 3 on, every d lies in span U
    d[10:15] = d[9]  # repeats
    d[20] = 0.0
    d = xp.to_numpy(xp.asarray(d))
    state = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    update = _update(xp)
    for t, dt in enumerate(d):
        state = update(state, xp.asarray(dt), decay=0.9)
        _check_invariants(xp, state, factor=20.0 * (t + 1))
    u, s = _np_state(xp, state)
    m = ema(d, 0.9)
    assert np.abs((u * s) @ u.T - m).max() <= xp.tol(500) * np.abs(m).max()
    assert s[2] <= xp.tol(500) * s[0]


def test_reorthonormalize_every(xp):
    rng = np.random.default_rng(5)
    d = stream(rng, 12, 15, "power")
    plain = _run(xp, d, 0.95, 3)
    reorth = _run(xp, d, 0.95, 3, reorthonormalize_every=4)
    _check_invariants(xp, reorth)
    up, sp = _np_state(xp, plain)
    ur, sr = _np_state(xp, reorth)
    np.testing.assert_allclose((ur * sr) @ ur.T, (up * sp) @ up.T, atol=xp.tol(200) * sp[0])
    same = lg.ginger_reorthonormalize(plain)
    assert int(xp.to_numpy(same.step)) == 12
    us, ss = _np_state(xp, same)
    np.testing.assert_allclose((us * ss) @ us.T, (up * sp) @ up.T, atol=xp.tol(200) * sp[0])


def test_init_defaults_and_dtypes(xp):
    state = lg.ginger_init(9, 4, xp=xp.module, dtype=xp.dtype)
    assert state.basis.shape == (9, 4)
    assert state.eigvals.shape == (4,)
    assert state.basis.dtype == xp.dtype
    assert state.eigvals.dtype == xp.dtype
    np.testing.assert_array_equal(xp.to_numpy(state.basis), np.eye(9, 4))
    assert int(xp.to_numpy(state.step)) == 0
    default = lg.ginger_init(9, 4, xp=xp.module)
    assert default.basis.dtype == xp.ns.__array_namespace_info__().default_dtypes()["real floating"]


def test_numpy_is_the_default_backend():
    state = lg.ginger_init(5, 2)
    assert isinstance(state.basis, np.ndarray)
    assert state.basis.dtype == np.float64
