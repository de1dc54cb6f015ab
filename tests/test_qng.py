"""QNG against dense float64: Eq 10, the corrected β, the factor products, Observation 1 (sharpened)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lowrank_ggn as lg
from tests._streams import ema, stream

seeds = st.integers(0, 2**32 - 1)
decays = st.sampled_from([0.5, 0.9, 0.99])


def _run(xp, data, decay, rank):
    update = xp.maybe_jit(lg.qng_update)
    state = lg.qng_init(data.shape[1], rank, xp=xp.module, dtype=xp.dtype)
    for d in data:
        state = update(state, xp.asarray(d), decay=decay)
    return state


@given(seed=seeds, dim=st.integers(4, 30), decay=decays, data=st.data())
def test_eq10_untruncated_qng_reproduces_the_ema(xp, seed, dim, decay, data):
    """With a window longer than the stream, ÂÂᵀ = α^t I + M_t (the EMA started from A₁ = I)."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    steps = data.draw(st.integers(1, rank), label="steps")
    d = xp.to_numpy(xp.asarray(stream(rng, steps, dim, "power")))
    state = _run(xp, d, decay, rank)
    target = decay**steps * np.eye(dim) + ema(d, decay)
    got = xp.to_numpy(lg.qng_dense(state))
    assert np.abs(got - target).max() <= xp.tol(50 * steps) * np.abs(target).max()


@given(seed=seeds, dim=st.integers(4, 30), decay=decays, data=st.data())
def test_observation1_sharpened(xp64, seed, dim, decay, data):
    """ÂÂᵀ − α^k I is PSD with rank ≤ k = min(τ, t) (the paper says ≤ 2k)."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim // 2), label="rank")
    steps = data.draw(st.integers(1, 3 * rank), label="steps")
    state = _run(xp64, stream(rng, steps, dim, "power"), decay, rank)
    k = min(rank, steps)
    w = np.linalg.eigvalsh(xp64.to_numpy(lg.qng_dense(state)) - decay**k * np.eye(dim))
    scale = np.abs(w).max()
    assert w.min() >= -1e-10 * scale
    assert int(np.sum(w > 1e-9 * scale)) <= k


@given(seed=seeds, dim=st.integers(4, 30), decay=decays, data=st.data())
def test_factor_products(xp, seed, dim, decay, data):
    """Âv, Âᵀv, Â⁻¹v, Â⁻ᵀv against the dense factor; each factor satisfies KKᵀ = αI + (1−α)qqᵀ."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    steps = data.draw(st.integers(1, 2 * rank + 2), label="steps")
    state = _run(xp, stream(rng, steps, dim, "power"), decay, rank)
    q, betas, scales, sq = (xp.to_numpy(getattr(state, f)) for f in ("factors", "betas", "scales", "sqnorms"))
    # Reference: the dense product of the stored factors, in float64.
    ks = [scales[i] * np.eye(dim) + betas[i] * np.outer(q[i], q[i]) for i in range(rank)]
    a = np.linalg.multi_dot([np.eye(dim), *ks, np.eye(dim)])
    growth = np.prod([np.linalg.norm(k, 2) for k in ks])  # rounding grows with the factors' norms
    inv_growth = np.prod([np.linalg.norm(np.linalg.inv(k), 2) for k in ks])
    v = xp.to_numpy(xp.asarray(rng.standard_normal((dim, 2))))
    V = xp.asarray(v)
    for transpose, mat in ((False, a), (True, a.T)):
        mv = xp.to_numpy(lg.qng_factor_matvec(state, V, transpose=transpose))
        assert np.abs(mv - mat @ v).max() <= xp.tol(20 * rank) * growth * np.abs(v).max()
        sv = xp.to_numpy(lg.qng_factor_solve(state, V, transpose=transpose))
        exact = np.linalg.solve(mat, v)
        assert np.abs(sv - exact).max() <= xp.tol(20 * rank) * inv_growth * growth * np.abs(exact).max()
    for i in range(rank):
        if scales[i] == 1.0:  # empty slot: the identity
            assert betas[i] == 0
            continue
        k = scales[i] * np.eye(dim) + betas[i] * np.outer(q[i], q[i])
        target = decay * np.eye(dim) + (1 - decay) * np.outer(q[i], q[i])
        np.testing.assert_allclose(k @ k.T, target, atol=xp.tol(20) * np.abs(target).max())
        np.testing.assert_allclose(sq[i], q[i] @ q[i], rtol=xp.tol(20))


@given(seed=seeds, dim=st.integers(4, 30), data=st.data())
def test_precondition_matches_dense(xp, seed, dim, data):
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    state = _run(xp, stream(rng, 2 * rank + 1, dim, "power"), 0.9, rank)
    dense = xp.to_numpy(lg.qng_dense(state))
    g = xp.to_numpy(xp.asarray(rng.standard_normal(dim)))
    exact = np.linalg.solve(dense, g)
    got = xp.to_numpy(lg.qng_precondition(state, xp.asarray(g)))
    assert np.linalg.norm(got - exact) <= xp.tol(50 * rank * np.linalg.cond(dense)) * np.linalg.norm(exact)


def test_printed_beta_is_wrong():
    """The printed β = (√α + (1−α)‖q‖² − √α)/‖q‖² collapses to 1 − α and breaks KKᵀ = αI + (1−α)qqᵀ."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal(8)
    alpha = 0.9
    nq = q @ q
    printed = (np.sqrt(alpha) + (1 - alpha) * nq - np.sqrt(alpha)) / nq
    k = np.sqrt(alpha) * np.eye(8) + printed * np.outer(q, q)
    target = alpha * np.eye(8) + (1 - alpha) * np.outer(q, q)
    assert np.abs(k @ k - target).max() > 1e-2
    state = lg.qng_update(lg.qng_init(8, 2), q, decay=alpha)
    beta = float(state.betas[-1])
    k = np.sqrt(alpha) * np.eye(8) + beta * np.outer(q, q)
    np.testing.assert_allclose(k @ k, target, atol=1e-14)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_vector_leaves_state_unchanged(xp, bad):
    rng = np.random.default_rng(0)
    state = _run(xp, stream(rng, 3, 8, "power"), 0.9, 2)
    d = rng.standard_normal(8)
    d[0] = bad
    new = lg.qng_update(state, xp.asarray(d), decay=0.9)
    for field in ("factors", "betas", "scales", "sqnorms", "step"):
        np.testing.assert_array_equal(xp.to_numpy(getattr(new, field)), xp.to_numpy(getattr(state, field)))
    assert int(xp.to_numpy(new.num_nonfinite)) == 1


def test_init_is_identity(xp):
    state = lg.qng_init(6, 2, xp=xp.module, dtype=xp.dtype)
    np.testing.assert_array_equal(xp.to_numpy(lg.qng_dense(state)), np.eye(6))
    assert state.factors.dtype == xp.dtype
