"""float16 and bfloat16: states stay float32/float64; half-precision vectors are promoted exactly.

The rule: ``ginger_init``/``qng_init`` refuse half precision (TypeError that
says what to do); every function that takes a vector next to a state accepts a
float16 or bfloat16 one of the same namespace and device, promotes it to the
state's dtype (exact), computes there, and returns vector results in the
input's dtype (rounded once). So a half-precision call must equal, bit for bit,
the same call on the promoted vector followed by one rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowrank_ggn as lg
from tests._backends import make_backend

CASES = [
    ("numpy", "float32", "float16"),
    ("numpy", "float64", "float16"),
    ("torch", "float32", "float16"),
    ("torch", "float32", "bfloat16"),
    ("torch", "float64", "bfloat16"),
    ("jax", "float32", "float16"),
    ("jax", "float32", "bfloat16"),
    ("jax", "float64", "bfloat16"),
]


@pytest.fixture(params=[pytest.param(c, id="-".join(c), marks=getattr(pytest.mark, f"backend_{c[0]}")) for c in CASES])
def case(request):
    name, state_dtype, half = request.param
    xp = make_backend(name, state_dtype)
    return xp, getattr(xp.ns, half)


def _half(xp, x, half):
    return xp.ns.astype(xp.asarray(x), half)


def _bits(xp, a):
    host, name = lg.backends.to_host_exact(a)
    return name, host.tobytes()


def _same(xp, a, b):
    assert _bits(xp, a) == _bits(xp, b)


def _states(xp, rng, dim=12, rank=3):
    g = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    q = lg.qng_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    g_update, q_update = xp.maybe_jit(lg.ginger_update), xp.maybe_jit(lg.qng_update)
    for _ in range(5):
        d = xp.asarray(rng.standard_normal(dim))
        g = g_update(g, d, decay=0.9)
        q = q_update(q, d, decay=0.9)
    return g, q


def test_init_refuses_half_precision(case):
    """ginger_init/qng_init with float16 or bfloat16 are a TypeError that says vectors may be half precision."""
    xp, half = case
    for init in (lg.ginger_init, lg.qng_init):
        with pytest.raises(TypeError, match=r"float32 or float64.*accepted by the update and query"):
            init(8, 2, xp=xp.module, dtype=half)


def test_updates_promote_exactly(case):
    """An update with a half-precision d is the update with d promoted (bit for bit)."""
    xp, half = case
    rng = np.random.default_rng(0)
    g, q = _states(xp, rng)
    d = _half(xp, rng.standard_normal(12), half)
    up = xp.ns.astype(d, xp.dtype)
    for a, b in zip(lg.ginger_update(g, d, decay=0.9), lg.ginger_update(g, up, decay=0.9), strict=True):
        _same(xp, a, b)
    sm_half = lg.ginger_update(g, d, decay=0.9, damping=0.1, method="sherman-morrison")
    sm_up = lg.ginger_update(g, up, decay=0.9, damping=0.1, method="sherman-morrison")
    for a, b in zip(sm_half, sm_up, strict=True):
        _same(xp, a, b)
    for a, b in zip(lg.qng_update(q, d, decay=0.9), lg.qng_update(q, up, decay=0.9), strict=True):
        _same(xp, a, b)
    for a, b in zip(
        lg.lowrank_eigh_update(g.basis, g.eigvals, d, weight=0.1, scale=0.9),
        lg.lowrank_eigh_update(g.basis, g.eigvals, up, weight=0.1, scale=0.9),
        strict=True,
    ):
        _same(xp, a, b)
    for a, b in zip(
        lg.sherman_morrison_step(g.basis, g.eigvals, d, decay=0.9, damping=0.1),
        lg.sherman_morrison_step(g.basis, g.eigvals, up, decay=0.9, damping=0.1),
        strict=True,
    ):
        _same(xp, a, b)
    m = lg.ginger_dense(g)
    _same(xp, lg.ema_update_dense(m, d, decay=0.9), lg.ema_update_dense(m, up, decay=0.9))
    assert lg.ginger_update(g, d, decay=0.9).basis.dtype == xp.dtype


@pytest.mark.parametrize("shape", [(12,), (12, 3)])
def test_queries_compute_in_the_state_dtype_and_return_the_input_dtype(case, shape):
    xp, half = case
    rng = np.random.default_rng(1)
    g_state, q_state = _states(xp, rng)
    v = _half(xp, rng.standard_normal(shape), half)
    up = xp.ns.astype(v, xp.dtype)
    calls = [
        lambda x: lg.ginger_precondition(g_state, x, damping=0.05),
        lambda x: lg.damped_solve(g_state.basis, g_state.eigvals, x, damping=0.05),
        lambda x: lg.damped_matvec(g_state.basis, g_state.eigvals, x, damping=0.05),
        lambda x: lg.qng_precondition(q_state, x),
        lambda x: lg.qng_factor_matvec(q_state, x),
        lambda x: lg.qng_factor_solve(q_state, x, transpose=True),
    ]
    for call in calls:
        out = call(v)
        assert out.dtype == half
        assert tuple(out.shape) == shape
        _same(xp, out, xp.ns.astype(call(up), half))


def test_half_precision_stream_matches_float64(case):
    """100 steps of a half-precision stream: the state equals the float64 run on the same (rounded) vectors."""
    xp, half = case
    rng = np.random.default_rng(2)
    dim, rank = 16, 3
    spectrum = np.arange(1, dim + 1) ** -1.0
    stream = [_half(xp, spectrum * rng.standard_normal(dim), half) for _ in range(100)]
    state = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    ref = lg.ginger_init(dim, rank)
    update = xp.maybe_jit(lg.ginger_update)
    for d in stream:
        state = update(state, d, decay=0.95)
        ref = lg.ginger_update(ref, np.asarray(lg.backends.to_numpy(d), dtype=np.float64), decay=0.95)
    s, r = xp.to_numpy(state.eigvals), np.asarray(ref.eigvals)
    np.testing.assert_allclose(s, r, rtol=0, atol=2e3 * xp.eps * r[0])
    assert int(xp.to_numpy(state.num_nonfinite)) == 0


def test_half_precision_under_jit():
    """Under jax.jit a bfloat16 d updates a float32 state as eagerly, and the query returns bfloat16."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    state = lg.ginger_init(8, 2, xp=jnp, dtype=jnp.float32)
    d = jnp.asarray(np.arange(1.0, 9.0), dtype=jnp.bfloat16)
    eager = lg.ginger_update(state, d, decay=0.9)
    jitted = jax.jit(lg.ginger_update)(state, d, decay=0.9)
    np.testing.assert_allclose(np.asarray(jitted.eigvals), np.asarray(eager.eigvals), rtol=1e-6)
    y = jax.jit(lg.ginger_precondition)(jitted, d, damping=0.1)
    assert y.dtype == jnp.bfloat16


def test_float32_vector_into_float64_state_is_promoted_exactly():
    """One rule (reliability issue, item 8): every lower precision, float32 included, is promoted exactly."""
    state = lg.ginger_init(6, 2)
    d = np.linspace(-1, 1, 6, dtype=np.float32)
    promoted = lg.ginger_update(state, d, decay=0.9)
    reference = lg.ginger_update(state, d.astype(np.float64), decay=0.9)
    np.testing.assert_array_equal(promoted.basis, reference.basis)
    np.testing.assert_array_equal(promoted.eigvals, reference.eigvals)
    with pytest.raises(TypeError):  # a higher precision than the state's is still refused
        lg.ginger_update(lg.ginger_init(6, 2, dtype=np.float32), d.astype(np.float64), decay=0.9)


def test_numpy_bfloat16_extension_type_is_refused():
    """NumPy's ml_dtypes bfloat16 (not an array-API dtype) is a TypeError naming d."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    state = lg.ginger_init(6, 2, dtype=np.float32)
    with pytest.raises(TypeError, match="d must have a real floating dtype"):
        lg.ginger_update(state, np.ones(6, dtype=ml_dtypes.bfloat16), decay=0.9)
