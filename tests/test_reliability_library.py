"""Regression tests for the library items of the reliability issue (one test, or a few, per item)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lowrank_ggn as lg
from lowrank_ggn._core import kernels

INT32_MAX = 2**31 - 1


def _e1(dim, dtype):
    e = np.zeros(dim, dtype=dtype)
    e[0] = 1
    return e


# -- 1. the 1-d query is finite when the answer is ----------------------------------------------


@pytest.mark.parametrize(("dtype", "damping"), [(np.float32, 1e-37), (np.float64, 1e-307)])
def test_query_finite_for_tiny_damping(dtype, damping):
    """‖g‖/γ overflows, the answer (100/4.5 along e₁) does not: every query form returns it."""
    e1 = _e1(6, dtype)
    state = lg.ginger_update(lg.ginger_init(6, 2, dtype=dtype), 3 * e1, decay=0.5)
    expected = 100 / 4.5 * e1
    tol = {"rtol": 1e-5 if dtype == np.float32 else 1e-12}
    np.testing.assert_allclose(lg.ginger_precondition(state, 100 * e1, damping=damping), expected, **tol)
    np.testing.assert_allclose(
        lg.ginger_precondition(state, (100 * e1)[:, None], damping=damping)[:, 0], expected, **tol
    )
    np.testing.assert_allclose(lg.damped_solve(state.basis, state.eigvals, 100 * e1, damping=damping), expected, **tol)
    # The fused step, with a d in the same span.
    d = (np.sqrt(2) * 3 * e1).astype(dtype)
    new, y = lg.ginger_update_precondition(state, d, 100 * e1, decay=0.5, damping=damping)
    sigma = float(new.eigvals[0])
    np.testing.assert_allclose(y, 100 / sigma * e1, **tol)
    product = lg.ginger_product_from_state(state)
    np.testing.assert_allclose(lg.ginger_product_precondition(product, 100 * e1, damping=damping), expected, **tol)
    _, y = lg.ginger_product_update_precondition(product, d, 100 * e1, decay=0.5, damping=damping)
    np.testing.assert_allclose(y, 100 / sigma * e1, **tol)


# -- 2. optax: integer and complex leaves -------------------------------------------------------


def test_optax_refuses_integer_and_complex_leaves():
    jnp = pytest.importorskip("jax.numpy")
    from lowrank_ggn.optim.optax import scale_by_lowrank

    tx = scale_by_lowrank(lg.ginger(rank=1, decay=0.9), damping=0.1, blocks="model")
    with pytest.raises(TypeError, match=r"parameter leaf \['i'\] has dtype int"):
        tx.init({"w": jnp.ones(3), "i": jnp.array([0, 1, 2])})
    state = tx.init({"w": jnp.ones(3)})
    with pytest.raises(TypeError, match=r"gradient leaf \['w'\]"):
        tx.update({"w": jnp.array([1, 2, 3])}, state)
    with pytest.raises(TypeError, match=r"curvature leaf \['w'\] has dtype complex64"):
        tx.update({"w": jnp.ones(3)}, state, curvature={"w": jnp.ones(3, jnp.complex64)})


# -- 3. torch inputs that require gradients, blocked sizes ---------------------------------------


def test_torch_requires_grad_at_blocked_sizes():
    torch = pytest.importorskip("torch")
    dim, rank = 40_000, 2  # dim·rank ≥ 65,536: the blocked path
    state = lg.ginger_init(dim, rank, xp=torch, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(dim, dtype=torch.float64, generator=gen).requires_grad_(True)
    g = torch.randn(dim, dtype=torch.float64, generator=gen).requires_grad_(True)
    state = lg.ginger_update(state, d, decay=0.5)
    state, y = lg.ginger_update_precondition(state, d, g, decay=0.5, damping=0.1)
    y.sum().backward()
    assert d.grad is not None
    assert torch.isfinite(d.grad).all()
    assert lg.ginger_precondition(state, g, damping=0.1).requires_grad


# -- 4. scalars and counters --------------------------------------------------------------------


def test_torch_tensor_damping_and_numpy_integer_options():
    torch = pytest.importorskip("torch")
    from lowrank_ggn.optim.torch import Ginger, LowRank

    for shape in ((), (3,)):
        p = torch.nn.Parameter(torch.ones(shape))
        opt = Ginger([p], lr=0.1, rank=1, damping=torch.tensor(0.5, dtype=torch.float64))
        p.sum().backward()
        opt.step()
        assert torch.isfinite(p).all()
    Ginger([torch.nn.Parameter(torch.ones(3))], reorthonormalize_every=np.int64(5))
    LowRank([torch.nn.Parameter(torch.ones(3))], lg.ginger(rank=1, decay=0.9, reorthonormalize_every=np.int64(5)))
    s = lg.ginger_init(5, 2)
    lg.ginger_update(s, np.ones(5), decay=0.5, reorthonormalize_every=np.int64(5))


def _orth_error(basis):
    return float(np.abs(basis.T @ basis - np.eye(basis.shape[1])).max())


def _skewed_state(dim=12, rank=3, step=0):
    """A state whose basis is off orthonormality by ~1e-7: only a re-orthonormalisation repairs it."""
    rng = np.random.default_rng(1)
    q = np.linalg.qr(rng.standard_normal((dim, rank)))[0]
    s = lg.ginger_init(dim, rank)
    return s._replace(
        basis=q + 1e-7 * rng.standard_normal((dim, rank)),
        eigvals=np.array([3.0, 2.0, 1.0]),
        step=np.asarray(step, dtype=np.int32),
    )


@pytest.mark.parametrize("start", [0, INT32_MAX - 5])
def test_reorthonormalisation_runs_on_its_period(start):
    """With period 4, exactly the updates that make ``step`` a multiple of 4 re-orthonormalise, also at saturation."""
    rng = np.random.default_rng(2)
    state = _skewed_state(step=start)
    repaired = []
    for _ in range(11):
        state = lg.ginger_update(state, rng.standard_normal(12), decay=0.9, reorthonormalize_every=4)
        assert 0 <= int(state.step) <= INT32_MAX
        repaired.append((int(state.step), _orth_error(state.basis) < 1e-13))
        if repaired[-1][1]:
            state = state._replace(basis=state.basis + 1e-7 * rng.standard_normal(state.basis.shape))
    assert [s % 4 == 0 for s, _ in repaired] == [r for _, r in repaired]
    assert sum(r for _, r in repaired) >= 2


def test_step_counters_saturate():
    s = lg.ginger_init(5, 2)._replace(step=np.asarray(INT32_MAX, np.int32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = lg.ginger_update(s, np.ones(5), decay=0.5, reorthonormalize_every=None)
        assert int(s.step) == INT32_MAX
        s = s._replace(num_nonfinite=np.asarray(INT32_MAX, np.int32))
        s = lg.ginger_update(s, np.full(5, np.nan), decay=0.5)
        assert int(s.num_nonfinite) == INT32_MAX
        p = lg.ginger_product_init(5, 2)._replace(step=np.asarray(INT32_MAX, np.int32))
        assert int(lg.ginger_product_update(p, np.ones(5), decay=0.5).step) == INT32_MAX


def test_optax_update_every_survives_count_saturation():
    jnp = pytest.importorskip("jax.numpy")
    from lowrank_ggn.optim.optax import scale_by_ginger

    every = 3
    tx = scale_by_ginger(rank=1, damping=0.1, update_every=every)
    state = tx.init({"w": jnp.ones(4)})
    state = state._replace(count=jnp.asarray(INT32_MAX - 4, jnp.int32))
    grads = {"w": jnp.arange(1.0, 5.0)}
    steps = []
    for _ in range(4 * every):
        before = int(state.blocks[0].step)
        due = int(state.count) % every == 0
        _, state = tx.update(grads, state)
        steps.append(int(state.blocks[0].step) - before)
        assert due == (steps[-1] == 1)
    assert sum(steps) == 4


# -- 5. masked arrays and sparse tensors --------------------------------------------------------


def test_masked_and_sparse_inputs_are_named():
    s = lg.ginger_init(4, 2)
    with pytest.raises(TypeError, match="^d is a NumPy masked array"):
        lg.ginger_update(s, np.ma.masked_array(np.ones(4), mask=[0, 1, 0, 0]), decay=0.5)
    with pytest.raises(TypeError, match="^g is a NumPy masked array"):
        lg.ginger_precondition(s, np.ma.masked_array(np.ones(4)), damping=1.0)
    torch = pytest.importorskip("torch")
    st = lg.ginger_init(4, 2, xp=torch, dtype=torch.float64)
    with pytest.raises(TypeError, match="^d is a sparse_coo PyTorch tensor"):
        lg.ginger_update(st, torch.ones(4, dtype=torch.float64).to_sparse(), decay=0.5)
    with pytest.raises(TypeError, match="^basis is a sparse_coo PyTorch tensor"):
        lg.damped_solve(st.basis.to_sparse(), st.eigvals, torch.ones(4, dtype=torch.float64), damping=1.0)


# -- 6. product form and floating-point errors --------------------------------------------------


def test_product_update_rejects_overflow_without_warnings():
    d = np.array([1e300, 1e300, 1.0, 1.0])
    p = lg.ginger_product_init(4, 2)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        new = lg.ginger_product_update(p, d, decay=0.5)
        new2, y = lg.ginger_product_update_precondition(p, d, np.ones(4), decay=0.5, damping=1.0)
    assert int(new.num_nonfinite) == 1
    assert int(new.step) == 0
    assert int(new2.num_nonfinite) == 1
    assert np.all(np.isfinite(y))


# -- 7. out-of-range traced decay and damping under jax.jit ------------------------------------


def test_jit_rejects_out_of_range_traced_values():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    s0 = lg.ginger_update(
        lg.ginger_init(6, 2, xp=jnp, dtype=jnp.float32), jnp.arange(1.0, 7.0, dtype=jnp.float32), decay=0.5
    )
    d = jnp.ones(6, dtype=jnp.float32)
    update = jax.jit(lambda s, a: lg.ginger_update(s, d, decay=a))
    for bad in (1.5, -0.5, 0.0, 1.0, 1 - 1e-9):
        new = update(s0, jnp.float32(bad) if bad != 1 - 1e-9 else jnp.asarray(bad, jnp.float32))
        np.testing.assert_array_equal(np.asarray(new.basis), np.asarray(s0.basis))
        np.testing.assert_array_equal(np.asarray(new.eigvals), np.asarray(s0.eigvals))
        assert int(new.num_nonfinite) == 1
        assert int(new.step) == int(s0.step)
    assert int(update(s0, jnp.float32(0.5)).step) == int(s0.step) + 1
    sm = jax.jit(lambda s, g: lg.ginger_update(s, d, decay=0.5, damping=g, method="sherman-morrison"))
    assert int(sm(s0, jnp.float32(-1.0)).num_nonfinite) == 1
    fused = jax.jit(lambda s, a, g: lg.ginger_update_precondition(s, d, d, decay=a, damping=g))
    new, y = fused(s0, jnp.float32(2.0), jnp.float32(0.1))
    assert int(new.num_nonfinite) == 1
    assert np.all(np.isfinite(np.asarray(y)))
    new, y = fused(s0, jnp.float32(0.5), jnp.float32(-0.1))
    assert int(new.num_nonfinite) == 1
    assert np.all(np.isnan(np.asarray(y)))
    query = jax.jit(lambda s, g: lg.ginger_precondition(s, d, damping=g))
    assert np.all(np.isnan(np.asarray(query(s0, jnp.float32(-0.1)))))
    assert np.all(np.isfinite(np.asarray(query(s0, jnp.float32(0.1)))))
    p0 = lg.ginger_product_from_state(s0)
    pupdate = jax.jit(lambda s, a: lg.ginger_product_update(s, d, decay=a))
    assert int(pupdate(p0, jnp.float32(1.5)).num_nonfinite) == 1
    q0 = lg.qng_init(6, 2, xp=jnp, dtype=jnp.float32)
    assert int(jax.jit(lambda s, a: lg.qng_update(s, d, decay=a))(q0, jnp.float32(1.5)).num_nonfinite) == 1


# -- 8. one promotion rule ----------------------------------------------------------------------


def test_lower_precision_is_promoted_higher_is_refused():
    s64 = lg.ginger_init(4, 2)
    for dt in (np.float16, np.float32):
        new = lg.ginger_update(s64, np.ones(4, dt), decay=0.5)
        np.testing.assert_array_equal(new.eigvals, lg.ginger_update(s64, np.ones(4), decay=0.5).eigvals)
        assert lg.ginger_precondition(new, np.ones(4, dt), damping=1.0).dtype == dt
    s32 = lg.ginger_init(4, 2, dtype=np.float32)
    with pytest.raises(TypeError, match="d has dtype float64 but the state has dtype float32"):
        lg.ginger_update(s32, np.ones(4), decay=0.5)
    p64 = lg.ginger_product_init(4, 2)
    assert lg.ginger_product_update(p64, np.ones(4, np.float32), decay=0.5).step == 1


# -- 9. product form checks decay and damping in the state's dtype --------------------------------


def test_product_checks_in_state_dtype():
    p = lg.ginger_product_init(4, 2, dtype=np.float32)
    with pytest.raises(ValueError, match="decay=.* rounds to 1 in float32"):
        lg.ginger_product_update(p, np.ones(4, np.float32), decay=1 - 1e-9)
    with pytest.raises(ValueError, match="damping=1e-40 is outside the normal range of float32"):
        lg.ginger_product_precondition(p, np.ones(4, np.float32), damping=1e-40)
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_product_update_precondition(
            p, np.ones(4, np.float32), np.ones(4, np.float32), decay=0.5, damping=1e-40
        )


# -- tests the suite was missing --------------------------------------------------------------------


def _several_blocks(dim_rank, dtype=np.float64):
    dim, rank = dim_rank
    assert dim > 2 * kernels._block_rows(np.zeros((1, rank), dtype), 2)
    return dim, rank


def test_blocked_numpy_projection_sums_every_block():
    rng = np.random.default_rng(3)
    dim, rank = _several_blocks((300_000, 3))
    u, v, g = rng.standard_normal((dim, rank)), rng.standard_normal(dim), rng.standard_normal(dim)
    coef, dots = kernels.project(np, u, (v, g))
    np.testing.assert_allclose(coef, u.T @ np.stack([v, g], axis=1), rtol=1e-9)
    np.testing.assert_allclose(dots, [v @ v, v @ g], rtol=1e-9)


def test_blocked_torch_residual_sums_every_block():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    dim, rank = _several_blocks((300_000, 3))
    u, v, c = rng.standard_normal((dim, rank)), rng.standard_normal(dim), rng.standard_normal(rank)
    p, back, dots = kernels.residual(torch, torch.asarray(u), torch.asarray(v), torch.asarray(c))
    p_ref = v - u @ c
    np.testing.assert_allclose(p.numpy(), p_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(back.numpy(), u.T @ p_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(dots.numpy(), [p_ref @ p_ref] * 2, rtol=1e-9)


def _ema(data, decay):
    m = np.zeros((data.shape[1],) * 2)
    for d in data:
        m = decay * m + (1 - decay) * np.outer(d, d)
    return m


@pytest.mark.parametrize("method", ["eigen", "sherman-morrison"])
def test_discarded_keeps_the_trace(method):
    """``sum(σ) + discarded = trace(M_t)`` when most updates are truncated, including rounding-level residuals."""
    rng = np.random.default_rng(5)
    dim, rank, decay = 6, 2, 0.8
    base = np.linalg.qr(rng.standard_normal((dim, rank + 1)))[0]
    # Vectors in a (rank+1)-dim span: each new one leaves a residual of zero (to rounding) against
    # the rank-dim basis only sometimes; the trace bookkeeping must hold either way.
    data = np.concatenate(
        [base @ rng.standard_normal((rank + 1, 20)), base[:, :rank] @ rng.standard_normal((rank, 20))], axis=1
    ).T
    s = lg.ginger_init(dim, rank)
    kw = {"damping": 10.0} if method == "sherman-morrison" else {}
    for d in data:
        s = lg.ginger_update(s, d, decay=decay, method=method, **kw)
    total = np.trace(_ema(data, decay))
    np.testing.assert_allclose(float(np.sum(s.eigvals) + s.discarded), total, rtol=1e-9)


def test_torch_half_precision_parameters_get_float32_state():
    torch = pytest.importorskip("torch")
    from lowrank_ggn.optim.torch import Ginger

    for dtype in (torch.float16, torch.bfloat16):
        p = torch.nn.Parameter(torch.ones(4, dtype=dtype))
        opt = Ginger([p], lr=0.1, rank=2)
        p.grad = torch.arange(4, dtype=dtype)
        opt.step()
        assert opt.state[p]["basis"].dtype == torch.float32
        assert opt.block_states()[0][1].eigvals.dtype == torch.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_discarded_counts_a_rounding_level_residual(dtype):
    """A residual below √eps·‖d‖ is not appended; its mass ρr² still goes into ``discarded``."""
    dim, decay = 6, 0.75
    eps = np.finfo(dtype).eps
    r = 0.1 * np.sqrt(eps)  # below √eps·‖d‖ = √(2 eps): dropped as rounding-level
    s = lg.ginger_init(dim, 2, dtype=dtype)._replace(eigvals=np.array([2.0, 1.0], dtype=dtype))
    d = np.zeros(dim, dtype=dtype)
    d[:3] = [1.0, 1.0, r]
    new = lg.ginger_update(s, d, decay=decay, reorthonormalize_every=None)
    assert int(new.step) == 1
    expected = (1 - decay) * float(d[2]) ** 2
    np.testing.assert_allclose(float(new.discarded), expected, rtol=10 * eps**0.5)
    total = decay * 3.0 + (1 - decay) * float(d @ d)
    np.testing.assert_allclose(float(np.sum(new.eigvals, dtype=np.float64) + new.discarded), total, rtol=10 * eps)


def test_small_eigensolver_failure_never_zeroes_the_state():
    """A finite core near the top of float64's range: JAX's eigh returns NaN for it.

    The core is decomposed scaled (so it succeeds), and an eigensolver that still fails
    rejects the update: the eigenvalues never collapse to zero (they did, at step 112).
    """
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from lowrank_ggn._core import brand

    big = float(np.finfo(np.float64).max)
    core = np.diag([2.96e307, 2.93e307, 3.26e307, -9.16e307])
    for xp in (np, jnp):
        w, v = brand.eigh_small(xp, xp.asarray(core))
        np.testing.assert_allclose(np.asarray(w), np.sort(np.diag(core)), rtol=1e-14)
        assert np.all(np.isfinite(np.asarray(v)))
    dim, rank, c = 10, 3, 2**0.5 * big**0.5  # d_i² = 2·max overflows, (1 − α)·d_i² does not
    for xp in (np, jnp):
        state = lg.ginger_init(dim, rank, xp=xp, dtype=xp.float64)
        for t in range(120):
            d = np.zeros(dim)
            d[t % (rank + 1)] = c
            state = lg.ginger_update(state, xp.asarray(d), decay=0.99)
            if t >= rank:
                assert float(np.min(np.asarray(state.eigvals))) > 0, (xp.__name__, t)
            u = np.asarray(state.basis)
            assert np.abs(u.T @ u - np.eye(rank)).max() < 1e-12
