"""Every public function runs under ``jax.jit`` and agrees with its eager result."""

from __future__ import annotations

import numpy as np
import pytest

import lowrank_ggn as lg
from tests._streams import orthonormal, stream

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

pytestmark = pytest.mark.backend_jax


@pytest.fixture(autouse=True)
def _x64():
    jax.config.update("jax_enable_x64", True)


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    return request.param


def _close(a, b, dtype):
    tol = 1e-12 if dtype == "float64" else 1e-5
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol * max(1.0, np.abs(y).max()))


def _dense(basis, eigvals, *rest):
    return (basis * eigvals) @ basis.T, eigvals, *rest


def _close_ginger(a, b, dtype):
    """Compare states up to the sign of each eigenvector (eigh's sign is arbitrary)."""
    _close((a.eigvals, a.discarded, a.step, a.num_nonfinite), (b.eigvals, b.discarded, b.step, b.num_nonfinite), dtype)
    _close(lg.ginger_dense(a), lg.ginger_dense(b), dtype)


def _inputs(dtype, dim=12, rank=3):
    rng = np.random.default_rng(0)
    u = jnp.asarray(orthonormal(rng, dim, rank), dtype=dtype)
    s = jnp.asarray(np.array([3.0, 1.0, 0.5]), dtype=dtype)
    d = jnp.asarray(rng.standard_normal(dim), dtype=dtype)
    g = jnp.asarray(rng.standard_normal((dim, 2)), dtype=dtype)
    return u, s, d, g


def test_operator_functions(dtype):
    u, s, d, g = _inputs(dtype)
    gamma = jnp.asarray(0.3, dtype=dtype)
    for fn, args in [
        (lambda u, s, g, gm: lg.damped_solve(u, s, g, damping=gm), (u, s, g, gamma)),
        (lambda u, s, g, gm: lg.damped_solve(u, s, g[:, 0], damping=gm), (u, s, g, gamma)),
        (lambda u, s, g, gm: lg.damped_matvec(u, s, g, damping=gm), (u, s, g, gamma)),
        (lambda u, s, gm: lg.damped_dense(u, s, damping=gm), (u, s, gamma)),
        (lambda s, gm: lg.sigma_from_kappa(lg.kappa_from_sigma(s, gm), gm), (s, gamma)),
        (lambda u, s, d: _dense(*lg.lowrank_eigh_update(u, s, d, weight=0.1, scale=0.9)), (u, s, d)),
        (lambda u, s, d: _dense(*lg.lowrank_eigh_update(u, s, u @ s, weight=0.1, scale=0.9)), (u, s, d)),
        (lambda u, s: _dense(*lg.reorthonormalize(u, s)), (u, s)),
        (lambda u, s, d, gm: lg.sherman_morrison_step(u, s, d, decay=0.9, damping=gm), (u, s, d, gamma)),
    ]:
        _close(jax.jit(fn)(*args), fn(*args), dtype)


@pytest.mark.parametrize("method", ["eigen", "sherman-morrison"])
def test_ginger_stream_under_jit(dtype, method):
    data = jnp.asarray(stream(np.random.default_rng(1), 20, 15, "power"), dtype=dtype)
    kw = {"damping": 1e-2} if method == "sherman-morrison" else {}
    init = jax.jit(lg.ginger_init, static_argnums=(0, 1), static_argnames=("xp", "dtype"))
    update = jax.jit(lg.ginger_update, static_argnames=("method", "reorthonormalize_every"))
    eager = lg.ginger_init(15, 4, xp=jnp, dtype=getattr(jnp, dtype))
    jitted = init(15, 4, xp=jnp, dtype=getattr(jnp, dtype))
    _close(jitted, eager, dtype)
    for d in data:
        eager = lg.ginger_update(eager, d, decay=0.9, method=method, reorthonormalize_every=5, **kw)
        jitted = update(jitted, d, decay=jnp.asarray(0.9, dtype=dtype), method=method, reorthonormalize_every=5, **kw)
    _close_ginger(jitted, eager, dtype)
    precond = jax.jit(lg.ginger_precondition)
    g = data[0]
    _close(
        precond(jitted, g, damping=jnp.asarray(0.1, dtype=dtype)), lg.ginger_precondition(eager, g, damping=0.1), dtype
    )
    _close_ginger(jax.jit(lg.ginger_reorthonormalize)(jitted), lg.ginger_reorthonormalize(eager), dtype)
    _close(jax.jit(lg.ginger_dense)(jitted, damping=0.1), lg.ginger_dense(eager, damping=0.1), dtype)


def test_ginger_nonfinite_under_jit(dtype):
    update = jax.jit(lg.ginger_update)
    state = update(lg.ginger_init(8, 2, xp=jnp, dtype=getattr(jnp, dtype)), jnp.ones(8, dtype=dtype), decay=0.9)
    bad = jnp.ones(8, dtype=dtype).at[3].set(jnp.nan)
    new = update(state, bad, decay=0.9)
    for field in ("basis", "eigvals", "discarded", "step"):
        np.testing.assert_array_equal(np.asarray(getattr(new, field)), np.asarray(getattr(state, field)))
    assert int(new.num_nonfinite) == 1
    qupdate = jax.jit(lg.qng_update)
    q = lg.qng_init(8, 2, xp=jnp, dtype=getattr(jnp, dtype))
    q2 = qupdate(q, bad, decay=0.9)
    np.testing.assert_array_equal(np.asarray(q2.factors), np.asarray(q.factors))
    assert int(q2.num_nonfinite) == 1


def test_qng_under_jit(dtype):
    data = jnp.asarray(stream(np.random.default_rng(2), 10, 12, "power"), dtype=dtype)
    eager = jitted = lg.qng_init(12, 4, xp=jnp, dtype=getattr(jnp, dtype))
    update = jax.jit(lg.qng_update)
    for d in data:
        eager = lg.qng_update(eager, d, decay=0.9)
        jitted = update(jitted, d, decay=0.9)
    _close(jitted, eager, dtype)
    g = data[:2].T
    for fn in (
        lg.qng_precondition,
        lg.qng_factor_matvec,
        lg.qng_factor_solve,
        lambda s, g: lg.qng_factor_matvec(s, g, transpose=True),
        lambda s, g: lg.qng_factor_solve(s, g, transpose=True),
    ):
        _close(jax.jit(fn)(jitted, g), fn(eager, g), dtype)
    _close(jax.jit(lg.qng_dense)(jitted), lg.qng_dense(eager), dtype)


def test_references_under_jit(dtype):
    data = jnp.asarray(stream(np.random.default_rng(3), 6, 8, "power"), dtype=dtype)
    m = lg.ema_dense(data, decay=0.9)
    _close(jax.jit(lambda x: lg.ema_dense(x, decay=0.9))(data), m, dtype)
    _close(
        jax.jit(lambda m, d: lg.ema_update_dense(m, d, decay=0.9))(m, data[0]),
        lg.ema_update_dense(m, data[0], decay=0.9),
        dtype,
    )
    _close(
        jax.jit(lambda m: lg.damped_inverse_dense(m, damping=0.1))(m), lg.damped_inverse_dense(m, damping=0.1), dtype
    )
    _close(jax.jit(lambda m: lg.best_rank_k(m, 3)[1])(m), lg.best_rank_k(m, 3)[1], dtype)


def test_vmap_over_a_batch_of_states():
    """Pure functions compose with other transformations: several independent states at once."""
    data = jnp.asarray(stream(np.random.default_rng(4), 3, 10, "power"))
    states = jax.vmap(lambda _: lg.ginger_init(10, 2, xp=jnp, dtype=jnp.float64))(jnp.arange(3))
    out = jax.vmap(lambda s, d: lg.ginger_update(s, d, decay=0.9))(states, data)
    for i in range(3):
        single = lg.ginger_update(lg.ginger_init(10, 2, xp=jnp, dtype=jnp.float64), data[i], decay=0.9)
        _close(jax.tree_util.tree_map(lambda x, i=i: x[i], out), single, "float64")
