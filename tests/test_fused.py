"""The fused update-and-query, buffer donation and the blocked kernels, against dense float64.

The update reads ``U`` once for ``Uᵀ[d, g]`` and once more to rotate it; the
query of the new state rides along. These tests check that the shortcuts give
the results of the plain functions and of dense linear algebra: on the one-pass
path (``d`` far from ``span U``), on the CGS2 path (``d`` nearly in ``span U``),
for ``d ∈ span U`` (r = 0), on the blocked NumPy/PyTorch kernels (large ``d·τ``),
in place (``donate=True``) and under ``jax.jit`` with donated buffers.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowrank_ggn as lg
from lowrank_ggn._core.kernels import apply, can_overwrite, project, residual, rotate
from tests._streams import orthonormal, stream

seeds = st.integers(0, 2**32 - 1)
# Large enough for the blocked NumPy/PyTorch path (dim·rank ≥ 2¹⁶), small enough to be quick.
BIG = 20_000


def _invariants(xp, basis, eigvals, *, factor=20.0):
    u, s = xp.to_numpy(basis), xp.to_numpy(eigvals)
    assert np.all(np.isfinite(u))
    assert np.all(np.isfinite(s))
    assert np.abs(u.T @ u - np.eye(u.shape[1])).max() <= xp.tol(factor * np.sqrt(u.shape[0]))
    assert np.all(s >= 0)
    assert np.all(np.diff(s) <= 0)


def _mixed_stream(rng, steps, dim, rank):
    """Vectors alternately far from and close to the span of the previous ones (both update paths)."""
    base = rng.standard_normal((rank + 1, dim))
    out = []
    for t in range(steps):
        near = base[t % (rank + 1)] * 3.0
        noise = rng.standard_normal(dim) * (1.0 if t % 3 == 0 else 1e-2)
        out.append(near + noise)
    return np.array(out)


def _dense_query(basis, eigvals, g, gamma):
    m = (basis * eigvals) @ basis.T
    return np.linalg.solve(gamma * np.eye(basis.shape[0]) + m, g)


@settings(max_examples=4)
@given(seed=seeds, dim=st.integers(4, 30), data=st.data())
def test_fused_equals_update_then_precondition(xp, seed, dim, data):
    """``ginger_update_precondition`` = ``ginger_update`` then ``ginger_precondition``; y = G⁻¹g (dense)."""
    rng = np.random.default_rng(seed)
    rank = data.draw(st.integers(1, dim - 1), label="rank")
    gamma = 10.0 ** data.draw(st.floats(-3, 0), label="log10 gamma")
    d = xp.to_numpy(xp.asarray(_mixed_stream(rng, rank + 4, dim, rank)))
    fused = xp.maybe_jit(lg.ginger_update_precondition)
    plain = xp.maybe_jit(lg.ginger_update)
    a = b = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    for t, dt in enumerate(d):
        g = xp.asarray(rng.standard_normal(dim))
        a, y = fused(a, xp.asarray(dt), g, decay=0.9, damping=gamma)
        b = plain(b, xp.asarray(dt), decay=0.9)
        _invariants(xp, a.basis, a.eigvals, factor=20.0 * (t + 1))
        ua, sa = xp.to_numpy(a.basis), xp.to_numpy(a.eigvals)
        ub, sb = xp.to_numpy(b.basis), xp.to_numpy(b.eigvals)
        np.testing.assert_allclose(sa, sb, atol=xp.tol(50) * max(sb[0], 1e-300))
        np.testing.assert_allclose((ua * sa) @ ua.T, (ub * sb) @ ub.T, atol=xp.tol(100) * max(sb[0], 1e-300))
        exact = _dense_query(ua, sa, xp.to_numpy(g), gamma)
        err = np.linalg.norm(xp.to_numpy(y) - exact)
        assert err <= xp.tol(200 * (1 + sa[0] / gamma)) * np.linalg.norm(exact)
    for field in ("discarded", "step", "num_nonfinite"):
        np.testing.assert_allclose(xp.to_numpy(getattr(a, field)), xp.to_numpy(getattr(b, field)), rtol=xp.tol(50))


@pytest.mark.parametrize("rank", [4, 8])
@pytest.mark.parametrize("kind", ["far", "near", "in_span"])
def test_large_dim_paths_against_dense(xp, kind, rank):
    """Blocked kernels at d·τ ≥ 2¹⁶: one-pass, CGS2 and r = 0 updates are Eckart–Young of the dense update.

    JAX on the CPU runs rank 4 on ``Uᵀ`` and rank 8 on ``U`` (``prefers_rows``): both layouts are checked.
    """
    rng = np.random.default_rng({"far": 0, "near": 1, "in_span": 2}[kind] + 3 * rank)
    dim = BIG
    u = orthonormal(rng, dim, rank)
    lam = 4.0 * 0.5 ** np.arange(rank)
    if kind == "far":
        v = rng.standard_normal(dim)
    elif kind == "near":
        v = u @ rng.standard_normal(rank) * 10 + 1e-3 * rng.standard_normal(dim)
    else:
        v = u @ rng.standard_normal(rank)
    g = rng.standard_normal(dim)
    U, L, V, G = (xp.asarray(a) for a in (u, lam, v, g))
    u, lam, v, g = (xp.to_numpy(a) for a in (U, L, V, G))
    state = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)._replace(basis=U, eigvals=L)
    new, y = xp.maybe_jit(lg.ginger_update_precondition)(state, V, G, decay=0.8, damping=0.1)
    nb, nl = xp.to_numpy(new.basis), xp.to_numpy(new.eigvals)
    _invariants(xp, new.basis, new.eigvals, factor=2.0)
    # The best rank-τ approximation of 0.8·UΛUᵀ + 0.2·vvᵀ lives in span[U, v]: compare there.
    q, _ = np.linalg.qr(np.column_stack([u, v]))
    qu = q.T @ u
    small = 0.8 * (qu * lam) @ qu.T + 0.2 * np.outer(q.T @ v, q.T @ v)
    w = np.sort(np.linalg.eigvalsh(small))[::-1]
    np.testing.assert_allclose(nl, w[:rank], atol=xp.tol(50) * w[0])
    np.testing.assert_allclose(float(xp.to_numpy(new.discarded)), max(w[rank], 0), atol=xp.tol(50) * w[0])
    rep = q.T @ ((nb * nl) @ (nb.T @ q))
    best = np.linalg.eigh(small)
    top = best[1][:, np.argsort(best[0])[::-1][:rank]]
    np.testing.assert_allclose(rep, (top * w[:rank]) @ top.T, atol=xp.tol(200) * w[0])
    # The fused query is the query of the new state.
    y_ref = xp.to_numpy(xp.maybe_jit(lg.ginger_precondition)(new, G, damping=0.1))
    np.testing.assert_allclose(xp.to_numpy(y), y_ref, atol=xp.tol(200 * (1 + nl[0] / 0.1)) * np.abs(y_ref).max())


@pytest.mark.parametrize("form", ["direct", "product"])
@pytest.mark.parametrize("dim", [60, BIG])
def test_cgs2_keeps_the_basis_orthonormal(xp, form, dim):
    """A vector 1000× longer inside ``span U`` than outside it: the new direction is orthogonal to ``U`` to rounding.

    One Gram–Schmidt step would leave ``p`` about ``eps·‖v‖/r = 1000·eps``
    away from orthogonal; the second (the implicit one of the CGS2 path) must
    bring it back to the rounding level. The product form stores ``p`` as a
    column of ``W``, which shows this directly; in the direct form ``p``
    enters ``U`` with a weight of about ``r/‖v‖``.
    """
    rng = np.random.default_rng(dim)
    rank = 4
    u = orthonormal(rng, dim, rank)
    lam = np.array([4.0, 2.0, 1.0, 0.5])
    inside = u @ rng.standard_normal(rank)
    outside = rng.standard_normal(dim)
    outside -= u @ (u.T @ outside)
    v = inside / np.linalg.norm(inside) + 1e-3 * outside / np.linalg.norm(outside)
    g = rng.standard_normal(dim)
    U, L, V, G = (xp.asarray(a) for a in (u, lam, v, g))
    state = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)._replace(basis=U, eigvals=L)
    # The weight of v makes the new direction's eigenvalue the largest: it is kept.
    kw = {"decay": 0.5, "damping": 0.1}
    if form == "direct":
        new, _ = xp.maybe_jit(lg.ginger_update_precondition)(state, V * 1e4, G, **kw)
        basis = xp.to_numpy(new.basis)
    else:
        pstate = lg.ginger_product_from_state(state)
        new, _ = xp.maybe_jit(lg.ginger_product_update_precondition)(pstate, V * 1e4, G, **kw)
        basis = xp.to_numpy(lg.ginger_product_to_state(new).basis)
        # p is stored as a column of W as it is: [W p] must be orthonormal, not only U = WQ.
        assert int(xp.to_numpy(new.count)) == rank + 1
        w = xp.to_numpy(new.columns)[: rank + 1].T
        assert np.abs(w.T @ w - np.eye(rank + 1)).max() <= xp.tol(50)
    assert np.abs(basis.T @ basis - np.eye(rank)).max() <= xp.tol(50)


def test_donate_writes_in_place(xp):
    """NumPy/PyTorch: ``donate=True`` reuses the basis's memory and gives the same state as the pure call."""
    if xp.name not in ("numpy", "torch"):
        pytest.skip("donate= is a NumPy/PyTorch opt-in; JAX donates through jax.jit")
    rng = np.random.default_rng(3)
    dim, rank = BIG, 4
    data = stream(rng, 6, 40, "power")
    d = [xp.asarray(np.tile(x, dim // 40)) for x in data]
    g = xp.asarray(rng.standard_normal(dim))
    pure = donated = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    for dt in d:
        pure, y_pure = lg.ginger_update_precondition(pure, dt, g, decay=0.9, damping=0.1)
    donated, _ = lg.ginger_update_precondition(donated, d[0], g, decay=0.9, damping=0.1)
    assert can_overwrite(xp.ns, donated.basis)
    buffer = donated.basis
    for dt in d[1:]:
        donated, y_don = lg.ginger_update_precondition(donated, dt, g, decay=0.9, damping=0.1, donate=True)
    assert _same_memory(xp, donated.basis, buffer)
    np.testing.assert_allclose(xp.to_numpy(donated.basis), xp.to_numpy(pure.basis), atol=xp.tol(10))
    np.testing.assert_allclose(xp.to_numpy(y_don), xp.to_numpy(y_pure), rtol=xp.tol(10), atol=xp.tol(10))
    plain = lg.ginger_update(donated, d[0], decay=0.9, donate=True)
    assert _same_memory(xp, plain.basis, buffer)


def _same_memory(xp, a, b):
    if xp.name == "torch":
        return a.data_ptr() == b.data_ptr()
    return np.shares_memory(a, b)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dim", [12, BIG])
def test_rejected_update_is_bit_exact(xp, bad, dim):
    """A non-finite d rotates U by the identity: the basis is unchanged bit for bit, also in place."""
    rng = np.random.default_rng(4)
    rank = 4
    state = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    update = xp.maybe_jit(lg.ginger_update)
    for _ in range(5):
        state = update(state, xp.asarray(rng.standard_normal(dim)), decay=0.9)
    before = {f: xp.to_numpy(getattr(state, f)).copy() for f in ("basis", "eigvals", "discarded", "step")}
    d = rng.standard_normal(dim)
    d[dim // 2] = bad
    g = xp.asarray(rng.standard_normal(dim))
    fused = xp.maybe_jit(lg.ginger_update_precondition)
    new, y = fused(state, xp.asarray(d), g, decay=0.9, damping=0.1)
    for field, value in before.items():
        np.testing.assert_array_equal(xp.to_numpy(getattr(new, field)), value)
    assert int(xp.to_numpy(new.num_nonfinite)) == 1
    y_ref = xp.to_numpy(xp.maybe_jit(lg.ginger_precondition)(state, g, damping=0.1))
    np.testing.assert_allclose(xp.to_numpy(y), y_ref, rtol=xp.tol(100), atol=xp.tol(100) * np.abs(y_ref).max())
    if xp.name in ("numpy", "torch"):
        kept = lg.ginger_update(state, xp.asarray(d), decay=0.9, donate=True)
        np.testing.assert_array_equal(xp.to_numpy(kept.basis), before["basis"])


@settings(max_examples=6)
@given(seed=seeds, rank=st.integers(1, 6), k=st.integers(1, 3), big=st.booleans())
def test_kernels_against_dense(xp, seed, rank, k, big):
    """``project``, ``residual`` and ``rotate`` (generic and blocked) against float64 matrix products.

    ``big``: several blocks of the blocked NumPy/PyTorch paths (a float32 block
    has ``2**21 // ((rank + 2) * 4)`` rows at most), so that a partial sum
    overwritten by each block instead of accumulated is caught.
    """
    rng = np.random.default_rng(seed)
    dim = 3 * (2**21 // ((rank + 2) * 4)) + 11 if big else 50
    u = rng.standard_normal((dim, rank))
    vecs = rng.standard_normal((k, dim))
    rot = rng.standard_normal((rank, rank))
    b, a = rng.standard_normal(rank), rng.standard_normal(rank)
    a2, beta = rng.standard_normal((rank, 2)), rng.standard_normal(2)
    U, R, B, A, A2, BETA = (xp.asarray(x) for x in (u, rot, b, a, a2, beta))
    V = [xp.asarray(v) for v in vecs]
    u, rot, b, a, a2, beta = (xp.to_numpy(x) for x in (U, R, B, A, A2, BETA))
    vecs = np.array([xp.to_numpy(v) for v in V])
    coef, dots = project(xp.ns, U, V)
    scale = np.abs(u).max() * np.abs(vecs).max() * dim
    np.testing.assert_allclose(xp.to_numpy(coef), u.T @ vecs.T, atol=xp.tol(10) * scale)
    np.testing.assert_allclose(xp.to_numpy(dots), vecs @ vecs[0], atol=xp.tol(10) * scale)
    coef_rows, _ = project(xp.ns, xp.ns.asarray(U.T, copy=True), V, rows=True)
    np.testing.assert_allclose(xp.to_numpy(coef_rows), u.T @ vecs.T, atol=xp.tol(10) * scale)
    # p̃ = v − U·a, Uᵀp̃ and [p̃ᵀp̃, p̃ᵀw], in both layouts of U, with and without w.
    p_ref = vecs[0] - u @ a
    for rows in (False, True):
        basis = xp.ns.asarray(U.T, copy=True) if rows else U
        for w in (None, V[-1]):
            p, back, pdots = residual(xp.ns, basis, V[0], A, w, rows=rows)
            pscale = scale * (1 + np.abs(a).max())
            np.testing.assert_allclose(xp.to_numpy(p), p_ref, atol=xp.tol(10) * rank * np.abs(p_ref).max())
            np.testing.assert_allclose(xp.to_numpy(back), u.T @ p_ref, atol=xp.tol(10) * pscale)
            other = p_ref if w is None else vecs[-1]
            np.testing.assert_allclose(xp.to_numpy(pdots), [p_ref @ p_ref, p_ref @ other], atol=xp.tol(10) * pscale)
    y_ref = 2.0 * (vecs[-1] + u @ a2[:, 0] + beta[0] * vecs[0]) + u @ a2[:, 1] + beta[1] * vecs[0]
    for rows in (False, True):
        basis = xp.ns.asarray(U.T, copy=True) if rows else U
        new, y = rotate(xp.ns, basis, R, V[0], B, query=(A2, BETA, V[-1], 2.0), rows=rows)
        np.testing.assert_allclose(xp.to_numpy(new), u @ rot + np.outer(vecs[0], b), atol=xp.tol(20) * rank * 10)
        np.testing.assert_allclose(xp.to_numpy(y), y_ref, atol=xp.tol(20) * rank * 10)
        applied = apply(xp.ns, basis, A2, V[-1], 2.0, rows=rows)
        np.testing.assert_allclose(
            xp.to_numpy(applied), 2.0 * (vecs[-1] - u @ a2[:, 0]) + u @ a2[:, 1], atol=xp.tol(20) * rank * 10
        )
    new, _ = rotate(xp.ns, U, R, V[0], B)
    if can_overwrite(xp.ns, new):
        expected = xp.to_numpy(new) @ rot + np.outer(vecs[0], b)
        same, _ = rotate(xp.ns, new, R, V[0], B, out=new)
        assert _same_memory(xp, same, new)
        np.testing.assert_allclose(xp.to_numpy(same), expected, atol=xp.tol(50) * rank * 100)


def test_jax_donation():
    """Under ``jax.jit(..., donate_argnums=0)`` the fused step runs in place and agrees with NumPy."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(5)
    dim, rank = 300, 5
    data = stream(rng, 12, dim, "power")
    step = jax.jit(lambda s, d, g: lg.ginger_update_precondition(s, d, g, decay=0.9, damping=0.1), donate_argnums=0)
    state = lg.ginger_init(dim, rank, xp=jnp, dtype=jnp.float64)
    ref = lg.ginger_init(dim, rank)
    g = rng.standard_normal(dim)
    for d in data:
        state, y = step(state, jnp.asarray(d), jnp.asarray(g))
        ref, y_ref = lg.ginger_update_precondition(ref, d, g, decay=0.9, damping=0.1)
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-10, atol=1e-12 * np.abs(y_ref).max())
    np.testing.assert_allclose(np.asarray(lg.ginger_dense(state)), lg.ginger_dense(ref), atol=1e-12)


def test_fused_validation():
    state = lg.ginger_init(10, 2)
    d = np.ones(10)
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_update_precondition(state, d, d, decay=0.9, damping=0.0)
    with pytest.raises(ValueError, match="decay"):
        lg.ginger_update_precondition(state, d, d, decay=1.0, damping=1.0)
    with pytest.raises(ValueError, match="g must have shape"):
        lg.ginger_update_precondition(state, d, np.ones((10, 2)), decay=0.9, damping=1.0)
    with pytest.raises(TypeError, match="g has dtype"):  # a higher precision than the state's is refused
        lg.ginger_update_precondition(
            lg.ginger_init(10, 3, dtype=np.float32), np.ones(10, np.float32), np.ones(10), decay=0.9, damping=1.0
        )
    with pytest.raises(TypeError, match="donate"):
        lg.ginger_update(state, d, decay=0.9, donate=1)


@settings(max_examples=6)
@given(seed=seeds, dim=st.integers(1, 40), data=st.data())
def test_finite_max_abs_without_temporaries(xp, seed, dim, data):
    """``finite_max_abs`` (max v and min v alone) = ``(all(isfinite(v)), max|v|)``, NaN and ±inf included."""
    from lowrank_ggn._core.brand import finite_max_abs

    rng = np.random.default_rng(seed)
    v = rng.standard_normal(dim) * 10.0 ** rng.uniform(-30, 30)
    bad = data.draw(st.sampled_from([None, np.nan, np.inf, -np.inf]), label="bad value")
    if bad is not None:
        v[data.draw(st.integers(0, dim - 1), label="position")] = bad
    v = v.astype(xp.np_dtype)
    finite, vmax = finite_max_abs(xp.ns, xp.asarray(v))
    assert bool(finite) == bool(np.all(np.isfinite(v)))
    if bad is None:
        assert float(vmax) == float(np.max(np.abs(v)))


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_finite_max_abs_blocked(xp, bad):
    """Over several blocks (NumPy reduces block by block): the extreme or the bad value in any block is found."""
    from lowrank_ggn._core.brand import finite_max_abs

    rng = np.random.default_rng(7)
    dim = 5 * 2**16 + 123
    v = rng.standard_normal(dim)
    where = int(rng.integers(2**16, dim))  # not in the first block
    v[where] = -1e3 if bad is None else bad
    v = v.astype(xp.np_dtype)
    finite, vmax = finite_max_abs(xp.ns, xp.asarray(v))
    assert bool(finite) == (bad is None)
    if bad is None:
        assert float(vmax) == float(np.max(np.abs(v))) == 1e3


@settings(max_examples=4)
@given(seed=seeds, rank=st.integers(1, 5), big=st.booleans())
def test_kernels_take_a_scaled_vector(xp, seed, rank, big):
    """``Scaled(d, f)`` in place of ``d·f`` gives the results of the formed vector, on the blocked paths too.

    The blocked NumPy/PyTorch kernels scale it block by block into a scratch buffer; a block left
    unscaled, or scaled into the wrong rows, differs from the formed vector by the factor.
    """
    from lowrank_ggn._core.kernels import Scaled

    rng = np.random.default_rng(seed)
    dim = 3 * (2**21 // ((rank + 2) * 4)) + 11 if big else 50
    U = xp.asarray(rng.standard_normal((dim, rank)))
    D, G = xp.asarray(rng.standard_normal(dim) * 1e3), xp.asarray(rng.standard_normal(dim))
    factor = xp.asarray(np.float64(1e-3))
    formed = D * factor
    sv = Scaled(D, factor)
    R, B, A2, BETA, C = (
        xp.asarray(x)
        for x in (
            rng.standard_normal((rank, rank)),
            rng.standard_normal(rank),
            rng.standard_normal((rank, 2)),
            rng.standard_normal(2),
            rng.standard_normal(rank),
        )
    )
    tol = xp.tol(50) * rank * 10
    for got, want in zip(project(xp.ns, U, (sv, G)), project(xp.ns, U, (formed, G)), strict=True):
        np.testing.assert_allclose(xp.to_numpy(got), xp.to_numpy(want), rtol=tol, atol=tol * dim)
    for got, want in zip(residual(xp.ns, U, sv, C, G), residual(xp.ns, U, formed, C, G), strict=True):
        np.testing.assert_allclose(xp.to_numpy(got), xp.to_numpy(want), rtol=tol, atol=tol * dim)
    query = (A2, BETA, G, 2.0)
    for got, want in zip(
        rotate(xp.ns, U, R, sv, B, query=query), rotate(xp.ns, U, R, formed, B, query=query), strict=True
    ):
        np.testing.assert_allclose(xp.to_numpy(got), xp.to_numpy(want), rtol=tol, atol=tol)
