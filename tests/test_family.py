"""The approximation family against dense float64: the certificate 0 ⪯ M − M̃ ⪯ ρI (Ginger in its three paths,
Frequent Directions), FD's shrinkage, the exact diagonal and SLANG's correction, Nyström's ordering and exactness;
the protocol under jax.jit and in the optax front-end."""

from __future__ import annotations

import numpy as np
import pytest

import lowrank_ggn as lg

DIM, RANK, DECAY, GAMMA = 16, 3, 0.9, 0.1


def _stream(seed, steps=30, dim=DIM, low_rank=None):
    rng = np.random.default_rng(seed)
    scale = np.linspace(2.0, 0.1, dim)
    if low_rank is not None:
        basis = rng.standard_normal((dim, low_rank))
        return [basis @ rng.standard_normal(low_rank) for _ in range(steps)]
    return [scale * rng.standard_normal(dim) for _ in range(steps)]


def _ema(ds, decay=DECAY):
    m = np.zeros((len(ds[0]), len(ds[0])))
    for d in ds:
        m = decay * m + (1 - decay) * np.outer(d, d)
    return m


def _run(xp, approx, ds, **kw):
    state = approx.init(len(ds[0]), xp=xp.module, dtype=xp.dtype)
    for d in ds:
        state = approx.update(state, xp.asarray(d), **kw)
    return state


def _kept(xp, state):
    u, s = xp.to_numpy(state.basis), xp.to_numpy(state.eigvals)
    return (u * s) @ u.T


@pytest.mark.parametrize("method", ["ginger", "frequent-directions", "sherman-morrison", "product"])
def test_escaped_certifies_the_dropped_curvature(xp, method):
    """0 ⪯ M_t − M̃_t ⪯ ρ_t I (eigenvalues of the dense float64 difference), and tr M = Σσ + discarded."""
    ds = _stream(1)
    m = _ema(ds)
    if method == "sherman-morrison":
        state = lg.ginger_init(DIM, RANK, xp=xp.module, dtype=xp.dtype)
        for d in ds:
            state = lg.ginger_update(state, xp.asarray(d), decay=DECAY, damping=1.0, method="sherman-morrison")
    elif method == "product":
        state = lg.ginger_product_to_state(_run(xp, lg.ginger_product(rank=RANK, decay=DECAY), ds))
    else:
        approx = (
            lg.ginger(rank=RANK, decay=DECAY) if method == "ginger" else lg.frequent_directions(rank=RANK, decay=DECAY)
        )
        state = _run(xp, approx, ds)
    rho = float(xp.to_numpy(state.escaped))
    ev = np.linalg.eigvalsh(m - _kept(xp, state))
    scale = np.abs(m).max()
    tol = xp.tol(2000 if method == "sherman-morrison" else 200) * scale
    assert rho > 0.01 * scale  # the stream has rank > τ: something is dropped
    assert ev[0] >= -tol
    assert ev[-1] <= rho + tol
    trace = float(np.sum(xp.to_numpy(state.eigvals)) + xp.to_numpy(state.discarded))
    assert trace == pytest.approx(np.trace(m), rel=xp.tol(2000))
    if method == "frequent-directions":
        # FD's trace dropped exceeds its spectral bound (τ+1 directions shrink per step); Ginger's equal.
        assert float(xp.to_numpy(state.discarded)) > 1.5 * rho
    elif method != "sherman-morrison":
        assert float(xp.to_numpy(state.discarded)) == pytest.approx(rho, rel=xp.tol(100))


def test_frequent_directions_step_against_dense(xp):
    """One FD step against the dense (τ+1)-core of the state it starts from: the kept matrix is the core's top τ
    eigenpairs with the (τ+1)-th eigenvalue subtracted, and ρ grows by exactly that eigenvalue."""
    ds = [np.asarray(d, dtype=xp.np_dtype).astype(np.float64) for d in _stream(2, steps=8)]
    fd = lg.frequent_directions(rank=RANK, decay=DECAY)
    state = _run(xp, fd, ds[:-1])
    before = _kept(xp, state)
    new = fd.update(state, xp.asarray(ds[-1]))
    core = DECAY * before + (1 - DECAY) * np.outer(ds[-1], ds[-1])
    lam, vec = np.linalg.eigh(core)
    lam, vec = lam[::-1], vec[:, ::-1]
    want = np.maximum(lam[:RANK] - lam[RANK], 0)
    tol = xp.tol(200) * lam[0]
    np.testing.assert_allclose(xp.to_numpy(new.eigvals), want, rtol=0, atol=tol)
    np.testing.assert_allclose(_kept(xp, new), (vec[:, :RANK] * want) @ vec[:, :RANK].T, rtol=0, atol=tol)
    rho = DECAY * float(xp.to_numpy(state.escaped)) + lam[RANK]
    assert float(xp.to_numpy(new.escaped)) == pytest.approx(rho, rel=xp.tol(200))


def test_frequent_directions_fused_and_escaped_damping(xp):
    """The fused FD step equals update + precondition; add_escaped queries with γ + ρ."""
    ds = _stream(3, steps=10)
    g = np.random.default_rng(9).standard_normal(DIM)
    for add in (False, True):
        fd = lg.frequent_directions(rank=RANK, decay=DECAY, add_escaped=add)
        state = _run(xp, fd, ds[:-1])
        new, y = fd.update_precondition(state, xp.asarray(ds[-1]), xp.asarray(g), damping=GAMMA)
        gamma = GAMMA + (float(xp.to_numpy(new.escaped)) if add else 0.0)
        want = np.linalg.solve(gamma * np.eye(DIM) + _kept(xp, new), g)
        np.testing.assert_allclose(xp.to_numpy(y), want, rtol=0, atol=xp.tol(500) * np.abs(want).max())


def test_diagonal_and_ginger_diagonal(xp):
    """m is the exact diagonal of M; GingerDiagonal's operator has diagonal γ + diag(M) and solves exactly."""
    ds = _stream(4)
    m = _ema(ds)
    diag_state = _run(xp, lg.diagonal(decay=DECAY), ds)
    np.testing.assert_allclose(xp.to_numpy(diag_state.diagonal), np.diag(m), rtol=xp.tol(100))
    g = np.random.default_rng(5).standard_normal(DIM)
    y = lg.diagonal(decay=DECAY).precondition(diag_state, xp.asarray(g), damping=GAMMA)
    np.testing.assert_allclose(xp.to_numpy(y), g / (GAMMA + np.diag(m)), rtol=xp.tol(100))
    approx = lg.ginger_diagonal(rank=RANK, decay=DECAY)
    state = _run(xp, approx, ds)
    op = approx.operator(state, damping=GAMMA)
    dense = xp.to_numpy(op.dense())
    np.testing.assert_allclose(np.diag(dense), GAMMA + np.diag(m), rtol=xp.tol(500))
    np.testing.assert_allclose(
        dense - np.diag(np.diag(dense)), _kept(xp, state) - np.diag(np.diag(_kept(xp, state))), atol=xp.tol(100)
    )
    want = np.linalg.solve(dense, g)
    np.testing.assert_allclose(
        xp.to_numpy(approx.precondition(state, xp.asarray(g), damping=GAMMA)),
        want,
        atol=xp.tol(500) * np.abs(want).max(),
    )


def test_nystrom_ordering_and_exactness(xp):
    """M̂ ⪯ M (to the shift ν), and M̂ = M while rank M ≤ τ ≤ s."""
    approx = lg.nystrom(rank=4, decay=DECAY, sketch_size=8)
    ds = _stream(6)
    m = _ema(ds)
    op = approx.operator(_run(xp, approx, ds), damping=GAMMA)
    hat = xp.to_numpy(op.dense()) - GAMMA * np.eye(DIM)
    assert np.linalg.eigvalsh(m - hat)[0] >= -xp.tol(1000) * np.abs(m).max()
    ds = _stream(7, low_rank=3)
    m = _ema(ds)
    op = approx.operator(_run(xp, approx, ds), damping=GAMMA)
    hat = xp.to_numpy(op.dense()) - GAMMA * np.eye(DIM)
    np.testing.assert_allclose(hat, m, atol=xp.tol(1e4 if xp.dtype_name == "float32" else 1000) * np.abs(m).max())


@pytest.mark.parametrize("factory", [lg.frequent_directions, lg.ginger_diagonal, lg.nystrom, lg.diagonal])
def test_non_finite_is_rejected(factory):
    """A non-finite d leaves the state unchanged and counts in num_nonfinite."""
    approx = factory(decay=DECAY) if factory is lg.diagonal else factory(rank=RANK, decay=DECAY)
    state = _run(_NP, approx, _stream(8, steps=5))
    bad = np.full(DIM, np.nan)
    new = approx.update(state, bad)
    assert int(new.num_nonfinite) == 1
    for a, b in zip(state[:-1], new[:-1], strict=True):
        np.testing.assert_array_equal(a, b)


class _NPBackend:
    module = np
    dtype = np.float64

    @staticmethod
    def asarray(x):
        return np.asarray(x, dtype=np.float64)


_NP = _NPBackend()


@pytest.mark.parametrize("factory", [lg.frequent_directions, lg.ginger_diagonal, lg.nystrom, lg.diagonal])
def test_jit_and_optax(factory):
    """Each approximation's fused step runs under jax.jit and inside scale_by_lowrank."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    from lowrank_ggn.optim.optax import scale_by_lowrank

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    approx = factory(decay=DECAY) if factory is lg.diagonal else factory(rank=RANK, decay=DECAY)
    ds = _stream(9, steps=4)
    state = approx.init(DIM, xp=jnp, dtype=jnp.float64)
    step = jax.jit(lambda s, d: approx.update_precondition(s, d, d, damping=GAMMA))
    for d in ds:
        state, y = step(state, jnp.asarray(d))
    assert bool(jnp.all(jnp.isfinite(y)))
    eager_state = _run(_NP, approx, ds)
    # Same matrix as the eager NumPy run (bases may differ by the signs of eigenvectors across backends).
    np.testing.assert_allclose(
        np.asarray(approx.operator(state, damping=GAMMA).dense()),
        approx.operator(eager_state, damping=GAMMA).dense(),
        atol=1e-10,
    )
    for name in ("escaped", "discarded", "eigvals", "diagonal", "step"):
        if hasattr(state, name):
            np.testing.assert_allclose(
                np.asarray(getattr(state, name)), getattr(eager_state, name), rtol=1e-9, atol=1e-12
            )
    params = {"w": jnp.ones(DIM)}
    tx = optax.chain(scale_by_lowrank(approx, damping=GAMMA), optax.scale(-0.1))
    opt = tx.init(params)
    updates, opt = tx.update({"w": jnp.asarray(ds[0])}, opt, params)
    assert bool(jnp.all(jnp.isfinite(updates["w"])))
