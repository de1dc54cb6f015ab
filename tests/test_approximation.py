"""The approximation protocol and DampedLowRank: each method's object against its flat functions and dense float64.

Which bugs these catch: a protocol method that drops or mis-forwards a
hyper-parameter (decay, reorthonormalize_every, capacity); a fused step that
differs from update-then-precondition; an operator whose matvec, solve or
dense disagree with ``γI + U diag(σ) Uᵀ``; the unchecked engine (``fold``,
``fold_precondition``, ``solve``) drifting from the checked faces; QNG taking
a damping it would silently ignore.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowrank_ggn as lg
from tests._streams import orthonormal

DIM, RANK, DECAY, GAMMA, STEPS = 40, 4, 0.9, 0.05, 12


def _stream(seed: int, n: int = STEPS, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.arange(1, dim + 1) ** -1.0
    return rng.standard_normal((n, dim)) * np.sqrt(scales)


def _exact_ema(ds: np.ndarray, decay: float) -> np.ndarray:
    m = np.zeros((ds.shape[1], ds.shape[1]))
    for d in ds:
        m = decay * m + (1 - decay) * np.outer(d, d)
    return m


@pytest.mark.parametrize("method", ["ginger", "ginger_product"])
def test_ginger_protocol_equals_flat_functions_and_dense(xp, method):
    ds, gs = _stream(1), _stream(2)
    approx = lg.ginger(rank=RANK, decay=DECAY) if method == "ginger" else lg.ginger_product(rank=RANK, decay=DECAY)
    state = approx.init(DIM, xp=xp.module, dtype=xp.dtype)
    flat = lg.ginger_init(DIM, RANK, xp=xp.module, dtype=xp.dtype)
    for d, g in zip(ds, gs, strict=True):
        state, y = approx.update_precondition(state, xp.asarray(d), xp.asarray(g), damping=GAMMA)
        flat = lg.ginger_update(flat, xp.asarray(d), decay=DECAY)
        y_flat = lg.ginger_precondition(flat, xp.asarray(g), damping=GAMMA)
        np.testing.assert_allclose(xp.to_numpy(y), xp.to_numpy(y_flat), rtol=xp.tol(2e4), atol=xp.tol(2e4) / GAMMA)
    # The operator is γI + M̃, with M̃ the best rank-τ approximation of the exact EMA while t ≤ τ ... and
    # in general the state's own matrix: check it against the dense matrix of the flat state.
    op = approx.operator(state, damping=GAMMA)
    dense = xp.to_numpy(op.dense())
    ref = GAMMA * np.eye(DIM) + (xp.to_numpy(flat.basis) * xp.to_numpy(flat.eigvals)) @ xp.to_numpy(flat.basis).T
    scale = np.abs(ref).max()
    np.testing.assert_allclose(dense, ref, atol=xp.tol(1e3) * scale)
    v = np.random.default_rng(3).standard_normal((DIM, 3))
    np.testing.assert_allclose(xp.to_numpy(op.matvec(xp.asarray(v))), ref @ v, atol=xp.tol(1e3) * scale * 10)
    np.testing.assert_allclose(
        xp.to_numpy(op.solve(xp.asarray(v))), np.linalg.solve(ref, v), rtol=xp.tol(1e4), atol=xp.tol(1e4) / GAMMA * 10
    )
    # precondition is operator(...).solve
    np.testing.assert_allclose(
        xp.to_numpy(approx.precondition(state, xp.asarray(v[:, 0]), damping=GAMMA)),
        xp.to_numpy(op.solve(xp.asarray(v[:, 0]))),
        rtol=xp.tol(10),
        atol=xp.tol(10) / GAMMA,
    )


def test_ginger_equals_exact_ema_while_t_le_rank():
    """Before truncation starts, Ginger's operator is exactly γI + M_t (dense float64)."""
    ds = _stream(4, n=RANK)
    approx = lg.ginger(rank=RANK, decay=DECAY)
    state = approx.init(DIM)
    for d in ds:
        state = approx.update(state, d)
    op = approx.operator(state, damping=GAMMA)
    np.testing.assert_allclose(op.dense(), GAMMA * np.eye(DIM) + _exact_ema(ds, DECAY), atol=1e-13)


def test_unchecked_engine_equals_checked_faces():
    from lowrank_ggn.backends import resolve_namespace

    ns = resolve_namespace(np)
    ds, gs = _stream(5), _stream(6)
    for approx, damping in (
        (lg.ginger(rank=RANK, decay=DECAY, reorthonormalize_every=3), GAMMA),
        (lg.ginger_product(rank=RANK, decay=DECAY, capacity=RANK + 2), GAMMA),
        (lg.qng(rank=RANK, decay=DECAY), None),
    ):
        a = b = approx.init(DIM)
        for d, g in zip(ds, gs, strict=True):
            a, ya = approx.update_precondition(a, d, g, damping=damping)
            b, yb = approx.fold_precondition(ns, b, d, g, damping=damping)
            np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(
            approx.precondition(a, gs[0], damping=damping), approx.solve(ns, b, gs[0], damping=damping)
        )
        c = approx.fold(ns, approx.init(DIM), ds[0])
        for x, y in zip(c, approx.update(approx.init(DIM), ds[0]), strict=True):
            np.testing.assert_array_equal(x, y)


def test_reorthonormalize_every_is_forwarded():
    """A period of 3 re-orthonormalises after updates 3, 6, ...: the flat function with the same option agrees bitwise."""
    ds = _stream(7).astype(np.float32)
    approx = lg.ginger(rank=RANK, decay=DECAY, reorthonormalize_every=3)
    a = approx.init(DIM, dtype=np.float32)
    b = lg.ginger_init(DIM, RANK, dtype=np.float32)
    c = lg.ginger_init(DIM, RANK, dtype=np.float32)
    for d in ds:
        a = approx.update(a, d)
        b = lg.ginger_update(b, d, decay=DECAY, reorthonormalize_every=3)
        c = lg.ginger_update(c, d, decay=DECAY, reorthonormalize_every=None)
    np.testing.assert_array_equal(a.basis, b.basis)
    assert not np.array_equal(a.basis, c.basis)


def test_qng_protocol_and_operator_against_dense():
    ds, g = _stream(8), _stream(9, n=1)[0]
    approx = lg.qng(rank=RANK, decay=DECAY)
    state = approx.init(DIM)
    flat = lg.qng_init(DIM, RANK)
    for d in ds:
        state, y = approx.update_precondition(state, d, g)
        flat = lg.qng_update(flat, d, decay=DECAY)
    a = lg.qng_dense(flat)
    op = approx.operator(state)
    np.testing.assert_allclose(op.dense(), a, atol=1e-12)
    np.testing.assert_allclose(op.matvec(g), a @ g, rtol=1e-10)
    np.testing.assert_allclose(op.solve(g), np.linalg.solve(a, g), rtol=1e-8)
    np.testing.assert_allclose(y, np.linalg.solve(a, g), rtol=1e-8)
    with pytest.raises(ValueError, match="implicit"):
        approx.precondition(state, g, damping=1.0)


def test_damped_lowrank_against_dense_and_errors():
    rng = np.random.default_rng(10)
    u = orthonormal(rng, DIM, RANK)
    sigma = np.array([1e3, 10.0, 1.0, 0.0])
    op = lg.DampedLowRank(diagonal=1e-2, basis=u, eigvals=sigma)
    ref = 1e-2 * np.eye(DIM) + (u * sigma) @ u.T
    g = rng.standard_normal(DIM)
    np.testing.assert_allclose(op.dense(), ref, atol=1e-13)
    np.testing.assert_allclose(op.solve(g), np.linalg.solve(ref, g), rtol=1e-7)
    np.testing.assert_allclose(op.matvec(g), ref @ g, rtol=1e-12)
    assert op.shape == (DIM, DIM)
    with pytest.raises(ValueError, match="diagonal"):
        lg.DampedLowRank(diagonal=-1.0, basis=u, eigvals=sigma).solve(g)
    with pytest.raises(ValueError, match="g"):
        op.solve(g[:-1])


def test_factories_reject_bad_options():
    with pytest.raises(ValueError, match="decay"):
        lg.ginger(rank=2, decay=1.5)
    with pytest.raises(ValueError, match="rank"):
        lg.qng(rank=0, decay=0.9)
    with pytest.raises(TypeError, match="rank"):
        lg.ginger(rank=2.5, decay=0.9)
    with pytest.raises(ValueError, match="reorthonormalize_every"):
        lg.ginger(rank=2, decay=0.9, reorthonormalize_every=0)
    with pytest.raises(ValueError, match="capacity"):
        lg.ginger_product(rank=4, decay=0.9, capacity=4)
    # NumPy integers are integers everywhere.
    assert lg.ginger(rank=2, decay=0.9, reorthonormalize_every=np.int64(5)).reorthonormalize_every == 5
